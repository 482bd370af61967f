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

use crate::capabilities::HostCapabilities;
use crate::collectors::{CollectorFactory, StartContext};
use crate::config::Limits;
use crate::domain::{Kind, Spec, State};
use crate::error::Error;
use dashmap::DashMap;
use event_log::{EventLog, LogStats};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

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
    entries: DashMap<String, Arc<Entry>>,
    /// Held while counting running collectors and inserting a new one, so two
    /// concurrent starts cannot both take the last slot.
    admission: Mutex<()>,
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
    /// Must be called inside a tokio runtime: it spawns the reaper.
    pub fn new(
        limits: Limits,
        caps: HostCapabilities,
        factories: Vec<Box<dyn CollectorFactory>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            agent_id: uuid::Uuid::new_v4().to_string(),
            limits,
            caps,
            factories: factories
                .into_iter()
                .map(|f| (f.kind(), Arc::from(f)))
                .collect(),
            entries: DashMap::new(),
            admission: Mutex::new(()),
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

    /// Availability of every kind the API knows, built or not.
    pub fn kinds(&self) -> Vec<KindStatus> {
        Kind::ALL
            .iter()
            .map(|&kind| match self.inner.factories.get(&kind) {
                None => KindStatus {
                    kind,
                    available: false,
                    reason: "not implemented in this agent version".into(),
                    hooks: Vec::new(),
                },
                Some(f) => {
                    let verdict = f.availability(&self.inner.caps);
                    KindStatus {
                        kind,
                        available: verdict.is_ok(),
                        reason: verdict.err().unwrap_or_default(),
                        hooks: f.hooks().iter().map(|h| h.to_string()).collect(),
                    }
                }
            })
            .collect()
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
        if let Some(comm) = &filter.comm
            && (comm.is_empty() || comm.len() > MAX_COMM_LEN)
        {
            return Err(Error::InvalidArgument(format!(
                "comm {comm:?} must be 1 to {MAX_COMM_LEN} bytes (the kernel keeps no more)"
            )));
        }
        let factory = self
            .inner
            .factories
            .get(&spec.kind)
            .cloned()
            .ok_or_else(|| Error::Unavailable {
                kind: spec.kind,
                reason: "not implemented in this agent version".into(),
            })?;
        if let Some(cgroup) = &filter.cgroup {
            factory
                .check_cgroup(self.inner.caps.cgroup2_path.as_deref(), cgroup)
                .map_err(Error::InvalidArgument)?;
        }
        factory
            .validate(spec.config.as_ref(), limits)
            .map_err(|e| Error::InvalidArgument(format!("{} config: {e}", spec.kind)))?;
        factory
            .availability(&self.inner.caps)
            .map_err(|reason| Error::Unavailable {
                kind: spec.kind,
                reason,
            })?;
        Ok((factory, duration))
    }

    /// Starts a collector and waits until it runs (or fails to).
    pub async fn start(&self, spec: Spec) -> Result<Started, Error> {
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
                log: EventLog::new(self.inner.limits.max_records),
                status: watch::Sender::new(Status {
                    state: State::Starting,
                    started: None,
                    deadline: None,
                    ended: None,
                    error: None,
                    program_ids: Vec::new(),
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
        };
        tokio::spawn(session::run(entry.clone(), factory, ctx, duration));

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
        entry.ended().await;
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

    /// Stops every live collector (each records its final result) and waits.
    pub async fn shutdown(&self) {
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
        for entry in live {
            entry.ended().await;
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
