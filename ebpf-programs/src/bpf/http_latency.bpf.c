// SPDX-License-Identifier: GPL-2.0
/*
 * http-latency: HTTP/1.x request latency from syscall tracepoints only.
 *
 * Per (tgid, fd) a small state machine follows the socket:
 *   server: read() of data starting with "<METHOD> " starts a request (time of
 *           the read's return: the first request byte read); the next write()
 *           starting with "HTTP/1." ends it (time of the write's entry: the
 *           first response byte written) and emits one event.
 *   client (client_side): write() of a request starts it, the next read() of
 *           "HTTP/1." ends it.
 * accept4 marks server sockets, connect marks client sockets; a socket not
 * seen being accepted (opened before the collector started) is recognised on
 * its first HTTP-looking read by checking that the fd is a socket. close
 * forgets the fd. Method, path and status are parsed by the agent from the raw
 * bytes copied here; the kernel only checks the prefixes.
 */
#include "common.h"
#include "http_latency.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u8 client_side = 0;

/* File type bits of i_mode (include/uapi/linux/stat.h; macros, not in BTF). */
#define CORAL_S_IFMT 00170000
#define CORAL_S_IFSOCK 0140000

/* How the buffer of a pending read is described. */
#define BUF_PLAIN 0
#define BUF_IOVEC 1
#define BUF_MSGHDR 2
/* Not a read: an accept whose returned fd is a server socket. */
#define PENDING_ACCEPT 3

/* x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
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

struct pending_read {
	__u64 buf;
	__u32 fd;
	__u32 how;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct pending_read);
} reads SEC(".maps");

/*
 * LRU: a process that dies without close() must not leak entries forever.
 * LRU maps are preallocated: 65536 entries (14 MiB) made a start's p99 107 to
 * 123 ms against 50 to 55 ms with 16384 (bench/footprint.sh).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct coral_http_conn_key);
	__type(value, struct coral_http_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* Scratch space: conn values are too big for the 512-byte BPF stack budget. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct coral_http_conn);
} scratch SEC(".maps");

/* [0]: events lost to a full ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline int is_method(const char *p)
{
	/* The methods of RFC 9110 plus PATCH, each followed by a space. */
	switch (p[0]) {
	case 'G':
		return p[1] == 'E' && p[2] == 'T' && p[3] == ' ';
	case 'P':
		return (p[1] == 'O' && p[2] == 'S' && p[3] == 'T' && p[4] == ' ') ||
		       (p[1] == 'U' && p[2] == 'T' && p[3] == ' ') ||
		       (p[1] == 'A' && p[2] == 'T' && p[3] == 'C' && p[4] == 'H' && p[5] == ' ');
	case 'H':
		return p[1] == 'E' && p[2] == 'A' && p[3] == 'D' && p[4] == ' ';
	case 'D':
		return p[1] == 'E' && p[2] == 'L' && p[3] == 'E' && p[4] == 'T' && p[5] == 'E' &&
		       p[6] == ' ';
	case 'O':
		return p[1] == 'P' && p[2] == 'T' && p[3] == 'I' && p[4] == 'O' && p[5] == 'N' &&
		       p[6] == 'S' && p[7] == ' ';
	case 'C':
		return p[1] == 'O' && p[2] == 'N' && p[3] == 'N' && p[4] == 'E' && p[5] == 'C' &&
		       p[6] == 'T' && p[7] == ' ';
	case 'T':
		return p[1] == 'R' && p[2] == 'A' && p[3] == 'C' && p[4] == 'E' && p[5] == ' ';
	}
	return 0;
}

static __always_inline int is_response(const char *p)
{
	return p[0] == 'H' && p[1] == 'T' && p[2] == 'T' && p[3] == 'P' && p[4] == '/' &&
	       p[5] == '1' && p[6] == '.';
}

/* True when fd of the current task is a socket (walks the fd table). */
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

/* The user address of the first data byte of a read/write buffer. */
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

/* Copies up to CORAL_HTTP_REQ_LEN bytes (at most len) into dst, zero-filled. */
static __always_inline int copy_prefix(char *dst, __u64 src, __u64 len)
{
	__u32 n = len > CORAL_HTTP_REQ_LEN ? CORAL_HTTP_REQ_LEN : len;

	__builtin_memset(dst, 0, CORAL_HTTP_REQ_LEN);
	if (n < 8)
		return -1;
	return bpf_probe_read_user(dst, n & (CORAL_HTTP_REQ_LEN * 2 - 1), (void *)src);
}

static __always_inline void emit(struct coral_http_conn *c, __u32 tgid, __u64 now,
				 const char *resp, __u32 client)
{
	struct coral_http_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		__u32 k = 0;
		__u64 *d = bpf_map_lookup_elem(&drops, &k);

		if (d)
			(*d)++;
		return;
	}
	e->start_ns = c->start_ns;
	e->end_ns = now;
	e->tgid = tgid;
	e->client = client;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__builtin_memcpy(e->req, c->req, CORAL_HTTP_REQ_LEN);
	__builtin_memcpy(e->resp, resp, CORAL_HTTP_RESP_LEN);
	/* The agent drains on a timer: waking it per event would cost an irq_work. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/*
 * A new request on (tgid, fd): data at src (len bytes) starts with a method.
 * `c` is the connection's existing state (updated in place: keep-alive
 * requests cost no map update) or NULL.
 */
