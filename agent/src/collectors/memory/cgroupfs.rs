//! The memory controller's files in cgroupfs, on either cgroup version.
//!
//! - **v2** (`memory.current`, `memory.max`, `memory.high`, `memory.swap.max`,
//!   `memory.swap.current`, `memory.stat`, `memory.events`);
//! - **v1** (`memory.usage_in_bytes`, `memory.limit_in_bytes`,
//!   `memory.memsw.limit_in_bytes`, `memory.kmem.usage_in_bytes`,
//!   `memory.stat`'s hierarchical `total_*` fields, `memory.oom_control`).
//!
//! Reading them is exact and cheap (the kernel formats counters it keeps),
//! so cgroups are sampled each interval rather than traced. Which version a
//! host uses for memory is found in `/proc/self/mounts`: a v1 `cgroup` mount
//! with the `memory` option (hybrid hosts, such as ours: cgroup2 is mounted
//! too, without controllers), else a `cgroup2` mount whose root lists
//! `memory` in `cgroup.controllers`.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// cgroup version of the memory controller's hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The file that holds the limit, as users know it.
    pub fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }
}

/// Where the memory controller's hierarchy is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    pub mount: PathBuf,
}

/// The memory hierarchy described by `mounts` (`/proc/self/mounts`);
/// `has_memory(root)` says whether a cgroup2 root delegates memory.
pub fn find_hierarchy(mounts: &str, has_memory: impl Fn(&Path) -> bool) -> Option<Hierarchy> {
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dir), Some(fstype), Some(opts)) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        let dir = unescape_mount(dir);
        match *fstype {
            "cgroup" if opts.split(',').any(|o| o == "memory") => {
                return Some(Hierarchy {
                    version: Version::V1,
                    mount: dir,
                });
            }
            "cgroup2" if v2.is_none() && has_memory(&dir) => v2 = Some(dir),
            _ => {}
        }
    }
    v2.map(|mount| Hierarchy {
        version: Version::V2,
        mount,
    })
}

/// The running host's memory hierarchy.
pub fn host_hierarchy() -> Option<Hierarchy> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    find_hierarchy(&mounts, |root| {
        std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
    })
}

/// `/proc/mounts` escapes spaces and a few others as `\ooo`.
fn unescape_mount(s: &str) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// A cgroup of the memory hierarchy, resolved from what a client gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub hierarchy: Hierarchy,
    /// The directory.
    pub dir: PathBuf,
    /// Path below the mount, from "/".
    pub path: String,
    /// kernfs id: the directory's inode number.
    pub id: u64,
    /// Depth below the hierarchy's root.
    pub level: u32,
}

/// Resolves `given` (absolute under the mount, or relative to it) to a cgroup
/// of `hierarchy`.
pub fn resolve(hierarchy: &Hierarchy, given: &str) -> Result<Target, String> {
    let p = Path::new(given);
    let full = if p.starts_with(&hierarchy.mount) {
        p.to_path_buf()
    } else {
        hierarchy.mount.join(p.strip_prefix("/").unwrap_or(p))
    };
    let dir = full
        .canonicalize()
        .map_err(|e| format!("cgroup {given}: {e}"))?;
    let relative = dir.strip_prefix(&hierarchy.mount).map_err(|_| {
        format!(
            "cgroup {given} is not under the memory cgroup hierarchy {}",
            hierarchy.mount.display()
        )
    })?;
    let usage = match hierarchy.version {
        Version::V1 => "memory.usage_in_bytes",
        Version::V2 => "memory.current",
    };
    let meta = std::fs::metadata(&dir).map_err(|e| format!("cgroup {given}: {e}"))?;
    // The v2 root has no memory.current; every other memory cgroup has it.
    let is_root = relative.as_os_str().is_empty();
    if !meta.is_dir() || !(is_root || dir.join(usage).exists()) {
        return Err(format!(
            "cgroup {given}: {} is not a memory cgroup (no {usage})",
            dir.display()
        ));
    }
    let level = relative
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as u32;
    Ok(Target {
        hierarchy: hierarchy.clone(),
        path: format!("/{}", relative.display()),
        dir,
        id: meta.ino(),
        level,
    })
}

/// One cgroup's memory at one instant, in bytes. Hierarchical: children included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub current: u64,
    /// This cgroup's own limit (not its ancestors'); `None` when unlimited.
    pub limit: Option<u64>,
    /// v2 memory.high.
    pub high: Option<u64>,
    /// v2 memory.swap.max, or v1 memory.memsw.limit_in_bytes (memory + swap).
    pub swap_limit: Option<u64>,
    pub anon: u64,
    /// Page cache without shmem.
    pub file: u64,
    pub shmem: u64,
    /// Kernel memory reclaim cannot free (v2: `kernel` - `slab_reclaimable`;
    /// v1: memory.kmem.usage_in_bytes, reclaimable slab included).
    pub kernel: u64,
    pub swap: u64,
    pub oom_kills: u64,
    /// v2 memory.events `oom`: times the limit was hit and reclaim failed.
    pub oom_events: u64,
}

