// SPDX-License-Identifier: GPL-2.0
/*
 * syscall-stats: per syscall count, errors, total and log2 latency.
 *
 * raw_tp/sys_enter stamps the task (task-local storage: no hash lookup, freed
 * with the task), raw_tp/sys_exit turns the stamp into a latency and adds it to
 * a per-CPU array indexed by syscall number (no locks, no atomics). With
 * per_process set, a per-CPU hash keyed by (tgid, nr) is updated as well.
 *
 * Without latency the agent attaches tp_btf/sys_exit alone instead: one hook
 * instead of two, no clock, no storage (the syscall number comes from
 * regs->orig_ax, a direct BTF-checked load). It costs about what one empty
 * pair of hooks costs (docs/benchmarks.md); exit and exit_group, which never
 * return, are not seen by it.
 *
 * Raw tracepoint context is taken as `__u64 *ctx`: aya cannot CO-RE-relocate
 * the flexible `args[]` of struct bpf_raw_tracepoint_args.
 * sys_enter(struct pt_regs *regs, long id); sys_exit(struct pt_regs *regs, long ret).
 */
#include "common.h"
#include "syscall_stats.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u8 per_process = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_SYSCALL_SLOTS);
	__type(key, __u32);
	__type(value, struct coral_sys_stat);
} stats SEC(".maps");

/* max_entries is set by the agent: 1 unless per_process is asked for. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1);
	__type(key, struct coral_sys_key);
	__type(value, struct coral_sys_stat);
} proc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct coral_sys_proc);
} comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct coral_sys_start);
} starts SEC(".maps");

/* [0]: per-process entries lost to a full map. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* A call with no latency to add: exit/exit_group, or latency off. */
#define NO_LATENCY ((__u64)-1)

static __always_inline void add_sample(struct coral_sys_stat *s, __u64 delta, long ret)
{
	s->count++;
	if (ret < 0)
		s->errors++;
	if (delta != NO_LATENCY) {
		__u32 slot = coral_log2(delta);

		if (slot >= CORAL_LOG2_BUCKETS)
			slot = CORAL_LOG2_BUCKETS - 1;
		s->total_ns += delta;
		s->log2[slot]++;
	}
}

static __always_inline void add_process_sample(__u32 tgid, __u32 nr, __u64 delta, long ret)
{
	struct coral_sys_key key = { .tgid = tgid, .nr = nr };
	struct coral_sys_stat *s = bpf_map_lookup_elem(&proc_stats, &key);

	if (!s) {
		static const struct coral_sys_stat zero;
		struct coral_sys_proc proc = {};

		if (coral_insert_full(&proc_stats, &key, &zero)) {
			__u32 k = 0;
			__u64 *d = bpf_map_lookup_elem(&drops, &k);

			if (d)
				(*d)++;
			return;
		}
		s = bpf_map_lookup_elem(&proc_stats, &key);
		if (!s)
			return;
		/* Refreshed with every new (tgid, nr): after an exec the new name wins. */
		if (!bpf_get_current_comm(proc.comm, sizeof(proc.comm))) {
			proc.cgroup_id = bpf_get_current_cgroup_id();
			bpf_map_update_elem(&comms, &tgid, &proc, BPF_ANY);
		}
	}
	add_sample(s, delta, ret);
}

static __always_inline void record(__u32 tgid, __u32 nr, __u64 delta, long ret)
{
	struct coral_sys_stat *s;

	if (nr >= CORAL_SYSCALL_SLOTS)
		return;
	s = bpf_map_lookup_elem(&stats, &nr);
	if (s)
		add_sample(s, delta, ret);
	if (per_process)
		add_process_sample(tgid, nr, delta, ret);
}

/* exit and exit_group never return: count them on entry, with no latency. */
#define NR_EXIT 60
#define NR_EXIT_GROUP 231

SEC("raw_tp/sys_enter")
int coral_sys_enter(__u64 *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 nr = (__u32)ctx[1];
	struct coral_sys_start *st;

	if (!coral_target_matches(tgid))
		return 0;
	if (nr == NR_EXIT || nr == NR_EXIT_GROUP) {
		record(tgid, nr, NO_LATENCY, 0);
		return 0;
	}
	st = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->nr = nr;
	st->ts = bpf_ktime_get_ns();
	return 0;
}

SEC("raw_tp/sys_exit")
int coral_sys_exit(__u64 *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct coral_sys_start *st;
	__u64 now, ts;

	/*
	 * Processes outside a pid filter have no stamp: say so before the storage
	 * lookup (measured: 185 -> 162 ns per syscall for everyone not watched).
	 */
	if (!coral_pid_matches(tgid))
		return 0;
	st = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0, 0);
	if (!st || !st->ts)
		return 0;
	now = bpf_ktime_get_ns();
	ts = st->ts;
	st->ts = 0;
	record(tgid, st->nr, now - ts, (long)ctx[1]);
	return 0;
}

/* Latency off: attached alone, instead of the pair above. */
SEC("tp_btf/sys_exit")
int BPF_PROG(coral_sys_exit_count, struct pt_regs *regs, long ret)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!coral_target_matches(tgid))
		return 0;
	record(tgid, (__u32)regs->orig_ax, NO_LATENCY, ret);
	return 0;
}
