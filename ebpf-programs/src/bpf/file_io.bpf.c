// SPDX-License-Identifier: GPL-2.0
/*
 * file-io: opens (with flags and errors), reads, writes and fsyncs per
 * (process, path as opened), and events for failed opens and for I/O slower
 * than a threshold.
 *
 * Two programs, tp_btf/sys_enter and tp_btf/sys_exit, each dispatching on the
 * syscall number first (anything but the open, read, write, fsync and close
 * families returns after one load and a compare), then the target filter:
 *   sys_enter: the read, write and fsync families stamp the thread (task
 *              storage: no hash lookup, freed with the task). Opens and
 *              closes are not stamped: only the return matters.
 *   sys_exit:  an open reads the path from user memory (bounded, at most
 *              CORAL_FIO_PATH_LEN - 1 bytes; the arguments are still in
 *              pt_regs) and hashes it (FNV-1a); the aggregate is keyed by
 *              (path hash, tgid, errno), so a failed open of a path has its
 *              own entry per errno; a successful one maps (tgid, fd) to its
 *              aggregate in `fds`. A read, write or fsync looks the fd up,
 *              then adds count, bytes and latency to the aggregate with
 *              atomics (threads share it). A close forgets the fd.
 * Failed opens and I/O of at least slow_ns are sent through the ring buffer
 * without a wake-up. An fd whose open was not seen (opened before the start,
 * inherited over fork, dup'd, a socket or a pipe) is looked up at entry and
 * only bumps a counter: no stamp, no event.
 */
#include "common.h"
#include "file_io.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 slow_ns = 10000000;

/* x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_fsync 74
#define NR_fdatasync 75
#define NR_creat 85
#define NR_openat 257
#define NR_preadv 295
#define NR_pwritev 296
#define NR_preadv2 327
#define NR_pwritev2 328
#define NR_openat2 437
#define NR_dup 32
#define NR_dup2 33
#define NR_fcntl 72
#define NR_dup3 292
#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

/* creat(2) is open(path, O_CREAT | O_WRONLY | O_TRUNC). */
#define CREAT_FLAGS 01101

/* drops[] slots. */
#define DROP_EVENTS 0
#define DROP_FILES 1
#define UNTRACKED 2

/* The agent sizes it (FileIoConfig.max_files). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct coral_fio_key);
	__type(value, struct coral_fio_stat);
} files SEC(".maps");

/* LRU: an fd closed by exec or by the process's exit is never seen closing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct coral_fio_fd_key);
	__type(value, struct coral_fio_key);
} fds SEC(".maps");

/* A read, write or fsync in progress on a tracked fd. */
struct start {
	__u64 ns;
	__u64 nr;
	struct coral_fio_key key;
	__s32 fd;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct start);
} starts SEC(".maps");

