//! Where the agent listens and how it serves: a Unix socket by default
//! (`/run/coral/agent.sock`, directory created, mode 0660, optional group),
//! or a TCP address, with TLS unless it is loopback or plaintext is allowed
//! explicitly. Every connection gets the same limits and the same
//! authenticator (`auth.rs`); each listener accepts through
//! `connections.rs` (connection cap, TLS and HTTP/2 preface under a
//! timeout), and the Unix socket also through `authority.rs`.

use super::EbpfApi;
use super::auth::{Authenticator, Tokens};
use super::authority::AuthorityFix;
use super::connections::{ConnectionLimits, Replay, incoming, read_preface};
use super::tls::{TlsConfigError, TlsFiles};
use crate::manager::Manager;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio_stream::wrappers::UnixListenerStream;

/// Largest request message the agent decodes. The biggest legitimate one, a
/// `StartCollectorRequest` with 64 pids and a few labels, is under 4 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest set of request headers (HTTP/2 header list): room for a bearer
/// token and the usual gRPC headers, not for abuse.
pub const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Concurrent calls (HTTP/2 streams) on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// HTTP/2 pings on idle connections, so a client that vanished without
/// closing (a dead host, a cut network) is dropped with everything it held.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listen address: `unix:///path`, a bare absolute path, `tcp://host:port`
/// or `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(s)));
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?} is neither unix:///path, an absolute path, nor host:port"))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix://{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Errors setting up the listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another process is already serving on the socket.
    #[error("{0} is in use by a running agent")]
    InUse(PathBuf),
    /// Creating, binding or securing the socket failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("building reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS files do not make a server configuration.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The listen address and the security options do not go together.
    #[error("{0}")]
    Insecure(String),
}

/// How to serve, besides where: the socket's mode and group, TLS, tokens,
/// and the stream limit.
#[derive(Debug)]
pub struct ServeOptions {
    /// Mode of the Unix socket file.
    pub socket_mode: u32,
    /// Group of the Unix socket file (its gid); `None` keeps the agent's.
    pub socket_gid: Option<u32>,
    /// TLS on a TCP listener.
    pub tls: Option<TlsFiles>,
    /// Bearer tokens every `EbpfService` call must present.
    pub tokens: Option<Tokens>,
    /// Serve plaintext TCP on a non-loopback address anyway.
    pub allow_plaintext: bool,
    /// `StreamEvents` clients at once.
    pub max_streams: usize,
    /// Connections at once, and the time each gets to speak HTTP/2.
    pub connections: ConnectionLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            socket_mode: 0o660,
            socket_gid: None,
            tls: None,
            tokens: None,
            allow_plaintext: false,
            max_streams: super::DEFAULT_MAX_STREAMS,
            connections: ConnectionLimits::default(),
        }
    }
}

