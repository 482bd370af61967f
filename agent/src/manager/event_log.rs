//! A collector's records: a bounded, sequence-numbered ring, read by cursor
//! (`GetEvents`) and followed live (`StreamEvents`).
//!
//! Records are kept protobuf-encoded, so what the ring holds in memory is
//! what its byte budget counts (plus a fixed [`RECORD_OVERHEAD`] each), and
//! the same bytes bound every page a reader gets. Retention drops the oldest
//! record (and counts it) when the ring is over its record count or its byte
//! budget; the newest record is always kept, so a collector's latest result
//! is never lost to its own budget.
//!
//! The ring is the only copy: live readers are told that the last seq moved
//! (a `watch` channel) and read the new records from the ring themselves. A
//! slow reader therefore holds nothing; it finds out what it missed, as a gap,
//! when the records it wanted have left retention. Collection never waits
//! for readers.

use crate::domain::Payload;
use coral_proto::v1 as pb;
use prost::Message;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Bytes a retained record costs beyond its encoding (the `Record` itself,
/// its `Arc` and the ring slot), counted against the budgets too.
pub const RECORD_OVERHEAD: u64 = 96;

/// One entry of a collector's event log.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// From 1, per collector, without holes.
    pub seq: u64,
    pub time_unix_nano: u64,
    /// Taken after the programs were detached: the collector's result.
    pub last: bool,
    /// A cumulative aggregate snapshot (not a discrete event): what the
    /// exporter reads (`crate::export::results::is_aggregate`).
    pub aggregate: bool,
    /// A `pb::Record` with only its payload set, encoded.
    encoded: Vec<u8>,
}

impl Record {
    /// What the record costs against the byte budgets.
    pub fn size(&self) -> u64 {
        self.encoded.len() as u64 + RECORD_OVERHEAD
    }

    /// The payload, decoded again.
    pub fn payload(&self) -> Option<Payload> {
        // The bytes were encoded by `push` from a valid message.
        pb::Record::decode(self.encoded.as_slice())
            .ok()
            .and_then(|r| r.payload)
    }
}

/// Bytes retained by every collector's log together, for the agent-wide
/// budget. Shared by all logs; each log adds what it keeps and takes back
/// what it drops (and everything when it is dropped).
#[derive(Debug, Default)]
pub struct RetainedBytes(AtomicU64);

impl RetainedBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What one log may hold.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_records: usize,
    pub max_bytes: u64,
}

pub struct EventLog {
    inner: Mutex<Inner>,
    budget: Budget,
    agent: Arc<RetainedBytes>,
    /// The last seq recorded, for live readers; closed flag with it.
    notify: watch::Sender<Tip>,
}

/// Where the log ends, as live readers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tip {
    pub last_seq: u64,
    pub closed: bool,
}

struct Inner {
    records: VecDeque<Arc<Record>>,
    last_seq: u64,
    bytes: u64,
    dropped: u64,
    dropped_bytes: u64,
    closed: bool,
    /// Gaps reported to stream clients, and the records they missed.
    gaps: u64,
    gap_records: u64,
}

/// The result of a cursor read.
pub struct Page {
    pub records: Vec<Arc<Record>>,
    /// Records after the cursor that were dropped before this read.
    pub missed: u64,
}

/// Counters for `CollectorInfo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub last_seq: u64,
    pub first_retained_seq: u64,
    pub dropped: u64,
    pub dropped_bytes: u64,
    pub retained_bytes: u64,
    pub subscribers: u32,
    pub closed: bool,
    /// Gaps reported to stream clients (too slow, or replaying from before
    /// retention), and the records those gaps covered.
    pub stream_gaps: u64,
    pub stream_gap_records: u64,
}

pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl EventLog {
    pub fn new(budget: Budget, agent: Arc<RetainedBytes>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                last_seq: 0,
                bytes: 0,
                dropped: 0,
                dropped_bytes: 0,
                closed: false,
                gaps: 0,
                gap_records: 0,
            }),
            budget: Budget {
                max_records: budget.max_records.max(1),
                ..budget
            },
            agent,
            notify: watch::Sender::new(Tip::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the ring half-updated
        // in a way readers care about, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record and returns its seq. Ignored once closed.
    pub fn push(&self, payload: Payload, last: bool) -> Option<u64> {
        self.push_batch(vec![payload], last)
    }

    /// Appends a collector's batch in order and returns the last seq; with
    /// `last`, the batch's final payload is the collector's final record.
    /// Ignored once closed. One lock and one wake-up of live readers per
    /// batch, not per record: a collector draining 60 000 requests a second
    /// spent an eighth of its CPU notifying readers record by record
    /// (docs/benchmarks.md, "http-latency overhead").
    pub fn push_batch(&self, batch: Vec<Payload>, last: bool) -> Option<u64> {
        let n = batch.len();
        if n == 0 {
            return None;
        }
        // Encoded before the lock: readers are not held up by the encoding.
        let encoded: Vec<(bool, Vec<u8>)> = batch
            .into_iter()
            .map(|payload| {
                let aggregate = crate::export::results::is_aggregate(&payload);
                let encoded = pb::Record {
                    payload: Some(payload),
                    ..Default::default()
                }
                .encode_to_vec();
                (aggregate, encoded)
            })
            .collect();
        let now = unix_nanos(SystemTime::now());
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        for (i, (aggregate, encoded)) in encoded.into_iter().enumerate() {
            inner.last_seq += 1;
            let record = Arc::new(Record {
                seq: inner.last_seq,
                time_unix_nano: now,
                last: last && i + 1 == n,
                aggregate,
                encoded,
            });
            let size = record.size();
            while !inner.records.is_empty()
                && (inner.records.len() >= self.budget.max_records
                    || inner.bytes + size > self.budget.max_bytes)
            {
                self.drop_oldest(&mut inner);
            }
            inner.bytes += size;
            self.agent.add(size);
            inner.records.push_back(record);
        }
        let tip = Tip {
            last_seq: inner.last_seq,
            closed: false,
        };
        drop(inner);
        self.notify.send_replace(tip);
        Some(tip.last_seq)
    }

    fn drop_oldest(&self, inner: &mut Inner) -> Option<u64> {
        let gone = inner.records.pop_front()?;
        let size = gone.size();
        inner.bytes -= size;
        inner.dropped += 1;
        inner.dropped_bytes += size;
        self.agent.sub(size);
        Some(size)
    }

    /// When the oldest record that could be dropped for the agent-wide
    /// budget was made: never the newest one.
    pub fn oldest_droppable(&self) -> Option<u64> {
        let inner = self.lock();
        (inner.records.len() > 1).then(|| inner.records[0].time_unix_nano)
    }

    /// Drops the oldest record unless it is the only one; its size.
    pub fn drop_oldest_for_agent(&self) -> Option<u64> {
        let mut inner = self.lock();
        if inner.records.len() > 1 {
            self.drop_oldest(&mut inner)
        } else {
            None
        }
    }

    /// Ends the live feed: readers read what is left, then see the end.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let tip = Tip {
            last_seq: inner.last_seq,
            closed: true,
        };
        drop(inner);
        self.notify.send_replace(tip);
    }

    fn first_retained(inner: &Inner) -> u64 {
        inner.records.front().map_or(inner.last_seq + 1, |r| r.seq)
    }

    /// Records with `seq > after_seq`: at most `max`, and no more than
    /// `max_bytes` together unless the first alone is larger (a reader
    /// always makes progress).
    pub fn read(&self, after_seq: u64, max: usize, max_bytes: u64) -> Page {
        let inner = self.lock();
        let first = Self::first_retained(&inner);
        let start = after_seq.saturating_add(1);
        let missed = first
            .saturating_sub(start)
            .min(inner.last_seq.saturating_sub(after_seq));
        let skip = start.saturating_sub(first);
        let mut records = Vec::new();
        let mut bytes = 0;
        if skip < inner.records.len() as u64 {
            for r in inner.records.iter().skip(skip as usize).take(max) {
                bytes += r.size();
                if bytes > max_bytes && !records.is_empty() {
                    break;
                }
                records.push(r.clone());
            }
        }
        Page { records, missed }
    }

    /// The newest retained aggregate snapshot (events may follow it).
    /// Aggregates come every interval and events between them, so the scan
    /// from the newest record is short.
    pub fn latest_aggregate(&self) -> Option<Arc<Record>> {
        let inner = self.lock();
        inner.records.iter().rev().find(|r| r.aggregate).cloned()
    }

    /// A stream client was told it missed `records` records.
    pub fn note_gap(&self, records: u64) {
        let mut inner = self.lock();
        inner.gaps += 1;
        inner.gap_records += records;
    }

    /// The live feed: changes whenever a record is pushed or the log closes.
    pub fn watch(&self) -> watch::Receiver<Tip> {
        self.notify.subscribe()
    }

    pub fn stats(&self) -> LogStats {
        let inner = self.lock();
        LogStats {
            last_seq: inner.last_seq,
            first_retained_seq: Self::first_retained(&inner),
            dropped: inner.dropped,
            dropped_bytes: inner.dropped_bytes,
            retained_bytes: inner.bytes,
            subscribers: self.notify.receiver_count() as u32,
            closed: inner.closed,
            stream_gaps: inner.gaps,
            stream_gap_records: inner.gap_records,
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.agent.sub(self.lock().bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coral_proto::v1::SyscallStats;

    fn payload(n: u64) -> Payload {
        // Every payload of these tests encodes to the same size.
        assert!(n < 100);
        Payload::SyscallStats(SyscallStats {
            dropped: n + 1,
            ..Default::default()
        })
    }

    fn log(max_records: usize) -> EventLog {
        EventLog::new(
            Budget {
                max_records,
                max_bytes: u64::MAX,
            },
            Arc::default(),
        )
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn seqs_start_at_one_and_cursor_reads_page() {
        let log = log(10);
        for i in 0..5 {
            assert_eq!(log.push(payload(i), false), Some(i + 1));
        }
        assert_eq!(seqs(&log.read(0, 2, u64::MAX)), [1, 2]);
        let page = log.read(2, 100, u64::MAX);
        assert_eq!(seqs(&page), [3, 4, 5]);
        assert_eq!(page.missed, 0);
        assert!(log.read(5, 100, u64::MAX).records.is_empty());
        assert_eq!(
            log.read(2, 1, u64::MAX).records[0].payload(),
            Some(payload(2))
        );
    }

    #[test]
    fn a_cursor_past_the_end_reads_nothing() {
        let log = log(10);
        for i in 0..3 {
            log.push(payload(i), false);
        }
        let page = log.read(u64::MAX, 100, u64::MAX);
        assert!(page.records.is_empty());
        assert_eq!(page.missed, 0);
    }

    #[test]
    fn the_latest_aggregate_is_found_behind_events() {
        let log = log(10);
        assert!(log.latest_aggregate().is_none());
        log.push(payload(1), false);
        log.push(payload(2), false);
        log.push(
            Payload::HttpRequest(coral_proto::v1::HttpRequest::default()),
            false,
        );
        let latest = log.latest_aggregate().unwrap();
        assert_eq!((latest.seq, latest.payload()), (2, Some(payload(2))));
        log.note_gap(5);
        let stats = log.stats();
        assert_eq!((stats.stream_gaps, stats.stream_gap_records), (1, 5));
    }

    #[test]
    fn retention_drops_oldest_and_counts_it() {
        let log = log(3);
        for i in 0..7 {
            log.push(payload(i), false);
        }
        let stats = log.stats();
        assert_eq!(
            (stats.last_seq, stats.first_retained_seq, stats.dropped),
            (7, 5, 4)
        );
        let page = log.read(0, 100, u64::MAX);
        assert_eq!(page.missed, 4);
        assert_eq!(seqs(&page), [5, 6, 7]);
        assert_eq!(log.read(5, 100, u64::MAX).missed, 0);
    }

    #[test]
    fn the_byte_budget_drops_oldest_and_keeps_the_newest() {
        let agent = Arc::new(RetainedBytes::default());
        let one = {
            let probe = log(1);
            probe.push(payload(1), false);
            probe.stats().retained_bytes
        };
        let log = EventLog::new(
            Budget {
                max_records: 100,
                max_bytes: 3 * one,
            },
            agent.clone(),
        );
        for i in 0..10 {
            log.push(payload(i), false);
        }
        let stats = log.stats();
        assert_eq!(stats.retained_bytes, 3 * one);
        assert_eq!((stats.dropped, stats.dropped_bytes), (7, 7 * one));
        assert_eq!(agent.get(), 3 * one);
        // A budget smaller than one record still keeps the newest.
        let tiny = EventLog::new(
            Budget {
                max_records: 100,
                max_bytes: 1,
            },
            agent.clone(),
        );
        tiny.push(payload(1), false);
        tiny.push(payload(2), false);
        assert_eq!(seqs(&tiny.read(0, 10, u64::MAX)), [2]);
        assert_eq!(tiny.drop_oldest_for_agent(), None);
        drop(tiny);
        drop(log);
        assert_eq!(agent.get(), 0, "dropped logs give their bytes back");
    }

    #[test]
    fn pages_are_bounded_in_bytes_but_always_progress() {
        let log = log(100);
        for i in 0..10 {
            log.push(payload(i), false);
        }
        let one = log.read(0, 1, u64::MAX).records[0].size();
        assert_eq!(seqs(&log.read(0, 100, 3 * one)), [1, 2, 3]);
        assert_eq!(seqs(&log.read(3, 100, 1)), [4]);
    }

    #[test]
    fn closed_log_refuses_pushes() {
        let log = log(3);
        log.push(payload(1), true);
        log.close();
        assert_eq!(log.push(payload(2), false), None);
        assert!(log.stats().closed);
    }

    #[tokio::test]
    async fn watchers_see_pushes_and_the_end_and_are_counted() {
        let log = log(100);
        let mut live = log.watch();
        assert_eq!(log.stats().subscribers, 1);
        log.push(payload(1), false);
        live.changed().await.unwrap();
        assert_eq!(live.borrow_and_update().last_seq, 1);
        log.close();
        live.changed().await.unwrap();
        assert!(live.borrow().closed);
        drop(live);
        assert_eq!(log.stats().subscribers, 0);
    }
}
