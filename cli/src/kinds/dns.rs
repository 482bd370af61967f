//! dns for people: one line per query (name, type, server, rcode, latency,
//! answers), and a report per (name, type, rcode) with latency percentiles
//! and the NXDOMAIN, SERVFAIL and timeout counts.

use super::{Aggregate, Event, ViewOptions, short_container};
use crate::render::{align_right, duration_ns, table, timestamp, top_list};
use coral_proto::v1::{self as pb, DnsOutcome, DnsQuery, DnsStats, collector_spec::Config};
use std::fmt::Write;
use std::time::Duration;

pub const ABOUT: &str =
    "DNS queries and responses over UDP and TCP: names, rcodes, answers, latency, timeouts";
pub const TAKES_INTERVAL: bool = true;

/// dns's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "dns")]
#[group(id = "dns flags")]
pub struct Flags {
    /// A port besides 53 whose UDP and TCP traffic is DNS (repeatable, at
    /// most 8).
    #[arg(long = "dns-port", value_name = "PORT")]
    pub dns_ports: Vec<u16>,

    /// A query with no response after this long is a timeout (default 5s).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub dns_timeout: Option<Duration>,

    /// (name, type, rcode) rows kept (default 1024); exchanges beyond are
    /// counted as other names.
    #[arg(long)]
    pub max_names: Option<u32>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::Dns(pb::DnsConfig {
        interval_ns,
        ports: flags.dns_ports.iter().map(|&p| u32::from(p)).collect(),
        timeout_ns: flags.dns_timeout.map_or(0, |d| d.as_nanos() as u64),
        max_names: flags.max_names.unwrap_or(0),
        max_inflight: 0,
    })
}

impl Aggregate for DnsStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

impl Event for DnsQuery {
    fn line(&self) -> String {
        event_line(self)
    }

    fn header(&self) -> Option<&'static str> {
        Some(HEADER)
    }
}

const HEADER: &str = "TIME                     PID COMM            PROTO SERVER                 TYPE   RCODE      LATENCY  NAME -> ANSWERS";

/// "NXDOMAIN", "TIMEOUT", ...
pub fn result_name(q: &DnsQuery) -> String {
    match DnsOutcome::try_from(q.outcome) {
        Ok(DnsOutcome::Answered) => q.rcode_name.clone(),
        Ok(DnsOutcome::Timeout) => "TIMEOUT".into(),
        Ok(DnsOutcome::Unanswered) => "NO_ANSWER".into(),
        Ok(DnsOutcome::Unspecified) | Err(_) => "?".into(),
    }
}

/// One line per query: what was asked of whom, and what came back when.
pub fn event_line(q: &DnsQuery) -> String {
    let answered = q.outcome == i32::from(DnsOutcome::Answered);
    let answers = if q.answers.is_empty() {
        String::new()
    } else {
        let more = (q.answer_count as usize).saturating_sub(q.answers.len());
        let mut a = format!(" -> {}", q.answers.join(" "));
        if more > 0 {
            let _ = write!(a, " (+{more})");
        }
        a
    };
    format!(
        "{} {:>7} {:<15} {:<5} {:<22} {:<6} {:<9} {:>9}  {}{}{}",
        timestamp(q.start_unix_nano),
        q.pid,
        q.comm,
        q.transport,
        q.server,
        q.qtype_name,
        result_name(q),
        if answered {
            duration_ns(q.latency_ns)
        } else {
            "-".into()
        },
        q.name,
        answers,
        match short_container(q.container.as_ref()) {
            "-" => String::new(),
            c => format!("  [{c}]"),
        }
    )
}

