//! HTTPS for http-latency: uprobes on OpenSSL in the traced processes.
//!
//! The socket syscalls of a TLS server carry ciphertext; the plaintext is
//! seen where the process hands it to, or gets it from, its TLS library.
//! `http_latency.bpf.c` has programs for `SSL_read`, `SSL_read_ex` (entry
//! and return), `SSL_write`, `SSL_write_ex` and `SSL_free`; this module
//! finds the `libssl` each target process maps (`/proc/PID/maps`), reads the
//! functions' file offsets from that file's dynamic symbols (once per file),
//! and attaches the programs **to that process only** (a uprobe's perf event
//! bound to its pid: other processes using the same library never trap).
//!
//! Which processes: the filter's, found in `/proc` at start (pids; every
//! process whose cgroup is under the cgroup filter, whose comm is the comm
//! filter); then, for cgroup and comm filters, the processes the kernel
//! announces as they exec or fork (`procs` ring buffer). A process that does
//! not map libssl yet (it may `dlopen` it later, as Python's `ssl` module
//! does) is looked at again, less and less often. Processes that exit have
//! their links dropped at the next sweep.
//!
//! Every link is owned here: dropping the tracker (or [`TlsTracker::detach`])
//! detaches every uprobe, and the perf events go with their links.

use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeScope};
use coral_ebpf_programs::http_latency::ProcEvent;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::bpf::program_error;
use super::super::cpu_profile::maps::parse_maps_line;

/// The uprobe programs, loaded once per collector.
pub const PROGRAMS: [&str; 6] = [
    "coral_ssl_read",
    "coral_ssl_read_ex",
    "coral_ssl_read_ret",
    "coral_ssl_write",
    "coral_ssl_write_ex",
    "coral_ssl_free",
];

/// (program, function, required): what is attached in each process. The
/// `_ex` functions came with OpenSSL 1.1.1; SSL_read and SSL_write do not
/// call them (both call the same internal function), so a request is seen
/// once whichever the server uses.
const PROBES: [(&str, &str, bool); 7] = [
    ("coral_ssl_read", "SSL_read", true),
    ("coral_ssl_read_ret", "SSL_read", true),
    ("coral_ssl_read_ex", "SSL_read_ex", false),
    ("coral_ssl_read_ret", "SSL_read_ex", false),
    ("coral_ssl_write", "SSL_write", true),
    ("coral_ssl_write_ex", "SSL_write_ex", false),
    ("coral_ssl_free", "SSL_free", false),
];

/// Processes probed at once, at most (each holds up to 7 links, one fd each).
pub const MAX_PROCESSES: usize = 512;
/// Processes waiting to be looked at again, at most.
const MAX_PENDING: usize = 4096;
/// Announced processes looked at per tick, at most: a cgroup that forks
/// thousands of processes a second costs the agent a bounded number of
/// `/proc/PID/maps` reads (the rest are drained and skipped).
const MAX_ANNOUNCED_PER_TICK: usize = 256;
/// How often exited processes are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A process without libssl is looked at again after 100 ms, then twice as
/// late each time, at most this late.
const MAX_RECHECK: Duration = Duration::from_secs(10);
const FIRST_RECHECK: Duration = Duration::from_millis(100);

/// A `libssl` a process maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedLib {
    /// As the process sees it (its mount namespace).
    pub path: String,
    pub dev: (u32, u32),
    pub inode: u64,
}

/// The libssl in a `/proc/PID/maps` text: the first file-backed mapping
/// whose name starts with `libssl.so` (`libssl.so.3`, `libssl.so.1.1`).
/// Deleted files (a library upgraded under a running process) are skipped:
/// the path no longer names what the process runs.
pub fn libssl_of(maps: &str) -> Option<MappedLib> {
    maps.lines().filter_map(parse_maps_line).find_map(|e| {
        let path = e.path.as_deref()?;
        let name = path.rsplit('/').next()?;
        (e.is_file() && !e.deleted && name.starts_with("libssl.so")).then(|| MappedLib {
            path: path.to_string(),
            dev: e.dev,
            inode: e.inode,
        })
    })
}

