//! http-latency for people: per (method, route, status) table with quantiles,
//! latency histograms of the busiest routes, and one line per request.

use super::{Aggregate, Event, ViewOptions};
use crate::render::{
    align_right, duration_ns, log2_duration_histogram, rate, table, timestamp, top_list,
};
use coral_proto::v1::{self as pb, HttpRequest, HttpRouteStats, HttpStats, collector_spec::Config};
use std::fmt::Write;

pub const ABOUT: &str = "HTTP/1.x request latency per route and status";
pub const TAKES_INTERVAL: bool = true;

/// http-latency's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "http-latency")]
#[group(id = "http-latency flags")]
pub struct Flags {
    /// Also trace outgoing requests made by the target.
    #[arg(long)]
    pub client_side: bool,

    /// Distinct (method, route, status) groups kept, the overflow group
    /// included (default 256).
    #[arg(long)]
    pub max_routes: Option<u32>,

    /// HTTPS through uprobes on OpenSSL, also without a filter (every libssl
    /// mapped at start), and fail if uprobes are unavailable. By default it
    /// is on for the processes a --pid, --cgroup or --comm filter names.
    #[arg(long, conflicts_with = "no_tls")]
    pub tls: bool,

    /// Sockets only: no uprobes on TLS libraries.
    #[arg(long)]
    pub no_tls: bool,

    /// Requests shown one by one per second, at most (default 1000, at most
    /// 1000000). Every request is counted in the route table either way.
    #[arg(long, value_name = "N")]
    pub request_records: Option<u32>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    let tls = match (flags.tls, flags.no_tls) {
        (true, _) => pb::HttpTls::On,
        (_, true) => pb::HttpTls::Off,
        _ => pb::HttpTls::Auto,
    };
    Config::HttpLatency(pb::HttpLatencyConfig {
        interval_ns,
        client_side: flags.client_side,
        max_routes: flags.max_routes.unwrap_or(0),
        tls: tls.into(),
        max_request_records_per_sec: flags.request_records.unwrap_or(0),
    })
}

impl Aggregate for HttpStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows, opts.sort)
    }
}

impl Event for HttpRequest {
    fn line(&self) -> String {
        request_line(self)
    }
}

/// How many histograms the full report shows.
const HISTOGRAMS: usize = 2;

/// Order of the route table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Most requests first.
    #[default]
    Count,
    /// Slowest 99th percentile first.
    P99,
}

fn sorted(stats: &HttpStats, by: SortBy) -> Vec<&HttpRouteStats> {
    let mut routes: Vec<_> = stats.routes.iter().collect();
    match by {
        SortBy::Count => routes.sort_by_key(|r| std::cmp::Reverse(r.count)),
        SortBy::P99 => routes.sort_by_key(|r| std::cmp::Reverse(r.p99_ns)),
    }
    routes
}

/// The full report: route table, then histograms.
pub fn report(stats: &HttpStats, limit: usize, by: SortBy) -> String {
    let mut out = String::new();
    let total: u64 = stats.routes.iter().map(|r| r.count).sum();
    let errors: u64 = stats
        .routes
        .iter()
        .filter(|r| r.status >= 500)
        .map(|r| r.count)
        .sum();
    let mut notes = String::new();
    if stats.dropped_events > 0 {
        let _ = write!(notes, ", {} lost by the kernel", stats.dropped_events);
    }
    if stats.unrecorded_requests > 0 {
        let _ = write!(
            notes,
            ", {} not shown one by one (over --request-records)",
            stats.unrecorded_requests
        );
    }
    let _ = writeln!(
        out,
        "{total} requests ({errors} 5xx) over {}, {} routes{notes}",
        duration_ns(stats.elapsed_ns),
        stats.routes.len(),
    );
    if stats.routes.is_empty() {
        return out;
    }
    let routes = sorted(stats, by);
    let mut t = table([
        "METHOD", "ROUTE", "STATUS", "COUNT", "RATE/s", "P50", "P90", "P99", "AVG",
    ]);
    for r in routes.iter().take(limit) {
        let side = if r.client { " (out)" } else { "" };
        t.add_row([
            format!("{}{side}", r.method),
            r.route.clone(),
            r.status.to_string(),
            r.count.to_string(),
            rate(r.count, stats.elapsed_ns),
            duration_ns(r.p50_ns),
            duration_ns(r.p90_ns),
            duration_ns(r.p99_ns),
            r.total_ns
                .checked_div(r.count)
                .map_or("-".into(), duration_ns),
        ]);
    }
    align_right(&mut t, 2..9);
    out.push_str(&t.to_string());
    out.push('\n');
    for r in routes.iter().take(HISTOGRAMS) {
        let _ = write!(
            out,
            "\n{} {} {} latency:\n{}",
            r.method,
            r.route,
            r.status,
            log2_duration_histogram(&r.latency_log2)
        );
    }
    out
}

/// One line per request; HTTPS requests are marked `tls`, and those of a
/// container show its short id.
pub fn request_line(r: &HttpRequest) -> String {
    let container = r
        .container
        .as_ref()
        .map(|c| c.container_id.as_str())
        .filter(|id| !id.is_empty())
        .map(|id| format!("  <{}>", &id[..id.len().min(12)]))
        .unwrap_or_default();
    format!(
        "{} {:>7} {:<15} {:<7} {:>3} {:>9} {:<3}  {}{container}",
        timestamp(r.start_unix_nano),
        r.pid,
        r.comm,
        r.method,
        r.status,
        duration_ns(r.latency_ns),
        if r.tls { "tls" } else { "" },
        r.path
    )
}

/// One line for a live view that cannot redraw.
pub fn summary_line(stats: &HttpStats) -> String {
    let total: u64 = stats.routes.iter().map(|r| r.count).sum();
    let top: Vec<String> = sorted(stats, SortBy::Count)
        .iter()
        .take(3)
        .map(|r| {
            format!(
                "{} {} {} x{} p99 {}",
                r.method,
                r.route,
                r.status,
                r.count,
                duration_ns(r.p99_ns)
            )
        })
        .collect();
    format!(
        "{:>8}  {total} requests  {}",
        duration_ns(stats.elapsed_ns),
        top_list(&top, "; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> HttpStats {
        HttpStats {
            elapsed_ns: 2_000_000_000,
            routes: vec![
                HttpRouteStats {
                    method: "GET".into(),
                    route: "/users/{id}".into(),
                    status: 200,
                    count: 40,
                    error_rate: 0.0,
                    total_ns: 40 * 2_000_000,
                    p50_ns: 1_900_000,
                    p90_ns: 2_500_000,
                    p99_ns: 3_000_000,
                    latency_log2: vec![0; 20].into_iter().chain([30, 10]).collect(),
                    client: false,
                },
                HttpRouteStats {
                    method: "POST".into(),
                    route: "/orders".into(),
                    status: 503,
                    count: 2,
                    error_rate: 1.0,
                    total_ns: 2 * 50_000_000,
                    p50_ns: 50_000_000,
                    p90_ns: 50_000_000,
                    p99_ns: 50_000_000,
                    latency_log2: vec![0; 25].into_iter().chain([2]).collect(),
                    client: false,
                },
            ],
            dropped_events: 0,
            unrecorded_requests: 30,
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20, SortBy::Count));
    }

    #[test]
    fn sort_by_p99_puts_slowest_first() {
        let s = stats();
        let text = report(&s, 20, SortBy::P99);
        let post = text.find("/orders").unwrap();
        let get = text.find("/users/{id}").unwrap();
        assert!(post < get, "{text}");
    }
}
