//! Mirror of `src/bpf/http_latency.h`.

/// The compiled `http_latency.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("http_latency");

/// `CORAL_HTTP_REQ_LEN`: request bytes kept (method, path, version start).
pub const REQ_LEN: usize = 128;
/// `CORAL_HTTP_RESP_LEN`: response bytes kept (status line start).
pub const RESP_LEN: usize = 16;

/// `CORAL_HTTP_F_CLIENT`: an outgoing request (this process is the client).
pub const FLAG_CLIENT: u32 = 1;
/// `CORAL_HTTP_F_TLS`: plaintext read at the TLS library.
pub const FLAG_TLS: u32 = 2;

/// `struct coral_http_event`: one finished request from the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpEvent {
    /// `bpf_ktime_get_ns` when the first request bytes were read (server) or written (client).
    pub start_ns: u64,
    /// When the first response bytes were written (server) or read (client).
    pub end_ns: u64,
    /// The cgroup v2 id of the thread that ended the request.
    pub cgroup_id: u64,
    pub tgid: u32,
    /// `FLAG_CLIENT`, `FLAG_TLS`.
    pub flags: u32,
    /// Bytes of `req` that are the request's.
    pub req_len: u32,
    pub pad: u32,
    pub comm: [u8; 16],
    pub req: [u8; REQ_LEN],
    pub resp: [u8; RESP_LEN],
}

const _: () = assert!(std::mem::size_of::<HttpEvent>() == 8 * 3 + 4 * 4 + 16 + REQ_LEN + RESP_LEN);

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

    /// The request bytes the kernel copied.
    pub fn request(&self) -> &[u8] {
        &self.req[..(self.req_len as usize).min(REQ_LEN)]
    }
}

/// `struct coral_http_proc_event`: a process to look at for TLS uprobes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub tgid: u32,
    pub pad: u32,
}

const _: () = assert!(std::mem::size_of::<ProcEvent>() == 8);

impl ProcEvent {
    /// Reads an announcement from ring-buffer bytes, or `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: as for HttpEvent: length checked, plain-old-data, unaligned read.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}
