//! One member's pull: the agent's records of one collector, into the store.
//!
//! The cursor is the highest seq stored for (agent, collector), read from
//! the store when the pull starts, so a pull resumed after a disconnect or
//! a colony restart starts exactly after what is stored. It first catches
//! up with `GetEvents` pages (bulk, bounded by the agent's page bytes) and
//! then follows `StreamEvents` from cursor + 1 until the collector ends.
//! Records at or below the cursor (a replay overlapping what is stored) are
//! skipped, and the store keys records by (agent, collector, seq), so
//! nothing is stored twice. What the agent dropped before it was read (a
//! `missed` count, a `Gap`) is recorded as a loss. When the collector has
//! ended and its last record is stored, the member is complete.
//!
//! A broken connection is retried with a growing pause; the member is lost
//! when the agent goes silent past the agent timeout (see
//! `colony::check_silent`), or at once when the agent answers NOT_FOUND for
//! the collector (the agent restarted, or reaped it before the colony read
//! its end).

use crate::colony::{Colony, describe, now_nanos};
use crate::store::{LossRow, MemberRow, RecordRow, TapRow};
use coral_proto::colony::v1 as cpb;
use coral_proto::v1 as pb;
use coral_proto::v1::stream_events_response::Event;
use futures_util::StreamExt;
use prost::Message;
use std::time::Duration;

/// Records per GetEvents page asked for.
const PAGE: u32 = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Pull {
    colony: Colony,
    tap: TapRow,
    member: MemberRow,
    cursor: u64,
}

enum Outcome {
    /// The collector ended (its final state) and everything is stored.
    Ended(Box<pb::CollectorInfo>),
    /// The agent no longer has the collector.
    Gone(String),
}

pub async fn run(colony: Colony, tap: TapRow, member: MemberRow) {
    let cursor = match colony
        .store()
        .stored(&member.agent_id, &member.collector_id)
        .await
    {
        Ok(s) => s.max_seq,
        Err(err) => {
            tracing::error!(error = %err, "reading a pull's cursor");
            return;
        }
    };
    let mut pull = Pull {
        colony,
        tap,
        member,
        cursor,
    };
    let mut stopping = pull.colony.stopping();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            r = pull.attempt() => r,
            _ = stopping.wait_for(|s| *s) => return,
        };
        match attempt {
            Ok(Outcome::Ended(info)) => return pull.complete(*info).await,
            Ok(Outcome::Gone(why)) => {
                let _ = pull.colony.lose_member(pull.member.clone(), &why).await;
                return;
            }
            Err(status) => {
                tracing::debug!(agent = %pull.member.agent_id, cursor = pull.cursor,
                    error = %describe(&status), "pull interrupted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Pull {
    async fn attempt(&mut self) -> Result<Outcome, tonic::Status> {
        let mut client = self
            .colony
            .agent_client(&self.member.address)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let id = self.member.collector_id.clone();
        let gone = |status: &tonic::Status| {
            (status.code() == tonic::Code::NotFound).then(|| {
                format!(
                    "the agent no longer has collector {id} (restarted, or reaped it): {}",
                    status.message()
                )
            })
        };
        // Catch up on what the agent retains, page by page.
        loop {
            let page = match client
                .get_events(pb::GetEventsRequest {
                    id: id.clone(),
                    after_seq: self.cursor,
                    max: PAGE,
                })
                .await
            {
                Ok(p) => p.into_inner(),
                Err(status) => match gone(&status) {
                    Some(why) => return Ok(Outcome::Gone(why)),
                    None => return Err(status),
                },
            };
            if page.missed > 0 {
                self.gap(self.cursor + 1, page.missed).await;
                self.cursor += page.missed;
            }
            let n = page.records.len();
            for r in page.records {
                self.keep(r).await;
            }
            if page.end {
                // Ended and read to the end: the stream gives its final info.
                break;
            }
            if n == 0 {
                break;
            }
        }
        // Follow live until the collector ends.
        let mut stream = match client
            .stream_events(pb::StreamEventsRequest {
                id: id.clone(),
                from_seq: self.cursor + 1,
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(status) => match gone(&status) {
                Some(why) => return Ok(Outcome::Gone(why)),
                None => return Err(status),
            },
        };
        while let Some(message) = stream.next().await {
            match message?.event {
                Some(Event::Record(r)) => self.keep(r).await,
                Some(Event::Gap(g)) => {
                    let from = g.from_seq.max(self.cursor + 1);
                    let end = g.from_seq + g.count;
                    if end > from {
                        self.gap(from, end - from).await;
                        self.cursor = end - 1;
                    }
                }
                Some(Event::Ended(info)) => return Ok(Outcome::Ended(Box::new(info))),
                None => {}
            }
        }
        Err(tonic::Status::unavailable(
            "the stream ended without the collector's end",
        ))
    }

    async fn keep(&mut self, r: pb::Record) {
        if r.seq <= self.cursor {
            return;
        }
        self.cursor = r.seq;
        let row = RecordRow {
            tap_id: self.tap.tap_id.clone(),
            agent_id: self.member.agent_id.clone(),
            node: self.member.node.clone(),
            collector_id: self.member.collector_id.clone(),
            kind: self.tap.kind.clone(),
            seq: r.seq,
            time_unix_nano: r.time_unix_nano,
            is_final: r.r#final,
            record: r.encode_to_vec(),
        };
        self.colony.ingest().record(row).await;
    }

    async fn gap(&self, from_seq: u64, count: u64) {
        tracing::warn!(agent = %self.member.agent_id, collector = %self.member.collector_id,
            from_seq, count, "records dropped by the agent before the colony read them");
        self.colony
            .ingest()
            .loss(LossRow {
                tap_id: self.tap.tap_id.clone(),
                agent_id: self.member.agent_id.clone(),
                node: self.member.node.clone(),
                collector_id: self.member.collector_id.clone(),
                from_seq,
                count,
                reason: "dropped by the agent's retention before the colony read them".into(),
                time_unix_nano: now_nanos(),
            })
            .await;
    }

    async fn complete(self, info: pb::CollectorInfo) {
        // The member is complete only once its records are stored.
        self.colony.ingest().flush().await;
        let mut m = self.member;
        m.status = cpb::MemberStatus::Complete as i32;
        m.collector_state = info.state;
        m.error = info.error;
        tracing::info!(tap = %m.tap_id, agent = %m.agent_id, node = %m.node,
            last_seq = self.cursor, "member complete");
        if let Err(err) = self.colony.store().update_member(&m).await {
            tracing::error!(error = %err, "recording a complete member");
        }
    }
}
