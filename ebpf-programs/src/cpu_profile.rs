//! Mirror of `src/bpf/cpu_profile.h`.

/// The compiled `cpu_profile.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("cpu_profile");

/// `CORAL_PROFILE_STACK_DEPTH`: frames kept per stack.
pub const STACK_DEPTH: usize = 127;

/// Slots of the `lost` per-CPU array (`CORAL_LOST_*`).
pub mod lost {
    /// The counts map was full: the sample was dropped.
    pub const MAP_FULL: u32 = 0;
    /// The stack's bucket in the stack map held another stack, and the
    /// overflow map was full or held another stack under its key.
    pub const STACK_COLLISION: u32 = 1;
    /// `bpf_get_stackid` failed otherwise.
    pub const STACK_ERROR: u32 = 2;
    /// A new-process notice was lost (ring buffer full); not a sample.
    pub const NOTIFY: u32 = 3;
    /// Size of the array.
    pub const SLOTS: u32 = 4;
}

/// `CORAL_USER_OVERFLOW`: `user_stack_id` is a key of `overflow_stacks`.
pub const USER_OVERFLOW: u32 = 0x1;
/// `CORAL_KERNEL_OVERFLOW`: `kernel_stack_id` is a key of `overflow_stacks`.
pub const KERNEL_OVERFLOW: u32 = 0x2;

/// `struct coral_profile_key`: what samples are counted by. A negative stack
/// id means there is no stack of that kind (kernel thread: no user stack;
/// sample taken in user mode: no kernel stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    pub tgid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    /// `USER_OVERFLOW` | `KERNEL_OVERFLOW`.
    pub flags: u32,
}

/// `struct coral_stack`: a stack of `overflow_stacks`, leaf first, zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OverflowStack {
    pub ips: [u64; STACK_DEPTH],
}

/// `struct coral_profile_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProfileValue {
    pub count: u64,
    /// Name of the first thread sampled with this key, NUL-padded.
    pub comm: [u8; 16],
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
}

const _: () = assert!(std::mem::size_of::<ProfileKey>() == 16);
const _: () = assert!(std::mem::size_of::<ProfileValue>() == 32);
const _: () = assert!(std::mem::size_of::<OverflowStack>() == 8 * STACK_DEPTH);

// SAFETY: four 32-bit integers, no padding (asserted above), any bit pattern is valid.
unsafe impl aya::Pod for ProfileKey {}
// SAFETY: a u64 and a byte array, no padding (asserted above), any bit pattern is valid.
unsafe impl aya::Pod for ProfileValue {}
// SAFETY: an array of u64, no padding (asserted above), any bit pattern is valid.
unsafe impl aya::Pod for OverflowStack {}
