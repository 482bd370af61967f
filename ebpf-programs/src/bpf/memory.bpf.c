// SPDX-License-Identifier: GPL-2.0
/*
 * memory: resident memory per process by type (file, anon, swap entries,
 * shmem), and OOM kills.
 *
 * tp_btf/rss_stat(struct mm_struct *mm, int member) fires after every change
 * of one of an mm's counters, in the context of whichever task made it: the
 * process itself (page faults, munmap), but also another process reclaiming
 * its pages, a vfork child, a kthread that borrowed the mm, or the fork/exec
 * that is building a new mm. The mm is mapped to its process through
 * mm->owner (CONFIG_MEMCG), which stays the real owner in every one of those
 * cases; an mm whose owner does not point back at it is being built (fork's
 * copy, exec before the switch) or torn down (owner NULL), and is skipped.
 * Without mm->owner, only events of the mm's own tasks are used.
 *
 * Each event re-reads all of the mm's counters, so nothing is lost when an
 * event is skipped: the next one has the absolute values. Since Linux 6.2 the
 * counters are percpu_counters; their `count` (what get_mm_counter() reads)
 * lags the exact sum by less than the per-CPU batch on each CPU
 * (nr_cpus * max(32, 2 * nr_cpus) pages at worst). The exact sum needs every
 * CPU's slot, which is what the perf_event tracepoint computes for its
 * `size` field on every event, under the counter's spinlock; this program
 * reads `count` only.
 *
 * A process is reported on the ring buffer when it is first seen and then
 * whenever its counters moved by at least `threshold_pages` in total; the
 * `procs` hash always holds the latest values for the agent's interval reads.
 * tp_btf/sched_process_exit removes a process when its last thread exits.
 * tp_btf/mark_victim (Linux 6.8+: it takes the victim task) reports an OOM
 * kill with the victim's counters, its memory cgroup and the cgroup whose
 * limit was hit.
 */
#include "common.h"
#include "memory.h"

char LICENSE[] SEC("license") = "GPL";

/* Report a process when its counters moved by this many pages in total. */
const volatile __u64 threshold_pages = 256;
/*
 * Target by memory cgroup (the memory controller's hierarchy, v1 or v2):
 * kernfs id of the cgroup and its depth. 0: no such filter. On a host where
 * the memory controller is on cgroup2, the common cgroup filter does the same.
 */
const volatile __u64 memcg_filter_id = 0;
const volatile __u32 memcg_filter_level = 0;
/* PAGE_COUNTER_MAX (LONG_MAX / PAGE_SIZE): a page counter's "no limit". */
const volatile __u64 page_counter_max = 0x7ffffffffffffULL;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct coral_mem_proc);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_MEM_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Before 6.2: struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }. */
struct mm_rss_stat___pre62 {
	atomic_long_t count[CORAL_MEM_COUNTERS];
};

struct mm_struct___pre62 {
	struct mm_rss_stat___pre62 rss_stat;
};


static __always_inline void count_drop(__u32 slot)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &slot);

	if (d)
		(*d)++;
}

static __always_inline void read_counters(struct mm_struct *mm, __s64 pages[CORAL_MEM_COUNTERS])
{
	struct mm_struct___pre62 *old = (void *)mm;

	/*
	 * Asked of the pre-6.2 layout: a field relocation against the other
	 * layout (struct vs array) fails, and only an exists check turns that
	 * failure into 0 instead of a poisoned instruction the verifier refuses
	 * (Linux 6.1 refused the size comparison this replaced).
	 */
	if (bpf_core_field_exists(old->rss_stat.count)) {
		pages[0] = BPF_CORE_READ(old, rss_stat.count[0].counter);
		pages[1] = BPF_CORE_READ(old, rss_stat.count[1].counter);
		pages[2] = BPF_CORE_READ(old, rss_stat.count[2].counter);
		pages[3] = BPF_CORE_READ(old, rss_stat.count[3].counter);
	} else {
		/* BTF pointers: direct (CO-RE relocated) loads, no helper calls. */
		pages[0] = mm->rss_stat[0].count;
		pages[1] = mm->rss_stat[1].count;
		pages[2] = mm->rss_stat[2].count;
		pages[3] = mm->rss_stat[3].count;
	}
}

