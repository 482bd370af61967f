// SPDX-License-Identifier: GPL-2.0
/*
 * security: credential and privilege events of the target, each with its
 * process, parent, cgroup and result.
 *
 * Three programs, BTF tracepoints only (no kprobes, no fentry, no tracefs):
 *   tp_btf/sys_enter           the setuid family, capset, execve and
 *                              execveat of a target thread: its credentials
 *                              before the call go into task storage (no
 *                              hash lookup, freed with the task). Every
 *                              other syscall returns after one compare.
 *   tp_btf/sys_exit            the same calls again: one event with the
 *                              credentials before (from task storage) and
 *                              after, and the result. Also, from the
 *                              arguments still in pt_regs: ptrace attach,
 *                              seize and traceme; init_module and
 *                              finit_module; bpf(BPF_PROG_LOAD); the mount
 *                              family; and any syscall of the configured
 *                              `report` bitmap.
 *   tp_btf/sched_process_exec  after a successful exec, with the new
 *                              credentials committed: an event when the
 *                              file is setuid or setgid or the permitted
 *                              capabilities grew (file capabilities).
 *
 * The agent's own tgid is never traced (ignore_tgid in common.h), so its
 * own bpf() loads are not events. Events go through a ring buffer without
 * a wake-up; what does not fit is counted in drops.
 */
#include "common.h"
#include "security.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the agent before load: bit nr set reports syscall nr (CORAL_SEC_SYSCALL). */
const volatile __u64 report[CORAL_SEC_MAX_NR / 64] = {};

/* x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_execve 59
#define NR_ptrace 101
#define NR_setuid 105
#define NR_setgid 106
#define NR_setreuid 113
#define NR_setregid 114
#define NR_setresuid 117
#define NR_setresgid 119
#define NR_setfsuid 122
#define NR_setfsgid 123
#define NR_capset 126
#define NR_mount 165
#define NR_umount2 166
#define NR_init_module 175
#define NR_finit_module 313
#define NR_bpf 321
#define NR_execveat 322
#define NR_open_tree 428
#define NR_move_mount 429
#define NR_fsopen 430
#define NR_fsmount 432
#define NR_fspick 433
#define NR_mount_setattr 442

#define PTRACE_TRACEME 0
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206
#define BPF_PROG_LOAD 5

#define S_ISUID 04000
#define S_ISGID 02000

/* max_entries set by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* The credentials of a thread at entry to a call that changes them. */
struct before {
	__u32 nr;
	__u32 valid;
	struct coral_sec_creds creds;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct before);
} befores SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_SEC_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 slot)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &slot);

	if (d)
		__sync_fetch_and_add(d, 1);
}

/* The calls whose credentials before and after are reported. */
static __always_inline int changes_creds(long nr)
{
	switch (nr) {
	case NR_setuid:
	case NR_setgid:
	case NR_setreuid:
	case NR_setregid:
	case NR_setresuid:
	case NR_setresgid:
	case NR_setfsuid:
	case NR_setfsgid:
	case NR_capset:
	case NR_execve:
	case NR_execveat:
		return 1;
	}
	return 0;
}

static __always_inline void read_creds(struct task_struct *task, struct coral_sec_creds *c)
{
	/*
	 * task is a trusted BTF pointer (bpf_get_current_task_btf): its
	 * fields, and those of the cred it points to, are plain loads the
	 * JIT guards (no helper call each), CO-RE relocated.
	 */
	const struct cred *cred = task->cred;

	c->uid = cred->uid.val;
	c->gid = cred->gid.val;
	c->suid = cred->suid.val;
	c->sgid = cred->sgid.val;
	c->euid = cred->euid.val;
	c->egid = cred->egid.val;
	c->fsuid = cred->fsuid.val;
	c->fsgid = cred->fsgid.val;
	/*
	 * kernel_cap_t is one u64 since 6.3 and two u32 before: 8 bytes,
	 * low word first, either way. Read the bytes, not a field.
	 */
	if (bpf_core_read(&c->cap_inheritable, 8, &cred->cap_inheritable))
		c->cap_inheritable = 0;
	if (bpf_core_read(&c->cap_permitted, 8, &cred->cap_permitted))
		c->cap_permitted = 0;
	if (bpf_core_read(&c->cap_effective, 8, &cred->cap_effective))
		c->cap_effective = 0;
}

