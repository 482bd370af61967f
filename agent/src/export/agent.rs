//! The agent's own metrics: collectors by kind and state, starts, failures
//! and refusals, what each collector's event log holds and lost, its stream
//! clients and their gaps, the agent's process resources, and what each
//! collector's BPF programs and maps cost.

use super::bpf::{self, Objects};
use super::{Bounds, Desc, Exporter, Families, Labels, Merge, Type, Unit, Value, collector_labels};
use crate::domain::{Kind, State};
use crate::manager::CollectorView;
use crate::manager::stats::START_BUCKETS;
use std::collections::HashSet;
use std::time::UNIX_EPOCH;

const fn counter(name: &'static str, help: &'static str, unit: Unit) -> Desc {
    Desc {
        name,
        help,
        unit,
        ty: Type::Counter,
        merge: Merge::Sum,
    }
}

const fn gauge(name: &'static str, help: &'static str, unit: Unit) -> Desc {
    Desc {
        name,
        help,
        unit,
        ty: Type::Gauge,
        merge: Merge::Sum,
    }
}

pub static AGENT_INFO: Desc = gauge(
    "coral.agent.info",
    "Always 1: the agent's id and version as labels.",
    Unit::Count("1"),
);
pub static COLLECTORS: Desc = gauge(
    "coral.collectors",
    "Collectors in the registry, by kind and state (ended ones stay for the retention period).",
    Unit::Count("{collector}"),
);
pub static MAX_RUNNING: Desc = gauge(
    "coral.collectors.limit",
    "Collectors that may be starting or running at once (--max-running).",
    Unit::Count("{collector}"),
);
pub static STARTS: Desc = counter(
    "coral.collector.starts",
    "Collectors that started (reached Running), by kind.",
    Unit::Count("{collector}"),
);
pub static FAILURES: Desc = counter(
    "coral.collector.failures",
    "Collectors that ended Failed, by kind and phase: start (load, attach, filter) or run (a read error, a panic).",
    Unit::Count("{collector}"),
);
pub static REFUSALS: Desc = counter(
    "coral.api.refusals",
    "API calls refused, by gRPC status code.",
    Unit::Count("{call}"),
);
pub static START_DURATION: Desc = Desc {
    name: "coral.collector.start.duration",
    help: "Time from an accepted StartCollector to the collector running (programs loaded and attached) or failing, by kind.",
    unit: Unit::Seconds,
    ty: Type::Histogram(Bounds::Fixed(&START_BUCKETS)),
    merge: Merge::Sum,
};
pub static RECORDS: Desc = counter(
    "coral.collector.records",
    "Records a collector emitted (its last seq).",
    Unit::Count("{record}"),
);
pub static RECORDS_DROPPED: Desc = counter(
    "coral.collector.records.dropped",
    "Records a collector's event log dropped for its record or byte budget, or the agent-wide byte budget.",
    Unit::Count("{record}"),
);
pub static RETAINED: Desc = gauge(
    "coral.collector.retained",
    "Bytes of records a collector's event log retains (encoded, plus a fixed cost each).",
    Unit::Bytes,
);
pub static STREAM_CLIENTS: Desc = gauge(
    "coral.collector.stream.clients",
    "StreamEvents clients following a collector now.",
    Unit::Count("{client}"),
);
pub static STREAM_GAPS: Desc = counter(
    "coral.collector.stream.gaps",
    "Gaps reported to StreamEvents clients (records that left retention before the client read them).",
    Unit::Count("{gap}"),
);
pub static STREAM_GAP_RECORDS: Desc = counter(
    "coral.collector.stream.gap_records",
    "Records StreamEvents clients missed, in those gaps.",
    Unit::Count("{record}"),
);
pub static EXPORT_OVERFLOW: Desc = gauge(
    "coral.collector.export.overflow",
    "Result label sets of an exported collector beyond --metrics-max-series, folded into the {overflow} series (or left out, for gauges) at this scrape.",
    Unit::Count("{series}"),
);
pub static AGENT_RETAINED: Desc = gauge(
    "coral.retained",
    "Bytes of records all collectors retain together.",
    Unit::Bytes,
);
pub static AGENT_RETAINED_LIMIT: Desc = gauge(
    "coral.retained.limit",
    "The agent-wide budget of retained record bytes (--max-retained-bytes).",
    Unit::Bytes,
);
pub static PROCESS_CPU: Desc = counter(
    "process.cpu",
    "User and system CPU time the agent used.",
    Unit::Seconds,
);
pub static PROCESS_RSS: Desc = gauge(
    "process.resident_memory",
    "The agent's resident memory (VmRSS).",
    Unit::Bytes,
);
pub static PROCESS_VMS: Desc = gauge(
    "process.virtual_memory",
    "The agent's virtual memory size (VmSize).",
    Unit::Bytes,
);
pub static PROCESS_FDS: Desc = gauge(
    "process.open_fds",
    "File descriptors the agent has open (BPF programs, maps and links among them).",
    Unit::Count("{fd}"),
);
pub static PROCESS_MAX_FDS: Desc = gauge(
    "process.max_fds",
    "The agent's open file descriptor limit (soft RLIMIT_NOFILE).",
    Unit::Count("{fd}"),
);
pub static PROCESS_THREADS: Desc = gauge(
    "process.threads",
    "Threads of the agent.",
    Unit::Count("{thread}"),
);
pub static PROCESS_START: Desc = gauge(
    "process.start_time",
    "When the agent started, seconds since the Unix epoch.",
    Unit::Seconds,
);
pub static BPF_STATS_ENABLED: Desc = gauge(
    "coral.bpf.stats_enabled",
    "1 while kernel BPF run-time statistics are on (kernel.bpf_stats_enabled, by anyone), else 0.",
    Unit::Count("1"),
);
pub static BPF_RUNS: Desc = counter(
    "coral.bpf.program.runs",
    "Runs of a collector's BPF program (--bpf-stats: counted while kernel BPF statistics are on).",
    Unit::Count("{run}"),
);
pub static BPF_RUN_TIME: Desc = counter(
    "coral.bpf.program.run_time",
    "Time a collector's BPF program ran (--bpf-stats: counted while kernel BPF statistics are on).",
    Unit::Seconds,
);
pub static BPF_PROGRAM_MEMORY: Desc = gauge(
    "coral.bpf.program.memory",
    "Kernel memory charged for a collector's BPF program (fdinfo memlock).",
    Unit::Bytes,
);
pub static BPF_MAP_MEMORY: Desc = gauge(
    "coral.bpf.map.memory",
    "Kernel memory charged for the BPF maps a collector's programs use (fdinfo memlock, summed).",
    Unit::Bytes,
);
pub static BPF_MAPS: Desc = gauge(
    "coral.bpf.maps",
    "BPF maps a collector's programs use.",
    Unit::Count("{map}"),
);

