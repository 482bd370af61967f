//! process-events: one event per exec and per process exit (argv, exit code,
//! signal, lifetime, parent, cgroup and container), aggregates over them, and
//! children of a pid filter followed in the kernel.
//!
//! Kernel side: `src/bpf/process_events.bpf.c` on the BTF tracepoints
//! `sched_process_exec` and `sched_process_exit`, plus `sched_process_fork`
//! when following children. No kprobes, no fentry, no tracefs. Needs BTF (the
//! programs are tp_btf, every struct read is CO-RE), a ring buffer (5.8+) and
//! CAP_BPF + CAP_PERFMON. The exit hook takes the kernel's `group_dead`
//! argument (Linux 6.16+); on older kernels, where that program is refused,
//! its twin reading `signal->live` is loaded instead.
//!
//! Following children: with a pid filter (and unless `no_follow`), the
//! `tracked` map holds the tgids to report. The agent seeds it with the
//! filter's pids before attaching; the fork program adds every process forked
//! by a tracked one, the exit program removes a process when it ends; once
//! attached, the agent adds the descendants the listed processes already had
//! (from `/proc`), so children forked before the start are followed too.

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::programs::links::FdLink;
use aya::{Btf, Ebpf, EbpfLoader};
use coral_ebpf_programs::process_events::{
    self as kernel, ARGV_BYTES, FLAG_ARGV_TRUNCATED, FLAG_ARGV_UNREADABLE, OBJECT, ProcEvent,
    ProcExec,
};
use coral_proto::error_chain;
use coral_proto::v1::{
    ProcessEvent, ProcessEventType, ProcessEventsConfig, ProcessExecCount, ProcessExitCount,
    ProcessParentCount, ProcessStats,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_SHORT_LIVED: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_ARGS: u32 = 64;
pub const MAX_MAX_ARGS: u32 = 1024;
pub const DEFAULT_RING_BUFFER: u32 = 4 << 20;
/// A ring buffer is a power of two of pages.
pub const MIN_RING_BUFFER: u32 = 4096;
pub const MAX_RING_BUFFER: u32 = 256 << 20;
/// Processes followed at once (pid filter with children).
pub const TRACKED_ENTRIES: u32 = 65_536;
/// How often the ring buffer is drained.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Distinct executables counted by name; later ones go to `other_execs`.
const MAX_EXECUTABLES: usize = 4096;
/// Executables listed per `ProcessStats`.
const LISTED_EXECUTABLES: usize = 100;
/// Parents counted, and listed per `ProcessStats`.
const MAX_PARENTS: usize = 4096;
const LISTED_PARENTS: usize = 20;
/// Processes remembered between their exec and their exit (children counts).
const MAX_LIVE: usize = 65_536;

/// Environment variable of the agent: `live` loads the exit program of
/// kernels before 6.16 (`signal->live`) even where `group_dead` exists, so
/// the e2e tests exercise that fallback.
pub const EXIT_HOOK_ENV: &str = "CORAL_PROC_EXIT_HOOK";

const EXEC_PROGRAM: (&str, &str) = ("coral_pe_exec", "sched_process_exec");
const EXIT_PROGRAM: (&str, &str) = ("coral_pe_exit", "sched_process_exit");
const EXIT_LIVE_PROGRAM: (&str, &str) = ("coral_pe_exit_live", "sched_process_exit");
const FORK_PROGRAM: (&str, &str) = ("coral_pe_fork", "sched_process_fork");

pub struct ProcessEventsFactory;

fn config(spec_config: Option<&KindConfig>) -> ProcessEventsConfig {
    match spec_config {
        Some(KindConfig::ProcessEvents(c)) => *c,
        _ => ProcessEventsConfig::default(),
    }
}

fn or_default(ns: u64, default: Duration) -> Duration {
    match ns {
        0 => default,
        ns => Duration::from_nanos(ns),
    }
}

impl CollectorFactory for ProcessEventsFactory {
    fn kind(&self) -> Kind {
        Kind::ProcessEvents
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "tp_btf/sched_process_exec",
            "tp_btf/sched_process_exit",
            "tp_btf/sched_process_fork (following the children of a pid filter)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_btf("tp_btf programs and their CO-RE reads need it")?;
        caps.require_raw_tracepoints()?;
        caps.require_ringbuf()
    }

    fn validate(&self, spec_config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let c = config(spec_config);
        check_interval(c.interval_ns, limits)?;
        if c.max_args > MAX_MAX_ARGS {
            return Err(format!("max_args must be at most {MAX_MAX_ARGS}"));
        }
        if c.max_arg_bytes as usize > ARGV_BYTES {
            return Err(format!("max_arg_bytes must be at most {ARGV_BYTES}"));
        }
        let ring = c.ring_buffer_bytes;
        if ring != 0
            && (!ring.is_power_of_two() || !(MIN_RING_BUFFER..=MAX_RING_BUFFER).contains(&ring))
        {
            return Err(format!(
                "ring_buffer_bytes must be a power of two from {MIN_RING_BUFFER} to {MAX_RING_BUFFER}"
            ));
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let c = config(ctx.spec.config.as_ref());
        let pids = &ctx.spec.filter.pids;
        let follow = !c.no_follow && !pids.is_empty();
        let globals = FilterGlobals::resolve(ctx)?;
        let follow_children = u8::from(follow);
        let argv_bytes: u32 = match c.max_arg_bytes {
            0 => ARGV_BYTES as u32,
            n => n,
        };

        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        loader
            .override_global("follow_children", &follow_children, true)
            .override_global("argv_bytes", &argv_bytes, true)
            .map_max_entries(
                "events",
                match c.ring_buffer_bytes {
                    0 => DEFAULT_RING_BUFFER,
                    n => n,
                },
            )
            .map_max_entries("tracked", if follow { TRACKED_ENTRIES } else { 1 });
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;
        // The loader parsed the kernel's BTF too, but keeps it private.
        let btf = Btf::from_sys_fs().map_err(|e| CollectorError::Load(error_chain(&e)))?;

        let mut program_ids = Vec::new();
        let mut links: Vec<FdLink> = Vec::new();
        if follow {
            track(&mut bpf, pids.iter().copied())?;
            links.push(attach_btf(&mut bpf, FORK_PROGRAM, &btf, &mut program_ids)?);
        }
        links.push(attach_btf(&mut bpf, EXEC_PROGRAM, &btf, &mut program_ids)?);
        links.push(attach_exit(&mut bpf, &btf, &mut program_ids)?);
        if follow {
            // Children forked before the fork program was attached.
            track(&mut bpf, descendants(pids, &process_parents()))?;
        }

        Ok(Box::new(ProcessEventsCollector {
            events: take_map(&mut bpf, "events")?,
            drops: take_map(&mut bpf, "drops")?,
            links,
            program_ids,
            interval: or_default(c.interval_ns, DEFAULT_INTERVAL),
            next_stats: Duration::ZERO,
            max_args: match c.max_args {
                0 => DEFAULT_MAX_ARGS,
                n => n,
            } as usize,
            stats: Aggregates::new(or_default(c.short_lived_ns, DEFAULT_SHORT_LIVED)),
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            clock: KtimeClock::now(),
            _bpf: bpf,
        }))
    }
}

/// Loads and attaches one tp_btf program (program, tracepoint).
fn attach_btf(
    bpf: &mut Ebpf,
    (name, tracepoint): (&'static str, &'static str),
    btf: &Btf,
    ids: &mut Vec<u32>,
) -> Result<FdLink, CollectorError> {
    let hook = match tracepoint {
        "sched_process_exec" => "tp_btf/sched_process_exec",
        "sched_process_exit" => "tp_btf/sched_process_exit",
        _ => "tp_btf/sched_process_fork",
    };
    bpf::attach(bpf, name, hook, ids, |p: &mut BtfTracePoint| {
        p.load(tracepoint, btf)?;
        let id = p.attach()?;
        p.take_link(id)
    })
    .map(FdLink::from)
}

/// The exit program with `group_dead` (6.16+), else the one reading
/// `signal->live`.
fn attach_exit(bpf: &mut Ebpf, btf: &Btf, ids: &mut Vec<u32>) -> Result<FdLink, CollectorError> {
    let forced_live = std::env::var(EXIT_HOOK_ENV).is_ok_and(|v| v == "live");
    if !forced_live {
        match attach_btf(bpf, EXIT_PROGRAM, btf, ids) {
            Ok(link) => return Ok(link),
            Err(e) => tracing::info!(
                error = %e,
                "sched_process_exit has no group_dead argument (before Linux 6.16): using signal->live"
            ),
        }
    }
    attach_btf(bpf, EXIT_LIVE_PROGRAM, btf, ids)
}

/// Adds tgids to the kernel's `tracked` map.
fn track(bpf: &mut Ebpf, tgids: impl IntoIterator<Item = u32>) -> Result<(), CollectorError> {
    let map = bpf.map_mut("tracked").ok_or(CollectorError::Read {
        map: "tracked",
        reason: "missing from object".into(),
    })?;
    let mut tracked: BpfHashMap<&mut MapData, u32, u8> =
        BpfHashMap::try_from(map).map_err(read_err("tracked"))?;
    for tgid in tgids {
        tracked.insert(tgid, 1, 0).map_err(read_err("tracked"))?;
    }
    Ok(())
}

/// The parent of a process, from the `stat` line of `/proc/PID/stat`: the
/// field after the parenthesised comm, which may itself hold spaces and `)`.
pub fn stat_ppid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// (tgid, parent tgid) of every process now.
fn process_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((pid, stat_ppid(&stat)?))
        })
        .collect()
}

