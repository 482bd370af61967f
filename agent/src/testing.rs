//! A collector without a kernel, for testing the manager and the gRPC edge.

use crate::capabilities::HostCapabilities;
use crate::collectors::{Collector, CollectorError, CollectorFactory, StartContext};
use crate::domain::{Kind, Payload};
use coral_proto::v1::SyscallStats;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Counts snapshots; `attached` goes false on detach, so tests can see that
/// the end detaches before the final read.
pub struct TestCollector {
    snapshots: u64,
    attached: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Collector for TestCollector {
    fn program_ids(&self) -> Vec<u32> {
        vec![7, 8]
    }
    fn tick_interval(&self) -> Duration {
        Duration::from_millis(20)
    }
    fn collect(
        &mut self,
        elapsed: Duration,
        _last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        self.snapshots += 1;
        out.push(Payload::SyscallStats(SyscallStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            // Encodes "was it still attached" for the final-record test.
            dropped: u64::from(self.attached.load(Ordering::SeqCst)),
            ..Default::default()
        }));
        Ok(())
    }
    fn detach(&mut self) {
        self.attached.store(false, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
pub struct TestFactory {
    pub fail: bool,
    pub unavailable: bool,
    /// Collectors alive right now.
    pub live: Arc<AtomicUsize>,
}

impl CollectorFactory for TestFactory {
    fn kind(&self) -> Kind {
        Kind::SyscallStats
    }
    fn hooks(&self) -> &'static [&'static str] {
        &["test/hook"]
    }
    fn availability(&self, _: &HostCapabilities) -> Result<(), String> {
        if self.unavailable {
            Err("no such hook here".into())
        } else {
            Ok(())
        }
    }
    fn start(&self, _: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        if self.fail {
            return Err(CollectorError::Attach {
                program: "p",
                hook: "h",
                reason: "refused".into(),
            });
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(TestCollector {
            snapshots: 0,
            attached: Arc::new(AtomicBool::new(true)),
            live: self.live.clone(),
        }))
    }
}
