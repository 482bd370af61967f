//! `coral-agent`: serves the Coral eBPF API on a Unix socket (default) or TCP
//! (TLS, mutual TLS and bearer tokens; plaintext only on loopback unless
//! allowed explicitly).

use anyhow::Context;
use clap::Parser;
use coral_agent::server::auth::Tokens;
use coral_agent::server::connections::{self, ConnectionLimits};
use coral_agent::server::listen::{self, Listen, ServeOptions};
use coral_agent::server::tls::TlsFiles;
use coral_agent::{Limits, Manager, capabilities, kinds, test_hooks};
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Coral node agent: starts time-boxed eBPF collectors on request (gRPC).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Where to listen: unix:///path, /path, or IP:PORT (TCP: TLS, or plaintext on loopback).
    #[arg(long, env = "CORAL_LISTEN", default_value = concat!("unix://", "/run/coral/agent.sock"))]
    listen: Listen,

    /// Mode of the Unix socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,

    /// Group of the Unix socket file (name or gid): its members may use the agent.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,

    /// TLS certificate chain (PEM) for a TCP listener.
    #[arg(long, env = "CORAL_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, env = "CORAL_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,

    /// Mutual TLS: clients must present a certificate issued by this CA (PEM).
    #[arg(
        long,
        env = "CORAL_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    tls_client_ca: Option<PathBuf>,

    /// Require a bearer token on every API call; lines `name:token[:read-only]`.
    #[arg(long, env = "CORAL_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Serve plaintext TCP on a non-loopback address (refused otherwise).
    #[arg(long)]
    allow_plaintext: bool,

    /// StreamEvents clients served at once.
    #[arg(long, default_value_t = coral_agent::server::DEFAULT_MAX_STREAMS)]
    max_streams: usize,

    /// Connections the listener holds at once; past it, new ones are closed at once.
    #[arg(long, default_value_t = connections::DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    max_connections: usize,

    /// Time a new connection gets to finish TLS and send the HTTP/2 preface, or be closed.
    #[arg(long, default_value = "10s", value_parser = parse_preface_timeout)]
    preface_timeout: Duration,

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

    /// Record bytes one collector keeps; its oldest records are dropped (and counted) beyond it.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes, value_name = "BYTES")]
    max_collector_bytes: u64,

    /// Record bytes all collectors keep together; the agent's oldest records go first beyond it.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes, value_name = "BYTES")]
    max_retained_bytes: u64,

    /// Ended collectors kept readable; beyond it the one that ended first is removed.
    #[arg(long, default_value_t = Limits::default().max_ended)]
    max_ended: usize,

    /// Record bytes one GetEvents page carries at most (gRPC clients refuse messages over 4 MiB by default).
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes, value_name = "BYTES")]
    max_page_bytes: u64,

    /// How long StopCollector and shutdown wait for a collector to end (a
    /// whole-machine profile's final symbolization can take tens of seconds).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
}

/// `4096`, `64KiB`, `64MiB`, `1GiB` (or KB/MB/GB, also powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 64MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.parse::<u32>().map_err(|e| e.to_string())? {
        0 => Err("must be at least 1".into()),
        n => Ok(n as usize),
    }
}

fn parse_preface_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|e| format!("octal mode: {e}"))
}

/// A group name or a numeric gid.
fn resolve_group(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    #[cfg(target_os = "linux")]
    {
        let found = nix::unistd::Group::from_name(group)
            .with_context(|| format!("looking up group {group}"))?;
        Ok(found
            .with_context(|| format!("--socket-group: no group named {group}"))?
            .gid
            .as_raw())
    }
    #[cfg(not(target_os = "linux"))]
    anyhow::bail!("--socket-group: give a numeric gid on this OS")
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists, so every thread shares the one arena.
    coral_agent::memory::use_one_arena();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run());
    // A collector call still stuck on the blocking pool must not keep the
    // process alive: exiting releases its kernel objects.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for people: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let limits = Limits {
        max_running: args.max_running,
        max_duration: args.max_duration,
        default_duration: args.default_duration,
        max_records: args.max_records,
        retention: args.retention,
        max_profile_frequency_hz: args.max_profile_frequency,
        max_collector_bytes: args.max_collector_bytes,
        max_retained_bytes: args.max_retained_bytes,
        max_ended: args.max_ended,
        max_page_bytes: args.max_page_bytes,
        stop_timeout: args.stop_timeout,
        ..Limits::default()
    };
    anyhow::ensure!(
        limits.default_duration <= limits.max_duration,
        "--default-duration must not exceed --max-duration"
    );

    let options = ServeOptions {
        socket_mode: args.socket_mode,
        socket_gid: args
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: args.tls_client_ca,
            }),
            _ => None,
        },
        tokens: match &args.token_file {
            Some(path) => Some(Tokens::load(path)?),
            None => None,
        },
        allow_plaintext: args.allow_plaintext,
        max_streams: args.max_streams,
        connections: ConnectionLimits {
            max_connections: args.max_connections,
            preface_timeout: args.preface_timeout,
        },
    };
    // Refuse an insecure listener before probing (which may mount tracefs).
    options.check(&args.listen)?;

    let faults = match std::env::var(test_hooks::FAULT_ENV) {
        Ok(spec) => test_hooks::parse(&spec)
            .map_err(|e| anyhow::anyhow!("{}: {e}", test_hooks::FAULT_ENV))?,
        Err(_) => Vec::new(),
    };
    // Probing and the factories' availability checks read the kernel.
    let manager = tokio::task::spawn_blocking(move || {
        let caps = capabilities::detect();
        // The probes loaded BPF objects: give their BTF parse back.
        coral_agent::memory::release_freed();
        tracing::info!(kernel = %caps.kernel_release, btf = caps.btf, cap_bpf = caps.cap_bpf,
            raw_tp = caps.raw_tracepoints, tp_btf = caps.tp_btf, kprobes = caps.kprobes,
            fentry = caps.fentry, "capabilities probed");
        if !cfg!(feature = "bpf") {
            tracing::warn!("built without BPF support: every collector kind is unavailable");
        }
        let mut factories = kinds::factories();
        if !faults.is_empty() {
            tracing::warn!(?faults, "TEST HOOK {} is set", test_hooks::FAULT_ENV);
            factories = test_hooks::inject(factories, &faults);
        }
        Manager::new(limits, caps, factories)
    })
    .await?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = manager.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping collectors"),
            _ = int.recv() => tracing::info!("SIGINT: stopping collectors"),
        }
        // Every running collector records its final result before we go,
        // unless it is stuck: then the exit releases it.
        let stuck = stopping.shutdown().await;
        if !stuck.is_empty() {
            tracing::warn!(
                ?stuck,
                "collectors did not end within the stop timeout; exiting anyway"
            );
        }
    };
    listen::serve(manager, &args.listen, options, shutdown)
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    Ok(())
}
