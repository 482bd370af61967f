//! A collector's records: a bounded, sequence-numbered ring plus a broadcast to
//! live subscribers.
//!
//! Collection never waits for readers. Retention drops the oldest record (and
//! counts it) once full; a subscriber that falls more than [`STREAM_BUFFER`]
//! records behind is told how many it lost (a gap) instead of slowing anyone.

use crate::domain::{Payload, Record};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Records a live subscriber may lag behind before it gets a gap.
pub const STREAM_BUFFER: usize = 1024;

pub struct EventLog {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    records: VecDeque<Arc<Record>>,
    last_seq: u64,
    dropped: u64,
    /// `None` once the collector has ended: receivers then see `Closed`.
    live: Option<broadcast::Sender<Arc<Record>>>,
    /// Kept so the subscriber count survives `live` being taken.
    subscribers: broadcast::WeakSender<Arc<Record>>,
}

/// What a new subscriber gets: the retained records it asked for, how many it
/// asked for that are gone, and the live feed (unless the log is closed).
pub struct Subscription {
    pub replay: Vec<Arc<Record>>,
    pub missed: u64,
    pub live: Option<broadcast::Receiver<Arc<Record>>>,
    /// The last seq recorded when subscribing: live records after it are new.
    pub last_seq: u64,
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
    pub subscribers: u32,
    pub closed: bool,
}

pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(STREAM_BUFFER);
        Self {
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                last_seq: 0,
                dropped: 0,
                subscribers: tx.downgrade(),
                live: Some(tx),
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the ring half-updated
        // in a way readers care about, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record and returns its seq. Ignored once closed.
    pub fn push(&self, payload: Payload, last: bool) -> Option<u64> {
        let mut inner = self.lock();
        let live = inner.live.clone()?;
        inner.last_seq += 1;
        let record = Arc::new(Record {
            seq: inner.last_seq,
            time_unix_nano: unix_nanos(SystemTime::now()),
            last,
            payload,
        });
        if inner.records.len() == self.capacity {
            inner.records.pop_front();
            inner.dropped += 1;
        }
        inner.records.push_back(record.clone());
        // No receiver is fine: nobody is streaming.
        let _ = live.send(record);
        Some(inner.last_seq)
    }

    /// Ends the live feed: subscribers drain what they have, then see the end.
    pub fn close(&self) {
        self.lock().live = None;
    }

    fn first_retained(inner: &Inner) -> u64 {
        inner.records.front().map_or(inner.last_seq + 1, |r| r.seq)
    }

    /// Records with `seq > after_seq`, at most `max`.
    pub fn read(&self, after_seq: u64, max: usize) -> Page {
        Self::page(&self.lock(), after_seq, max)
    }

    fn page(inner: &Inner, after_seq: u64, max: usize) -> Page {
        let first = Self::first_retained(inner);
        let start = after_seq + 1;
        let missed = first
            .saturating_sub(start)
            .min(inner.last_seq.saturating_sub(after_seq));
        let skip = start.saturating_sub(first) as usize;
        let records = inner.records.iter().skip(skip).take(max).cloned().collect();
        Page { records, missed }
    }

    /// Retained records from `from_seq` (0: none, live only), then live ones.
    /// Subscribing and copying happen under one lock, so no record falls
    /// between the replay and the live feed, and none comes twice.
    pub fn subscribe(&self, from_seq: u64) -> Subscription {
        let inner = self.lock();
        let live = inner.live.as_ref().map(|tx| tx.subscribe());
        let page = match from_seq {
            0 => Page {
                records: Vec::new(),
                missed: 0,
            },
            from => Self::page(&inner, from - 1, usize::MAX),
        };
        Subscription {
            replay: page.records,
            missed: page.missed,
            live,
            last_seq: inner.last_seq,
        }
    }

    pub fn stats(&self) -> LogStats {
        let inner = self.lock();
        LogStats {
            last_seq: inner.last_seq,
            first_retained_seq: Self::first_retained(&inner),
            dropped: inner.dropped,
            subscribers: inner
                .subscribers
                .upgrade()
                .map_or(0, |tx| tx.receiver_count() as u32),
            closed: inner.live.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coral_proto::v1::SyscallStats;

    fn payload(n: u64) -> Payload {
        Payload::SyscallStats(SyscallStats {
            dropped: n,
            ..Default::default()
        })
    }

    #[test]
    fn seqs_start_at_one_and_cursor_reads_page() {
        let log = EventLog::new(10);
        for i in 0..5 {
            assert_eq!(log.push(payload(i), false), Some(i + 1));
        }
        let page = log.read(0, 2);
        assert_eq!(
            page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        let page = log.read(2, 100);
        assert_eq!(
            page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(page.missed, 0);
        assert!(log.read(5, 100).records.is_empty());
    }

    #[test]
    fn retention_drops_oldest_and_counts_it() {
        let log = EventLog::new(3);
        for i in 0..7 {
            log.push(payload(i), false);
        }
        let stats = log.stats();
        assert_eq!(
            (stats.last_seq, stats.first_retained_seq, stats.dropped),
            (7, 5, 4)
        );
        let page = log.read(0, 100);
        assert_eq!(page.missed, 4);
        assert_eq!(
            page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!(log.read(5, 100).missed, 0);
    }

    #[test]
    fn closed_log_refuses_pushes() {
        let log = EventLog::new(3);
        log.push(payload(1), true);
        log.close();
        assert_eq!(log.push(payload(2), false), None);
        assert!(log.stats().closed);
    }

    #[tokio::test]
    async fn subscribe_replays_then_follows_and_counts_subscribers() {
        let log = EventLog::new(100);
        log.push(payload(1), false);
        log.push(payload(2), false);
        let sub = log.subscribe(2);
        assert_eq!(sub.replay.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
        let mut live = sub.live.unwrap();
        assert_eq!(log.stats().subscribers, 1);
        log.push(payload(3), false);
        assert_eq!(live.recv().await.unwrap().seq, 3);
        log.close();
        assert!(matches!(
            live.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        drop(live);
        assert_eq!(log.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn slow_subscriber_lags_instead_of_blocking() {
        let log = EventLog::new(10);
        let mut live = log.subscribe(0).live.unwrap();
        for i in 0..(STREAM_BUFFER as u64 + 10) {
            log.push(payload(i), false);
        }
        assert!(matches!(
            live.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
    }
}
