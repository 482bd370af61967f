//! Mirror of `src/bpf/file_io.h`.

/// The compiled `file_io.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("file_io");

/// `CORAL_FIO_PATH_LEN`: path bytes kept, NUL included.
pub const PATH_LEN: usize = 256;
/// `CORAL_FIO_LOG2_BUCKETS`.
pub const LOG2_BUCKETS: usize = 32;

/// `CORAL_FIO_OPEN` .. `CORAL_FIO_FSYNC`: `FileIoEvent::op`.
pub const OP_OPEN: u32 = 1;
pub const OP_READ: u32 = 2;
pub const OP_WRITE: u32 = 3;
pub const OP_FSYNC: u32 = 4;

/// `struct coral_fio_key`: (path hash, tgid, errno of a failed open or 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub path_hash: u64,
    pub tgid: u32,
    pub err: u32,
}

/// `struct coral_fio_stat`: one (process, path, errno)'s counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileStat {
    pub opens: u64,
    pub reads: u64,
    pub read_bytes: u64,
    pub read_ns: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub write_ns: u64,
    pub fsyncs: u64,
    pub fsync_ns: u64,
    pub cgroup_id: u64,
    /// Flags of the last open.
    pub flags: u32,
    pub pad: u32,
    pub comm: [u8; 16],
    pub path: [u8; PATH_LEN],
    pub read_log2: [u64; LOG2_BUCKETS],
    pub write_log2: [u64; LOG2_BUCKETS],
}

/// `struct coral_fio_fd_key`: (tgid, fd).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// `struct coral_fio_event`: a failed open or a slow read, write or fsync.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    /// `bpf_ktime_get_ns` at entry (opens: at return).
    pub start_ns: u64,
    pub latency_ns: u64,
    pub bytes: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    /// -1 for opens.
    pub fd: i32,
    /// `OP_*`.
    pub op: u32,
    /// The errno, positive; 0 when the call did not fail.
    pub err: i32,
    pub flags: u32,
    pub comm: [u8; 16],
    pub path: [u8; PATH_LEN],
}

const _: () = assert!(std::mem::size_of::<FileKey>() == 16);
const _: () = assert!(std::mem::size_of::<FdKey>() == 8);
const _: () =
    assert!(std::mem::size_of::<FileStat>() == 8 * 10 + 8 + 16 + PATH_LEN + 16 * LOG2_BUCKETS);
const _: () = assert!(std::mem::size_of::<FileEvent>() == 8 * 4 + 4 * 6 + 16 + PATH_LEN);

// SAFETY: a u64 and two u32, no padding (size asserted), any bit pattern is valid.
unsafe impl aya::Pod for FileKey {}
// SAFETY: u64s, two u32 and byte arrays, no padding (size asserted), any bit pattern is valid.
unsafe impl aya::Pod for FileStat {}
// SAFETY: two u32, no padding, any bit pattern is valid.
unsafe impl aya::Pod for FdKey {}

impl FileEvent {
    /// Reads an event from ring-buffer bytes, or `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, FileEvent is plain-old-data
        // valid for any bit pattern, and read_unaligned copes with the ring
        // buffer's placement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// The bytes of a NUL-terminated array, up to the NUL.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or(&[])
}
