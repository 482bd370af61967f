//! Property-based fuzzing of what a client controls: arbitrary bytes decoded
//! as requests, and arbitrary field values through conversion and the
//! manager's validation with the real collector kinds. Bounded (a few hundred
//! cases each) so it runs in every `cargo test`; the property is "never
//! panics, always answers with a status code a client can act on".

use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::domain::{Kind, Spec};
use crate::error::Error;
use crate::manager::Manager;
use coral_proto::v1 as pb;
use pb::collector_spec::Config;
use proptest::prelude::*;
use prost::Message;
use tonic::Code;

const CASES: u32 = 384;

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        // Short and printable: most likely to get deep into validation.
        "[a-z0-9/._-]{0,20}",
        // Anything at all, including NULs, control characters and long runs.
        proptest::collection::vec(any::<char>(), 0..64).prop_map(|c| c.into_iter().collect()),
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1u64..1_000_000_000_000, any::<u64>()]
}

/// Arbitrary configs of `kind`: exhaustive, so a new kind needs a generator.
fn any_config_of(kind: Kind) -> BoxedStrategy<Config> {
    match kind {
        Kind::SyscallStats => (any_u64(), any::<bool>(), -1i32..4)
            .prop_map(|(interval_ns, per_process, latency)| {
                Config::SyscallStats(pb::SyscallStatsConfig {
                    interval_ns,
                    per_process,
                    latency,
                })
            })
            .boxed(),
        Kind::HttpLatency => (
            any_u64(),
            any::<bool>(),
            any::<u32>(),
            -1i32..4,
            any::<u32>(),
        )
            .prop_map(
                |(interval_ns, client_side, max_routes, tls, max_request_records_per_sec)| {
                    Config::HttpLatency(pb::HttpLatencyConfig {
                        interval_ns,
                        client_side,
                        max_routes,
                        tls,
                        max_request_records_per_sec,
                    })
                },
            )
            .boxed(),
        Kind::CpuProfile => (any::<u32>(), any::<bool>())
            .prop_map(|(frequency_hz, include_idle)| {
                Config::CpuProfile(pb::CpuProfileConfig {
                    frequency_hz,
                    include_idle,
                })
            })
            .boxed(),
        Kind::TcpMetrics => (
            any_u64(),
            proptest::collection::vec(any::<u32>(), 0..80),
            proptest::collection::vec(any::<u32>(), 0..80),
            prop_oneof![
                any_string(),
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,3}",
                "[0-9a-f:]{2,30}/[0-9]{1,3}",
            ],
            any::<u32>(),
        )
            .prop_map(
                |(interval_ns, local_ports, remote_ports, remote_prefix, rtt_sample_every)| {
                    Config::TcpMetrics(pb::TcpMetricsConfig {
                        interval_ns,
                        local_ports,
                        remote_ports,
                        remote_prefix,
                        rtt_sample_every,
                    })
                },
            )
            .boxed(),
        Kind::ProcessEvents => (
            any_u64(),
            any::<bool>(),
            any_u64(),
            any::<u32>(),
            any::<u32>(),
            prop_oneof![Just(0u32), Just(4096u32), any::<u32>()],
        )
            .prop_map(
                |(interval_ns, no_follow, short_lived_ns, max_args, max_arg_bytes, ring)| {
                    Config::ProcessEvents(pb::ProcessEventsConfig {
                        interval_ns,
                        no_follow,
                        short_lived_ns,
                        max_args,
                        max_arg_bytes,
                        ring_buffer_bytes: ring,
                    })
                },
            )
            .boxed(),
        Kind::Memory => (any_u64(), any_u64(), any_u64(), any_u64(), any::<u32>())
            .prop_map(
                |(interval_ns, window_ns, threshold_bytes, horizon_ns, max_processes)| {
                    Config::Memory(pb::MemoryConfig {
                        interval_ns,
                        window_ns,
                        threshold_bytes,
                        horizon_ns,
                        max_processes,
                    })
                },
            )
            .boxed(),
        Kind::FileIo => (any_u64(), any_u64(), any::<u32>(), any::<u32>())
            .prop_map(|(interval_ns, slow_ns, max_files, top)| {
                Config::FileIo(pb::FileIoConfig {
                    interval_ns,
                    slow_ns,
                    max_files,
                    top,
                })
            })
            .boxed(),
        Kind::Dns => (
            any_u64(),
            proptest::collection::vec(any::<u32>(), 0..12),
            any_u64(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(interval_ns, ports, timeout_ns, max_names, max_inflight)| {
                    Config::Dns(pb::DnsConfig {
                        interval_ns,
                        ports,
                        timeout_ns,
                        max_names,
                        max_inflight,
                    })
                },
            )
            .boxed(),
        Kind::Security => (
            any_u64(),
            proptest::collection::vec(
                prop_oneof![
                    Just("default".to_string()),
                    Just("none".to_string()),
                    Just("chroot".to_string()),
                    Just("setuid".to_string()),
                    "[a-z_0-9]{0,20}",
                ],
                0..4,
            ),
        )
            .prop_map(|(interval_ns, syscalls)| {
                Config::Security(pb::SecurityConfig {
                    interval_ns,
                    syscalls,
                })
            })
            .boxed(),
    }
}

