//! Mirror of `src/bpf/http_latency.h`.

/// The compiled `http_latency.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("http_latency");

/// `CORAL_HTTP_REQ_LEN`: request bytes kept (method, path, version start).
pub const REQ_LEN: usize = 128;
/// `CORAL_HTTP_RESP_LEN`: response bytes kept (status line start).
pub const RESP_LEN: usize = 16;

/// `struct coral_http_event`: one finished request from the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpEvent {
    /// `bpf_ktime_get_ns` when the first request byte was read (server) or written (client).
    pub start_ns: u64,
    /// When the first response byte was written (server) or read (client).
    pub end_ns: u64,
    pub tgid: u32,
    /// 1 for an outgoing request.
    pub client: u32,
    pub comm: [u8; 16],
    pub req: [u8; REQ_LEN],
    pub resp: [u8; RESP_LEN],
}

const _: () = assert!(std::mem::size_of::<HttpEvent>() == 8 + 8 + 4 + 4 + 16 + REQ_LEN + RESP_LEN);

impl HttpEvent {
    /// Reads an event from ring-buffer bytes, or `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, HttpEvent is plain-old-data
        // valid for any bit pattern, and read_unaligned copes with the ring
        // buffer's 8-byte (not necessarily 8-aligned for Rust) placement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}
