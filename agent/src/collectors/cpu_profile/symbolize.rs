//! Turns raw stack addresses into function names with blazesym.
//!
//! Kernel addresses go through `/proc/kallsyms` (module names from
//! `/proc/modules`). User addresses need the process's memory maps, which
//! vanish with the process, so they are taken while it runs: when the kernel
//! announces a process (its first sample), [`Symbolizer::capture`] reads
//! `/proc/PID/maps` and opens every executable file it maps through
//! `/proc/PID/map_files/` (the exact file mapped, even if it was deleted or
//! replaced since, even in another mount namespace). The open file is kept for
//! the collector's life and handed to blazesym as `/proc/self/fd/N`, so a
//! process that exited (and a binary that was removed) still resolves. Each
//! file is opened once, however many processes map it.
//!
//! An address becomes a file offset (`addr - start + offset` of its mapping)
//! and is symbolized against the file's ELF symbols, or its DWARF when present
//! (which also yields inlined functions). Results are cached per (file, offset)
//! and per stack, so a steady profile costs almost nothing after its first
//! snapshot.
//!
//! Not `Send` (blazesym caches parsed files in `Rc`s): it lives on the
//! collector's worker thread.

use super::maps::{self, KernelModule, MapsEntry};
use blazesym::symbolize::source::{Elf, Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized};
use blazesym::{MaybeDefault, Pid};
use coral_proto::v1::Frame;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

/// Function name of a frame that could not be symbolized.
pub const UNKNOWN: &str = "[unknown]";
/// Module of kernel frames outside any module.
pub const KERNEL: &str = "[kernel]";

/// Files kept open for symbolization. Each also costs blazesym an open file
/// once parsed, and the agent's RLIMIT_NOFILE is often 1024. Past this, files
/// are read by path, which fails only if they are deleted or the process's
/// mount namespace differs.
const MAX_HELD_FILES: usize = 256;

/// Processes whose maps are kept. Past this, new processes are not captured
/// (their frames resolve only while they run).
const MAX_PROCESSES: usize = 16_384;

/// Distinct executable files known. Past this, code in new files is shown
/// as `[unknown]` in its module.
const MAX_FILES: usize = 4096;

/// Cached symbol lookups (per file offset, per kernel or vDSO address).
/// Past this a cache starts over: a profile of huge code bases costs more
/// symbolizing, never unbounded memory.
const MAX_CACHED_SYMBOLS: usize = 1 << 18;

/// Files blazesym has parsed (it keeps each parse, and often the file,
/// open). Past this it is rebuilt, which closes them.
const MAX_PARSED_FILES: usize = 512;

type FileId = usize;

/// An executable file some profiled process maps.
struct ObjectFile {
    /// What blazesym opens: `/proc/self/fd/N` of `_held`, or the plain path.
    source: PathBuf,
    module: Arc<str>,
    /// Keeps the file reachable after the process exits.
    _held: Option<File>,
}

/// What an executable mapping holds.
#[derive(Clone)]
enum Object {
    File(FileId),
    Vdso,
    /// Anonymous or a pseudo file (JIT code, `[heap]`...): never symbolized.
    Other(Arc<str>),
}

#[derive(Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    object: Object,
}

/// A process's executable mappings, by start address.
struct ProcessMaps {
    mappings: Vec<Mapping>,
}

/// Counters for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub processes_captured: u64,
    pub files_opened: u64,
    pub addresses_symbolized: u64,
}

pub struct Symbolizer {
    blaze: blazesym::symbolize::Symbolizer,
    processes: HashMap<u32, ProcessMaps>,
    /// Processes whose maps could not be read (gone): not tried again.
    gone: HashSet<u32>,
    files: Vec<ObjectFile>,
    file_ids: HashMap<((u32, u32), u64), FileId>,
    held_files: usize,
    /// (file, file offset) -> function names, outermost first (the function,
    /// then the functions inlined into it at that address). Empty: unknown.
    file_syms: HashMap<(FileId, u64), Arc<[String]>>,
    /// vDSO offset -> function name ("" when unknown).
    vdso_syms: HashMap<u64, Arc<str>>,
    /// Where the agent's own vDSO is mapped: the vDSO is the same image in
    /// every process, so other processes' vDSO addresses are looked up in ours.
    own_vdso: Option<u64>,
    kernel_syms: HashMap<u64, Frame>,
    kernel_modules: Vec<KernelModule>,
    /// Files handed to `blaze` since it was built.
    parsed: HashSet<FileId>,
    stats: Stats,
}

