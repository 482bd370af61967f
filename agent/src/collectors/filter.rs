//! The target filter shared by every BPF program (`src/bpf/common.h`): pids,
//! cgroup (with descendants) and comm, written into read-only globals before
//! load so the verifier sees constants and an unused filter costs a branch.

use super::{CollectorError, StartContext};
use crate::cgroup::{CgroupTarget, resolve_cgroup};
use coral_ebpf_programs::filter::{COMM_LEN, MAX_PIDS};

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
                resolve_cgroup(root, path).map_err(CollectorError::Filter)?
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
