//! file-io for people: one fileslower/opensnoop-like line per slow read,
//! write or fsync and per failed open; a report with the top files by bytes
//! (filetop), the failed opens by errno and the busiest processes.

use super::{Aggregate, Event, ViewOptions};
use crate::render::{align_right, bytes, duration_ns, table, timestamp, top_list};
use coral_proto::v1::{
    self as pb, FileIoEvent, FileIoFile, FileIoOp, FileIoStats, collector_spec::Config,
};
use std::fmt::Write;
use std::time::Duration;

pub const ABOUT: &str =
    "Opens, reads, writes and fsyncs per file and process; slow I/O and failed opens";
pub const TAKES_INTERVAL: bool = true;

/// file-io's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "file-io")]
#[group(id = "file-io flags")]
pub struct Flags {
    /// Reads, writes and fsyncs at least this slow are reported one by one
    /// (default 10ms).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub slow: Option<Duration>,

    /// (process, path) entries the kernel keeps (default 4096); I/O on
    /// files beyond it is counted as dropped.
    #[arg(long)]
    pub max_files: Option<u32>,

    /// Files listed per snapshot, most bytes first (default 100).
    #[arg(long)]
    pub top_files: Option<u32>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::FileIo(pb::FileIoConfig {
        interval_ns,
        slow_ns: flags.slow.map_or(0, |d| d.as_nanos() as u64),
        max_files: flags.max_files.unwrap_or(0),
        top: flags.top_files.unwrap_or(0),
    })
}

impl Aggregate for FileIoStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

impl Event for FileIoEvent {
    fn line(&self) -> String {
        event_line(self)
    }

    fn header(&self) -> Option<&'static str> {
        Some(HEADER)
    }
}

const HEADER: &str =
    "TIME                     PID COMM            OP      LATENCY      BYTES  RESULT  PATH";

/// "open", "read", ...
pub fn op_name(op: i32) -> &'static str {
    match FileIoOp::try_from(op) {
        Ok(FileIoOp::Open) => "open",
        Ok(FileIoOp::Read) => "read",
        Ok(FileIoOp::Write) => "write",
        Ok(FileIoOp::Fsync) => "fsync",
        Ok(FileIoOp::Unspecified) | Err(_) => "?",
    }
}

/// One line per event: a failed open shows its errno and flags, a slow
/// operation its latency and bytes.
pub fn event_line(e: &FileIoEvent) -> String {
    let is_open = op_name(e.op) == "open";
    let result = if e.errno != 0 { e.error.as_str() } else { "ok" };
    let path = if is_open {
        format!("{} ({})", e.path, e.flag_names)
    } else {
        e.path.clone()
    };
    format!(
        "{} {:>7} {:<15} {:<5} {:>9} {:>10}  {:<6}  {}",
        timestamp(e.start_unix_nano),
        e.pid,
        e.comm,
        op_name(e.op),
        if is_open {
            "-".into()
        } else {
            duration_ns(e.latency_ns)
        },
        if is_open { "-".into() } else { bytes(e.bytes) },
        result,
        path
    )
}

fn total_bytes(f: &FileIoFile) -> u64 {
    f.read_bytes + f.write_bytes
}

