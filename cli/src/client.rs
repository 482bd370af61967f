//! Connecting to the agent: `unix:///path` (default), a bare path,
//! `http://host:port` (plaintext) or `https://host:port` (TLS, optionally
//! with a client certificate), with an optional bearer token on every call.

use coral_proto::colony::v1::ListAgentsRequest;
use coral_proto::colony::v1::colony_service_client::ColonyServiceClient;
use coral_proto::error_chain;
use coral_proto::v1::GetCapabilitiesRequest;
use coral_proto::v1::ebpf_service_client::EbpfServiceClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

pub type Client = EbpfServiceClient<InterceptedService<Channel, BearerToken>>;
/// A colony's client (`--colony`).
pub type ColonyClient = ColonyServiceClient<InterceptedService<Channel, BearerToken>>;

/// Credentials for the agent, from the global flags.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// CA that signed the agent's certificate (PEM); the system's roots otherwise.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM), for agents that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Bearer token sent on every call.
    pub token: Option<String>,
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// Failures the CLI reports with their own exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent could not be reached at all.
    #[error("cannot reach the {} at {addr}: {reason}\n  {}", server(), hint())]
    Unreachable { addr: String, reason: String },
    /// The agent answered with an error status.
    #[error("{} refused: {}: {}", server(), code_name(.0.code()), .0.message())]
    Rejected(tonic::Status),
    /// The TLS handshake failed: one side did not accept the other's
    /// certificate. A refusal, like UNAUTHENTICATED.
    #[error(
        "TLS handshake with {addr} failed: {reason}\n  check --ca-cert (the CA of the agent's certificate) and --client-cert/--client-key (for mutual TLS)"
    )]
    Tls { addr: String, reason: String },
    /// Something answered, but not as a coral agent does (plaintext to a
    /// TLS client, HTTP/1, HTTP/2 without gRPC). Exit code as unreachable.
    #[error("{0}")]
    NotAgent(String),
    /// The flags do not fit together.
    #[error("{0}")]
    Usage(String),
}

/// What this run talks to: `agent`, or `colony` with `--colony` (set once,
/// before connecting), for messages.
pub static SERVER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

fn server() -> &'static str {
    SERVER.get().copied().unwrap_or("agent")
}

fn hint() -> &'static str {
    if server() == "colony" {
        "is coral-colony running? (set --colony or $CORAL_COLONY)"
    } else {
        "is coral-agent running? (set --agent or $CORAL_AGENT)"
    }
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

/// What a transport failure means, when its text says more than "cannot
/// connect": a TLS client that got plaintext back, or a peer that does not
/// speak HTTP/2 at all.
fn explain(reason: &str) -> Option<&'static str> {
    // A plaintext agent answers a ClientHello with HTTP/2 bytes, or (it
    // sees no HTTP/2 preface) by closing the connection at once.
    if reason.contains("InvalidContentType")
        || reason.contains("corrupt message")
        || reason.contains("handshake eof")
    {
        return Some(
            "the agent does not speak TLS there: use http:// (plaintext, on loopback) or unix://, or the port it serves TLS on",
        );
    }
    // A TLS server answers a plaintext HTTP/2 preface with an alert record
    // (0x15 0x03 0x03 ...), an HTTP/1 server with "HTTP/1.1 ...": both read
    // as a frame header whose length is too large, so the client cannot
    // tell them apart and the message names both.
    if ["frame with invalid size", "invalid preface", "HTTP/1"]
        .iter()
        .any(|n| reason.contains(n))
    {
        return Some(
            "not a coral agent, or a TLS port: the reply is not HTTP/2 (if the agent serves TLS there, use https://; otherwise check the address and port)",
        );
    }
    None
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        // An HTTP/2 server that is not gRPC (tonic maps its HTTP status).
        if s.message().starts_with("grpc-status header missing") {
            return CliError::NotAgent(format!(
                "not a coral agent: it answers HTTP/2 but not gRPC ({})",
                s.message()
            ));
        }
        // The agent never answers UNAVAILABLE itself: it is what tonic
        // reports when the connection fails or drops, so "unreachable".
        if s.code() == tonic::Code::Unavailable {
            return CliError::Unreachable {
                addr: format!("the {}", server()),
                reason: s.message().to_string(),
            };
        }
        // A status with a source error was made on this side from a
        // transport failure, e.g. plaintext HTTP/2 sent to a TLS port.
        if let Some(source) = std::error::Error::source(&s) {
            let chain = error_chain(source);
            if let Some(meaning) = explain(&chain) {
                return CliError::NotAgent(format!("{meaning} ({chain})"));
            }
            return CliError::Unreachable {
                addr: format!("the {}", server()),
                reason: format!("{chain} (if the agent serves TLS, use an https:// address)"),
            };
        }
        CliError::Rejected(s)
    }
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("reading {what} {}: {e}", path.display())))
}

