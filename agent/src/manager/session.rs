//! One collector's task: load and attach, collect every tick until the
//! deadline or a stop, then detach, record the final result and unload.
//!
//! Every call into the collector (start, collect, detach, drop) runs on
//! tokio's blocking pool, never on an async worker: they read kernel maps,
//! drain ring buffers, symbolize and close file descriptors, and a slow one
//! must not stall the API. Each call is also where a panic is caught: a
//! collector that panics anywhere ends `Failed` with the panic's message,
//! and is still detached and dropped, so no program or link survives it.

use super::{Entry, Inner, Status};
use crate::collectors::{Collector, CollectorFactory, StartContext};
use crate::domain::{Payload, State};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::time::{MissedTickBehavior, interval_at, sleep_until};

/// Why the loop ended.
enum End {
    Expired,
    Stopped,
    Failed(String),
}

/// The text of a caught panic.
fn panic_message(panic: Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f` on the blocking pool and catches its panic (as its message).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    match tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(f))).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(panic_message(panic)),
        Err(e) => Err(format!("the blocking task was lost: {e}")),
    }
}

/// Runs `f` with the collector on the blocking pool. The collector comes
/// back even when `f` panicked, so it can still be detached and dropped.
async fn call<T: Send + 'static>(
    collector: Box<dyn Collector>,
    f: impl FnOnce(&mut dyn Collector) -> T + Send + 'static,
) -> (Option<Box<dyn Collector>>, Result<T, String>) {
    let run = tokio::task::spawn_blocking(move || {
        let mut collector = collector;
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut *collector)));
        (collector, result.map_err(panic_message))
    });
    match run.await {
        Ok((collector, result)) => (Some(collector), result),
        // Only if the runtime is shutting down; the collector was dropped
        // with the task.
        Err(e) => (None, Err(format!("the blocking task was lost: {e}"))),
    }
}

/// Collects once on the blocking pool.
async fn collect(
    collector: Box<dyn Collector>,
    elapsed: Duration,
    last: bool,
) -> (Option<Box<dyn Collector>>, Result<Vec<Payload>, String>) {
    let (collector, result) = call(collector, move |c| {
        let mut out = Vec::new();
        c.collect(elapsed, last, &mut out).map(|()| out)
    })
    .await;
    let result = match result {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("collector panicked while collecting: {panic}")),
    };
    (collector, result)
}

pub(super) async fn run(
    entry: Arc<Entry>,
    manager: Weak<Inner>,
    factory: Arc<dyn CollectorFactory>,
    ctx: StartContext,
    duration: Duration,
) {
    let begun = Instant::now();
    let loaded = blocking(move || {
        let loaded = factory.start(&ctx);
        crate::memory::release_freed();
        loaded
    })
    .await;
    let collector = match loaded {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail_start(&entry, &manager, begun, e.to_string()),
        Err(panic) => {
            return fail_start(
                &entry,
                &manager,
                begun,
                format!("collector panicked while starting: {panic}"),
            );
        }
    };
    if let Some(inner) = manager.upgrade() {
        inner.stats.started(entry.spec.kind, begun.elapsed());
    }

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
    let mut tick = interval_at((started + interval).into(), interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut held = Some(collector);
    let end = loop {
        let deadline = *deadline_rx.borrow_and_update();
        tokio::select! {
            // A tick due at the deadline would only repeat the final record.
            biased;
            _ = entry.stop.notified() => break End::Stopped,
            _ = sleep_until(deadline.into()) => break End::Expired,
            // Extended: re-arm the timer with the new deadline.
            Ok(()) = deadline_rx.changed() => continue,
            _ = tick.tick() => {
                let Some(collector) = held.take() else {
                    break End::Failed("the collector was lost".into());
                };
                let (collector, result) = collect(collector, started.elapsed(), false).await;
                held = collector;
                match result {
                    Ok(batch) => push(&entry, &manager, batch, false),
                    Err(e) => break End::Failed(e),
                }
            }
        }
    };

    let (last, error) = finish_collector(held, started, matches!(end, End::Failed(_))).await;
    let (state, error) = match (end, error) {
        (End::Failed(e), _) => (State::Failed, Some(e)),
        (_, Some(e)) => (State::Failed, Some(e)),
        (End::Expired, None) => (State::Expired, None),
        (End::Stopped, None) => (State::Stopped, None),
    };
    if state != State::Failed {
        push(&entry, &manager, last, true);
    }
    finish(&entry, &manager, state, error);
}

/// The end, in this order: detach (the kernel stops running the programs),
/// a last collect (maps are still open: it covers exactly the collector's
/// attached life), drop (maps and programs are released). A collector that
/// failed gets no final read, but is detached and dropped all the same.
/// Returns the final read's payloads and the first error met.
async fn finish_collector(
    held: Option<Box<dyn Collector>>,
    started: Instant,
    failed: bool,
) -> (Vec<Payload>, Option<String>) {
    let Some(collector) = held else {
        return (Vec::new(), Some("the collector was lost".into()));
    };
    let mut error = None;
    let (mut held, detached) = call(collector, |c| c.detach()).await;
    if let Err(panic) = detached {
        error = Some(format!("collector panicked while detaching: {panic}"));
    }
    let mut last = Vec::new();
    if !failed
        && error.is_none()
        && let Some(collector) = held.take()
    {
        let (collector, result) = collect(collector, started.elapsed(), true).await;
        held = collector;
        match result {
            Ok(out) => last = out,
            Err(e) => error = Some(format!("final read: {e}")),
        }
    }
    if let Some(collector) = held {
        // Dropping closes the fds; a panicking Drop still drops the fields
        // it owns while unwinding, so the kernel objects go either way.
        if let Err(panic) = blocking(move || drop(collector)).await {
            error.get_or_insert(format!("collector panicked while being dropped: {panic}"));
        }
    }
    (last, error)
}

/// Pushes a batch; with `last`, its last payload is the final record.
fn push(entry: &Entry, manager: &Weak<Inner>, batch: Vec<Payload>, last: bool) {
    if batch.is_empty() {
        return;
    }
    if let Some(lost) = batch.iter().rev().find_map(crate::kinds::kernel_losses) {
        entry.update(|s| s.kernel_lost = lost);
    }
    entry.log.push_batch(batch, last);
    if let Some(inner) = manager.upgrade() {
        inner.enforce_retained_bytes();
    }
}

fn fail_start(entry: &Entry, manager: &Weak<Inner>, begun: Instant, error: String) {
    if let Some(inner) = manager.upgrade() {
        inner.stats.start_failed(entry.spec.kind, begun.elapsed());
    }
    tracing::warn!(id = %entry.id, kind = %entry.spec.kind, error = %coral_proto::text::Cleaned::log(&error),
        "collector failed to start");
    finish(entry, manager, State::Failed, Some(error));
}

pub(super) fn finish(entry: &Entry, manager: &Weak<Inner>, state: State, error: Option<String>) {
    let shown = error.as_deref().map(coral_proto::text::Cleaned::log);
    tracing::info!(id = %entry.id, ?state, error = ?shown, "collector ended");
    // Close the log before publishing the state, so a client that sees the
    // terminal state also sees the final record and the end of its stream.
    entry.log.close();
    if state == State::Failed
        && entry.status().started.is_some()
        && let Some(inner) = manager.upgrade()
    {
        inner.stats.run_failed(entry.spec.kind);
    }
    entry.update(|s: &mut Status| {
        s.state = state;
        s.ended = Some(SystemTime::now());
        s.error = error;
        s.program_ids.clear();
    });
    if let Some(inner) = manager.upgrade() {
        inner.reap_excess_ended();
    }
}