/* A zeroed event for the current task, with its process, parent and creds now. */
static __always_inline struct coral_sec_event *reserve(__u32 type, long nr, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct coral_sec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	__u64 id = bpf_get_current_pid_tgid();

	if (!e) {
		count_drop(CORAL_SEC_DROP_EVENTS);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ret = ret;
	e->type = type;
	e->nr = nr;
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->pcomm, sizeof(e->pcomm), BPF_CORE_READ(task, real_parent, comm));
	read_creds(task, &e->new);
	return e;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(coral_sec_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task;
	struct before *b;

	if (!changes_creds(id))
		return 0;
	if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	task = bpf_get_current_task_btf();
	b = bpf_task_storage_get(&befores, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!b)
		return 0;
	b->nr = id;
	b->valid = 1;
	read_creds(task, &b->creds);
	return 0;
}

/* setuid family and capset: before (stamped at entry) and after. */
static __always_inline void on_creds(long nr, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct coral_sec_event *e;
	struct before *b;

	/* Only target threads were stamped: no filter here. */
	b = bpf_task_storage_get(&befores, task, 0, 0);
	if (!b || !b->valid || b->nr != nr)
		return;
	b->valid = 0;
	e = reserve(nr == NR_capset ? CORAL_SEC_CAPSET : CORAL_SEC_CREDS, nr, ret);
	if (!e)
		return;
	e->old = b->creds;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void user_str(char *dst, __u64 src)
{
	if (!src || bpf_probe_read_user_str(dst, CORAL_SEC_STR_LEN, (void *)src) < 0)
		dst[0] = 0;
}

static __always_inline void on_ptrace(struct pt_regs *regs, long ret)
{
	__u64 request = regs->di;
	struct coral_sec_event *e;

	if (request != PTRACE_ATTACH && request != PTRACE_SEIZE && request != PTRACE_TRACEME)
		return;
	e = reserve(CORAL_SEC_PTRACE, NR_ptrace, ret);
	if (!e)
		return;
	e->args[0] = request;
	e->args[1] = regs->si; /* the tracee (0 for PTRACE_TRACEME) */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void on_module(long nr, struct pt_regs *regs, long ret)
{
	struct coral_sec_event *e = reserve(CORAL_SEC_MODULE, nr, ret);

	if (!e)
		return;
	if (nr == NR_init_module) {
		/* init_module(image, len, params) */
		e->args[1] = regs->si;
		user_str(e->str0, regs->dx);
	} else {
		/* finit_module(fd, params, flags) */
		e->args[0] = regs->di;
		e->args[2] = regs->dx;
		user_str(e->str0, regs->si);
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void on_bpf(struct pt_regs *regs, long ret)
{
	union bpf_attr *attr = (void *)regs->si;
	struct coral_sec_event *e;
	__u32 v;

	if (regs->di != BPF_PROG_LOAD)
		return;
	e = reserve(CORAL_SEC_BPF, NR_bpf, ret);
	if (!e)
		return;
	e->args[0] = BPF_PROG_LOAD;
	if (!bpf_probe_read_user(&v, sizeof(v), &attr->prog_type))
		e->args[1] = v;
	if (!bpf_probe_read_user(&v, sizeof(v), &attr->insn_cnt))
		e->args[2] = v;
	/* prog_name is 16 bytes and may lack its NUL: the agent bounds it. */
	if (bpf_probe_read_user(e->str0, 16, attr->prog_name))
		e->str0[0] = 0;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/*
 * str0 a source path, str1 a target path, str2 a filesystem type; args the
 * flags and fds, by call (docs/collectors/security.md).
 */
static __always_inline void on_mount(long nr, struct pt_regs *regs, long ret)
{
	struct coral_sec_event *e = reserve(CORAL_SEC_MOUNT, nr, ret);

	if (!e)
		return;
	switch (nr) {
	case NR_mount:
		/* mount(source, target, fstype, flags, data) */
		user_str(e->str0, regs->di);
		user_str(e->str1, regs->si);
		user_str(e->str2, regs->dx);
		e->args[0] = regs->r10;
		break;
	case NR_umount2:
		/* umount2(target, flags) */
		user_str(e->str1, regs->di);
		e->args[0] = regs->si;
		break;
	case NR_fsopen:
		/* fsopen(fsname, flags) */
		user_str(e->str2, regs->di);
		e->args[0] = regs->si;
		break;
	case NR_fsmount:
		/* fsmount(fs_fd, flags, attr_flags) */
		e->args[0] = regs->si;
		e->args[1] = regs->di;
		e->args[2] = regs->dx;
		break;
	case NR_move_mount:
		/* move_mount(from_dfd, from_path, to_dfd, to_path, flags) */
		user_str(e->str0, regs->si);
		user_str(e->str1, regs->r10);
		e->args[0] = regs->r8;
		e->args[1] = regs->di;
		e->args[2] = regs->dx;
		break;
	default:
		/* open_tree(dfd, path, flags), fspick(dfd, path, flags), mount_setattr(dfd, path, flags, ...) */
		user_str(e->str1, regs->si);
		e->args[0] = regs->dx;
		e->args[1] = regs->di;
		break;
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline int reported(long nr)
{
	__u64 n = nr;

	if (n >= CORAL_SEC_MAX_NR)
		return 0;
	return (report[n >> 6] >> (n & 63)) & 1;
}

static __always_inline void on_syscall(long nr, struct pt_regs *regs, long ret)
{
	struct coral_sec_event *e = reserve(CORAL_SEC_SYSCALL, nr, ret);

	if (!e)
		return;
	e->args[0] = regs->di;
	e->args[1] = regs->si;
	e->args[2] = regs->dx;
	e->args[3] = regs->r10;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(coral_sec_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;

	switch (nr) {
	case NR_setuid:
	case NR_setgid:
	case NR_setreuid:
	case NR_setregid:
	case NR_setresuid:
	case NR_setresgid:
	case NR_setfsuid:
	case NR_setfsgid:
	case NR_capset:
		on_creds(nr, ret);
		return 0;
	case NR_execve:
	case NR_execveat:
		/* Reported by sched_process_exec when it succeeded; a failure only unstamps. */
		{
			struct before *b =
				bpf_task_storage_get(&befores, bpf_get_current_task_btf(), 0, 0);

			if (b)
				b->valid = 0;
		}
		return 0;
	case NR_ptrace:
	case NR_init_module:
	case NR_finit_module:
	case NR_bpf:
	case NR_mount:
	case NR_umount2:
	case NR_open_tree:
	case NR_move_mount:
	case NR_fsopen:
	case NR_fsmount:
	case NR_fspick:
	case NR_mount_setattr:
		break;
	default:
		if (!reported(nr))
			return 0;
		if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
			return 0;
		on_syscall(nr, regs, ret);
		return 0;
	}
	if (!coral_target_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	switch (nr) {
	case NR_ptrace:
		on_ptrace(regs, ret);
		break;
	case NR_init_module:
	case NR_finit_module:
		on_module(nr, regs, ret);
		break;
	case NR_bpf:
		on_bpf(regs, ret);
		break;
	default:
		on_mount(nr, regs, ret);
		break;
	}
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(coral_sec_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct coral_sec_event *e;
	struct before *b;
	const struct cred *cred;
	__u64 permitted;
	__u32 flags = 0;
	__u16 mode;

	/* Only the execs of target threads were stamped at entry. */
	b = bpf_task_storage_get(&befores, task, 0, 0);
	if (!b || !b->valid || (b->nr != NR_execve && b->nr != NR_execveat))
		return 0;
	b->valid = 0;
	mode = BPF_CORE_READ(bprm, file, f_inode, i_mode);
	if (mode & S_ISUID)
		flags |= CORAL_SEC_EXEC_SETUID;
	if (mode & S_ISGID)
		flags |= CORAL_SEC_EXEC_SETGID;
	/* The new credentials are committed (bprm->cred is already NULL). */
	cred = BPF_CORE_READ(task, cred);
	if (bpf_core_read(&permitted, 8, &cred->cap_permitted))
		permitted = 0;
	if (permitted & ~b->creds.cap_permitted)
		flags |= CORAL_SEC_EXEC_CAPS;
	/* An ordinary exec: nothing to report. */
	if (!flags)
		return 0;
	if (BPF_CORE_READ_BITFIELD_PROBED(bprm, secureexec))
		flags |= CORAL_SEC_EXEC_SECURE;
	e = reserve(CORAL_SEC_EXEC, b->nr, 0);
	if (!e)
		return 0;
	e->old = b->creds;
	e->flags = flags;
	e->mode = mode;
	if (bpf_probe_read_kernel_str(e->str0, sizeof(e->str0), BPF_CORE_READ(bprm, filename)) < 0)
		e->str0[0] = 0;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