/// File offsets of the probed functions in one libssl.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslOffsets(HashMap<&'static str, u64>);

impl SslOffsets {
    pub fn get(&self, function: &str) -> Option<u64> {
        self.0.get(function).copied()
    }
}

/// Reads the functions' file offsets from an ELF file's dynamic symbols
/// (`st_value` is a virtual address: the section it is in says where it is
/// in the file). Fails when SSL_read or SSL_write is missing.
pub fn ssl_offsets(elf: &[u8]) -> Result<SslOffsets, String> {
    use object::{Object, ObjectSection, ObjectSymbol};

    let file = object::File::parse(elf).map_err(|e| format!("not an ELF file: {e}"))?;
    let mut found = HashMap::new();
    for sym in file.dynamic_symbols() {
        let Ok(name) = sym.name() else { continue };
        let Some(&(_, function, _)) = PROBES.iter().find(|(_, f, _)| *f == name) else {
            continue;
        };
        if !sym.is_definition() {
            continue;
        }
        let Some(index) = sym.section_index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let Some((offset, _)) = section.file_range() else {
            continue;
        };
        if let Some(rel) = sym.address().checked_sub(section.address()) {
            found.insert(function, offset + rel);
        }
    }
    for (_, function, required) in PROBES {
        if required && !found.contains_key(function) {
            return Err(format!("no {function} among its dynamic symbols"));
        }
    }
    Ok(SslOffsets(found))
}

/// The path under which the agent reaches a file of process `pid`'s mount
/// namespace (containers have their own root).
fn through_root(pid: u32, path: &str) -> PathBuf {
    Path::new(&format!("/proc/{pid}/root")).join(path.trim_start_matches('/'))
}

/// Field 22 of `/proc/PID/stat`: the process's start time (clock ticks
/// since boot), which tells a reused pid from the process we probed.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The processes a filter names, as `/proc` shows them now.
#[derive(Clone, Debug, Default)]
pub struct ProcFilter {
    pub pids: Vec<u32>,
    /// The cgroup filter as a path relative to the cgroup2 mount (`/a/b`).
    pub cgroup: Option<String>,
    pub comm: Option<String>,
    /// The agent itself.
    pub ignore: u32,
}

impl ProcFilter {
    fn matches(&self, pid: u32) -> bool {
        if pid == self.ignore || (!self.pids.is_empty() && !self.pids.contains(&pid)) {
            return false;
        }
        if let Some(want) = &self.cgroup {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
                return false;
            };
            let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
                return false;
            };
            let under = want == "/"
                || path == want
                || path
                    .strip_prefix(want.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            if !under {
                return false;
            }
        }
        if let Some(want) = &self.comm {
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
                return false;
            };
            // The kernel keeps 15 bytes of it, as the BPF filter compares.
            let want = &want.as_bytes()[..want.len().min(15)];
            if comm.trim_end_matches('\n').as_bytes() != want {
                return false;
            }
        }
        true
    }

    /// Every process matching now.
    pub fn scan(&self) -> Vec<u32> {
        if !self.pids.is_empty() {
            return self
                .pids
                .iter()
                .copied()
                .filter(|&p| self.matches(p))
                .collect();
        }
        all_pids()
            .into_iter()
            .filter(|&p| self.matches(p))
            .collect()
    }
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Why a process got no uprobes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The process maps no libssl (now).
    #[error("process {0} maps no libssl")]
    NoLibssl(u32),
    /// Its libssl could not be read or lacks the functions.
    #[error("{path}: {reason}")]
    Library { path: String, reason: String },
    /// The kernel refused a uprobe.
    #[error("uprobe {program} on {function} in {path}: {reason}")]
    Attach {
        program: &'static str,
        function: &'static str,
        path: String,
        reason: String,
    },
    /// The process table is full.
    #[error("{MAX_PROCESSES} processes have TLS uprobes already")]
    TooMany,
}

