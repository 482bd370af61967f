//! memory for people: per cgroup and per process, what is used against what
//! limit, how fast it grows, and when it reaches the limit with its 95%
//! interval; OOM kills as one line each.
//!
//! ```text
//! CGROUP      MEMORY             RATE          FORECAST
//! /api.slice  890 MiB / 1 GiB    +18 MiB/min   reaches memory.max in 7m23s (6m50s-8m05s), R2 0.97, 99% within 1h
//! ```

use super::{Aggregate, Event, ViewOptions};
use crate::render::{align_right, bytes, duration_ns, table, top_list};
use coral_proto::v1::{
    self as pb, MemoryCgroup, MemoryPrediction, MemoryProcess, MemoryStats, OomKill,
    PredictionState, collector_spec::Config,
};
use std::fmt::Write;
use std::time::Duration;

pub const ABOUT: &str = "Memory per process and cgroup, time to the limit, OOM kills";
pub const TAKES_INTERVAL: bool = true;

/// memory's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "memory")]
#[group(id = "memory flags")]
pub struct Flags {
    /// Window of the growth fit (default 60s).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub window: Option<Duration>,

    /// The confidence is the probability of reaching the limit within this (default 1h).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub horizon: Option<Duration>,

    /// The kernel reports a process when its RSS moved by this much (default 1MiB).
    #[arg(long, value_parser = crate::commands::parse_size)]
    pub rss_threshold: Option<u64>,

    /// Process rows per snapshot, the soonest at a limit first (default 50).
    #[arg(long)]
    pub max_processes: Option<u32>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::Memory(pb::MemoryConfig {
        interval_ns,
        window_ns: flags.window.map_or(0, |d| d.as_nanos() as u64),
        threshold_bytes: flags.rss_threshold.unwrap_or(0),
        horizon_ns: flags.horizon.map_or(0, |d| d.as_nanos() as u64),
        max_processes: flags.max_processes.unwrap_or(0),
    })
}

impl Aggregate for MemoryStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