/// Every descendant of `roots` in the (tgid, parent) pairs, roots excluded,
/// at most `TRACKED_ENTRIES`.
pub fn descendants(roots: &[u32], parents: &[(u32, u32)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut stack: Vec<u32> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map_or(&[][..], Vec::as_slice) {
            if out.len() < TRACKED_ENTRIES as usize && seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// A NUL-terminated C string of a fixed buffer, lossily.
fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The arguments of an argument block (each NUL-terminated; a cut block
/// ends with part of one), at most `max`; and whether some were cut off.
pub fn split_argv(block: &[u8], max: usize) -> (Vec<String>, bool) {
    let mut parts: Vec<&[u8]> = block.split(|&b| b == 0).collect();
    // A block ending with its NUL leaves an empty piece after it.
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    let cut = parts.len() > max;
    let argv = parts
        .into_iter()
        .take(max)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (argv, cut)
}

/// (exit code, signal, core dumped) of a wait(2) status.
pub fn decode_status(status: u32) -> (u32, u32, bool) {
    ((status >> 8) & 0xff, status & 0x7f, status & 0x80 != 0)
}

/// Aggregates kept in the agent over the events it read.
struct Aggregates {
    execs: u64,
    exits: u64,
    /// At most `MAX_EXECUTABLES` names; execs of others are only in `execs`.
    by_file: HashMap<String, u64>,
    by_status: HashMap<(u32, u32), u64>,
    short_lived: u64,
    threshold: Duration,
    /// Children seen per parent, and the parent's name.
    children: HashMap<u32, (String, u64)>,
    /// Processes seen exec'ing and not yet exiting, with their names: a
    /// child counts once, and a parent gone from /proc keeps its name.
    live: HashMap<u32, String>,
}

impl Aggregates {
    fn new(threshold: Duration) -> Self {
        Self {
            execs: 0,
            exits: 0,
            by_file: HashMap::new(),
            by_status: HashMap::new(),
            short_lived: 0,
            threshold,
            children: HashMap::new(),
            live: HashMap::new(),
        }
    }

    fn count_child(&mut self, ppid: u32) {
        if let Some((_, n)) = self.children.get_mut(&ppid) {
            *n += 1;
        } else if self.children.len() < MAX_PARENTS {
            let comm = match self.live.get(&ppid) {
                Some(comm) => comm.clone(),
                None => std::fs::read_to_string(format!("/proc/{ppid}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default(),
            };
            self.children.insert(ppid, (comm, 1));
        }
    }

    fn record(&mut self, e: &ProcessEvent) {
        match e.r#type() {
            ProcessEventType::Exec => {
                self.execs += 1;
                if let Some(n) = self.by_file.get_mut(&e.filename) {
                    *n += 1;
                } else if self.by_file.len() < MAX_EXECUTABLES {
                    self.by_file.insert(e.filename.clone(), 1);
                }
                // A parent that execs is named by its new image.
                if let Some((comm, _)) = self.children.get_mut(&e.pid) {
                    comm.clone_from(&e.comm);
                }
                if let Some(comm) = self.live.get_mut(&e.pid) {
                    comm.clone_from(&e.comm);
                } else {
                    if self.live.len() < MAX_LIVE {
                        self.live.insert(e.pid, e.comm.clone());
                    }
                    self.count_child(e.ppid);
                }
            }
            ProcessEventType::Exit => {
                self.exits += 1;
                *self.by_status.entry((e.exit_code, e.signal)).or_default() += 1;
                if Duration::from_nanos(e.lifetime_ns) < self.threshold {
                    self.short_lived += 1;
                }
                if self.live.remove(&e.pid).is_none() {
                    self.count_child(e.ppid);
                }
            }
            ProcessEventType::Unspecified => {}
        }
    }

    fn snapshot(&self, elapsed: Duration, drops: [u64; 3]) -> ProcessStats {
        let mut files: Vec<ProcessExecCount> = self
            .by_file
            .iter()
            .map(|(filename, &count)| ProcessExecCount {
                filename: filename.clone(),
                count,
            })
            .collect();
        files.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.filename.cmp(&b.filename))
        });
        files.truncate(LISTED_EXECUTABLES);
        let listed: u64 = files.iter().map(|f| f.count).sum();
        let mut statuses: Vec<ProcessExitCount> = self
            .by_status
            .iter()
            .map(|(&(exit_code, signal), &count)| ProcessExitCount {
                exit_code,
                signal,
                count,
            })
            .collect();
        statuses.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (a.exit_code, a.signal).cmp(&(b.exit_code, b.signal)))
        });
        let mut parents: Vec<ProcessParentCount> = self
            .children
            .iter()
            .map(|(&pid, (comm, children))| ProcessParentCount {
                pid,
                comm: comm.clone(),
                children: *children,
            })
            .collect();
        parents.sort_by(|a, b| b.children.cmp(&a.children).then_with(|| a.pid.cmp(&b.pid)));
        parents.truncate(LISTED_PARENTS);
        ProcessStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            execs: self.execs,
            exits: self.exits,
            executables: files,
            other_execs: self.execs - listed,
            exit_statuses: statuses,
            short_lived: self.short_lived,
            short_lived_threshold_ns: self.threshold.as_nanos() as u64,
            top_parents: parents,
            dropped_events: drops[kernel::DROP_EXEC as usize] + drops[kernel::DROP_EXIT as usize],
            dropped_execs: drops[kernel::DROP_EXEC as usize],
            dropped_exits: drops[kernel::DROP_EXIT as usize],
            untracked_children: drops[kernel::DROP_TRACKED as usize],
        }
    }
}

