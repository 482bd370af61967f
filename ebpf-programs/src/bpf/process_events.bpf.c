// SPDX-License-Identifier: GPL-2.0
/*
 * process-events: one event per successful exec and per process exit, from
 * BTF tracepoints only (no kprobes, no fentry, no tracefs).
 *
 * Hooks:
 *   tp_btf/sched_process_exec   after the new image is in place: current is
 *                               the process, its comm and mm are the new
 *                               ones, so argv is read from the new stack
 *                               (mm->arg_start .. arg_end), where the kernel
 *                               has just copied it
 *   tp_btf/sched_process_exit   every exiting *thread*; only the one that
 *                               ends the thread group makes an event
 *   tp_btf/sched_process_fork   only when following the children of a pid
 *                               filter: a process forked by a tracked one is
 *                               tracked too
 *
 * Thread exits are not process exits. Since Linux 6.16 the exit tracepoint
 * passes group_dead, the result of the kernel's own
 * atomic_dec_and_test(&signal->live): exactly one thread per process sees it
 * true, whichever it is (the leader may have left first). Before 6.16 the
 * tracepoint has no such argument; coral_pe_exit_live, loaded by the agent
 * when coral_pe_exit is refused, reads signal->live == 0 instead (live is
 * decremented before the tracepoint on every kernel). That read can see zero
 * in two threads that exit at the same instant, so on those kernels two
 * simultaneous last threads can make two events for one process.
 *
 * The exit status is what wait(2) would report: the group's exit code when a
 * group exit (exit_group, a fatal signal) is under way, else the leader's own
 * exit code (a process whose threads all called exit(2)).
 *
 * Process lifetime needs no map: copy_process() stamps task->start_time with
 * ktime_get_ns(), the clock of bpf_ktime_get_ns(), and de_thread() carries
 * the leader's over to a thread that execs, so group_leader->start_time is
 * the process's fork, also for processes forked before the collector.
 *
 * Every read of a kernel struct is a CO-RE read: nothing here depends on the
 * layouts of the kernel it was compiled against.
 */
#include "common.h"
#include "process_events.h"

char LICENSE[] SEC("license") = "GPL";

/* include/linux/sched/signal.h: a group exit is in progress. */
#define SIGNAL_GROUP_EXIT 0x00000004

/* Set by the agent before load (agent/src/collectors/process_events.rs). */
/* With a pid filter: membership is the tracked map, children included. */
const volatile __u8 follow_children = 0;
/* Bytes of argv copied per exec, at most CORAL_PROC_ARGV_BYTES. */
const volatile __u32 argv_bytes = CORAL_PROC_ARGV_BYTES;

/* max_entries set by the agent (ring buffer size is configurable). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/*
 * tgids being followed: seeded by the agent with the filter's pids and their
 * descendants, filled at fork, emptied at exit. max_entries set by the
 * agent (1 when not following).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_PROC_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 slot)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &slot);

	if (d)
		__sync_fetch_and_add(d, 1);
}

static __always_inline int following(void)
{
	return follow_children && filter_npids;
}

/* True when process tgid (the current task's) is one to report. */
static __always_inline int target(__u32 tgid)
{
	if (!following())
		return coral_target_matches(tgid);
	if (tgid == ignore_tgid || !bpf_map_lookup_elem(&tracked, &tgid))
		return 0;
	/* The rest of the filter still narrows the followed processes. */
	if (filter_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(filter_cgroup_level) != filter_cgroup_id)
		return 0;
	if (filter_comm_set && !coral_comm_matches())
		return 0;
	return 1;
}

/* The common part of an event, for the current task. */
static __always_inline void fill(struct coral_proc_event *e, struct task_struct *task, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->time_ns = bpf_ktime_get_ns();
	e->start_ns = BPF_CORE_READ(task, group_leader, start_time);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->type = type;
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->status = 0;
	e->flags = 0;
	e->argv_len = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline int on_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct coral_proc_exec *e;
	unsigned long start, end;
	__u64 len;

	if (!target(tgid))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(CORAL_PROC_DROP_EXEC);
		return 0;
	}
	fill(&e->hdr, task, CORAL_PROC_EXEC);
	if (bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
				      BPF_CORE_READ(bprm, filename)) < 0)
		e->filename[0] = 0;

	start = BPF_CORE_READ(task, mm, arg_start);
	end = BPF_CORE_READ(task, mm, arg_end);
	len = end > start ? end - start : 0;
	if (len > argv_bytes) {
		len = argv_bytes;
		e->hdr.flags |= CORAL_PROC_ARGV_TRUNCATED;
	}
	/* argv_bytes is at most this already; the verifier wants to see it. */
	if (len > CORAL_PROC_ARGV_BYTES)
		len = CORAL_PROC_ARGV_BYTES;
	if (len && bpf_probe_read_user(e->argv, len, (const void *)start)) {
		e->hdr.flags |= CORAL_PROC_ARGV_UNREADABLE;
		len = 0;
	}
	e->hdr.argv_len = len;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

/* The last thread of process tgid is exiting. */
static __always_inline int on_process_exit(struct task_struct *task)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct signal_struct *sig;
	struct coral_proc_event *e;

	if (target(tgid)) {
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			count_drop(CORAL_PROC_DROP_EXIT);
		} else {
			fill(e, task, CORAL_PROC_EXIT);
			sig = BPF_CORE_READ(task, signal);
			if (BPF_CORE_READ(sig, flags) & SIGNAL_GROUP_EXIT)
				e->status = BPF_CORE_READ(sig, group_exit_code);
			else
				e->status = BPF_CORE_READ(task, group_leader, exit_code);
			bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
		}
	}
	/* Whether reported or not: a reused tgid must not inherit tracking. */
	if (following())
		bpf_map_delete_elem(&tracked, &tgid);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(coral_pe_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

/* Linux 6.16+: sched_process_exit(struct task_struct *p, bool group_dead). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(coral_pe_exit, struct task_struct *p, bool group_dead)
{
	if (!group_dead)
		return 0;
	return on_process_exit(p);
}

/* Older kernels: sched_process_exit(struct task_struct *p). See the top. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(coral_pe_exit_live, struct task_struct *p)
{
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	return on_process_exit(p);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(coral_pe_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u8 one = 1;

	/* A new thread joins its process: nothing to follow. */
	if (BPF_CORE_READ(child, pid) != ctgid)
		return 0;
	if (!bpf_map_lookup_elem(&tracked, &ptgid))
		return 0;
	if (bpf_map_update_elem(&tracked, &ctgid, &one, BPF_ANY))
		count_drop(CORAL_PROC_DROP_TRACKED);
	return 0;
}
