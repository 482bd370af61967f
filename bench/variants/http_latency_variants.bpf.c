// SPDX-License-Identifier: GPL-2.0
/*
 * Variants of http-latency's syscall programs, for taking the per-request
 * cost apart (bench/http-variants.sh, docs/benchmarks.md). Not built by
 * ebpf-programs/build.rs and never loaded by the agent. Each variant stops
 * at one stage of the work; the difference between two stages under the
 * same nginx load is what the pieces in between cost. The structs are kept
 * here (not from http_latency.h) so the file builds against any header.
 *
 *   EMPTY_EXIT   one empty tp_btf/sys_exit program: the hook alone
 *
 * V1: the design before issue 16 (raw_tp sys_enter + sys_exit, the filter
 * first, a per-thread map of pending reads and accepts, arguments read with
 * bpf_probe_read_kernel), cut at STAGE:
 *   1  enter: filter, switch on the syscall number; exit: pid filter
 *   2  + the pending map: enter saves reads and accepts, every exit of a
 *        watched thread looks it up (and deletes what it finds)
 *   3  + user memory: the first 16 bytes of every read and write (through
 *        the iovec / msghdr), no connection state
 *   4  + connection state: (tgid, fd) lookups, the 128-byte request copy,
 *        updates, close deletes, accept marks, the fd-table walk, the two
 *        clock reads; no ring-buffer record
 *   (5 would add the ring-buffer record: that is the old program itself,
 *    measured as built from git)
 *
 * V2: the design of issue 16 (one tp_btf/sys_exit, the syscall number
 * first, arguments from pt_regs with direct loads, no pending map), cut at
 * STAGE:
 *   1  switch on the syscall number, then the filter
 *   2  + user memory: the first min(ret, 128) bytes of reads, the first 16
 *        of writes (through the iovec / msghdr); no state
 *   3  + connection state: lookups, in-place updates, close lookups; no
 *        clock, no record
 *   4  + the two clock reads
 *   5  + the ring-buffer record, without comm and cgroup id
 *   6  + bpf_get_current_comm and the cgroup id
 *   (the real program adds to 6: a close looks at a bitmap of fd numbers
 *    that ever had state before the filter and the hash lookup, and a
 *    write's buffer is read only when its connection waits for a response)
 * and, with V2, piece knobs:
 *   CLOSE_BITS   the real program's close bitmap, on any stage
 *   TASK_TGID    the tgid from bpf_get_current_task_btf()->tgid instead of
 *                bpf_get_current_pid_tgid()
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef STAGE
#define STAGE 99
#endif

#define REQ_LEN 128
#define RESP_LEN 16
#define IDLE_SERVER 1
#define IN_REQUEST 2

#define CORAL_S_IFMT 00170000
#define CORAL_S_IFSOCK 0140000

#define BUF_PLAIN 0
#define BUF_IOVEC 1
#define BUF_MSGHDR 2
#define PENDING_ACCEPT 3

#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_accept4 288

struct var_key {
	__u32 tgid;
	__u32 fd;
};

struct var_conn {
	__u64 start_ns;
	__u32 phase;
	__u32 len;
	char req[REQ_LEN];
};

struct var_event {
	__u64 start_ns;
	__u64 end_ns;
	__u64 cgroup_id;
	__u32 tgid;
	__u32 flags;
	__u32 req_len;
	__u32 pad;
	char comm[16];
	char req[REQ_LEN];
	char resp[RESP_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct var_key);
	__type(value, struct var_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct var_conn);
} scratch SEC(".maps");

/* Where results go that a stage computes but does not use (kept alive). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink SEC(".maps");

static __always_inline void keep(__u64 v)
{
	__u32 k = 0;
	__u64 *s = bpf_map_lookup_elem(&sink, &k);

	if (s)
		*s += v;
}

static __always_inline int is_method(const char *p)
{
	switch (p[0]) {
	case 'G':
		return p[1] == 'E' && p[2] == 'T' && p[3] == ' ';
	case 'P':
		return (p[1] == 'O' && p[2] == 'S' && p[3] == 'T' && p[4] == ' ') ||
		       (p[1] == 'U' && p[2] == 'T' && p[3] == ' ');
	case 'H':
		return p[1] == 'E' && p[2] == 'A' && p[3] == 'D' && p[4] == ' ';
	case 'D':
		return p[1] == 'E' && p[2] == 'L' && p[3] == 'E' && p[4] == 'T' && p[5] == 'E' &&
		       p[6] == ' ';
	}
	return 0;
}

static __always_inline int is_response(const char *p)
{
	return p[0] == 'H' && p[1] == 'T' && p[2] == 'T' && p[3] == 'P' && p[4] == '/' &&
	       p[5] == '1' && p[6] == '.';
}

static __always_inline int fd_is_socket(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file;
	umode_t mode;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	return (mode & CORAL_S_IFMT) == CORAL_S_IFSOCK;
}

#ifdef EMPTY_EXIT

SEC("tp_btf/sys_exit")
int BPF_PROG(var_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

#elif !defined(V2)

/* ------------------------------------------------------------------ V1 */

