//! From the cgroup ids BPF programs see to cgroup paths, and from a
//! container id (or a prefix of one) to that container's cgroup.
//!
//! On cgroup v2 a cgroup's id is the inode number of its directory under the
//! cgroup2 mount, and `bpf_get_current_cgroup_id()` returns the id in the
//! default (v2) hierarchy, also on hybrid hosts where the controllers are
//! mounted as v1 (there the v2 tree is `/sys/fs/cgroup/unified`). Nothing
//! maps an id back to a path, so the resolver walks the tree and remembers
//! every directory it saw: the cache is filled at first sight, which matters
//! because a container's cgroup is removed soon after its last process
//! exits, often before the exit event is read.

use super::{CgroupInfo, parse_cgroup_path};
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Cgroups remembered; the oldest are forgotten first beyond it.
pub const CACHE_ENTRIES: usize = 16_384;
/// Directories visited per walk at most: a bound on the time one miss costs.
pub const WALK_MAX_DIRS: usize = 100_000;
/// Shortest time between two walks. Ids of cgroups already gone stay
/// unresolved, and must not make every event walk the tree.
pub const MIN_WALK_GAP: Duration = Duration::from_millis(100);

/// A cgroup v2 directory: its path relative to the mount and what it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// `/` for the root, else `/a/b` relative to the cgroup2 mount.
    pub path: String,
    pub info: CgroupInfo,
}

impl Cgroup {
    /// What `path` (relative to its hierarchy's mount, v1 or v2: runtimes
    /// name their cgroups alike in both) shows.
    pub fn new(path: String) -> Self {
        let info = parse_cgroup_path(&path);
        Self { path, info }
    }

    /// As records carry it.
    pub fn to_proto(&self) -> coral_proto::v1::Container {
        let container = self.info.container.as_ref();
        coral_proto::v1::Container {
            cgroup_path: self.path.clone(),
            container_id: container.map(|c| c.id.clone()).unwrap_or_default(),
            runtime: container
                .and_then(|c| c.runtime)
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            pod_uid: self.info.pod_uid.clone().unwrap_or_default(),
        }
    }
}

/// Relative path of `dir` under `root`, as `/a/b` (`/` for the root).
fn relative(root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    Some(format!("/{}", rel.to_str()?))
}

/// Every cgroup directory under `root` (the root included), with its id, in
/// depth-first order, at most `max` of them. Unreadable directories (a
/// cgroup removed during the walk) are skipped.
pub fn walk(root: &Path, max: usize, mut visit: impl FnMut(u64, &Path) -> bool) {
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        seen += 1;
        if !visit(meta.ino(), &dir) || seen >= max {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // Directories only (cgroup files are regular files); file_type
            // comes from the directory entry, no stat needed.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
}

/// cgroup id -> [`Cgroup`], filled by walking the cgroup2 tree on a miss.
pub struct CgroupResolver {
    root: Option<PathBuf>,
    known: HashMap<u64, Cgroup>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<u64>,
    capacity: usize,
    min_gap: Duration,
    last_walk: Option<Instant>,
}

impl CgroupResolver {
    /// A resolver for the cgroup2 mount `root` (`None`: nothing resolves).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self::with_limits(root, CACHE_ENTRIES, MIN_WALK_GAP)
    }

    pub fn with_limits(root: Option<PathBuf>, capacity: usize, min_gap: Duration) -> Self {
        Self {
            root,
            known: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            min_gap,
            last_walk: None,
        }
    }

    /// The cgroup with id `id`, if it exists now or existed at a past walk.
    pub fn resolve(&mut self, id: u64) -> Option<&Cgroup> {
        if !self.known.contains_key(&id) {
            let due = self.last_walk.is_none_or(|t| t.elapsed() >= self.min_gap);
            if !due {
                return None;
            }
            self.refresh();
        }
        self.known.get(&id)
    }

    /// Walks the tree now and remembers every cgroup in it.
    pub fn refresh(&mut self) {
        self.last_walk = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut found = Vec::new();
        walk(&root, WALK_MAX_DIRS, |id, dir| {
            if !self.known.contains_key(&id)
                && let Some(path) = relative(&root, dir)
            {
                found.push((id, path));
            }
            true
        });
        for (id, path) in found {
            self.insert(id, Cgroup::new(path));
        }
    }

    fn insert(&mut self, id: u64, cgroup: Cgroup) {
        while self.known.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.known.remove(&old);
        }
        if self.known.insert(id, cgroup).is_none() {
            self.order.push_back(id);
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Why [`find_container`] found no single container.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FindError {
    #[error(
        "container {}: not a container id or prefix (hex digits, at most 64)",
        coral_proto::text::quote(.0)
    )]
    Invalid(String),
    #[error("no cgroup2 mount: containers cannot be found by their cgroup")]
    NoCgroup2,
    #[error("no container with id {} under the cgroup2 mount", coral_proto::text::quote(.0))]
    NotFound(String),
    #[error("container id prefix {prefix:?} is ambiguous: {}", .ids.join(", "))]
    Ambiguous { prefix: String, ids: Vec<String> },
}