impl Event for OomKill {
    fn line(&self) -> String {
        oom_line(self)
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `+18 MiB/min`, `-0.5 MiB/min`.
pub fn rate(bytes_per_sec: f64) -> String {
    let per_min = bytes_per_sec * 60.0 / MIB;
    if per_min.abs() >= 9.95 {
        format!("{per_min:+.0} MiB/min")
    } else {
        format!("{per_min:+.1} MiB/min")
    }
}

/// Times to a limit: `4.2s`, `42s`, `7m23s`, `2h05m`, `3d4h`.
pub fn eta(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    let whole = s.round() as u64;
    if s < 10.0 {
        format!("{s:.1}s")
    } else if whole < 60 {
        format!("{whole}s")
    } else if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else if whole < 86_400 {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    } else {
        format!("{}d{}h", whole / 86_400, (whole % 86_400) / 3600)
    }
}

fn state(p: &MemoryPrediction) -> PredictionState {
    PredictionState::try_from(p.state).unwrap_or(PredictionState::Unspecified)
}

/// What a prediction says, in words.
pub fn forecast(p: Option<&MemoryPrediction>) -> String {
    let Some(p) = p else {
        return "-".into();
    };
    let source = if p.limit_source.is_empty() {
        "its limit"
    } else {
        p.limit_source.as_str()
    };
    match state(p) {
        PredictionState::Growing => format!(
            "reaches {source} in {} ({}-{}), R2 {:.2}, {:.0}% within {}",
            eta(p.time_to_limit_ns),
            eta(p.time_to_limit_low_ns),
            eta(p.time_to_limit_high_ns),
            p.r2,
            p.confidence * 100.0,
            duration_ns(p.horizon_ns)
        ),
        PredictionState::NotGrowing => format!("not growing (R2 {:.2})", p.r2),
        PredictionState::NoLimit => "no limit".into(),
        PredictionState::AtLimit => format!("at {source}"),
        PredictionState::InsufficientData => format!("collecting ({} samples)", p.samples),
        PredictionState::BeyondHorizon => format!(
            "growing, {source} not within {} (R2 {:.2})",
            duration_ns(p.horizon_ns),
            p.r2
        ),
        PredictionState::Unspecified => "-".into(),
    }
}

fn used_of(current: u64, limit: u64) -> String {
    if limit == 0 {
        bytes(current)
    } else {
        format!("{} / {}", bytes(current), bytes(limit))
    }
}

fn prediction_rate(p: Option<&MemoryPrediction>) -> String {
    p.map_or("-".into(), |p| rate(p.rate_bytes_per_sec))
}

fn cgroup_table(cgroups: &[MemoryCgroup]) -> String {
    let mut t = table([
        "CGROUP",
        "MEMORY",
        "UNRECLAIMABLE",
        "RATE",
        "OOM",
        "FORECAST",
    ]);
    for c in cgroups {
        let p = c.prediction.as_ref();
        t.add_row([
            c.path.clone(),
            used_of(c.current_bytes, c.limit_bytes),
            bytes(c.unreclaimable_bytes),
            prediction_rate(p),
            c.oom_kills.to_string(),
            forecast(p),
        ]);
    }
    align_right(&mut t, [2, 3, 4]);
    t.to_string()
}

fn process_table(processes: &[MemoryProcess], limit: usize) -> String {
    let mut t = table([
        "PID", "COMM", "RSS", "ANON", "FILE", "SHMEM", "LIMIT", "RATE", "FORECAST",
    ]);
    for p in processes.iter().take(limit) {
        let pr = p.prediction.as_ref();
        t.add_row([
            p.pid.to_string(),
            p.comm.clone(),
            bytes(p.rss_bytes),
            bytes(p.anon_bytes),
            bytes(p.file_bytes),
            bytes(p.shmem_bytes),
            if p.limit_bytes == 0 {
                "-".into()
            } else {
                bytes(p.limit_bytes)
            },
            prediction_rate(pr),
            forecast(pr),
        ]);
    }
    align_right(&mut t, [0, 2, 3, 4, 5, 6, 7]);
    t.to_string()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The full report: cgroups, then processes (the soonest at a limit first).
pub fn report(stats: &MemoryStats, limit: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} tracked, {} sampled, over {}{}{}",
        plural(stats.processes_tracked as usize, "process", "processes"),
        plural(stats.cgroups.len(), "cgroup", "cgroups"),
        duration_ns(stats.elapsed_ns),
        if stats.processes.len() > limit {
            format!(", top {limit} shown")
        } else {
            String::new()
        },
        if stats.dropped_events > 0 {
            format!(", {} updates lost by the kernel", stats.dropped_events)
        } else {
            String::new()
        }
    );
    if !stats.cgroups.is_empty() {
        out.push('\n');
        out.push_str(&cgroup_table(&stats.cgroups));
        out.push('\n');
    }
    if !stats.processes.is_empty() {
        out.push('\n');
        out.push_str(&process_table(&stats.processes, limit));
        out.push('\n');
    }
    out
}

/// One line for a live view that cannot redraw: the cgroups, then the
/// processes soonest at their limit.
pub fn summary_line(stats: &MemoryStats) -> String {
    let rows: Vec<String> = stats
        .cgroups
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}",
                c.path,
                used_of(c.current_bytes, c.limit_bytes),
                prediction_rate(c.prediction.as_ref()),
                forecast(c.prediction.as_ref())
            )
        })
        .chain(stats.processes.iter().take(3).map(|p| {
            format!(
                "{} {} {} {}",
                p.pid,
                p.comm,
                bytes(p.rss_bytes),
                forecast(p.prediction.as_ref())
            )
        }))
        .collect();
    format!(
        "{:>8}  {} processes  {}",
        duration_ns(stats.elapsed_ns),
        stats.processes_tracked,
        top_list(&rows, "; ")
    )
}

