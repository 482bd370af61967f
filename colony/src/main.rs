//! `coral-colony`: serves the colony API on a Unix socket (default) or TCP
//! (TLS, mutual TLS, bearer tokens), keeps its state in SQLite (default) or
//! PostgreSQL.

use anyhow::Context;
use clap::Parser;
use coral_agent::dial::Credentials;
use coral_agent::server::connections::ConnectionLimits;
use coral_agent::server::listen::{Listen, ServeOptions};
use coral_agent::server::listen_args::ListenArgs;
use coral_colony::colony::StaticAgent;
use coral_colony::{Colony, Config, server, store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Coral colony: fleet taps over many agents, results stored and queryable.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Where to listen: unix:///path, /path, or IP:PORT (TCP: TLS, or plaintext on loopback).
    #[arg(long, env = "CORAL_COLONY_LISTEN", default_value = concat!("unix://", "/run/coral/colony.sock"))]
    listen: Listen,

    /// Where results are kept: sqlite:///path/colony.db (or a path), or postgres://user@host:port/db.
    #[arg(long, env = "CORAL_COLONY_STORE", default_value = store::DEFAULT_STORE, hide_env_values = true)]
    store: String,

    #[command(flatten)]
    listen_args: ListenArgs,

    /// Connections the listener holds at once.
    #[arg(long, default_value_t = coral_agent::server::connections::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// How often agents heartbeat (and static agents are probed).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, help_heading = "Agents")]
    heartbeat_interval: Duration,

    /// An agent silent this long is dead: its running fleet-tap parts are marked lost.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, help_heading = "Agents")]
    agent_timeout: Duration,

    /// Silent agents are left out of `--nodes all` after this long.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, help_heading = "Agents")]
    forget_after: Duration,

    /// A static agent's address (unix:///path, http://host:port, https://host:port). Repeatable.
    #[arg(long = "agent", value_name = "URL", help_heading = "Agents")]
    agents: Vec<String>,

    /// Static agents, one a line: `URL [node=NAME] [KEY=VALUE]...` (# comments).
    #[arg(long, value_name = "FILE", help_heading = "Agents")]
    agents_file: Option<PathBuf>,

    /// CA (PEM) of the agents' TLS certificates [default: the system's roots].
    #[arg(long, value_name = "PEM", help_heading = "Agents")]
    agent_ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) presented to agents that require mutual TLS.
    #[arg(
        long,
        value_name = "PEM",
        requires = "agent_client_key",
        help_heading = "Agents"
    )]
    agent_client_cert: Option<PathBuf>,

    /// Private key (PEM) of --agent-client-cert.
    #[arg(
        long,
        value_name = "PEM",
        requires = "agent_client_cert",
        help_heading = "Agents"
    )]
    agent_client_key: Option<PathBuf>,

    /// File holding the bearer token presented to agents (its first line).
    #[arg(
        long,
        env = "CORAL_AGENT_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Agents"
    )]
    agent_token_file: Option<PathBuf>,

    /// How long stored records are kept (kinds without --retention-kind).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, help_heading = "Results")]
    retention: Duration,

    /// Retention of one kind, e.g. --retention-kind cpu-profile=1d. Repeatable.
    #[arg(long = "retention-kind", value_parser = parse_kind_retention, value_name = "KIND=AGE", help_heading = "Results")]
    retention_kind: Vec<(String, Duration)>,

    /// How often retention deletes old records.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, help_heading = "Results")]
    retention_interval: Duration,
}

fn parse_kind_retention(s: &str) -> Result<(String, Duration), String> {
    let (kind, age) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KIND=AGE (e.g. cpu-profile=1d)"))?;
    if coral_proto::v1::CollectorKind::from_name(kind).is_none() {
        return Err(format!("{kind:?} is not a collector kind"));
    }
    let age = humantime::parse_duration(age).map_err(|e| format!("{age:?}: {e}"))?;
    Ok((kind.to_string(), age))
}

/// `URL [node=NAME] [KEY=VALUE]...` lines.
fn parse_agents_file(path: &Path) -> anyhow::Result<Vec<StaticAgent>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --agents-file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(address) = words.next() else {
            continue;
        };
        let mut agent = StaticAgent {
            address: address.to_string(),
            ..Default::default()
        };
        for w in words {
            let (k, v) = w.split_once('=').with_context(|| {
                format!("{} line {}: {w:?} is not KEY=VALUE", path.display(), i + 1)
            })?;
            if k == "node" {
                agent.node = v.to_string();
            } else {
                agent.labels.insert(k.to_string(), v.to_string());
            }
        }
        out.push(agent);
    }
    Ok(out)
}

fn token_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let file = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    coral_agent::dial::token_in(&file)
        .map(str::to_string)
        .with_context(|| format!("{what} {} is empty", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let options = ServeOptions {
        socket_mode: args.listen_args.socket_mode,
        socket_gid: None,
        tls: args.listen_args.tls(),
        tokens: args.listen_args.tokens()?,
        allow_plaintext: args.listen_args.allow_plaintext,
        max_streams: 0,
        connections: ConnectionLimits {
            max_connections: args.max_connections.max(1),
            ..ConnectionLimits::default()
        },
    };
    options.check(&args.listen)?;

    let mut static_agents: Vec<StaticAgent> = args
        .agents
        .iter()
        .map(|a| StaticAgent {
            address: a.clone(),
            ..Default::default()
        })
        .collect();
    if let Some(path) = &args.agents_file {
        static_agents.extend(parse_agents_file(path)?);
    }
    let config = Config {
        heartbeat: args.heartbeat_interval,
        agent_timeout: args.agent_timeout,
        forget_after: args.forget_after,
        agent_credentials: Credentials {
            ca_cert: args.agent_ca_cert,
            client_cert: args.agent_client_cert,
            client_key: args.agent_client_key,
            token: args
                .agent_token_file
                .as_deref()
                .map(|p| token_file(p, "--agent-token-file"))
                .transpose()?,
        },
        static_agents,
        retention: args.retention_kind.into_iter().collect::<BTreeMap<_, _>>(),
        default_retention: args.retention,
        retention_every: args.retention_interval,
    };

    let store = store::open(&args.store)
        .await
        .with_context(|| format!("opening the store {}", redact(&args.store)))?;
    tracing::info!(store = store.backend(), url = %redact(&args.store), "store open");
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let colony = Colony::new(Arc::from(store), config, stopping);
    colony.start().await?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stopping_tx.send(true);
    };
    let result = server::serve(colony.clone(), &args.listen, options, shutdown).await;
    // Pulls stop at the signal; what they queued is stored before exiting
    // (the rest is pulled again by the next start).
    colony.pulls_ended(Duration::from_secs(5)).await;
    colony.ingest().flush().await;
    result.with_context(|| format!("serving on {}", args.listen))?;
    Ok(())
}

/// The store URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
