//! What several tap commands show: collector summaries, record reports, and
//! the live follower used by `events --follow` and `run`.

use crate::client::{CliError, Client};
use crate::kinds::{self, View, ViewOptions, kind_name};
use crate::render::{self, Output, duration_ns, state_name, timestamp};
use coral_proto::v1::{
    self as pb, CollectorInfo, CollectorState, Record, StreamEventsRequest,
    stream_events_response::Event,
};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Discrete events kept for the live view and the final report.
pub const RECENT_EVENTS: usize = 10;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Pids shown in a target before the rest is summarised.
const TARGET_PIDS: usize = 4;

/// "pid 42, comm nginx" or "whole machine"; beyond a few pids, "pid
/// 1,2,3,4 (+60 more)" (`tap get` lists them all).
pub fn target(info: &CollectorInfo) -> String {
    let Some(f) = info.spec.as_ref().and_then(|s| s.filter.as_ref()) else {
        return "whole machine".into();
    };
    let mut parts = Vec::new();
    if !f.pids.is_empty() {
        let pids: Vec<_> = f
            .pids
            .iter()
            .take(TARGET_PIDS)
            .map(u32::to_string)
            .collect();
        let more = match f.pids.len().saturating_sub(TARGET_PIDS) {
            0 => String::new(),
            n => format!(" (+{n} more)"),
        };
        parts.push(format!("pid {}{more}", pids.join(",")));
    }
    if !f.container.is_empty() {
        parts.push(format!("container {}", f.container));
    } else if !f.cgroup.is_empty() {
        parts.push(format!("cgroup {}", f.cgroup));
    }
    if !f.comm.is_empty() {
        parts.push(format!("comm {}", f.comm));
    }
    if parts.is_empty() {
        "whole machine".into()
    } else {
        parts.join(", ")
    }
}

/// Time left before the deadline, or how it ended.
pub fn remaining(info: &CollectorInfo) -> String {
    match CollectorState::try_from(info.state) {
        Ok(CollectorState::Running) => {
            duration_ns(info.deadline_unix_nano.saturating_sub(now_nanos()))
        }
        _ => "-".into(),
    }
}

pub fn kind(info: &CollectorInfo) -> &'static str {
    kind_name(info.spec.as_ref().map_or(0, |s| s.kind))
}

/// `key: value` lines describing one collector.
pub fn describe(info: &CollectorInfo) -> String {
    let mut t = render::kv_table();
    let mut row = |k: &str, v: String| {
        t.add_row([k.to_string(), v]);
    };
    row("id", info.id.clone());
    row("kind", kind(info).into());
    row("state", state_name(info.state).into());
    if !info.error.is_empty() {
        row("error", info.error.clone());
    }
    row("target", target(info));
    if let Some(f) = info.spec.as_ref().and_then(|s| s.filter.as_ref())
        && f.pids.len() > TARGET_PIDS
    {
        let pids: Vec<_> = f.pids.iter().map(u32::to_string).collect();
        row("pids", pids.join(" "));
    }
    if let Some(spec) = &info.spec
        && !spec.labels.is_empty()
    {
        let mut labels: Vec<_> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        row("labels", labels.join(" "));
    }
    row("created", timestamp(info.created_unix_nano));
    row("started", timestamp(info.started_unix_nano));
    row("deadline", timestamp(info.deadline_unix_nano));
    row("remaining", remaining(info));
    row("ended", timestamp(info.ended_unix_nano));
    row(
        "records",
        format!(
            "{} (retained from seq {}, {} dropped)",
            info.last_seq, info.first_retained_seq, info.dropped_records
        ),
    );
    row(
        "kernel losses",
        match info.kernel_lost {
            0 => "none".into(),
            n => format!("{n} (a kernel ring buffer or map was full)"),
        },
    );
    row("streams", info.stream_subscribers.to_string());
    if !info.bpf_program_ids.is_empty() {
        let ids: Vec<_> = info.bpf_program_ids.iter().map(u32::to_string).collect();
        row("bpf programs", ids.join(", "));
    }
    t.to_string()
}

/// One line for a discrete event (a request, a connection) and the column
/// titles of its kind; `None` for an aggregate snapshot.
pub fn event_line(record: &Record) -> Option<(String, Option<&'static str>)> {
    match kinds::view(record.payload.as_ref()?) {
        View::Event(e) => Some((e.line(), e.header())),
        View::Aggregate(_) => None,
    }
}

/// The human report of a record.
pub fn report(record: &Record, opts: ViewOptions) -> String {
    match record.payload.as_ref().map(kinds::view) {
        Some(View::Aggregate(a)) => a.report(&opts),
        Some(View::Event(e)) => e.report(),
        None => "(empty record)\n".into(),
    }
}

/// One line for a record: an aggregate's summary or an event's line.
pub fn summary(record: &Record) -> String {
    match record.payload.as_ref().map(kinds::view) {
        Some(View::Aggregate(a)) => a.summary(),
        Some(View::Event(e)) => e.line(),
        None => String::new(),
    }
}

