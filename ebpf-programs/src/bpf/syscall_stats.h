/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by syscall_stats.bpf.c and the agent. The Rust mirror lives in
 * ebpf-programs/src/syscall_stats.rs with compile-time size asserts.
 */
#ifndef CORAL_SYSCALL_STATS_H
#define CORAL_SYSCALL_STATS_H

/* x86_64 syscall numbers are below 512 (the highest is in the 460s). */
#define CORAL_SYSCALL_SLOTS 512
/* Bucket i holds latencies in [2^i, 2^(i+1)) ns; the last one everything above ~2.1 s. */
#define CORAL_LOG2_BUCKETS 32

struct coral_sys_stat {
	__u64 count;
	__u64 errors;
	__u64 total_ns;
	__u64 log2[CORAL_LOG2_BUCKETS];
};

struct coral_sys_key {
	__u32 tgid;
	__u32 nr;
};

/* Per process (per_process only): its name and cgroup v2 id, refreshed with
 * every new (tgid, nr), so after an exec or a cgroup move the new ones win. */
struct coral_sys_proc {
	char comm[16];
	__u64 cgroup_id;
};

/* Per-task scratch between sys_enter and sys_exit. */
struct coral_sys_start {
	__u64 ts;
	__u32 nr;
	__u32 pad;
};

#endif
