//! Agent limits. Every one is enforced by the manager and named in the error a
//! client gets when it hits it.

use std::time::Duration;

/// Labels one collector may carry, and how long their keys and values may
/// be: they are copied into every record a client reads.
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_KEY_BYTES: usize = 63;
pub const MAX_LABEL_VALUE_BYTES: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Collectors in Starting or Running at once.
    pub max_running: u32,
    /// Longest duration (and extension) a client may ask for. Longer requests
    /// are rejected, never shortened.
    pub max_duration: Duration,
    /// Used when a request names no duration.
    pub default_duration: Duration,
    /// Records kept per collector; the oldest are dropped (and counted) beyond it.
    pub max_records: usize,
    /// How long an ended collector stays readable before the reaper removes it.
    pub retention: Duration,
    /// Pids one filter may name (the kernel side compares against a fixed array).
    pub max_filter_pids: usize,
    /// Highest cpu-profile sampling frequency a client may ask for.
    pub max_profile_frequency_hz: u32,
    /// Bytes of records one collector retains; the oldest are dropped (and
    /// counted) beyond it, never the newest.
    pub max_collector_bytes: u64,
    /// Bytes of records all collectors retain together; beyond it the
    /// agent's oldest records go first, whichever collector made them.
    pub max_retained_bytes: u64,
    /// Ended collectors kept for their retention period; beyond it the one
    /// that ended first is removed.
    pub max_ended: usize,
    /// Bytes of records one `GetEvents` page carries at most (it always
    /// carries one record; the cursor continues).
    pub max_page_bytes: u64,
    /// How long `StopCollector` and shutdown wait for a collector to end:
    /// past it the call answers, and a stuck collector is left to end by
    /// itself (or with the process).
    pub stop_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_running: 8,
            max_duration: Duration::from_secs(3600),
            default_duration: Duration::from_secs(60),
            max_records: 65_536,
            retention: Duration::from_secs(600),
            max_filter_pids: 64,
            max_profile_frequency_hz: 1000,
            max_collector_bytes: 64 << 20,
            max_retained_bytes: 256 << 20,
            max_ended: 256,
            max_page_bytes: 1 << 20,
            stop_timeout: Duration::from_secs(60),
        }
    }
}
