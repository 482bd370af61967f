//! Metrics export: the agent's own health and the results of collectors
//! started with `export`, served as Prometheus `/metrics`
//! ([`prometheus`], `--metrics-listen`) and pushed over OTLP/gRPC
//! ([`otlp`], `--otlp-endpoint`).
//!
//! Nothing is instrumented twice. At scrape (or push) time, on the blocking
//! pool, [`Exporter::gather`] reads the manager (its registry, counters and
//! event logs), `/proc/self` ([`process`]) and the agent's BPF file
//! descriptors ([`bpf`]), and each exported collector's newest aggregate
//! record ([`results`], one exhaustive match over the payload types), into
//! one library-neutral model: [`Family`] (a name in OpenTelemetry's dotted
//! form, a unit, a type) and its [`Series`]. The two encoders translate that
//! model: Prometheus names are derived from the OTel names the way the
//! OpenTelemetry specification maps them (`http.server.request.duration`,
//! unit `s` -> `http_server_request_duration_seconds`; counters end in
//! `_total`), so both outputs carry the same metrics, values and labels.
//!
//! Series exist only while their collector is in the registry: a reaped
//! collector's series are gone from the next scrape. Result series are
//! bounded per collector ([`ExportOptions::max_series`]): label sets beyond
//! the bound are folded into one overflow series per metric (every label
//! `{overflow}`), and how many were folded is itself a metric.

pub mod agent;
pub mod bpf;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod results;

use crate::containers::parse_cgroup_path;
use crate::manager::{CollectorView, Manager};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Result series one collector may export unless configured otherwise.
pub const DEFAULT_MAX_SERIES: usize = 2000;

/// The value every label of an overflow series has (as http-latency names
/// its overflow route).
pub const OVERFLOW: &str = "{overflow}";

/// A metric's unit, as OTel writes it; Prometheus names end in its word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    BytesPerSecond,
    /// A count of things: OTel's `{call}`, `{request}`... no name suffix.
    Count(&'static str),
}

impl Unit {
    /// The UCUM unit OTLP carries.
    pub fn ucum(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Bytes => "By",
            Unit::BytesPerSecond => "By/s",
            Unit::Count(c) => c,
        }
    }

    /// The word Prometheus names end in (before `_total`).
    pub fn prometheus(self) -> Option<&'static str> {
        match self {
            Unit::Seconds => Some("seconds"),
            Unit::Bytes => Some("bytes"),
            Unit::BytesPerSecond => Some("bytes_per_second"),
            Unit::Count(_) => None,
        }
    }
}

/// Histogram bucket bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bounds {
    /// Fixed upper bounds.
    Fixed(&'static [f64]),
    /// `2^e * scale` for `e` in `min, min + step, ..., max`: where the
    /// kernel side keeps log2 buckets (latencies in ns, RTTs in µs), every
    /// bound is a bucket edge, so no count is moved between buckets (a
    /// `step` of 2 merges pairs of them: half the series, a factor of 4
    /// between bounds).
    Log2 {
        min: u32,
        max: u32,
        step: u32,
        scale: f64,
    },
}

impl Bounds {
    pub fn upper_bounds(self) -> Vec<f64> {
        match self {
            Bounds::Fixed(b) => b.to_vec(),
            Bounds::Log2 {
                min,
                max,
                step,
                scale,
            } => (min..=max)
                .step_by(step.max(1) as usize)
                .map(|e| (1u64 << e) as f64 * scale)
                .collect(),
        }
    }

