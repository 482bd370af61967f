//! TEST HOOKS: fault injection for the end-to-end tests. Not a feature:
//! nothing here is reachable unless the agent is started with the variable
//! below, and the agent logs a warning at start-up when it is.
//!
//! `CORAL_TEST_FAULT=<kind>:<fault>[,<kind>:<fault>…]` wraps the factories of
//! those kinds. Every fault happens to a real collector, whose programs were
//! loaded and attached for real, so a test can check that the kernel holds
//! none of them afterwards (every message names the program ids):
//!
//! | fault | what happens |
//! |---|---|
//! | `fail-attach` | the start fails as an attach failure would, after the collector was built and dropped |
//! | `panic-start` | the start panics after the collector was built |
//! | `panic-collect` | the first collect after start panics (mid-collection) |
//! | `panic-detach` | `detach` panics (before detaching anything) |
//! | `panic-drop` | dropping the collector panics (its kernel objects are dropped while unwinding) |
//! | `slow-collect=<duration>` | every collect first sleeps that long (`2s`, `500ms`) |
//!
//! There is no other way to make a real attach fail or a collector misbehave
//! on demand without disturbing the whole machine (unmounting tracefs, say),
//! which parallel tests cannot afford.

use crate::capabilities::HostCapabilities;
use crate::collectors::{Collector, CollectorError, CollectorFactory, StartContext};
use crate::config::Limits;
use crate::domain::{Kind, KindConfig, Payload};
use std::time::Duration;

/// The environment variable read at start-up.
pub const FAULT_ENV: &str = "CORAL_TEST_FAULT";

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    FailAttach,
    PanicStart,
    PanicCollect,
    PanicDetach,
    PanicDrop,
    SlowCollect(Duration),
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fail-attach" => Fault::FailAttach,
            "panic-start" => Fault::PanicStart,
            "panic-collect" => Fault::PanicCollect,
            "panic-detach" => Fault::PanicDetach,
            "panic-drop" => Fault::PanicDrop,
            other => match other.strip_prefix("slow-collect=") {
                Some(d) => Fault::SlowCollect(
                    humantime::parse_duration(d).map_err(|e| format!("{other}: {e}"))?,
                ),
                None => return Err(format!("unknown fault {other:?}")),
            },
        })
    }
}

/// Parses `spec` (`kind:fault,…`).
pub fn parse(spec: &str) -> Result<Vec<(Kind, Fault)>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (kind, fault) = item
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not kind:fault"))?;
            let kind = Kind::from_name(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
            Ok((kind, fault.parse()?))
        })
        .collect()
}

/// Wraps the factories of the kinds `faults` names.
pub fn inject(
    factories: Vec<Box<dyn CollectorFactory>>,
    faults: &[(Kind, Fault)],
) -> Vec<Box<dyn CollectorFactory>> {
    factories
        .into_iter()
        .map(|f| -> Box<dyn CollectorFactory> {
            match faults.iter().find(|(k, _)| *k == f.kind()) {
                Some(&(_, fault)) => Box::new(Faulty { inner: f, fault }),
                None => f,
            }
        })
        .collect()
}

struct Faulty {
    inner: Box<dyn CollectorFactory>,
    fault: Fault,
}

fn injected(what: &str, ids: &[u32]) -> String {
    format!("{what} injected by the {FAULT_ENV} test hook after loading programs {ids:?}")
}

impl CollectorFactory for Faulty {
    fn kind(&self) -> Kind {
        self.inner.kind()
    }

    fn hooks(&self) -> &'static [&'static str] {
        self.inner.hooks()
    }

    fn hooks_here(&self, caps: &HostCapabilities) -> Vec<&'static str> {
        self.inner.hooks_here(caps)
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        self.inner.availability(caps)
    }

    fn notes(&self, caps: &HostCapabilities) -> Option<String> {
        self.inner.notes(caps)
    }

    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        self.inner.validate(config, limits)
    }

    fn check_cgroup(
        &self,
        cgroup2_root: Option<&std::path::Path>,
        path: &str,
    ) -> Result<(), String> {
        self.inner.check_cgroup(cgroup2_root, path)
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let collector = self.inner.start(ctx)?;
        let ids = collector.program_ids();
        match self.fault {
            Fault::FailAttach => {
                drop(collector);
                Err(CollectorError::Attach {
                    program: "every program",
                    hook: "its hook",
                    reason: injected("failure", &ids),
                })
            }
            Fault::PanicStart => panic!("{}", injected("panic", &ids)),
            fault => Ok(Box::new(FaultyCollector {
                inner: collector,
                fault,
                ids,
            })),
        }
    }
}

struct FaultyCollector {
    inner: Box<dyn Collector>,
    fault: Fault,
    ids: Vec<u32>,
}

impl Collector for FaultyCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.inner.program_ids()
    }

    fn tick_interval(&self) -> Duration {
        self.inner.tick_interval()
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        match self.fault {
            Fault::PanicCollect => panic!("{}", injected("panic", &self.ids)),
            Fault::SlowCollect(d) => std::thread::sleep(d),
            _ => {}
        }
        self.inner.collect(elapsed, last, out)
    }

    fn detach(&mut self) {
        if self.fault == Fault::PanicDetach {
            panic!("{}", injected("panic", &self.ids));
        }
        self.inner.detach();
    }
}

impl Drop for FaultyCollector {
    fn drop(&mut self) {
        // `inner` is still dropped while this panic unwinds.
        if self.fault == Fault::PanicDrop {
            panic!("{}", injected("panic", &self.ids));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestFactory;
    use std::sync::atomic::Ordering;

    fn ctx() -> StartContext {
        StartContext {
            spec: crate::domain::Spec {
                kind: Kind::SyscallStats,
                duration: None,
                filter: Default::default(),
                labels: Default::default(),
                export: false,
                config: None,
            },
            agent_pid: 1,
            cgroup2_root: None,
            uprobes: false,
        }
    }

    #[test]
    fn faults_parse() {
        assert_eq!(
            parse("syscall-stats:panic-collect, tcp-metrics:slow-collect=2s").unwrap(),
            [
                (Kind::SyscallStats, Fault::PanicCollect),
                (Kind::TcpMetrics, Fault::SlowCollect(Duration::from_secs(2)))
            ]
        );
        assert!(parse("bogus:panic-collect").is_err());
        assert!(parse("syscall-stats:explode").is_err());
        assert!(parse("syscall-stats").is_err());
    }

    #[test]
    fn failed_attach_loads_then_fails_and_releases() {
        let factory = TestFactory::default();
        let live = factory.live.clone();
        let factories = inject(
            vec![Box::new(factory)],
            &[(Kind::SyscallStats, Fault::FailAttach)],
        );
        let err = factories[0].start(&ctx()).err().unwrap().to_string();
        assert!(err.contains(FAULT_ENV) && err.contains("[7, 8]"), "{err}");
        assert_eq!(live.load(Ordering::SeqCst), 0, "the collector was dropped");
    }

    #[test]
    fn a_panicking_drop_still_drops_the_collector() {
        let factory = TestFactory::default();
        let live = factory.live.clone();
        let factories = inject(
            vec![Box::new(factory)],
            &[(Kind::SyscallStats, Fault::PanicDrop)],
        );
        let collector = factories[0].start(&ctx()).ok().unwrap();
        assert_eq!(live.load(Ordering::SeqCst), 1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(collector)));
        assert!(caught.is_err());
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }
}