/// Every metric of this module, for the docs test and the dashboard test.
pub static ALL: &[&Desc] = &[
    &AGENT_INFO,
    &COLLECTORS,
    &MAX_RUNNING,
    &STARTS,
    &FAILURES,
    &REFUSALS,
    &START_DURATION,
    &RECORDS,
    &RECORDS_DROPPED,
    &RETAINED,
    &STREAM_CLIENTS,
    &STREAM_GAPS,
    &STREAM_GAP_RECORDS,
    &EXPORT_OVERFLOW,
    &AGENT_RETAINED,
    &AGENT_RETAINED_LIMIT,
    &PROCESS_CPU,
    &PROCESS_RSS,
    &PROCESS_VMS,
    &PROCESS_FDS,
    &PROCESS_MAX_FDS,
    &PROCESS_THREADS,
    &PROCESS_START,
    &BPF_STATS_ENABLED,
    &BPF_RUNS,
    &BPF_RUN_TIME,
    &BPF_PROGRAM_MEMORY,
    &BPF_MAP_MEMORY,
    &BPF_MAPS,
];

/// The label value of a state.
fn state_name(state: State) -> &'static str {
    match state {
        State::Starting => "starting",
        State::Running => "running",
        State::Expired => "expired",
        State::Stopped => "stopped",
        State::Failed => "failed",
    }
}

const STATES: [State; 5] = [
    State::Starting,
    State::Running,
    State::Expired,
    State::Stopped,
    State::Failed,
];

fn kind_label(kind: Kind) -> Labels {
    vec![("collector.kind".into(), kind.as_str().to_string())]
}

fn with(mut labels: Labels, key: &'static str, value: impl ToString) -> Labels {
    labels.push((key.into(), value.to_string()));
    labels
}

