//! The listener flags coral-agent and coral-colony share (`--socket-mode`,
//! `--tls-cert`, `--tls-key`, `--tls-client-ca`, `--token-file`,
//! `--allow-plaintext`), flattened into each binary's clap arguments, so both
//! take the same flags with the same environment variables and meaning.

use super::auth::{TokenFileError, Tokens};
use super::tls::TlsFiles;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct ListenArgs {
    /// Mode of the Unix socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// TLS certificate chain (PEM) for a TCP listener.
    #[arg(long, env = "CORAL_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, env = "CORAL_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: clients (for a colony, agents too) must present a
    /// certificate issued by this CA (PEM).
    #[arg(
        long,
        env = "CORAL_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Require a bearer token on every API call; lines `name:token[:read-only]`.
    #[arg(long, env = "CORAL_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Serve plaintext TCP on a non-loopback address (refused otherwise).
    #[arg(long)]
    pub allow_plaintext: bool,
}

impl ListenArgs {
    /// The TLS files, when --tls-cert (and so --tls-key) is given.
    pub fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }

    /// The tokens of --token-file, read now.
    pub fn tokens(&self) -> Result<Option<Tokens>, TokenFileError> {
        self.token_file.as_deref().map(Tokens::load).transpose()
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|e| format!("octal mode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        listen: ListenArgs,
    }

    #[test]
    fn modes_are_octal_and_tls_needs_both_files() {
        let c = Cli::try_parse_from(["x", "--socket-mode", "0o640"]).unwrap();
        assert_eq!(c.listen.socket_mode, 0o640);
        assert!(c.listen.tls().is_none());
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
        let c = Cli::try_parse_from(["x", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(c.listen.tls().unwrap().key, PathBuf::from("k.pem"));
    }
}
