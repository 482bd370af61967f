//! What the manager counts about itself, for the exporter: starts and
//! failures per kind, and how long starts take. Counters only ever grow;
//! they live as long as the manager.

use crate::domain::Kind;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the start latency histogram: from a warm
/// syscall-stats start (a few ms) to a whole-machine cpu-profile (seconds).
pub const START_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket histogram: per-bucket (not cumulative) counts, the last
/// one for what exceeds every bound.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(bounds.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// Per kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindCounts {
    /// Collectors that reached Running.
    pub started: u64,
    /// Collectors that failed to start (load, attach, filter, panic).
    pub start_failures: u64,
    /// Collectors that failed after running (a read error, a panic).
    pub run_failures: u64,
    /// StartCollector accepted -> Running (or Failed), seconds.
    pub start_latency: Histogram,
}

#[derive(Debug, Default)]
pub struct ManagerStats {
    kinds: Mutex<HashMap<Kind, KindCounts>>,
}

impl ManagerStats {
    fn with(&self, kind: Kind, f: impl FnOnce(&mut KindCounts)) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        f(kinds.entry(kind).or_default());
    }

    pub(super) fn started(&self, kind: Kind, took: Duration) {
        self.with(kind, |k| {
            k.started += 1;
            k.start_latency.observe(&START_BUCKETS, took.as_secs_f64());
        });
    }

    pub(super) fn start_failed(&self, kind: Kind, took: Duration) {
        self.with(kind, |k| {
            k.start_failures += 1;
            k.start_latency.observe(&START_BUCKETS, took.as_secs_f64());
        });
    }

    pub(super) fn run_failed(&self, kind: Kind) {
        self.with(kind, |k| k.run_failures += 1);
    }

    /// Every kind's counts (kinds never started are all zero).
    pub fn snapshot(&self) -> Vec<(Kind, KindCounts)> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        Kind::ALL
            .iter()
            .map(|&k| (k, kinds.get(&k).cloned().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_bucket_and_over_the_last_in_the_overflow() {
        let stats = ManagerStats::default();
        stats.started(Kind::SyscallStats, Duration::from_millis(3));
        stats.started(Kind::SyscallStats, Duration::from_millis(7));
        stats.start_failed(Kind::SyscallStats, Duration::from_secs(60));
        stats.run_failed(Kind::SyscallStats);
        let all = stats.snapshot();
        assert_eq!(all.len(), Kind::ALL.len());
        let sys = &all
            .iter()
            .find(|(k, _)| *k == Kind::SyscallStats)
            .unwrap()
            .1;
        assert_eq!(
            (sys.started, sys.start_failures, sys.run_failures),
            (2, 1, 1)
        );
        let h = &sys.start_latency;
        assert_eq!(h.count, 3);
        assert_eq!((h.buckets[0], h.buckets[1]), (1, 1));
        assert_eq!(h.buckets[START_BUCKETS.len()], 1);
    }
}
