//! Coral's eBPF programs, embedded as compiled ELF objects.
//!
//! Each collector has one C program under `src/bpf/` and one shared header that
//! is the single source of truth for the layouts both sides read; the module of
//! the same name here mirrors those layouts as `#[repr(C)]` types with
//! compile-time size asserts, so drift breaks the build.

pub mod cpu_profile;
pub mod dns;
pub mod file_io;
pub mod http_latency;
pub mod memory;
pub mod process_events;
pub mod security;
pub mod syscall_stats;
pub mod tcp_metrics;

#[cfg(test)]
mod layout;

/// Embeds an object file from `OUT_DIR` with the 8-byte alignment the ELF
/// parser needs.
macro_rules! bpf_object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o"))
    };
}
pub(crate) use bpf_object;

/// Filter globals shared by every program (see `src/bpf/common.h`).
pub mod filter {
    /// Size of `filter_pids[]`.
    pub const MAX_PIDS: usize = 64;
    /// `TASK_COMM_LEN`.
    pub const COMM_LEN: usize = 16;
}

/// Empty programs used to probe what the kernel allows (`src/bpf/probes.bpf.c`).
pub mod probes {
    /// The compiled `probes.bpf.c`.
    pub static OBJECT: &[u8] = crate::bpf_object!("probes");
}

/// Empty raw_tp `sys_enter` / `sys_exit` programs: the floor of the syscall
/// overhead benchmark (`src/bpf/bench_floor.bpf.c`, used by `bench/`).
pub mod bench_floor {
    /// The compiled `bench_floor.bpf.c`.
    pub static OBJECT: &[u8] = crate::bpf_object!("bench_floor");
}
