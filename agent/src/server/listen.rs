//! Where the agent listens and how it serves: a Unix socket by default
//! (`/run/coral/agent.sock`, directory created, mode 0660), or a TCP address.

use super::EbpfApi;
use crate::manager::Manager;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

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
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ListenError + 'a {
    move |source| ListenError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Binds a Unix socket, replacing a stale socket file but never a live one.
fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, ListenError> {
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting mode of", path))?;
    Ok(listener)
}

/// Serves the API, health and reflection on `listen` until `shutdown`
/// resolves, then removes the socket file.
pub async fn serve(
    manager: Manager,
    listen: &Listen,
    socket_mode: u32,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ListenError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<coral_proto::v1::ebpf_service_server::EbpfServiceServer<EbpfApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(coral_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(EbpfApi::new(manager).into_service());

    match listen {
        Listen::Unix(path) => {
            let listener = bind_unix(path, socket_mode)?;
            tracing::info!(%listen, "serving");
            let result = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Listen::Tcp(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "plaintext gRPC on a non-loopback address: anyone who can reach it can load collectors");
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io("binding", Path::new(&addr.to_string())))?;
            tracing::info!(%listen, "serving");
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await?;
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
}