/// What a reader of a collector's records keeps for people: the latest
/// aggregate and the last few discrete events.
#[derive(Default)]
pub struct Followed {
    /// The last aggregate record (the final one when the collector ended).
    pub last: Option<Record>,
    /// The last few discrete events, oldest first.
    pub recent: VecDeque<String>,
    /// Column titles of those events, if their kind has them.
    pub header: Option<&'static str>,
    pub ended: Option<CollectorInfo>,
    /// What kinds gather for the end of the run (`--tree`).
    pub gathered: kinds::Gathered,
}

impl Followed {
    /// Keeps `record`: as the latest aggregate or as a recent event line.
    /// Returns the event line, if it was one (the first one with its kind's
    /// column titles above it).
    pub fn keep(&mut self, record: Record) -> Option<String> {
        if let Some(payload) = &record.payload {
            self.gathered.keep(payload);
        }
        match event_line(&record) {
            Some((line, header)) => {
                if self.recent.len() == RECENT_EVENTS {
                    self.recent.pop_front();
                }
                self.recent.push_back(line.clone());
                match header {
                    Some(header) if self.header.is_none() => {
                        self.header = Some(header);
                        Some(format!("{header}\n{line}"))
                    }
                    _ => Some(line),
                }
            }
            None => {
                self.last = Some(record);
                None
            }
        }
    }

    fn recent_block(&self) -> String {
        if self.recent.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = self
            .header
            .into_iter()
            .chain(self.recent.iter().map(String::as_str))
            .collect();
        format!("\nrecent events:\n{}\n", lines.join("\n"))
    }
}

/// Follows a collector's stream from `from_seq` until it ends. JSON mode
/// prints every message as a line on stdout; table mode shows a live view on
/// stdout (redrawn on a terminal, one line per record otherwise); notices
/// (gaps, the interrupt) go to stderr. When
/// `stop_on_interrupt` is set, Ctrl-C stops the collector and the stream then
/// delivers its final record.
pub async fn follow(
    client: &mut Client,
    id: &str,
    from_seq: u64,
    output: Output,
    opts: ViewOptions,
    stop_on_interrupt: bool,
) -> anyhow::Result<Followed> {
    let mut stream = client
        .stream_events(StreamEventsRequest {
            id: id.to_string(),
            from_seq,
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    // Live records go to stdout, so `| grep` sees them as they come (Rust's
    // stdout is line-buffered); on a terminal the latest table is redrawn.
    let redraw = output == Output::Table && std::io::stdout().is_terminal();
    let mut stopper = client.clone();
    let mut interrupted = !stop_on_interrupt;
    let mut followed = Followed::default();
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                crate::render::note!("\ninterrupted: stopping {id}");
                stopper
                    .stop_collector(pb::StopCollectorRequest { id: id.to_string() })
                    .await
                    .map_err(CliError::from)?;
                continue;
            }
        };
        let Some(message) = message else { break };
        let message = message.map_err(CliError::from)?;
        if output == Output::Json {
            render::json_line(&message)?;
        }
        match message.event {
            Some(Event::Record(record)) => {
                let seq = record.seq;
                let line = followed.keep(record);
                if output == Output::Table {
                    let mut out = std::io::stdout().lock();
                    match (&line, &followed.last) {
                        // Events scroll; on a terminal they show in the next redraw.
                        (Some(line), _) if !redraw => writeln!(out, "{line}")?,
                        (Some(_), _) => {}
                        (None, Some(last)) if redraw => write!(
                            out,
                            "\x1b[H\x1b[2J{id}  seq {seq}\n{}{}",
                            report(last, opts),
                            followed.recent_block()
                        )?,
                        (None, Some(last)) => writeln!(out, "seq {seq:>4}  {}", summary(last))?,
                        (None, None) => {}
                    }
                    out.flush()?;
                }
            }
            Some(Event::Gap(gap)) if output == Output::Table => {
                crate::render::note!(
                    "warning: missed {} records from seq {}",
                    gap.count,
                    gap.from_seq
                );
            }
            Some(Event::Gap(_)) => {}
            Some(Event::Ended(info)) => {
                followed.ended = Some(info);
                break;
            }
            None => {}
        }
    }
    Ok(followed)
}

/// An error (exit 1) when the followed collector ended Failed, so scripts
/// notice; the failure was already printed.
pub fn ensure_not_failed(followed: &Followed) -> anyhow::Result<()> {
    match &followed.ended {
        Some(info) if info.state == CollectorState::Failed as i32 => {
            anyhow::bail!("collector {} failed: {}", info.id, info.error)
        }
        _ => Ok(()),
    }
}

/// The final words of a followed collector, for people.
pub fn print_result(followed: &Followed, opts: ViewOptions) -> anyhow::Result<()> {
    if let Some(info) = &followed.ended {
        let how = state_name(info.state);
        let mut line = format!("collector {} {how}", info.id);
        if !info.error.is_empty() {
            line.push_str(&format!(": {}", info.error));
        }
        render::out(line)?;
    }
    match &followed.last {
        Some(record) => render::out(format!(
            "{}{}",
            report(record, opts),
            followed.recent_block()
        ))?,
        None if !followed.recent.is_empty() => render::out(followed.recent_block())?,
        None => render::out("no records")?,
    }
    let gathered = followed.gathered.report(&opts);
    if !gathered.is_empty() {
        render::out(gathered)?;
    }
    Ok(())
}
