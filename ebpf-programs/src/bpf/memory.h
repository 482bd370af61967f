/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by memory.bpf.c and the agent. The Rust mirror lives in
 * ebpf-programs/src/memory.rs with compile-time size asserts.
 *
 * Sizes are in pages, as the kernel counts them: the agent multiplies by the
 * page size.
 */
#ifndef CORAL_MEMORY_H
#define CORAL_MEMORY_H

/* enum mm counters' order (MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES). */
#define CORAL_MEM_FILE 0
#define CORAL_MEM_ANON 1
#define CORAL_MEM_SWAP 2
#define CORAL_MEM_SHMEM 3
#define CORAL_MEM_COUNTERS 4

/* Ring buffer record types (`type` of every record). */
#define CORAL_MEM_EV_RSS 1
#define CORAL_MEM_EV_EXIT 2
#define CORAL_MEM_EV_OOM 3

/* drops[] slots. */
#define CORAL_MEM_DROP_RINGBUF 0
#define CORAL_MEM_DROP_PROCS 1
#define CORAL_MEM_DROP_SLOTS 2

/* Memory cgroup ancestors looked at for the limit an OOM kill hit. */
#define CORAL_MEM_MAX_DEPTH 16

#define CORAL_MEM_NAME_LEN 64

/* One process (tgid), in the `procs` hash: what its mm's counters said last. */
struct coral_mem_proc {
	/* The counters at the last rss_stat event of this process. */
	__s64 pages[CORAL_MEM_COUNTERS];
	/* As last sent on the ring buffer. */
	__s64 reported[CORAL_MEM_COUNTERS];
	/*
	 * bpf_ktime_get_ns of the last report. The values hold from the last
	 * event until the next, so a read of this map is a sample taken when
	 * it is read; the clock is not read per event (it costs more than the
	 * rest of the program on some VMs).
	 */
	__u64 report_ns;
	/* kernfs id of its memory cgroup (the memory controller's hierarchy:
	 * v1 or v2), as of the last report. */
	__u64 memcg_id;
	/* rss_stat events folded in. */
	__u64 events;
	char comm[16];
};

/* CORAL_MEM_EV_RSS: a process's RSS moved by at least the threshold. */
struct coral_mem_rss_event {
	__u32 type;
	__u32 tgid;
	__u64 ts;
	__s64 pages[CORAL_MEM_COUNTERS];
	__u64 memcg_id;
	char comm[16];
};

/* CORAL_MEM_EV_EXIT: a tracked process's last thread exited. */
struct coral_mem_exit_event {
	__u32 type;
	__u32 tgid;
	__u64 ts;
};

/* CORAL_MEM_EV_OOM: the OOM killer chose a victim (tp_btf/mark_victim). */
struct coral_mem_oom_event {
	__u32 type;
	/* The victim. */
	__u32 tgid;
	__u64 ts;
	/* The victim's mm counters at the kill. */
	__s64 pages[CORAL_MEM_COUNTERS];
	/* The victim's memory cgroup: kernfs id (the directory's inode) and depth. */
	__u64 memcg_id;
	/*
	 * The memory cgroup, among the victim's and its ancestors, with the
	 * least headroom (max - usage) at the kill: the limit that was hit.
	 * 0 when none of them has a limit (a machine-wide OOM).
	 */
	__u64 limit_memcg_id;
	/* That cgroup's page counter: limit and usage, in pages. */
	__u64 limit_pages;
	__u64 usage_pages;
	__u32 memcg_level;
	/* The task whose allocation ran the OOM killer. */
	__u32 trigger_tgid;
	char comm[16];
	char trigger_comm[16];
	/* Leaf name of the victim's memory cgroup (kernfs node name). */
	char memcg_name[CORAL_MEM_NAME_LEN];
};

#endif
