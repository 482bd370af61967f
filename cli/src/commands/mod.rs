//! The command tree. One module per command, each with its `Args` and `run`.

mod caps;
mod tap;

use crate::client::{self, Client};
use crate::render::Output;
use clap::{Parser, Subcommand};

/// Coral: on-demand, time-boxed eBPF collectors on a node, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "coral", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Agent address: unix:///path, /path, or http://host:port.
    #[arg(long, global = true, env = "CORAL_AGENT", hide_env_values = true, default_value = concat!("unix://", "/run/coral/agent.sock"))]
    agent: String,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
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
}

/// What every command gets.
pub struct Ctx {
    pub client: Client,
    pub output: Output,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = client::connect(&cli.agent).await?;
    let ctx = Ctx {
        client,
        output: cli.output,
    };
    match cli.command {
        Command::Caps(args) => caps::run(ctx, args).await,
        Command::Tap(cmd) => tap::run(ctx, *cmd).await,
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