/* The task's css of the memory controller (whichever hierarchy it is on). */
static __always_inline struct cgroup_subsys_state *task_memcg_css(struct task_struct *task)
{
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;

	if (!cset || id < 0 || id >= 16)
		return NULL;
	bpf_core_read(&css, sizeof(css), &cset->subsys[id]);
	return css;
}

static __always_inline __u64 cgroup_kn_id(struct cgroup *cgrp)
{
	return cgrp ? BPF_CORE_READ(cgrp, kn, id) : 0;
}

/* kernfs id of `cgrp`'s ancestor at `level` (itself at its own level), 0 if none. */
static __always_inline __u64 cgroup_ancestor_id(struct cgroup *cgrp, __u32 level)
{
	struct cgroup *anc = NULL;

	if (!cgrp || BPF_CORE_READ(cgrp, level) < (int)level)
		return 0;
	bpf_core_read(&anc, sizeof(anc), &cgrp->ancestors[level]);
	return cgroup_kn_id(anc);
}

static __always_inline int task_comm_matches(struct task_struct *task)
{
	char comm[CORAL_COMM_LEN];

	if (bpf_probe_read_kernel_str(comm, sizeof(comm), &task->comm) < 0)
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

/*
 * common.h's filter applied to `task`, which need not be the current task
 * (rss_stat runs in reclaimers' contexts, mark_victim in the OOM killer's),
 * plus the memory-cgroup target.
 */
static __always_inline int task_matches(struct task_struct *task, __u32 tgid)
{
	if (!coral_pid_matches(tgid))
		return 0;
	if (filter_cgroup_id &&
	    cgroup_ancestor_id(BPF_CORE_READ(task, cgroups, dfl_cgrp), filter_cgroup_level) !=
		    filter_cgroup_id)
		return 0;
	if (memcg_filter_id) {
		struct cgroup_subsys_state *css = task_memcg_css(task);

		if (!css || cgroup_ancestor_id(BPF_CORE_READ(css, cgroup), memcg_filter_level) !=
				    memcg_filter_id)
			return 0;
	}
	if (filter_comm_set && !task_comm_matches(task))
		return 0;
	return 1;
}

static __always_inline __u64 task_memcg_id(struct task_struct *task)
{
	struct cgroup_subsys_state *css = task_memcg_css(task);

	return css ? cgroup_kn_id(BPF_CORE_READ(css, cgroup)) : 0;
}

static __always_inline __s64 abs64(__s64 v)
{
	return v < 0 ? -v : v;
}

static __always_inline void report(struct coral_mem_proc *p, struct task_struct *owner, __u32 tgid)
{
	struct coral_mem_rss_event *ev;
	__u64 now;

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		/* reported[] stays as it was: the next event tries again. */
		count_drop(CORAL_MEM_DROP_RINGBUF);
		return;
	}
	now = bpf_ktime_get_ns();
	ev->type = CORAL_MEM_EV_RSS;
	ev->tgid = tgid;
	ev->ts = now;
	for (int i = 0; i < CORAL_MEM_COUNTERS; i++) {
		ev->pages[i] = p->pages[i];
		p->reported[i] = p->pages[i];
	}
	p->memcg_id = task_memcg_id(owner);
	ev->memcg_id = p->memcg_id;
	bpf_probe_read_kernel_str(p->comm, sizeof(p->comm), &owner->comm);
	__builtin_memcpy(ev->comm, p->comm, sizeof(ev->comm));
	p->report_ns = now;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/rss_stat")
int BPF_PROG(coral_mem_rss, struct mm_struct *mm, int member)
{
	struct task_struct *owner;
	struct coral_mem_proc *p;
	__u64 moved = 0;
	__u32 tgid;
	int fresh = 0;

	if (bpf_core_field_exists(mm->owner)) {
		owner = mm->owner;
		/* NULL: torn down after exit; not pointing back: fork or exec building it. */
		if (!owner || owner->mm != mm)
			return 0;
	} else {
		owner = bpf_get_current_task_btf();
		if (owner->mm != mm)
			return 0;
	}
	tgid = owner->tgid;

	p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p) {
		static const struct coral_mem_proc zero;

		if (!task_matches(owner, tgid))
			return 0;
		if (coral_insert_full(&procs, &tgid, &zero)) {
			count_drop(CORAL_MEM_DROP_PROCS);
			return 0;
		}
		p = bpf_map_lookup_elem(&procs, &tgid);
		if (!p)
			return 0;
		fresh = 1;
	}
	read_counters(mm, p->pages);
	p->events++;
	for (int i = 0; i < CORAL_MEM_COUNTERS; i++)
		moved += abs64(p->pages[i] - p->reported[i]);
	if (fresh || moved >= threshold_pages)
		report(p, owner, tgid);
	return 0;
}