pub(super) fn gather(exporter: &Exporter, collectors: &[CollectorView], out: &mut Families) {
    let manager = exporter.manager();
    let agent_start = Some(exporter.started());
    out.push(
        &AGENT_INFO,
        vec![
            ("agent.id".into(), manager.agent_id().to_string()),
            ("version".into(), env!("CARGO_PKG_VERSION").to_string()),
        ],
        Value::Int(1),
        None,
    );
    for &kind in Kind::ALL {
        for state in STATES {
            let n = collectors
                .iter()
                .filter(|c| c.spec.kind == kind && c.status.state == state)
                .count();
            out.push(
                &COLLECTORS,
                with(kind_label(kind), "state", state_name(state)),
                Value::Int(n as u64),
                None,
            );
        }
    }
    out.push(
        &MAX_RUNNING,
        Vec::new(),
        Value::Int(manager.limits().max_running.into()),
        None,
    );
    for (kind, counts) in manager.stats().snapshot() {
        out.push(
            &STARTS,
            kind_label(kind),
            Value::Int(counts.started),
            agent_start,
        );
        for (phase, n) in [
            ("start", counts.start_failures),
            ("run", counts.run_failures),
        ] {
            out.push(
                &FAILURES,
                with(kind_label(kind), "phase", phase),
                Value::Int(n),
                agent_start,
            );
        }
        let h = counts.start_latency;
        out.push(
            &START_DURATION,
            kind_label(kind),
            Value::Histogram {
                buckets: if h.buckets.is_empty() {
                    vec![0; START_BUCKETS.len() + 1]
                } else {
                    h.buckets
                },
                count: h.count,
                sum: h.sum_seconds,
            },
            agent_start,
        );
    }
    for (code, n) in crate::error::refusals() {
        out.push(
            &REFUSALS,
            vec![("code".into(), code_name(code).to_string())],
            Value::Int(n),
            agent_start,
        );
    }
    out.push(
        &AGENT_RETAINED,
        Vec::new(),
        Value::Int(manager.retained_bytes()),
        None,
    );
    out.push(
        &AGENT_RETAINED_LIMIT,
        Vec::new(),
        Value::Int(manager.limits().max_retained_bytes),
        None,
    );
    process(exporter, out);

    let objects = bpf::read();
    if let Some(on) = bpf::stats_enabled() {
        out.push(&BPF_STATS_ENABLED, Vec::new(), Value::Int(on.into()), None);
    }
    for view in collectors {
        let labels = collector_labels(view);
        let start = view.status.started.or(Some(view.created));
        let log = &view.log;
        for (desc, n) in [
            (&RECORDS, log.last_seq),
            (&RECORDS_DROPPED, log.dropped),
            (&STREAM_GAPS, log.stream_gaps),
            (&STREAM_GAP_RECORDS, log.stream_gap_records),
        ] {
            out.push(desc, labels.clone(), Value::Int(n), start);
        }
        out.push(
            &RETAINED,
            labels.clone(),
            Value::Int(log.retained_bytes),
            None,
        );
        out.push(
            &STREAM_CLIENTS,
            labels.clone(),
            Value::Int(log.subscribers.into()),
            None,
        );
        bpf_cost(exporter, view, &labels, &objects, out);
    }
}

/// The name grpc uses for a code: `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> String {
    // tonic's Debug is the variant name (`InvalidArgument`).
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn process(exporter: &Exporter, out: &mut Families) {
    let started = exporter.started();
    out.push(
        &PROCESS_START,
        Vec::new(),
        Value::Float(
            started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        ),
        None,
    );
    let Some(p) = super::process::read() else {
        return;
    };
    out.push(
        &PROCESS_CPU,
        Vec::new(),
        Value::Float(p.cpu_seconds),
        Some(started),
    );
    out.push(&PROCESS_RSS, Vec::new(), Value::Int(p.resident_bytes), None);
    out.push(&PROCESS_VMS, Vec::new(), Value::Int(p.virtual_bytes), None);
    out.push(&PROCESS_FDS, Vec::new(), Value::Int(p.open_fds), None);
    if let Some(max) = p.max_fds {
        out.push(&PROCESS_MAX_FDS, Vec::new(), Value::Int(max), None);
    }
    out.push(&PROCESS_THREADS, Vec::new(), Value::Int(p.threads), None);
}

/// A live collector's programs (run stats with `--bpf-stats`, memory) and
/// the maps they use.
fn bpf_cost(
    exporter: &Exporter,
    view: &CollectorView,
    labels: &Labels,
    objects: &Objects,
    out: &mut Families,
) {
    if view.status.program_ids.is_empty() {
        return;
    }
    let start = view.status.started;
    let mut maps = HashSet::new();
    for id in &view.status.program_ids {
        let Some(prog) = objects.programs.get(id) else {
            continue;
        };
        maps.extend(prog.map_ids.iter().copied());
        let labels = with(
            with(labels.clone(), "bpf.program.id", id),
            "bpf.program.name",
            &prog.name,
        );
        if exporter.options().bpf_stats {
            out.push(&BPF_RUNS, labels.clone(), Value::Int(prog.run_count), start);
            out.push(
                &BPF_RUN_TIME,
                labels.clone(),
                Value::Float(prog.run_time_ns as f64 / 1e9),
                start,
            );
        }
        out.push(&BPF_PROGRAM_MEMORY, labels, Value::Int(prog.memlock), None);
    }
    let memory: u64 = maps
        .iter()
        .filter_map(|id| objects.maps.get(id))
        .map(|m| m.memlock)
        .sum();
    out.push(&BPF_MAP_MEMORY, labels.clone(), Value::Int(memory), None);
    out.push(
        &BPF_MAPS,
        labels.clone(),
        Value::Int(maps.len() as u64),
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn every_metric_name_is_unique_across_the_agent_and_results() {
        let mut seen = HashSet::new();
        for desc in ALL.iter().chain(super::super::results::ALL) {
            assert!(seen.insert(desc.prometheus_name()), "{} twice", desc.name);
        }
    }
}