    pub fn len(self) -> usize {
        match self {
            Bounds::Fixed(b) => b.len(),
            Bounds::Log2 { min, max, step, .. } => ((max - min) / step.max(1) + 1) as usize,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Folds log2 buckets (`counts[i]`: values in `[2^i, 2^(i+1))`) into
    /// these bounds: per-bucket counts, the last one above every bound.
    /// Only for [`Bounds::Log2`]; fixed bounds get everything in overflow.
    pub fn fold_log2(self, counts: &[u64]) -> Vec<u64> {
        let mut out = vec![0; self.len() + 1];
        let Bounds::Log2 { min, step, .. } = self else {
            out[self.len()] = counts.iter().sum();
            return out;
        };
        let step = step.max(1);
        for (i, &n) in counts.iter().enumerate() {
            // Every value of bucket i is below 2^(i+1): it goes under the
            // first bound at or above that edge.
            let edge = i as u32 + 1;
            let slot = edge.saturating_sub(min).div_ceil(step) as usize;
            out[slot.min(self.len())] += n;
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Type {
    /// Monotonic, cumulative since `Series::start`.
    Counter,
    Gauge,
    Histogram(Bounds),
}

/// How a family's overflow series is made from the series beyond the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Counters and histograms: the overflow series is their sum.
    Sum,
    /// Gauges whose sum means nothing (a rate, a time to limit): dropped.
    Drop,
}

/// What a metric is. Every one the agent exports is a `static Desc`.
#[derive(Debug, PartialEq)]
pub struct Desc {
    /// OpenTelemetry's dotted name: `http.server.request.duration`.
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    pub ty: Type,
    pub merge: Merge,
}

impl Desc {
    /// The Prometheus name without the `_total` of counters, which the
    /// encoder adds: `http_server_request_duration_seconds`.
    pub fn prometheus_base(&self) -> String {
        let mut name = sanitize(self.name);
        if let Some(unit) = self.unit.prometheus()
            && !name.ends_with(unit)
        {
            name.push('_');
            name.push_str(unit);
        }
        name
    }

    /// The full Prometheus name a sample line starts with (histograms then
    /// add `_bucket`, `_sum`, `_count`).
    pub fn prometheus_name(&self) -> String {
        let base = self.prometheus_base();
        match self.ty {
            Type::Counter => base + "_total",
            Type::Gauge | Type::Histogram(_) => base,
        }
    }
}

/// A Prometheus-valid name from an OTel name or key: `.` and every other
/// character outside `[a-zA-Z0-9_]` become `_`, and a leading digit gets one.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Label keys in OTel form (`http.request.method`); Prometheus gets them
/// sanitized (`http_request_method`).
pub type Labels = Vec<(Cow<'static, str>, String)>;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// Per-bucket counts (`bounds.len() + 1`, the last above every bound),
    /// their total and the sum of the values.
    Histogram {
        buckets: Vec<u64>,
        count: u64,
        sum: f64,
    },
}

impl Value {
    fn add(&mut self, other: &Value) {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => *a += b,
            (Value::Float(a), Value::Float(b)) => *a += b,
            (
                Value::Histogram {
                    buckets,
                    count,
                    sum,
                },
                Value::Histogram {
                    buckets: b,
                    count: c,
                    sum: s,
                },
            ) => {
                for (x, y) in buckets.iter_mut().zip(b) {
                    *x += y;
                }
                *count += c;
                *sum += s;
            }
            // One family always has one kind of value.
            _ => {}
        }
    }

    /// The value as a float (gauges, counters on OTLP).
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Int(n) => *n as f64,
            Value::Float(f) => *f,
            Value::Histogram { sum, .. } => *sum,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: Value,
    /// When a cumulative value started counting (OTLP's start time): the
    /// collector's start, or the agent's.
    pub start: Option<SystemTime>,
}

/// One metric and its series, as both encoders take it.
#[derive(Clone, Debug)]
pub struct Family {
    pub desc: &'static Desc,
    pub series: Vec<Series>,
}

/// A point a collector's results make: its metric, its own labels (the
/// collector's labels are added later), its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub desc: &'static Desc,
    pub labels: Labels,
    pub value: Value,
}

impl Point {
    pub fn new(desc: &'static Desc, labels: Labels, value: Value) -> Self {
        Self {
            desc,
            labels,
            value,
        }
    }
}

/// Exporter settings (agent flags).
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Result series one collector may export; the rest are folded into
    /// one overflow series per metric (`--metrics-max-series`).
    pub max_series: usize,
    /// Export BPF programs' run counts and run time (`--bpf-stats`: the
    /// kernel then times every program run).
    pub bpf_stats: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            max_series: DEFAULT_MAX_SERIES,
            bpf_stats: false,
        }
    }
}

