//! cgroup v2 paths, as clients give them in filters, resolved to what the
//! kernel compares against. Plain filesystem work: no BPF needed.

use coral_proto::text::quote;
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
pub fn resolve_cgroup(root: &Path, path: &str) -> Result<CgroupTarget, String> {
    let given = Path::new(path);
    let full: PathBuf = if given.starts_with(root) {
        given.to_path_buf()
    } else {
        root.join(given.strip_prefix("/").unwrap_or(given))
    };
    let canonical = full
        .canonicalize()
        .map_err(|e| format!("cgroup {}: {e}", quote(path)))?;
    let relative = canonical.strip_prefix(root).map_err(|_| {
        format!(
            "cgroup {} is not under the cgroup2 mount {}",
            quote(path),
            root.display()
        )
    })?;
    let meta = std::fs::metadata(&canonical).map_err(|e| format!("cgroup {}: {e}", quote(path)))?;
    if !meta.is_dir() || !canonical.join("cgroup.procs").exists() {
        return Err(format!(
            "cgroup {}: {} is not a cgroup v2 directory",
            quote(path),
            quote(&canonical.display().to_string())
        ));
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
        assert!(err.contains("/definitely/not/here"), "{err}");
    }
}
