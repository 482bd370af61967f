//! What several tap commands show: collector summaries, record reports, and
//! the live follower used by `events --follow` and `run`.

use crate::client::{CliError, Client};
use crate::commands::caps::kind_name;
use crate::render::{self, Output, duration_ns, profile, syscalls, tcp, timestamp};
use coral_proto::v1::{
    self as pb, CollectorInfo, CollectorState, Record, StreamEventsRequest, record::Payload,
    stream_events_response::Event,
};
use futures_util::StreamExt;
use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Rows in live and final tables.
pub const TABLE_ROWS: usize = 20;

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

/// The human report of one record's payload.
pub fn report(record: &Record) -> String {
    match &record.payload {
        Some(Payload::SyscallStats(s)) => syscalls::report(s, TABLE_ROWS),
        Some(Payload::CpuProfile(p)) => profile::report(p, TABLE_ROWS),
        Some(Payload::TcpStats(s)) => tcp::report(s, TABLE_ROWS),
        Some(Payload::TcpConnection(c)) => tcp::connection_report(c),
        // Kinds without a human renderer yet: show the data as it is.
        Some(other) => format!("{other:#?}\n"),
        None => "(empty record)\n".into(),
    }
}

fn summary(record: &Record) -> String {
    match &record.payload {
        Some(Payload::SyscallStats(s)) => syscalls::summary_line(s),
        Some(Payload::CpuProfile(p)) => profile::summary_line(p),
        Some(Payload::TcpStats(s)) => tcp::summary_line(s),
        Some(Payload::TcpConnection(c)) => tcp::connection_line(c),
        Some(_) | None => String::new(),
    }
}

/// How a followed stream ended.
pub struct Followed {
    pub last: Option<Record>,
    pub ended: Option<CollectorInfo>,
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
    let mut followed = Followed {
        last: None,
        ended: None,
    };
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
                if output == Output::Table {
                    let mut err = std::io::stderr().lock();
                    if redraw {
                        write!(
                            err,
                            "\x1b[H\x1b[2J{id}  seq {}\n{}",
                            record.seq,
                            report(&record)
                        )?;
                    } else {
                        writeln!(err, "seq {:>4}  {}", record.seq, summary(&record))?;
                    }
                }
                followed.last = Some(record);
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

/// The final words of a followed collector, for people.
pub fn print_result(followed: &Followed) -> anyhow::Result<()> {
    if let Some(info) = &followed.ended {
        let how = state_name(info.state);
        let mut line = format!("collector {} {how}", info.id);
        if !info.error.is_empty() {
            line.push_str(&format!(": {}", info.error));
        }
        render::out(line)?;
    }
    match &followed.last {
        Some(record) => render::out(report(record))?,
        None => render::out("no records")?,
    }
    Ok(())
}
