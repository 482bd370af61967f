//! cpu-profile: sampled, symbolized user and kernel stacks.
//!
//! Kernel side: `src/bpf/cpu_profile.bpf.c` attached to a software CPU-clock
//! perf event on every online CPU (frequency mode, all processes). Each sample
//! stores the user and kernel stacks (frame-pointer walks by
//! `bpf_get_stackid`) in a stack_trace map and is counted in a hash map by
//! (tgid, user stack id, kernel stack id); pid, cgroup and comm filters and
//! the idle exclusion run in the kernel. A stack whose bucket in the stack map
//! is taken goes to an overflow hash map; samples that still cannot be counted
//! (maps full) are counted as lost. Needs CAP_BPF +
//! CAP_PERFMON (or CAP_SYS_ADMIN), perf events and BPF ring buffers (5.8+).
//!
//! Agent side: a worker thread per collector owns the blazesym symbolizer
//! ([`symbolize`]). It captures each new process's memory maps as soon as the
//! kernel announces it (ring buffer), so stacks of processes that exit before
//! the profile ends still resolve, and it turns counts into [`CpuProfile`]
//! records: a cumulative snapshot every [`INTERVAL`] and the complete profile
//! at the end.

pub(crate) mod maps;
mod symbolize;

use super::bpf::{program_error, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::PerfEvent;
use aya::programs::perf_event::{
    PerfEventConfig, PerfEventLink, PerfEventScope, SamplePolicy, SoftwareEvent,
};
use aya::{Ebpf, EbpfLoader};
use coral_ebpf_programs::cpu_profile::{
    KERNEL_OVERFLOW, OBJECT, OverflowStack, ProfileKey, ProfileValue, USER_OVERFLOW, lost,
};
use coral_proto::error_chain;
use coral_proto::v1::{CpuProfile, CpuProfileConfig, Frame, ProfileStack};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use symbolize::Symbolizer;

/// Sampling frequency when the request gives none: a prime, so sampling does
/// not run in lockstep with periodic work (timers at 10, 50, 100 Hz).
pub const DEFAULT_FREQUENCY_HZ: u32 = 49;

/// Snapshot interval: cumulative records while the profile runs.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Stacks in a snapshot taken while the profile runs; the rest are summed
/// into one `[N other stacks]` stack, so counts still add up. The final
/// record has every stack. Bounds what retained snapshots cost.
pub const LIVE_STACKS: usize = 500;

/// How long new-process notices may wait before the worker captures them:
/// a process must live about this long after its first sample to resolve.
const CAPTURE_POLL: Duration = Duration::from_millis(10);

/// Entries of the stack map (user and kernel stacks share it). It is a hash
/// table whose buckets hold one stack each: a new stack meets a taken bucket
/// with chance ~ stacks stored / entries.
const STACK_ENTRIES: u32 = 16_384;
/// Entries of the overflow map, where stacks whose bucket was taken go. A
/// sample is lost only when both are full (or clash).
const OVERFLOW_ENTRIES: u32 = 8_192;
/// Distinct (process, user stack, kernel stack) keys counted.
const COUNT_ENTRIES: u32 = 32_768;

/// Symbolized stacks kept for reuse (user and kernel together): a few times
/// what the kernel's stack maps can hold at once.
const MAX_CACHED_STACKS: usize = 4 * (STACK_ENTRIES + OVERFLOW_ENTRIES) as usize;

const PROGRAM: &str = "coral_cpu_sample";
const HOOK: &str = "perf_event/cpu-clock";

pub struct CpuProfileFactory;

impl CollectorFactory for CpuProfileFactory {
    fn kind(&self) -> Kind {
        Kind::CpuProfile
    }

    fn hooks(&self) -> &'static [&'static str] {
        &["perf_event/software/cpu-clock (every online CPU)"]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        if !caps.perf_events {
            return Err("perf_event programs cannot be attached on this kernel".into());
        }
        caps.require_ringbuf()
    }

    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let hz = frequency(config);
        if hz > limits.max_profile_frequency_hz {
            return Err(format!(
                "frequency {hz} Hz is over this agent's maximum of {} Hz (coral-agent --max-profile-frequency)",
                limits.max_profile_frequency_hz
            ));
        }
        // perf_event_open refuses frequencies over this sysctl with a bare EINVAL.
        if let Some(max) = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && hz > max
        {
            return Err(format!(
                "frequency {hz} Hz is over kernel.perf_event_max_sample_rate ({max})"
            ));
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let config = match &ctx.spec.config {
            Some(KindConfig::CpuProfile(c)) => *c,
            _ => CpuProfileConfig::default(),
        };
        let hz = frequency(ctx.spec.config.as_ref());
        let globals = FilterGlobals::resolve(ctx)?;
        let include_idle = u8::from(config.include_idle);

        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        loader
            .override_global("include_idle", &include_idle, true)
            .map_max_entries("stacks", STACK_ENTRIES)
            .map_max_entries("overflow_stacks", OVERFLOW_ENTRIES)
            .map_max_entries("counts", COUNT_ENTRIES);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;

        let attach_err = |reason: String| CollectorError::Attach {
            program: PROGRAM,
            hook: HOOK,
            reason,
        };
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| attach_err(format!("reading {path}: {e}")))?;
        let program: &mut PerfEvent = bpf
            .program_mut(PROGRAM)
            .ok_or_else(|| attach_err("program missing from object".into()))?
            .try_into()
            .map_err(|e| attach_err(program_error(&e)))?;
        program.load().map_err(|e| attach_err(program_error(&e)))?;
        let program_ids = program.info().map(|i| vec![i.id()]).unwrap_or_default();
        let mut links = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let id = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(u64::from(hz)),
                    false,
                )
                .map_err(|e| attach_err(format!("cpu {cpu}: {}", program_error(&e))))?;
            links.push(
                program
                    .take_link(id)
                    .map_err(|e| attach_err(program_error(&e)))?,
            );
        }

        let announcements: RingBuf<MapData> = take_map(&mut bpf, "new_processes")?;
        Ok(Box::new(CpuProfileCollector {
            counts: take_map(&mut bpf, "counts")?,
            stacks: take_map(&mut bpf, "stacks")?,
            overflow: take_map(&mut bpf, "overflow_stacks")?,
            lost: take_map(&mut bpf, "lost")?,
            raw_stacks: HashMap::new(),
            worker: Worker::spawn(announcements)?,
            links,
            program_ids,
            frequency_hz: hz,
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            _bpf: bpf,
        }))
    }
}

