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
    /// Reads an event from ring-buffer bytes (the kernel sends it up to the
    /// end of its message), or `None` when shorter than the header.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        const HEADER: usize = std::mem::offset_of!(DnsEvent, msg);
        if bytes.len() < HEADER {
            return None;
        }
        let mut full = [0u8; std::mem::size_of::<Self>()];
        let n = bytes.len().min(full.len());
        full[..n].copy_from_slice(&bytes[..n]);
        // SAFETY: `full` is exactly one DnsEvent long, DnsEvent is
        // plain-old-data valid for any bit pattern, and read_unaligned copes
        // with the array's alignment.
        Some(unsafe { std::ptr::read_unaligned(full.as_ptr().cast::<Self>()) })
    }

    /// The DNS message bytes kept.
    pub fn message(&self) -> &[u8] {
        &self.msg[..usize::from(self.len).min(MSG_LEN)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cut_after_their_message_read_whole() {
        let header = std::mem::offset_of!(DnsEvent, msg);
        let mut bytes = vec![0u8; header + 3];
        bytes[header - 20] = 3; // len, low byte
        bytes[header..].copy_from_slice(b"abc");
        let e = DnsEvent::from_bytes(&bytes).unwrap();
        assert_eq!(e.message(), b"abc");
        assert!(DnsEvent::from_bytes(&bytes[..header - 1]).is_none());
    }
}
