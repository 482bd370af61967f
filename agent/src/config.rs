//! Agent limits. Every one is enforced by the manager and named in the error a
//! client gets when it hits it.

use std::time::Duration;

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
        }
    }
}
