//! `coral tap ...`: start, watch and manage collectors (with `--colony`,
//! fleet taps: see `commands/fleet`).

pub(crate) mod events;
pub(crate) mod extend;
pub(crate) mod get;
mod list;
pub(crate) mod run;
pub(crate) mod start;
pub(crate) mod stop;
mod target;
pub(crate) mod view;

use super::Ctx;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a collector; prints its id.
    Start(start::Args),
    /// Show a collector's records (poll), or follow them live with --follow.
    Events(events::Args),
    /// Start a collector, show it live, then print its final result.
    Run(run::Args),
    /// Show one collector: state, deadline, records, programs.
    Get(get::Args),
    /// List collectors, running and recently ended.
    List(list::Args),
    /// Stop a running collector now and print its final result.
    Stop(stop::Args),
    /// Give a running collector a new deadline: now + --by.
    Extend(extend::Args),
}

pub async fn run(ctx: Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Start(a) => start::run(ctx, a).await,
        Command::Events(a) => events::run(ctx, a).await,
        Command::Run(a) => run::run(ctx, a).await,
        Command::Get(a) => get::run(ctx, a).await,
        Command::List(a) => list::run(ctx, a).await,
        Command::Stop(a) => stop::run(ctx, a).await,
        Command::Extend(a) => extend::run(ctx, a).await,
    }
}
