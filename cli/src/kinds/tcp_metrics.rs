//! tcp-metrics for people: one tcplife-like line per closed connection, and
//! the per-remote aggregates (connections, RTT quantiles and histograms,
//! retransmits, resets, bytes).

use super::{Aggregate, Event, ViewOptions};
use crate::render::{align_right, duration_ns, log2_histogram, table, top_list};
use coral_proto::v1::{
    self as pb, TcpConnection, TcpRemoteStats, TcpStats, collector_spec::Config,
};
use std::fmt::Write;

pub const ABOUT: &str = "TCP connection lifecycle, RTT, retransmits, resets";
pub const TAKES_INTERVAL: bool = true;

/// tcp-metrics' own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "tcp-metrics")]
#[group(id = "tcp-metrics flags")]
pub struct Flags {
    /// Only connections on this local port. Repeatable.
    #[arg(long = "local-port")]
    pub local_ports: Vec<u16>,

    /// Only connections to this remote port. Repeatable.
    #[arg(long = "remote-port")]
    pub remote_ports: Vec<u16>,

    /// Only connections whose remote address is in this prefix, e.g. 10.0.0.0/8.
    #[arg(long)]
    pub remote_prefix: Option<String>,

    /// Keep one RTT sample of every N ACKs (default 1).
    #[arg(long)]
    pub rtt_sample_every: Option<u32>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::TcpMetrics(pb::TcpMetricsConfig {
        interval_ns,
        local_ports: flags.local_ports.iter().map(|&p| u32::from(p)).collect(),
        remote_ports: flags.remote_ports.iter().map(|&p| u32::from(p)).collect(),
        remote_prefix: flags.remote_prefix.clone().unwrap_or_default(),
        rtt_sample_every: flags.rtt_sample_every.unwrap_or(0),
    })
}

impl Aggregate for TcpStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

impl Event for TcpConnection {
    fn line(&self) -> String {
        connection_line(self)
    }

    fn header(&self) -> Option<&'static str> {
        Some(CONNECTION_HEADER)
    }

    fn report(&self) -> String {
        connection_report(self)
    }
}

/// How many RTT histograms the full report shows.
const HISTOGRAMS: usize = 3;

/// Column titles of [`connection_line`], as tcplife prints them (plus how the
/// connection ended).
pub const CONNECTION_HEADER: &str = "PID     COMM            LADDR           LPORT RADDR           RPORT  TX_KB  RX_KB       MS END";

/// Whole KiB for the aggregate table (exact bytes are in `-o json`).
fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

/// One closed connection, aligned under [`CONNECTION_HEADER`].
pub fn connection_line(c: &TcpConnection) -> String {
    let end = if c.active {
        c.close_reason.clone()
    } else {
        format!("{} (in)", c.close_reason)
    };
    let comm = if c.comm.is_empty() && c.pid == 0 {
        "?".to_string()
    } else {
        c.comm.clone()
    };
    // A container, when the owner runs in one, after tcplife's columns.
    let end = match super::short_container(c.container.as_ref()) {
        "-" => end,
        id => format!("{end} [{id}]"),
    };
    format!(
        "{:<7} {:<15} {:<15} {:<5} {:<15} {:<5} {:>6.2} {:>6.2} {:>8.2} {}",
        c.pid,
        comm,
        c.local_addr,
        c.local_port,
        c.remote_addr,
        c.remote_port,
        c.bytes_sent as f64 / 1024.0,
        c.bytes_received as f64 / 1024.0,
        c.duration_ns as f64 / 1e6,
        end
    )
}

/// One closed connection under its column titles.
pub fn connection_report(c: &TcpConnection) -> String {
    format!("{CONNECTION_HEADER}\n{}\n", connection_line(c))
}

/// `addr:port` for opened connections; `addr -> :lport` for accepted ones,
/// whose ephemeral remote ports are folded together.
pub fn remote_name(r: &TcpRemoteStats) -> String {
    let addr = if r.remote_addr.contains(':') {
        format!("[{}]", r.remote_addr)
    } else {
        r.remote_addr.clone()
    };
    if r.remote_port == 0 && r.local_port != 0 {
        format!("{addr} -> :{}", r.local_port)
    } else {
        format!("{addr}:{}", r.remote_port)
    }
}

fn rtt(us: u64, samples: u64) -> String {
    if samples == 0 {
        "-".into()
    } else {
        duration_ns(us.saturating_mul(1000))
    }
}

