//! What the agent's BPF programs and maps cost, read the way bpftool reads
//! them: the agent's own file descriptors (`/proc/self/fd`), their
//! `/proc/self/fdinfo` (memory, and with kernel BPF statistics on, run
//! count and run time) and, per program, `BPF_OBJ_GET_INFO_BY_FD` for its
//! name and the maps it uses. Only the agent's own objects are read, so no
//! privilege beyond owning them is needed.
//!
//! Kernel BPF statistics (`--bpf-stats`, [`enable_stats`]) make the kernel
//! read the clock before and after every run of every BPF program on the
//! machine, not just the agent's: two clock reads per run (tens of
//! nanoseconds, on hooks such as sys_enter that run millions of times a
//! second). That is why they are off unless asked for.

use std::collections::HashMap;

/// One loaded program the agent holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    /// Kernel memory charged for it (fdinfo `memlock`).
    pub memlock: u64,
    /// With kernel BPF statistics on: runs and time spent running.
    pub run_count: u64,
    pub run_time_ns: u64,
    pub map_ids: Vec<u32>,
}

/// One map the agent holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Map {
    pub memlock: u64,
}

/// The agent's BPF objects, by kernel id.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub programs: HashMap<u32, Program>,
    pub maps: HashMap<u32, Map>,
}

/// `key:\tvalue` lines of an fdinfo file.
fn fdinfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

/// Reads every BPF program and map the agent has a file descriptor for.
/// Objects that go away during the walk (a collector ending) are skipped.
pub fn read() -> Objects {
    let mut objects = Objects::default();
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return objects;
    };
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let (is_prog, is_map) = (
            target == "anon_inode:bpf-prog",
            target == "anon_inode:bpf-map",
        );
        if !is_prog && !is_map {
            continue;
        }
        let name = fd.file_name();
        let Some(n) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")) else {
            continue;
        };
        let memlock = fdinfo_field(&info, "memlock").unwrap_or(0);
        if is_map {
            if let Some(id) = fdinfo_field(&info, "map_id") {
                objects.maps.insert(id as u32, Map { memlock });
            }
            continue;
        }
        let Some(id) = fdinfo_field(&info, "prog_id") else {
            continue;
        };
        let (name, map_ids) = prog_info(n, id as u32).unwrap_or_default();
        objects.programs.insert(
            id as u32,
            Program {
                name,
                memlock,
                run_count: fdinfo_field(&info, "run_cnt").unwrap_or(0),
                run_time_ns: fdinfo_field(&info, "run_time_ns").unwrap_or(0),
                map_ids,
            },
        );
    }
    objects
}

#[cfg(target_os = "linux")]
mod sys {
    /// `BPF_OBJ_GET_INFO_BY_FD` and `BPF_ENABLE_STATS` (uapi/linux/bpf.h).
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_ENABLE_STATS: libc::c_long = 32;
    const BPF_STATS_RUN_TIME: u32 = 0;

    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    /// `struct bpf_prog_info` up to the end of its name (80 bytes), aligned
    /// as its `__aligned_u64` members want.
    #[repr(C, align(8))]
    struct Info([u8; 80]);
    const ID: usize = 4;
    const NR_MAP_IDS: usize = 52;
    const MAP_IDS: usize = 56;
    const NAME: usize = 64;

    impl Info {
        fn u32_at(&self, offset: usize) -> u32 {
            let mut b = [0; 4];
            b.copy_from_slice(&self.0[offset..offset + 4]);
            u32::from_ne_bytes(b)
        }

        fn set(&mut self, offset: usize, bytes: &[u8]) {
            self.0[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn get_info(fd: i32, info: &mut Info) -> bool {
        let mut attr = InfoAttr {
            bpf_fd: fd as u32,
            info_len: std::mem::size_of::<Info>() as u32,
            info: info as *mut Info as u64,
        };
        // SAFETY: the kernel reads `attr` (size given) and writes at most
        // `info_len` bytes into `info`, plus `nr_map_ids` u32s at `map_ids`
        // when the caller set both to a buffer it owns; all outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                &mut attr as *mut InfoAttr,
                std::mem::size_of::<InfoAttr>() as u32,
            )
        };
        rc == 0
    }

    /// A program's name and map ids, if `fd` still is the program `id`.
    pub fn prog_info(fd: i32, id: u32) -> Option<(String, Vec<u32>)> {
        let mut info = Info([0; 80]);
        if !get_info(fd, &mut info) || info.u32_at(ID) != id {
            return None;
        }
        let n = info.u32_at(NR_MAP_IDS) as usize;
        let mut map_ids = vec![0u32; n];
        if n > 0 {
            let mut again = Info([0; 80]);
            again.set(NR_MAP_IDS, &(n as u32).to_ne_bytes());
            again.set(MAP_IDS, &(map_ids.as_mut_ptr() as u64).to_ne_bytes());
            if !get_info(fd, &mut again) || again.u32_at(ID) != id {
                return None;
            }
            map_ids.truncate((again.u32_at(NR_MAP_IDS) as usize).min(n));
            info = again;
        }
        let name = &info.0[NAME..NAME + 16];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some((String::from_utf8_lossy(&name[..end]).into_owned(), map_ids))
    }

    /// Turns kernel BPF run-time statistics on for as long as the returned
    /// fd is open.
    pub fn enable_stats() -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        let mut attr = [0u32; 1];
        attr[0] = BPF_STATS_RUN_TIME;
        // SAFETY: BPF_ENABLE_STATS reads a u32 `type` from `attr`, which
        // outlives the call; it returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr) as u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just created this fd for us; nothing else owns it.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
    }
}

#[cfg(target_os = "linux")]
use sys::prog_info;

#[cfg(not(target_os = "linux"))]
fn prog_info(_fd: i32, _id: u32) -> Option<(String, Vec<u32>)> {
    None
}

/// Kernel BPF statistics held on: dropped (with the agent) turns them off
/// again, unless someone else holds them on too.
#[derive(Debug)]
pub struct StatsGuard {
    #[cfg(target_os = "linux")]
    _fd: std::os::fd::OwnedFd,
}

/// Turns kernel BPF run-time statistics on (`BPF_ENABLE_STATS`) for as long
/// as the guard lives. Needs CAP_SYS_ADMIN.
pub fn enable_stats() -> Result<StatsGuard, String> {
    #[cfg(target_os = "linux")]
    {
        sys::enable_stats()
            .map(|fd| StatsGuard { _fd: fd })
            .map_err(|e| format!("BPF_ENABLE_STATS: {e} (it needs CAP_SYS_ADMIN)"))
    }
    #[cfg(not(target_os = "linux"))]
    Err("BPF statistics exist on Linux only".into())
}

/// Whether kernel BPF statistics are on right now, by anyone
/// (`kernel.bpf_stats_enabled`).
pub fn stats_enabled() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .ok()
        .map(|s| s.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fdinfo_fields() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nmemlock:\t4096\nprog_id:\t812\nrun_time_ns:\t123456\nrun_cnt:\t42\n";
        assert_eq!(fdinfo_field(text, "memlock"), Some(4096));
        assert_eq!(fdinfo_field(text, "prog_id"), Some(812));
        assert_eq!(fdinfo_field(text, "run_cnt"), Some(42));
        assert_eq!(fdinfo_field(text, "map_id"), None);
    }
}