struct ProcessEventsCollector {
    events: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    program_ids: Vec<u32>,
    interval: Duration,
    next_stats: Duration,
    max_args: usize,
    stats: Aggregates,
    cgroups: CgroupResolver,
    clock: KtimeClock,
    /// Owns the programs and the tracked map; dropped last, which unloads them.
    _bpf: Ebpf,
}

impl ProcessEventsCollector {
    fn base(&mut self, h: &ProcEvent, kind: ProcessEventType) -> ProcessEvent {
        ProcessEvent {
            r#type: kind as i32,
            time_unix_nano: self.clock.unix(h.time_ns),
            pid: h.tgid,
            tid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            comm: c_str(&h.comm),
            start_unix_nano: self.clock.unix(h.start_ns),
            cgroup_id: h.cgroup_id,
            container: self.cgroups.resolve(h.cgroup_id).map(Cgroup::to_proto),
            ..Default::default()
        }
    }

    fn exec(&mut self, e: &ProcExec) -> ProcessEvent {
        let h = &e.hdr;
        let len = (h.argv_len as usize).min(ARGV_BYTES);
        let (argv, cut) = split_argv(&e.argv[..len], self.max_args);
        ProcessEvent {
            filename: c_str(&e.filename),
            argv,
            argv_truncated: cut || h.flags & (FLAG_ARGV_TRUNCATED | FLAG_ARGV_UNREADABLE) != 0,
            ..self.base(h, ProcessEventType::Exec)
        }
    }

