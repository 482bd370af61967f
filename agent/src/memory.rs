//! Keeping the agent's heap small: one malloc arena, and freed memory given
//! back to the kernel.
//!
//! Loading BPF objects parses the kernel's BTF (aya does it for every
//! loader): about 13 MiB allocated and freed, at start-up (the capability
//! probes) and at every collector start, on whichever blocking-pool thread
//! runs the load. glibc keeps freed memory in that thread's arena, so
//! without this an idle agent would stay at the high-water mark of its
//! busiest load.

/// Makes every thread allocate from glibc's main arena. By default glibc
/// gives threads their own arenas (up to 8 per CPU) and each one keeps its
/// own high-water mark and fragments: in a soak of 1,000 collector starts
/// and 100 streams the settled heap was 47 to 65 MiB, at random, with
/// per-thread arenas and a steady 11 MiB with one (debug build). The agent
/// allocates far too little for arena contention to matter. Call it first
/// thing in `main`, before any thread starts.
pub fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator tunable; called before any
    // other thread exists, so no allocation is in flight.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

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
