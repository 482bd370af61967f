//! syscall-stats for people: a table by syscall, per-process breakdown, and
//! log2 latency histograms of the busiest syscalls.

use super::{Aggregate, ViewOptions};
use crate::render::{
    align_right, duration_ns, log2_histogram, log2_quantile, rate, table, top_list,
};
use coral_proto::v1::{self as pb, SyscallStat, SyscallStats, collector_spec::Config};
use std::fmt::Write;

pub const ABOUT: &str =
    "Count, errors and latency per syscall (raw tracepoints sys_enter/sys_exit)";
pub const TAKES_INTERVAL: bool = true;

/// syscall-stats' own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "syscall-stats")]
#[group(id = "syscall-stats flags")]
pub struct Flags {
    /// Break syscall counts down per process.
    #[arg(long)]
    pub per_process: bool,

    /// Count calls and errors without timing them: one hook instead of two,
    /// about a third of the overhead per syscall.
    #[arg(long)]
    pub no_latency: bool,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::SyscallStats(pb::SyscallStatsConfig {
        interval_ns,
        per_process: flags.per_process,
        latency: if flags.no_latency {
            pb::SyscallLatency::Off
        } else {
            pb::SyscallLatency::Exact
        } as i32,
    })
}

impl Aggregate for SyscallStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

/// How many histograms the full report shows.
const HISTOGRAMS: usize = 3;

fn syscall_table(syscalls: &[SyscallStat], elapsed_ns: u64, limit: usize, timed: bool) -> String {
    // Untimed (--no-latency) records have no latency to show: the first four
    // columns only.
    let columns = if timed { 8 } else { 4 };
    let header = [
        "SYSCALL", "COUNT", "ERRORS", "RATE/s", "AVG", "P50", "P99", "TOTAL",
    ];
    let mut t = table(&header[..columns]);
    for s in syscalls.iter().take(limit) {
        let q = |q| log2_quantile(&s.latency_log2, q).map_or("-".into(), duration_ns);
        // exit and exit_group are counted but never timed (they never return):
        // the mean is over the timed calls, the ones in the histogram.
        let timed_calls: u64 = s.latency_log2.iter().sum();
        let mut row = vec![
            s.name.clone(),
            s.count.to_string(),
            s.errors.to_string(),
            rate(s.count, elapsed_ns),
        ];
        if timed {
            row.extend([
                s.total_ns
                    .checked_div(timed_calls)
                    .map_or("-".into(), duration_ns),
                q(0.5),
                q(0.99),
                duration_ns(s.total_ns),
            ]);
        }
        t.add_row(row);
    }
    align_right(&mut t, 1..columns);
    t.to_string()
}

/// The full report: table, processes, histograms.
pub fn report(stats: &SyscallStats, limit: usize) -> String {
    let mut out = String::new();
    let calls: u64 = stats.syscalls.iter().map(|s| s.count).sum();
    let errors: u64 = stats.syscalls.iter().map(|s| s.errors).sum();
    let _ = writeln!(
        out,
        "{} syscalls ({} errors) over {}, {} distinct{}{}",
        calls,
        errors,
        duration_ns(stats.elapsed_ns),
        stats.syscalls.len(),
        if stats.syscalls.len() > limit {
            format!(", top {limit} shown")
        } else {
            String::new()
        },
        if stats.timed {
            ""
        } else {
            "; latency not measured (--no-latency)"
        }
    );
    if stats.syscalls.is_empty() {
        return out;
    }
    out.push_str(&syscall_table(
        &stats.syscalls,
        stats.elapsed_ns,
        limit,
        stats.timed,
    ));
    out.push('\n');
    if !stats.processes.is_empty() {
        let mut t = table(["PID", "COMM", "CALLS", "ERRORS", "TOP SYSCALL"]);
        let mut procs: Vec<_> = stats
            .processes
            .iter()
            .map(|p| {
                let calls: u64 = p.syscalls.iter().map(|s| s.count).sum();
                let errors: u64 = p.syscalls.iter().map(|s| s.errors).sum();
                (p, calls, errors)
            })
            .collect();
        procs.sort_by_key(|p| std::cmp::Reverse(p.1));
        for (p, calls, errors) in procs.iter().take(limit) {
            let top = p
                .syscalls
                .first()
                .map_or(String::new(), |s| format!("{} ({})", s.name, s.count));
            t.add_row([
                p.pid.to_string(),
                p.comm.clone(),
                calls.to_string(),
                errors.to_string(),
                top,
            ]);
        }
        align_right(&mut t, [0, 2, 3]);
        let _ = writeln!(out, "\nby process:\n{t}");
    }
    let histograms = if stats.timed { HISTOGRAMS } else { 0 };
    for s in stats.syscalls.iter().take(histograms) {
        let _ = write!(
            out,
            "\n{} latency:\n{}",
            s.name,
            log2_histogram(&s.latency_log2, "ns")
        );
    }
    out
}

/// One line for a live view that cannot redraw (not a terminal).
pub fn summary_line(stats: &SyscallStats) -> String {
    let calls: u64 = stats.syscalls.iter().map(|s| s.count).sum();
    let top: Vec<String> = stats
        .syscalls
        .iter()
        .take(3)
        .map(|s| format!("{} {}", s.name, s.count))
        .collect();
    format!(
        "{:>8}  {} calls  top: {}",
        duration_ns(stats.elapsed_ns),
        calls,
        top_list(&top, ", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> SyscallStats {
        SyscallStats {
            elapsed_ns: 2_000_000_000,
            syscalls: vec![
                SyscallStat {
                    nr: 110,
                    name: "getppid".into(),
                    count: 1000,
                    errors: 0,
                    total_ns: 300_000,
                    latency_log2: vec![0, 0, 0, 0, 0, 0, 0, 0, 900, 100],
                },
                SyscallStat {
                    nr: 3,
                    name: "close".into(),
                    count: 10,
                    errors: 10,
                    total_ns: 5_000,
                    latency_log2: vec![0, 0, 0, 0, 0, 0, 0, 0, 10],
                },
            ],
            processes: vec![],
            dropped: 0,
            timed: true,
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20));
    }

    #[test]
    fn untimed_report_has_no_latency_columns_or_histograms() {
        let mut stats = stats();
        stats.timed = false;
        for s in &mut stats.syscalls {
            s.total_ns = 0;
            s.latency_log2.clear();
        }
        insta::assert_snapshot!(report(&stats, 20));
    }

    #[test]
    fn untimed_exit_group_has_no_average() {
        let mut stats = stats();
        stats.syscalls.push(SyscallStat {
            nr: 231,
            name: "exit_group".into(),
            count: 1,
            ..Default::default()
        });
        let report = report(&stats, 20);
        let row = report
            .lines()
            .find(|l| l.trim_start().starts_with("exit_group"))
            .unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["exit_group", "1", "0", "0.5", "-", "-", "-", "0ns"]);
    }

    #[test]
    fn summary_names_top_syscalls() {
        assert_eq!(
            summary_line(&stats()),
            "   2.00s  1010 calls  top: getppid 1000, close 10"
        );
    }
}
