//! Dialling another Coral server: the colony (from an agent started with
//! `--colony`) or an agent (from the colony). Addresses are `unix:///path`,
//! a bare absolute path, `http://host:port` (plaintext) or `https://host:port`
//! (TLS: the given CA, else the system's roots; a client certificate for
//! mutual TLS), with an optional bearer token on every call. The same forms
//! and flags as the CLI's `--agent`.

use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Credentials presented to the server dialled.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// CA of the server's certificate (PEM); the system's roots otherwise.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Bearer token sent on every call.
    pub token: Option<String>,
}

/// The bearer token a token file (`--colony-token-file`,
/// `--agent-token-file`) holds: its first non-empty line, trimmed.
pub fn token_in(file: &str) -> Option<&str> {
    file.lines().map(str::trim).find(|l| !l.is_empty())
}

/// Why a server could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The address is none of the accepted forms.
    #[error("{addr:?}: {reason}")]
    Address { addr: String, reason: String },
    /// A PEM file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The token cannot be sent as a header.
    #[error("the token must be printable ASCII")]
    Token,
    /// The TLS settings do not make a client configuration.
    #[error("TLS configuration for {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting failed.
    #[error("connecting to {addr}: {}", coral_proto::error_chain(.source))]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Debug)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// A channel that sends the credentials' token on every call.
pub type Authorized = InterceptedService<Channel, BearerToken>;

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, DialError> {
    std::fs::read(path).map_err(|source| DialError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The endpoint for `addr`, or the Unix socket path it names.
fn endpoint(addr: &str, creds: &Credentials) -> Result<Result<Endpoint, PathBuf>, DialError> {
    let bad = |reason: &str| DialError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let tls_flags = creds.ca_cert.is_some() || creds.client_cert.is_some();
    if creds.client_cert.is_some() != creds.client_key.is_some() {
        return Err(bad("a client certificate and its key go together"));
    }
    if let Some(path) = addr
        .strip_prefix("unix://")
        .or_else(|| addr.starts_with('/').then_some(addr))
    {
        if tls_flags {
            return Err(bad("TLS settings need an https:// address"));
        }
        return Ok(Err(PathBuf::from(path)));
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let https = uri.starts_with("https://");
    if tls_flags && !https {
        return Err(bad("TLS settings need an https:// address"));
    }
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if https {
        let mut tls = ClientTlsConfig::new();
        tls = match &creds.ca_cert {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read_pem("CA certificate", ca)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&creds.client_cert, &creds.client_key) {
            tls = tls.identity(Identity::from_pem(
                read_pem("client certificate", cert)?,
                read_pem("client key", key)?,
            ));
        }
        endpoint = endpoint.tls_config(tls).map_err(|source| DialError::Tls {
            addr: addr.to_string(),
            source,
        })?;
    }
    Ok(Ok(endpoint))
}

/// Connects to `addr` now.
pub async fn connect(addr: &str, creds: &Credentials) -> Result<Authorized, DialError> {
    let channel = match endpoint(addr, creds)? {
        Ok(endpoint) => endpoint.connect().await,
        Err(path) => unix_endpoint().connect_with_connector(unix(path)).await,
    };
    let channel = channel.map_err(|source| DialError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    authorize(channel, creds)
}

/// A channel to `addr` that connects on first use and reconnects after a
/// failure by itself (tonic's lazy channel): for long-lived peers.
pub fn lazy(addr: &str, creds: &Credentials) -> Result<Authorized, DialError> {
    let channel = match endpoint(addr, creds)? {
        Ok(endpoint) => endpoint.connect_lazy(),
        Err(path) => unix_endpoint().connect_with_connector_lazy(unix(path)),
    };
    authorize(channel, creds)
}

fn unix_endpoint() -> Endpoint {
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost").connect_timeout(CONNECT_TIMEOUT)
}

fn unix(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

fn authorize(channel: Channel, creds: &Credentials) -> Result<Authorized, DialError> {
    let token = match &creds.token {
        Some(t) => Some(
            MetadataValue::try_from(format!("Bearer {}", t.trim()))
                .map_err(|_| DialError::Token)?,
        ),
        None => None,
    };
    Ok(InterceptedService::new(channel, BearerToken(token)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_file_holds_its_first_non_empty_line() {
        assert_eq!(super::token_in("\n  \n  s3cret \nnext\n"), Some("s3cret"));
        assert_eq!(super::token_in(" \n\n"), None);
    }
}
