//! TLS for TCP listeners (rustls, the ring provider, as tonic's tls-ring):
//! the agent's certificate and key, and for mutual TLS the CA that client
//! certificates must chain to. The handshake itself runs in
//! `connections.rs`, under the preface timeout. Also reads a verified client
//! certificate's subject for the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Where the PEM files are. Read once, at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The agent's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Mutual TLS: every client must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
}

/// A PEM file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} {path}: {source}")]
pub struct TlsFileError {
    what: &'static str,
    path: String,
    source: std::io::Error,
}

/// The TLS files do not make a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] TlsFileError),
    /// A file holds no usable PEM item of the kind needed.
    #[error("{what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything (e.g. no usable certificate).
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read(what, path)?;
    let pem_err = |source| TlsConfigError::Pem {
        what,
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(pem_err(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

impl TlsFiles {
    /// The server configuration (ALPN h2). Client certificates are checked
    /// by rustls during the handshake whenever one is presented; a client
    /// that presents none is let through the handshake and refused by the
    /// authenticator with `UNAUTHENTICATED`, so it gets a gRPC status that
    /// names the problem instead of a bare TLS alert.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsConfigError> {
        self.server_config_for(b"h2")
    }

    /// The same configuration offering `alpn` (`http/1.1` for the metrics
    /// endpoint) instead of h2.
    pub fn server_config_for(&self, alpn: &[u8]) -> Result<Arc<ServerConfig>, TlsConfigError> {
        let chain = certs("TLS certificate", &self.cert)?;
        let key =
            PrivateKeyDer::from_pem_slice(&read("TLS key", &self.key)?).map_err(|source| {
                TlsConfigError::Pem {
                    what: "TLS key",
                    path: self.key.display().to_string(),
                    source,
                }
            })?;
        let builder = ServerConfig::builder();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(certs("client CA", ca)?);
                let verifier = WebPkiClientVerifier::builder(roots.into())
                    .allow_unauthenticated()
                    .build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols.push(alpn.to_vec());
        Ok(Arc::new(config))
    }
}

/// One DER TLV: (tag, contents, what follows). `None` on anything malformed.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = tlv(input)?;
    (t == tag).then_some((contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        other => other.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The subject of a DER certificate as `CN=…,O=…`, or `None` if it cannot be
/// read. Only called on certificates rustls has already verified against the
/// client CA; the parsing is bounds-checked all the same (and fuzzed).
pub fn cert_subject(der: &[u8]) -> Option<String> {
    let (cert, _) = expect(SEQUENCE, der)?;
    let (tbs, _) = expect(SEQUENCE, cert)?;
    let mut rest = tbs;
    if let Some((VERSION, _, after)) = tlv(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (mut rdns, _) = expect(SEQUENCE, rest)?;
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (mut set, after) = expect(SET, rdns)?;
        rdns = after;
        while !set.is_empty() {
            let (atv, after) = expect(SEQUENCE, set)?;
            set = after;
            let (oid, value) = expect(OID, atv)?;
            let (_, value, _) = tlv(value)?;
            // Printed into log lines: control characters are escaped.
            let value: String = String::from_utf8_lossy(value).escape_debug().collect();
            parts.push(format!("{}={value}", attribute_name(oid)));
        }
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DER of a tiny certificate-shaped structure with a given subject.
    fn fake_cert(subject: &[u8]) -> Vec<u8> {
        fn wrap(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(body);
            out
        }
        let mut tbs = wrap(VERSION, &wrap(0x02, &[2]));
        tbs.extend(wrap(0x02, &[1, 2, 3])); // serial
        tbs.extend(wrap(SEQUENCE, &[])); // signature algorithm
        tbs.extend(wrap(SEQUENCE, &[])); // issuer
        tbs.extend(wrap(SEQUENCE, &[])); // validity
        tbs.extend(wrap(SEQUENCE, subject));
        wrap(SEQUENCE, &wrap(SEQUENCE, &tbs))
    }

    fn atv(oid: &[u8], value: &str) -> Vec<u8> {
        let mut body = vec![OID, oid.len() as u8];
        body.extend_from_slice(oid);
        body.push(0x0c);
        body.push(value.len() as u8);
        body.extend_from_slice(value.as_bytes());
        let mut seq = vec![SEQUENCE, body.len() as u8];
        seq.extend(body);
        let mut set = vec![SET, seq.len() as u8];
        set.extend(seq);
        set
    }

    #[test]
    fn reads_common_name_and_organisation() {
        let mut subject = atv(&[0x55, 0x04, 0x03], "ci-runner");
        subject.extend(atv(&[0x55, 0x04, 0x0a], "Coral"));
        assert_eq!(
            cert_subject(&fake_cert(&subject)).as_deref(),
            Some("CN=ci-runner,O=Coral")
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let subject = atv(&[0x55, 0x04, 0x03], "a\nb");
        assert_eq!(
            cert_subject(&fake_cert(&subject)).as_deref(),
            Some("CN=a\\nb")
        );
    }

    #[test]
    fn truncated_input_is_none_not_a_panic() {
        let der = fake_cert(&atv(&[0x55, 0x04, 0x03], "x"));
        for n in 0..der.len() {
            assert_eq!(cert_subject(&der[..n]), None, "prefix of {n} bytes");
        }
    }
}
