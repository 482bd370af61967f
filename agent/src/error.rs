//! Errors a client can cause or meet, and the one place they become gRPC
//! status codes.

use crate::domain::{Kind, State};
use coral_proto::text::{Cleaned, MESSAGE_BYTES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::{Code, Status};

/// Why a request was refused or could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request: bad field, unknown kind, kind/config mismatch.
    #[error("{0}")]
    InvalidArgument(String),
    /// A duration of zero.
    #[error("invalid duration: must be greater than 0")]
    ZeroDuration,
    /// A duration over the agent's maximum (never silently shortened).
    #[error("duration {} exceeds the agent's maximum of {}", fmt_dur(*.requested), fmt_dur(*.max))]
    DurationTooLong { requested: Duration, max: Duration },
    /// The running-collector limit is reached.
    #[error("too many running collectors: the limit is {max} (stop one or wait for one to expire)")]
    TooManyCollectors { max: u32 },
    /// No collector with this id (never existed, or reaped after retention).
    #[error("no collector with id {}", coral_proto::text::quote(.0))]
    NotFound(String),
    /// The operation needs a running collector.
    #[error("collector {id} is {state:?}, not running")]
    NotRunning { id: String, state: State },
    /// The kernel or the agent's privileges lack what the kind needs.
    #[error("{kind} is not available on this node: {reason}")]
    Unavailable { kind: Kind, reason: String },
    /// Loading, attaching or reading the kernel side failed.
    #[error("{kind} collector {id} failed: {reason}")]
    CollectorFailed {
        kind: Kind,
        id: String,
        reason: String,
    },
    /// No valid credentials: a missing or wrong bearer token, or no client
    /// certificate where mutual TLS is required.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this call (a read-only token
    /// asking to start, stop or extend).
    #[error("{0}")]
    PermissionDenied(String),
    /// A stopped collector did not end within the stop timeout: a call into
    /// it (a kernel read, say) is still running. It ends, and detaches,
    /// when that call returns.
    #[error(
        "collector {id} did not end within {}: its current kernel read is still running; it ends and detaches when that returns",
        fmt_dur(*.waited)
    )]
    StopTimedOut { id: String, waited: Duration },
    /// The agent's limit on concurrent `StreamEvents` clients is reached.
    #[error("too many open streams: the limit is {max} (close one and retry)")]
    TooManyStreams { max: usize },
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Error {
    /// The only mapping from errors to gRPC codes. Exhaustive on purpose: a
    /// new variant does not compile until someone decides its code.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::ZeroDuration | Error::DurationTooLong { .. } => {
                Code::InvalidArgument
            }
            Error::TooManyCollectors { .. } | Error::TooManyStreams { .. } => {
                Code::ResourceExhausted
            }
            Error::NotFound(_) => Code::NotFound,
            // A start that the kernel refused: almost always something the
            // node lacks (privilege, hook, map type), which the message names.
            Error::NotRunning { .. }
            | Error::Unavailable { .. }
            | Error::CollectorFailed { .. } => Code::FailedPrecondition,
            Error::StopTimedOut { .. } => Code::DeadlineExceeded,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
        }
    }
}

/// Requests refused, by gRPC code (index: the code's number), since the
/// process started: counted where errors become statuses, for the exporter.
static REFUSALS: [AtomicU64; 17] = [const { AtomicU64::new(0) }; 17];

/// Requests refused so far, per code (only codes seen at least once).
pub fn refusals() -> Vec<(Code, u64)> {
    (0..REFUSALS.len())
        .map(|i| {
            (
                Code::from_i32(i as i32),
                REFUSALS[i].load(Ordering::Relaxed),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        if let Some(n) = REFUSALS.get(code as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let message = err.to_string();
        tracing::debug!(error = %Cleaned::log(&message), ?code, "request refused");
        // Client input in messages is quoted short already; this bounds
        // the rest (a verifier's words, say) so a default client can read it.
        Status::new(code, Cleaned::new(&message, MESSAGE_BYTES).to_string())
    }
}
