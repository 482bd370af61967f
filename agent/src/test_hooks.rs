//! TEST HOOKS: fault injection for the end-to-end hardening tests. Not a
//! feature: nothing here is reachable unless the agent is started with the
//! variable below, and the agent logs a warning at start-up when it is.
//!
//! `CORAL_TEST_FAIL_ATTACH=<kind>[,<kind>…]`: collectors of these kinds load
//! and attach their programs for real, then their start fails as an attach
//! failure would. The collector is dropped first (RAII releases every program,
//! link and map it created) and the collector ends `FAILED` with a reason that
//! names this hook and the program ids that had been loaded, so a test can
//! check that the kernel no longer has any of them. There is no other way to
//! make a real attach fail on demand without disturbing the whole machine
//! (unmounting tracefs, say), which parallel tests cannot afford.

use crate::capabilities::HostCapabilities;
use crate::collectors::{Collector, CollectorError, CollectorFactory, StartContext};
use crate::config::Limits;
use crate::domain::{Kind, KindConfig};

/// The environment variable read at start-up.
pub const FAIL_ATTACH_ENV: &str = "CORAL_TEST_FAIL_ATTACH";

/// Wraps the factories of the kinds named in `spec` (comma-separated kind
/// names, as the CLI spells them); returns which kinds were wrapped.
pub fn fail_attach(
    factories: Vec<Box<dyn CollectorFactory>>,
    spec: &str,
) -> (Vec<Box<dyn CollectorFactory>>, Vec<Kind>) {
    let kinds: Vec<Kind> = spec
        .split(',')
        .filter_map(|name| Kind::ALL.into_iter().find(|k| k.as_str() == name.trim()))
        .collect();
    let factories = factories
        .into_iter()
        .map(|f| -> Box<dyn CollectorFactory> {
            if kinds.contains(&f.kind()) {
                Box::new(FailAttach(f))
            } else {
                f
            }
        })
        .collect();
    (factories, kinds)
}

struct FailAttach(Box<dyn CollectorFactory>);

impl CollectorFactory for FailAttach {
    fn kind(&self) -> Kind {
        self.0.kind()
    }

    fn hooks(&self) -> &'static [&'static str] {
        self.0.hooks()
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        self.0.availability(caps)
    }

    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        self.0.validate(config, limits)
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let collector = self.0.start(ctx)?;
        let ids = collector.program_ids();
        drop(collector);
        Err(CollectorError::Attach {
            program: "every program",
            hook: "its hook",
            reason: format!(
                "failure injected by the {FAIL_ATTACH_ENV} test hook after loading programs {ids:?}"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestFactory;
    use std::sync::atomic::Ordering;

    #[test]
    fn wrapped_kind_loads_then_fails_and_releases() {
        let factory = TestFactory::default();
        let live = factory.live.clone();
        let (factories, kinds) = fail_attach(vec![Box::new(factory)], "syscall-stats, bogus");
        assert_eq!(kinds, [Kind::SyscallStats]);
        let ctx = StartContext {
            spec: crate::domain::Spec {
                kind: Kind::SyscallStats,
                duration: None,
                filter: Default::default(),
                labels: Default::default(),
                config: None,
            },
            agent_pid: 1,
            cgroup2_root: None,
        };
        let err = factories[0].start(&ctx).err().unwrap().to_string();
        assert!(
            err.contains(FAIL_ATTACH_ENV) && err.contains("[7, 8]"),
            "{err}"
        );
        assert_eq!(live.load(Ordering::SeqCst), 0, "the collector was dropped");
    }
}