/// The cgroup (absolute path) of the container whose id is `query` or
/// starts with it, for a `--container ID` filter: the outermost cgroup of that
/// container, so its sub-cgroups are included. Like docker, any unique
/// prefix is accepted.
pub fn find_container(root: Option<&Path>, query: &str) -> Result<PathBuf, FindError> {
    let prefix = query.trim().to_ascii_lowercase();
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FindError::Invalid(query.to_string()));
    }
    let root = root.ok_or(FindError::NoCgroup2)?;
    // id -> its shortest (outermost) cgroup.
    let mut matches: HashMap<String, PathBuf> = HashMap::new();
    walk(root, WALK_MAX_DIRS, |_, dir| {
        if let Some(rel) = relative(root, dir)
            && let Some(c) = parse_cgroup_path(&rel).container
            && c.id.starts_with(&prefix)
        {
            let keep = matches
                .get(&c.id)
                .is_none_or(|p| p.as_os_str().len() > dir.as_os_str().len());
            if keep {
                matches.insert(c.id, dir.to_path_buf());
            }
        }
        true
    });
    match matches.len() {
        0 => Err(FindError::NotFound(query.to_string())),
        1 => Ok(matches.into_values().next().expect("one match")),
        _ => {
            let mut ids: Vec<String> = matches.into_keys().collect();
            ids.sort();
            Err(FindError::Ambiguous { prefix, ids })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::Runtime;

    const ID: &str = "3f4e2c1d0b9a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a29180706";
    const ID2: &str = "3f4e9999aaaabbbbccccddddeeeeffff0000111122223333444455556666aaaa";

    /// A directory tree standing in for a cgroup2 mount: the resolver only
    /// relies on directories and their inode numbers.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("coral-cg-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn mkdir(&self, rel: &str) -> u64 {
            let p = self.0.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::metadata(&p).unwrap().ino()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ids_resolve_to_paths_and_stay_known_after_removal() {
        let tree = Tree::new("resolve");
        let scope = format!("/coraltest.slice/docker-{ID}.scope");
        let id = tree.mkdir(&scope);
        let root_id = std::fs::metadata(&tree.0).unwrap().ino();
        let mut r = CgroupResolver::with_limits(Some(tree.0.clone()), 100, Duration::ZERO);
        let got = r.resolve(id).expect("resolved").clone();
        assert_eq!(got.path, scope);
        let c = got.info.container.unwrap();
        assert_eq!((c.id.as_str(), c.runtime), (ID, Some(Runtime::Docker)));
        assert_eq!(r.resolve(root_id).unwrap().path, "/");
        // The container's cgroup goes away; what was seen stays known.
        std::fs::remove_dir(tree.0.join(scope.trim_start_matches('/'))).unwrap();
        assert_eq!(r.resolve(id).unwrap().path, scope);
        assert_eq!(r.resolve(u64::MAX), None);
    }

    #[test]
    fn misses_walk_at_most_once_per_gap() {
        let tree = Tree::new("gap");
        let mut r =
            CgroupResolver::with_limits(Some(tree.0.clone()), 100, Duration::from_secs(3600));
        assert_eq!(r.resolve(u64::MAX), None);
        // Created after the walk: not seen until the gap has passed.
        let id = tree.mkdir("/late");
        assert_eq!(r.resolve(id), None);
        r.refresh();
        assert_eq!(r.resolve(id).unwrap().path, "/late");
    }

    #[test]
    fn the_cache_is_bounded() {
        let tree = Tree::new("bound");
        for i in 0..10 {
            tree.mkdir(&format!("/c{i}"));
        }
        let mut r = CgroupResolver::with_limits(Some(tree.0.clone()), 4, Duration::ZERO);
        r.refresh();
        assert_eq!(r.len(), 4);
        assert!(CgroupResolver::new(None).resolve(1).is_none());
    }

    #[test]
    fn containers_are_found_by_id_or_unique_prefix() {
        let tree = Tree::new("find");
        tree.mkdir(&format!("/system.slice/docker-{ID}.scope/init.scope"));
        tree.mkdir(&format!(
            "/kubepods/besteffort/pod5e7f1c3a-9b2d-4e6f-8a0c-1d3e5f7a9b2c/{ID2}"
        ));
        tree.mkdir("/system.slice/sshd.service");
        let root = Some(tree.0.as_path());
        let scope = tree.0.join(format!("system.slice/docker-{ID}.scope"));
        assert_eq!(find_container(root, ID), Ok(scope.clone()));
        assert_eq!(find_container(root, &ID[..12]), Ok(scope.clone()));
        assert_eq!(find_container(root, &ID[..5].to_uppercase()), Ok(scope));
        assert_eq!(
            find_container(root, &ID2[..8]),
            Ok(tree.0.join(format!(
                "kubepods/besteffort/pod5e7f1c3a-9b2d-4e6f-8a0c-1d3e5f7a9b2c/{ID2}"
            )))
        );
        assert_eq!(
            find_container(root, "3f4e"),
            Err(FindError::Ambiguous {
                prefix: "3f4e".into(),
                ids: vec![ID.into(), ID2.into()],
            })
        );
        assert_eq!(
            find_container(root, "abc"),
            Err(FindError::NotFound("abc".into()))
        );
        assert_eq!(
            find_container(root, "sshd"),
            Err(FindError::Invalid("sshd".into()))
        );
        assert_eq!(find_container(root, ""), Err(FindError::Invalid("".into())));
        assert_eq!(find_container(None, "abc"), Err(FindError::NoCgroup2));
        let msg = find_container(root, "3f4e").unwrap_err().to_string();
        assert!(msg.contains("ambiguous") && msg.contains(ID2), "{msg}");
    }
}
