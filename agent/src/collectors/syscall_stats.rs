//! syscall-stats: count, errors and latency per syscall, optionally per process.
//!
//! Kernel side: `src/bpf/syscall_stats.bpf.c` on raw tracepoints `sys_enter` and
//! `sys_exit` (no tracefs, no kprobes), per-CPU maps, task-local storage for the
//! entry timestamp. With latency off, one `tp_btf/sys_exit` program instead,
//! which only counts. Needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) and a
//! kernel with BTF and task storage (5.11+). Syscall names are x86_64's.

use super::bpf::{self, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::BtfTracePoint;
use aya::programs::links::FdLink;
use aya::{Btf, Ebpf, EbpfLoader};
use coral_ebpf_programs::syscall_stats::{
    LOG2_BUCKETS, OBJECT, SYSCALL_SLOTS, SysKey, SysProc, SysStat,
};
use coral_proto::error_chain;
use coral_proto::v1::{
    ProcessSyscalls, SyscallLatency, SyscallStat, SyscallStats, SyscallStatsConfig,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Snapshot interval when the request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// (tgid, syscall) entries kept when per-process counts are asked for.
pub const PROCESS_ENTRIES: u32 = 16_384;

/// Exact latency: (program, raw tracepoint).
const TIMED_PROGRAMS: [(&str, &str); 2] = [
    ("coral_sys_enter", "sys_enter"),
    ("coral_sys_exit", "sys_exit"),
];
/// Latency off: counts at `tp_btf/sys_exit` alone.
const COUNT_PROGRAM: &str = "coral_sys_exit_count";

pub struct SyscallStatsFactory;

impl CollectorFactory for SyscallStatsFactory {
    fn kind(&self) -> Kind {
        Kind::SyscallStats
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "raw_tracepoint/sys_enter",
            "raw_tracepoint/sys_exit",
            "tp_btf/sys_exit (latency off)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_x86_64("syscall numbers and names")?;
        caps.require_btf("task storage needs it")?;
        caps.require_raw_tracepoints()?;
        if !caps.task_storage {
            return Err("BPF task storage maps are not supported (kernel 5.11+ needed)".into());
        }
        Ok(())
    }

    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let Some(KindConfig::SyscallStats(c)) = config else {
            return Ok(());
        };
        check_interval(c.interval_ns, limits)?;
        if SyscallLatency::try_from(c.latency).is_err() {
            return Err(format!("unknown latency mode {}", c.latency));
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let config = match &ctx.spec.config {
            Some(KindConfig::SyscallStats(c)) => *c,
            _ => SyscallStatsConfig::default(),
        };
        let interval = match config.interval_ns {
            0 => DEFAULT_INTERVAL,
            ns => Duration::from_nanos(ns),
        };
        let timed = config.latency() != SyscallLatency::Off;
        let globals = FilterGlobals::resolve(ctx)?;
        let per_process = u8::from(config.per_process);

        let mut loader = EbpfLoader::new();
        // aya has no Rust type for task storage; the kernel side is all we need.
        loader.allow_unsupported_maps();
        globals.apply(&mut loader);
        loader.override_global("per_process", &per_process, true);
        if config.per_process {
            loader
                .map_max_entries("proc_stats", PROCESS_ENTRIES)
                .map_max_entries("comms", PROCESS_ENTRIES);
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;

        let mut program_ids = Vec::with_capacity(TIMED_PROGRAMS.len());
        let links: Vec<FdLink> = if timed {
            bpf::attach_raw_tracepoints(&mut bpf, &TIMED_PROGRAMS, &mut program_ids)?
                .into_iter()
                .map(FdLink::from)
                .collect()
        } else {
            // The loader parsed the kernel's BTF too, but keeps it private.
            let btf = Btf::from_sys_fs().map_err(|e| CollectorError::Load(error_chain(&e)))?;
            let link = bpf::attach(
                &mut bpf,
                COUNT_PROGRAM,
                "tp_btf/sys_exit",
                &mut program_ids,
                |p: &mut BtfTracePoint| {
                    p.load("sys_exit", &btf)?;
                    let id = p.attach()?;
                    p.take_link(id)
                },
            )?;
            vec![link.into()]
        };

        Ok(Box::new(SyscallStatsCollector {
            stats: take_map(&mut bpf, "stats")?,
            proc_stats: if config.per_process {
                Some(take_map(&mut bpf, "proc_stats")?)
            } else {
                None
            },
            comms: take_map(&mut bpf, "comms")?,
            drops: take_map(&mut bpf, "drops")?,
            links,
            program_ids,
            interval,
            timed,
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            _bpf: bpf,
        }))
    }
}

struct SyscallStatsCollector {
    stats: PerCpuArray<MapData, SysStat>,
    proc_stats: Option<PerCpuHashMap<MapData, SysKey, SysStat>>,
    comms: HashMap<MapData, u32, SysProc>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    program_ids: Vec<u32>,
    interval: Duration,
    /// Latency is measured (exact mode), not only counts.
    timed: bool,
    /// Paths (and containers) of the processes' cgroup ids.
    cgroups: CgroupResolver,
    /// Owns the programs; dropped last, which unloads them.
    _bpf: Ebpf,
}

/// Per-CPU values summed into one.
fn sum(values: &[SysStat]) -> SysStat {
    let mut total = SysStat {
        count: 0,
        errors: 0,
        total_ns: 0,
        log2: [0; LOG2_BUCKETS],
    };
    for v in values {
        total.count += v.count;
        total.errors += v.errors;
        total.total_ns += v.total_ns;
        for (t, b) in total.log2.iter_mut().zip(v.log2.iter()) {
            *t += b;
        }
    }
    total
}

fn stat(nr: u32, s: &SysStat) -> SyscallStat {
    SyscallStat {
        nr,
        name: syscall_name(nr),
        count: s.count,
        errors: s.errors,
        total_ns: s.total_ns,
        latency_log2: trim_buckets(&s.log2),
    }
}

/// Drops trailing empty buckets so records stay small.
fn trim_buckets(buckets: &[u64]) -> Vec<u64> {
    let used = buckets.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    buckets[..used].to_vec()
}

/// The x86_64 name of syscall `nr`, or `syscall_<nr>`.
pub fn syscall_name(nr: u32) -> String {
    syscalls::Sysno::new(nr as usize)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

impl SyscallStatsCollector {
    fn read_processes(&mut self) -> Result<Vec<ProcessSyscalls>, CollectorError> {
        let Some(proc_stats) = &self.proc_stats else {
            return Ok(Vec::new());
        };
        let mut by_pid: BTreeMap<u32, Vec<SyscallStat>> = BTreeMap::new();
        for entry in proc_stats.iter() {
            let (key, values) = entry.map_err(read_err("proc_stats"))?;
            let s = sum(&values);
            by_pid.entry(key.tgid).or_default().push(stat(key.nr, &s));
        }
        Ok(by_pid
            .into_iter()
            .map(|(pid, mut syscalls)| {
                syscalls.sort_by(|a, b| b.count.cmp(&a.count).then(a.nr.cmp(&b.nr)));
                let proc = self.comms.get(&pid, 0).ok();
                let comm = proc
                    .map(|p| {
                        String::from_utf8_lossy(p.comm.split(|&b| b == 0).next().unwrap_or(&[]))
                            .into_owned()
                    })
                    .unwrap_or_default();
                let cgroup_id = proc.map_or(0, |p| p.cgroup_id);
                ProcessSyscalls {
                    pid,
                    comm,
                    syscalls,
                    cgroup_id,
                    container: match cgroup_id {
                        0 => None,
                        id => self.cgroups.resolve(id).map(Cgroup::to_proto),
                    },
                }
            })
            .collect())
    }
}

impl Collector for SyscallStatsCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        self.interval
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        _last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        let mut syscalls = Vec::new();
        for nr in 0..SYSCALL_SLOTS {
            let values = self.stats.get(&nr, 0).map_err(read_err("stats"))?;
            let s = sum(&values);
            if s.count > 0 {
                syscalls.push(stat(nr, &s));
            }
        }
        syscalls.sort_by(|a, b| b.count.cmp(&a.count).then(a.nr.cmp(&b.nr)));
        let dropped = self
            .drops
            .get(&0, 0)
            .map_err(read_err("drops"))?
            .iter()
            .sum();
        out.push(Payload::SyscallStats(SyscallStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            syscalls,
            processes: self.read_processes()?,
            dropped,
            timed: self.timed,
        }));
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
    fn names_come_from_the_x86_64_table() {
        assert_eq!(syscall_name(39), "getpid");
        assert_eq!(syscall_name(110), "getppid");
        assert_eq!(syscall_name(3), "close");
        assert_eq!(syscall_name(511), "syscall_511");
    }

    #[test]
    fn unknown_latency_modes_are_refused() {
        let config = |latency| {
            KindConfig::SyscallStats(SyscallStatsConfig {
                latency,
                ..Default::default()
            })
        };
        let limits = Limits::default();
        for ok in [
            SyscallLatency::Unspecified,
            SyscallLatency::Exact,
            SyscallLatency::Off,
        ] {
            assert_eq!(
                SyscallStatsFactory.validate(Some(&config(ok as i32)), &limits),
                Ok(())
            );
        }
        assert_eq!(
            SyscallStatsFactory.validate(Some(&config(7)), &limits),
            Err("unknown latency mode 7".into())
        );
    }

    #[test]
    fn trailing_empty_buckets_are_trimmed() {
        assert_eq!(trim_buckets(&[0, 3, 0, 1, 0, 0]), vec![0, 3, 0, 1]);
        assert!(trim_buckets(&[0, 0]).is_empty());
    }
}
