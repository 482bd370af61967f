/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by cpu_profile.bpf.c and the agent. The Rust mirror lives in
 * ebpf-programs/src/cpu_profile.rs with compile-time size asserts.
 */
#ifndef CORAL_CPU_PROFILE_H
#define CORAL_CPU_PROFILE_H

/* Frames kept per stack: the kernel's default kernel.perf_event_max_stack. */
#define CORAL_PROFILE_STACK_DEPTH 127

/* Slots of the `lost` per-CPU array. */
#define CORAL_LOST_MAP_FULL 0        /* counts map full: sample dropped */
#define CORAL_LOST_STACK_COLLISION 1 /* stack bucket taken and overflow map full or clashing */
#define CORAL_LOST_STACK_ERROR 2     /* any other bpf_get_stackid failure */
#define CORAL_LOST_NOTIFY 3          /* new-process notice lost (ring buffer full); not a sample */
#define CORAL_LOST_SLOTS 4

/* Bits of coral_profile_key.flags: the stack id is a key of
 * `overflow_stacks`, not an id of `stacks`. */
#define CORAL_USER_OVERFLOW 0x1
#define CORAL_KERNEL_OVERFLOW 0x2

/* What samples are counted by. A stack id < 0 means "no such stack": a
 * kernel thread has no user stack, a sample taken in user mode no kernel one. */
struct coral_profile_key {
	__u32 tgid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 flags;
};

/* A stack in `overflow_stacks`: leaf first, zero-padded. */
struct coral_stack {
	__u64 ips[CORAL_PROFILE_STACK_DEPTH];
};

struct coral_profile_value {
	__u64 count;
	/* Name of the first thread sampled with this key. */
	char comm[16];
	/* Its cgroup v2 id. */
	__u64 cgroup_id;
};

#endif
