//! The command tree. One module per command, each with its `Args` and `run`.

mod caps;
pub(crate) mod fleet;
mod mcp;
pub(crate) mod tap;

use crate::client::{self, Client};
use crate::render::Output;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Coral: on-demand, time-boxed eBPF collectors on a node, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "coral", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Agent address: unix:///path, /path, http://host:port, or https://host:port (TLS).
    #[arg(long, global = true, help_heading = "Global options", env = "CORAL_AGENT", hide_env_values = true, default_value = concat!("unix://", "/run/coral/agent.sock"))]
    agent: String,

    /// CA certificate (PEM) that signed the agent's TLS certificate [default: the system's roots].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CORAL_CA_CERT",
        hide_env_values = true,
        value_name = "PEM"
    )]
    ca_cert: Option<PathBuf>,

    /// Client certificate (PEM), for agents that require mutual TLS.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CORAL_CLIENT_CERT",
        hide_env_values = true,
        value_name = "PEM"
    )]
    client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CORAL_CLIENT_KEY",
        hide_env_values = true,
        value_name = "PEM"
    )]
    client_key: Option<PathBuf>,

    /// Bearer token sent on every call (prefer the environment variable: arguments are visible to other users).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CORAL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Colony address (same forms as --agent): tap commands then work on fleet taps; needed by `agents` and `query`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CORAL_COLONY",
        hide_env_values = true,
        value_name = "URL"
    )]
    colony: Option<String>,

    /// Output format.
    #[arg(short, long, global = true, help_heading = "Global options", value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// What this node supports: kernel, privileges, hooks, and each collector kind (and why not).
    Caps(caps::Args),
    /// Start, watch and manage collectors ("taps").
    #[command(subcommand)]
    Tap(Box<tap::Command>),
    /// Serve the Model Context Protocol (stdio, or --http), so an AI assistant can see what this node (or, with --colony, every node of the colony) can run, run collectors and read their results.
    Mcp(mcp::Args),
    /// The colony's agents: node, labels, kinds they can run, last seen (needs --colony).
    Agents(fleet::agents::Args),
    /// Stored results of fleet taps, by kind, time and node (needs --colony).
    Query(fleet::query::Args),
}

/// Human durations: `500ms`, `60s`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 30s, 1m30s, 500ms)"))
}

/// Sizes: `4096`, `512KiB`, `1MiB`, `2GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 4096, 512KiB, 1MiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// What every command gets.
pub struct Ctx {
    pub client: Client,
    pub output: Output,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let creds = client::Credentials {
        ca_cert: cli.ca_cert,
        client_cert: cli.client_cert,
        client_key: cli.client_key,
        token: cli.token,
    };
    if let Some(colony) = &cli.colony {
        let client = client::connect_colony(colony, &creds).await?;
        let ctx = fleet::Ctx {
            client,
            output: cli.output,
        };
        return match cli.command {
            Command::Caps(_) => Err(client::CliError::Usage(
                "caps describes one agent: use --agent (or `coral agents` for the colony's agents and their kinds)".into(),
            )
            .into()),
            Command::Tap(cmd) => fleet::run_tap(ctx, *cmd).await,
            Command::Agents(args) => fleet::agents::run(ctx, args).await,
            Command::Query(args) => fleet::query::run(ctx, args).await,
            Command::Mcp(args) => mcp::run_colony(ctx.client, colony, args).await,
        };
    }
    // Connected only for the commands that talk to one agent: asking for a
    // colony's agents without --colony is a usage error, not an unreachable
    // agent.
    let agent = &cli.agent;
    let output = cli.output;
    let ctx = || async {
        anyhow::Ok(Ctx {
            client: client::connect(agent, &creds).await?,
            output,
        })
    };
    match cli.command {
        Command::Caps(args) => caps::run(ctx().await?, args).await,
        Command::Tap(cmd) => tap::run(ctx().await?, *cmd).await,
        Command::Mcp(args) => mcp::run(ctx().await?.client, agent, args).await,
        Command::Agents(_) | Command::Query(_) => Err(client::CliError::Usage(
            "agents and query ask a colony: give --colony URL (or $CORAL_COLONY)".into(),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_snapshots() {
        let mut cmd = Cli::command();
        insta::assert_snapshot!("coral", cmd.render_long_help().to_string());
        let tap = cmd.find_subcommand_mut("tap").unwrap();
        let start = tap.find_subcommand_mut("start").unwrap();
        insta::assert_snapshot!("tap_start", start.render_long_help().to_string());
    }
}