struct pending_read {
	__u64 buf;
	__u32 fd;
	__u32 how;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending_read);
} reads SEC(".maps");

static __always_inline __u64 first_buffer(__u64 buf, __u32 how)
{
	struct iovec iov;

	if (how == BUF_MSGHDR) {
		struct user_msghdr msg;

		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)buf))
			return 0;
		buf = (__u64)msg.msg_iov;
		how = BUF_IOVEC;
	}
	if (how == BUF_IOVEC) {
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)buf))
			return 0;
		return (__u64)iov.iov_base;
	}
	return buf;
}

static __always_inline int copy_prefix(char *dst, __u64 src, __u64 len)
{
	__u32 n = len > REQ_LEN ? REQ_LEN : len;

	__builtin_memset(dst, 0, REQ_LEN);
	if (n < 8)
		return -1;
	return bpf_probe_read_user(dst, n & (REQ_LEN * 2 - 1), (void *)src);
}

static __always_inline void mark(__u32 fd, __u32 phase)
{
	struct var_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	__u32 zero = 0;
	struct var_conn *c = bpf_map_lookup_elem(&scratch, &zero);

	if (!c)
		return;
	c->start_ns = 0;
	c->phase = phase;
	bpf_map_update_elem(&conns, &key, c, BPF_ANY);
}

static __always_inline int save_read(__u32 fd, __u64 buf, __u32 how)
{
#if STAGE >= 2
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_read r = { .buf = buf, .fd = fd, .how = how };

	bpf_map_update_elem(&reads, &id, &r, BPF_ANY);
#endif
	return 0;
}

static __always_inline int finish_read(long ret)
{
#if STAGE >= 2
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_read *r = bpf_map_lookup_elem(&reads, &id);
	struct var_key key;
	char head[RESP_LEN];
	__u64 src;

	if (!r)
		return 0;
	key.tgid = id >> 32;
	key.fd = r->fd;
	if (r->how == PENDING_ACCEPT) {
		bpf_map_delete_elem(&reads, &id);
#if STAGE >= 4
		if (ret >= 0)
			mark(ret, IDLE_SERVER);
#endif
		return 0;
	}
#if STAGE >= 3
	src = first_buffer(r->buf, r->how);
#endif
	bpf_map_delete_elem(&reads, &id);
#if STAGE >= 3
	if (ret < 8 || !src || bpf_probe_read_user(head, sizeof(head), (void *)src))
		return 0;
#if STAGE >= 4
	{
		struct var_conn *c = bpf_map_lookup_elem(&conns, &key);
		__u32 zero = 0;

		if (c && c->phase == IN_REQUEST)
			return 0;
		if (!is_method(head))
			return 0;
		if (!c && !fd_is_socket(key.fd))
			return 0;
		if (!c) {
			c = bpf_map_lookup_elem(&scratch, &zero);
			if (!c || copy_prefix(c->req, src, ret))
				return 0;
			c->start_ns = bpf_ktime_get_ns();
			c->phase = IN_REQUEST;
			bpf_map_update_elem(&conns, &key, c, BPF_ANY);
		} else {
			if (copy_prefix(c->req, src, ret))
				return 0;
			c->start_ns = bpf_ktime_get_ns();
			c->phase = IN_REQUEST;
		}
	}
#else
	keep(is_method(head));
#endif
#endif
#endif
	return 0;
}

