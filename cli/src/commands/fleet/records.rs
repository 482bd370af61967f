//! Reading stored records from a colony, page by page, and showing them:
//! `-o json` prints one `FleetEvent` per line (a stored record, with its
//! node and the agent's record, or a loss); tables group the records by
//! agent and show each agent's part with the kind's renderers, as
//! `tap events` shows one collector's.

use crate::client::{CliError, ColonyClient};
use crate::commands::tap::view::{self, Followed};
use crate::kinds::ViewOptions;
use crate::render::{self, Output};
use coral_proto::colony::v1::{
    self as cpb, FleetEvent, QueryRecordsRequest, StoredRecord, fleet_event,
};
use std::collections::BTreeMap;

const PAGE: u32 = 1000;

/// Every record `query` selects (from its cursor on) and the losses,
/// passed to `each` in order; the cursor after the last one.
pub async fn fetch(
    client: &mut ColonyClient,
    mut query: QueryRecordsRequest,
    mut each: impl FnMut(FleetEvent) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    query.max = PAGE;
    let mut first = true;
    loop {
        let page = client
            .query_records(query.clone())
            .await
            .map_err(CliError::from)?
            .into_inner();
        if first {
            for loss in page.losses {
                each(FleetEvent {
                    event: Some(fleet_event::Event::Loss(loss)),
                })?;
            }
            first = false;
        }
        let last_cursor = page.next_cursor.clone();
        for r in page.records {
            each(FleetEvent {
                event: Some(fleet_event::Event::Record(r)),
            })?;
        }
        if last_cursor.is_empty() {
            return Ok(query.cursor);
        }
        query.cursor = last_cursor;
    }
}

/// One agent's records, for people.
#[derive(Default)]
pub struct Part {
    pub node: String,
    pub followed: Followed,
    pub records: u64,
    pub last_seq: u64,
    pub final_seen: bool,
    pub losses: Vec<cpb::Loss>,
}

/// Records grouped by agent, in node order.
#[derive(Default)]
pub struct Parts(pub BTreeMap<(String, String), Part>);

impl Parts {
    pub fn keep(&mut self, event: FleetEvent) {
        match event.event {
            Some(fleet_event::Event::Record(StoredRecord {
                node,
                record: Some(record),
                ..
            })) => {
                let part = self
                    .0
                    .entry((node.clone(), record.agent_id.clone()))
                    .or_default();
                part.node = node;
                part.records += 1;
                part.last_seq = part.last_seq.max(record.seq);
                part.final_seen |= record.r#final;
                part.followed.keep(record);
            }
            Some(fleet_event::Event::Loss(loss)) => {
                let part = self
                    .0
                    .entry((loss.node.clone(), loss.agent_id.clone()))
                    .or_default();
                part.node = loss.node.clone();
                part.losses.push(loss);
            }
            _ => {}
        }
    }

    pub fn print(&self, opts: ViewOptions) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(render::out("no records stored")?);
        }
        for ((node, agent), part) in &self.0 {
            let fin = if part.final_seen {
                ", final stored"
            } else {
                ""
            };
            render::out(format!(
                "== node {node}  agent {agent}: {} records, up to seq {}{fin}",
                part.records, part.last_seq
            ))?;
            for l in &part.losses {
                let what = match l.count {
                    0 => format!("everything from seq {}", l.from_seq),
                    n => format!("{n} records from seq {}", l.from_seq),
                };
                render::out(format!("   lost: {what}: {}", l.reason))?;
            }
            if part.records > 0 {
                view::print_result(&part.followed, opts)?;
            }
        }
        Ok(())
    }
}

/// Prints what `query` selects: JSON lines, or the parts' reports.
pub async fn show(
    client: &mut ColonyClient,
    query: QueryRecordsRequest,
    output: Output,
    opts: ViewOptions,
) -> anyhow::Result<()> {
    let mut parts = Parts::default();
    fetch(client, query, |event| {
        if output == Output::Json {
            render::json_line(&event)
        } else {
            parts.keep(event);
            Ok(())
        }
    })
    .await?;
    if output == Output::Table {
        parts.print(opts)?;
    }
    Ok(())
}
