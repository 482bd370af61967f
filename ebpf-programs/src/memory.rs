//! Mirror of `src/bpf/memory.h`.

/// The compiled `memory.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("memory");

/// Index of each mm counter in `pages[]` (the kernel's `MM_*` order).
pub const FILE: usize = 0;
pub const ANON: usize = 1;
pub const SWAP: usize = 2;
pub const SHMEM: usize = 3;
/// `CORAL_MEM_COUNTERS`.
pub const COUNTERS: usize = 4;

/// Ring buffer record types (`CORAL_MEM_EV_*`), the first `u32` of each record.
pub const EV_RSS: u32 = 1;
pub const EV_EXIT: u32 = 2;
pub const EV_OOM: u32 = 3;

/// `drops[]` slots: ring buffer full, `procs` map full.
pub const DROP_RINGBUF: u32 = 0;
pub const DROP_PROCS: u32 = 1;
pub const DROP_SLOTS: u32 = 2;

/// `CORAL_MEM_NAME_LEN`.
pub const NAME_LEN: usize = 64;

/// `struct coral_mem_proc`: one process in the `procs` hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pages: [i64; COUNTERS],
    pub reported: [i64; COUNTERS],
    pub report_ns: u64,
    pub memcg_id: u64,
    pub events: u64,
    pub comm: [u8; 16],
}

/// `struct coral_mem_rss_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ts: u64,
    pub pages: [i64; COUNTERS],
    pub memcg_id: u64,
    pub comm: [u8; 16],
}

/// `struct coral_mem_exit_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ts: u64,
}

/// `struct coral_mem_oom_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ts: u64,
    pub pages: [i64; COUNTERS],
    pub memcg_id: u64,
    pub limit_memcg_id: u64,
    pub limit_pages: u64,
    pub usage_pages: u64,
    pub memcg_level: u32,
    pub trigger_tgid: u32,
    pub comm: [u8; 16],
    pub trigger_comm: [u8; 16],
    pub memcg_name: [u8; NAME_LEN],
}

const _: () = assert!(std::mem::size_of::<Proc>() == 8 * (2 * COUNTERS + 3) + 16);
const _: () = assert!(std::mem::size_of::<RssEvent>() == 16 + 8 * COUNTERS + 8 + 16);
const _: () = assert!(std::mem::size_of::<ExitEvent>() == 16);
const _: () =
    assert!(std::mem::size_of::<OomEvent>() == 16 + 8 * COUNTERS + 32 + 8 + 32 + NAME_LEN);

// SAFETY: repr(C), only integer fields and byte arrays laid out without
// implicit padding (sizes asserted above); every bit pattern is valid.
unsafe impl aya::Pod for Proc {}
// SAFETY: as above.
unsafe impl aya::Pod for RssEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for ExitEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for OomEvent {}

/// Reads a `T` from the start of a ring buffer record, which has no
/// alignment promise; `None` when the record is too short.
pub fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above, `T: Pod` means any bit pattern is
    // a valid value, and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The record type of a ring buffer record (its first `u32`), if it has one.
pub fn record_kind(bytes: &[u8]) -> Option<u32> {
    read_record::<u32>(bytes)
}
