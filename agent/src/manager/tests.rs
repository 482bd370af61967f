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
    let records = entry.log.read(0, 100).records;
    assert!(records.len() >= 2, "periodic snapshots then a final one");
    let last = records.last().unwrap();
    assert!(last.last);
    assert!(records[..records.len() - 1].iter().all(|r| !r.last));
    let Payload::SyscallStats(s) = &last.payload else {
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
    assert!(err.to_string().contains("not implemented"), "{err}");
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
        assert!(entry.log.read(0, 100).records.last().unwrap().last);
    }
    assert_eq!(factory.live.load(Ordering::SeqCst), 0);
}
