//! proto <-> domain conversions. Requests are destructured whole, so a new proto
//! field fails to compile here until someone decides what it means.

use crate::capabilities::HostCapabilities;
use crate::config::{Limits, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS};
use crate::domain::{Kind, Spec, State, TargetFilter};
use crate::error::Error;
use crate::manager::event_log::{Record, unix_nanos};
use crate::manager::{CollectorView, KindStatus};
use crate::server::connections::ConnectionLimits;
use coral_proto::v1 as pb;
use std::time::{Duration, SystemTime};

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn opt_nanos(t: Option<SystemTime>) -> u64 {
    t.map_or(0, unix_nanos)
}

impl TryFrom<i32> for Kind {
    type Error = Error;

    fn try_from(v: i32) -> Result<Self, Error> {
        match pb::CollectorKind::try_from(v) {
            Ok(kind) => Kind::from_proto(kind)
                .ok_or_else(|| Error::InvalidArgument("collector kind is required".into())),
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown collector kind {v}; known: {}",
                Kind::names()
            ))),
        }
    }
}

impl From<State> for pb::CollectorState {
    fn from(s: State) -> Self {
        match s {
            State::Starting => pb::CollectorState::Starting,
            State::Running => pb::CollectorState::Running,
            State::Expired => pb::CollectorState::Expired,
            State::Stopped => pb::CollectorState::Stopped,
            State::Failed => pb::CollectorState::Failed,
        }
    }
}

impl TryFrom<pb::CollectorSpec> for Spec {
    type Error = Error;

    fn try_from(spec: pb::CollectorSpec) -> Result<Self, Error> {
        let pb::CollectorSpec {
            kind,
            duration_ns,
            filter,
            labels,
            export,
            config,
        } = spec;
        let kind = Kind::try_from(kind)?;
        let pb::TargetFilter {
            pids,
            cgroup,
            comm,
            container,
        } = filter.unwrap_or_default();
        let filter = TargetFilter {
            pids,
            cgroup: (!cgroup.is_empty()).then_some(cgroup),
            comm: (!comm.is_empty()).then_some(comm),
            container: (!container.is_empty()).then_some(container),
        };
        if let Some(config) = &config {
            let given = Kind::of_config(config);
            if given != kind {
                return Err(Error::InvalidArgument(format!(
                    "config is for {given} but the kind is {kind}"
                )));
            }
        }
        Ok(Spec {
            kind,
            duration: duration_ns.map(Duration::from_nanos),
            filter,
            labels: labels.into_iter().collect(),
            export,
            config,
        })
    }
}

impl From<&Spec> for pb::CollectorSpec {
    fn from(spec: &Spec) -> Self {
        pb::CollectorSpec {
            kind: pb::CollectorKind::from(spec.kind) as i32,
            duration_ns: spec.duration.map(nanos),
            filter: Some(pb::TargetFilter {
                pids: spec.filter.pids.clone(),
                cgroup: spec.filter.cgroup.clone().unwrap_or_default(),
                comm: spec.filter.comm.clone().unwrap_or_default(),
                container: spec.filter.container.clone().unwrap_or_default(),
            }),
            labels: spec.labels.clone().into_iter().collect(),
            export: spec.export,
            config: spec.config.clone(),
        }
    }
}

impl From<&CollectorView> for pb::CollectorInfo {
    fn from(v: &CollectorView) -> Self {
        pb::CollectorInfo {
            id: v.id.clone(),
            spec: Some(pb::CollectorSpec::from(&v.spec)),
            state: pb::CollectorState::from(v.status.state) as i32,
            created_unix_nano: unix_nanos(v.created),
            started_unix_nano: opt_nanos(v.status.started),
            deadline_unix_nano: opt_nanos(v.status.deadline),
            ended_unix_nano: opt_nanos(v.status.ended),
            error: v.status.error.clone().unwrap_or_default(),
            last_seq: v.log.last_seq,
            first_retained_seq: v.log.first_retained_seq,
            dropped_records: v.log.dropped,
            dropped_bytes: v.log.dropped_bytes,
            retained_bytes: v.log.retained_bytes,
            stream_subscribers: v.log.subscribers,
            bpf_program_ids: v.status.program_ids.clone(),
            kernel_lost: v.status.kernel_lost,
        }
    }
}

/// A record as clients see it, stamped with where it came from.
pub fn record(r: &Record, collector_id: &str, agent_id: &str, spec: &Spec) -> pb::Record {
    pb::Record {
        seq: r.seq,
        time_unix_nano: r.time_unix_nano,
        collector_id: collector_id.to_string(),
        agent_id: agent_id.to_string(),
        labels: spec.labels.clone().into_iter().collect(),
        r#final: r.last,
        payload: r.payload(),
    }
}

