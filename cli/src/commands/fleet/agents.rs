//! `coral agents`: the colony's agents, with node, labels, kinds, last seen.

use super::Ctx;
use crate::client::CliError;
use crate::render::{self, Output, table};
use coral_proto::colony::v1::{AgentSource, AgentStatus, ListAgentsRequest};
use coral_proto::v1::CollectorKind;

#[derive(Debug, clap::Args)]
pub struct Args {}

fn ago(unix_nano: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    if unix_nano == 0 {
        return "never".into();
    }
    format!("{} ago", render::duration_ns(now.saturating_sub(unix_nano)))
}

pub async fn run(mut ctx: Ctx, _: Args) -> anyhow::Result<()> {
    let list = ctx
        .client
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        for a in &list.agents {
            render::json_line(a)?;
        }
        return Ok(());
    }
    if list.agents.is_empty() {
        return Ok(render::out(
            "no agents (start coral-agent with --colony URL, or give the colony --agent ADDR)",
        )?);
    }
    let mut t = table([
        "NODE",
        "AGENT",
        "STATUS",
        "LABELS",
        "KINDS",
        "LAST SEEN",
        "ADDRESS",
    ]);
    for a in &list.agents {
        let mut labels: Vec<_> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let kinds: Vec<_> = a
            .kinds
            .iter()
            .filter_map(|k| CollectorKind::try_from(*k).ok())
            .map(CollectorKind::name)
            .collect();
        let mut status = match AgentStatus::try_from(a.status) {
            Ok(AgentStatus::Alive) => "alive",
            Ok(AgentStatus::Silent) => "silent",
            Ok(AgentStatus::Replaced) => "replaced",
            _ => "unknown",
        }
        .to_string();
        if a.source == AgentSource::Static as i32 {
            status.push_str(" (static)");
        }
        if !a.error.is_empty() {
            status.push_str(&format!(": {}", a.error));
        }
        t.add_row([
            a.node.clone(),
            a.agent_id.clone(),
            status,
            labels.join(","),
            kinds.join(","),
            ago(a.last_seen_unix_nano),
            a.address.clone(),
        ]);
    }
    Ok(render::out(t)?)
}