/* A new aggregate is built here: it is too big for the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct coral_fio_stat);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* [DROP_EVENTS] ring buffer full, [DROP_FILES] files full, [UNTRACKED] ops. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count(__u32 k)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &k);

	if (d)
		(*d)++;
}

static __always_inline int is_io(long nr)
{
	switch (nr) {
	case NR_read:
	case NR_write:
	case NR_pread64:
	case NR_pwrite64:
	case NR_readv:
	case NR_writev:
	case NR_preadv:
	case NR_pwritev:
	case NR_preadv2:
	case NR_pwritev2:
	case NR_fsync:
	case NR_fdatasync:
		return 1;
	}
	return 0;
}

static __always_inline __u32 op_of(long nr)
{
	switch (nr) {
	case NR_read:
	case NR_pread64:
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
		return CORAL_FIO_READ;
	case NR_fsync:
	case NR_fdatasync:
		return CORAL_FIO_FSYNC;
	}
	return CORAL_FIO_WRITE;
}

static __always_inline struct coral_fio_event *reserve(__u32 tgid, __u32 op, __s32 fd)
{
	struct coral_fio_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(DROP_EVENTS);
		return 0;
	}
	e->tgid = tgid;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->op = op;
	e->fd = fd;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(coral_fio_enter, struct pt_regs *regs, long id)
{
	struct coral_fio_fd_key fk;
	struct coral_fio_key *key;
	struct start *s;

	if (!is_io(id))
		return 0;
	fk.tgid = bpf_get_current_pid_tgid() >> 32;
	if (!coral_target_matches(fk.tgid))
		return 0;
	fk.fd = regs->di;
	key = bpf_map_lookup_elem(&fds, &fk);
	if (!key) {
		count(UNTRACKED);
		return 0;
	}
	s = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s)
		return 0;
	s->key = *key;
	s->fd = fk.fd;
	s->nr = id;
	s->ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline void on_open(__u32 tgid, __u64 upath, __u32 flags, long ret)
{
	__u32 zero = 0;
	struct coral_fio_stat *v = bpf_map_lookup_elem(&scratch, &zero);
	struct coral_fio_key key = { .tgid = tgid, .err = ret < 0 ? -ret : 0 };
	struct coral_fio_stat *s;
	__u64 h = 0xcbf29ce484222325ULL;
	struct coral_fio_event *e;
	long n;

	if (!v)
		return;
	n = bpf_probe_read_user_str(v->path, sizeof(v->path), (void *)upath);
	if (n <= 0)
		v->path[0] = 0;
	for (int i = 0; i < CORAL_FIO_PATH_LEN; i++) {
		char c = v->path[i];

		if (!c)
			break;
		h = (h ^ (__u8)c) * 0x100000001b3ULL;
	}
	key.path_hash = h;
	s = bpf_map_lookup_elem(&files, &key);
	if (!s) {
		__builtin_memset(v, 0, __builtin_offsetof(struct coral_fio_stat, comm));
		__builtin_memset(v->read_log2, 0, sizeof(v->read_log2));
		__builtin_memset(v->write_log2, 0, sizeof(v->write_log2));
		bpf_get_current_comm(v->comm, sizeof(v->comm));
		v->cgroup_id = bpf_get_current_cgroup_id();
		if (coral_insert_full(&files, &key, v))
			count(DROP_FILES);
		s = bpf_map_lookup_elem(&files, &key);
	}
	if (s) {
		__sync_fetch_and_add(&s->opens, 1);
		s->flags = flags;
	}
	if (ret >= 0) {
		struct coral_fio_fd_key fk = { .tgid = tgid, .fd = ret };

		bpf_map_update_elem(&fds, &fk, &key, BPF_ANY);
		return;
	}
	e = reserve(tgid, CORAL_FIO_OPEN, -1);
	if (!e)
		return;
	e->start_ns = bpf_ktime_get_ns();
	e->latency_ns = 0;
	e->bytes = 0;
	e->err = -ret;
	e->flags = flags;
	__builtin_memcpy(e->path, v->path, CORAL_FIO_PATH_LEN);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void add_latency(__u64 *log2, __u64 delta)
{
	__u32 slot = coral_log2(delta);

	if (slot >= CORAL_FIO_LOG2_BUCKETS)
		slot = CORAL_FIO_LOG2_BUCKETS - 1;
	__sync_fetch_and_add(&log2[slot], 1);
}

static __always_inline void on_io(__u32 tgid, long nr, long ret)
{
	struct coral_fio_stat *s;
	struct coral_fio_event *e;
	struct start *st;
	__u64 start, delta;
	__u32 op;

	st = bpf_task_storage_get(&starts, bpf_get_current_task_btf(), 0, 0);
	if (!st || st->nr != nr || !st->ns)
		return;
	start = st->ns;
	st->ns = 0;
	if (ret < 0)
		return;
	delta = bpf_ktime_get_ns() - start;
	op = op_of(nr);
	s = bpf_map_lookup_elem(&files, &st->key);
	if (!s) {
		count(DROP_FILES);
		return;
	}
	if (op == CORAL_FIO_READ) {
		__sync_fetch_and_add(&s->reads, 1);
		__sync_fetch_and_add(&s->read_bytes, ret);
		__sync_fetch_and_add(&s->read_ns, delta);
		add_latency(s->read_log2, delta);
	} else if (op == CORAL_FIO_WRITE) {
		__sync_fetch_and_add(&s->writes, 1);
		__sync_fetch_and_add(&s->write_bytes, ret);
		__sync_fetch_and_add(&s->write_ns, delta);
		add_latency(s->write_log2, delta);
	} else {
		__sync_fetch_and_add(&s->fsyncs, 1);
		__sync_fetch_and_add(&s->fsync_ns, delta);
	}
	if (delta < slow_ns)
		return;
	e = reserve(tgid, op, st->fd);
	if (!e)
		return;
	e->start_ns = start;
	e->latency_ns = delta;
	e->bytes = op == CORAL_FIO_FSYNC ? 0 : ret;
	e->err = 0;
	e->flags = s->flags;
	__builtin_memcpy(e->path, s->path, CORAL_FIO_PATH_LEN);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* The new fd is the old one's file (dd, shells: open, then dup2 onto 0 or 1). */