fn blazesym_symbolizer() -> blazesym::symbolize::Symbolizer {
    // Inlined functions need code info (DWARF line tables).
    blazesym::symbolize::Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        let own_vdso = std::fs::read_to_string("/proc/self/maps")
            .ok()
            .and_then(|m| {
                maps::executable_mappings(&m)
                    .into_iter()
                    .find(|e| e.path.as_deref() == Some("[vdso]"))
            })
            .map(|e| e.start);
        Self {
            blaze: blazesym_symbolizer(),
            processes: HashMap::new(),
            gone: HashSet::new(),
            files: Vec::new(),
            file_ids: HashMap::new(),
            held_files: 0,
            file_syms: HashMap::new(),
            vdso_syms: HashMap::new(),
            own_vdso,
            kernel_syms: HashMap::new(),
            kernel_modules: read_modules(),
            parsed: HashSet::new(),
            stats: Stats::default(),
        }
    }

    /// Starts full caches over, before a lookup (so the lookup's own results
    /// stay until it has used them).
    fn bound_caches(&mut self) {
        if self.file_syms.len() >= MAX_CACHED_SYMBOLS {
            self.file_syms.clear();
        }
        if self.vdso_syms.len() >= MAX_CACHED_SYMBOLS {
            self.vdso_syms.clear();
        }
        if self.kernel_syms.len() >= MAX_CACHED_SYMBOLS {
            self.kernel_syms.clear();
        }
        if self.gone.len() >= MAX_PROCESSES {
            self.gone.clear();
        }
        if self.parsed.len() >= MAX_PARSED_FILES {
            self.blaze = blazesym_symbolizer();
            self.parsed.clear();
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// True when `pid`'s maps were taken.
    pub fn captured(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Captures a process the kernel just announced (its first sample).
    pub fn capture_new(&mut self, pid: u32) -> bool {
        // A pid seen gone before and announced again was reused.
        self.gone.remove(&pid);
        self.capture(pid)
    }

    /// Takes (or retakes) `pid`'s executable mappings and opens the files
    /// they map. False when the process is gone or its maps are unreadable;
    /// a process found gone is not tried again.
    pub fn capture(&mut self, pid: u32) -> bool {
        if pid == 0
            || self.gone.contains(&pid)
            || (!self.captured(pid) && self.processes.len() >= MAX_PROCESSES)
        {
            return self.captured(pid);
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            self.gone.insert(pid);
            return self.captured(pid);
        };
        let entries = maps::executable_mappings(&text);
        // A process that is exiting (or a kernel thread) has no maps: keep
        // whatever was taken before.
        if entries.is_empty() {
            return self.captured(pid);
        }
        let mappings = entries
            .iter()
            .map(|e| Mapping {
                start: e.start,
                end: e.end,
                offset: e.offset,
                object: self.object(pid, e),
            })
            .collect();
        self.processes.insert(pid, ProcessMaps { mappings });
        self.stats.processes_captured += 1;
        true
    }

    fn object(&mut self, pid: u32, e: &MapsEntry) -> Object {
        if e.path.as_deref() == Some("[vdso]") {
            return Object::Vdso;
        }
        if !e.is_file() {
            return Object::Other(e.module().into());
        }
        let key = (e.dev, e.inode);
        if let Some(&id) = self.file_ids.get(&key) {
            return Object::File(id);
        }
        if self.files.len() >= MAX_FILES {
            return Object::Other(e.module().into());
        }
        let path = e.path.clone().unwrap_or_default();
        let held = (self.held_files < MAX_HELD_FILES)
            .then(|| File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end)).ok())
            .flatten();
        let source = match &held {
            Some(f) => {
                self.held_files += 1;
                PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
            }
            None => PathBuf::from(&path),
        };
        self.stats.files_opened += u64::from(held.is_some());
        let id = self.files.len();
        self.files.push(ObjectFile {
            source,
            module: e.module().into(),
            _held: held,
        });
        self.file_ids.insert(key, id);
        Object::File(id)
    }

    fn mapping(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        let p = self.processes.get(&pid)?;
        maps::find(&p.mappings, addr, |m| (m.start, m.end))
    }

    /// Symbolizes a user stack of process `pid` (`ips` leaf first, as the
    /// kernel walked it). Returns frames root first; an address inside
    /// inlined code yields one frame per function.
    pub fn user_stack(&mut self, pid: u32, ips: &[u64]) -> Vec<Frame> {
        self.bound_caches();
        // Return addresses point after the call: look up the call itself.
        let lookups: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) })
            .collect();

        // An address outside the known mappings: the process may have mapped
        // more code since it was captured (dlopen). Retake once, if it lives.
        if lookups.iter().any(|&a| self.mapping(pid, a).is_none()) {
            self.capture(pid);
        }

        // Resolve what is not cached yet, one blazesym call per file.
        let mut misses: HashMap<FileId, Vec<u64>> = HashMap::new();
        let mut vdso_misses = Vec::new();
        for &a in &lookups {
            match self
                .mapping(pid, a)
                .map(|m| (m.object.clone(), a - m.start + m.offset))
            {
                Some((Object::File(id), off)) if !self.file_syms.contains_key(&(id, off)) => {
                    misses.entry(id).or_default().push(off);
                }
                Some((Object::Vdso, off)) if !self.vdso_syms.contains_key(&off) => {
                    vdso_misses.push(off)
                }
                _ => {}
            }
        }
        for (id, mut offsets) in misses {
            offsets.sort_unstable();
            offsets.dedup();
            self.resolve_file(id, &offsets);
        }
        if !vdso_misses.is_empty() {
            self.resolve_vdso(&vdso_misses);
        }

        let mut frames = Vec::with_capacity(ips.len());
        for (&ip, &a) in ips.iter().zip(&lookups).rev() {
            let Some(m) = self.mapping(pid, a) else {
                frames.push(frame(UNKNOWN, UNKNOWN, false, ip));
                continue;
            };
            let off = a - m.start + m.offset;
            match &m.object {
                Object::File(id) => {
                    let module = &self.files[*id].module;
                    match self.file_syms.get(&(*id, off)) {
                        Some(names) if !names.is_empty() => {
                            frames.extend(names.iter().enumerate().map(|(i, n)| Frame {
                                inlined: i > 0,
                                ..frame(n, module, false, ip)
                            }))
                        }
                        _ => frames.push(frame(UNKNOWN, module, false, ip)),
                    }
                }
                Object::Vdso => {
                    let name = self.vdso_syms.get(&off).map_or("", |n| n);
                    let name = if name.is_empty() { UNKNOWN } else { name };
                    frames.push(frame(name, "[vdso]", false, ip));
                }
                Object::Other(module) => frames.push(frame(UNKNOWN, module, false, ip)),
            }
        }
        frames
    }

    fn resolve_file(&mut self, id: FileId, offsets: &[u64]) {
        self.parsed.insert(id);
        let src = Source::Elf(Elf::new(self.files[id].source.clone()));
        let results = self
            .blaze
            .symbolize(&src, Input::FileOffset(offsets))
            .unwrap_or_else(|e| {
                tracing::debug!(file = %self.files[id].source.display(), error = %e, "cannot symbolize");
                Vec::new()
            });
        self.stats.addresses_symbolized += offsets.len() as u64;
        for (i, &off) in offsets.iter().enumerate() {
            let names: Arc<[String]> = match results.get(i) {
                Some(Symbolized::Sym(sym)) => std::iter::once(sym.name.to_string())
                    .chain(sym.inlined.iter().map(|f| f.name.to_string()))
                    .collect(),
                _ => Arc::from([]),
            };
            self.file_syms.insert((id, off), names);
        }
    }

    fn resolve_vdso(&mut self, offsets: &[u64]) {
        let Some(base) = self.own_vdso else {
            for &off in offsets {
                self.vdso_syms.insert(off, "".into());
            }
            return;
        };
        let mut own = Process::new(Pid::Slf);
        own.debug_syms = false;
        own.perf_map = false;
        let addrs: Vec<u64> = offsets.iter().map(|o| base + o).collect();
        let results = self
            .blaze
            .symbolize(&Source::Process(own), Input::AbsAddr(&addrs))
            .unwrap_or_default();
        for (i, &off) in offsets.iter().enumerate() {
            let name = match results.get(i) {
                Some(Symbolized::Sym(sym)) => sym.name.as_ref().into(),
                _ => "".into(),
            };
            self.vdso_syms.insert(off, name);
        }
    }

    /// Symbolizes a kernel stack (`ips` leaf first). Returns frames root first.
    pub fn kernel_stack(&mut self, ips: &[u64]) -> Vec<Frame> {
        self.bound_caches();
        let lookups: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) })
            .collect();
        let mut misses: Vec<u64> = lookups
            .iter()
            .copied()
            .filter(|a| !self.kernel_syms.contains_key(a))
            .collect();
        if !misses.is_empty() {
            misses.sort_unstable();
            misses.dedup();
            self.resolve_kernel(&misses);
        }
        ips.iter()
            .zip(&lookups)
            .rev()
            .map(|(&ip, a)| {
                let mut f = self.kernel_syms.get(a).cloned().unwrap_or_default();
                f.address = ip;
                f
            })
            .collect()
    }

    fn resolve_kernel(&mut self, addrs: &[u64]) {
        // kallsyms only: a vmlinux search is slow and rarely finds one.
        let src = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Default,
            vmlinux: MaybeDefault::None,
            kaslr_offset: None,
            debug_syms: false,
            ..Kernel::default()
        });
        let results = self
            .blaze
            .symbolize(&src, Input::AbsAddr(addrs))
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot symbolize kernel addresses");
                Vec::new()
            });
        self.stats.addresses_symbolized += addrs.len() as u64;
        for (i, &a) in addrs.iter().enumerate() {
            let module = maps::find(&self.kernel_modules, a, |m| (m.start, m.end))
                .map_or_else(|| KERNEL.to_string(), |m| format!("[{}]", m.name));
            let function = match results.get(i) {
                Some(Symbolized::Sym(sym)) => sym.name.to_string(),
                _ => UNKNOWN.to_string(),
            };
            self.kernel_syms.insert(
                a,
                Frame {
                    function,
                    module,
                    kernel: true,
                    address: a,
                    inlined: false,
                },
            );
        }
    }
}

