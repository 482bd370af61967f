//! `coral`: the colony CLI. Talks to a node's coral-agent, or with `--colony`
//! to a coral-colony (fleet taps over many agents, stored results), over gRPC.
//!
//! Exit codes: 0 ok (also when stdout is closed early, e.g. `| head`),
//! 1 other failure, 2 usage error, 3 agent unreachable, 4 agent refused the
//! request (the gRPC code is printed; UNAUTHENTICATED and PERMISSION_DENIED
//! too) or a TLS handshake failed on a certificate.

#![forbid(unsafe_code)]

mod client;
mod commands;
mod kinds;
mod render;

use clap::Parser;
use client::CliError;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit_for(&err),
    }
}

fn exit_for(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    eprintln!("coral: {err:#}");
    match err.downcast_ref::<CliError>() {
        Some(CliError::Unreachable { .. } | CliError::NotAgent(_)) => ExitCode::from(3),
        Some(CliError::Rejected(_) | CliError::Tls { .. }) => ExitCode::from(4),
        Some(CliError::Usage(_)) => ExitCode::from(2),
        None => ExitCode::from(1),
    }
}