impl Usage {
    /// anon + shmem + kernel: what the prediction fits.
    pub fn unreclaimable(&self) -> u64 {
        self.anon + self.shmem + self.kernel
    }
}

/// `key value` lines (memory.stat, memory.events, memory.oom_control).
fn keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// A v1 byte count; values at the page counter's maximum mean "no limit".
fn v1_limit(v: u64) -> Option<u64> {
    // PAGE_COUNTER_MAX * PAGE_SIZE rounds to just under 2^63.
    (v < 1 << 62).then_some(v)
}

/// A v2 limit file: "max" or a byte count.
fn v2_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        v => v.parse().ok(),
    }
}

fn read(dir: &Path, file: &str) -> io::Result<String> {
    std::fs::read_to_string(dir.join(file))
}

fn read_u64(dir: &Path, file: &str) -> io::Result<u64> {
    read(dir, file)?
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{file}: {e}")))
}

/// Reads a v1 memory cgroup directory.
pub fn read_v1(dir: &Path) -> io::Result<Usage> {
    let current = read_u64(dir, "memory.usage_in_bytes")?;
    let stat_text = read(dir, "memory.stat")?;
    let stat = keyed(&stat_text);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let anon = get("total_rss");
    let shmem = get("total_shmem");
    let cache = get("total_cache");
    // Kernel memory has its own counter while v1 keeps kmem accounting;
    // otherwise it is what usage holds beyond page cache and anon.
    let kernel = read_u64(dir, "memory.kmem.usage_in_bytes")
        .unwrap_or_else(|_| current.saturating_sub(cache + anon));
    let oom = read(dir, "memory.oom_control").unwrap_or_default();
    Ok(Usage {
        current,
        limit: v1_limit(read_u64(dir, "memory.limit_in_bytes")?),
        high: None,
        swap_limit: read_u64(dir, "memory.memsw.limit_in_bytes")
            .ok()
            .and_then(v1_limit),
        anon,
        file: cache.saturating_sub(shmem),
        shmem,
        kernel,
        swap: get("total_swap"),
        oom_kills: keyed(&oom).get("oom_kill").copied().unwrap_or(0),
        oom_events: 0,
    })
}

/// Reads a v2 memory cgroup directory (not the root, which has no limits).
pub fn read_v2(dir: &Path) -> io::Result<Usage> {
    let current = read_u64(dir, "memory.current")?;
    let stat_text = read(dir, "memory.stat")?;
    let stat = keyed(&stat_text);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let shmem = get("shmem");
    // `kernel` since Linux 5.18; before it, the sum of its parts.
    let kernel = stat.get("kernel").copied().unwrap_or_else(|| {
        [
            "kernel_stack",
            "pagetables",
            "sec_pagetables",
            "percpu",
            "vmalloc",
            "slab",
        ]
        .iter()
        .map(|k| get(k))
        .sum()
    });
    let events = read(dir, "memory.events").unwrap_or_default();
    let events = keyed(&events);
    let limit = |f: &str| read(dir, f).ok().as_deref().and_then(v2_limit);
    Ok(Usage {
        current,
        limit: limit("memory.max"),
        high: limit("memory.high"),
        swap_limit: limit("memory.swap.max"),
        anon: get("anon"),
        // v2's `file` includes tmpfs and shared memory.
        file: get("file").saturating_sub(shmem),
        shmem,
        kernel: kernel.saturating_sub(get("slab_reclaimable")),
        swap: read_u64(dir, "memory.swap.current").unwrap_or(0),
        oom_kills: events.get("oom_kill").copied().unwrap_or(0),
        oom_events: events.get("oom").copied().unwrap_or(0),
    })
}

/// Reads a memory cgroup of either version.
pub fn read_usage(version: Version, dir: &Path) -> io::Result<Usage> {
    match version {
        Version::V1 => read_v1(dir),
        Version::V2 => read_v2(dir),
    }
}

/// The lowest limit of `dir` and its ancestors up to `mount`, and the
/// directory it is set on; `None` when none is limited.
pub fn effective_limit(version: Version, mount: &Path, dir: &Path) -> Option<(u64, PathBuf)> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if !d.starts_with(mount) {
            break;
        }
        let limit = match version {
            Version::V1 => read_u64(d, "memory.limit_in_bytes").ok().and_then(v1_limit),
            Version::V2 => read(d, "memory.max").ok().as_deref().and_then(v2_limit),
        };
        if let Some(l) = limit
            && best.as_ref().is_none_or(|(b, _)| l < *b)
        {
            best = Some((l, d.to_path_buf()));
        }
        if d == mount {
            break;
        }
        at = d.parent();
    }
    best
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// kernfs ids (directory inodes) of a hierarchy's cgroups to their paths,
/// filled by walking the mount. A miss rescans, at most once per `min_rescan`.
#[derive(Debug)]
pub struct Index {
    mount: PathBuf,
    paths: HashMap<u64, String>,
    scanned: Option<std::time::Instant>,
    min_rescan: std::time::Duration,
}

