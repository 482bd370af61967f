//! The eBPF manager: a registry of collectors, the limits, and each
//! collector's lifecycle.
//!
//! ```text
//! StartCollector ─► Starting ──load+attach ok──► Running ──deadline──► Expired
//!                      │                           ├──StopCollector──► Stopped
//!                      └──load/attach failed──► Failed  └──read error──► Failed
//! ```
//!
//! Each collector runs in its own task ([`session`]), spawned by the manager,
//! so its lifetime never depends on the RPC that started it: the deadline is
//! a timer in that task. At the end the task detaches every program at once,
//! reads the maps a last time, records that as the final record, and drops the
//! collector (unloading everything). Ended collectors stay readable for the
//! retention period, then the reaper removes them.

pub mod event_log;
mod session;
pub mod stats;

use crate::capabilities::HostCapabilities;
use crate::collectors::{CollectorFactory, StartContext};
use crate::config::{Limits, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS};
use crate::domain::{Kind, Spec, State};
use crate::error::Error;
use coral_proto::text::quote;
use dashmap::DashMap;
use event_log::{Budget, EventLog, LogStats, RetainedBytes};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// Why a kind is unavailable when the manager was given no factory for it
/// (only tests do that: the agent registers every kind).
const NO_FACTORY: &str = "no factory registered for this kind";

/// Longest comm the kernel stores (TASK_COMM_LEN - 1).
const MAX_COMM_LEN: usize = 15;

/// The mutable part of a collector, published through a watch channel so
/// callers can wait for a state change.
#[derive(Clone, Debug)]
pub struct Status {
    pub state: State,
    pub started: Option<SystemTime>,
    pub deadline: Option<SystemTime>,
    pub ended: Option<SystemTime>,
    pub error: Option<String>,
    /// Loaded BPF program ids; emptied when the collector ends.
    pub program_ids: Vec<u32>,
    /// What the kernel side lost, from the latest aggregate.
    pub kernel_lost: u64,
}

/// One collector in the registry.
pub struct Entry {
    pub id: String,
    pub spec: Spec,
    pub created: SystemTime,
    pub log: EventLog,
    status: watch::Sender<Status>,
    stop: Notify,
    /// Monotonic deadline; the session re-arms its timer when it changes.
    deadline: watch::Sender<Instant>,
}

impl Entry {
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }

    /// Waits until the collector reaches a terminal state.
    pub async fn ended(&self) -> Status {
        let mut rx = self.status.subscribe();
        let status = rx
            .wait_for(|s| s.state.is_terminal())
            .await
            .map(|s| s.clone());
        // The sender lives in `self`, so the channel cannot close under us.
        status.unwrap_or_else(|_| self.status())
    }
}

/// A consistent view of one collector, for `GetCollector` and friends.
#[derive(Clone, Debug)]
pub struct CollectorView {
    pub id: String,
    pub spec: Spec,
    pub created: SystemTime,
    pub status: Status,
    pub log: LogStats,
}

impl From<&Entry> for CollectorView {
    fn from(e: &Entry) -> Self {
        Self {
            id: e.id.clone(),
            spec: e.spec.clone(),
            created: e.created,
            status: e.status(),
            log: e.log.stats(),
        }
    }
}

/// A started collector and what the caller should be told about it.
#[derive(Debug)]
pub struct Started {
    pub view: CollectorView,
    pub warnings: Vec<String>,
}

/// Cheap to clone: every clone is the same manager.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    agent_id: String,
    limits: Limits,
    caps: HostCapabilities,
    factories: HashMap<Kind, Arc<dyn CollectorFactory>>,
    /// Availability of every kind, decided once (capabilities are probed
    /// once), so no request runs a factory's checks on an async worker.
    kinds: Vec<KindStatus>,
    entries: DashMap<String, Arc<Entry>>,
    /// Held while counting running collectors and inserting a new one, so two
    /// concurrent starts cannot both take the last slot.
    admission: Mutex<()>,
    /// Bytes every log retains together.
    retained: Arc<RetainedBytes>,
    /// Held while dropping records for the agent-wide budget, so two
    /// collectors pushing at once do not both drop for the same excess.
    evicting: Mutex<()>,
    /// Starts, failures and start latencies, for the exporter.
    stats: stats::ManagerStats,
}

/// Per-kind availability for capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindStatus {
    pub kind: Kind,
    pub available: bool,
    pub reason: String,
    pub hooks: Vec<String>,
}