/// The requested frequency, or the default.
fn frequency(config: Option<&KindConfig>) -> u32 {
    match config {
        Some(KindConfig::CpuProfile(c)) if c.frequency_hz != 0 => c.frequency_hz,
        _ => DEFAULT_FREQUENCY_HZ,
    }
}

struct CpuProfileCollector {
    counts: BpfHashMap<MapData, ProfileKey, ProfileValue>,
    stacks: StackTraceMap<MapData>,
    overflow: BpfHashMap<MapData, u32, OverflowStack>,
    lost: PerCpuArray<MapData, u64>,
    /// Stack -> addresses (leaf first). Neither map ever replaces a stored
    /// stack, so an id keeps its meaning for the collector's life and each is
    /// read once.
    raw_stacks: HashMap<StackRef, Arc<[u64]>>,
    worker: Worker,
    /// One perf event per CPU; dropping a link closes it.
    links: Vec<PerfEventLink>,
    program_ids: Vec<u32>,
    frequency_hz: u32,
    /// Paths (and containers) of the sampled processes' cgroup ids.
    cgroups: CgroupResolver,
    /// Owns the program; dropped last, which unloads it.
    _bpf: Ebpf,
}

/// Where a stack is stored: (in `overflow_stacks`, id or key).
type StackRef = (bool, i32);

/// A stored stack and its addresses, leaf first.
type RawStack = (StackRef, Arc<[u64]>);

/// One counted key, with its stacks' addresses, for the worker.
struct RawSample {
    tgid: u32,
    comm: String,
    cgroup_id: u64,
    user: Option<RawStack>,
    kernel: Option<RawStack>,
    count: u64,
}

impl CpuProfileCollector {
    fn stack(&mut self, id: i32, overflow: bool) -> Result<Option<RawStack>, CollectorError> {
        if id < 0 {
            return Ok(None);
        }
        let at = (overflow, id);
        if let Some(ips) = self.raw_stacks.get(&at) {
            return Ok(Some((at, ips.clone())));
        }
        let ips: Arc<[u64]> = if overflow {
            let stack = self
                .overflow
                .get(&(id as u32), 0)
                .map_err(read_err("overflow_stacks"))?;
            stack
                .ips
                .iter()
                .copied()
                .take_while(|&ip| ip != 0)
                .collect()
        } else {
            let trace = self
                .stacks
                .get(&(id as u32), 0)
                .map_err(read_err("stacks"))?;
            trace.frames().iter().map(|f| f.ip).collect()
        };
        self.raw_stacks.insert(at, ips.clone());
        Ok(Some((at, ips)))
    }

