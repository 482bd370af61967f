//! Output for people (aligned tables, log2 histograms, short durations) and
//! for machines (`-o json`: one proto3-JSON object per line).

use clap::ValueEnum;
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// Rows in live and final tables.
pub const TABLE_ROWS: usize = 20;

pub fn state_name(state: i32) -> &'static str {
    use coral_proto::v1::CollectorState;
    match CollectorState::try_from(state) {
        Ok(CollectorState::Starting) => "starting",
        Ok(CollectorState::Running) => "running",
        Ok(CollectorState::Expired) => "expired",
        Ok(CollectorState::Stopped) => "stopped",
        Ok(CollectorState::Failed) => "failed",
        Ok(CollectorState::Unspecified) | Err(_) => "unknown",
    }
}

/// `512 B`, `3.5 KiB`, `890 MiB`, `1 GiB`, `1.5 GiB`: two or three
/// significant digits.
pub fn bytes(b: u64) -> String {
    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * 1024.0;
    const GIB: f64 = MIB * 1024.0;
    let v = b as f64;
    let (x, unit) = if v >= GIB {
        (v / GIB, "GiB")
    } else if v >= MIB {
        (v / MIB, "MiB")
    } else if v >= KIB {
        (v / KIB, "KiB")
    } else {
        return format!("{b} B");
    };
    let text = if x >= 100.0 || (x - x.round()).abs() < 0.05 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    };
    format!("{text} {unit}")
}

/// Calls per second over `elapsed_ns`, or `-` before any time passed.
pub fn rate(count: u64, elapsed_ns: u64) -> String {
    if elapsed_ns == 0 {
        return "-".into();
    }
    format!("{:.1}", count as f64 / (elapsed_ns as f64 / 1e9))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables and histograms.
    Table,
    /// One JSON object per line (proto3 JSON mapping).
    Json,
}

/// A notice for people on stderr (progress, warnings, hints). A closed or
/// broken stderr is not an error: the output that matters is on stdout.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use note;

/// Prints one JSON object on its own line.
pub fn json_line<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Prints `text` and a newline on stdout, without the spaces tables pad
/// their last column with (they would fill a terminal's lines and files).
/// Returns the error instead of panicking like `println!`, so a closed pipe
/// (`coral ... | head`) ends quietly.
pub fn out(text: impl std::fmt::Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in text.to_string().split('\n') {
        writeln!(out, "{}", line.trim_end())?;
    }
    out.flush()
}

/// `1.2ms`, `350ns`, `2.5s`, `1m30s`: short and unit-bearing.
pub fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ if d < Duration::from_secs(60) => format!("{:.2}s", d.as_secs_f64()),
        _ => humantime::format_duration(Duration::from_secs(d.as_secs()))
            .to_string()
            .replace(' ', ""),
    }
}

/// The busiest entries of a one-line live summary, or `-` when there are none.
pub fn top_list(top: &[String], sep: &str) -> String {
    if top.is_empty() {
        "-".into()
    } else {
        top.join(sep)
    }
}

pub fn duration_ns(ns: u64) -> String {
    duration(Duration::from_nanos(ns))
}

/// A borderless table with a header row, columns aligned.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    // On a terminal, long cells (hook lists, paths) wrap to its width
    // instead of padding every row past it; pipes and files get full lines.
    t.load_style(NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header);
    t
}

/// A borderless two-column `key value` table without header.
pub fn kv_table() -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t
}

/// Right-aligns the given columns (numbers).
pub fn align_right(t: &mut Table, columns: impl IntoIterator<Item = usize>) {
    for c in columns {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

/// Unix nanoseconds as local-independent RFC 3339 (UTC), "-" for 0.
pub fn timestamp(unix_nano: u64) -> String {
    if unix_nano == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(unix_nano))
        .to_string()
}

/// A log2 histogram like the bcc tools print: `buckets[i]` counts values in
/// `[2^i, 2^(i+1))` of `unit`.
pub fn log2_histogram(buckets: &[u64], unit: &str) -> String {
    histogram_with(buckets, unit, |v| v.to_string())
}

/// A log2 histogram of nanosecond buckets with human bounds (`1.0ms`), for
/// latencies that span many orders of magnitude.
pub fn log2_duration_histogram(buckets: &[u64]) -> String {
    histogram_with(buckets, "latency", |v| {
        duration(Duration::from_nanos(v.min(u64::MAX as u128) as u64))
    })
}

fn histogram_with(buckets: &[u64], unit: &str, fmt: impl Fn(u128) -> String) -> String {
    const WIDTH: usize = 40;
    let Some(first) = buckets.iter().position(|&c| c > 0) else {
        return String::new();
    };
    let last = buckets.iter().rposition(|&c| c > 0).unwrap_or(first);
    let max = *buckets.iter().max().unwrap_or(&1);
    let bounds = |i: usize| {
        let lo = if i == 0 { 0 } else { 1u128 << i };
        (fmt(lo), fmt((1u128 << (i + 1)) - 1))
    };
    let width = (first..=last)
        .map(|i| {
            let (lo, hi) = bounds(i);
            lo.chars().count().max(hi.chars().count())
        })
        .max()
        .unwrap_or(0)
        .max(unit.len());
    // Header aligned with the `lo -> hi` column of the rows below.
    let mut out = format!(
        "{:>w$}{:pad$} : {:<8} distribution\n",
        unit,
        "",
        "count",
        w = width,
        pad = width + 4
    );
    for (i, &count) in buckets.iter().enumerate().take(last + 1).skip(first) {
        let (lo, hi) = bounds(i);
        let stars = (count as u128 * WIDTH as u128).div_ceil(max as u128) as usize;
        out.push_str(&format!(
            "{lo:>w$} -> {hi:<w$} : {count:<8} |{:<WIDTH$}|\n",
            "*".repeat(stars),
            w = width
        ));
    }
    out
}

/// Value at quantile `q` of a log2 histogram, as the upper bound of its bucket
/// (an over-estimate by less than 2x, as with every log2 histogram).
pub fn log2_quantile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some((1u64 << (i + 1).min(63)) - 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3584), "3.5 KiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(1 << 30), "1 GiB");
        assert_eq!(bytes(890 << 20), "890 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(Duration::from_nanos(350)), "350ns");
        assert_eq!(duration(Duration::from_micros(1200)), "1.2ms");
        assert_eq!(duration(Duration::from_millis(2500)), "2.50s");
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn histogram_spans_used_buckets_only() {
        let h = log2_histogram(&[0, 0, 4, 8, 0, 2], "ns");
        let lines: Vec<_> = h.lines().collect();
        assert_eq!(lines.len(), 5, "{h}");
        assert!(lines[1].starts_with(" 4 -> 7"), "{h}");
        assert!(lines[2].contains(&"*".repeat(40)), "{h}");
        assert!(lines[4].starts_with("32 -> 63"), "{h}");
    }

    #[test]
    fn quantiles_walk_buckets() {
        let b = [0, 0, 50, 49, 1];
        assert_eq!(log2_quantile(&b, 0.5), Some(7));
        assert_eq!(log2_quantile(&b, 0.99), Some(15));
        assert_eq!(log2_quantile(&b, 1.0), Some(31));
        assert_eq!(log2_quantile(&[], 0.5), None);
    }
}
