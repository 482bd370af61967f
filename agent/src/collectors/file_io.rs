//! file-io: opens (flags and errors), reads, writes and fsyncs per (process,
//! path as opened), with log2 latency histograms; one event per failed open
//! and per read, write or fsync slower than a threshold (fileslower); the
//! aggregate lists the top files by bytes (filetop).
//!
//! Kernel side: `src/bpf/file_io.bpf.c`, two programs on `tp_btf/sys_enter`
//! and `tp_btf/sys_exit` dispatching on the syscall number (open, creat,
//! openat, openat2; read, pread64, readv, preadv, preadv2 and the writes;
//! fsync, fdatasync; close). No kprobes, no fentry, no tracefs. It needs BTF
//! (tp_btf, task storage), a ring buffer, x86_64 syscall numbers and
//! CAP_BPF + CAP_PERFMON.
//!
//! The kernel keeps one aggregate per (tgid, path hash, errno) in the `files`
//! hash (bounded by `max_files`; what does not fit is counted), and maps the
//! fds it saw opened (and their dups) to their aggregate. I/O on other fds
//! (opened before the start, inherited, sockets, pipes) is only counted as
//! untracked.
//! The agent reads the whole map every interval, so the records are
//! cumulative, and drains the ring buffer every 100ms.

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::{Ebpf, EbpfLoader};
use coral_ebpf_programs::file_io::{
    FileEvent, FileKey, FileStat, LOG2_BUCKETS, OBJECT, OP_FSYNC, OP_OPEN, OP_READ, OP_WRITE, c_str,
};
use coral_proto::error_chain;
use coral_proto::v1::{
    FileIoConfig, FileIoEvent, FileIoFile, FileIoOp, FileIoOpenError, FileIoProcess, FileIoStats,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_SLOW: Duration = Duration::from_millis(10);
pub const DEFAULT_MAX_FILES: u32 = 4096;
/// A `coral_fio_stat` is 880 bytes and the hash is preallocated: 64 MiB.
pub const MAX_MAX_FILES: u32 = 65_536;
pub const DEFAULT_TOP: u32 = 100;
pub const MAX_TOP: u32 = 10_000;
/// Failed-open rows listed per `FileIoStats`.
const LISTED_OPEN_ERRORS: usize = 100;
/// How often the ring buffer is drained.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// (program, tp_btf tracepoint, hook as reported).
const PROGRAMS: [(&str, &str, &str); 2] = [
    ("coral_fio_enter", "sys_enter", "tp_btf/sys_enter"),
    ("coral_fio_exit", "sys_exit", "tp_btf/sys_exit"),
];

/// drops[] slots (file_io.bpf.c).
const DROP_EVENTS: u32 = 0;
const DROP_FILES: u32 = 1;
const UNTRACKED: u32 = 2;

pub struct FileIoFactory;

fn config(spec_config: Option<&KindConfig>) -> FileIoConfig {
    match spec_config {
        Some(KindConfig::FileIo(c)) => *c,
        _ => FileIoConfig::default(),
    }
}

fn or_default(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

impl CollectorFactory for FileIoFactory {
    fn kind(&self) -> Kind {
        Kind::FileIo
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "tp_btf/sys_enter (read, write, pread64, pwrite64, readv, writev, preadv, pwritev, preadv2, pwritev2, fsync, fdatasync: entry time)",
            "tp_btf/sys_exit (the same, and open, creat, openat, openat2, close)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_x86_64("syscall numbers and argument registers")?;
        caps.require_btf("tp_btf programs and task storage need it")?;
        caps.require_raw_tracepoints()?;
        caps.require_ringbuf()
    }

    fn validate(&self, spec_config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let c = config(spec_config);
        check_interval(c.interval_ns, limits)?;
        if c.max_files > MAX_MAX_FILES {
            return Err(format!("max_files must be at most {MAX_MAX_FILES}"));
        }
        if c.top > MAX_TOP {
            return Err(format!("top must be at most {MAX_TOP}"));
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let c = config(ctx.spec.config.as_ref());
        let globals = FilterGlobals::resolve(ctx)?;
        let slow_ns: u64 = match c.slow_ns {
            0 => DEFAULT_SLOW.as_nanos() as u64,
            ns => ns,
        };
        let mut loader = EbpfLoader::new();
        // `starts` is task storage, which aya does not model (the kernel does).
        loader.allow_unsupported_maps();
        globals.apply(&mut loader);
        loader
            .override_global("slow_ns", &slow_ns, true)
            .map_max_entries("files", or_default(c.max_files, DEFAULT_MAX_FILES));
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;
        let mut program_ids = Vec::new();
        let links = bpf::attach_btf_tracepoints(&mut bpf, &PROGRAMS, &mut program_ids)?;
        Ok(Box::new(FileIoCollector {
            events: take_map(&mut bpf, "events")?,
            files: take_map(&mut bpf, "files")?,
            drops: take_map(&mut bpf, "drops")?,
            links,
            program_ids,
            interval: match c.interval_ns {
                0 => DEFAULT_INTERVAL,
                ns => Duration::from_nanos(ns),
            },
            next_stats: Duration::ZERO,
            slow_ns,
            top: or_default(c.top, DEFAULT_TOP) as usize,
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            clock: KtimeClock::now(),
            _bpf: bpf,
        }))
    }
}

/// `ENOENT` for 2; `errno N` for those without a name here.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ELOOP => "ELOOP",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EDQUOT => "EDQUOT",
        libc::ESTALE => "ESTALE",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// `O_WRONLY|O_CREAT|O_TRUNC` for the flags of an open, as the kernel
/// numbers them on x86_64 (not libc's: there O_LARGEFILE is 0).
pub fn open_flag_names(flags: u32) -> String {
    let mut names = vec![match flags & 0o3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    }];
    // O_SYNC and O_TMPFILE include another flag's bit: tested first, whole.
    let mut rest = flags & !0o3;
    for (bits, name) in [
        (0o4010000, "O_SYNC"),
        (0o20200000, "O_TMPFILE"),
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o20000, "FASYNC"),
        (0o40000, "O_DIRECT"),
        (0o100000, "O_LARGEFILE"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o1000000, "O_NOATIME"),
        (0o2000000, "O_CLOEXEC"),
        (0o10000000, "O_PATH"),
    ] {
        if rest & bits == bits {
            names.push(name);
            rest &= !bits;
        }
    }
    let mut out = names.join("|");
    if rest != 0 {
        out.push_str(&format!("|0o{rest:o}"));
    }
    out
}

/// The upper bound (ns) of the log2 bucket quantile `q` of `buckets` falls
/// in; 0 with no samples.
pub fn log2_quantile(buckets: &[u64], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return 1u64 << (i + 1).min(63);
        }
    }
    1u64 << buckets.len().min(63)
}