/* sched_process_exit(struct task_struct *p[, bool group_dead since 6.16]). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(coral_mem_exit, struct task_struct *task)
{
	struct coral_mem_exit_event *ev;
	__u32 tgid = task->tgid;

	/* Other threads still run: the process lives on. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (bpf_map_delete_elem(&procs, &tgid))
		return 0;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(CORAL_MEM_DROP_RINGBUF);
		return 0;
	}
	ev->type = CORAL_MEM_EV_EXIT;
	ev->tgid = tgid;
	ev->ts = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	return 0;
}

/* mark_victim(struct task_struct *task, uid_t uid) since 6.8; (int pid) before. */
SEC("tp_btf/mark_victim")
int BPF_PROG(coral_mem_oom, struct task_struct *task)
{
	struct coral_mem_oom_event *ev;
	struct cgroup_subsys_state *css;
	struct task_struct *cur;
	struct cgroup *cgrp;
	struct mm_struct *mm;
	__s64 best = 0;
	__u32 tgid = task->tgid;

	if (!task_matches(task, tgid))
		return 0;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(CORAL_MEM_DROP_RINGBUF);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = CORAL_MEM_EV_OOM;
	ev->tgid = tgid;
	ev->ts = bpf_ktime_get_ns();
	/* The OOM killer holds the victim's task lock: its mm is still there. */
	mm = task->mm;
	if (mm)
		read_counters(mm, ev->pages);
	bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), &task->comm);
	cur = bpf_get_current_task_btf();
	ev->trigger_tgid = cur->tgid;
	bpf_probe_read_kernel_str(ev->trigger_comm, sizeof(ev->trigger_comm), &cur->comm);

	css = task_memcg_css(task);
	if (css) {
		cgrp = BPF_CORE_READ(css, cgroup);
		ev->memcg_id = cgroup_kn_id(cgrp);
		ev->memcg_level = BPF_CORE_READ(cgrp, level);
		bpf_probe_read_kernel_str(ev->memcg_name, sizeof(ev->memcg_name),
					  BPF_CORE_READ(cgrp, kn, name));
	}
	/* mem_cgroup starts with its css: walk up through css.parent. */
	for (int i = 0; i < CORAL_MEM_MAX_DEPTH && css; i++) {
		struct mem_cgroup *memcg = (void *)css;
		__u64 max = BPF_CORE_READ(memcg, memory.max);
		__s64 usage = BPF_CORE_READ(memcg, memory.usage.counter);

		if (max < page_counter_max) {
			__s64 headroom = (__s64)max - usage;

			if (!ev->limit_memcg_id || headroom < best) {
				best = headroom;
				ev->limit_memcg_id = cgroup_kn_id(BPF_CORE_READ(css, cgroup));
				ev->limit_pages = max;
				ev->usage_pages = usage;
			}
		}
		css = BPF_CORE_READ(css, parent);
	}
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	return 0;
}