fn lost(stats: &FileIoStats) -> String {
    let mut parts = Vec::new();
    if stats.untracked_ops > 0 {
        parts.push(format!(
            "{} ops on fds opened before the start",
            stats.untracked_ops
        ));
    }
    if stats.dropped_files > 0 {
        parts.push(format!(
            "{} not counted (file map full)",
            stats.dropped_files
        ));
    }
    if stats.dropped_events > 0 {
        parts.push(format!(
            "{} events lost by the kernel",
            stats.dropped_events
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The full report: top files by bytes, failed opens, processes.
pub fn report(stats: &FileIoStats, limit: usize) -> String {
    let mut out = String::new();
    let read: u64 = stats.processes.iter().map(|p| p.read_bytes).sum();
    let written: u64 = stats.processes.iter().map(|p| p.write_bytes).sum();
    let failed: u64 = stats.open_errors.iter().map(|e| e.count).sum();
    let _ = writeln!(
        out,
        "{} read, {} written over {} by {} processes, {} failed opens; slow >= {}{}",
        bytes(read),
        bytes(written),
        duration_ns(stats.elapsed_ns),
        stats.processes.len(),
        failed,
        duration_ns(stats.slow_threshold_ns),
        lost(stats)
    );
    if !stats.files.is_empty() {
        out.push_str("\ntop files by bytes:\n");
        let mut t = table([
            "PID", "COMM", "OPENS", "READS", "R_BYTES", "R_P50", "R_P99", "WRITES", "W_BYTES",
            "W_P50", "W_P99", "FSYNCS", "PATH",
        ]);
        for f in stats.files.iter().take(limit) {
            t.add_row([
                f.pid.to_string(),
                f.comm.clone(),
                f.opens.to_string(),
                f.reads.to_string(),
                bytes(f.read_bytes),
                latency(f.reads, f.read_p50_ns),
                latency(f.reads, f.read_p99_ns),
                f.writes.to_string(),
                bytes(f.write_bytes),
                latency(f.writes, f.write_p50_ns),
                latency(f.writes, f.write_p99_ns),
                f.fsyncs.to_string(),
                f.path.clone(),
            ]);
        }
        align_right(&mut t, [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        out.push_str(&t.to_string());
        out.push('\n');
        let hidden = stats.files.len().saturating_sub(limit);
        let other = stats.other_files.as_ref().map_or(0, total_bytes);
        if hidden > 0 || other > 0 {
            let _ = writeln!(
                out,
                "(and {} more files, {} more)",
                hidden,
                bytes(other + stats.files.iter().skip(limit).map(total_bytes).sum::<u64>())
            );
        }
    }
    if !stats.open_errors.is_empty() {
        out.push_str("\nfailed opens:\n");
        let mut t = table(["PID", "COMM", "COUNT", "ERROR", "FLAGS", "PATH"]);
        for e in stats.open_errors.iter().take(limit) {
            t.add_row([
                e.pid.to_string(),
                e.comm.clone(),
                e.count.to_string(),
                e.error.clone(),
                e.flag_names.clone(),
                e.path.clone(),
            ]);
        }
        align_right(&mut t, [0, 2]);
        out.push_str(&t.to_string());
        out.push('\n');
    }
    if stats.processes.len() > 1 {
        out.push_str("\nprocesses:\n");
        let mut t = table([
            "PID", "COMM", "FILES", "OPENS", "FAILED", "R_BYTES", "W_BYTES", "FSYNCS",
        ]);
        for p in stats.processes.iter().take(limit) {
            t.add_row([
                p.pid.to_string(),
                p.comm.clone(),
                p.files.to_string(),
                p.opens.to_string(),
                p.open_errors.to_string(),
                bytes(p.read_bytes),
                bytes(p.write_bytes),
                p.fsyncs.to_string(),
            ]);
        }
        align_right(&mut t, [0, 2, 3, 4, 5, 6, 7]);
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}

fn latency(calls: u64, ns: u64) -> String {
    if calls == 0 {
        "-".into()
    } else {
        format!("<{}", duration_ns(ns))
    }
}

/// One line for a live view that cannot redraw.
pub fn summary_line(stats: &FileIoStats) -> String {
    let failed: u64 = stats.open_errors.iter().map(|e| e.count).sum();
    let top: Vec<String> = stats
        .files
        .iter()
        .take(3)
        .map(|f| format!("{} {}", f.path, bytes(total_bytes(f))))
        .collect();
    format!(
        "{:>8}  {} files  {failed} failed opens  {}",
        duration_ns(stats.elapsed_ns),
        stats.files.len(),
        top_list(&top, "; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> FileIoStats {
        FileIoStats {
            elapsed_ns: 3_000_000_000,
            files: vec![FileIoFile {
                pid: 4242,
                comm: "coral-workload".into(),
                path: "/tmp/coral-fio/data".into(),
                flags: 0o1101,
                flag_names: "O_WRONLY|O_CREAT|O_TRUNC".into(),
                opens: 2,
                reads: 16,
                read_bytes: 65536,
                writes: 16,
                write_bytes: 65536,
                fsyncs: 1,
                read_p50_ns: 4096,
                read_p99_ns: 8192,
                write_p50_ns: 16384,
                write_p99_ns: 32768,
                ..Default::default()
            }],
            other_files: Some(FileIoFile::default()),
            open_errors: vec![pb::FileIoOpenError {
                pid: 4242,
                comm: "coral-workload".into(),
                path: "/tmp/coral-fio/missing".into(),
                errno: 2,
                error: "ENOENT".into(),
                flags: 0,
                flag_names: "O_RDONLY".into(),
                count: 3,
            }],
            processes: vec![pb::FileIoProcess {
                pid: 4242,
                comm: "coral-workload".into(),
                files: 1,
                opens: 2,
                open_errors: 3,
                reads: 16,
                read_bytes: 65536,
                writes: 16,
                write_bytes: 65536,
                fsyncs: 1,
                ..Default::default()
            }],
            untracked_ops: 5,
            dropped_files: 0,
            dropped_events: 0,
            slow_threshold_ns: 10_000_000,
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20));
    }

    #[test]
    fn event_lines_show_errors_and_latency() {
        let open = FileIoEvent {
            op: FileIoOp::Open.into(),
            pid: 7,
            comm: "cat".into(),
            path: "/nope".into(),
            fd: -1,
            errno: 2,
            error: "ENOENT".into(),
            flag_names: "O_RDONLY".into(),
            ..Default::default()
        };
        let line = event_line(&open);
        assert!(
            line.contains("ENOENT") && line.contains("/nope (O_RDONLY)"),
            "{line}"
        );
        let slow = FileIoEvent {
            op: FileIoOp::Write.into(),
            pid: 7,
            comm: "dd".into(),
            path: "/tmp/fifo".into(),
            bytes: 4096,
            latency_ns: 250_000_000,
            ..Default::default()
        };
        let line = event_line(&slow);
        assert!(line.contains("write") && line.contains("250"), "{line}");
    }
}
