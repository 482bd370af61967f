//! `coral-agent`: serves the Coral eBPF API on a Unix socket (default) or TCP
//! (TLS, mutual TLS and bearer tokens; plaintext only on loopback unless
//! allowed explicitly).

use anyhow::Context;
use clap::Parser;
use coral_agent::export::otlp::{self, OtlpOptions};
use coral_agent::export::prometheus::{self, MetricsListen};
use coral_agent::export::{self, ExportOptions, Exporter};

use coral_agent::server::connections::{self, ConnectionLimits};
use coral_agent::server::listen::{self, Listen, ServeOptions};
use coral_agent::server::listen_args::ListenArgs;
use coral_agent::{Limits, Manager, capabilities, kinds, test_hooks};
use std::net::SocketAddr;
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

    /// Group of the Unix socket file (name or gid): its members may use the agent.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,

    #[command(flatten)]
    listen_args: ListenArgs,

    /// StreamEvents clients served at once.
    #[arg(long, default_value_t = coral_agent::server::DEFAULT_MAX_STREAMS)]
    max_streams: usize,

    /// Connections the listener holds at once; past it, new ones are closed at once.
    #[arg(long, default_value_t = connections::DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    max_connections: usize,

    /// Time a new connection gets to finish TLS and send the HTTP/2 preface, or be closed.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
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

    /// Serve Prometheus /metrics on IP:PORT (off unless given). Plaintext on
    /// loopback; elsewhere it needs --tls-cert/--tls-key and/or --token-file.
    #[arg(long, env = "CORAL_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Result series one exported collector may have; the rest are folded
    /// into one {overflow} series per metric (and counted).
    #[arg(long, default_value_t = export::DEFAULT_MAX_SERIES, value_name = "N")]
    metrics_max_series: usize,

    /// Turn on kernel BPF run-time statistics (BPF_ENABLE_STATS) and export
    /// each collector's program run counts and run time. Costs every BPF
    /// program on the machine two clock reads per run while the agent runs.
    #[arg(long)]
    bpf_stats: bool,

    /// Push the same metrics over OTLP/gRPC to this collector
    /// (http://host:4317 or https://host:4317).
    #[arg(long, env = "CORAL_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// How often metrics are pushed to --otlp-endpoint.
    #[arg(long, default_value = "15s", value_parser = parse_positive_duration, requires = "otlp_endpoint")]
    otlp_interval: Duration,

    /// CA certificate (PEM) of an https --otlp-endpoint.
    #[arg(long, value_name = "PEM", requires = "otlp_endpoint")]
    otlp_ca_cert: Option<PathBuf>,

    /// Join this colony: register and heartbeat (unix:///path, http://host:port, https://host:port).
    #[arg(
        long,
        env = "CORAL_COLONY",
        help_heading = "Colony",
        value_name = "URL"
    )]
    colony: Option<String>,

    /// Where the colony reaches this agent [default: from --listen].
    #[arg(long, help_heading = "Colony", value_name = "URL", requires = "colony")]
    advertise: Option<String>,

    /// This node's name in the colony [default: the host name].
    #[arg(long, env = "CORAL_NODE_NAME", help_heading = "Colony")]
    node_name: Option<String>,

    /// A label of this node, e.g. --node-label env=prod. Repeatable.
    #[arg(long = "node-label", help_heading = "Colony", value_parser = parse_label, value_name = "KEY=VALUE")]
    node_labels: Vec<(String, String)>,

    /// CA (PEM) of an https:// colony's certificate [default: the system's roots].
    #[arg(long, help_heading = "Colony", value_name = "PEM", requires = "colony")]
    colony_ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) for a colony that requires mutual TLS.
    #[arg(
        long,
        help_heading = "Colony",
        value_name = "PEM",
        requires = "colony_client_key"
    )]
    colony_client_cert: Option<PathBuf>,

    /// Private key (PEM) of --colony-client-cert.
    #[arg(
        long,
        help_heading = "Colony",
        value_name = "PEM",
        requires = "colony_client_cert"
    )]
    colony_client_key: Option<PathBuf>,

    /// File holding the bearer token presented to the colony (its first line).
    #[arg(
        long,
        env = "CORAL_COLONY_TOKEN_FILE",
        help_heading = "Colony",
        value_name = "FILE",
        requires = "colony"
    )]
    colony_token_file: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// The address the colony dials, from what the agent listens on.