fn trim(buckets: &[u64; LOG2_BUCKETS]) -> Vec<u64> {
    let used = buckets.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    buckets[..used].to_vec()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(c_str(bytes)).into_owned()
}

fn file_row(key: &FileKey, s: &FileStat) -> FileIoFile {
    FileIoFile {
        pid: key.tgid,
        comm: text(&s.comm),
        path: text(&s.path),
        flags: s.flags,
        flag_names: open_flag_names(s.flags),
        opens: s.opens,
        reads: s.reads,
        read_bytes: s.read_bytes,
        writes: s.writes,
        write_bytes: s.write_bytes,
        fsyncs: s.fsyncs,
        read_ns: s.read_ns,
        write_ns: s.write_ns,
        fsync_ns: s.fsync_ns,
        read_p50_ns: log2_quantile(&s.read_log2, 0.50),
        read_p99_ns: log2_quantile(&s.read_log2, 0.99),
        write_p50_ns: log2_quantile(&s.write_log2, 0.50),
        write_p99_ns: log2_quantile(&s.write_log2, 0.99),
        read_latency_log2: trim(&s.read_log2),
        write_latency_log2: trim(&s.write_log2),
        cgroup_id: s.cgroup_id,
        container: None,
    }
}

/// Adds `b`'s counters into `a` (the "other files" row).
fn add_into(a: &mut FileIoFile, b: &FileIoFile) {
    a.opens += b.opens;
    a.reads += b.reads;
    a.read_bytes += b.read_bytes;
    a.writes += b.writes;
    a.write_bytes += b.write_bytes;
    a.fsyncs += b.fsyncs;
    a.read_ns += b.read_ns;
    a.write_ns += b.write_ns;
    a.fsync_ns += b.fsync_ns;
}

