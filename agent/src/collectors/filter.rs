//! The target filter shared by every BPF program (`src/bpf/common.h`): pids,
//! cgroup (with descendants) and comm, written into read-only globals before
//! load so the verifier sees constants and an unused filter costs a branch.

use super::{CollectorError, StartContext};
use coral_ebpf_programs::filter::{COMM_LEN, MAX_PIDS};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// A cgroup v2 directory resolved to what the kernel compares against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupTarget {
    /// The cgroup id: on cgroup v2 it is the directory's inode number.
    pub id: u64,
    /// Depth below the root, for `bpf_get_current_ancestor_cgroup_id(level)`.
    pub level: u32,
}

/// Resolves `path` (absolute under the cgroup2 mount, or relative to it).
pub fn resolve_cgroup(root: &Path, path: &str) -> Result<CgroupTarget, CollectorError> {
    let given = Path::new(path);
    let full: PathBuf = if given.starts_with(root) {
        given.to_path_buf()
    } else {
        root.join(given.strip_prefix("/").unwrap_or(given))
    };
    let canonical = full
        .canonicalize()
        .map_err(|e| CollectorError::Filter(format!("cgroup {path}: {e}")))?;
    let relative = canonical.strip_prefix(root).map_err(|_| {
        CollectorError::Filter(format!(
            "cgroup {path} is not under the cgroup2 mount {}",
            root.display()
        ))
    })?;
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| CollectorError::Filter(format!("cgroup {path}: {e}")))?;
    if !meta.is_dir() || !canonical.join("cgroup.procs").exists() {
        return Err(CollectorError::Filter(format!(
            "cgroup {path}: {} is not a cgroup v2 directory",
            canonical.display()
        )));
    }
    let level = relative
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as u32;
    Ok(CgroupTarget {
        id: meta.ino(),
        level,
    })
}

/// The values of `common.h`'s filter globals, resolved from a request. Owned
/// here because the loader borrows them until the object is loaded.
pub struct FilterGlobals {
    pids: [u32; MAX_PIDS],
    npids: u32,
    cgroup: CgroupTarget,
    comm: [u8; COMM_LEN],
    comm_set: u8,
    ignore_tgid: u32,
}

impl FilterGlobals {
    pub fn resolve(ctx: &StartContext) -> Result<Self, CollectorError> {
        let filter = &ctx.spec.filter;
        // The manager validated the count; this keeps the copy in bounds.
        if filter.pids.len() > MAX_PIDS {
            return Err(CollectorError::Filter(format!(
                "at most {MAX_PIDS} pids per filter"
            )));
        }
        let mut pids = [0u32; MAX_PIDS];
        pids[..filter.pids.len()].copy_from_slice(&filter.pids);

        let cgroup = match &filter.cgroup {
            Some(path) => {
                let root = ctx.cgroup2_root.as_deref().ok_or_else(|| {
                    CollectorError::Filter("cgroup filter given but no cgroup2 mount found".into())
                })?;
                resolve_cgroup(root, path)?
            }
            None => CgroupTarget { id: 0, level: 0 },
        };

        let mut comm = [0u8; COMM_LEN];
        if let Some(name) = &filter.comm {
            // The kernel keeps TASK_COMM_LEN - 1 bytes; compare what it can hold.
            let bytes = name.as_bytes();
            let n = bytes.len().min(COMM_LEN - 1);
            comm[..n].copy_from_slice(&bytes[..n]);
        }
        Ok(Self {
            pids,
            npids: filter.pids.len() as u32,
            cgroup,
            comm,
            comm_set: u8::from(filter.comm.is_some()),
            ignore_tgid: ctx.agent_pid,
        })
    }

    pub fn apply<'a>(&'a self, loader: &mut aya::EbpfLoader<'a>) {
        loader
            .override_global("filter_pids", &self.pids, true)
            .override_global("filter_npids", &self.npids, true)
            .override_global("filter_cgroup_id", &self.cgroup.id, true)
            .override_global("filter_cgroup_level", &self.cgroup.level, true)
            .override_global("filter_comm", &self.comm, true)
            .override_global("filter_comm_set", &self.comm_set, true)
            .override_global("ignore_tgid", &self.ignore_tgid, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_path_outside_root_is_refused() {
        let dir = std::env::temp_dir();
        let err = resolve_cgroup(Path::new("/nonexistent-root"), dir.to_str().unwrap());
        assert!(err.is_err());
    }

    #[test]
    fn missing_cgroup_is_named() {
        let err = resolve_cgroup(Path::new("/"), "/definitely/not/here").unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
    }
}