fn frame(function: &str, module: &str, kernel: bool, address: u64) -> Frame {
    Frame {
        function: function.to_string(),
        module: module.to_string(),
        kernel,
        address,
        inlined: false,
    }
}

fn read_modules() -> Vec<KernelModule> {
    std::fs::read_to_string("/proc/modules")
        .map(|t| maps::parse_modules(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symbolizes this very test binary: the agent profiles processes exactly
    /// like this, from their maps and their files.
    #[inline(never)]
    fn a_distinctly_named_function() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn own_process_resolves_through_its_maps() {
        let mut s = Symbolizer::new();
        assert!(s.capture(std::process::id()));
        let addr = a_distinctly_named_function as *const () as u64;
        let frames = s.user_stack(std::process::id(), &[addr]);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(
            frames[0].function.ends_with("a_distinctly_named_function"),
            "{frames:?}"
        );
        assert!(!frames[0].kernel);
        assert_eq!(frames[0].address, addr);
        // The module is the test binary's file name.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            frames[0].module,
            exe.file_name().unwrap().to_string_lossy().as_ref()
        );
        assert_eq!(s.stats().files_opened as usize, s.held_files);
    }

    #[test]
    fn unmapped_addresses_are_unknown() {
        let mut s = Symbolizer::new();
        assert!(s.capture(std::process::id()));
        let frames = s.user_stack(std::process::id(), &[0x10, 0x20]);
        assert!(frames.iter().all(|f| f.function == UNKNOWN), "{frames:?}");
        // A process never captured resolves nothing either.
        let frames = s.user_stack(u32::MAX - 1, &[0x10]);
        assert_eq!(frames[0].function, UNKNOWN);
        assert_eq!(frames[0].module, UNKNOWN);
    }
}