impl ServeOptions {
    /// Refuses combinations that would be insecure or meaningless, before
    /// anything is bound.
    pub fn check(&self, listen: &Listen) -> Result<(), ListenError> {
        let insecure = |m: String| Err(ListenError::Insecure(m));
        match listen {
            Listen::Unix(_) if self.tls.is_some() => {
                insecure("TLS (--tls-cert) applies to TCP listeners only; a Unix socket is protected by its mode and group".into())
            }
            Listen::Tcp(addr) if self.tls.is_none() && !addr.ip().is_loopback() && !self.allow_plaintext => {
                insecure(format!(
                    "refusing plaintext gRPC on non-loopback address {addr}: anyone who can reach it could load kernel programs; give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), or --allow-plaintext if the network is trusted"
                ))
            }
            _ => Ok(()),
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ListenError + 'a {
    move |source| ListenError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Binds a Unix socket, replacing a stale socket file but never a live one.
fn bind_unix(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> Result<tokio::net::UnixListener, ListenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("removing stale socket", path))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io("binding", path))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("setting group of", path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting mode of", path))?;
    Ok(listener)
}

type ApiServer = coral_proto::v1::ebpf_service_server::EbpfServiceServer<EbpfApi>;

/// The gRPC server with the limits every Coral server applies (header list,
/// streams per connection, keepalive). The colony builds on it too.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_max_header_list_size(MAX_HEADER_BYTES)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Reflection v1 and v1alpha over `api` (an encoded descriptor set) plus
/// health and reflection themselves: grpcurl and stock grpcio-reflection
/// still speak v1alpha.
pub fn reflection(
    api: &'static [u8],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ListenError,
> {
    let schema = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(api)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    Ok((schema().build_v1()?, schema().build_v1alpha()?))
}

/// Serves the API, health and reflection (v1 and v1alpha) on `listen` until
/// `shutdown` resolves, then removes the socket file.
pub async fn serve(
    manager: Manager,
    listen: &Listen,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ListenError> {
    options.check(listen)?;
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (health, health_service) = super::health::health(stopping);
    health.set_serving::<ApiServer>().await;
    // Once shutdown begins: NOT_SERVING, and open Watch calls end, so their
    // connections do not hold the drain up.
    let shutdown = async move {
        shutdown.await;
        health.set_not_serving::<ApiServer>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stopping_tx.send(true);
    };
    let (reflection, reflection_v1alpha) = reflection(coral_proto::FILE_DESCRIPTOR_SET)?;
    let mut builder = server_builder();
    let require_client_cert = options.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let limits = options.connections;
    let auth = Authenticator::new(options.tokens.clone(), require_client_cert);
    // Health and reflection stay open (load balancers probe health; the
    // schema is public); the API itself is behind the authenticator.
    let router = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            EbpfApi::new(manager, options.max_streams)
                .with_connection_limits(limits)
                .into_service(auth),
        );
    serve_router(router, listen, &options, shutdown).await
}

/// Serves `router` on `listen` with `options`' socket mode and group, TLS
/// and connection limits, until `shutdown` resolves, then removes the socket
/// file. `options.tokens` and `max_streams` are the router's business.
pub async fn serve_router(
    router: tonic::transport::server::Router,
    listen: &Listen,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ListenError> {
    options.check(listen)?;
    let require_client_cert = options.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    // TLS runs in the accept loop (connections.rs), under the preface timeout.
    let tls = match &options.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(files.server_config()?)),
        None => None,
    };
    let limits = options.connections;
    let plaintext_tokens = options.tokens.is_some()
        && options.tls.is_none()
        && matches!(listen, Listen::Tcp(a) if !a.ip().is_loopback());
    match listen {
        Listen::Unix(path) => {
            let listener = bind_unix(path, options.socket_mode, options.socket_gid)?;
            tracing::info!(%listen, "serving");
            let incoming = incoming(
                UnixListenerStream::new(listener),
                listen.to_string(),
                limits,
                |mut conn| async move {
                    let head = read_preface(&mut conn).await?;
                    // gRPC C-core clients send the socket path as :authority.
                    Ok(AuthorityFix::new(Replay::new(head, conn)))
                },
            );
            let result = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Listen::Tcp(addr) => {
            if options.tls.is_none() && !addr.ip().is_loopback() {
                tracing::warn!(%addr, "plaintext gRPC on a non-loopback address (--allow-plaintext): anyone who can reach it can call the API");
            }
            if plaintext_tokens {
                tracing::warn!(%addr, "bearer tokens travel in clear text without TLS");
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io("binding", Path::new(&addr.to_string())))?;
            let accepted = tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(KEEPALIVE_INTERVAL));
            tracing::info!(%listen, tls = options.tls.is_some(), mutual_tls = require_client_cert, "serving");
            match tls {
                Some(tls) => {
                    let incoming = incoming(accepted, listen.to_string(), limits, move |conn| {
                        let tls = tls.clone();
                        async move {
                            let mut conn = tls.accept(conn).await?;
                            let head = read_preface(&mut conn).await?;
                            Ok(Replay::new(head, conn))
                        }
                    });
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await?;
                }
                None => {
                    let incoming = incoming(
                        accepted,
                        listen.to_string(),
                        limits,
                        |mut conn| async move {
                            let head = read_preface(&mut conn).await?;
                            Ok(Replay::new(head, conn))
                        },
                    );
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "unix:///run/coral/agent.sock".parse(),
            Ok(Listen::Unix("/run/coral/agent.sock".into()))
        );
        assert_eq!(
            "/tmp/a.sock".parse(),
            Ok(Listen::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            "127.0.0.1:7777".parse(),
            Ok(Listen::Tcp("127.0.0.1:7777".parse().unwrap()))
        );
        assert_eq!(
            "tcp://[::1]:7777".parse(),
            Ok(Listen::Tcp("[::1]:7777".parse().unwrap()))
        );
        assert!("nonsense".parse::<Listen>().is_err());
    }

    #[test]
    fn plaintext_tcp_only_on_loopback_unless_allowed() {
        let open = ServeOptions::default();
        let public: Listen = "0.0.0.0:7777".parse().unwrap();
        let err = open.check(&public).unwrap_err().to_string();
        assert!(
            err.contains("--allow-plaintext") && err.contains("--tls-cert"),
            "{err}"
        );
        assert!(open.check(&"127.0.0.1:7777".parse().unwrap()).is_ok());
        assert!(open.check(&"[::1]:7777".parse().unwrap()).is_ok());
        let allowed = ServeOptions {
            allow_plaintext: true,
            ..ServeOptions::default()
        };
        assert!(allowed.check(&public).is_ok());
        let tls = ServeOptions {
            tls: Some(TlsFiles::default()),
            ..ServeOptions::default()
        };
        assert!(tls.check(&public).is_ok());
        assert!(tls.check(&"/tmp/a.sock".parse().unwrap()).is_err());
    }
}
