//! Collector kind names, as the CLI spells them and every message says them.
//! Defined here, next to the generated enum, so the agent, the CLI and any
//! other client share one spelling; the match is exhaustive, so a new
//! `CollectorKind` value does not build until it has a name.

use crate::v1::CollectorKind;

impl CollectorKind {
    /// The kind's name (`syscall-stats`), or `unspecified`.
    pub fn name(self) -> &'static str {
        match self {
            CollectorKind::Unspecified => "unspecified",
            CollectorKind::SyscallStats => "syscall-stats",
            CollectorKind::HttpLatency => "http-latency",
            CollectorKind::CpuProfile => "cpu-profile",
            CollectorKind::TcpMetrics => "tcp-metrics",
            CollectorKind::ProcessEvents => "process-events",
            CollectorKind::Memory => "memory",
            CollectorKind::FileIo => "file-io",
            CollectorKind::Dns => "dns",
            CollectorKind::Security => "security",
        }
    }

    /// The kind named `name`; never `Unspecified`.
    pub fn from_name(name: &str) -> Option<CollectorKind> {
        let kind = CollectorKind::from_str_name(&format!(
            "COLLECTOR_KIND_{}",
            name.to_ascii_uppercase().replace('-', "_")
        ))?;
        (kind != CollectorKind::Unspecified && kind.name() == name).then_some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_proto_names() {
        let mut n = 1;
        while let Ok(kind) = CollectorKind::try_from(n) {
            assert_eq!(CollectorKind::from_name(kind.name()), Some(kind));
            assert_eq!(
                kind.as_str_name(),
                format!(
                    "COLLECTOR_KIND_{}",
                    kind.name().to_uppercase().replace('-', "_")
                ),
                "the name is the proto value's, in kebab case"
            );
            n += 1;
        }
        assert!(n > 1);
        assert_eq!(CollectorKind::from_name("unspecified"), None);
        assert_eq!(CollectorKind::from_name("SYSCALL-STATS"), None);
        assert_eq!(CollectorKind::from_name("syscall_stats"), None);
    }
}