/// True when a connection error came from the TLS layer refusing a
/// certificate (ours or the agent's) rather than from the network.
fn is_tls_refusal(reason: &str) -> bool {
    [
        "certificate",
        "fatal alert",
        "handshake",
        "CertificateRequired",
        "UnknownIssuer",
    ]
    .iter()
    .any(|needle| reason.contains(needle))
}

/// Connects to the colony at `addr` (the same address forms and
/// credentials as an agent's).
pub async fn connect_colony(addr: &str, creds: &Credentials) -> Result<ColonyClient, CliError> {
    let _ = SERVER.set("colony");
    let channel = connect_channel(addr, creds).await?;
    let mut client = ColonyServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    if creds.client_cert.is_some()
        && let Err(status) = client.list_agents(ListAgentsRequest {}).await
        && std::error::Error::source(&status).is_some()
    {
        return Err(CliError::Tls {
            addr: addr.to_string(),
            reason: format!(
                "the colony closed the connection after receiving the client certificate ({}): it does not accept it (issued by another CA?)",
                status.message()
            ),
        });
    }
    Ok(client)
}

pub async fn connect(addr: &str, creds: &Credentials) -> Result<Client, CliError> {
    let channel = connect_channel(addr, creds).await?;
    let mut client = EbpfServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    if creds.client_cert.is_some() {
        // With TLS 1.3 the agent checks our certificate after the handshake
        // has completed on our side, and refuses it by closing the
        // connection: the first call would only see "connection closed".
        // One cheap call here turns that into a certificate error.
        if let Err(status) = client.get_capabilities(GetCapabilitiesRequest {}).await
            && std::error::Error::source(&status).is_some()
        {
            return Err(CliError::Tls {
                addr: addr.to_string(),
                reason: format!(
                    "the agent closed the connection after receiving the client certificate ({}): it does not accept it (issued by another CA?)",
                    status.message()
                ),
            });
        }
    }
    Ok(client)
}

async fn connect_channel(
    addr: &str,
    creds: &Credentials,
) -> Result<InterceptedService<Channel, BearerToken>, CliError> {
    let unreachable = |reason: String| CliError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let tls_flags = creds.ca_cert.is_some() || creds.client_cert.is_some();
    if creds.client_cert.is_some() != creds.client_key.is_some() {
        return Err(CliError::Usage(
            "--client-cert and --client-key go together".into(),
        ));
    }
    let token = match &creds.token {
        Some(t) => Some(
            MetadataValue::try_from(format!("Bearer {}", t.trim()))
                .map_err(|_| CliError::Usage("the token must be printable ASCII".into()))?,
        ),
        None => None,
    };
    let channel = if let Some(path) = addr
        .strip_prefix("unix://")
        .or_else(|| addr.starts_with('/').then_some(addr))
    {
        if tls_flags {
            return Err(CliError::Usage(
                "TLS flags (--ca-cert, --client-cert) need an https:// agent address".into(),
            ));
        }
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
        let https = uri.starts_with("https://");
        if tls_flags && !https {
            return Err(CliError::Usage(
                "TLS flags (--ca-cert, --client-cert) need an https:// agent address".into(),
            ));
        }
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        if https {
            let mut tls = ClientTlsConfig::new();
            tls = match &creds.ca_cert {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read_pem("--ca-cert", ca)?)),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&creds.client_cert, &creds.client_key) {
                tls = tls.identity(Identity::from_pem(
                    read_pem("--client-cert", cert)?,
                    read_pem("--client-key", key)?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| CliError::Usage(format!("TLS configuration: {}", error_chain(&e))))?;
        }
        endpoint.connect().await
    };
    let channel = channel.map_err(|e| {
        let reason = error_chain(&e);
        if let Some(meaning) = explain(&reason) {
            return CliError::NotAgent(format!("{addr}: {meaning} ({reason})"));
        }
        if is_tls_refusal(&reason) {
            CliError::Tls {
                addr: addr.to_string(),
                reason,
            }
        } else {
            unreachable(reason)
        }
    })?;
    Ok(InterceptedService::new(channel, BearerToken(token)))
}

/// A client that never connected (it would on its first call): for tests
/// of what is built around one.
#[cfg(test)]
pub fn unconnected() -> Client {
    let channel = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    EbpfServiceClient::with_interceptor(channel, BearerToken(None))
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
