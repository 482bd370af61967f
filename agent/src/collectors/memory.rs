//! memory: resident memory per process and per cgroup, its growth, the time
//! until it reaches its limit (with a 95% interval), and OOM kills.
//!
//! Kernel side: `src/bpf/memory.bpf.c`, BTF tracepoints only (no kprobes,
//! no fentry, no tracefs):
//! - `tp_btf/rss_stat`: every change of an mm's counters. The kernel side maps
//!   the mm to its process through `mm->owner` (the event may run in a
//!   reclaimer's or a vfork child's context), keeps the latest file, anon,
//!   swap and shmem pages per process in a hash, and sends a process on a ring
//!   buffer when it moved by the threshold (default 1 MiB);
//! - `tp_btf/mark_victim` (Linux 6.8+, where it takes the victim task): the
//!   victim's counters, memory cgroup and the cgroup whose limit was hit;
//! - `tp_btf/sched_process_exit`: forgets a process when its last thread ends.
//!
//! User space drains the ring buffer every [`TICK`]; every interval it reads
//! the process hash, samples the memory cgroups from cgroupfs (the target,
//! and the limited cgroups of the processes seen: v1 or v2, see
//! [`cgroupfs`]), fits a line through each one's unreclaimable memory over
//! the window and predicts the time to its limit ([`predict`]), and pushes
//! one `MemoryStats`. OOM kills are pushed as `OomKill` events as they are
//! drained.
//!
//! Needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN), BTF, BPF ring buffers.
//! `--cgroup` takes a cgroup of the memory controller's hierarchy, v1
//! (`/sys/fs/cgroup/memory/...`) or v2; the kernel filters processes by the
//! memory cgroup they are charged to (itself or a descendant of the target).

pub mod cgroupfs;
pub mod predict;

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval_from};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::domain::{Kind, KindConfig, Payload};
use crate::tracepoints::{self, VMLINUX_BTF};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::{Ebpf, EbpfLoader};
use cgroupfs::{Hierarchy, Index, Target, Usage, Version};
use coral_ebpf_programs::memory::{
    ANON, COUNTERS, DROP_SLOTS, EV_EXIT, EV_OOM, EV_RSS, ExitEvent, FILE, OBJECT, OomEvent, Proc,
    RssEvent, SHMEM, SWAP, read_record, record_kind,
};
use coral_proto::error_chain;
use coral_proto::v1::{
    MemoryCgroup, MemoryConfig, MemoryPrediction, MemoryProcess, MemoryStats, OomKill,
    PredictionState,
};
use predict::{Prediction, Series, State};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Snapshot interval when the request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest snapshot interval: each one reads a few files per cgroup.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Fit window when the request gives none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Longest window: samples are kept in memory for it.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Report granularity of a process's RSS when the request gives none.
pub const DEFAULT_THRESHOLD: u64 = 1 << 20;
/// Confidence horizon when the request gives none.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(3600);
/// Process rows per snapshot when the request gives none, and at most.
pub const DEFAULT_MAX_PROCESSES: u32 = 50;
pub const MAX_PROCESSES: u32 = 10_000;
/// How often the ring buffer is drained.
pub const TICK: Duration = Duration::from_millis(100);
/// Processes tracked at once (the kernel map's size).
pub const PROC_ENTRIES: u32 = 16_384;
/// cgroup rows per snapshot (the target first).
pub const MAX_CGROUPS: usize = 32;
/// Samples kept per series over its window.
pub const SERIES_POINTS: usize = 600;

/// (program, BTF tracepoint).
const PROGRAMS: [(&str, &str, &str); 3] = [
    (
        "coral_mem_exit",
        "sched_process_exit",
        "tp_btf/sched_process_exit",
    ),
    ("coral_mem_rss", "rss_stat", "tp_btf/rss_stat"),
    ("coral_mem_oom", "mark_victim", "tp_btf/mark_victim"),
];