impl Manager {
    /// Must be called inside a tokio runtime: it spawns the reaper. Runs
    /// every factory's availability check, so call it off async workers.
    pub fn new(
        limits: Limits,
        caps: HostCapabilities,
        factories: Vec<Box<dyn CollectorFactory>>,
    ) -> Self {
        let factories: HashMap<Kind, Arc<dyn CollectorFactory>> = factories
            .into_iter()
            .map(|f| (f.kind(), Arc::from(f)))
            .collect();
        let kinds = kind_statuses(&factories, &caps);
        let inner = Arc::new(Inner {
            agent_id: uuid::Uuid::new_v4().to_string(),
            limits,
            caps,
            factories,
            kinds,
            entries: DashMap::new(),
            admission: Mutex::new(()),
            retained: Arc::default(),
            evicting: Mutex::new(()),
            stats: Default::default(),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    pub fn agent_id(&self) -> &str {
        &self.inner.agent_id
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn capabilities(&self) -> &HostCapabilities {
        &self.inner.caps
    }

    /// Availability of every kind the API knows.
    pub fn kinds(&self) -> &[KindStatus] {
        &self.inner.kinds
    }

    /// Starts, failures and start latencies per kind since the agent started.
    pub fn stats(&self) -> &stats::ManagerStats {
        &self.inner.stats
    }

    /// Bytes of records every collector retains together right now.
    pub fn retained_bytes(&self) -> u64 {
        self.inner.retained.get()
    }

    fn validate(&self, spec: &Spec) -> Result<(Arc<dyn CollectorFactory>, Duration), Error> {
        let limits = &self.inner.limits;
        let duration = match spec.duration {
            None => limits.default_duration,
            Some(d) if d.is_zero() => return Err(Error::ZeroDuration),
            Some(d) if d > limits.max_duration => {
                return Err(Error::DurationTooLong {
                    requested: d,
                    max: limits.max_duration,
                });
            }
            Some(d) => d,
        };
        let filter = &spec.filter;
        if filter.pids.len() > limits.max_filter_pids {
            return Err(Error::InvalidArgument(format!(
                "{} pids given; a filter takes at most {}",
                filter.pids.len(),
                limits.max_filter_pids
            )));
        }
        if filter.pids.contains(&0) {
            return Err(Error::InvalidArgument("pid 0 is not a process".into()));
        }
        if let Some(comm) = &filter.comm {
            if comm.is_empty() || comm.len() > MAX_COMM_LEN {
                return Err(Error::InvalidArgument(format!(
                    "comm {} must be 1 to {MAX_COMM_LEN} bytes (the kernel keeps no more)",
                    quote(comm)
                )));
            }
            // The kernel compares NUL-terminated names: "ab\0cd" would trace "ab".
            if comm.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "comm {} contains a NUL byte: a task name cannot",
                    quote(comm)
                )));
            }
        }
        check_labels(spec)?;
        if spec.export && !crate::export::results::exported(spec.kind) {
            return Err(Error::InvalidArgument(format!(
                "{} results are not exported as metrics (read them with GetEvents); start it without export",
                spec.kind
            )));
        }
        let factory = self
            .inner
            .factories
            .get(&spec.kind)
            .cloned()
            .ok_or_else(|| Error::Unavailable {
                kind: spec.kind,
                reason: NO_FACTORY.into(),
            })?;
        if let Some(cgroup) = &filter.cgroup {
            factory
                .check_cgroup(self.inner.caps.cgroup2_path.as_deref(), cgroup)
                .map_err(Error::InvalidArgument)?;
        }
        factory
            .validate(spec.config.as_ref(), limits)
            .map_err(|e| Error::InvalidArgument(format!("{} config: {e}", spec.kind)))?;
        if let Some(status) = self.inner.kinds.iter().find(|k| k.kind == spec.kind)
            && !status.available
        {
            return Err(Error::Unavailable {
                kind: spec.kind,
                reason: status.reason.clone(),
            });
        }
        Ok((factory, duration))
    }

    /// A `container` filter becomes the cgroup of that container.
    fn resolve_container(&self, mut spec: Spec) -> Result<Spec, Error> {
        let Some(container) = &spec.filter.container else {
            return Ok(spec);
        };
        if spec.filter.cgroup.is_some() {
            return Err(Error::InvalidArgument(
                "give a cgroup or a container filter, not both".into(),
            ));
        }
        let root = self.inner.caps.cgroup2_path.as_deref();
        let cgroup = crate::containers::resolve::find_container(root, container)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        spec.filter.cgroup = Some(cgroup.display().to_string());
        Ok(spec)
    }

