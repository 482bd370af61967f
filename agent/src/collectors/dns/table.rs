//! The aggregate: exchanges per (name, type, rcode or timeout), with exact
//! latency percentiles from a bounded sample of each row.

use coral_proto::v1::DnsName;
use std::collections::HashMap;

/// Latencies kept per row; beyond, each new one replaces a random one
/// (reservoir sampling), so the percentiles stay those of a uniform sample.
pub const SAMPLES: usize = 4096;
/// log2 latency buckets: [2^i, 2^(i+1)) ns, the last one open-ended.
pub const LOG2_BUCKETS: usize = 40;

/// What a row counts: responses with one rcode, or timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Rcode(u8),
    Timeout,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub name: String,
    pub qtype: u16,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Default)]
struct Row {
    count: u64,
    /// Answers seen (the reservoir's n).
    answered: u64,
    samples: Vec<u64>,
    sum_ns: u64,
    max_ns: u64,
    log2: Vec<u64>,
}

/// Rows by key, at most `max` of them.
#[derive(Debug)]
pub struct Table {
    rows: HashMap<RowKey, Row>,
    max: usize,
    /// Exchanges whose row did not fit.
    pub other: u64,
    /// xorshift64 state for the reservoir.
    rng: u64,
}

impl Table {
    pub fn new(max: usize) -> Self {
        Self {
            rows: HashMap::new(),
            max,
            other: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn row(&mut self, key: RowKey) -> Option<&mut Row> {
        if !self.rows.contains_key(&key) && self.rows.len() >= self.max {
            self.other += 1;
            return None;
        }
        Some(self.rows.entry(key).or_default())
    }

    /// One exchange of `key`: answered after `latency_ns`, or timed out (None).
    pub fn add(&mut self, key: RowKey, latency_ns: Option<u64>) {
        let slot = self.random();
        let Some(row) = self.row(key) else { return };
        row.count += 1;
        let Some(ns) = latency_ns else { return };
        row.answered += 1;
        row.sum_ns = row.sum_ns.saturating_add(ns);
        row.max_ns = row.max_ns.max(ns);
        if row.samples.len() < SAMPLES {
            row.samples.push(ns);
        } else {
            let i = slot % row.answered;
            if let Some(s) = row.samples.get_mut(i as usize) {
                *s = ns;
            }
        }
        let bucket = (63 - ns.max(1).leading_zeros() as usize).min(LOG2_BUCKETS - 1);
        if row.log2.len() <= bucket {
            row.log2.resize(bucket + 1, 0);
        }
        row.log2[bucket] += 1;
    }

    /// Every row, most exchanges first (then by name, type, outcome).
    pub fn snapshot(&self) -> Vec<DnsName> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|(ka, a), (kb, b)| {
            b.count.cmp(&a.count).then_with(|| {
                (&ka.name, ka.qtype, ka.outcome).cmp(&(&kb.name, kb.qtype, kb.outcome))
            })
        });
        rows.into_iter()
            .map(|(k, r)| {
                let mut sorted = r.samples.clone();
                sorted.sort_unstable();
                let (rcode, timed_out) = match k.outcome {
                    Outcome::Rcode(c) => (c, false),
                    Outcome::Timeout => (0, true),
                };
                DnsName {
                    name: k.name.clone(),
                    qtype: u32::from(k.qtype),
                    qtype_name: super::wire::type_name(k.qtype),
                    timed_out,
                    rcode: u32::from(rcode),
                    rcode_name: if timed_out {
                        "TIMEOUT".into()
                    } else {
                        super::wire::rcode_name(rcode)
                    },
                    count: r.count,
                    latency_p50_ns: quantile(&sorted, 0.50),
                    latency_p90_ns: quantile(&sorted, 0.90),
                    latency_p99_ns: quantile(&sorted, 0.99),
                    latency_max_ns: r.max_ns,
                    latency_sum_ns: r.sum_ns,
                    latency_log2: r.log2.clone(),
                }
            })
            .collect()
    }
}

/// The nearest-rank quantile `q` of `sorted`; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, outcome: Outcome) -> RowKey {
        RowKey {
            name: name.into(),
            qtype: 1,
            outcome,
        }
    }

    #[test]
    fn rows_count_and_rank_exactly() {
        let mut t = Table::new(3);
        for ms in 1..=100u64 {
            t.add(key("a.test", Outcome::Rcode(0)), Some(ms * 1_000_000));
        }
        t.add(key("b.test", Outcome::Rcode(3)), Some(5));
        t.add(key("b.test", Outcome::Timeout), None);
        t.add(key("c.test", Outcome::Rcode(0)), Some(5));
        let rows = t.snapshot();
        assert_eq!(rows.len(), 3);
        assert_eq!(t.other, 1);
        let a = &rows[0];
        assert_eq!((a.name.as_str(), a.count), ("a.test", 100));
        assert_eq!(a.latency_p50_ns, 50_000_000);
        assert_eq!(a.latency_p90_ns, 90_000_000);
        assert_eq!(a.latency_p99_ns, 99_000_000);
        assert_eq!(a.latency_max_ns, 100_000_000);
        assert_eq!(a.latency_log2.iter().sum::<u64>(), 100);
        let timeout = rows.iter().find(|r| r.timed_out).unwrap();
        assert_eq!(timeout.rcode_name, "TIMEOUT");
        assert_eq!(timeout.latency_p50_ns, 0);
        assert!(rows.iter().any(|r| r.rcode_name == "NXDOMAIN"));
    }

    #[test]
    fn samples_are_bounded() {
        let mut t = Table::new(1);
        for i in 0..(SAMPLES as u64 * 3) {
            t.add(key("a", Outcome::Rcode(0)), Some(1000 + i % 7));
        }
        let rows = t.snapshot();
        assert_eq!(rows[0].count, SAMPLES as u64 * 3);
        assert_eq!(t.rows.values().next().unwrap().samples.len(), SAMPLES);
        assert!((1000..1007).contains(&rows[0].latency_p50_ns));
    }
}
