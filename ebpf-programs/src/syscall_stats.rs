//! Mirror of `src/bpf/syscall_stats.h`.

/// The compiled `syscall_stats.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("syscall_stats");

/// `CORAL_SYSCALL_SLOTS`: size of the per-syscall array.
pub const SYSCALL_SLOTS: u32 = 512;
/// `CORAL_LOG2_BUCKETS`.
pub const LOG2_BUCKETS: usize = 32;

/// `struct coral_sys_stat`: one syscall's counters on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SysStat {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub log2: [u64; LOG2_BUCKETS],
}

/// `struct coral_sys_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysKey {
    pub tgid: u32,
    pub nr: u32,
}

/// `struct coral_sys_proc`: a process's name and cgroup v2 id (per_process).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysProc {
    pub comm: [u8; 16],
    pub cgroup_id: u64,
}

const _: () = assert!(std::mem::size_of::<SysStat>() == 8 * (3 + LOG2_BUCKETS));
const _: () = assert!(std::mem::size_of::<SysProc>() == 24);
const _: () = assert!(std::mem::size_of::<SysKey>() == 8);

// SAFETY: plain-old-data with no padding (asserted above), any bit pattern is valid.
unsafe impl aya::Pod for SysStat {}
// SAFETY: two u32, no padding, any bit pattern is valid.
unsafe impl aya::Pod for SysKey {}
// SAFETY: 16 bytes then a u64, no padding (size asserted), any bit pattern is valid.
unsafe impl aya::Pod for SysProc {}