/// No config, or one of any kind (also one that does not match the spec's).
fn any_config() -> impl Strategy<Value = Option<Config>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(Kind::ALL)
            .prop_flat_map(any_config_of)
            .prop_map(Some),
    ]
}

fn any_spec() -> impl Strategy<Value = pb::CollectorSpec> {
    (
        prop_oneof![0i32..=Kind::ALL.len() as i32 + 1, any::<i32>()],
        proptest::option::of(any_u64()),
        proptest::option::of((
            proptest::collection::vec(prop_oneof![Just(0u32), any::<u32>()], 0..100),
            any_string(),
            any_string(),
            prop_oneof![Just(String::new()), "[0-9a-f]{1,70}", any_string()],
        )),
        proptest::collection::btree_map(any_string(), any_string(), 0..8),
        any_config(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, duration_ns, filter, labels, config, export)| pb::CollectorSpec {
                kind,
                duration_ns,
                filter: filter.map(|(pids, cgroup, comm, container)| pb::TargetFilter {
                    pids,
                    cgroup,
                    comm,
                    container,
                }),
                labels: labels.into_iter().collect(),
                export,
                config,
            },
        )
}

/// The codes a refused start may carry: each one means something to a
/// client. Nothing here can load BPF (the capabilities say the node has no
/// privileges), so every well-formed spec ends as "unavailable".
const START_CODES: [Code; 3] = [
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

struct Fixture {
    rt: tokio::runtime::Runtime,
    manager: Manager,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let manager = rt.block_on(async {
            Manager::new(
                Limits::default(),
                HostCapabilities::default(),
                crate::kinds::factories(),
            )
        });
        Self { rt, manager }
    }

    /// Conversion then validation, as `StartCollector` does them.
    fn start(&self, spec: pb::CollectorSpec) -> Result<(), Code> {
        let spec = Spec::try_from(spec).map_err(|e| e.code())?;
        self.rt
            .block_on(self.manager.start(spec))
            .map(drop)
            .map_err(|e: Error| e.code())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_specs_are_refused_with_a_meaningful_code(spec in any_spec()) {
        let fixture = Fixture::new();
        match fixture.start(spec) {
            Ok(()) => prop_assert!(false, "a start succeeded on a node without privileges"),
            Err(code) => prop_assert!(START_CODES.contains(&code), "{code:?}"),
        }
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let fixture = Fixture::new();
        if let Ok(pb::StartCollectorRequest { spec: Some(spec) }) =
            pb::StartCollectorRequest::decode(bytes.as_slice())
        {
            let code = fixture.start(spec).unwrap_err();
            prop_assert!(START_CODES.contains(&code), "{code:?}");
        }
        // The other requests a client can send decode without panicking too.
        let _ = pb::StreamEventsRequest::decode(bytes.as_slice());
        let _ = pb::GetEventsRequest::decode(bytes.as_slice());
        let _ = pb::ExtendCollectorRequest::decode(bytes.as_slice());
    }

    #[test]
    fn encoded_specs_survive_a_round_trip_and_bit_flips(spec in any_spec(), flip in any::<usize>()) {
        let fixture = Fixture::new();
        let mut bytes = pb::StartCollectorRequest { spec: Some(spec) }.encode_to_vec();
        if !bytes.is_empty() {
            let i = flip % bytes.len();
            bytes[i] ^= 1 << (flip % 8);
        }
        if let Ok(pb::StartCollectorRequest { spec: Some(spec) }) =
            pb::StartCollectorRequest::decode(bytes.as_slice())
        {
            let code = fixture.start(spec).unwrap_err();
            prop_assert!(START_CODES.contains(&code), "{code:?}");
        }
    }

    #[test]
    fn certificate_subjects_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = super::tls::cert_subject(&bytes);
    }

    #[test]
    fn token_files_never_panic(text in any_string()) {
        let _ = super::auth::Tokens::parse(&text);
    }
}
