//! What several tap commands show: collector summaries, record reports, and
//! the live follower used by `events --follow` and `run`.

use crate::client::{CliError, Client};
use crate::commands::caps::kind_name;
use crate::render::{self, Output, duration_ns, http, memory, profile, syscalls, tcp, timestamp};
use coral_proto::v1::{
    self as pb, CollectorInfo, CollectorState, Record, StreamEventsRequest, record::Payload,
    stream_events_response::Event,
};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Rows in live and final tables.
pub const TABLE_ROWS: usize = 20;
/// Discrete events kept for the live view and the final report.
pub const RECENT_EVENTS: usize = 10;

pub fn state_name(state: i32) -> &'static str {
    match CollectorState::try_from(state) {
        Ok(CollectorState::Starting) => "starting",
        Ok(CollectorState::Running) => "running",
        Ok(CollectorState::Expired) => "expired",
        Ok(CollectorState::Stopped) => "stopped",
        Ok(CollectorState::Failed) => "failed",
        _ => "unknown",
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// "pid 42, comm nginx" or "whole machine".
pub fn target(info: &CollectorInfo) -> String {
    let Some(f) = info.spec.as_ref().and_then(|s| s.filter.as_ref()) else {
        return "whole machine".into();
    };
    let mut parts = Vec::new();
    if !f.pids.is_empty() {
        let pids: Vec<_> = f.pids.iter().map(u32::to_string).collect();
        parts.push(format!("pid {}", pids.join(",")));
    }
    if !f.cgroup.is_empty() {
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
    row("streams", info.stream_subscribers.to_string());
    if !info.bpf_program_ids.is_empty() {
        let ids: Vec<_> = info.bpf_program_ids.iter().map(u32::to_string).collect();
        row("bpf programs", ids.join(", "));
    }
    t.to_string()
}

/// How records are shown to people.
#[derive(Clone, Copy, Debug, Default)]
pub struct ViewOptions {
    pub sort: http::SortBy,
}

/// One line for a discrete event (a request, a connection); `None` for an
/// aggregate snapshot.
pub fn event_line(record: &Record) -> Option<String> {
    match &record.payload {
        Some(Payload::HttpRequest(r)) => Some(http::request_line(r)),
        Some(Payload::TcpConnection(c)) => Some(tcp::connection_line(c)),
        Some(Payload::OomKill(k)) => Some(memory::oom_line(k)),
        _ => None,
    }
}

/// Column titles for the lines of [`event_line`], where the kind has them.
fn event_header(record: &Record) -> Option<&'static str> {
    match &record.payload {
        Some(Payload::TcpConnection(_)) => Some(tcp::CONNECTION_HEADER),
        _ => None,
    }
}

/// The human report of an aggregate record.
pub fn report(record: &Record, opts: ViewOptions) -> String {
    match &record.payload {
        Some(Payload::SyscallStats(s)) => syscalls::report(s, TABLE_ROWS),
        Some(Payload::CpuProfile(p)) => profile::report(p, TABLE_ROWS),
        Some(Payload::HttpStats(s)) => http::report(s, TABLE_ROWS, opts.sort),
        Some(Payload::TcpStats(s)) => tcp::report(s, TABLE_ROWS),
        Some(Payload::TcpConnection(c)) => tcp::connection_report(c),
        Some(Payload::MemoryStats(s)) => memory::report(s, TABLE_ROWS),
        Some(Payload::OomKill(k)) => format!("{}\n", memory::oom_line(k)),
        // Kinds without a human renderer yet: show the data as it is.
        Some(other) => format!("{other:#?}\n"),
        None => "(empty record)\n".into(),
    }
}

fn summary(record: &Record) -> String {
    match &record.payload {
        Some(Payload::SyscallStats(s)) => syscalls::summary_line(s),
        Some(Payload::CpuProfile(p)) => profile::summary_line(p),
        Some(Payload::HttpStats(s)) => http::summary_line(s),
        Some(Payload::TcpStats(s)) => tcp::summary_line(s),
        Some(Payload::TcpConnection(c)) => tcp::connection_line(c),
        Some(Payload::MemoryStats(s)) => memory::summary_line(s),
        Some(Payload::OomKill(k)) => memory::oom_line(k),
        Some(_) | None => String::new(),
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
}

impl Followed {
    /// Keeps `record`: as the latest aggregate or as a recent event line.
    /// Returns the event line, if it was one (the first one with its kind's
    /// column titles above it).
    pub fn keep(&mut self, record: Record) -> Option<String> {
        match event_line(&record) {
            Some(line) => {
                if self.recent.len() == RECENT_EVENTS {
                    self.recent.pop_front();
                }
                self.recent.push_back(line.clone());
                match event_header(&record) {
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
/// stderr (redrawn on a terminal, one line per record otherwise). When
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
    let redraw = output == Output::Table && std::io::stderr().is_terminal();
    let mut stopper = client.clone();
    let mut interrupted = !stop_on_interrupt;
    let mut followed = Followed::default();
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                eprintln!("\ninterrupted: stopping {id}");
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
                    let mut err = std::io::stderr().lock();
                    match (&line, &followed.last) {
                        // Events scroll; on a terminal they show in the next redraw.
                        (Some(line), _) if !redraw => writeln!(err, "{line}")?,
                        (Some(_), _) => {}
                        (None, Some(last)) if redraw => write!(
                            err,
                            "\x1b[H\x1b[2J{id}  seq {seq}\n{}{}",
                            report(last, opts),
                            followed.recent_block()
                        )?,
                        (None, Some(last)) => writeln!(err, "seq {seq:>4}  {}", summary(last))?,
                        (None, None) => {}
                    }
                }
            }
            Some(Event::Gap(gap)) if output == Output::Table => {
                eprintln!(
                    "warning: missed {} records from seq {}",
                    gap.count, gap.from_seq
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
    Ok(())
}
