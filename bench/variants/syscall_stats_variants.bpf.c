// SPDX-License-Identifier: GPL-2.0
/*
 * Variants of ebpf-programs/src/bpf/syscall_stats.bpf.c, for taking its
 * per-syscall cost apart (bench/syscall-variants.sh, docs/benchmarks.md).
 * Not built by ebpf-programs/build.rs and never loaded by the agent: each
 * -D knob below removes or replaces one piece of the real program, and the
 * difference in the getppid loop is what that piece costs.
 *
 * Layout knobs (what gets attached):
 *   (default)      raw_tp sys_enter stamps task storage, raw_tp sys_exit
 *                  records count/errors/total/log2 (= syscall_stats.bpf.c
 *                  with per_process off)
 *   COUNT_AT_EXIT  no sys_enter program; tp_btf/sys_exit counts calls and
 *                  errors, the syscall number read from regs->orig_ax
 *   EXIT_RAWTP     with COUNT_AT_EXIT: raw_tp instead of tp_btf (orig_ax read
 *                  with bpf_probe_read_kernel)
 *   SAMPLE=N       with COUNT_AT_EXIT: also a raw_tp sys_enter that stamps 1 in
 *                  N syscalls per CPU; sys_exit adds those latencies
 * Piece knobs (default layout):
 *   ENTER_EMPTY, EXIT_EMPTY   the program returns at once
 *   NO_TIME                   no bpf_ktime_get_ns (stamps a constant)
 *   NO_RECORD                 sys_exit does not touch the stats map
 *   EXIT_FILTER               sys_exit checks the target filter before it
 *                             looks up task storage
 */
#include "common.h"
#include "syscall_stats.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_SYSCALL_SLOTS);
	__type(key, __u32);
	__type(value, struct coral_sys_stat);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct coral_sys_start);
} starts SEC(".maps");

static __always_inline struct coral_sys_stat *slot_of(__u32 nr)
{
	if (nr >= CORAL_SYSCALL_SLOTS)
		return 0;
	return bpf_map_lookup_elem(&stats, &nr);
}

static __always_inline void add_latency(struct coral_sys_stat *s, __u64 delta)
{
	__u32 slot = coral_log2(delta);

	if (slot >= CORAL_LOG2_BUCKETS)
		slot = CORAL_LOG2_BUCKETS - 1;
	s->total_ns += delta;
	s->log2[slot]++;
}

#ifdef NO_TIME
#define NOW() 1
#else
#define NOW() bpf_ktime_get_ns()
#endif

#ifndef COUNT_AT_EXIT

SEC("raw_tp/sys_enter")
int variant_enter(__u64 *ctx)
{
#ifndef ENTER_EMPTY
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct coral_sys_start *st;

	if (!coral_target_matches(tgid))
		return 0;
	st = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->nr = (__u32)ctx[1];
	st->ts = NOW();
#endif
	return 0;
}

SEC("raw_tp/sys_exit")
int variant_exit(__u64 *ctx)
{
#ifndef EXIT_EMPTY
	struct coral_sys_start *st;
	struct coral_sys_stat *s;
	__u64 now;

#ifdef EXIT_FILTER
	if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
#endif
	st = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0, 0);
	if (!st || !st->ts)
		return 0;
	now = NOW();
#ifndef NO_RECORD
	s = slot_of(st->nr);
	if (s) {
		s->count++;
		if ((long)ctx[1] < 0)
			s->errors++;
		add_latency(s, now - st->ts);
	}
#endif
	st->ts = 0;
#endif
	return 0;
}

#else /* COUNT_AT_EXIT */

static __always_inline void count(__u32 nr, long ret)
{
	struct coral_sys_stat *s = slot_of(nr);

	if (!s)
		return;
	s->count++;
	if (ret < 0)
		s->errors++;
}

#ifdef EXIT_RAWTP
SEC("raw_tp/sys_exit")
int variant_exit(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];

	if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	count((__u32)BPF_CORE_READ(regs, orig_ax), (long)ctx[1]);
	return 0;
}
#else

#ifdef SAMPLE
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ticks SEC(".maps");

SEC("raw_tp/sys_enter")
int variant_enter(__u64 *ctx)
{
	struct coral_sys_start *st;
	__u32 k = 0;
	__u64 *tick;

	if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	tick = bpf_map_lookup_elem(&ticks, &k);
	if (!tick || (++*tick % SAMPLE))
		return 0;
	st = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->nr = (__u32)ctx[1];
	st->ts = bpf_ktime_get_ns();
	return 0;
}
#endif

SEC("tp_btf/sys_exit")
int BPF_PROG(variant_exit, struct pt_regs *regs, long ret)
{
	if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	count((__u32)regs->orig_ax, ret);
#ifdef SAMPLE
	struct task_struct *task = bpf_get_current_task_btf();
	struct coral_sys_start *st;
	struct coral_sys_stat *s;

	/* No local storage at all on this task: nothing was stamped. */
	if (!task->bpf_storage)
		return 0;
	st = bpf_task_storage_get(&starts, task, 0, 0);
	if (!st || !st->ts)
		return 0;
	s = slot_of(st->nr);
	if (s)
		add_latency(s, bpf_ktime_get_ns() - st->ts);
	/* Back to no storage, so the check above stays cheap. */
	bpf_task_storage_delete(&starts, task);
#endif
	return 0;
}
#endif /* EXIT_RAWTP */

#endif /* COUNT_AT_EXIT */
