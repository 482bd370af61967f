//! Errors of the colony API, and the one place they become gRPC status
//! codes.

use crate::store::StoreError;
use tonic::{Code, Status};

/// Why a colony call was refused or could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request.
    #[error("{0}")]
    InvalidArgument(String),
    /// No fleet tap or agent with this id.
    #[error("{0}")]
    NotFound(String),
    /// Nothing to run on: no agent matches the selector.
    #[error("{0}")]
    NoAgents(String),
    /// A read-only token asked to change something.
    #[error("{0}")]
    PermissionDenied(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let code = match &err {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::NoAgents(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Store(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %err, "colony call failed");
        }
        Status::new(code, err.to_string())
    }
}
