//! Who is calling, and may they: bearer tokens, the mutual-TLS requirement,
//! the peer identity every audit line names, and the audit lines themselves.
//!
//! Every `EbpfService` call goes through [`Authenticator`] (a tonic
//! interceptor) before its handler runs. It refuses calls without valid
//! credentials (`UNAUTHENTICATED`) and records what it established as an
//! [`Authenticated`] request extension. Handlers that change what the kernel
//! runs (start, stop, extend) then call [`Peer::require_full`] and
//! [`audit`] the outcome under the `coral::audit` tracing target.

use crate::domain::Kind;
use crate::error::Error;
use crate::text::{Cleaned, QUOTE_BYTES};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::Request;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

/// Shortest token accepted in a token file: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read capabilities, collectors and records only.
    ReadOnly,
    /// Also start, stop and extend collectors.
    Full,
}

#[derive(Clone)]
struct Token {
    name: String,
    secret: Vec<u8>,
    access: Access,
}

/// The tokens of a token file: lines `name:token` (full access) or
/// `name:token:read-only`; blank lines and `#` comments are skipped. The name
/// is what audit lines record; the token itself is never logged.
#[derive(Clone)]
pub struct Tokens(Vec<Token>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a Debug print must not leak secrets.
        f.debug_list()
            .entries(self.0.iter().map(|t| &t.name))
            .finish()
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("token file has no tokens")]
    Empty,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777),
                    "token file is readable by group or others: chmod 600 it");
            }
        }
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens: Vec<Token> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| TokenFileError::Line {
                line: i + 1,
                reason: reason.into(),
            };
            let mut fields = line.split(':');
            let (name, secret) = match (fields.next(), fields.next()) {
                (Some(n), Some(s)) => (n.trim(), s.trim()),
                _ => return Err(bad("expected name:token or name:token:read-only")),
            };
            let access = match fields.next().map(str::trim) {
                None => Access::Full,
                Some("read-only") => Access::ReadOnly,
                Some(_) => return Err(bad("the third field may only be read-only")),
            };
            if fields.next().is_some() {
                return Err(bad("too many ':' (a token may not contain one)"));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
            {
                return Err(bad("the name must be non-empty: letters, digits, . _ - @"));
            }
            if secret.len() < MIN_TOKEN_LEN || secret.chars().any(|c| c.is_whitespace()) {
                return Err(bad(&format!(
                    "the token must be at least {MIN_TOKEN_LEN} characters without spaces"
                )));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(bad("duplicate name"));
            }
            tokens.push(Token {
                name: name.into(),
                secret: secret.as_bytes().to_vec(),
                access,
            });
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Tokens(tokens))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token matching `presented`. Every token is compared, each in
    /// constant time, so the answer's timing says nothing about how close a
    /// guess was or which token it resembled.
    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.secret.as_slice().ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }
}

/// What the authenticator established, stored in the request's extensions.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The name of the bearer token presented, when tokens are required.
    pub token: Option<String>,
    pub access: Access,
}

/// Checks every `EbpfService` call. Cheap to clone (one per connection).
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    tokens: Option<Arc<Tokens>>,
    require_client_cert: bool,
}

impl Authenticator {
    /// `tokens`: require a bearer token. `require_client_cert`: mutual TLS;
    /// TLS connections without a verified client certificate are refused.
    pub fn new(tokens: Option<Tokens>, require_client_cert: bool) -> Self {
        Self {
            tokens: tokens.map(Arc::new),
            require_client_cert,
        }
    }

