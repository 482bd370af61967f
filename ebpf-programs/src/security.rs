//! Mirror of `src/bpf/security.h`.

/// The compiled `security.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("security");

/// `CORAL_SEC_STR_LEN`: bytes of each string kept, NUL included.
pub const STR_LEN: usize = 128;
/// `CORAL_SEC_MAX_NR`: syscall numbers the `report` bitmap covers.
pub const MAX_NR: usize = 512;

/// `CORAL_SEC_CREDS` .. `CORAL_SEC_SYSCALL`: `SecEvent::kind`.
pub const CREDS: u32 = 1;
pub const CAPSET: u32 = 2;
pub const EXEC: u32 = 3;
pub const PTRACE: u32 = 4;
pub const MODULE: u32 = 5;
pub const BPF: u32 = 6;
pub const MOUNT: u32 = 7;
pub const SYSCALL: u32 = 8;

/// `CORAL_SEC_EXEC_*`: `SecEvent::flags` of an exec.
pub const EXEC_SETUID: u32 = 1;
pub const EXEC_SETGID: u32 = 2;
pub const EXEC_CAPS: u32 = 4;
pub const EXEC_SECURE: u32 = 8;

/// `CORAL_SEC_DROP_EVENTS`: the drops[] slot of a full ring buffer.
pub const DROP_EVENTS: u32 = 0;

/// `struct coral_sec_creds`: ids and capability sets of a task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub euid: u32,
    pub egid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    pub cap_inheritable: u64,
    pub cap_permitted: u64,
    pub cap_effective: u64,
}

/// `struct coral_sec_event`: one event (which fields mean what depends on `kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SecEvent {
    pub time_ns: u64,
    pub cgroup_id: u64,
    /// The syscall's return value (0 for an exec).
    pub ret: i64,
    pub args: [u64; 4],
    /// At syscall entry (creds, capset, exec only).
    pub old: Creds,
    /// At return.
    pub new: Creds,
    /// `type` in C.
    pub kind: u32,
    pub nr: u32,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub flags: u32,
    pub mode: u32,
    pub pad: u32,
    pub comm: [u8; 16],
    pub pcomm: [u8; 16],
    pub str0: [u8; STR_LEN],
    pub str1: [u8; STR_LEN],
    pub str2: [u8; STR_LEN],
}

const _: () = assert!(std::mem::size_of::<Creds>() == 4 * 8 + 8 * 3);
const _: () = assert!(
    std::mem::size_of::<SecEvent>() == 8 * 3 + 8 * 4 + 2 * 56 + 4 * 8 + 16 * 2 + 3 * STR_LEN
);

// SAFETY: u32s then u64s, no padding (size asserted), any bit pattern is valid.
unsafe impl aya::Pod for Creds {}

impl SecEvent {
    /// Reads an event from ring-buffer bytes, or `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, SecEvent is plain-old-data
        // valid for any bit pattern, and read_unaligned copes with the ring
        // buffer's placement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}