static __always_inline int on_write(__u32 fd, __u64 buf, __u32 how, __u64 len)
{
#if STAGE >= 3
	__u64 id = bpf_get_current_pid_tgid();
	struct var_key key = { .tgid = id >> 32, .fd = fd };
	char head[RESP_LEN];
	__u64 src;
#if STAGE >= 4
	struct var_conn *c = bpf_map_lookup_elem(&conns, &key);

	if (!c || c->phase != IN_REQUEST)
		return 0;
#endif
	src = first_buffer(buf, how);
	if (!src || bpf_probe_read_user(head, sizeof(head), (void *)src))
		return 0;
#if STAGE >= 4
	if (is_response(head)) {
		keep(bpf_ktime_get_ns() - c->start_ns);
		c->phase = IDLE_SERVER;
	}
#else
	keep(is_response(head));
#endif
#endif
	return 0;
}

SEC("raw_tp/sys_enter")
int var_enter(__u64 *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	struct var_key key;

	if (!coral_target_matches(tgid))
		return 0;
	switch (ctx[1]) {
	case NR_read:
	case NR_recvfrom:
		return save_read(PT_REGS_PARM1_CORE(regs), PT_REGS_PARM2_CORE(regs), BUF_PLAIN);
	case NR_readv:
		return save_read(PT_REGS_PARM1_CORE(regs), PT_REGS_PARM2_CORE(regs), BUF_IOVEC);
	case NR_recvmsg:
		return save_read(PT_REGS_PARM1_CORE(regs), PT_REGS_PARM2_CORE(regs), BUF_MSGHDR);
	case NR_write:
	case NR_sendto:
		return on_write(PT_REGS_PARM1_CORE(regs), PT_REGS_PARM2_CORE(regs), BUF_PLAIN,
				PT_REGS_PARM3_CORE(regs));
	case NR_writev:
		return on_write(PT_REGS_PARM1_CORE(regs), PT_REGS_PARM2_CORE(regs), BUF_IOVEC, 0);
	case NR_sendmsg:
		return on_write(PT_REGS_PARM1_CORE(regs), PT_REGS_PARM2_CORE(regs), BUF_MSGHDR, 0);
	case NR_accept:
	case NR_accept4:
		return save_read(0, 0, PENDING_ACCEPT);
	case NR_close:
#if STAGE >= 4
		key.tgid = tgid;
		key.fd = PT_REGS_PARM1_CORE(regs);
		bpf_map_delete_elem(&conns, &key);
#endif
		return 0;
	}
	return 0;
}

