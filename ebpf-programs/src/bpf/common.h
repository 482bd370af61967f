/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Pieces every Coral collector shares: the target filter (pids, cgroup, comm)
 * set as read-only globals before load, so the verifier sees constants and a
 * disabled filter costs one predictable branch.
 */
#ifndef CORAL_COMMON_H
#define CORAL_COMMON_H

/*
 * vmlinux.h: every kernel type, dumped from the BTF of the kernel Coral is
 * developed on (`bpftool btf dump file /sys/kernel/btf/vmlinux format c`).
 * CO-RE relocations make programs built against it run on other kernels.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define CORAL_MAX_PIDS 64
#define CORAL_COMM_LEN 16

/* Filled in by the agent (EbpfLoader::override_global) before load. */
const volatile __u32 filter_pids[CORAL_MAX_PIDS] = {};
const volatile __u32 filter_npids = 0;
const volatile __u64 filter_cgroup_id = 0;
const volatile __u32 filter_cgroup_level = 0;
const volatile char filter_comm[CORAL_COMM_LEN] = {};
const volatile __u8 filter_comm_set = 0;
/* The agent's own tgid: never traced, so its polling does not show up. */
const volatile __u32 ignore_tgid = 0;

static __always_inline int coral_comm_matches(void)
{
	char comm[CORAL_COMM_LEN];

	if (bpf_get_current_comm(comm, sizeof(comm)))
		return 0;
#pragma unroll
	for (int i = 0; i < CORAL_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return 0;
		if (comm[i] == 0)
			break;
	}
	return 1;
}

/* The pid part of the filter alone: the cheapest check, for hot exit paths. */
static __always_inline int coral_pid_matches(__u32 tgid)
{
	if (tgid == ignore_tgid)
		return 0;
	if (filter_npids) {
		int found = 0;

		for (__u32 i = 0; i < CORAL_MAX_PIDS && i < filter_npids; i++) {
			if (filter_pids[i] == tgid) {
				found = 1;
				break;
			}
		}
		if (!found)
			return 0;
	}
	return 1;
}

/*
 * Inserts a new entry; true when the map is full (-E2BIG), the one failure a
 * collector reports as a drop (-EEXIST means another CPU inserted the key
 * first, and the caller's lookup finds it). The comparison is on the low 32
 * bits: the verifier turns this helper call into a direct call of the map's
 * update op, which returned int until "bpf: return long from bpf_map_ops
 * funcs" (6.4), so r0 held -E2BIG zero-extended (0xfffffff9) and a 64-bit
 * `== -7` never matched (measured on Debian's 6.1.0-57).
 */
static __always_inline int coral_insert_full(void *map, const void *key, const void *value)
{
	return (int)bpf_map_update_elem(map, key, value, BPF_NOEXIST) == -7 /* E2BIG */;
}

/* True when the current task is one the collector was asked to trace. */
static __always_inline int coral_target_matches(__u32 tgid)
{
	if (!coral_pid_matches(tgid))
		return 0;
	if (filter_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(filter_cgroup_level) != filter_cgroup_id)
		return 0;
	if (filter_comm_set && !coral_comm_matches())
		return 0;
	return 1;
}

/* floor(log2(v)), 0 for v <= 1. Branch-light, as in bcc's bits.bpf.h. */
static __always_inline __u32 coral_log2(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFF) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

#endif
