//! The lifecycle with a test collector: no kernel involved, so these test the
//! manager alone (the kernel path is covered by tests/ end to end).

use super::*;
use crate::domain::{Payload, TargetFilter};
use crate::testing::TestFactory;
use std::sync::atomic::Ordering;

fn limits() -> Limits {
    Limits {
        max_running: 2,
        max_duration: Duration::from_secs(10),
        default_duration: Duration::from_secs(5),
        max_records: 5,
        retention: Duration::from_millis(200),
        max_filter_pids: 3,
        max_profile_frequency_hz: 1000,
        ..Limits::default()
    }
}

fn manager(factory: TestFactory) -> Manager {
    Manager::new(
        limits(),
        HostCapabilities::default(),
        vec![Box::new(factory)],
    )
}

fn spec(duration: Option<Duration>) -> Spec {
    Spec {
        kind: Kind::SyscallStats,
        duration,
        filter: TargetFilter {
            pids: vec![1],
            ..Default::default()
        },
        labels: Default::default(),
        export: false,
        config: None,
    }
}

#[tokio::test]
async fn start_runs_and_stop_detaches_then_records_final() {
    let factory = TestFactory::default();
    let m = manager(factory.clone());
    let started = m.start(spec(None)).await.unwrap();
    assert_eq!(started.view.status.state, State::Running);
    assert_eq!(started.view.status.program_ids, [7, 8]);
    assert!(started.warnings.is_empty());
    let id = started.view.id;

    tokio::time::sleep(Duration::from_millis(70)).await;
    let view = m.stop(&id).await.unwrap();
    assert_eq!(view.status.state, State::Stopped);
    assert!(view.status.program_ids.is_empty());
    assert!(view.status.ended.is_some());
    assert_eq!(factory.live.load(Ordering::SeqCst), 0, "collector dropped");

    let entry = m.entry(&id).unwrap();
    let records = entry.log.read(0, 100, u64::MAX).records;
    assert!(records.len() >= 2, "periodic snapshots then a final one");
    let last = records.last().unwrap();
    assert!(last.last);
    assert!(records[..records.len() - 1].iter().all(|r| !r.last));
    let Some(Payload::SyscallStats(s)) = last.payload() else {
        panic!("test collector makes syscall stats")
    };
    assert_eq!(s.dropped, 0, "final snapshot is taken after detach");
    assert!(entry.log.stats().closed);

    let err = m.stop(&id).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRunning {
                state: State::Stopped,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn deadline_expires_by_itself() {
    let m = manager(TestFactory::default());
    let id = m
        .start(spec(Some(Duration::from_millis(100))))
        .await
        .unwrap()
        .view
        .id;
    let status = m.entry(&id).unwrap().ended().await;
    assert_eq!(status.state, State::Expired);
    let started = status.started.unwrap();
    let ran = status.ended.unwrap().duration_since(started).unwrap();
    assert!(
        ran >= Duration::from_millis(95) && ran < Duration::from_secs(2),
        "{ran:?}"
    );
}

#[tokio::test]
async fn extend_moves_the_deadline() {
    let m = manager(TestFactory::default());
    let id = m
        .start(spec(Some(Duration::from_millis(100))))
        .await
        .unwrap()
        .view
        .id;
    m.extend(&id, Duration::from_millis(400)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.get(&id).unwrap().status.state, State::Running, "extended");
    let status = m.entry(&id).unwrap().ended().await;
    assert_eq!(status.state, State::Expired);

    assert!(matches!(
        m.extend(&id, Duration::from_secs(1)),
        Err(Error::NotRunning { .. })
    ));
}

#[tokio::test]
async fn extend_validates_duration() {
    let m = manager(TestFactory::default());
    let id = m.start(spec(None)).await.unwrap().view.id;
    assert!(matches!(
        m.extend(&id, Duration::ZERO),
        Err(Error::ZeroDuration)
    ));
    assert!(matches!(
        m.extend(&id, Duration::from_secs(11)),
        Err(Error::DurationTooLong { .. })
    ));
    assert!(matches!(
        m.extend("nope", Duration::from_secs(1)),
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn durations_are_validated_never_changed() {
    let m = manager(TestFactory::default());
    assert!(matches!(
        m.start(spec(Some(Duration::ZERO))).await,
        Err(Error::ZeroDuration)
    ));
    let err = m
        .start(spec(Some(Duration::from_secs(11))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DurationTooLong { .. }));
    assert!(err.to_string().contains("10s"), "names the maximum: {err}");
    // Unset takes the default.
    let view = m.start(spec(None)).await.unwrap().view;
    let deadline = view.status.deadline.unwrap();
    let left = deadline.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(4) && left <= Duration::from_secs(5),
        "{left:?}"
    );
}

#[tokio::test]
async fn running_limit_is_enforced_and_frees_up() {
    let m = manager(TestFactory::default());
    let a = m.start(spec(None)).await.unwrap().view.id;
    m.start(spec(None)).await.unwrap();
    let err = m.start(spec(None)).await.unwrap_err();
    assert!(matches!(err, Error::TooManyCollectors { max: 2 }), "{err}");
    m.stop(&a).await.unwrap();
    m.start(spec(None)).await.unwrap();
}

#[tokio::test]
async fn filters_are_validated() {
    let m = manager(TestFactory::default());
    let mut s = spec(None);
    s.filter.pids = vec![1, 2, 3, 4];
    assert!(matches!(m.start(s).await, Err(Error::InvalidArgument(_))));
    let mut s = spec(None);
    s.filter.pids = vec![0];
    assert!(matches!(m.start(s).await, Err(Error::InvalidArgument(_))));
    let mut s = spec(None);
    s.filter.comm = Some("a-name-longer-than-15".into());
    assert!(matches!(m.start(s).await, Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn whole_machine_is_reported() {
    let m = manager(TestFactory::default());
    let mut s = spec(None);
    s.filter = TargetFilter::default();
    let started = m.start(s).await.unwrap();
    assert_eq!(started.warnings.len(), 1);
    assert!(started.warnings[0].contains("every process"));
}

#[tokio::test]
async fn failed_start_is_reported_and_kept() {
    let m = manager(TestFactory {
        fail: true,
        ..Default::default()
    });
    let err = m.start(spec(None)).await.unwrap_err();
    let Error::CollectorFailed { id, reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("refused"), "{reason}");
    let view = m.get(id).unwrap();
    assert_eq!(view.status.state, State::Failed);
    assert!(view.status.error.unwrap().contains("refused"));
    // A failed start does not hold a running slot.
    assert!(matches!(
        m.start(spec(None)).await,
        Err(Error::CollectorFailed { .. })
    ));
    assert!(matches!(
        m.start(spec(None)).await,
        Err(Error::CollectorFailed { .. })
    ));
}

#[tokio::test]
async fn unavailable_and_unbuilt_kinds_are_refused() {
    let m = manager(TestFactory {
        unavailable: true,
        ..Default::default()
    });
    let err = m.start(spec(None)).await.unwrap_err();
    assert!(err.to_string().contains("no such hook here"), "{err}");
    let mut s = spec(None);
    s.kind = Kind::TcpMetrics;
    let err = m.start(s).await.unwrap_err();
    assert!(err.to_string().contains("no factory registered"), "{err}");
    let kinds = m.kinds();
    assert_eq!(kinds.len(), Kind::ALL.len());
    assert!(kinds.iter().all(|k| !k.available));
}

#[tokio::test]
async fn retention_limits_records_and_reaper_removes_ended() {
    let m = manager(TestFactory::default());
    let id = m
        .start(spec(Some(Duration::from_millis(250))))
        .await
        .unwrap()
        .view
        .id;
    let entry = m.entry(&id).unwrap();
    entry.ended().await;
    let stats = entry.log.stats();
    assert_eq!(
        stats.last_seq - stats.first_retained_seq + 1,
        5,
        "{stats:?}"
    );
    assert_eq!(stats.dropped, stats.last_seq - 5);
    // Readable during retention, gone after.
    assert!(m.get(&id).is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(m.get(&id), Err(Error::NotFound(_))));
    assert!(m.list().is_empty());
}

#[tokio::test]
async fn shutdown_stops_everything_with_a_final_record() {
    let factory = TestFactory::default();
    let m = manager(factory.clone());
    let a = m.start(spec(None)).await.unwrap().view.id;
    let b = m.start(spec(None)).await.unwrap().view.id;
    m.shutdown().await;
    for id in [a, b] {
        let entry = m.entry(&id).unwrap();
        assert_eq!(entry.status().state, State::Stopped);
        assert!(
            entry
                .log
                .read(0, 100, u64::MAX)
                .records
                .last()
                .unwrap()
                .last
        );
    }
    assert_eq!(factory.live.load(Ordering::SeqCst), 0);
}

fn faulty(fault: crate::test_hooks::Fault, limits: Limits) -> (Manager, TestFactory) {
    let factory = TestFactory::default();
    let factories = crate::test_hooks::inject(
        vec![Box::new(factory.clone())],
        &[(Kind::SyscallStats, fault)],
    );
    (
        Manager::new(limits, HostCapabilities::default(), factories),
        factory,
    )
}

fn running(m: &Manager) -> usize {
    m.list()
        .iter()
        .filter(|v| !v.status.state.is_terminal())
        .count()
}

#[tokio::test]
async fn a_panic_anywhere_ends_failed_releases_the_slot_and_drops_the_collector() {
    use crate::test_hooks::Fault;
    for (fault, stage) in [
        (Fault::PanicStart, "starting"),
        (Fault::PanicCollect, "collecting"),
        (Fault::PanicDetach, "detaching"),
        (Fault::PanicDrop, "being dropped"),
    ] {
        let (m, factory) = faulty(fault, limits());
        // Twice: more than max_running would not fit if a slot leaked.
        for _ in 0..3 {
            let id = match m.start(spec(None)).await {
                Err(Error::CollectorFailed { id, .. }) => id,
                Ok(started) if fault == Fault::PanicCollect => {
                    m.entry(&started.view.id).unwrap().ended().await;
                    started.view.id
                }
                Ok(started) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let view = m.stop(&started.view.id).await.unwrap();
                    view.id
                }
                Err(e) => panic!("{fault:?}: {e}"),
            };
            let status = m.entry(&id).unwrap().status();
            assert_eq!(status.state, State::Failed, "{fault:?}");
            let error = status.error.unwrap();
            assert!(
                error.contains(&format!("panicked while {stage}")) && error.contains("[7, 8]"),
                "{fault:?}: {error}"
            );
            assert!(status.program_ids.is_empty());
            assert_eq!(
                factory.live.load(Ordering::SeqCst),
                0,
                "{fault:?}: the collector was dropped"
            );
            assert_eq!(running(&m), 0, "{fault:?}: the slot was released");
        }
    }
}

#[tokio::test]
async fn stop_and_shutdown_are_bounded_when_a_collect_is_stuck() {
    use crate::test_hooks::Fault;
    let (m, factory) = faulty(
        Fault::SlowCollect(Duration::from_millis(1500)),
        Limits {
            stop_timeout: Duration::from_millis(200),
            ..limits()
        },
    );
    let id = m.start(spec(None)).await.unwrap().view.id;
    let other = m.start(spec(None)).await.unwrap().view.id;
    // The first tick (20 ms) is now in its 1.5 s collect.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let err = m.stop(&id).await.unwrap_err();
    assert!(matches!(err, Error::StopTimedOut { .. }), "{err}");
    assert!(
        asked.elapsed() < Duration::from_millis(600),
        "{:?}",
        asked.elapsed()
    );
    let asked = Instant::now();
    let stuck = m.shutdown().await;
    assert!(
        asked.elapsed() < Duration::from_millis(600),
        "{:?}",
        asked.elapsed()
    );
    assert!(stuck.contains(&other), "{stuck:?}");
    // Once the stuck calls return, both end properly and are dropped.
    for id in [id, other] {
        let status = m.entry(&id).unwrap().ended().await;
        assert_eq!(status.state, State::Stopped);
    }
    assert_eq!(factory.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn slow_collects_do_not_hold_an_async_worker() {
    use crate::test_hooks::Fault;
    let (m, _) = faulty(Fault::SlowCollect(Duration::from_millis(300)), limits());
    m.start(spec(None)).await.unwrap();
    m.start(spec(None)).await.unwrap();
    // With the collects on the one async worker, this timer could not fire
    // until a 300 ms collect returned.
    for _ in 0..10 {
        let asked = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "{:?}",
            asked.elapsed()
        );
    }
    m.shutdown().await;
}

#[tokio::test]
async fn ended_collectors_beyond_the_cap_go_oldest_first() {
    let m = Manager::new(
        Limits {
            max_ended: 2,
            retention: Duration::from_secs(60),
            ..limits()
        },
        HostCapabilities::default(),
        vec![Box::new(TestFactory::default())],
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = m.start(spec(None)).await.unwrap().view.id;
        m.stop(&id).await.unwrap();
        ids.push(id);
    }
    let kept: Vec<_> = m.list().into_iter().map(|v| v.id).collect();
    assert_eq!(kept, ids[2..]);
}

#[tokio::test]
async fn the_agent_wide_budget_drops_the_oldest_records_of_any_collector() {
    let one = {
        let log = EventLog::new(
            Budget {
                max_records: 1,
                max_bytes: u64::MAX,
            },
            Arc::default(),
        );
        log.push(
            Payload::SyscallStats(coral_proto::v1::SyscallStats {
                elapsed_ns: 20_000_000,
                ..Default::default()
            }),
            false,
        );
        log.stats().retained_bytes
    };
    let m = Manager::new(
        Limits {
            max_records: 1000,
            max_retained_bytes: 10 * one,
            ..limits()
        },
        HostCapabilities::default(),
        vec![Box::new(TestFactory::default())],
    );
    let a = m.start(spec(None)).await.unwrap().view.id;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let b = m.start(spec(None)).await.unwrap().view.id;
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.stop(&a).await.unwrap();
    m.stop(&b).await.unwrap();
    let (a, b) = (m.get(&a).unwrap().log, m.get(&b).unwrap().log);
    // Records of the two grow by a few bytes as elapsed_ns grows: allow one.
    assert!(
        m.retained_bytes() <= 11 * one,
        "{} > {}",
        m.retained_bytes(),
        11 * one
    );
    assert_eq!(m.retained_bytes(), a.retained_bytes + b.retained_bytes);
    assert!(a.dropped > 0 && b.dropped > 0, "{a:?} {b:?}");
    // `a` started first, so its records were the oldest and went first.
    assert!(a.retained_bytes < b.retained_bytes, "{a:?} {b:?}");
}

#[tokio::test]
async fn exported_collectors_are_gathered_and_their_series_go_when_reaped() {
    use crate::export::{ExportOptions, Exporter, Value};
    let m = manager(TestFactory::default());
    let mut exported = spec(None);
    exported.export = true;
    exported.labels = [("team".to_string(), "core".to_string())].into();
    let id = m.start(exported).await.unwrap().view.id;
    let exporter = Exporter::new(m.clone(), ExportOptions::default());
    tokio::time::sleep(Duration::from_millis(70)).await;

    let families = exporter.gather();
    let series = |name: &str| {
        families
            .iter()
            .find(|f| f.desc.name == name)
            .map(|f| f.series.clone())
            .unwrap_or_default()
    };
    let of_id = |name: &str| {
        series(name).into_iter().find(|s| {
            s.labels
                .iter()
                .any(|(k, v)| k == "collector.id" && *v == id)
        })
    };
    // The test collector reports itself attached as a kernel drop count.
    let dropped = of_id("coral.collector.kernel.dropped").expect("a result series");
    assert_eq!(dropped.value, Value::Int(1));
    assert!(
        dropped
            .labels
            .iter()
            .any(|(k, v)| k == "label.team" && v == "core"),
        "{dropped:?}"
    );
    assert!(matches!(of_id("coral.collector.records").unwrap().value, Value::Int(n) if n >= 1));
    let starts = series("coral.collector.starts");
    assert!(
        starts.iter().any(|s| s.value == Value::Int(1)),
        "{starts:?}"
    );
    let running = series("coral.collectors").into_iter().find(|s| {
        s.labels.contains(&("state".into(), "running".into())) && s.value == Value::Int(1)
    });
    assert!(running.is_some());

    m.stop(&id).await.unwrap();
    // Retention is 200 ms here; the reaper runs as often.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(m.entry(&id).is_err(), "reaped");
    let after = exporter.gather();
    for family in &after {
        for s in &family.series {
            assert!(
                !s.labels.iter().any(|(_, v)| *v == id),
                "{} still has a series of the reaped collector",
                family.desc.name
            );
        }
    }
}

#[tokio::test]
async fn cpu_profiles_are_not_exported() {
    let m = manager(TestFactory::default());
    let mut profile = spec(None);
    profile.kind = Kind::CpuProfile;
    profile.export = true;
    let err = m.start(profile).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("not exported"), "{err}");
}

/// A kind that runs here but cannot do everything: its note is the reason
/// capabilities show; an unavailable kind's reason stays why not.
#[test]
fn available_kinds_carry_their_notes() {
    struct Noted(bool);
    impl CollectorFactory for Noted {
        fn kind(&self) -> Kind {
            Kind::HttpLatency
        }
        fn hooks(&self) -> &'static [&'static str] {
            &["test/hook"]
        }
        fn availability(&self, _: &HostCapabilities) -> Result<(), String> {
            if self.0 {
                Ok(())
            } else {
                Err("not here".into())
            }
        }
        fn notes(&self, _: &HostCapabilities) -> Option<String> {
            Some("half of it".into())
        }
        fn start(
            &self,
            _: &crate::collectors::StartContext,
        ) -> Result<Box<dyn crate::collectors::Collector>, crate::collectors::CollectorError>
        {
            unreachable!()
        }
    }
    for (available, reason) in [(true, "half of it"), (false, "not here")] {
        let factories: HashMap<Kind, Arc<dyn CollectorFactory>> =
            HashMap::from([(Kind::HttpLatency, Arc::new(Noted(available)) as Arc<_>)]);
        let kinds = kind_statuses(&factories, &HostCapabilities::default());
        let k = kinds.iter().find(|k| k.kind == Kind::HttpLatency).unwrap();
        assert_eq!((k.available, k.reason.as_str()), (available, reason));
    }
}
