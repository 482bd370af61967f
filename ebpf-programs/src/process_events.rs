//! Mirror of `src/bpf/process_events.h`.

/// The compiled `process_events.bpf.c`.
pub static OBJECT: &[u8] = crate::bpf_object!("process_events");

/// `CORAL_PROC_FILENAME_LEN`: bytes of the exec'd file name kept.
pub const FILENAME_LEN: usize = 256;
/// `CORAL_PROC_ARGV_BYTES`: most bytes of the argument block copied.
pub const ARGV_BYTES: usize = 1024;

/// `CORAL_PROC_EXEC`.
pub const TYPE_EXEC: u32 = 1;
/// `CORAL_PROC_EXIT`.
pub const TYPE_EXIT: u32 = 2;

/// `CORAL_PROC_ARGV_TRUNCATED`: the argument block was longer than copied.
pub const FLAG_ARGV_TRUNCATED: u32 = 1 << 0;
/// `CORAL_PROC_ARGV_UNREADABLE`: the argument block could not be read.
pub const FLAG_ARGV_UNREADABLE: u32 = 1 << 1;

/// `drops[]` slots: exec lost, exit lost (ring buffer full), child not
/// followed (tracked map full).
pub const DROP_EXEC: u32 = 0;
pub const DROP_EXIT: u32 = 1;
pub const DROP_TRACKED: u32 = 2;
pub const DROP_SLOTS: u32 = 3;

/// `struct coral_proc_event`: what every event carries (an exit is only this).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    pub time_ns: u64,
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub kind: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub status: u32,
    pub flags: u32,
    pub argv_len: u32,
    pub comm: [u8; 16],
}

/// `struct coral_proc_exec`: one exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcExec {
    pub hdr: ProcEvent,
    pub filename: [u8; FILENAME_LEN],
    pub argv: [u8; ARGV_BYTES],
}

const _: () = assert!(std::mem::size_of::<ProcEvent>() == 72);
const _: () = assert!(std::mem::size_of::<ProcExec>() == 72 + FILENAME_LEN + ARGV_BYTES);

// SAFETY: repr(C), u64 fields first then u32s and bytes, no implicit padding
// (size asserted above); every bit pattern is a valid value.
unsafe impl aya::Pod for ProcEvent {}
// SAFETY: a Pod header followed by byte arrays, no padding (size asserted).
unsafe impl aya::Pod for ProcExec {}

/// Reads a `T` from the start of a ring buffer record (no alignment promise).
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above, T is Pod (any bit pattern is
    // valid) and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// One ring buffer record, by its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Exec(Box<ProcExec>),
    Exit(ProcEvent),
}

impl Record {
    /// Decodes a record; `None` when it is short or of an unknown type.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let hdr: ProcEvent = read(bytes)?;
        match hdr.kind {
            TYPE_EXEC => read(bytes).map(|e| Record::Exec(Box::new(e))),
            TYPE_EXIT => Some(Record::Exit(hdr)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_by_type() {
        let mut exit = ProcEvent {
            time_ns: 1,
            start_ns: 0,
            cgroup_id: 1,
            kind: TYPE_EXIT,
            pid: 7,
            tgid: 7,
            ppid: 1,
            uid: 0,
            status: 3 << 8,
            flags: 0,
            argv_len: 0,
            comm: [0; 16],
        };
        // SAFETY: ProcEvent is Pod, so viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const exit).cast::<u8>(),
                std::mem::size_of::<ProcEvent>(),
            )
        }
        .to_vec();
        assert_eq!(Record::from_bytes(&bytes), Some(Record::Exit(exit)));
        // An exec header alone is too short to be an exec.
        exit.kind = TYPE_EXEC;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const exit).cast::<u8>(),
                std::mem::size_of::<ProcEvent>(),
            )
        };
        assert_eq!(Record::from_bytes(bytes), None);
        assert_eq!(Record::from_bytes(&[0; 8]), None);
    }
}