    /// Starts a collector and waits until it runs (or fails to).
    pub async fn start(&self, spec: Spec) -> Result<Started, Error> {
        let spec = self.resolve_container(spec)?;
        let (factory, duration) = self.validate(&spec)?;
        let mut warnings = Vec::new();
        if spec.filter.is_whole_machine() {
            warnings.push(format!(
                "no pid, cgroup or comm filter: {} traces every process on this node",
                spec.kind
            ));
        }

        let entry = {
            let _admission = self
                .inner
                .admission
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let running = self
                .inner
                .entries
                .iter()
                .filter(|e| !e.status.borrow().state.is_terminal())
                .count();
            if running >= self.inner.limits.max_running as usize {
                return Err(Error::TooManyCollectors {
                    max: self.inner.limits.max_running,
                });
            }
            let entry = Arc::new(Entry {
                id: uuid::Uuid::new_v4().to_string(),
                spec: spec.clone(),
                created: SystemTime::now(),
                log: EventLog::new(
                    Budget {
                        max_records: self.inner.limits.max_records,
                        max_bytes: self.inner.limits.max_collector_bytes,
                    },
                    self.inner.retained.clone(),
                ),
                status: watch::Sender::new(Status {
                    state: State::Starting,
                    started: None,
                    deadline: None,
                    ended: None,
                    error: None,
                    program_ids: Vec::new(),
                    kernel_lost: 0,
                }),
                stop: Notify::new(),
                deadline: watch::Sender::new(Instant::now() + duration),
            });
            self.inner.entries.insert(entry.id.clone(), entry.clone());
            entry
        };

        let ctx = StartContext {
            spec,
            agent_pid: std::process::id(),
            cgroup2_root: self.inner.caps.cgroup2_path.clone(),
            uprobes: self.inner.caps.uprobes,
        };
        let session = tokio::spawn(session::run(
            entry.clone(),
            Arc::downgrade(&self.inner),
            factory,
            ctx,
            duration,
        ));
        // Supervise the session task itself: should it die (a panic in the
        // manager's own code: the collector's calls are caught inside), the
        // collector still ends Failed and its slot is released.
        let supervised = entry.clone();
        let manager = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if let Err(e) = session.await
                && !supervised.status().state.is_terminal()
            {
                session::finish(
                    &supervised,
                    &manager,
                    State::Failed,
                    Some(format!(
                        "internal error: the collector's session ended: {e}"
                    )),
                );
            }
        });

        let mut rx = entry.status.subscribe();
        let status = rx
            .wait_for(|s| s.state != State::Starting)
            .await
            .map(|s| s.clone())
            .unwrap_or_else(|_| entry.status());
        if status.state == State::Failed {
            return Err(Error::CollectorFailed {
                kind: entry.spec.kind,
                id: entry.id.clone(),
                reason: status.error.unwrap_or_default(),
            });
        }
        Ok(Started {
            view: CollectorView::from(&*entry),
            warnings,
        })
    }

    pub fn entry(&self, id: &str) -> Result<Arc<Entry>, Error> {
        self.inner
            .entries
            .get(id)
            .map(|e| e.clone())
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    pub fn get(&self, id: &str) -> Result<CollectorView, Error> {
        Ok(CollectorView::from(&*self.entry(id)?))
    }

    /// Every collector, oldest first.
    pub fn list(&self) -> Vec<CollectorView> {
        let mut all: Vec<_> = self
            .inner
            .entries
            .iter()
            .map(|e| CollectorView::from(&**e))
            .collect();
        all.sort_by_key(|v| v.created);
        all
    }

    /// Ends a running collector and waits for its final record.
    pub async fn stop(&self, id: &str) -> Result<CollectorView, Error> {
        let entry = self.entry(id)?;
        let state = entry.status().state;
        if state.is_terminal() {
            return Err(Error::NotRunning {
                id: id.to_string(),
                state,
            });
        }
        entry.stop.notify_one();
        let wait = self.inner.limits.stop_timeout;
        tokio::time::timeout(wait, entry.ended())
            .await
            .map_err(|_| Error::StopTimedOut {
                id: id.to_string(),
                waited: wait,
            })?;
        Ok(CollectorView::from(&*entry))
    }

    /// Sets a running collector's deadline to now + `duration`.
    pub fn extend(&self, id: &str, duration: Duration) -> Result<CollectorView, Error> {
        let entry = self.entry(id)?;
        let max = self.inner.limits.max_duration;
        if duration.is_zero() {
            return Err(Error::ZeroDuration);
        }
        if duration > max {
            return Err(Error::DurationTooLong {
                requested: duration,
                max,
            });
        }
        let state = entry.status().state;
        if state != State::Running {
            return Err(Error::NotRunning {
                id: id.to_string(),
                state,
            });
        }
        entry.deadline.send_replace(Instant::now() + duration);
        entry.update(|s| s.deadline = Some(SystemTime::now() + duration));
        Ok(CollectorView::from(&*entry))
    }

    /// Stops every live collector (each records its final result) and waits
    /// for them, at most the stop timeout in all. Returns the ids of those
    /// that had not ended by then: the process exit releases their kernel
    /// objects (every one is held through the agent's file descriptors).
    pub async fn shutdown(&self) -> Vec<String> {
        let live: Vec<_> = self
            .inner
            .entries
            .iter()
            .filter(|e| !e.status().state.is_terminal())
            .map(|e| e.clone())
            .collect();
        for entry in &live {
            entry.stop.notify_one();
        }
        let all = futures_util::future::join_all(live.iter().map(|e| e.ended()));
        let _ = tokio::time::timeout(self.inner.limits.stop_timeout, all).await;
        live.iter()
            .filter(|e| !e.status().state.is_terminal())
            .map(|e| e.id.clone())
            .collect()
    }
}