    fn read_samples(&mut self) -> Result<Vec<RawSample>, CollectorError> {
        let entries: Vec<(ProfileKey, ProfileValue)> = self
            .counts
            .iter()
            .collect::<Result<_, _>>()
            .map_err(read_err("counts"))?;
        let mut samples = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            samples.push(RawSample {
                tgid: key.tgid,
                comm: comm(&value.comm),
                cgroup_id: value.cgroup_id,
                user: self.stack(key.user_stack_id, key.flags & USER_OVERFLOW != 0)?,
                kernel: self.stack(key.kernel_stack_id, key.flags & KERNEL_OVERFLOW != 0)?,
                count: value.count,
            });
        }
        Ok(samples)
    }

    fn lost_samples(&self) -> Result<u64, CollectorError> {
        let mut total = 0;
        for slot in [lost::MAP_FULL, lost::STACK_COLLISION, lost::STACK_ERROR] {
            let per_cpu = self.lost.get(&slot, 0).map_err(read_err("lost"))?;
            total += per_cpu.iter().sum::<u64>();
        }
        Ok(total)
    }
}

fn comm(raw: &[u8; 16]) -> String {
    String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

impl Collector for CpuProfileCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        INTERVAL
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        let samples = self.read_samples()?;
        let lost_samples = self.lost_samples()?;
        // Symbolizing can take a while the first time a large binary's DWARF
        // is parsed; the manager calls collect on a blocking thread.
        let mut stacks = self.worker.symbolize(samples)?;
        stacks.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        if !last {
            elide(&mut stacks, LIVE_STACKS);
        }
        for s in &mut stacks {
            // The idle task and kernel threads are in the root cgroup.
            if s.pid != 0 && s.cgroup_id != 0 {
                s.container = self.cgroups.resolve(s.cgroup_id).map(Cgroup::to_proto);
            }
        }
        out.push(Payload::CpuProfile(CpuProfile {
            elapsed_ns: elapsed.as_nanos() as u64,
            frequency_hz: self.frequency_hz,
            total_samples: stacks.iter().map(|s| s.count).sum(),
            lost_samples,
            stacks,
        }));
        Ok(())
    }

    fn detach(&mut self) {
        self.links.clear();
    }
}

/// Keeps the `keep` hottest stacks (`stacks` sorted by count) and sums the
/// rest into one stack, so the counts still add up to the total.
fn elide(stacks: &mut Vec<ProfileStack>, keep: usize) {
    if stacks.len() <= keep {
        return;
    }
    let rest = stacks.split_off(keep);
    stacks.push(ProfileStack {
        pid: 0,
        comm: "[other]".into(),
        frames: vec![Frame {
            function: format!("[{} other stacks]", rest.len()),
            module: String::new(),
            kernel: false,
            address: 0,
            inlined: false,
        }],
        count: rest.iter().map(|s| s.count).sum(),
        cgroup_id: 0,
        container: None,
    });
}

enum Request {
    Symbolize {
        samples: Vec<RawSample>,
        reply: mpsc::SyncSender<Vec<ProfileStack>>,
    },
}