fn lost(s: &DnsStats) -> String {
    let mut parts = Vec::new();
    if s.other_names > 0 {
        parts.push(format!("{} in rows beyond the table", s.other_names));
    }
    if s.malformed > 0 {
        parts.push(format!("{} packets not DNS", s.malformed));
    }
    if s.dropped_events + s.dropped_inflight > 0 {
        parts.push(format!(
            "{} lost by the kernel",
            s.dropped_events + s.dropped_inflight
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn ports(s: &DnsStats) -> String {
    let ports = s
        .ports
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if s.tcp {
        ports
    } else {
        format!("{ports} (UDP only)")
    }
}

/// The full report: totals, then one row per (name, type, rcode).
pub fn report(s: &DnsStats, limit: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} queries, {} answered, {} NXDOMAIN, {} SERVFAIL, {} timeouts (>= {}), {} in flight over {}; ports {}{}",
        s.queries,
        s.responses,
        s.nxdomain,
        s.servfail,
        s.timeouts,
        duration_ns(s.timeout_ns),
        s.in_flight,
        duration_ns(s.elapsed_ns),
        ports(s),
        lost(s)
    );
    if s.names.is_empty() {
        return out;
    }
    out.push('\n');
    let mut t = table(["NAME", "TYPE", "RCODE", "COUNT", "P50", "P90", "P99", "MAX"]);
    for n in s.names.iter().take(limit) {
        let lat = |ns: u64| {
            if n.timed_out {
                "-".to_string()
            } else {
                duration_ns(ns)
            }
        };
        t.add_row([
            n.name.clone(),
            n.qtype_name.clone(),
            n.rcode_name.clone(),
            n.count.to_string(),
            lat(n.latency_p50_ns),
            lat(n.latency_p90_ns),
            lat(n.latency_p99_ns),
            lat(n.latency_max_ns),
        ]);
    }
    align_right(&mut t, [3, 4, 5, 6, 7]);
    out.push_str(&t.to_string());
    out.push('\n');
    let hidden = s.names.len().saturating_sub(limit);
    if hidden > 0 {
        let _ = writeln!(out, "(and {hidden} more rows)");
    }
    out
}

/// One line for a live view that cannot redraw.
pub fn summary_line(s: &DnsStats) -> String {
    let top: Vec<String> = s
        .names
        .iter()
        .take(3)
        .map(|n| format!("{} {} {}x{}", n.name, n.qtype_name, n.rcode_name, n.count))
        .collect();
    format!(
        "{:>8}  {} queries  {} NXDOMAIN  {} SERVFAIL  {} timeouts  {}",
        duration_ns(s.elapsed_ns),
        s.queries,
        s.nxdomain,
        s.servfail,
        s.timeouts,
        top_list(&top, "; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> DnsStats {
        DnsStats {
            elapsed_ns: 3_000_000_000,
            names: vec![
                pb::DnsName {
                    name: "alpha.test".into(),
                    qtype: 1,
                    qtype_name: "A".into(),
                    rcode_name: "NOERROR".into(),
                    count: 5,
                    latency_p50_ns: 180_000,
                    latency_p90_ns: 250_000,
                    latency_p99_ns: 310_000,
                    latency_max_ns: 310_000,
                    ..Default::default()
                },
                pb::DnsName {
                    name: "missing.test".into(),
                    qtype: 1,
                    qtype_name: "A".into(),
                    rcode: 3,
                    rcode_name: "NXDOMAIN".into(),
                    count: 3,
                    latency_p50_ns: 150_000,
                    latency_p90_ns: 160_000,
                    latency_p99_ns: 160_000,
                    latency_max_ns: 160_000,
                    ..Default::default()
                },
                pb::DnsName {
                    name: "drop.test".into(),
                    qtype: 1,
                    qtype_name: "A".into(),
                    timed_out: true,
                    rcode_name: "TIMEOUT".into(),
                    count: 1,
                    ..Default::default()
                },
            ],
            queries: 9,
            responses: 8,
            nxdomain: 3,
            timeouts: 1,
            timeout_ns: 500_000_000,
            ports: vec![53, 15353],
            tcp: true,
            ..Default::default()
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20));
    }

    #[test]
    fn event_lines_show_rcode_latency_and_answers() {
        let q = DnsQuery {
            pid: 7,
            comm: "dig".into(),
            transport: "udp".into(),
            server: "127.0.0.1:15353".into(),
            name: "beta.test".into(),
            qtype_name: "A".into(),
            outcome: DnsOutcome::Answered.into(),
            rcode_name: "NOERROR".into(),
            answer_count: 3,
            answers: vec!["10.1.2.3".into(), "10.1.2.4".into()],
            latency_ns: 250_000,
            ..Default::default()
        };
        let line = event_line(&q);
        assert!(
            line.contains("beta.test -> 10.1.2.3 10.1.2.4 (+1)") && line.contains("NOERROR"),
            "{line}"
        );
        let t = DnsQuery {
            outcome: DnsOutcome::Timeout.into(),
            ..q
        };
        assert!(event_line(&t).contains("TIMEOUT"), "{}", event_line(&t));
        assert!(summary_line(&stats()).contains("3 NXDOMAIN"));
    }
}
