//! `coral-agent`: serves the Coral eBPF API on a Unix socket (default) or TCP.

use anyhow::Context;
use clap::Parser;
use coral_agent::server::listen::{self, Listen};
use coral_agent::{Limits, Manager, capabilities, collectors};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Coral node agent: starts time-boxed eBPF collectors on request (gRPC).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Where to listen: unix:///path, /path, or host:port (plaintext TCP).
    #[arg(long, env = "CORAL_LISTEN", default_value = concat!("unix://", "/run/coral/agent.sock"))]
    listen: Listen,

    /// Mode of the Unix socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,

    /// Collectors that may run at once.
    #[arg(long, default_value_t = Limits::default().max_running)]
    max_running: u32,

    /// Longest duration a client may ask for (longer requests are rejected).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    max_duration: Duration,

    /// Duration used when a request gives none.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    default_duration: Duration,

    /// Records kept per collector; older ones are dropped and counted.
    #[arg(long, default_value_t = Limits::default().max_records)]
    max_records: usize,

    /// Highest cpu-profile sampling frequency clients may ask for (Hz).
    #[arg(long, default_value_t = Limits::default().max_profile_frequency_hz)]
    max_profile_frequency: u32,

    /// How long ended collectors stay readable.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    retention: Duration,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|e| format!("octal mode: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let limits = Limits {
        max_running: args.max_running,
        max_duration: args.max_duration,
        default_duration: args.default_duration,
        max_records: args.max_records,
        retention: args.retention,
        max_profile_frequency_hz: args.max_profile_frequency,
        ..Limits::default()
    };
    anyhow::ensure!(
        limits.default_duration <= limits.max_duration,
        "--default-duration must not exceed --max-duration"
    );

    let caps = tokio::task::spawn_blocking(capabilities::detect).await?;
    tracing::info!(kernel = %caps.kernel_release, btf = caps.btf, cap_bpf = caps.cap_bpf,
        raw_tp = caps.raw_tracepoints, kprobes = caps.kprobes, "capabilities probed");
    let manager = Manager::new(limits, caps, collectors::builtin());

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = manager.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping collectors"),
            _ = int.recv() => tracing::info!("SIGINT: stopping collectors"),
        }
        // Every running collector records its final result before we go.
        stopping.shutdown().await;
    };
    listen::serve(manager, &args.listen, args.socket_mode, shutdown)
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    Ok(())
}
