//! The ingest queue: every pull hands its records here, and one writer task
//! stores them in batches (one transaction per batch), so the store sees a
//! few large commits instead of one per record, whatever the number of
//! agents. The queue is bounded: when the store falls behind, pulls wait,
//! and the agents keep the records meanwhile (a pull resumes from its
//! cursor; what an agent drops in between is reported as a gap).
//!
//! A failed commit is retried (the batch is kept) until it succeeds: a
//! record handed over is never dropped by the colony while it runs. If the
//! colony dies with records queued, they were not stored, so the stored
//! cursor is behind them and the pull after the restart fetches them again.

use crate::store::{LossRow, RecordRow, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Items the queue holds before pulls wait.
pub const QUEUE: usize = 8192;
/// Records per transaction at most.
pub const BATCH: usize = 2000;
/// Pause before retrying a failed commit.
const RETRY: Duration = Duration::from_secs(1);

enum Item {
    Record(RecordRow),
    Loss(LossRow),
    /// Answered once everything queued before it is stored.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Item>,
    stored: Arc<AtomicU64>,
}

impl Ingest {
    pub fn start(store: Arc<dyn Store>) -> Ingest {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stored = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(store, rx, stored.clone()));
        Ingest { tx, stored }
    }

    pub async fn record(&self, r: RecordRow) {
        let _ = self.tx.send(Item::Record(r)).await;
    }

    pub async fn loss(&self, l: LossRow) {
        let _ = self.tx.send(Item::Loss(l)).await;
    }

    /// Waits until everything handed over so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Records newly stored by this process since it started.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Item>, stored: Arc<AtomicU64>) {
    let mut records = Vec::with_capacity(BATCH);
    let mut losses = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Record(r) => records.push(r),
                Item::Loss(l) => losses.push(l),
                Item::Flush(f) => flushes.push(f),
            }
            if records.len() >= BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        loop {
            match store.insert(&records, &losses).await {
                Ok(n) => {
                    stored.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Err(err) => {
                    tracing::error!(error = %err, records = records.len(), "storing records failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        records.clear();
        losses.clear();
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}