/// Builds the snapshot from every (key, value) of the kernel's map: files
/// by bytes (the first `top`, the rest summed), failed opens by count, and
/// the per-process sums.
pub fn snapshot(entries: &[(FileKey, FileStat)], top: usize) -> FileIoStats {
    let mut files = Vec::new();
    let mut open_errors = Vec::new();
    let mut processes: BTreeMap<u32, FileIoProcess> = BTreeMap::new();
    for (key, s) in entries {
        let p = processes.entry(key.tgid).or_insert_with(|| FileIoProcess {
            pid: key.tgid,
            comm: text(&s.comm),
            cgroup_id: s.cgroup_id,
            ..Default::default()
        });
        if key.err != 0 {
            p.open_errors += s.opens;
            open_errors.push(FileIoOpenError {
                pid: key.tgid,
                comm: text(&s.comm),
                path: text(&s.path),
                errno: key.err as i32,
                error: errno_name(key.err as i32),
                flags: s.flags,
                flag_names: open_flag_names(s.flags),
                count: s.opens,
            });
            continue;
        }
        p.files += 1;
        p.opens += s.opens;
        p.reads += s.reads;
        p.read_bytes += s.read_bytes;
        p.writes += s.writes;
        p.write_bytes += s.write_bytes;
        p.fsyncs += s.fsyncs;
        files.push(file_row(key, s));
    }
    let bytes = |f: &FileIoFile| f.read_bytes + f.write_bytes;
    files.sort_by(|a, b| {
        bytes(b)
            .cmp(&bytes(a))
            .then_with(|| (b.reads + b.writes).cmp(&(a.reads + a.writes)))
            .then_with(|| (a.pid, &a.path).cmp(&(b.pid, &b.path)))
    });
    let mut other = FileIoFile {
        path: "{other}".into(),
        ..Default::default()
    };
    for f in files.iter().skip(top) {
        add_into(&mut other, f);
    }
    files.truncate(top);
    open_errors.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (a.pid, &a.path, a.errno).cmp(&(b.pid, &b.path, b.errno)))
    });
    open_errors.truncate(LISTED_OPEN_ERRORS);
    let mut processes: Vec<_> = processes.into_values().collect();
    processes.sort_by(|a, b| {
        (b.read_bytes + b.write_bytes)
            .cmp(&(a.read_bytes + a.write_bytes))
            .then(a.pid.cmp(&b.pid))
    });
    FileIoStats {
        files,
        other_files: Some(other),
        open_errors,
        processes,
        ..Default::default()
    }
}

struct FileIoCollector {
    events: RingBuf<MapData>,
    files: BpfHashMap<MapData, FileKey, FileStat>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    program_ids: Vec<u32>,
    interval: Duration,
    next_stats: Duration,
    slow_ns: u64,
    top: usize,
    cgroups: CgroupResolver,
    clock: KtimeClock,
    /// Owns the programs (declared last: dropped after the links).
    _bpf: Ebpf,
}

impl FileIoCollector {
    fn event(&mut self, e: &FileEvent) -> FileIoEvent {
        let op = match e.op {
            OP_OPEN => FileIoOp::Open,
            OP_READ => FileIoOp::Read,
            OP_WRITE => FileIoOp::Write,
            OP_FSYNC => FileIoOp::Fsync,
            _ => FileIoOp::Unspecified,
        };
        FileIoEvent {
            start_unix_nano: self.clock.unix(e.start_ns),
            op: op.into(),
            pid: e.tgid,
            tid: e.tid,
            comm: text(&e.comm),
            path: text(&e.path),
            fd: e.fd,
            bytes: e.bytes,
            latency_ns: e.latency_ns,
            errno: e.err,
            error: if e.err == 0 {
                String::new()
            } else {
                errno_name(e.err)
            },
            flags: e.flags,
            flag_names: if op == FileIoOp::Open {
                open_flag_names(e.flags)
            } else {
                String::new()
            },
            cgroup_id: e.cgroup_id,
            container: self.cgroups.resolve(e.cgroup_id).map(Cgroup::to_proto),
        }
    }

    fn drop_count(&self, slot: u32) -> Result<u64, CollectorError> {
        Ok(self
            .drops
            .get(&slot, 0)
            .map_err(read_err("drops"))?
            .iter()
            .sum())
    }