/// Directories visited per scan, so a host with a huge tree costs bounded time.
const MAX_SCAN: usize = 20_000;

impl Index {
    pub fn new(mount: PathBuf, min_rescan: std::time::Duration) -> Self {
        Self {
            mount,
            paths: HashMap::new(),
            scanned: None,
            min_rescan,
        }
    }

    fn scan(&mut self) {
        self.paths.clear();
        let mut stack = vec![self.mount.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            seen += 1;
            if seen > MAX_SCAN {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&self.mount).unwrap_or(Path::new(""));
            self.paths.insert(meta.ino(), format!("/{}", rel.display()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        self.scanned = Some(std::time::Instant::now());
    }

    /// The path (from "/", below the mount) of the cgroup with kernfs id `id`.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if self
            .scanned
            .is_none_or(|at| at.elapsed() >= self.min_rescan)
        {
            self.scan();
        }
        self.paths.get(&id).cloned()
    }

    /// Remembers a path found another way (e.g. the target, before it goes).
    pub fn insert(&mut self, id: u64, path: String) {
        self.paths.insert(id, path);
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree for one test, removed on drop.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir = std::env::temp_dir()
                .join(format!("coral-cgroupfs-{name}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Fixture(dir)
        }

        fn write(&self, rel: &str, files: &[(&str, &str)]) -> PathBuf {
            let d = self.0.join(rel);
            std::fs::create_dir_all(&d).unwrap();
            for (f, text) in files {
                std::fs::write(d.join(f), text).unwrap();
            }
            d
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const V1_STAT: &str = "cache 12288000\nrss 4096\nshmem 4096\ntotal_cache 20971520\n\
        total_rss 104857600\ntotal_rss_huge 0\ntotal_shmem 1048576\ntotal_mapped_file 0\n\
        total_swap 0\ntotal_inactive_file 10485760\ntotal_active_file 9437184\n\
        hierarchical_memory_limit 134217728\n";

    #[test]
    fn v1_files_are_read_hierarchically() {
        let fx = Fixture::new("v1");
        let d = fx.write(
            "memory/test",
            &[
                ("memory.usage_in_bytes", "130023424\n"),
                ("memory.limit_in_bytes", "134217728\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.kmem.usage_in_bytes", "3145728\n"),
                ("memory.stat", V1_STAT),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        let u = read_v1(&d).unwrap();
        assert_eq!(u.current, 130_023_424);
        assert_eq!(u.limit, Some(128 << 20));
        assert_eq!(u.swap_limit, None, "the page counter maximum is no limit");
        assert_eq!(u.anon, 100 << 20, "total_rss, not the local rss");
        assert_eq!(u.shmem, 1 << 20);
        assert_eq!(u.file, (20 << 20) - (1 << 20), "cache holds shmem");
        assert_eq!(u.kernel, 3 << 20);
        assert_eq!(u.oom_kills, 2);
        assert_eq!(u.unreclaimable(), (100 << 20) + (1 << 20) + (3 << 20));
    }

    #[test]
    fn v1_without_kmem_counter_takes_the_rest_of_usage_as_kernel() {
        let fx = Fixture::new("v1nokmem");
        let d = fx.write(
            "m",
            &[
                ("memory.usage_in_bytes", "130023424\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.stat", V1_STAT),
            ],
        );
        let u = read_v1(&d).unwrap();
        assert_eq!(u.limit, None);
        assert_eq!(u.kernel, 130_023_424 - (20 << 20) - (100 << 20));
        assert_eq!(u.oom_kills, 0, "no memory.oom_control: no kills known");
    }

    #[test]
    fn v2_files_are_read_and_kernel_excludes_reclaimable_slab() {
        let fx = Fixture::new("v2");
        let d = fx.write(
            "api.slice",
            &[
                ("memory.current", "933232640\n"),
                ("memory.max", "1073741824\n"),
                ("memory.high", "max\n"),
                ("memory.swap.max", "0\n"),
                ("memory.swap.current", "0\n"),
                (
                    "memory.stat",
                    "anon 838860800\nfile 62914560\nkernel 31457280\nkernel_stack 1048576\n\
                     pagetables 2097152\nshmem 10485760\nslab_reclaimable 8388608\n\
                     slab_unreclaimable 4194304\nslab 12582912\n",
                ),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 17\noom 3\noom_kill 1\noom_group_kill 0\n",
                ),
            ],
        );
        let u = read_v2(&d).unwrap();
        assert_eq!(u.current, 933_232_640);
        assert_eq!(u.limit, Some(1 << 30));
        assert_eq!(u.high, None);
        assert_eq!(u.swap_limit, Some(0));
        assert_eq!(u.anon, 800 << 20);
        assert_eq!(u.shmem, 10 << 20);
        assert_eq!(u.file, 50 << 20);
        assert_eq!(u.kernel, (30 << 20) - (8 << 20));
        assert_eq!((u.oom_kills, u.oom_events), (1, 3));
    }

    #[test]
    fn v2_before_the_kernel_field_sums_its_parts() {
        let fx = Fixture::new("v2old");
        let d = fx.write(
            "x",
            &[
                ("memory.current", "1000\n"),
                ("memory.max", "max\n"),
                (
                    "memory.stat",
                    "anon 100\nfile 200\nkernel_stack 10\npagetables 20\npercpu 5\n\
                     slab 40\nslab_reclaimable 30\nshmem 0\n",
                ),
            ],
        );
        let u = read_v2(&d).unwrap();
        assert_eq!(u.limit, None);
        assert_eq!(u.kernel, 10 + 20 + 5 + 40 - 30);
    }

    #[test]
    fn the_effective_limit_is_the_lowest_up_to_the_mount() {
        let fx = Fixture::new("eff");
        let root = fx.write("mnt", &[("memory.limit_in_bytes", "9223372036854771712\n")]);
        fx.write("mnt/a", &[("memory.limit_in_bytes", "1073741824\n")]);
        fx.write("mnt/a/b", &[("memory.limit_in_bytes", "2147483648\n")]);
        let c = fx.write(
            "mnt/a/b/c",
            &[("memory.limit_in_bytes", "9223372036854771712\n")],
        );
        let (limit, at) = effective_limit(Version::V1, &root, &c).unwrap();
        assert_eq!(limit, 1 << 30);
        assert_eq!(at, root.join("a"));
        assert_eq!(effective_limit(Version::V1, &root, &root), None);
    }

    #[test]
    fn hierarchies_are_found_in_mounts() {
        let hybrid = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
            cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n";
        let h = find_hierarchy(hybrid, |_| false).unwrap();
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.mount, PathBuf::from("/sys/fs/cgroup/memory"));
        let pure = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        let h = find_hierarchy(pure, |_| true).unwrap();
        assert_eq!(
            (h.version, h.mount),
            (Version::V2, PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(find_hierarchy(pure, |_| false), None);
        let odd = "cgroup2 /mnt/my\\040cg cgroup2 rw 0 0\n";
        assert_eq!(
            find_hierarchy(odd, |_| true).unwrap().mount,
            PathBuf::from("/mnt/my cg")
        );
    }

    #[test]
    fn targets_resolve_below_the_mount_only() {
        let fx = Fixture::new("resolve");
        let mount = fx.write("m", &[]);
        fx.write("m/a/b", &[("memory.usage_in_bytes", "0\n")]);
        fx.write("m/plain", &[]);
        let h = Hierarchy {
            version: Version::V1,
            mount: mount.canonicalize().unwrap(),
        };
        let t = resolve(&h, "/a/b").unwrap();
        assert_eq!((t.path.as_str(), t.level), ("/a/b", 2));
        let abs = h.mount.join("a/b");
        assert_eq!(resolve(&h, abs.to_str().unwrap()).unwrap().id, t.id);
        assert!(resolve(&h, "/nope").unwrap_err().contains("/nope"));
        assert!(
            resolve(&h, "/plain")
                .unwrap_err()
                .contains("not a memory cgroup")
        );
        assert!(resolve(&h, "/..").unwrap_err().contains("not under"));
    }

    #[test]
    fn the_index_maps_inodes_to_paths() {
        let fx = Fixture::new("index");
        let mount = fx.write("m", &[]);
        let b = fx.write("m/a/b", &[]);
        let mut idx = Index::new(mount.clone(), std::time::Duration::ZERO);
        let ino = std::fs::metadata(&b).unwrap().ino();
        assert_eq!(idx.path(ino).as_deref(), Some("/a/b"));
        let root = std::fs::metadata(&mount).unwrap().ino();
        assert_eq!(idx.path(root).as_deref(), Some("/"));
        let c = fx.write("m/c", &[]);
        let ino_c = std::fs::metadata(&c).unwrap().ino();
        assert_eq!(idx.path(ino_c).as_deref(), Some("/c"), "a miss rescans");
        assert_eq!(idx.path(0), None);
    }

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let m = "MemTotal:       24585440 kB\nMemFree:        13000000 kB\n";
        assert_eq!(mem_total(m), Some(24_585_440 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }
}