    fn exit(&mut self, h: &ProcEvent) -> ProcessEvent {
        let (exit_code, signal, core_dumped) = decode_status(h.status);
        ProcessEvent {
            exit_code,
            signal,
            core_dumped,
            lifetime_ns: h.time_ns.saturating_sub(h.start_ns),
            ..self.base(h, ProcessEventType::Exit)
        }
    }

    fn drops(&self) -> Result<[u64; 3], CollectorError> {
        let mut out = [0u64; 3];
        for (slot, total) in out.iter_mut().enumerate() {
            *total = self
                .drops
                .get(&(slot as u32), 0)
                .map_err(read_err("drops"))?
                .iter()
                .sum();
        }
        Ok(out)
    }
}

impl Collector for ProcessEventsCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        DRAIN_EVERY
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        loop {
            let record = match self.events.next() {
                Some(item) => kernel::Record::from_bytes(&item),
                None => break,
            };
            let event = match record {
                Some(kernel::Record::Exec(e)) => self.exec(&e),
                Some(kernel::Record::Exit(h)) => self.exit(&h),
                None => continue,
            };
            self.stats.record(&event);
            out.push(Payload::ProcessEvent(event));
        }
        if last || elapsed >= self.next_stats {
            self.next_stats = elapsed + self.interval;
            let drops = self.drops()?;
            out.push(Payload::ProcessStats(self.stats.snapshot(elapsed, drops)));
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
    fn argument_blocks_split_into_arguments() {
        assert_eq!(
            split_argv(b"/bin/ls\0-l\0\0two words\0", 64),
            (
                vec![
                    "/bin/ls".to_string(),
                    "-l".into(),
                    "".into(),
                    "two words".into()
                ],
                false
            )
        );
        // Cut by the kernel's byte bound: the last piece is kept.
        assert_eq!(
            split_argv(b"sh\0-c\0ech", 64),
            (vec!["sh".to_string(), "-c".into(), "ech".into()], false)
        );
        // Cut by the count bound.
        assert_eq!(
            split_argv(b"a\0b\0c\0", 2),
            (vec!["a".to_string(), "b".into()], true)
        );
        assert_eq!(split_argv(b"", 64), (vec![], false));
    }

    #[test]
    fn wait_statuses_decode() {
        assert_eq!(decode_status(0), (0, 0, false));
        assert_eq!(decode_status(42 << 8), (42, 0, false));
        assert_eq!(decode_status(9), (0, 9, false));
        assert_eq!(decode_status(0x80 | 11), (0, 11, true));
    }

    #[test]
    fn stat_lines_give_the_parent() {
        assert_eq!(stat_ppid("42 (bash) S 7 42 42 0 -1"), Some(7));
        assert_eq!(stat_ppid("43 (a b) c) R 9 43"), Some(9));
        assert_eq!(stat_ppid("garbage"), None);
    }

    #[test]
    fn descendants_of_the_roots_only() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 12), (20, 13)];
        let mut d = descendants(&[10], &parents);
        d.sort();
        assert_eq!(d, vec![11, 12, 14]);
        assert!(descendants(&[99], &parents).is_empty());
    }

    fn event(kind: ProcessEventType, pid: u32, ppid: u32) -> ProcessEvent {
        ProcessEvent {
            r#type: kind as i32,
            pid,
            ppid,
            ..Default::default()
        }
    }

    #[test]
    fn aggregates_count_each_child_once() {
        let mut a = Aggregates::new(Duration::from_millis(10));
        let mut exec = event(ProcessEventType::Exec, 100, 1);
        exec.filename = "/bin/sh".into();
        a.record(&exec);
        // The same process execs again: one more exec, not one more child.
        exec.filename = "/bin/true".into();
        a.record(&exec);
        let mut exit = event(ProcessEventType::Exit, 100, 1);
        exit.exit_code = 3;
        exit.lifetime_ns = 5_000_000;
        a.record(&exit);
        // A child seen only exiting (it never exec'd) counts too.
        let mut exit = event(ProcessEventType::Exit, 101, 1);
        exit.signal = 9;
        exit.lifetime_ns = 50_000_000;
        a.record(&exit);
        let s = a.snapshot(Duration::from_secs(1), [1, 2, 3]);
        assert_eq!((s.execs, s.exits, s.short_lived), (2, 2, 1));
        assert_eq!(s.top_parents.len(), 1);
        assert_eq!((s.top_parents[0].pid, s.top_parents[0].children), (1, 2));
        assert_eq!(s.executables.len(), 2);
        assert_eq!(s.other_execs, 0);
        let statuses: Vec<_> = s
            .exit_statuses
            .iter()
            .map(|x| (x.exit_code, x.signal, x.count))
            .collect();
        assert_eq!(statuses, vec![(0, 9, 1), (3, 0, 1)]);
        assert_eq!(
            (
                s.dropped_events,
                s.dropped_execs,
                s.dropped_exits,
                s.untracked_children
            ),
            (3, 1, 2, 3)
        );
    }

    #[test]
    fn configs_are_checked() {
        let limits = Limits::default();
        let check = |c: ProcessEventsConfig| {
            ProcessEventsFactory.validate(Some(&KindConfig::ProcessEvents(c)), &limits)
        };
        assert_eq!(check(ProcessEventsConfig::default()), Ok(()));
        let ok = ProcessEventsConfig {
            interval_ns: 100_000_000,
            max_args: MAX_MAX_ARGS,
            max_arg_bytes: ARGV_BYTES as u32,
            ring_buffer_bytes: 4096,
            ..Default::default()
        };
        assert_eq!(check(ok), Ok(()));
        for bad in [
            ProcessEventsConfig {
                interval_ns: 1_000_000,
                ..ok
            },
            ProcessEventsConfig {
                max_args: MAX_MAX_ARGS + 1,
                ..ok
            },
            ProcessEventsConfig {
                max_arg_bytes: ARGV_BYTES as u32 + 1,
                ..ok
            },
            ProcessEventsConfig {
                ring_buffer_bytes: 6000,
                ..ok
            },
            ProcessEventsConfig {
                ring_buffer_bytes: 2048,
                ..ok
            },
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