/// A file by (device, inode), as `/proc/PID/maps` names it.
type FileKey = ((u32, u32), u64);

/// What one libssl file gave: its offsets, or why it cannot be probed.
type LibOffsets = Result<Arc<SslOffsets>, String>;

struct Traced {
    start: Option<u64>,
    /// Dropping them detaches the uprobes.
    _links: Vec<UProbeLink>,
}

struct Pending {
    start: Option<u64>,
    next: Instant,
    wait: Duration,
}

/// The uprobes of one collector, per process (or, without a filter, per
/// library for every process).
pub struct TlsTracker {
    filter: ProcFilter,
    libs: HashMap<FileKey, LibOffsets>,
    traced: HashMap<u32, Traced>,
    pending: HashMap<u32, Pending>,
    /// Whole-machine links (no filter, TLS on).
    global: Vec<UProbeLink>,
    /// New processes the kernel announces (cgroup and comm filters).
    announced: Option<RingBuf<MapData>>,
    next_sweep: Instant,
}

impl TlsTracker {
    /// Loads the uprobe programs; nothing is attached yet.
    pub fn new(
        bpf: &mut Ebpf,
        filter: ProcFilter,
        announced: Option<RingBuf<MapData>>,
        program_ids: &mut Vec<u32>,
    ) -> Result<Self, TlsError> {
        for name in PROGRAMS {
            let program: &mut UProbe = bpf
                .program_mut(name)
                .ok_or_else(|| attach_err(name, "", "", "program missing from object".into()))?
                .try_into()
                .map_err(|e| attach_err(name, "", "", program_error(&e)))?;
            program
                .load()
                .map_err(|e| attach_err(name, "", "", program_error(&e)))?;
            if let Ok(info) = program.info() {
                program_ids.push(info.id());
            }
        }
        Ok(Self {
            filter,
            libs: HashMap::new(),
            traced: HashMap::new(),
            pending: HashMap::new(),
            global: Vec::new(),
            announced,
            next_sweep: Instant::now() + SWEEP_EVERY,
        })
    }