static __always_inline void on_dup(__u32 tgid, __s32 oldfd, __s32 newfd)
{
	struct coral_fio_fd_key from = { .tgid = tgid, .fd = oldfd };
	struct coral_fio_fd_key to = { .tgid = tgid, .fd = newfd };
	struct coral_fio_key *key;

	if (oldfd == newfd)
		return;
	key = bpf_map_lookup_elem(&fds, &from);
	if (key) {
		struct coral_fio_key copy = *key;

		bpf_map_update_elem(&fds, &to, &copy, BPF_ANY);
	} else if (bpf_map_lookup_elem(&fds, &to)) {
		/* dup2 onto a tracked fd closed it first. */
		bpf_map_delete_elem(&fds, &to);
	}
}

SEC("tp_btf/sys_exit")
int BPF_PROG(coral_fio_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	__u64 path, flags;
	__u32 tgid;

	switch (nr) {
	case NR_openat:
		path = regs->si;
		flags = regs->dx;
		break;
	case NR_open:
		path = regs->di;
		flags = regs->si;
		break;
	case NR_creat:
		path = regs->di;
		flags = CREAT_FLAGS;
		break;
	case NR_openat2:
		path = regs->si;
		/* struct open_how starts with __u64 flags. */
		if (bpf_probe_read_user(&flags, sizeof(flags), (void *)regs->dx))
			flags = 0;
		break;
	case NR_close:
		if (ret)
			return 0;
		tgid = bpf_get_current_pid_tgid() >> 32;
		if (!coral_target_matches(tgid))
			return 0;
		{
			struct coral_fio_fd_key fk = { .tgid = tgid, .fd = regs->di };

			/* A lookup is lock-free; a delete of a missing key takes a bucket lock. */
			if (bpf_map_lookup_elem(&fds, &fk))
				bpf_map_delete_elem(&fds, &fk);
		}
		return 0;
	case NR_fcntl:
		if (regs->si != F_DUPFD && regs->si != F_DUPFD_CLOEXEC)
			return 0;
		/* fallthrough */
	case NR_dup:
	case NR_dup2:
	case NR_dup3:
		if (ret < 0)
			return 0;
		tgid = bpf_get_current_pid_tgid() >> 32;
		if (!coral_target_matches(tgid))
			return 0;
		on_dup(tgid, regs->di, ret);
		return 0;
	default:
		/* Only threads of the target were stamped: no filter here. */
		if (is_io(nr))
			on_io(bpf_get_current_pid_tgid() >> 32, nr, ret);
		return 0;
	}
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!coral_target_matches(tgid))
		return 0;
	on_open(tgid, path, flags, ret);
	return 0;
}