    fn authenticate<T>(&self, req: &Request<T>) -> Result<Authenticated, Error> {
        if self.require_client_cert
            && req.extensions().get::<UdsConnectInfo>().is_none()
            && req.peer_certs().is_none_or(|c| c.is_empty())
        {
            return Err(Error::Unauthenticated(
                "a client certificate is required (mutual TLS): pass --client-cert and --client-key"
                    .into(),
            ));
        }
        let Some(tokens) = &self.tokens else {
            return Ok(Authenticated {
                token: None,
                access: Access::Full,
            });
        };
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Error::Unauthenticated(
                "a bearer token is required (authorization: Bearer <token>; coral --token)".into(),
            )
        })?;
        let presented = header.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
            Error::Unauthenticated("the authorization header must be `Bearer <token>`".into())
        })?;
        let token = tokens
            .find(presented)
            .ok_or_else(|| Error::Unauthenticated("the bearer token is not valid".into()))?;
        Ok(Authenticated {
            token: Some(token.name.clone()),
            access: token.access,
        })
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        match self.authenticate(&req) {
            Ok(auth) => {
                req.extensions_mut().insert(auth);
                Ok(req)
            }
            Err(err) => {
                // Refusals are audited too: repeated ones are what an
                // operator wants to see.
                let peer = Peer::of(&req).to_string();
                let error = err.to_string();
                tracing::warn!(target: "coral::audit", action = "authenticate",
                    peer = %Cleaned::log(&peer), outcome = "refused",
                    error = %Cleaned::log(&error));
                Err(err.into())
            }
        }
    }
}

/// How the caller is connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A Unix socket; the kernel's SO_PEERCRED credentials of the connecting process.
    Unix {
        uid: Option<u32>,
        gid: Option<u32>,
        pid: Option<i32>,
    },
    /// TCP, with or without TLS.
    Tcp { addr: Option<SocketAddr> },
    /// No connection information (in-process use).
    Unknown,
}

/// Everything the agent knows about who made a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub transport: Transport,
    /// The verified client certificate's subject (mutual TLS).
    pub cert_subject: Option<String>,
    /// The name of the bearer token it presented.
    pub token: Option<String>,
    pub access: Access,
}

impl Peer {
    pub fn of<T>(req: &Request<T>) -> Peer {
        let ext = req.extensions();
        let transport = if let Some(uds) = ext.get::<UdsConnectInfo>() {
            let cred = uds.peer_cred;
            Transport::Unix {
                uid: cred.map(|c| c.uid()),
                gid: cred.map(|c| c.gid()),
                pid: cred.and_then(|c| c.pid()),
            }
        } else if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            Transport::Tcp {
                addr: tls.get_ref().remote_addr(),
            }
        } else if let Some(tcp) = ext.get::<TcpConnectInfo>() {
            Transport::Tcp {
                addr: tcp.remote_addr(),
            }
        } else {
            Transport::Unknown
        };
        let cert_subject = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| super::tls::cert_subject(c)))
            .map(|s| s.unwrap_or_else(|| "(unreadable subject)".into()));
        // The interceptor always runs before the handlers (see `listen::serve`);
        // without it (in-process use) there is nothing to restrict.
        let auth = ext
            .get::<Authenticated>()
            .cloned()
            .unwrap_or(Authenticated {
                token: None,
                access: Access::Full,
            });
        Peer {
            transport,
            cert_subject,
            token: auth.token,
            access: auth.access,
        }
    }

    /// Refuses read-only callers (`PERMISSION_DENIED`).
    pub fn require_full(&self, action: Action) -> Result<(), Error> {
        match self.access {
            Access::Full => Ok(()),
            Access::ReadOnly => Err(Error::PermissionDenied(format!(
                "token {} is read-only: it may not {action} collectors",
                self.token.as_deref().unwrap_or("-")
            ))),
        }
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "?".into(), ToString::to_string)
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Unix { uid, gid, pid } => {
                write!(f, "unix uid={} gid={} pid={}", opt(uid), opt(gid), opt(pid))?
            }
            Transport::Tcp { addr } => write!(f, "tcp {}", opt(addr))?,
            Transport::Unknown => f.write_str("unknown")?,
        }
        if let Some(subject) = &self.cert_subject {
            write!(f, " cert=\"{subject}\"")?;
        }
        if let Some(token) = &self.token {
            write!(f, " token={token}")?;
        }
        Ok(())
    }
}