    fn stats(&mut self, elapsed: Duration) -> Result<FileIoStats, CollectorError> {
        let mut entries = Vec::new();
        for entry in self.files.iter() {
            // An entry removed between the key walk and the lookup is skipped.
            match entry {
                Ok(kv) => entries.push(kv),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(read_err("files")(e)),
            }
        }
        let mut stats = snapshot(&entries, self.top);
        for f in &mut stats.files {
            f.container = self.cgroups.resolve(f.cgroup_id).map(Cgroup::to_proto);
        }
        for p in &mut stats.processes {
            p.container = self.cgroups.resolve(p.cgroup_id).map(Cgroup::to_proto);
        }
        stats.elapsed_ns = elapsed.as_nanos() as u64;
        stats.untracked_ops = self.drop_count(UNTRACKED)?;
        stats.dropped_files = self.drop_count(DROP_FILES)?;
        stats.dropped_events = self.drop_count(DROP_EVENTS)?;
        stats.slow_threshold_ns = self.slow_ns;
        Ok(stats)
    }
}

impl Collector for FileIoCollector {
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
            let event = match self.events.next() {
                Some(item) => FileEvent::from_bytes(&item),
                None => break,
            };
            if let Some(e) = event {
                let e = self.event(&e);
                out.push(Payload::FileIoEvent(e));
            }
        }
        if last || elapsed >= self.next_stats {
            self.next_stats = elapsed + self.interval;
            let stats = self.stats(elapsed)?;
            out.push(Payload::FileIoStats(stats));
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
    fn flags_and_errnos_have_names() {
        assert_eq!(open_flag_names(0), "O_RDONLY");
        let creat = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32;
        assert_eq!(open_flag_names(creat), "O_WRONLY|O_CREAT|O_TRUNC");
        let sync = (libc::O_RDWR | libc::O_SYNC | libc::O_CLOEXEC) as u32;
        assert_eq!(open_flag_names(sync), "O_RDWR|O_SYNC|O_CLOEXEC");
        // The kernel's O_LARGEFILE (libc's is 0 on x86_64).
        assert_eq!(open_flag_names(0o100000), "O_RDONLY|O_LARGEFILE");
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(libc::EACCES), "EACCES");
        assert_eq!(errno_name(4095), "errno 4095");
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        assert_eq!(log2_quantile(&[], 0.5), 0);
        // 10 calls in [1024, 2048), one in [2^20, 2^21).
        let mut b = [0u64; LOG2_BUCKETS];
        b[10] = 99;
        b[20] = 1;
        assert_eq!(log2_quantile(&b, 0.5), 2048);
        assert_eq!(log2_quantile(&b, 0.99), 2048);
        assert_eq!(log2_quantile(&b, 1.0), 1 << 21);
    }

    fn stat(path: &str, read_bytes: u64, opens: u64) -> FileStat {
        let mut s = FileStat {
            opens,
            reads: 1,
            read_bytes,
            read_ns: 0,
            writes: 0,
            write_bytes: 0,
            write_ns: 0,
            fsyncs: 0,
            fsync_ns: 0,
            cgroup_id: 0,
            flags: 0,
            pad: 0,
            comm: [0; 16],
            path: [0; 256],
            read_log2: [0; LOG2_BUCKETS],
            write_log2: [0; LOG2_BUCKETS],
        };
        s.path[..path.len()].copy_from_slice(path.as_bytes());
        s
    }

    #[test]
    fn snapshot_ranks_files_and_splits_failed_opens() {
        let key = |h, tgid, err| FileKey {
            path_hash: h,
            tgid,
            err,
        };
        let entries = vec![
            (key(1, 10, 0), stat("/a", 100, 1)),
            (key(2, 10, 0), stat("/b", 300, 1)),
            (key(3, 11, 0), stat("/c", 200, 2)),
            (key(4, 10, 2), stat("/missing", 0, 3)),
        ];
        let s = snapshot(&entries, 2);
        let paths: Vec<_> = s.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/b", "/c"]);
        assert_eq!(s.other_files.as_ref().unwrap().read_bytes, 100);
        assert_eq!(s.open_errors.len(), 1);
        assert_eq!(s.open_errors[0].error, "ENOENT");
        assert_eq!(s.open_errors[0].count, 3);
        let p10 = s.processes.iter().find(|p| p.pid == 10).unwrap();
        assert_eq!((p10.files, p10.opens, p10.open_errors), (2, 2, 3));
        assert_eq!(p10.read_bytes, 400);
    }
}