static __always_inline void start_request(struct coral_http_conn_key *key,
					  struct coral_http_conn *c, __u64 src, __u64 len,
					  __u32 phase)
{
	__u32 zero = 0;
	int fresh = !c;

	if (fresh)
		c = bpf_map_lookup_elem(&scratch, &zero);
	if (!c || copy_prefix(c->req, src, len))
		return;
	c->start_ns = bpf_ktime_get_ns();
	c->phase = phase;
	if (fresh)
		bpf_map_update_elem(&conns, key, c, BPF_ANY);
}

static __always_inline int save_read(__u32 fd, __u64 buf, __u32 how)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_read r = { .buf = buf, .fd = fd, .how = how };

	bpf_map_update_elem(&reads, &id, &r, BPF_ANY);
	return 0;
}

static __always_inline void mark(__u32 fd, __u32 phase);

static __always_inline int finish_read(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_read *r = bpf_map_lookup_elem(&reads, &id);
	struct coral_http_conn_key key;
	struct coral_http_conn *c;
	char head[CORAL_HTTP_RESP_LEN];
	__u64 src;

	if (!r)
		return 0;
	key.tgid = id >> 32;
	key.fd = r->fd;
	if (r->how == PENDING_ACCEPT) {
		bpf_map_delete_elem(&reads, &id);
		if (ret >= 0)
			mark(ret, CORAL_HTTP_IDLE_SERVER);
		return 0;
	}
	src = first_buffer(r->buf, r->how);
	bpf_map_delete_elem(&reads, &id);
	if (ret < 8 || !src || bpf_probe_read_user(head, sizeof(head), (void *)src))
		return 0;

	c = bpf_map_lookup_elem(&conns, &key);
	if (c && c->phase == CORAL_HTTP_CLIENT_SENT) {
		if (is_response(head)) {
			emit(c, key.tgid, bpf_ktime_get_ns(), head, 1);
			c->phase = CORAL_HTTP_IDLE_CLIENT;
		}
		return 0;
	}
	if (c && c->phase == CORAL_HTTP_IN_REQUEST)
		return 0; /* the rest of a request (body), or pipelining: not tracked */
	if (!is_method(head))
		return 0;
	if (!c && !fd_is_socket(key.fd))
		return 0;
	start_request(&key, c, src, ret, CORAL_HTTP_IN_REQUEST);
	return 0;
}

static __always_inline int on_write(__u32 fd, __u64 buf, __u32 how, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct coral_http_conn_key key = { .tgid = id >> 32, .fd = fd };
	struct coral_http_conn *c;
	char head[CORAL_HTTP_RESP_LEN];
	__u64 src;

	c = bpf_map_lookup_elem(&conns, &key);
	if (!c && !client_side)
		return 0;
	if (c && c->phase != CORAL_HTTP_IN_REQUEST && !client_side)
		return 0;
	src = first_buffer(buf, how);
	if (!src || bpf_probe_read_user(head, sizeof(head), (void *)src))
		return 0;
	if (c && c->phase == CORAL_HTTP_IN_REQUEST) {
		if (is_response(head)) {
			emit(c, key.tgid, bpf_ktime_get_ns(), head, 0);
			c->phase = CORAL_HTTP_IDLE_SERVER;
		}
		return 0;
	}
	/* client_side from here on: a request written on an idle socket. */
	if (c && c->phase == CORAL_HTTP_CLIENT_SENT)
		return 0;
	if (!is_method(head) || (!c && !fd_is_socket(fd)))
		return 0;
	/* writev/sendmsg: the length of the first buffer is not known here. */
	start_request(&key, c, src, how == BUF_PLAIN ? len : CORAL_HTTP_REQ_LEN,
		      CORAL_HTTP_CLIENT_SENT);
	return 0;
}

static __always_inline void mark(__u32 fd, __u32 phase)
{
	struct coral_http_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	__u32 zero = 0;
	struct coral_http_conn *c = bpf_map_lookup_elem(&scratch, &zero);

	if (!c)
		return;
	c->start_ns = 0;
	c->phase = phase;
	bpf_map_update_elem(&conns, &key, c, BPF_ANY);
}

/*
 * Two raw tracepoints dispatching on the syscall number rather than one
 * `syscalls:sys_{enter,exit}_*` tracepoint per syscall: enabling any of those
 * sends every syscall of every process through the perf tracepoint path, which
 * measured ~19% of nginx's throughput before any work of ours (see
 * docs/benchmarks.md); raw tracepoints cost a fraction of that and need no
 * tracefs. The filter comes first, so processes not watched pay only it.
 */
SEC("raw_tp/sys_enter")
int coral_http_enter(__u64 *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	struct coral_http_conn_key key;

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
	case NR_connect:
		if (client_side)
			mark(PT_REGS_PARM1_CORE(regs), CORAL_HTTP_IDLE_CLIENT);
		return 0;
	case NR_close:
		key.tgid = tgid;
		key.fd = PT_REGS_PARM1_CORE(regs);
		bpf_map_delete_elem(&conns, &key);
		return 0;
	}
	return 0;
}

SEC("raw_tp/sys_exit")
int coral_http_exit(__u64 *ctx)
{
	/* Only reads and accepts of watched threads left a pending entry. */
	if (!coral_pid_matches(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return finish_read((long)ctx[1]);
}
