//! Connecting to the agent: `unix:///path` (default), a bare path, or
//! `http://host:port`.

use coral_proto::v1::ebpf_service_client::EbpfServiceClient;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Client = EbpfServiceClient<Channel>;

/// Failures the CLI reports with their own exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent could not be reached at all.
    #[error(
        "cannot reach the agent at {addr}: {reason}\n  is coral-agent running? (set --agent or $CORAL_AGENT)"
    )]
    Unreachable { addr: String, reason: String },
    /// The agent answered with an error status.
    #[error("agent refused: {}: {}", code_name(.0.code()), .0.message())]
    Rejected(tonic::Status),
}

fn code_name(code: tonic::Code) -> String {
    // `Code`'s Display is a sentence; users grep for the canonical names.
    format!("{code:?}")
        .chars()
        .flat_map(|c| {
            if c.is_uppercase() {
                vec!['_', c]
            } else {
                vec![c.to_ascii_uppercase()]
            }
        })
        .skip_while(|&c| c == '_')
        .collect()
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        // The agent never answers UNAVAILABLE itself: it is what tonic
        // reports when the connection fails or drops, so "unreachable".
        if s.code() == tonic::Code::Unavailable {
            return CliError::Unreachable {
                addr: "the agent".into(),
                reason: s.message().to_string(),
            };
        }
        CliError::Rejected(s)
    }
}

pub async fn connect(addr: &str) -> Result<Client, CliError> {
    let unreachable = |reason: String| CliError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let channel = if let Some(path) = addr
        .strip_prefix("unix://")
        .or_else(|| addr.starts_with('/').then_some(addr))
    {
        let path = PathBuf::from(path);
        // The URI is required by the API but unused: the connector dials the socket.
        Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
    } else {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        Endpoint::from_shared(uri)
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    };
    let channel = channel.map_err(|e| unreachable(error_chain(&e)))?;
    Ok(EbpfServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }
}