/// The full report: per-remote table, then RTT histograms of the busiest.
pub fn report(stats: &TcpStats, limit: usize) -> String {
    let mut out = String::new();
    let opened: u64 = stats.remotes.iter().map(|r| r.opened).sum();
    let closed: u64 = stats.remotes.iter().map(|r| r.closed).sum();
    let retrans: u64 = stats.remotes.iter().map(|r| r.retransmits).sum();
    let resets: u64 = stats
        .remotes
        .iter()
        .map(|r| r.resets_sent + r.resets_received)
        .sum();
    let _ = writeln!(
        out,
        "{opened} connections opened, {closed} closed, {retrans} retransmits, {resets} resets over {}, {} remotes{}{}",
        duration_ns(stats.elapsed_ns),
        stats.remotes.len(),
        if stats.remotes.len() > limit {
            format!(", top {limit} shown")
        } else {
            String::new()
        },
        if stats.dropped_events > 0 {
            format!(", {} lost by the kernel", stats.dropped_events)
        } else {
            String::new()
        }
    );
    if stats.remotes.is_empty() {
        return out;
    }
    let mut t = table([
        "REMOTE", "DIR", "OPENED", "CLOSED", "RETRANS", "RST_TX", "RST_RX", "TX_KB", "RX_KB",
        "RTT_P50", "RTT_P99",
    ]);
    for r in stats.remotes.iter().take(limit) {
        let samples: u64 = r.rtt_us_log2.iter().sum();
        t.add_row([
            remote_name(r),
            if r.remote_port == 0 && r.local_port != 0 {
                "in".into()
            } else {
                "out".into()
            },
            r.opened.to_string(),
            r.closed.to_string(),
            r.retransmits.to_string(),
            r.resets_sent.to_string(),
            r.resets_received.to_string(),
            kib(r.bytes_sent).to_string(),
            kib(r.bytes_received).to_string(),
            rtt(r.rtt_p50_us, samples),
            rtt(r.rtt_p99_us, samples),
        ]);
    }
    align_right(&mut t, 2..11);
    out.push_str(&t.to_string());
    out.push('\n');
    let mut busiest: Vec<_> = stats
        .remotes
        .iter()
        .filter(|r| r.rtt_us_log2.iter().any(|&c| c > 0))
        .collect();
    busiest.sort_by_key(|r| std::cmp::Reverse(r.rtt_us_log2.iter().sum::<u64>()));
    for r in busiest.iter().take(HISTOGRAMS) {
        let _ = write!(
            out,
            "\n{} smoothed RTT:\n{}",
            remote_name(r),
            log2_histogram(&r.rtt_us_log2, "usecs")
        );
    }
    out
}

/// One line for a live view that cannot redraw.
pub fn summary_line(stats: &TcpStats) -> String {
    let opened: u64 = stats.remotes.iter().map(|r| r.opened).sum();
    let closed: u64 = stats.remotes.iter().map(|r| r.closed).sum();
    let retrans: u64 = stats.remotes.iter().map(|r| r.retransmits).sum();
    let top: Vec<String> = stats
        .remotes
        .iter()
        .take(3)
        .map(|r| {
            let samples: u64 = r.rtt_us_log2.iter().sum();
            format!(
                "{} x{} rtt p50 {}",
                remote_name(r),
                r.opened,
                rtt(r.rtt_p50_us, samples)
            )
        })
        .collect();
    format!(
        "{:>8}  {opened} opened, {closed} closed, {retrans} retransmits  {}",
        duration_ns(stats.elapsed_ns),
        top_list(&top, "; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> TcpStats {
        TcpStats {
            elapsed_ns: 3_000_000_000,
            remotes: vec![
                TcpRemoteStats {
                    remote_addr: "10.0.0.7".into(),
                    remote_port: 5432,
                    local_port: 0,
                    opened: 12,
                    closed: 10,
                    retransmits: 3,
                    resets_sent: 0,
                    resets_received: 1,
                    bytes_sent: 40_960,
                    bytes_received: 1_048_576,
                    rtt_us_log2: vec![0, 0, 0, 0, 0, 0, 0, 2, 30, 5],
                    rtt_p50_us: 511,
                    rtt_p99_us: 1023,
                },
                TcpRemoteStats {
                    remote_addr: "fd00::2".into(),
                    remote_port: 0,
                    local_port: 8080,
                    opened: 4,
                    closed: 4,
                    retransmits: 0,
                    resets_sent: 2,
                    resets_received: 0,
                    bytes_sent: 2048,
                    bytes_received: 512,
                    rtt_us_log2: vec![],
                    rtt_p50_us: 0,
                    rtt_p99_us: 0,
                },
            ],
            dropped_events: 0,
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20));
    }

    #[test]
    fn connection_lines_align_with_the_header() {
        let c = TcpConnection {
            pid: 4242,
            comm: "curl".into(),
            family: 4,
            local_addr: "127.0.0.1".into(),
            local_port: 40_000,
            remote_addr: "127.0.0.1".into(),
            remote_port: 8080,
            bytes_sent: 3 * 1024 + 5,
            bytes_received: 10 * 1024,
            duration_ns: 1_500_000,
            connect_latency_ns: 50_000,
            active: true,
            retransmits: 0,
            resets_sent: 0,
            resets_received: 0,
            close_reason: "fin".into(),
            start_unix_nano: 0,
            end_unix_nano: 0,
            ..Default::default()
        };
        let line = connection_line(&c);
        assert_eq!(
            line.find("curl"),
            CONNECTION_HEADER.find("COMM"),
            "{line}\n{CONNECTION_HEADER}"
        );
        let ms_end = CONNECTION_HEADER.find(" END").unwrap();
        assert_eq!(&line[ms_end - 4..ms_end], "1.50", "{line}");
        assert!(line.ends_with(" fin"), "{line}");
        assert!(line.contains("  3.00  10.00"), "{line}");
    }

    #[test]
    fn accepted_remotes_fold_ports() {
        let s = stats();
        assert_eq!(remote_name(&s.remotes[0]), "10.0.0.7:5432");
        assert_eq!(remote_name(&s.remotes[1]), "[fd00::2] -> :8080");
    }
}