/// The calls that are audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Extend,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Extend => "extend",
        })
    }
}

/// One audit line (target `coral::audit`, level info) for a start, stop or
/// extend, whatever its outcome. `id` and `kind` are empty / `None` when the
/// request was refused before they were known.
pub fn audit(
    action: Action,
    peer: &Peer,
    id: &str,
    kind: Option<Kind>,
    outcome: Result<(), &Error>,
) {
    let kind = kind.map_or("-", Kind::as_str);
    // Every field a client can shape is escaped and bounded: one call, one line.
    let id = Cleaned::new(if id.is_empty() { "-" } else { id }, QUOTE_BYTES);
    let peer = peer.to_string();
    let peer = Cleaned::log(&peer);
    match outcome {
        Ok(()) => tracing::info!(target: "coral::audit", %action, ?id, kind, %peer, outcome = "ok"),
        Err(err) => {
            let error = err.to_string();
            tracing::info!(target: "coral::audit", %action, ?id, kind, %peer, outcome = "refused",
                code = ?err.code(), error = %Cleaned::log(&error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let tokens = Tokens::parse(
            "# ops tokens\n\nci:0123456789abcdef0123\n dash : fedcba9876543210fedc : read-only \n",
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        let ci = tokens.find(b"0123456789abcdef0123").unwrap();
        assert_eq!((ci.name.as_str(), ci.access), ("ci", Access::Full));
        let dash = tokens.find(b"fedcba9876543210fedc").unwrap();
        assert_eq!(
            (dash.name.as_str(), dash.access),
            ("dash", Access::ReadOnly)
        );
        assert!(tokens.find(b"0123456789abcdef012").is_none());
        assert!(tokens.find(b"").is_none());
        assert_eq!(format!("{tokens:?}"), r#"["ci", "dash"]"#);
    }

    #[test]
    fn bad_token_files_are_refused() {
        for (text, want) in [
            ("", "no tokens"),
            ("ci", "line 1"),
            ("ci:short", "at least 16"),
            ("a b:0123456789abcdef", "name"),
            ("ci:0123456789abcdef:admin", "read-only"),
            ("ci:0123456789abcdef:read-only:x", "too many"),
            (
                "ci:0123456789abcdef\nci:abcdef0123456789",
                "line 2: duplicate",
            ),
        ] {
            let err = Tokens::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    fn request_with(header: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        req
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let auth = Authenticator::new(Some(Tokens::parse("ci:0123456789abcdef").unwrap()), false);
        let code = |h| match auth.authenticate(&request_with(h)) {
            Ok(a) => Ok(a.token.unwrap()),
            Err(e) => Err(tonic::Status::from(e).code()),
        };
        assert_eq!(code(Some("Bearer 0123456789abcdef")), Ok("ci".into()));
        assert_eq!(
            code(Some("Bearer 0123456789abcdeF")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(Some("Basic 0123456789abcdef")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(None), Err(tonic::Code::Unauthenticated));
    }

    #[test]
    fn mutual_tls_needs_a_certificate() {
        let auth = Authenticator::new(None, true);
        let err = auth.authenticate(&request_with(None)).unwrap_err();
        assert!(err.to_string().contains("client certificate"), "{err}");
    }

    #[test]
    fn read_only_peers_cannot_change_collectors() {
        let peer = Peer {
            transport: Transport::Tcp {
                addr: Some("127.0.0.1:4000".parse().unwrap()),
            },
            cert_subject: Some("CN=dash".into()),
            token: Some("dash".into()),
            access: Access::ReadOnly,
        };
        let err = peer.require_full(Action::Start).unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            peer.to_string(),
            "tcp 127.0.0.1:4000 cert=\"CN=dash\" token=dash"
        );
    }
}