/// Every kind's availability, with its hooks.
fn kind_statuses(
    factories: &HashMap<Kind, Arc<dyn CollectorFactory>>,
    caps: &HostCapabilities,
) -> Vec<KindStatus> {
    Kind::ALL
        .iter()
        .map(|&kind| match factories.get(&kind) {
            None => KindStatus {
                kind,
                available: false,
                reason: NO_FACTORY.into(),
                hooks: Vec::new(),
            },
            Some(f) => {
                let verdict = f.availability(caps);
                KindStatus {
                    kind,
                    available: verdict.is_ok(),
                    // Available kinds say what they cannot do here, if anything.
                    reason: match verdict {
                        Ok(()) => f.notes(caps).unwrap_or_default(),
                        Err(reason) => reason,
                    },
                    hooks: f.hooks_here(caps).iter().map(|h| h.to_string()).collect(),
                }
            }
        })
        .collect()
}

/// Labels are copied into every record a client reads: bounded.
fn check_labels(spec: &Spec) -> Result<(), Error> {
    if spec.labels.len() > MAX_LABELS {
        return Err(Error::InvalidArgument(format!(
            "{} labels given; a collector takes at most {MAX_LABELS}",
            spec.labels.len()
        )));
    }
    for (key, value) in &spec.labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "label keys must be 1 to {MAX_LABEL_KEY_BYTES} bytes; one is {}",
                key.len()
            )));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "label values must be at most {MAX_LABEL_VALUE_BYTES} bytes; one is {}",
                value.len()
            )));
        }
    }
    Ok(())
}

impl Inner {
    /// Drops the agent's oldest records, whichever collectors made them,
    /// until all logs together fit the agent-wide budget. A log's newest
    /// record is never dropped here.
    fn enforce_retained_bytes(&self) {
        if self.retained.get() <= self.limits.max_retained_bytes {
            return;
        }
        let _evicting = self.evicting.lock().unwrap_or_else(|e| e.into_inner());
        while self.retained.get() > self.limits.max_retained_bytes {
            let oldest = self
                .entries
                .iter()
                .filter_map(|e| e.log.oldest_droppable().map(|t| (t, e.clone())))
                .min_by_key(|(t, _)| *t);
            let Some((_, entry)) = oldest else { break };
            if entry.log.drop_oldest_for_agent().is_none() {
                break;
            }
        }
    }

    /// Removes the collectors that ended first while more than
    /// `max_ended` ended ones are kept.
    fn reap_excess_ended(&self) {
        let mut ended: Vec<(SystemTime, String)> = self
            .entries
            .iter()
            .filter_map(|e| {
                let status = e.status.borrow();
                match status.ended {
                    Some(t) if status.state.is_terminal() => Some((t, e.id.clone())),
                    _ => None,
                }
            })
            .collect();
        if ended.len() <= self.limits.max_ended {
            return;
        }
        ended.sort();
        let excess = ended.len() - self.limits.max_ended;
        for (_, id) in ended.into_iter().take(excess) {
            self.entries.remove(&id);
        }
    }
}

/// Removes ended collectors once their retention has passed. Holds only a weak
/// reference, so it ends with the manager.
async fn reap(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => i
            .limits
            .retention
            .clamp(Duration::from_millis(50), Duration::from_secs(5)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = SystemTime::now();
        let retention = inner.limits.retention;
        inner.entries.retain(|_, e| {
            let status = e.status.borrow();
            match status.ended {
                Some(ended) if status.state.is_terminal() => {
                    now.duration_since(ended).unwrap_or_default() < retention
                }
                _ => true,
            }
        });
    }
}

#[cfg(test)]
mod tests;