/// One OOM kill.
pub fn oom_line(k: &OomKill) -> String {
    let cgroup = if k.cgroup.is_empty() { "?" } else { &k.cgroup };
    let limit = if k.global {
        "machine out of memory".to_string()
    } else {
        let at = if k.limit_cgroup.is_empty() || k.limit_cgroup == k.cgroup {
            String::new()
        } else {
            format!(" of {}", k.limit_cgroup)
        };
        format!(
            "limit {}{at} ({} used)",
            bytes(k.limit_bytes),
            bytes(k.usage_bytes)
        )
    };
    format!(
        "OOM kill: pid {} ({}) in {cgroup}, rss {} (anon {}, file {}, shmem {}), {limit}, triggered by pid {} ({})",
        k.pid,
        k.comm,
        bytes(k.rss_bytes),
        bytes(k.anon_bytes),
        bytes(k.file_bytes),
        bytes(k.shmem_bytes),
        k.trigger_pid,
        k.trigger_comm
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    fn growing(ttl_s: f64, lo_s: f64, hi_s: f64, rate_mib_min: f64, r2: f64) -> MemoryPrediction {
        MemoryPrediction {
            state: PredictionState::Growing as i32,
            rate_bytes_per_sec: rate_mib_min * MIB / 60.0,
            time_to_limit_ns: (ttl_s * 1e9) as u64,
            time_to_limit_low_ns: (lo_s * 1e9) as u64,
            time_to_limit_high_ns: (hi_s * 1e9) as u64,
            r2,
            confidence: 0.994,
            horizon_ns: 3_600_000_000_000,
            limit_source: "memory.max".into(),
            samples: 60,
            ..Default::default()
        }
    }

    fn stats() -> MemoryStats {
        MemoryStats {
            elapsed_ns: 61_000_000_000,
            cgroups: vec![MemoryCgroup {
                path: "/api.slice".into(),
                mount: "/sys/fs/cgroup".into(),
                version: 2,
                current_bytes: 890 * M,
                limit_bytes: 1 << 30,
                anon_bytes: 800 * M,
                file_bytes: 60 * M,
                kernel_bytes: 30 * M,
                unreclaimable_bytes: 830 * M,
                oom_kills: 0,
                prediction: Some(growing(443.0, 410.0, 485.0, 18.0, 0.97)),
                ..Default::default()
            }],
            processes: vec![
                MemoryProcess {
                    pid: 4242,
                    comm: "api".into(),
                    cgroup: "/api.slice".into(),
                    rss_bytes: 700 * M,
                    anon_bytes: 650 * M,
                    file_bytes: 50 * M,
                    limit_bytes: 1 << 30,
                    prediction: Some(growing(500.0, 450.0, 560.0, 17.5, 0.95)),
                    ..Default::default()
                },
                MemoryProcess {
                    pid: 77,
                    comm: "sidecar".into(),
                    rss_bytes: 40 * M,
                    anon_bytes: 30 * M,
                    file_bytes: 10 * M,
                    limit_bytes: 24 << 30,
                    prediction: Some(MemoryPrediction {
                        state: PredictionState::NotGrowing as i32,
                        r2: 0.03,
                        rate_bytes_per_sec: 100.0,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            processes_tracked: 2,
            dropped_events: 0,
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20));
    }

    #[test]
    fn the_issue_example_reads_as_written() {
        let c = &stats().cgroups[0];
        let line = format!(
            "{}  {}  {}  {}",
            c.path,
            used_of(c.current_bytes, c.limit_bytes),
            rate(c.prediction.as_ref().unwrap().rate_bytes_per_sec),
            forecast(c.prediction.as_ref())
        );
        assert!(
            line.starts_with(
                "/api.slice  890 MiB / 1 GiB  +18 MiB/min  reaches memory.max in 7m23s \
                 (6m50s-8m05s), R2 0.97"
            ),
            "{line}"
        );
    }

    #[test]
    fn sizes_rates_and_times_are_short() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(bytes(128 * M), "128 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(rate(-0.5 * MIB / 60.0), "-0.5 MiB/min");
        assert_eq!(rate(1920.0 * MIB / 60.0), "+1920 MiB/min");
        assert_eq!(eta(4_240_000_000), "4.2s");
        assert_eq!(eta(42_000_000_000), "42s");
        assert_eq!(eta(7_500_000_000_000), "2h05m");
        assert_eq!(eta(3 * 86_400_000_000_000 + 4 * 3_600_000_000_000), "3d4h");
    }

    #[test]
    fn states_read_as_words() {
        let p = |state: PredictionState| MemoryPrediction {
            state: state as i32,
            samples: 2,
            limit_source: "memory.limit_in_bytes".into(),
            ..Default::default()
        };
        assert_eq!(forecast(Some(&p(PredictionState::NoLimit))), "no limit");
        assert_eq!(
            forecast(Some(&p(PredictionState::InsufficientData))),
            "collecting (2 samples)"
        );
        assert_eq!(
            forecast(Some(&p(PredictionState::AtLimit))),
            "at memory.limit_in_bytes"
        );
        assert!(forecast(Some(&p(PredictionState::NotGrowing))).starts_with("not growing"));
        let slow = MemoryPrediction {
            horizon_ns: 3_600_000_000_000,
            ..p(PredictionState::BeyondHorizon)
        };
        assert!(
            forecast(Some(&slow)).starts_with("growing, memory.limit_in_bytes not within 1h"),
            "{}",
            forecast(Some(&slow))
        );
    }

    #[test]
    fn oom_lines_name_victim_cgroup_and_limit() {
        let k = OomKill {
            pid: 999,
            comm: "coral-grow".into(),
            cgroup: "/coral-e2e-oom".into(),
            rss_bytes: 126 * M,
            anon_bytes: 125 * M,
            file_bytes: M,
            limit_cgroup: "/coral-e2e-oom".into(),
            limit_bytes: 128 * M,
            usage_bytes: 128 * M,
            trigger_pid: 999,
            trigger_comm: "coral-grow".into(),
            ..Default::default()
        };
        assert_eq!(
            oom_line(&k),
            "OOM kill: pid 999 (coral-grow) in /coral-e2e-oom, rss 126 MiB (anon 125 MiB, \
             file 1 MiB, shmem 0 B), limit 128 MiB (128 MiB used), triggered by pid 999 (coral-grow)"
        );
        let global = OomKill { global: true, ..k };
        assert!(oom_line(&global).contains("machine out of memory"));
    }
}