SEC("raw_tp/sys_exit")
int var_exit(__u64 *ctx)
{
	if (!coral_pid_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return finish_read((long)ctx[1]);
}

#else

/* ------------------------------------------------------------------ V2 */

static __always_inline __u64 first_buffer(__u64 buf, int how)
{
	if (how == BUF_MSGHDR) {
		struct user_msghdr *msg = (void *)buf;

		if (bpf_probe_read_user(&buf, sizeof(buf), &msg->msg_iov))
			return 0;
		how = BUF_IOVEC;
	}
	if (how == BUF_IOVEC) {
		struct iovec *iov = (void *)buf;

		if (bpf_probe_read_user(&buf, sizeof(buf), &iov->iov_base))
			return 0;
	}
	return buf;
}

static __always_inline __u32 copy_prefix(char *dst, __u64 src, long len)
{
	__u32 n = len > REQ_LEN ? REQ_LEN : len;

	if (len < 8 || !src || n > REQ_LEN)
		return 0;
	return bpf_probe_read_user(dst, n, (void *)src) ? 0 : n;
}

static __always_inline __u64 now(void)
{
#if STAGE >= 4
	return bpf_ktime_get_ns();
#else
	return 1;
#endif
}

static __always_inline void emit(struct var_conn *c, __u32 tgid, const char *resp)
{
#if STAGE >= 5
	struct var_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return;
	e->start_ns = c->start_ns;
	e->end_ns = now();
	e->tgid = tgid;
	e->flags = 0;
	e->req_len = c->len;
	e->pad = 0;
#if STAGE >= 6
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
#else
	e->cgroup_id = 0;
	__builtin_memset(e->comm, 0, sizeof(e->comm));
#endif
	__builtin_memcpy(e->req, c->req, REQ_LEN);
	__builtin_memcpy(e->resp, resp, RESP_LEN);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
#else
	keep(now() - c->start_ns);
#endif
}

#ifdef CLOSE_BITS
/* One bit per fd number that ever had HTTP state (any process). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} fd_bits SEC(".maps");

static __always_inline void fd_bit_set(__u32 fd)
{
	__u32 k = fd / 64;
	__u64 *w = bpf_map_lookup_elem(&fd_bits, &k);

	if (w && !(*w & (1ULL << (fd % 64))))
		__sync_fetch_and_or(w, 1ULL << (fd % 64));
}

static __always_inline int fd_bit(__u32 fd)
{
	__u32 k = fd / 64;
	__u64 *w = bpf_map_lookup_elem(&fd_bits, &k);

	return !w || (*w & (1ULL << (fd % 64)));
}
#endif

static __always_inline __u32 current_tgid(void)
{
#ifdef TASK_TGID
	return bpf_get_current_task_btf()->tgid;
#else
	return bpf_get_current_pid_tgid() >> 32;
#endif
}

static __always_inline void on_read(struct var_key *key, __u64 src, long len, int fd)
{
	struct var_conn v;
	struct var_conn *c;
	__u32 n = copy_prefix(v.req, src, len);

	if (!n)
		return;
#if STAGE >= 3
	if (!is_method(v.req))
		return;
	c = bpf_map_lookup_elem(&conns, key);
	if (c && c->phase == IN_REQUEST)
		return;
	if (!c && fd >= 0 && !fd_is_socket(fd))
		return;
	if (c) {
		__builtin_memcpy(c->req, v.req, REQ_LEN);
		c->len = n;
		c->phase = IN_REQUEST;
		c->start_ns = now();
		return;
	}
	v.len = n;
	v.phase = IN_REQUEST;
	v.start_ns = now();
	bpf_map_update_elem(&conns, key, &v, BPF_ANY);
#ifdef CLOSE_BITS
	fd_bit_set(key->fd);
#endif
#else
	keep(is_method(v.req));
#endif
}

static __always_inline void on_write(struct var_key *key, __u64 src, long len)
{
	char head[RESP_LEN];
#if STAGE >= 3
	struct var_conn *c = bpf_map_lookup_elem(&conns, key);

	if (!c || c->phase != IN_REQUEST)
		return;
#endif
	if (len < 8 || !src || bpf_probe_read_user(head, sizeof(head), (void *)src))
		return;
#if STAGE >= 3
	if (is_response(head)) {
		emit(c, key->tgid, head);
		c->phase = IDLE_SERVER;
	}
#else
	keep(is_response(head));
#endif
}

SEC("tp_btf/sys_exit")
int BPF_PROG(var_exit, struct pt_regs *regs, long ret)
{
	struct var_key key;
	long nr = regs->orig_ax;
	__u64 buf;
	int how = BUF_PLAIN, proven = 1, write = 0;

	switch (nr) {
	case NR_read:
		proven = 0;
		break;
	case NR_recvfrom:
		break;
	case NR_readv:
		proven = 0;
		how = BUF_IOVEC;
		break;
	case NR_recvmsg:
		how = BUF_MSGHDR;
		break;
	case NR_write:
		proven = 0;
		write = 1;
		break;
	case NR_sendto:
		write = 1;
		break;
	case NR_writev:
		proven = 0;
		how = BUF_IOVEC;
		write = 1;
		break;
	case NR_sendmsg:
		how = BUF_MSGHDR;
		write = 1;
		break;
	case NR_close:
		if (ret)
			return 0;
#ifdef CLOSE_BITS
		if (!fd_bit(regs->di))
			return 0;
#endif
		key.tgid = current_tgid();
		if (!coral_target_matches(key.tgid))
			return 0;
#if STAGE >= 3
		key.fd = regs->di;
		if (bpf_map_lookup_elem(&conns, &key))
			bpf_map_delete_elem(&conns, &key);
#endif
		return 0;
	default:
		return 0;
	}
	if (ret < 8)
		return 0;
	key.tgid = current_tgid();
	if (!coral_target_matches(key.tgid))
		return 0;
#if STAGE >= 2
	key.fd = regs->di;
	buf = first_buffer(regs->si, how);
	if (write)
		on_write(&key, buf, ret);
	else
		on_read(&key, buf, ret, proven ? -1 : (int)key.fd);
#endif
	return 0;
}

#endif
