//! One collector's task: load and attach, snapshot every interval until the
//! deadline or a stop, then detach, record the final result and unload.

use super::{Entry, Status};
use crate::collectors::{Collector, CollectorFactory, StartContext};
use crate::domain::State;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::time::{MissedTickBehavior, interval_at, sleep_until};

/// Why the loop ended.
enum End {
    Expired,
    Stopped,
    Failed(String),
}

pub(super) async fn run(
    entry: Arc<Entry>,
    factory: Arc<dyn CollectorFactory>,
    ctx: StartContext,
    duration: Duration,
) {
    let loaded = tokio::task::spawn_blocking(move || {
        let loaded = factory.start(&ctx);
        crate::memory::release_freed();
        loaded
    })
    .await;
    let mut collector: Box<dyn Collector> = match loaded {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail_start(&entry, e.to_string()),
        Err(e) => return fail_start(&entry, format!("collector start panicked: {e}")),
    };

    let started = Instant::now();
    entry.deadline.send_replace(started + duration);
    let mut deadline_rx = entry.deadline.subscribe();
    entry.update(|s| {
        s.state = State::Running;
        s.started = Some(SystemTime::now());
        s.deadline = Some(SystemTime::now() + duration);
        s.program_ids = collector.program_ids();
    });
    tracing::info!(id = %entry.id, kind = %entry.spec.kind, ?duration, "collector running");

    let interval = collector.tick_interval().max(Duration::from_millis(10));
    let mut batch = Vec::new();
    let mut tick = interval_at((started + interval).into(), interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let end = loop {
        let deadline = *deadline_rx.borrow_and_update();
        tokio::select! {
            // A tick due at the deadline would only repeat the final record.
            biased;
            _ = entry.stop.notified() => break End::Stopped,
            _ = sleep_until(deadline.into()) => break End::Expired,
            // Extended: re-arm the timer with the new deadline.
            Ok(()) = deadline_rx.changed() => continue,
            _ = tick.tick() => match collector.collect(started.elapsed(), false, &mut batch) {
                Ok(()) => {
                    for payload in batch.drain(..) {
                        entry.log.push(payload, false);
                    }
                }
                Err(e) => break End::Failed(e.to_string()),
            },
        }
    };

    // Detach first, so the final numbers cover exactly the collector's life.
    collector.detach();
    batch.clear();
    let last = collector.collect(started.elapsed(), true, &mut batch);
    drop(collector);

    let (state, error) = match (end, last) {
        (End::Failed(e), _) => (State::Failed, Some(e)),
        (_, Err(e)) => (State::Failed, Some(format!("final read: {e}"))),
        (end, Ok(())) => {
            let n = batch.len();
            for (i, payload) in batch.drain(..).enumerate() {
                entry.log.push(payload, i + 1 == n);
            }
            match end {
                End::Expired => (State::Expired, None),
                _ => (State::Stopped, None),
            }
        }
    };
    finish(&entry, state, error);
}

fn fail_start(entry: &Entry, error: String) {
    tracing::warn!(id = %entry.id, kind = %entry.spec.kind, %error, "collector failed to start");
    finish(entry, State::Failed, Some(error));
}

fn finish(entry: &Entry, state: State, error: Option<String>) {
    tracing::info!(id = %entry.id, ?state, ?error, "collector ended");
    // Close the log before publishing the state, so a client that sees the
    // terminal state also sees the final record and the end of its stream.
    entry.log.close();
    entry.update(|s: &mut Status| {
        s.state = state;
        s.ended = Some(SystemTime::now());
        s.error = error;
        s.program_ids.clear();
    });
}
