//! Giving freed memory back to the kernel.
//!
//! Loading BPF objects parses the kernel's BTF (aya does it for every
//! loader): tens of megabytes allocated and freed, at start-up (the
//! capability probes) and at every collector start, often on a
//! blocking-pool thread. glibc keeps freed memory in that thread's arena, so
//! without this an idle agent would stay at the high-water mark of its
//! busiest load.

/// Returns free heap pages of every malloc arena to the kernel. A few
/// milliseconds at most; call it after a load, not on hot paths.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has
    // no preconditions and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
