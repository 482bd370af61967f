//! The collector kinds, declared once.
//!
//! Each line of the table below names a kind's domain variant, its
//! `CollectorKind` value, its `CollectorSpec.config` variant, the
//! `Record.payload` variants it produces and its factory. Everything else is
//! generated from it: [`Kind`] and [`Kind::ALL`], the proto conversions, the
//! kind of a config or a payload, and the factories the agent starts with.
//! The generated matches over the proto enums have no `_` arm, so a kind (or
//! a config or payload variant) added to the proto and not to this table
//! does not build. Names come from `CollectorKind::name` in coral-proto,
//! shared with the CLI.

use crate::collectors::CollectorFactory;
use crate::domain::{KindConfig, Payload};
use coral_proto::v1 as pb;
use std::fmt;

macro_rules! kinds {
    ($(
        $(#[doc = $doc:literal])*
        $kind:ident {
            proto: $proto:ident,
            config: $config:ident,
            payloads: [$($payload:ident),+ $(,)?],
            factory: $($factory:ident)::+ $(,)?
        }
    ),+ $(,)?) => {
        /// A collector kind the API knows about.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($(#[doc = $doc])* $kind,)+
        }

        impl Kind {
            /// Every kind, in the table's order.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),+];

            /// `None` for `COLLECTOR_KIND_UNSPECIFIED`.
            pub fn from_proto(kind: pb::CollectorKind) -> Option<Kind> {
                match kind {
                    pb::CollectorKind::Unspecified => None,
                    $(pb::CollectorKind::$proto => Some(Kind::$kind),)+
                }
            }

            /// The kind a per-kind config belongs to.
            pub fn of_config(config: &KindConfig) -> Kind {
                match config {
                    $(KindConfig::$config(_) => Kind::$kind,)+
                }
            }

            /// The kind that produces a payload.
            pub fn of_payload(payload: &Payload) -> Kind {
                match payload {
                    $($(Payload::$payload(_))|+ => Kind::$kind,)+
                }
            }
        }

        impl From<Kind> for pb::CollectorKind {
            fn from(kind: Kind) -> Self {
                match kind {
                    $(Kind::$kind => pb::CollectorKind::$proto,)+
                }
            }
        }

        /// One factory per kind, as this agent was built: the real ones, or
        /// (without BPF support) ones that say so.
        pub fn factories() -> Vec<Box<dyn CollectorFactory>> {
            #[cfg(bpf)]
            {
                use crate::collectors::*;
                vec![$(Box::new($($factory)::+) as Box<dyn CollectorFactory>),+]
            }
            #[cfg(not(bpf))]
            {
                Kind::ALL
                    .iter()
                    .map(|&kind| Box::new(crate::collectors::WithoutBpf(kind)) as Box<dyn CollectorFactory>)
                    .collect()
            }
        }
    };
}

kinds! {
    /// Count, errors and latency per syscall.
    SyscallStats {
        proto: SyscallStats,
        config: SyscallStats,
        payloads: [SyscallStats],
        factory: syscall_stats::SyscallStatsFactory,
    },
    /// HTTP/1.x requests per route and status.
    HttpLatency {
        proto: HttpLatency,
        config: HttpLatency,
        payloads: [HttpRequest, HttpStats],
        factory: http_latency::HttpLatencyFactory,
    },
    /// Sampled, symbolized CPU stacks.
    CpuProfile {
        proto: CpuProfile,
        config: CpuProfile,
        payloads: [CpuProfile],
        factory: cpu_profile::CpuProfileFactory,
    },
    /// TCP connection lifecycle, RTT, retransmits, resets.
    TcpMetrics {
        proto: TcpMetrics,
        config: TcpMetrics,
        payloads: [TcpConnection, TcpStats],
        factory: tcp_metrics::TcpMetricsFactory,
    },
    /// Execs and process exits, with argv, exit status and container.
    ProcessEvents {
        proto: ProcessEvents,
        config: ProcessEvents,
        payloads: [ProcessEvent, ProcessStats],
        factory: process_events::ProcessEventsFactory,
    },
    /// Memory per process and cgroup, time to the limit, OOM kills.
    Memory {
        proto: Memory,
        config: Memory,
        payloads: [MemoryStats, OomKill],
        factory: memory::MemoryFactory,
    },
    /// Opens, reads, writes and fsyncs per file and process; slow I/O and failed opens.
    FileIo {
        proto: FileIo,
        config: FileIo,
        payloads: [FileIoEvent, FileIoStats],
        factory: file_io::FileIoFactory,
    },
    /// DNS queries and responses: names, rcodes, answers, latency.
    Dns {
        proto: Dns,
        config: Dns,
        payloads: [DnsQuery, DnsStats],
        factory: dns::DnsFactory,
    },
    /// Credential and privilege events: setuid family, capset, setuid execs, ptrace, modules, bpf, mounts.
    Security {
        proto: Security,
        config: Security,
        payloads: [SecurityEvent, SecurityStats],
        factory: security::SecurityFactory,
    },
}

/// What the kernel side could not hand over (ring buffer or map full), as
/// a payload counts it; `None` for payloads that do not count losses (one
/// discrete event). Exhaustive: a new payload says whether it counts them.
pub fn kernel_losses(payload: &Payload) -> Option<u64> {
    match payload {
        Payload::SyscallStats(s) => Some(s.dropped),
        Payload::TcpStats(s) => Some(s.dropped_events),
        Payload::HttpStats(s) => Some(s.dropped_events),
        Payload::CpuProfile(p) => Some(p.lost_samples),
        Payload::ProcessStats(s) => Some(s.dropped_events),
        Payload::MemoryStats(s) => Some(s.dropped_events),
        Payload::FileIoStats(s) => Some(s.dropped_events + s.dropped_files),
        Payload::DnsStats(s) => Some(s.dropped_events + s.dropped_inflight),
        Payload::SecurityStats(s) => Some(s.dropped_events),
        Payload::TcpConnection(_)
        | Payload::HttpRequest(_)
        | Payload::ProcessEvent(_)
        | Payload::OomKill(_)
        | Payload::FileIoEvent(_)
        | Payload::DnsQuery(_)
        | Payload::SecurityEvent(_) => None,
    }
}

impl Kind {
    /// The CLI's spelling, used in messages too.
    pub fn as_str(self) -> &'static str {
        pb::CollectorKind::from(self).name()
    }

    /// The kind named `name` (`syscall-stats`).
    pub fn from_name(name: &str) -> Option<Kind> {
        pb::CollectorKind::from_name(name).and_then(Kind::from_proto)
    }

    /// "syscall-stats, http-latency, …" for messages.
    pub fn names() -> String {
        let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        names.join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_converts_both_ways_and_has_one_factory() {
        let factories = factories();
        assert_eq!(factories.len(), Kind::ALL.len());
        for (&kind, factory) in Kind::ALL.iter().zip(&factories) {
            assert_eq!(factory.kind(), kind);
            assert_eq!(Kind::from_proto(kind.into()), Some(kind));
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::from_proto(pb::CollectorKind::Unspecified), None);
        assert_eq!(Kind::from_name("unspecified"), None);
    }
}
