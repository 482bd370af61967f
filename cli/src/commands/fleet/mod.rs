//! The commands against a colony (`coral --colony URL ...`): the same `tap`
//! commands, on fleet taps (one id, a collector on each selected agent), and
//! `agents` and `query`, which only a colony answers.

pub mod agents;
pub mod query;
mod records;
mod tap;

use super::tap::Command as TapCommand;
use crate::client::{CliError, ColonyClient};
use crate::render::Output;
use coral_proto::colony::v1 as cpb;

/// Which agents a fleet tap runs on (`tap start`, `tap run` with --colony).
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Fleet (with --colony)")]
pub struct Selection {
    /// Nodes to run on: `all`, or names separated by commas.
    #[arg(long, value_delimiter = ',', value_name = "all|NODE,...")]
    pub nodes: Vec<String>,

    /// Agents to run on, by agent id (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub agent_ids: Vec<String>,

    /// Agents whose labels include these, e.g. --selector env=prod,tier=web.
    #[arg(long, value_delimiter = ',', value_parser = parse_pair, value_name = "KEY=VALUE,...")]
    pub selector: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.agent_ids.is_empty() && self.selector.is_empty()
    }

    /// Fleet flags make no sense against one agent.
    pub fn refuse_without_colony(&self) -> Result<(), CliError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(CliError::Usage(
                "--nodes, --agent-ids and --selector choose agents of a colony: give --colony URL (or $CORAL_COLONY)".into(),
            ))
        }
    }

    pub fn to_proto(&self) -> Result<cpb::Selector, CliError> {
        let all = self.nodes.iter().any(|n| n == "all");
        if all && self.nodes.len() > 1 {
            return Err(CliError::Usage(
                "--nodes all selects every node: give it alone".into(),
            ));
        }
        if self.is_empty() {
            return Err(CliError::Usage(
                "a fleet tap needs agents: --nodes all, --nodes N1,N2, --agent-ids ID,... or --selector k=v".into(),
            ));
        }
        Ok(cpb::Selector {
            all,
            agent_ids: self.agent_ids.clone(),
            nodes: if all { Vec::new() } else { self.nodes.clone() },
            labels: self.selector.iter().cloned().collect(),
        })
    }
}

/// A member's status as the tables and the MCP answers name it.
pub fn member_status(s: i32) -> &'static str {
    use cpb::MemberStatus;
    match MemberStatus::try_from(s) {
        Ok(MemberStatus::Collecting) => "collecting",
        Ok(MemberStatus::Complete) => "complete",
        Ok(MemberStatus::Unsupported) => "unsupported",
        Ok(MemberStatus::Unreachable) => "unreachable",
        Ok(MemberStatus::Refused) => "refused",
        Ok(MemberStatus::Lost) => "lost",
        _ => "unknown",
    }
}

/// What every colony command gets.
pub struct Ctx {
    pub client: ColonyClient,
    pub output: Output,
}

pub async fn run_tap(ctx: Ctx, cmd: TapCommand) -> anyhow::Result<()> {
    tap::run(ctx, cmd).await
}