    /// Attaches to the filter's processes as `/proc` shows them now. Those
    /// without libssl are looked at again later. Returns what failed for
    /// processes that map libssl.
    pub fn attach_matching(&mut self, bpf: &mut Ebpf) -> Vec<TlsError> {
        let mut errors = Vec::new();
        for pid in self.filter.scan() {
            match self.try_attach(bpf, pid) {
                Ok(()) => {}
                Err(TlsError::NoLibssl(_)) => self.wait_for(pid),
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// No filter: every distinct libssl some process maps now is probed for
    /// all processes.
    pub fn attach_everywhere(&mut self, bpf: &mut Ebpf) -> Result<usize, TlsError> {
        let mut seen = std::collections::HashSet::new();
        for pid in all_pids() {
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            let Some(lib) = libssl_of(&maps) else {
                continue;
            };
            if !seen.insert((lib.dev, lib.inode)) {
                continue;
            }
            let offsets = self.offsets_of(pid, &lib)?;
            let links = attach_probes(bpf, &through_root(pid, &lib.path), &offsets, None)?;
            tracing::info!(library = %lib.path, pid, "http-latency: TLS uprobes for every process");
            self.global.extend(links);
        }
        Ok(seen.len())
    }

    /// Work of one collector tick: announced processes, due rechecks, and
    /// (every second) processes that exited.
    pub fn tick(&mut self, bpf: &mut Ebpf) {
        let mut announced = Vec::new();
        if let Some(ring) = self.announced.as_mut() {
            while let Some(item) = ring.next() {
                if let Some(e) = ProcEvent::from_bytes(&item) {
                    announced.push(e.tgid);
                }
            }
        }
        announced.sort_unstable();
        announced.dedup();
        if announced.len() > MAX_ANNOUNCED_PER_TICK {
            tracing::debug!(
                skipped = announced.len() - MAX_ANNOUNCED_PER_TICK,
                "http-latency: too many new processes in one tick for TLS uprobes"
            );
        }
        for pid in announced.into_iter().take(MAX_ANNOUNCED_PER_TICK) {
            if !self.traced.contains_key(&pid) {
                self.recheck(bpf, pid);
            }
        }
        let now = Instant::now();
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in due {
            self.recheck(bpf, pid);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.traced
                .retain(|&pid, t| t.start.is_some() && start_time(pid) == t.start);
            self.pending
                .retain(|&pid, p| p.start.is_some() && start_time(pid) == p.start);
        }
    }

    /// Drops every link: the uprobes are detached.
    pub fn detach(&mut self) {
        self.traced.clear();
        self.pending.clear();
        self.global.clear();
    }

    fn recheck(&mut self, bpf: &mut Ebpf, pid: u32) {
        match self.try_attach(bpf, pid) {
            Ok(()) => {
                self.pending.remove(&pid);
            }
            Err(TlsError::NoLibssl(_)) => self.wait_for(pid),
            Err(e) => {
                self.pending.remove(&pid);
                tracing::warn!(pid, error = %e, "http-latency: no TLS uprobes for this process");
            }
        }
    }

    fn wait_for(&mut self, pid: u32) {
        let now = Instant::now();
        if let Some(p) = self.pending.get_mut(&pid) {
            p.wait = (p.wait * 2).min(MAX_RECHECK);
            p.next = now + p.wait;
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            return;
        }
        let Some(start) = start_time(pid) else {
            return; // gone already
        };
        self.pending.insert(
            pid,
            Pending {
                start: Some(start),
                next: now + FIRST_RECHECK,
                wait: FIRST_RECHECK,
            },
        );
    }

    fn offsets_of(&mut self, pid: u32, lib: &MappedLib) -> Result<Arc<SslOffsets>, TlsError> {
        let key = (lib.dev, lib.inode);
        let entry = self.libs.entry(key).or_insert_with(|| {
            std::fs::read(through_root(pid, &lib.path))
                .map_err(|e| e.to_string())
                .and_then(|data| ssl_offsets(&data))
                .map(Arc::new)
        });
        entry.clone().map_err(|reason| TlsError::Library {
            path: lib.path.clone(),
            reason,
        })
    }

    fn try_attach(&mut self, bpf: &mut Ebpf, pid: u32) -> Result<(), TlsError> {
        if self.traced.contains_key(&pid) {
            return Ok(());
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|_| TlsError::NoLibssl(pid))?;
        let lib = libssl_of(&maps).ok_or(TlsError::NoLibssl(pid))?;
        if self.traced.len() >= MAX_PROCESSES {
            return Err(TlsError::TooMany);
        }
        let offsets = self.offsets_of(pid, &lib)?;
        let scope = NonZeroU32::new(pid).map(UProbeScope::OneProcess);
        let links = attach_probes(bpf, &through_root(pid, &lib.path), &offsets, scope)?;
        tracing::debug!(pid, library = %lib.path, links = links.len(), "http-latency: TLS uprobes attached");
        self.traced.insert(
            pid,
            Traced {
                start: start_time(pid),
                _links: links,
            },
        );
        Ok(())
    }
}

fn attach_err(
    program: &'static str,
    function: &'static str,
    path: &str,
    reason: String,
) -> TlsError {
    TlsError::Attach {
        program,
        function,
        path: path.to_string(),
        reason,
    }
}

/// Attaches every probe whose function `offsets` has, in `target` for one
/// process (`scope`) or all (`None`). All or nothing: on an error, what was
/// attached is dropped (detached) with the returned error.
fn attach_probes(
    bpf: &mut Ebpf,
    target: &Path,
    offsets: &SslOffsets,
    scope: Option<UProbeScope>,
) -> Result<Vec<UProbeLink>, TlsError> {
    let shown = target.display().to_string();
    let mut links = Vec::with_capacity(PROBES.len());
    for (program, function, _) in PROBES {
        let Some(offset) = offsets.get(function) else {
            continue;
        };
        let err = |reason| attach_err(program, function, &shown, reason);
        let p: &mut UProbe = bpf
            .program_mut(program)
            .ok_or_else(|| err("program missing from object".into()))?
            .try_into()
            .map_err(|e| err(program_error(&e)))?;
        let id = p
            .attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                target,
                scope.unwrap_or(UProbeScope::AllProcesses),
            )
            .map_err(|e| err(program_error(&e)))?;
        links.push(p.take_link(id).map_err(|e| err(program_error(&e)))?);
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a1e000 r--p 00000000 fd:01 1234                       /usr/sbin/nginx
7f2a0f5fa000-7f2a0f617000 r--p 00000000 fd:01 5678                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f2a0f617000-7f2a0f675000 r-xp 0001d000 fd:01 5678                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f2a0f000000-7f2a0f2c0000 r-xp 00000000 fd:01 9999                       /usr/lib/x86_64-linux-gnu/libcrypto.so.3
";

    #[test]
    fn libssl_is_found_in_maps() {
        let lib = libssl_of(MAPS).unwrap();
        assert_eq!(lib.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!((lib.dev, lib.inode), ((0xfd, 1), 5678));
        assert_eq!(libssl_of(&MAPS.replace("libssl", "libtls")), None);
        let deleted = MAPS.replace("libssl.so.3\n", "libssl.so.3 (deleted)\n");
        assert_eq!(libssl_of(&deleted), None);
    }

    #[test]
    fn offsets_of_a_real_libssl_when_there_is_one() {
        // The build host's own libssl, if it has one: the offsets must point
        // into the file's executable part.
        let Some(lib) = std::fs::read_to_string("/proc/self/maps")
            .ok()
            .and_then(|m| libssl_of(&m))
            .or_else(|| {
                [
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                    "/lib/x86_64-linux-gnu/libssl.so.3",
                ]
                .iter()
                .find(|p| Path::new(p).exists())
                .map(|p| MappedLib {
                    path: p.to_string(),
                    dev: (0, 0),
                    inode: 0,
                })
            })
        else {
            return;
        };
        let data = std::fs::read(&lib.path).unwrap();
        let offsets = ssl_offsets(&data).unwrap();
        for function in ["SSL_read", "SSL_write"] {
            let off = offsets.get(function).unwrap();
            assert!(
                off > 0 && (off as usize) < data.len(),
                "{function} {off:#x}"
            );
        }
        assert!(ssl_offsets(b"not an elf").is_err());
    }

    #[test]
    fn start_time_survives_odd_comms() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn filter_matches_pid_cgroup_and_comm() {
        let me = std::process::id();
        let pids = ProcFilter {
            pids: vec![me],
            ..Default::default()
        };
        assert_eq!(pids.scan(), vec![me]);
        let ignored = ProcFilter {
            pids: vec![me],
            ignore: me,
            ..Default::default()
        };
        assert!(ignored.scan().is_empty());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let by_comm = ProcFilter {
            pids: vec![me],
            comm: Some(comm.trim().to_string()),
            ..Default::default()
        };
        assert_eq!(by_comm.scan(), vec![me]);
        let wrong = ProcFilter {
            pids: vec![me],
            comm: Some("no-such-comm".into()),
            ..Default::default()
        };
        assert!(wrong.scan().is_empty());
        if let Some(path) = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(String::from))
            })
        {
            let by_cgroup = ProcFilter {
                pids: vec![me],
                cgroup: Some("/".into()),
                ..Default::default()
            };
            assert_eq!(by_cgroup.scan(), vec![me]);
            let exact = ProcFilter {
                pids: vec![me],
                cgroup: Some(path.clone()),
                ..Default::default()
            };
            assert_eq!(exact.scan(), vec![me]);
            let sibling = ProcFilter {
                pids: vec![me],
                cgroup: Some(format!("{path}-not")),
                ..Default::default()
            };
            assert!(sibling.scan().is_empty());
        }
    }
}