pub fn capabilities(
    agent_id: &str,
    caps: &HostCapabilities,
    limits: &Limits,
    connections: &ConnectionLimits,
    kinds: &[KindStatus],
    retained_bytes: u64,
) -> pb::Capabilities {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    pb::Capabilities {
        agent_id: agent_id.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: caps.kernel_release.clone(),
        arch: caps.arch.clone(),
        btf: caps.btf,
        cap_bpf: caps.cap_bpf,
        cap_perfmon: caps.cap_perfmon,
        cap_sys_admin: caps.cap_sys_admin,
        cap_sys_resource: caps.cap_sys_resource,
        perf_event_paranoid: caps.perf_event_paranoid,
        tracefs_path: path(&caps.tracefs_path),
        tracefs_mounted_by_agent: caps.tracefs_mounted_by_agent,
        kprobes: caps.kprobes,
        fentry: caps.fentry,
        tp_btf: caps.tp_btf,
        uprobes: caps.uprobes,
        raw_tracepoints: caps.raw_tracepoints,
        ringbuf: caps.ringbuf,
        perf_events: caps.perf_events,
        cgroup2_path: path(&caps.cgroup2_path),
        kinds: kinds
            .iter()
            .map(|k| pb::KindAvailability {
                kind: pb::CollectorKind::from(k.kind) as i32,
                available: k.available,
                reason: k.reason.clone(),
                hooks: k.hooks.clone(),
            })
            .collect(),
        limits: Some(pb::Limits {
            max_running_collectors: limits.max_running,
            max_duration_ns: nanos(limits.max_duration),
            default_duration_ns: nanos(limits.default_duration),
            max_records_per_collector: limits.max_records as u64,
            retention_ns: nanos(limits.retention),
            max_filter_pids: limits.max_filter_pids as u32,
            max_profile_frequency_hz: limits.max_profile_frequency_hz,
            max_collector_bytes: limits.max_collector_bytes,
            max_retained_bytes: limits.max_retained_bytes,
            max_ended_collectors: limits.max_ended as u32,
            max_page_bytes: limits.max_page_bytes,
            max_labels: MAX_LABELS as u32,
            max_label_key_bytes: MAX_LABEL_KEY_BYTES as u32,
            max_label_value_bytes: MAX_LABEL_VALUE_BYTES as u32,
            stop_timeout_ns: nanos(limits.stop_timeout),
            max_connections: u32::try_from(connections.max_connections).unwrap_or(u32::MAX),
            preface_timeout_ns: nanos(connections.preface_timeout),
        }),
        retained_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_spec() -> pb::CollectorSpec {
        pb::CollectorSpec {
            kind: pb::CollectorKind::SyscallStats as i32,
            duration_ns: Some(2_000_000_000),
            filter: Some(pb::TargetFilter {
                pids: vec![42],
                cgroup: String::new(),
                comm: "worker".into(),
                container: String::new(),
            }),
            labels: [("service".to_string(), "api".to_string())].into(),
            export: true,
            config: Some(pb::collector_spec::Config::SyscallStats(
                pb::SyscallStatsConfig {
                    interval_ns: 500_000_000,
                    per_process: true,
                    latency: pb::SyscallLatency::Off as i32,
                },
            )),
        }
    }

    #[test]
    fn spec_round_trips() {
        let spec = Spec::try_from(pb_spec()).unwrap();
        assert_eq!(spec.kind, Kind::SyscallStats);
        assert_eq!(spec.duration, Some(Duration::from_secs(2)));
        assert_eq!(spec.filter.pids, [42]);
        assert_eq!(spec.filter.cgroup, None);
        assert_eq!(spec.filter.comm.as_deref(), Some("worker"));
        assert!(spec.export);
        assert_eq!(
            spec.config,
            Some(pb::collector_spec::Config::SyscallStats(
                pb::SyscallStatsConfig {
                    interval_ns: 500_000_000,
                    per_process: true,
                    latency: pb::SyscallLatency::Off as i32,
                }
            ))
        );
        assert_eq!(pb::CollectorSpec::from(&spec), pb_spec());
    }

    #[test]
    fn unknown_and_missing_kinds_are_invalid() {
        for kind in [0, 99] {
            let err = Spec::try_from(pb::CollectorSpec { kind, ..pb_spec() }).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
    }

    #[test]
    fn config_for_another_kind_is_invalid() {
        let err = Spec::try_from(pb::CollectorSpec {
            kind: pb::CollectorKind::TcpMetrics as i32,
            ..pb_spec()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("config is for syscall-stats"),
            "{err}"
        );
    }
}
