//! Mirror of `src/bpf/dns.h`.

/// The compiled `dns.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("dns");

/// `CORAL_DNS_MSG_LEN`: DNS message bytes kept per packet.
pub const MSG_LEN: usize = 512;
/// `CORAL_DNS_MAX_PORTS`: ports besides 53.
pub const MAX_PORTS: usize = 8;

/// `CORAL_DNS_QUERY`, `CORAL_DNS_RESPONSE`: `DnsEvent::kind`.
pub const QUERY: u32 = 1;
pub const RESPONSE: u32 = 2;

/// `struct coral_dns_key`: one exchange, the query's 5-tuple and DNS id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DnsKey {
    /// IPv4 in the first 4 bytes (family 4), or IPv6 (family 6).
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub id: u16,
    /// 17 (UDP) or 6 (TCP).
    pub proto: u8,
    pub family: u8,
}

/// `struct coral_dns_inflight`: a query of the target waiting for its response.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsInflight {
    pub ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
}

/// `struct coral_dns_event`: a query leaving or the response to one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    /// `bpf_ktime_get_ns` when the packet was seen.
    pub ns: u64,
    /// Responses: when their query left.
    pub query_ns: u64,
    pub cgroup_id: u64,
    pub key: DnsKey,
    pub tgid: u32,
    pub tid: u32,
    /// `QUERY` or `RESPONSE`.
    pub kind: u32,
    /// Bytes of `msg` kept.
    pub len: u16,
    /// Bytes of the DNS message in the packet.
    pub msg_len: u16,
    pub comm: [u8; 16],
    pub msg: [u8; MSG_LEN],
}

const _: () = assert!(std::mem::size_of::<DnsKey>() == 40);
const _: () = assert!(std::mem::size_of::<DnsInflight>() == 40);
const _: () = assert!(std::mem::size_of::<DnsEvent>() == 8 * 3 + 40 + 4 * 3 + 4 + 16 + MSG_LEN);

// SAFETY: byte arrays, three u16 and two u8, no padding (size asserted), any
// bit pattern is valid.
unsafe impl aya::Pod for DnsKey {}
// SAFETY: two u64, two u32 and a byte array, no padding (size asserted), any
// bit pattern is valid.
unsafe impl aya::Pod for DnsInflight {}

impl DnsEvent {
    /// Reads an event from ring-buffer bytes, or `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, DnsEvent is plain-old-data
        // valid for any bit pattern, and read_unaligned copes with the ring
        // buffer's placement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The DNS message bytes kept.
    pub fn message(&self) -> &[u8] {
        &self.msg[..usize::from(self.len).min(MSG_LEN)]
    }
}
