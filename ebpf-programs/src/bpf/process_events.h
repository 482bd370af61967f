/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by process_events.bpf.c and the agent. The Rust mirror lives
 * in ebpf-programs/src/process_events.rs with compile-time size asserts.
 */
#ifndef CORAL_PROCESS_EVENTS_H
#define CORAL_PROCESS_EVENTS_H

/* Bytes of bprm->filename kept (PATH_MAX is 4096; longer names are cut). */
#define CORAL_PROC_FILENAME_LEN 256
/*
 * Most bytes of the argument block (mm->arg_start .. arg_end: the arguments,
 * each NUL-terminated) copied per exec. A power of two: the verifier bound.
 */
#define CORAL_PROC_ARGV_BYTES 1024

/* coral_proc_event.type */
#define CORAL_PROC_EXEC 1
#define CORAL_PROC_EXIT 2

/* coral_proc_event.flags */
#define CORAL_PROC_ARGV_TRUNCATED (1 << 0)  /* the argument block was longer */
#define CORAL_PROC_ARGV_UNREADABLE (1 << 1) /* bpf_probe_read_user failed */

/*
 * What every event carries. pid is the thread that exec'd (the process's
 * id once exec is done) or the last thread of the process to exit.
 */
struct coral_proc_event {
	__u64 time_ns;   /* bpf_ktime_get_ns */
	__u64 start_ns;  /* the process's fork: group_leader->start_time (same clock) */
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u32 type;      /* CORAL_PROC_EXEC / CORAL_PROC_EXIT */
	__u32 pid;
	__u32 tgid;
	__u32 ppid; /* real_parent's tgid */
	__u32 uid;
	__u32 status;   /* exit: the wait(2) status: code << 8 | core dump 0x80 | signal */
	__u32 flags;    /* CORAL_PROC_* */
	__u32 argv_len; /* exec: bytes of argv[] filled */
	char comm[16];
};

/* One exec: the common part, then what only an exec has. */
struct coral_proc_exec {
	struct coral_proc_event hdr;
	char filename[CORAL_PROC_FILENAME_LEN];
	char argv[CORAL_PROC_ARGV_BYTES];
};

/* drops[] slots */
#define CORAL_PROC_DROP_EXEC 0    /* exec event lost: ring buffer full */
#define CORAL_PROC_DROP_EXIT 1    /* exit event lost: ring buffer full */
#define CORAL_PROC_DROP_TRACKED 2 /* child not followed: tracked map full */
#define CORAL_PROC_DROP_SLOTS 3

#endif