fn advertised(listen: &Listen, tls: bool) -> String {
    match listen {
        Listen::Unix(path) => format!("unix://{}", path.display()),
        Listen::Tcp(addr) => {
            let scheme = if tls { "https" } else { "http" };
            if addr.ip().is_unspecified() {
                // Reachable under the node's name, not 0.0.0.0.
                format!(
                    "{scheme}://{}:{}",
                    coral_agent::colony::host_name(),
                    addr.port()
                )
            } else {
                format!("{scheme}://{addr}")
            }
        }
    }
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

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be more than 0".into()),
        d => Ok(d),
    }
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

    let tls = args.listen_args.tls();
    let tokens = args.listen_args.tokens()?;
    let metrics = args.metrics_listen.map(|addr| MetricsListen {
        addr,
        tls: tls.clone(),
        tokens: tokens.clone(),
    });
    if let Some(metrics) = &metrics {
        metrics.check()?;
    }
    // With a Unix socket for the API, the TLS files are the metrics
    // endpoint's alone.
    let grpc_tls = match (&args.listen, &metrics) {
        (Listen::Unix(_), Some(_)) => None,
        _ => tls,
    };
    let otlp = args.otlp_endpoint.map(|endpoint| OtlpOptions {
        endpoint,
        interval: args.otlp_interval,
        ca_cert: args.otlp_ca_cert,
    });
    let otlp_channel = otlp.as_ref().map(otlp::channel).transpose()?;
    let options = ServeOptions {
        socket_mode: args.listen_args.socket_mode,
        socket_gid: args
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?,
        tls: grpc_tls,
        tokens,
        allow_plaintext: args.listen_args.allow_plaintext,
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

    // Held for the agent's life: the kernel keeps BPF statistics on while
    // this fd is open, and turns them off when it closes (the agent exits).
    let _bpf_stats = if args.bpf_stats {
        let guard = export::bpf::enable_stats().map_err(|e| anyhow::anyhow!("--bpf-stats: {e}"))?;
        tracing::warn!(
            "kernel BPF statistics on (--bpf-stats): every BPF program on this machine now reads the clock twice per run"
        );
        Some(guard)
    } else {
        None
    };
    let exporter = Exporter::new(
        manager.clone(),
        ExportOptions {
            max_series: args.metrics_max_series,
            bpf_stats: args.bpf_stats,
        },
    );
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    if let Some(listen) = metrics {
        let mut stop = stopping.clone();
        let serving = prometheus::bind(exporter.clone(), listen, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
        tokio::spawn(serving);
    }
    let pusher = match (otlp, otlp_channel) {
        (Some(options), Some(channel)) => {
            tracing::info!(endpoint = %options.endpoint, interval = ?options.interval, "pushing metrics over OTLP");
            Some(tokio::spawn(otlp::run(
                exporter.clone(),
                options,
                channel,
                stopping.clone(),
            )))
        }
        _ => None,
    };
    // The colony hears of the shutdown at the signal (it stops pulling this
    // agent); the OTLP pusher only once collectors have ended (its last push
    // carries their final results).
    let (leaving_tx, leaving) = tokio::sync::watch::channel(false);
    if let Some(colony) = &args.colony {
        let token = match &args.colony_token_file {
            Some(path) => {
                let file = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --colony-token-file {}", path.display()))?;
                let token = coral_agent::dial::token_in(&file)
                    .with_context(|| format!("--colony-token-file {} is empty", path.display()))?;
                Some(token.to_string())
            }
            None => None,
        };
        let join = coral_agent::colony::Join {
            colony: colony.clone(),
            credentials: coral_agent::dial::Credentials {
                ca_cert: args.colony_ca_cert.clone(),
                client_cert: args.colony_client_cert.clone(),
                client_key: args.colony_client_key.clone(),
                token,
            },
            node: args
                .node_name
                .clone()
                .unwrap_or_else(coral_agent::colony::host_name),
            labels: args.node_labels.iter().cloned().collect(),
            address: args
                .advertise
                .clone()
                .unwrap_or_else(|| advertised(&args.listen, options.tls.is_some())),
        };
        tokio::spawn(coral_agent::colony::run(
            join,
            manager.clone(),
            options.connections,
            leaving,
        ));
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = manager.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping collectors"),
            _ = int.recv() => tracing::info!("SIGINT: stopping collectors"),
        }
        let _ = leaving_tx.send(true);
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
    let served = listen::serve(manager, &args.listen, options, shutdown)
        .await
        .with_context(|| format!("serving on {}", args.listen));
    // Collectors have ended: one last push carries their final results.
    let _ = stopping_tx.send(true);
    if let Some(pusher) = pusher {
        let _ = tokio::time::timeout(otlp::EXPORT_TIMEOUT, pusher).await;
    }
    served?;
    Ok(())
}