/// The collector's symbolization thread. It owns the blazesym state (which
/// is not `Send`) and the ring buffer of new processes, which it drains every
/// [`CAPTURE_POLL`] to capture processes while they live. Dropping the
/// handle ends the thread.
struct Worker {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn(announcements: RingBuf<MapData>) -> Result<Self, CollectorError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cpu-profile-sym".into())
            .spawn(move || worker_loop(announcements, rx))
            .map_err(|e| CollectorError::Load(format!("spawning the symbolizer thread: {e}")))?;
        Ok(Self {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    fn symbolize(&self, samples: Vec<RawSample>) -> Result<Vec<ProfileStack>, CollectorError> {
        let gone = || CollectorError::Read {
            map: "counts",
            reason: "the symbolizer thread ended".into(),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send(Request::Symbolize { samples, reply })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per-collector symbolization state on the worker thread.
struct WorkerState {
    symbolizer: Symbolizer,
    /// Symbolized stacks: user ones per (process, id), since the same
    /// addresses mean different code in different processes.
    user_stacks: HashMap<(u32, StackRef), Arc<[Frame]>>,
    kernel_stacks: HashMap<StackRef, Arc<[Frame]>>,
    /// CPU time this thread spent symbolizing, for the closing log line.
    busy: Duration,
    samples: u64,
}

fn worker_loop(mut announcements: RingBuf<MapData>, requests: mpsc::Receiver<Request>) {
    let mut state = WorkerState {
        symbolizer: Symbolizer::new(),
        user_stacks: HashMap::new(),
        kernel_stacks: HashMap::new(),
        busy: Duration::ZERO,
        samples: 0,
    };
    loop {
        drain(&mut announcements, &mut state.symbolizer);
        match requests.recv_timeout(CAPTURE_POLL) {
            Ok(Request::Symbolize { samples, reply }) => {
                drain(&mut announcements, &mut state.symbolizer);
                let cpu = thread_cpu_time();
                let wall = Instant::now();
                let stacks = state.symbolize(samples);
                state.busy += thread_cpu_time().saturating_sub(cpu);
                tracing::debug!(
                    stacks = stacks.len(),
                    took = ?wall.elapsed(),
                    "cpu-profile snapshot symbolized"
                );
                let _ = reply.send(stacks);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let stats = state.symbolizer.stats();
    tracing::info!(
        samples = state.samples,
        user_stacks = state.user_stacks.len(),
        kernel_stacks = state.kernel_stacks.len(),
        addresses = stats.addresses_symbolized,
        processes = stats.processes_captured,
        files = stats.files_opened,
        symbolize_cpu_ms = state.busy.as_secs_f64() * 1e3,
        "cpu-profile symbolization"
    );
}

/// Captures every process the kernel announced since the last call.
fn drain(announcements: &mut RingBuf<MapData>, symbolizer: &mut Symbolizer) {
    while let Some(item) = announcements.next() {
        let Ok(bytes) = <[u8; 4]>::try_from(&item[..]) else {
            continue;
        };
        let pid = u32::from_ne_bytes(bytes);
        drop(item);
        symbolizer.capture_new(pid);
    }
}

impl WorkerState {
    fn symbolize(&mut self, samples: Vec<RawSample>) -> Vec<ProfileStack> {
        self.samples = samples.iter().map(|s| s.count).sum();
        // Processes whose announcement was lost (ring buffer full) or that
        // were not sampled with a user stack before: capture them while they
        // may still run.
        for s in &samples {
            if s.user.is_some() && !self.symbolizer.captured(s.tgid) {
                self.symbolizer.capture(s.tgid);
            }
        }
        // Stacks seen are cached; a profile of ever new stacks starts over
        // rather than growing without bound.
        if self.user_stacks.len() + self.kernel_stacks.len() >= MAX_CACHED_STACKS {
            self.user_stacks.clear();
            self.kernel_stacks.clear();
        }
        samples
            .into_iter()
            .map(|s| {
                let mut frames = Vec::new();
                if let Some((id, ips)) = &s.user {
                    let f = self
                        .user_stacks
                        .entry((s.tgid, *id))
                        .or_insert_with(|| self.symbolizer.user_stack(s.tgid, ips).into());
                    frames.extend(f.iter().cloned());
                }
                if let Some((id, ips)) = &s.kernel {
                    let f = self
                        .kernel_stacks
                        .entry(*id)
                        .or_insert_with(|| self.symbolizer.kernel_stack(ips).into());
                    frames.extend(f.iter().cloned());
                }
                ProfileStack {
                    pid: s.tgid,
                    comm: s.comm,
                    frames,
                    count: s.count,
                    cgroup_id: s.cgroup_id,
                    // Resolved by the collector, which owns the cgroup cache.
                    container: None,
                }
            })
            .collect()
    }
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(count: u64) -> ProfileStack {
        ProfileStack {
            pid: 1,
            comm: "x".into(),
            count,
            ..Default::default()
        }
    }

    #[test]
    fn elided_stacks_keep_the_total() {
        let mut s: Vec<_> = [50, 30, 10, 5, 5].into_iter().map(stack).collect();
        elide(&mut s, 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().map(|s| s.count).sum::<u64>(), 100);
        assert_eq!(s[2].frames[0].function, "[3 other stacks]");
        let mut few: Vec<_> = [3, 2].into_iter().map(stack).collect();
        elide(&mut few, 2);
        assert_eq!(few.len(), 2);
    }

    #[test]
    fn frequency_is_limited() {
        let f = CpuProfileFactory;
        let limits = Limits::default();
        let cfg = |hz| {
            KindConfig::CpuProfile(CpuProfileConfig {
                frequency_hz: hz,
                include_idle: false,
            })
        };
        assert!(f.validate(None, &limits).is_ok());
        assert!(f.validate(Some(&cfg(999)), &limits).is_ok());
        let err = f.validate(Some(&cfg(1001)), &limits).unwrap_err();
        assert!(err.contains("1001 Hz") && err.contains("1000 Hz"), "{err}");
        assert_eq!(frequency(Some(&cfg(0))), DEFAULT_FREQUENCY_HZ);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"burn");
        assert_eq!(comm(&raw), "burn");
    }
}
