//! `coral query`: stored results over all fleet taps, by kind, time and
//! node: one line per record (time, node, agent, seq, what it holds), or
//! with --report each agent's latest result in full.

use super::Ctx;
use super::records;
use crate::commands::tap::view;
use crate::kinds::{Kind, ViewOptions};
use crate::render::{self, Output, table};
use coral_proto::colony::v1::{QueryRecordsRequest, fleet_event};
use coral_proto::v1 as pb;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only records of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,

    /// Only records newer than this (e.g. 1h, 30m, 7d).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub since: Option<Duration>,

    /// Only records older than this (e.g. 10m: up to ten minutes ago).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub until: Option<Duration>,

    /// Only records of these nodes. Repeatable, or comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub node: Vec<String>,

    /// Only records of these agents (ids). Repeatable, or comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub agent_id: Vec<String>,

    /// Only records of this fleet tap.
    #[arg(long, value_name = "FLEET_ID")]
    pub tap: Option<String>,

    /// Only each collector's final record (its complete result).
    #[arg(long = "final")]
    pub final_only: bool,

    /// Instead of one line per record, each agent's latest result in full.
    #[arg(long)]
    pub report: bool,
}

fn ago(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(d).as_nanos() as u64
    })
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    let query = QueryRecordsRequest {
        fleet_tap_id: args.tap.clone().unwrap_or_default(),
        kind: args
            .kind
            .map_or(pb::CollectorKind::Unspecified, pb::CollectorKind::from) as i32,
        nodes: args.node.clone(),
        agent_ids: args.agent_id.clone(),
        since_unix_nano: ago(args.since),
        until_unix_nano: ago(args.until),
        final_only: args.final_only,
        cursor: String::new(),
        max: 0,
    };
    if ctx.output == Output::Json || args.report {
        return records::show(&mut ctx.client, query, ctx.output, ViewOptions::default()).await;
    }
    let mut t = table(["TIME", "NODE", "AGENT", "SEQ", "RECORD"]);
    let mut n = 0;
    records::fetch(&mut ctx.client, query, |event| {
        if let Some(fleet_event::Event::Record(r)) = event.event
            && let Some(record) = r.record
        {
            n += 1;
            let fin = if record.r#final { " (final)" } else { "" };
            t.add_row([
                render::timestamp(record.time_unix_nano),
                r.node,
                record.agent_id.chars().take(8).collect(),
                format!("{}{fin}", record.seq),
                view::summary(&record),
            ]);
        }
        Ok(())
    })
    .await?;
    if n == 0 {
        return Ok(render::out("no records stored match")?);
    }
    Ok(render::out(t)?)
}