/// What the exporter remembers about one collector between gathers.
#[derive(Default)]
struct CollectorCache {
    /// The seq of the aggregate the cached points come from.
    seq: u64,
    points: Arc<Vec<Point>>,
    /// Label sets admitted so far, per metric: once in, a series stays in,
    /// so a collector at its bound does not flap series in and out.
    admitted: HashSet<(&'static str, Labels)>,
    /// Label sets folded into overflow at the last gather.
    overflowed: u64,
}

/// Gathers every metric. Cheap to clone; shared by the Prometheus server
/// and the OTLP pusher.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<ExporterInner>,
}

struct ExporterInner {
    manager: Manager,
    options: ExportOptions,
    started: SystemTime,
    cache: Mutex<HashMap<String, CollectorCache>>,
}

impl Exporter {
    pub fn new(manager: Manager, options: ExportOptions) -> Self {
        Self {
            inner: Arc::new(ExporterInner {
                manager,
                options,
                started: process::start_time().unwrap_or_else(SystemTime::now),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    pub fn options(&self) -> &ExportOptions {
        &self.inner.options
    }

    /// When the agent started: the start of its own cumulative series.
    pub fn started(&self) -> SystemTime {
        self.inner.started
    }

    /// Every metric, now. Blocking: reads `/proc`, BPF fds and decodes
    /// records; call it on the blocking pool.
    pub fn gather(&self) -> Vec<Family> {
        let collectors = self.inner.manager.list();
        let mut out = Families::default();
        agent::gather(self, &collectors, &mut out);
        self.gather_results(&collectors, &mut out);
        out.into_vec()
    }

    /// The exported collectors' result series, bounded per collector.
    fn gather_results(&self, collectors: &[CollectorView], out: &mut Families) {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Reaped collectors: their series go with them.
        cache.retain(|id, _| collectors.iter().any(|c| &c.id == id));
        for view in collectors.iter().filter(|c| c.spec.export) {
            let Ok(entry) = self.inner.manager.entry(&view.id) else {
                continue;
            };
            let state = cache.entry(view.id.clone()).or_default();
            if let Some(record) = entry.log.latest_aggregate()
                && record.seq != state.seq
                && let Some(payload) = record.payload()
            {
                state.seq = record.seq;
                state.points = Arc::new(results::points(&payload));
            }
            let common = collector_labels(view);
            let start = view.status.started.or(Some(view.created));
            let (kept, overflowed) = bound(
                &state.points,
                &mut state.admitted,
                self.inner.options.max_series,
            );
            state.overflowed = overflowed;
            for point in kept {
                out.push(
                    point.desc,
                    with_common(&common, point.labels),
                    point.value,
                    start,
                );
            }
            out.push(
                &agent::EXPORT_OVERFLOW,
                common.clone(),
                Value::Int(overflowed),
                None,
            );
        }
    }
}

/// The labels every series of a collector carries: its id, its kind, its
/// labels (`label.<key>`) and, when its cgroup filter shows one, the
/// container id.
pub fn collector_labels(view: &CollectorView) -> Labels {
    let mut labels: Labels = vec![
        ("collector.id".into(), view.id.clone()),
        ("collector.kind".into(), view.spec.kind.as_str().to_string()),
    ];
    if let Some(cgroup) = &view.spec.filter.cgroup
        && let Some(container) = parse_cgroup_path(cgroup).container
    {
        labels.push(("container.id".into(), container.id));
    }
    let mut seen: HashSet<String> = HashSet::new();
    for (key, value) in &view.spec.labels {
        // Two keys that sanitize alike: the first (in key order) wins.
        let name = format!("label.{key}");
        if seen.insert(sanitize(&name)) {
            labels.push((name.into(), value.clone()));
        }
    }
    labels
}

/// The collector's labels first, then the point's, without repeating a key
/// (a point's own `container.id` wins over the filter's).
fn with_common(common: &Labels, own: Labels) -> Labels {
    let mut labels: Labels = common
        .iter()
        .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
        .cloned()
        .collect();
    labels.extend(own);
    labels
}

/// Keeps the points whose label sets are admitted (new ones while fewer
/// than `max` are), and folds the others into one overflow point per
/// metric. Returns them and how many label sets were folded.
fn bound(
    points: &[Point],
    admitted: &mut HashSet<(&'static str, Labels)>,
    max: usize,
) -> (Vec<Point>, u64) {
    let mut kept = Vec::with_capacity(points.len().min(max + 8));
    let mut overflow: Vec<Point> = Vec::new();
    let mut folded = 0;
    for point in points {
        let key = (point.desc.name, point.labels.clone());
        let admit = admitted.contains(&key) || {
            if admitted.len() < max {
                admitted.insert(key);
                true
            } else {
                false
            }
        };
        if admit {
            kept.push(point.clone());
            continue;
        }
        folded += 1;
        if point.desc.merge == Merge::Drop {
            continue;
        }
        match overflow.iter_mut().find(|o| o.desc.name == point.desc.name) {
            Some(o) => o.value.add(&point.value),
            None => overflow.push(Point {
                desc: point.desc,
                labels: point
                    .labels
                    .iter()
                    .map(|(k, _)| (k.clone(), OVERFLOW.to_string()))
                    .collect(),
                value: point.value.clone(),
            }),
        }
    }
    kept.extend(overflow);
    (kept, folded)
}

/// Families in the order they are first met; series appended.
#[derive(Default)]
pub struct Families {
    order: Vec<&'static str>,
    by_name: HashMap<&'static str, Family>,
}

impl Families {
    pub fn push(
        &mut self,
        desc: &'static Desc,
        labels: Labels,
        value: Value,
        start: Option<SystemTime>,
    ) {
        let family = self.by_name.entry(desc.name).or_insert_with(|| {
            self.order.push(desc.name);
            Family {
                desc,
                series: Vec::new(),
            }
        });
        family.series.push(Series {
            labels,
            value,
            start,
        });
    }

    pub fn into_vec(mut self) -> Vec<Family> {
        self.order
            .iter()
            .filter_map(|name| self.by_name.remove(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static CALLS: Desc = Desc {
        name: "coral.test.calls",
        help: "Calls.",
        unit: Unit::Count("{call}"),
        ty: Type::Counter,
        merge: Merge::Sum,
    };
    static RATE: Desc = Desc {
        name: "coral.test.rate",
        help: "A rate.",
        unit: Unit::BytesPerSecond,
        ty: Type::Gauge,
        merge: Merge::Drop,
    };

    fn point(desc: &'static Desc, name: &str, n: u64) -> Point {
        Point::new(desc, vec![("syscall".into(), name.into())], Value::Int(n))
    }

    #[test]
    fn prometheus_names_follow_the_otel_translation() {
        let d = |name, unit, ty| Desc {
            name,
            help: "",
            unit,
            ty,
            merge: Merge::Sum,
        };
        let cases = [
            (
                d(
                    "http.server.request.duration",
                    Unit::Seconds,
                    Type::Histogram(Bounds::Fixed(&[])),
                ),
                "http_server_request_duration_seconds",
            ),
            (
                d("coral.syscall.calls", Unit::Count("{call}"), Type::Counter),
                "coral_syscall_calls_total",
            ),
            (
                d("coral.tcp.sent", Unit::Bytes, Type::Counter),
                "coral_tcp_sent_bytes_total",
            ),
            (
                d("process.cpu", Unit::Seconds, Type::Counter),
                "process_cpu_seconds_total",
            ),
            (
                d(
                    "coral.memory.growth_rate",
                    Unit::BytesPerSecond,
                    Type::Gauge,
                ),
                "coral_memory_growth_rate_bytes_per_second",
            ),
        ];
        for (desc, want) in cases {
            assert_eq!(desc.prometheus_name(), want);
        }
        assert_eq!(sanitize("label.team-name"), "label_team_name");
        assert_eq!(sanitize("9lives"), "_9lives");
    }

    #[test]
    fn log2_buckets_fold_at_their_edges() {
        let b = Bounds::Log2 {
            min: 2,
            max: 4,
            step: 1,
            scale: 1.0,
        };
        assert_eq!(b.upper_bounds(), [4.0, 8.0, 16.0]);
        // [1,2) and [2,4) fall under 4; [4,8) under 8; [8,16) under 16;
        // [16,32) and above over every bound.
        assert_eq!(b.fold_log2(&[1, 2, 3, 4, 5, 6]), [3, 3, 4, 11]);
        assert_eq!(b.fold_log2(&[]), [0, 0, 0, 0]);
        let wide = Bounds::Log2 {
            min: 2,
            max: 6,
            step: 2,
            scale: 1.0,
        };
        assert_eq!(wide.upper_bounds(), [4.0, 16.0, 64.0]);
        // Under 4: [1,2), [2,4); under 16: [4,8), [8,16); under 64:
        // [16,32), [32,64); then [64,128) over every bound.
        assert_eq!(wide.fold_log2(&[1, 2, 3, 4, 5, 6, 7]), [3, 7, 11, 7]);
    }

    #[test]
    fn series_beyond_the_bound_fold_into_one_overflow_series_and_stay_out() {
        let mut admitted = HashSet::new();
        let points = vec![
            point(&CALLS, "read", 5),
            point(&CALLS, "write", 7),
            point(&CALLS, "close", 11),
            point(&RATE, "read", 1),
        ];
        let (kept, folded) = bound(&points, &mut admitted, 2);
        assert_eq!(folded, 2);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[2].labels, [("syscall".into(), OVERFLOW.to_string())]);
        assert_eq!(kept[2].value, Value::Int(11));
        // Next time "close" comes first: admitted ones stay, it stays out.
        let again = vec![
            point(&CALLS, "close", 12),
            point(&CALLS, "read", 6),
            point(&CALLS, "write", 8),
        ];
        let (kept, folded) = bound(&again, &mut admitted, 2);
        assert_eq!(folded, 1);
        let names: Vec<_> = kept.iter().map(|p| p.labels[0].1.as_str()).collect();
        assert_eq!(names, ["read", "write", OVERFLOW]);
    }

    /// Every name a sample line of the exposition can start with.
    fn exported_names() -> HashSet<String> {
        let mut names = HashSet::new();
        for desc in agent::ALL.iter().chain(results::ALL) {
            let name = desc.prometheus_name();
            if let Type::Histogram(_) = desc.ty {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name);
        }
        names
    }

    fn repo_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_grafana_dashboard_only_queries_exported_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(&repo_file("deploy/grafana/coral.json")).expect("valid JSON");
        assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
        let mut all = Vec::new();
        exprs(&dashboard["panels"], &mut all);
        assert!(all.len() > 20, "{} expressions", all.len());
        let known = exported_names();
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        for expr in &all {
            // A metric is named right before its selector: `name{...}`.
            let mut metrics = Vec::new();
            for (i, _) in expr.match_indices('{') {
                let before = &expr[..i];
                let start = before.rfind(|c| !ident(c)).map_or(0, |j| j + 1);
                if start < i {
                    metrics.push(&expr[start..i]);
                }
            }
            assert!(!metrics.is_empty(), "no metric in {expr}");
            for m in metrics {
                assert!(known.contains(m), "{m} (in {expr}) is not exported");
            }
        }
    }

    #[test]
    fn the_metrics_doc_lists_every_metric() {
        let doc = repo_file("docs/metrics.md");
        for desc in agent::ALL.iter().chain(results::ALL) {
            let name = desc.prometheus_name();
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md lacks {name}"
            );
        }
    }

    #[test]
    fn histograms_merge_bucket_by_bucket() {
        let mut a = Value::Histogram {
            buckets: vec![1, 2, 0],
            count: 3,
            sum: 1.5,
        };
        a.add(&Value::Histogram {
            buckets: vec![0, 1, 1],
            count: 2,
            sum: 2.0,
        });
        assert_eq!(
            a,
            Value::Histogram {
                buckets: vec![1, 3, 1],
                count: 5,
                sum: 3.5
            }
        );
    }
}