/// The request's config with defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Settings {
    interval: Duration,
    window: Duration,
    threshold: u64,
    horizon: Duration,
    max_processes: u32,
}

fn or_default(ns: u64, default: Duration) -> Duration {
    if ns == 0 {
        default
    } else {
        Duration::from_nanos(ns)
    }
}

impl Settings {
    fn of(c: &MemoryConfig) -> Self {
        Self {
            interval: or_default(c.interval_ns, DEFAULT_INTERVAL),
            window: or_default(c.window_ns, DEFAULT_WINDOW),
            threshold: if c.threshold_bytes == 0 {
                DEFAULT_THRESHOLD
            } else {
                c.threshold_bytes
            },
            horizon: or_default(c.horizon_ns, DEFAULT_HORIZON),
            max_processes: if c.max_processes == 0 {
                DEFAULT_MAX_PROCESSES
            } else {
                c.max_processes
            },
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

fn comm_string(comm: &[u8]) -> String {
    String::from_utf8_lossy(comm.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

/// Resolves a `--cgroup` of this kind on this host.
fn resolve_target(path: &str) -> Result<Target, String> {
    let hierarchy = cgroupfs::host_hierarchy().ok_or(
        "no memory cgroup hierarchy is mounted (neither a v1 `memory` mount nor a cgroup2 \
         mount delegating memory)",
    )?;
    cgroupfs::resolve(&hierarchy, path).map_err(|e| match hierarchy.version {
        Version::V1 => format!(
            "{e}; on this host the memory controller is cgroup v1, mounted at {}",
            hierarchy.mount.display()
        ),
        Version::V2 => e,
    })
}

pub struct MemoryFactory;

impl CollectorFactory for MemoryFactory {
    fn kind(&self) -> Kind {
        Kind::Memory
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "tp_btf/rss_stat",
            "tp_btf/mark_victim",
            "tp_btf/sched_process_exit",
            "cgroupfs memory.* (sampled each interval)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_btf("BTF tracepoints cannot be attached")?;
        caps.require_ringbuf()?;
        let missing = tracepoints::missing(PROGRAMS.iter().map(|&(_, tp, _)| tp))?;
        if !missing.is_empty() {
            return Err(format!(
                "kernel tracepoints missing: {} (no btf_trace_* in {VMLINUX_BTF})",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let Some(KindConfig::Memory(c)) = config else {
            return Ok(());
        };
        check_interval_from(c.interval_ns, MIN_INTERVAL, limits)?;
        let s = Settings::of(c);
        if s.window > MAX_WINDOW {
            return Err(format!(
                "window must be at most {}h",
                MAX_WINDOW.as_secs() / 3600
            ));
        }
        if s.window < 3 * s.interval {
            return Err(format!(
                "window ({:?}) must hold at least 3 intervals ({:?} each): a line needs 3 samples",
                s.window, s.interval
            ));
        }
        if s.threshold < page_size() {
            return Err(format!(
                "threshold must be at least a page ({} bytes)",
                page_size()
            ));
        }
        if s.max_processes > MAX_PROCESSES {
            return Err(format!("max_processes must be at most {MAX_PROCESSES}"));
        }
        Ok(())
    }

    fn check_cgroup(&self, _cgroup2_root: Option<&Path>, path: &str) -> Result<(), String> {
        resolve_target(path).map(drop)
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let settings = Settings::of(&match &ctx.spec.config {
            Some(KindConfig::Memory(c)) => *c,
            _ => MemoryConfig::default(),
        });
        let hierarchy = cgroupfs::host_hierarchy();
        let target = match &ctx.spec.filter.cgroup {
            Some(path) => Some(resolve_target(path).map_err(CollectorError::Filter)?),
            None => None,
        };
        // The cgroup is matched against the memory controller's own
        // hierarchy (v1 or v2) by memory.bpf.c, not by common.h's cgroup2 check.
        let mut filter_ctx = ctx.clone();
        filter_ctx.spec.filter.cgroup = None;
        let globals = FilterGlobals::resolve(&filter_ctx)?;
        let (memcg_id, memcg_level) = target.as_ref().map_or((0, 0), |t| (t.id, t.level));

        let page_size = page_size();
        let threshold_pages = (settings.threshold / page_size).max(1);
        let page_counter_max = i64::MAX as u64 / page_size;
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        loader
            .override_global("threshold_pages", &threshold_pages, true)
            .override_global("memcg_filter_id", &memcg_id, true)
            .override_global("memcg_filter_level", &memcg_level, true)
            .override_global("page_counter_max", &page_counter_max, true)
            .map_max_entries("procs", PROC_ENTRIES);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;
        let mut program_ids = Vec::with_capacity(PROGRAMS.len());
        let links = bpf::attach_btf_tracepoints(&mut bpf, &PROGRAMS, &mut program_ids)?;

        let mut index = hierarchy
            .as_ref()
            .map(|h| Index::new(h.mount.clone(), settings.interval));
        if let (Some(index), Some(t)) = (index.as_mut(), target.as_ref()) {
            index.insert(t.id, t.path.clone());
        }
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(cgroupfs::mem_total);
        Ok(Box::new(MemoryCollector {
            events: take_map(&mut bpf, "events")?,
            procs: take_map(&mut bpf, "procs")?,
            drops: take_map(&mut bpf, "drops")?,
            links,
            program_ids,
            settings,
            next_snapshot: Duration::ZERO,
            clock: KtimeClock::now(),
            start_ns: monotonic_ns(),
            page_size,
            hierarchy,
            index,
            target,
            mem_total,
            processes: HashMap::new(),
            cgroups: BTreeMap::new(),
            _bpf: bpf,
        }))
    }
}

/// What the agent keeps per process between snapshots.
struct ProcessState {
    comm: String,
    memcg_id: u64,
    pages: [i64; COUNTERS],
    /// anon + shmem, bytes.
    series: Series,
}

/// What the agent keeps per sampled cgroup.
struct CgroupState {
    dir: PathBuf,
    series: Series,
}

struct MemoryCollector {
    events: RingBuf<MapData>,
    procs: BpfHashMap<MapData, u32, Proc>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    program_ids: Vec<u32>,
    settings: Settings,
    /// Elapsed time at which the next snapshot is due.
    next_snapshot: Duration,
    clock: KtimeClock,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) at start: series time 0.
    start_ns: u64,
    page_size: u64,
    hierarchy: Option<Hierarchy>,
    /// kernfs ids of memory cgroups to paths.
    index: Option<Index>,
    target: Option<Target>,
    mem_total: Option<u64>,
    processes: HashMap<u32, ProcessState>,
    /// By path below the hierarchy's mount.
    cgroups: BTreeMap<String, CgroupState>,
    /// Owns the programs; dropped last, which unloads them.
    _bpf: Ebpf,
}

/// A limit and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Limit {
    bytes: u64,
    source: &'static str,
    /// The limited cgroup's path, when a cgroup's.
    cgroup: Option<String>,
}

fn state_of(s: State) -> PredictionState {
    match s {
        State::Growing => PredictionState::Growing,
        State::NotGrowing => PredictionState::NotGrowing,
        State::NoLimit => PredictionState::NoLimit,
        State::InsufficientData => PredictionState::InsufficientData,
        State::AtLimit => PredictionState::AtLimit,
        State::BeyondHorizon => PredictionState::BeyondHorizon,
    }
}

fn secs_to_ns(s: Option<f64>) -> u64 {
    s.map_or(0, |s| (s * 1e9).clamp(0.0, u64::MAX as f64) as u64)
}

impl MemoryCollector {
    /// Seconds on the series' clock for a CLOCK_MONOTONIC stamp.
    fn series_time(&self, ktime_ns: u64) -> f64 {
        ktime_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    fn window_secs(&self) -> f64 {
        self.settings.window.as_secs_f64()
    }

    fn process_bytes(&self, pages: &[i64; COUNTERS], i: usize) -> u64 {
        (pages[i].max(0) as u64).saturating_mul(self.page_size)
    }

    fn unreclaimable(&self, pages: &[i64; COUNTERS]) -> f64 {
        (self.process_bytes(pages, ANON) + self.process_bytes(pages, SHMEM)) as f64
    }

    /// Folds the latest counters of `tgid`, stamped `ktime_ns`, into its state.
    fn update_process(
        &mut self,
        tgid: u32,
        ktime_ns: u64,
        pages: [i64; COUNTERS],
        memcg_id: u64,
        comm: &[u8],
    ) {
        let t = self.series_time(ktime_ns);
        let y = self.unreclaimable(&pages);
        let (window, comm) = (self.window_secs(), comm_string(comm));
        let p = self.processes.entry(tgid).or_insert_with(|| ProcessState {
            comm: String::new(),
            memcg_id,
            pages,
            series: Series::new(window, SERIES_POINTS),
        });
        if !comm.is_empty() {
            p.comm = comm;
        }
        if memcg_id != 0 {
            p.memcg_id = memcg_id;
        }
        p.pages = pages;
        p.series.push(t, y);
    }

    fn drain(&mut self, out: &mut Vec<Payload>) {
        let mut records = Vec::new();
        while let Some(item) = self.events.next() {
            records.push(item.to_vec());
        }
        for r in records {
            match record_kind(&r) {
                Some(EV_RSS) => {
                    if let Some(ev) = read_record::<RssEvent>(&r) {
                        self.update_process(ev.tgid, ev.ts, ev.pages, ev.memcg_id, &ev.comm);
                    }
                }
                Some(EV_EXIT) => {
                    if let Some(ev) = read_record::<ExitEvent>(&r) {
                        self.processes.remove(&ev.tgid);
                    }
                }
                Some(EV_OOM) => {
                    if let Some(ev) = read_record::<OomEvent>(&r) {
                        let kill = self.oom_kill(&ev);
                        out.push(Payload::OomKill(kill));
                    }
                }
                _ => {}
            }
        }
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.index.as_mut()?.path(id)
    }

    fn oom_kill(&mut self, ev: &OomEvent) -> OomKill {
        let cgroup = self
            .cgroup_path(ev.memcg_id)
            .unwrap_or_else(|| comm_string(&ev.memcg_name));
        let global = ev.limit_memcg_id == 0;
        let limit_cgroup = if global {
            String::new()
        } else {
            self.cgroup_path(ev.limit_memcg_id).unwrap_or_default()
        };
        let b = |i| self.process_bytes(&ev.pages, i);
        OomKill {
            time_unix_nano: self.clock.unix(ev.ts),
            pid: ev.tgid,
            comm: comm_string(&ev.comm),
            container: container_of(&cgroup),
            cgroup,
            cgroup_id: ev.memcg_id,
            rss_bytes: b(ANON) + b(FILE) + b(SHMEM),
            anon_bytes: b(ANON),
            file_bytes: b(FILE),
            shmem_bytes: b(SHMEM),
            swap_bytes: b(SWAP),
            limit_cgroup,
            limit_bytes: ev.limit_pages.saturating_mul(self.page_size),
            usage_bytes: ev.usage_pages.saturating_mul(self.page_size),
            global,
            trigger_pid: ev.trigger_tgid,
            trigger_comm: comm_string(&ev.trigger_comm),
        }
    }

    /// The limit that applies to a cgroup directory: the lowest of it and
    /// its ancestors', else the machine's memory.
    fn limit_of(&self, dir: Option<&Path>) -> Option<Limit> {
        if let (Some(h), Some(dir)) = (&self.hierarchy, dir)
            && let Some((bytes, at)) = cgroupfs::effective_limit(h.version, &h.mount, dir)
        {
            let rel = at.strip_prefix(&h.mount).unwrap_or(Path::new(""));
            return Some(Limit {
                bytes,
                source: h.version.limit_file(),
                cgroup: Some(format!("/{}", rel.display())),
            });
        }
        self.mem_total.map(|bytes| Limit {
            bytes,
            source: "MemTotal",
            cgroup: None,
        })
    }

    fn prediction(&self, series: &Series, now: f64, limit: Option<&Limit>) -> MemoryPrediction {
        let horizon = self.settings.horizon.as_secs_f64();
        let p: Prediction = predict::predict(series, now, limit.map(|l| l.bytes as f64), horizon);
        let (as_of, value) = series.last().unwrap_or((now, 0.0));
        MemoryPrediction {
            state: state_of(p.state) as i32,
            rate_bytes_per_sec: p.rate,
            rate_low_bytes_per_sec: p.rate_low,
            rate_high_bytes_per_sec: p.rate_high,
            time_to_limit_ns: secs_to_ns(p.time_to_limit),
            time_to_limit_low_ns: secs_to_ns(p.time_to_limit_low),
            time_to_limit_high_ns: secs_to_ns(p.time_to_limit_high),
            r2: p.r2,
            confidence: p.confidence.unwrap_or(0.0),
            horizon_ns: self.settings.horizon.as_nanos() as u64,
            value_bytes: value.max(0.0) as u64,
            limit_bytes: limit.map_or(0, |l| l.bytes),
            limit_source: limit.map_or(String::new(), |l| l.source.to_string()),
            samples: p.samples as u32,
            effective_samples: p.effective_samples,
            span_ns: secs_to_ns(Some(p.span)),
            as_of_unix_nano: self.clock.unix(self.start_ns + secs_to_ns(Some(as_of))),
        }
    }

    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let h = self.hierarchy.as_ref()?;
        Some(h.mount.join(path.trim_start_matches('/')))
    }

    fn snapshot(&mut self, elapsed: Duration) -> Result<MemoryStats, CollectorError> {
        let now_ns = monotonic_ns();
        let now = self.series_time(now_ns);

        // The kernel's latest counters: values hold until the next event, so
        // they are a sample at `now` too.
        let mut live = Vec::new();
        for entry in self.procs.iter() {
            let (tgid, p) = entry.map_err(read_err("procs"))?;
            live.push((tgid, p));
        }
        let alive: HashSet<u32> = live.iter().map(|(t, _)| *t).collect();
        self.processes.retain(|t, _| alive.contains(t));
        for (tgid, p) in &live {
            self.update_process(*tgid, now_ns, p.pages, p.memcg_id, &p.comm);
        }

        // Memory cgroups: the target, then the limited ones processes are in.
        let mut wanted: Vec<String> = self.target.iter().map(|t| t.path.clone()).collect();
        let memcgs: HashSet<u64> = self.processes.values().map(|p| p.memcg_id).collect();
        let mut process_limits: HashMap<u64, (Option<String>, Option<Limit>)> = HashMap::new();
        for id in memcgs {
            let path = self.cgroup_path(id);
            let dir = path.as_deref().and_then(|p| self.dir_of(p));
            let limit = self.limit_of(dir.as_deref());
            if let Some(c) = limit.as_ref().and_then(|l| l.cgroup.clone())
                && !wanted.contains(&c)
            {
                wanted.push(c);
            }
            process_limits.insert(id, (path, limit));
        }
        wanted.truncate(MAX_CGROUPS);
        let window = self.window_secs();
        self.cgroups.retain(|p, _| wanted.contains(p));
        let mut cgroups = Vec::new();
        let Some(h) = self.hierarchy.clone() else {
            return Ok(self.stats(elapsed, cgroups, now, &process_limits));
        };
        for path in wanted {
            let Some(dir) = self.dir_of(&path) else {
                continue;
            };
            // Gone (removed, or the test's cgroup after its end): no row.
            let Ok(usage) = cgroupfs::read_usage(h.version, &dir) else {
                self.cgroups.remove(&path);
                continue;
            };
            let state = self
                .cgroups
                .entry(path.clone())
                .or_insert_with(|| CgroupState {
                    dir: dir.clone(),
                    series: Series::new(window, SERIES_POINTS),
                });
            state.series.push(now, usage.unreclaimable() as f64);
            let limit = self.limit_of(Some(&self.cgroups[&path].dir));
            let prediction = self.prediction(&self.cgroups[&path].series, now, limit.as_ref());
            cgroups.push(cgroup_row(&h, &path, &usage, limit.as_ref(), prediction));
        }
        Ok(self.stats(elapsed, cgroups, now, &process_limits))
    }

    fn stats(
        &self,
        elapsed: Duration,
        cgroups: Vec<MemoryCgroup>,
        now: f64,
        limits: &HashMap<u64, (Option<String>, Option<Limit>)>,
    ) -> MemoryStats {
        let mut processes: Vec<MemoryProcess> = self
            .processes
            .iter()
            .map(|(&pid, p)| {
                let (cgroup, limit) = limits.get(&p.memcg_id).cloned().unwrap_or_default();
                let b = |i| self.process_bytes(&p.pages, i);
                let cgroup = cgroup.unwrap_or_default();
                MemoryProcess {
                    pid,
                    comm: p.comm.clone(),
                    container: container_of(&cgroup),
                    cgroup,
                    rss_bytes: b(ANON) + b(FILE) + b(SHMEM),
                    anon_bytes: b(ANON),
                    file_bytes: b(FILE),
                    shmem_bytes: b(SHMEM),
                    swap_bytes: b(SWAP),
                    limit_bytes: limit.as_ref().map_or(0, |l| l.bytes),
                    prediction: Some(self.prediction(&p.series, now, limit.as_ref())),
                }
            })
            .collect();
        processes.sort_by(process_order);
        let tracked = processes.len() as u32;
        processes.truncate(self.settings.max_processes as usize);
        let mut dropped_events = 0;
        for slot in 0..DROP_SLOTS {
            if let Ok(values) = self.drops.get(&slot, 0) {
                dropped_events += values.iter().sum::<u64>();
            }
        }
        MemoryStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            cgroups,
            processes,
            processes_tracked: tracked,
            dropped_events,
        }
    }
}

/// Growing processes first, soonest at their limit first; then the fastest
/// growing; then the largest.
fn process_order(a: &MemoryProcess, b: &MemoryProcess) -> std::cmp::Ordering {
    let key = |p: &MemoryProcess| {
        let pr = p.prediction.as_ref();
        let growing = pr.is_some_and(|x| x.state == PredictionState::Growing as i32);
        let ttl = pr.map_or(u64::MAX, |x| x.time_to_limit_ns);
        let rate = pr.map_or(0.0, |x| x.rate_bytes_per_sec);
        (
            !growing,
            if growing { ttl } else { u64::MAX },
            -rate,
            u64::MAX - p.rss_bytes,
        )
    };
    let (ka, kb) = (key(a), key(b));
    ka.0.cmp(&kb.0)
        .then(ka.1.cmp(&kb.1))
        .then(ka.2.total_cmp(&kb.2))
        .then(ka.3.cmp(&kb.3))
        .then(a.pid.cmp(&b.pid))
}

fn cgroup_row(
    h: &Hierarchy,
    path: &str,
    u: &Usage,
    limit: Option<&Limit>,
    prediction: MemoryPrediction,
) -> MemoryCgroup {
    MemoryCgroup {
        container: container_of(path),
        path: path.to_string(),
        mount: h.mount.display().to_string(),
        version: h.version.number(),
        current_bytes: u.current,
        limit_bytes: limit.filter(|l| l.cgroup.is_some()).map_or(0, |l| l.bytes),
        high_bytes: u.high.unwrap_or(0),
        swap_limit_bytes: u.swap_limit.unwrap_or(0),
        anon_bytes: u.anon,
        file_bytes: u.file,
        shmem_bytes: u.shmem,
        kernel_bytes: u.kernel,
        swap_bytes: u.swap,
        unreclaimable_bytes: u.unreclaimable(),
        oom_kills: u.oom_kills,
        prediction: Some(prediction),
    }
}

/// The container a memory cgroup path shows (v1 and v2 alike), if any.
fn container_of(path: &str) -> Option<coral_proto::v1::Container> {
    if path.is_empty() {
        return None;
    }
    let cgroup = crate::containers::resolve::Cgroup::new(path.to_string());
    cgroup.info.container.is_some().then(|| cgroup.to_proto())
}

impl Collector for MemoryCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        TICK.min(self.settings.interval)
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        self.drain(out);
        if last || elapsed >= self.next_snapshot {
            out.push(Payload::MemoryStats(self.snapshot(elapsed)?));
            while self.next_snapshot <= elapsed {
                self.next_snapshot += self.settings.interval;
            }
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.links.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let f = MemoryFactory;
        let limits = Limits::default();
        let check = |c: MemoryConfig| f.validate(Some(&KindConfig::Memory(c)), &limits);
        assert!(check(MemoryConfig::default()).is_ok());
        let short = MemoryConfig {
            interval_ns: 1_000_000,
            ..Default::default()
        };
        assert!(check(short).unwrap_err().contains("interval"));
        let narrow = MemoryConfig {
            interval_ns: 1_000_000_000,
            window_ns: 2_000_000_000,
            ..Default::default()
        };
        assert!(check(narrow).unwrap_err().contains("3 intervals"));
        let tiny = MemoryConfig {
            threshold_bytes: 100,
            ..Default::default()
        };
        assert!(check(tiny).unwrap_err().contains("page"));
        let many = MemoryConfig {
            max_processes: MAX_PROCESSES + 1,
            ..Default::default()
        };
        assert!(check(many).is_err());
        let long = MemoryConfig {
            window_ns: MAX_WINDOW.as_nanos() as u64 + 1,
            ..Default::default()
        };
        assert!(check(long).is_err());
    }

    #[test]
    fn defaults_fill_zeros() {
        let s = Settings::of(&MemoryConfig::default());
        assert_eq!(s.interval, DEFAULT_INTERVAL);
        assert_eq!(s.window, DEFAULT_WINDOW);
        assert_eq!(s.threshold, DEFAULT_THRESHOLD);
        assert_eq!(s.horizon, DEFAULT_HORIZON);
        assert_eq!(s.max_processes, DEFAULT_MAX_PROCESSES);
    }

    fn row(pid: u32, state: PredictionState, ttl: u64, rate: f64, rss: u64) -> MemoryProcess {
        MemoryProcess {
            pid,
            rss_bytes: rss,
            prediction: Some(MemoryPrediction {
                state: state as i32,
                time_to_limit_ns: ttl,
                rate_bytes_per_sec: rate,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_cgroup_paths_show_their_container_on_both_hierarchies() {
        let id = "3f4e2c1d0b9a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a29180706";
        // cgroupfs driver (v1 memory controller) and systemd driver (v2).
        for path in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
        ] {
            let c = container_of(&path).unwrap();
            assert_eq!(
                (c.container_id.as_str(), c.runtime.as_str()),
                (id, "docker")
            );
            assert_eq!(c.cgroup_path, path);
        }
        assert_eq!(container_of("/api.slice"), None);
        assert_eq!(container_of(""), None);
    }

    #[test]
    fn processes_sort_soonest_oom_first() {
        let mut rows = [
            row(1, PredictionState::NotGrowing, 0, 0.0, 900),
            row(2, PredictionState::Growing, 50, 1.0, 10),
            row(3, PredictionState::Growing, 5, 1.0, 10),
            row(4, PredictionState::NotGrowing, 0, 5.0, 10),
        ];
        rows.sort_by(process_order);
        let pids: Vec<u32> = rows.iter().map(|r| r.pid).collect();
        assert_eq!(pids, [3, 2, 4, 1]);
    }
}
