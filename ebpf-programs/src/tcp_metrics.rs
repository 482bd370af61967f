//! Mirror of `src/bpf/tcp_metrics.h`.

/// The compiled `tcp_metrics.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("tcp_metrics");

/// `CORAL_TCP_MAX_PORTS`: entries of each port filter.
pub const MAX_PORTS: usize = 16;
/// `CORAL_TCP_RTT_BUCKETS`.
pub const RTT_BUCKETS: usize = 32;

/// `CORAL_TCP_ACTIVE`: this side connected.
pub const FLAG_ACTIVE: u8 = 1 << 0;
/// `CORAL_TCP_ESTABLISHED`: reached ESTABLISHED.
pub const FLAG_ESTABLISHED: u8 = 1 << 1;
/// `CORAL_TCP_OWNED`: pid and comm are known.
pub const FLAG_OWNED: u8 = 1 << 2;

/// `CORAL_SOCK_TARGET`.
pub const SOCK_TARGET: u64 = 1 << 0;
/// `CORAL_SOCK_TUPLE_MATCH`.
pub const SOCK_TUPLE_MATCH: u64 = 1 << 2;
/// `CORAL_SOCK_CLOSED`.
pub const SOCK_CLOSED: u64 = 1 << 3;

/// `drops[]` slots: ring buffer full, socks map full, remotes map full.
pub const DROP_SLOTS: u32 = 3;

/// `AF_INET`, `AF_INET6` as the kernel stores them.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// `struct coral_tcp_event`: one closed connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEvent {
    pub start_ns: u64,
    pub connect_ns: u64,
    pub end_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub pid: u32,
    pub retransmits: u32,
    pub resets_sent: u32,
    pub resets_received: u32,
    pub sk_err: i32,
    pub lport: u16,
    pub rport: u16,
    pub family: u8,
    pub flags: u8,
    pub end_state: u8,
    pub pad: u8,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub comm: [u8; 16],
    pub pad2: u32,
    /// The owner's cgroup v2 id.
    pub cgroup_id: u64,
}

/// `struct coral_tcp_remote_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    pub addr: [u8; 16],
    pub rport: u16,
    pub lport: u16,
    pub family: u8,
    pub pad: [u8; 3],
}

/// `struct coral_tcp_remote`: one remote's counters on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub opened: u64,
    pub closed: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rtt_log2: [u64; RTT_BUCKETS],
}

/// `struct coral_tcp_reported`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported {
    pub busy: u64,
    pub retransmits: u32,
    pub resets_sent: u32,
    pub resets_received: u32,
    pub opened: u8,
    pub closed: u8,
    pub pad: [u8; 2],
}

/// `struct coral_tcp_sock`: per-socket state, keyed by the `struct sock` address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sock {
    pub ev: TcpEvent,
    pub key: RemoteKey,
    pub reported: Reported,
    pub state: u64,
    pub probes: u32,
    pub pad: u32,
}

const _: () = assert!(std::mem::size_of::<TcpEvent>() == 128);
const _: () = assert!(std::mem::size_of::<RemoteKey>() == 24);
const _: () = assert!(std::mem::size_of::<Remote>() == 8 * (7 + RTT_BUCKETS));
const _: () = assert!(std::mem::size_of::<Reported>() == 24);
const _: () = assert!(std::mem::size_of::<Sock>() == 192);

// SAFETY: repr(C), fields laid out without implicit padding (explicit pad
// fields, sizes asserted above); every bit pattern is a valid value.
unsafe impl aya::Pod for TcpEvent {}
// SAFETY: as above: explicit padding, any bit pattern is valid.
unsafe impl aya::Pod for RemoteKey {}
// SAFETY: only u64 fields; any bit pattern is valid.
unsafe impl aya::Pod for Remote {}
// SAFETY: explicit padding (size asserted), any bit pattern is valid.
unsafe impl aya::Pod for Reported {}
// SAFETY: composed of the Pod structs above plus explicit padding.
unsafe impl aya::Pod for Sock {}

impl TcpEvent {
    /// Reads an event from a ring buffer record (which has no alignment promise).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, the type is Pod (any bit
        // pattern is valid) and read_unaligned makes no alignment assumption.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}
