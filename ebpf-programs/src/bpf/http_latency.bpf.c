// SPDX-License-Identifier: GPL-2.0
/*
 * http-latency: HTTP/1.x request latency, from the socket syscalls for
 * plaintext and from uprobes on OpenSSL for TLS.
 *
 * Per connection a small state machine follows the traffic:
 *   server: a read of data starting with "<METHOD> " starts a request (time
 *           of the read's return: the first request bytes in the process);
 *           the next write starting with "HTTP/1." ends it and emits one
 *           event (time of the write's return for sockets, of SSL_write's
 *           entry for TLS: the first response bytes leaving the process).
 *   client (client_side): a write of a request starts it, the next read of
 *           "HTTP/1." ends it.
 * Method, path and status are parsed by the agent from the raw bytes copied
 * here; the kernel only checks the prefixes.
 *
 * Plaintext: ONE program, tp_btf/sys_exit, and nothing on sys_enter. Every
 * syscall of every process pays the programs attached to these hooks (see
 * docs/benchmarks.md, "http-latency overhead": an empty raw_tp pair is the
 * floor, one tp_btf program about half of it), so the work is arranged to be
 * done once, at exit, where the arguments are still in pt_regs (read with
 * direct BTF loads, no helper) next to the result:
 *   1. the syscall number comes first: anything but the read/write families
 *      and close returns after one load and a compare, before any helper;
 *   2. then the filter; then one bounded copy of the first bytes read or
 *      written (at most 128, the only user-memory read on the hot path);
 *   3. only bytes that look like HTTP cost a map lookup, keyed by (tgid, fd);
 *      keep-alive requests update their state in place; a close costs one
 *      only when the fd number ever had state (fd_bits);
 *   4. one ring-buffer record per request, written without a wake-up.
 * recvfrom/recvmsg/sendto/sendmsg only succeed on sockets; for read, readv,
 * write and writev on an fd with no state the fd table says whether it is a
 * socket (once per connection, for the first request only).
 *
 * TLS: uprobes on SSL_read/SSL_read_ex (entry: remember the buffer per
 * thread; return: look at what was decrypted), SSL_write/SSL_write_ex
 * (entry: the plaintext about to be encrypted) and SSL_free (forget the
 * connection), attached by the agent per process on the libssl that process
 * maps. State is keyed by (tgid, SSL *). The socket path sees that traffic
 * too, as ciphertext, which never looks like HTTP.
 *
 * New processes of a cgroup or comm filter are announced to the agent (exec,
 * fork) so it can attach their uprobes.
 */
#include "common.h"
#include "http_latency.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u8 client_side = 0;

/* File type bits of i_mode (include/uapi/linux/stat.h; macros, not in BTF). */
#define CORAL_S_IFMT 00170000
#define CORAL_S_IFSOCK 0140000

/* How the buffer of a read or write is described. */
#define BUF_PLAIN 0
#define BUF_IOVEC 1
#define BUF_MSGHDR 2

/* x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47

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

/*
 * One bit per fd number that ever had connection state, in any process: a
 * close of an fd whose bit is clear (a file, for a server that opens one per
 * request) returns after one inlined array lookup, before the filter and the
 * hash lookup. Bits are never cleared (another process may still hold state
 * under the same number), so a set bit only means "look".
 */
#define FD_BITS_WORDS 1024
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FD_BITS_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} fd_bits SEC(".maps");

/* TLS connections; the agent sizes it to 1 entry when TLS is off. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct coral_http_tls_key);
	__type(value, struct coral_http_conn);
} tls_conns SEC(".maps");

/* An SSL_read/SSL_read_ex in progress, per thread. */
struct ssl_read {
	__u64 ssl;
	__u64 buf;
	/* SSL_read_ex's size_t *readbytes; 0 for SSL_read. */
	__u64 readbytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct ssl_read);
} ssl_reads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* New processes to look at for TLS (cgroup and comm filters only). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} procs SEC(".maps");

/* [0]: events lost to a full ring buffer; [1]: process announcements lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 k)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &k);

	if (d)
		(*d)++;
}

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

static __always_inline void fd_bit_set(__u32 fd)
{
	__u32 k = fd / 64;
	__u64 *w = bpf_map_lookup_elem(&fd_bits, &k);

	if (w && !(*w & (1ULL << (fd % 64))))
		__sync_fetch_and_or(w, 1ULL << (fd % 64));
}

/* False only when no process ever had state under this fd number. */
static __always_inline int fd_bit(__u32 fd)
{
	__u32 k = fd / 64;
	__u64 *w = bpf_map_lookup_elem(&fd_bits, &k);

	return !w || (*w & (1ULL << (fd % 64)));
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

/* Copies the first min(len, CORAL_HTTP_REQ_LEN) bytes at src; that count, or 0. */
static __always_inline __u32 copy_prefix(char *dst, __u64 src, long len)
{
	__u32 n = len > CORAL_HTTP_REQ_LEN ? CORAL_HTTP_REQ_LEN : len;

	if (len < 8 || !src || n > CORAL_HTTP_REQ_LEN)
		return 0;
	return bpf_probe_read_user(dst, n, (void *)src) ? 0 : n;
}

static __always_inline void emit(struct coral_http_conn *c, __u32 tgid, const char *resp,
				 __u32 flags)
{
	struct coral_http_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(0);
		return;
	}
	e->start_ns = c->start_ns;
	e->end_ns = bpf_ktime_get_ns();
	e->cgroup_id = c->cgroup_id;
	e->tgid = tgid;
	e->flags = flags;
	e->req_len = c->len;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__builtin_memcpy(e->req, c->req, CORAL_HTTP_REQ_LEN);
	__builtin_memcpy(e->resp, resp, CORAL_HTTP_RESP_LEN);
	/* The agent drains on a timer: waking it per event would cost an irq_work. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/*
 * A request starts on the connection `key` of `map`: `v` holds its first
 * `n` bytes. `c` is the connection's state (updated in place: keep-alive
 * requests cost no map update) or NULL.
 */
static __always_inline void start(void *map, void *key, struct coral_http_conn *c,
				  struct coral_http_conn *v, __u32 n, __u32 phase)
{
	if (c) {
		__builtin_memcpy(c->req, v->req, CORAL_HTTP_REQ_LEN);
		c->len = n;
		c->phase = phase;
		c->start_ns = bpf_ktime_get_ns();
		return;
	}
	v->len = n;
	v->phase = phase;
	v->start_ns = bpf_ktime_get_ns();
	v->cgroup_id = bpf_get_current_cgroup_id();
	bpf_map_update_elem(map, key, v, BPF_ANY);
	if (map == (void *)&conns)
		fd_bit_set(((struct coral_http_conn_key *)key)->fd);
}

/*
 * `len` bytes were read at `src` on connection `key` of `map`. `fd` is the
 * socket's fd when the syscall does not prove it is a socket, else -1.
 */
static __always_inline void on_read(void *map, void *key, __u32 tgid, __u64 src, long len,
				    __u32 flags, int fd)
{
	struct coral_http_conn v;
	struct coral_http_conn *c;
	__u32 n = copy_prefix(v.req, src, len);

	if (!n)
		return;
	if (is_method(v.req)) {
		c = bpf_map_lookup_elem(map, key);
		/* The rest of a request (body), or pipelining: not tracked. */
		if (c && (c->phase == CORAL_HTTP_IN_REQUEST || c->phase == CORAL_HTTP_CLIENT_SENT))
			return;
		if (!c && fd >= 0 && !fd_is_socket(fd))
			return;
		start(map, key, c, &v, n, CORAL_HTTP_IN_REQUEST);
		return;
	}
	if (client_side && is_response(v.req)) {
		c = bpf_map_lookup_elem(map, key);
		if (c && c->phase == CORAL_HTTP_CLIENT_SENT) {
			emit(c, tgid, v.req, flags | CORAL_HTTP_F_CLIENT);
			c->phase = CORAL_HTTP_IDLE_CLIENT;
		}
	}
}

/*
 * `len` bytes are (sockets: were) written from `buf` (described as `how`)
 * on connection `key`. The buffer is only looked at when the connection's
 * state asks for it.
 */
static __always_inline void on_write(void *map, void *key, __u32 tgid, __u64 buf, int how,
				     long len, __u32 flags, int fd)
{
	struct coral_http_conn *c = bpf_map_lookup_elem(map, key);
	struct coral_http_conn v;
	__u64 src;
	__u32 n;

	if (c && c->phase == CORAL_HTTP_IN_REQUEST) {
		char head[CORAL_HTTP_RESP_LEN];

		src = first_buffer(buf, how);
		if (len < 8 || !src || bpf_probe_read_user(head, sizeof(head), (void *)src))
			return;
		if (is_response(head)) {
			emit(c, tgid, head, flags);
			c->phase = CORAL_HTTP_IDLE_SERVER;
		}
		return;
	}
	/* client_side from here on: a request written on an idle connection. */
	if (!client_side || (c && c->phase == CORAL_HTTP_CLIENT_SENT))
		return;
	n = copy_prefix(v.req, first_buffer(buf, how), len);
	if (!n || !is_method(v.req))
		return;
	if (!c && fd >= 0 && !fd_is_socket(fd))
		return;
	start(map, key, c, &v, n, CORAL_HTTP_CLIENT_SENT);
}

/*
 * The only syscall hook. tp_btf rather than raw_tp: the pt_regs argument is
 * a BTF pointer, so the syscall number and arguments are direct loads
 * instead of one bpf_probe_read_kernel each.
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(coral_http_exit, struct pt_regs *regs, long ret)
{
	struct coral_http_conn_key key;
	long nr = regs->orig_ax;
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
		if (ret || !fd_bit(regs->di))
			return 0;
		key.tgid = bpf_get_current_pid_tgid() >> 32;
		if (!coral_target_matches(key.tgid))
			return 0;
		key.fd = regs->di;
		/* A lookup is lock-free; a delete of a missing key takes a bucket lock. */
		if (bpf_map_lookup_elem(&conns, &key))
			bpf_map_delete_elem(&conns, &key);
		return 0;
	default:
		return 0;
	}
	if (ret < 8)
		return 0;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	if (!coral_target_matches(key.tgid))
		return 0;
	key.fd = regs->di;
	if (write)
		on_write(&conns, &key, key.tgid, regs->si, how, ret, 0, proven ? -1 : (int)key.fd);
	else
		on_read(&conns, &key, key.tgid, first_buffer(regs->si, how), ret, 0,
			proven ? -1 : (int)key.fd);
	return 0;
}

/* ---------------------------------------------------------------- TLS */

static __always_inline int ssl_read_enter(void *ssl, void *buf, void *readbytes)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_read r = {
		.ssl = (__u64)ssl,
		.buf = (__u64)buf,
		.readbytes = (__u64)readbytes,
	};

	if (!coral_target_matches(id >> 32))
		return 0;
	bpf_map_update_elem(&ssl_reads, &id, &r, BPF_ANY);
	return 0;
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(coral_ssl_read, void *ssl, void *buf)
{
	return ssl_read_enter(ssl, buf, 0);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int BPF_KPROBE(coral_ssl_read_ex, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return ssl_read_enter(ssl, buf, readbytes);
}

/* Returns of both: SSL_read's byte count, SSL_read_ex's 1 (then *readbytes). */
SEC("uretprobe")
int BPF_KRETPROBE(coral_ssl_read_ret, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct coral_http_tls_key key = { .tgid = id >> 32 };
	struct ssl_read *p = bpf_map_lookup_elem(&ssl_reads, &id);
	struct ssl_read r;
	__u64 len = 0;

	if (!p)
		return 0;
	r = *p;
	bpf_map_delete_elem(&ssl_reads, &id);
	if (r.readbytes) {
		if (ret != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)r.readbytes))
			return 0;
	} else {
		if ((int)ret <= 0)
			return 0;
		len = (int)ret;
	}
	key.ssl = r.ssl;
	on_read(&tls_conns, &key, key.tgid, r.buf, len, CORAL_HTTP_F_TLS, -1);
	return 0;
}

static __always_inline int ssl_write(void *ssl, void *buf, long len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct coral_http_tls_key key = { .tgid = id >> 32, .ssl = (__u64)ssl };

	if (len <= 0 || !coral_target_matches(key.tgid))
		return 0;
	on_write(&tls_conns, &key, key.tgid, (__u64)buf, BUF_PLAIN, len, CORAL_HTTP_F_TLS, -1);
	return 0;
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(coral_ssl_write, void *ssl, void *buf, int num)
{
	return ssl_write(ssl, buf, num);
}

/* int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int BPF_KPROBE(coral_ssl_write_ex, void *ssl, void *buf, __u64 num)
{
	return ssl_write(ssl, buf, (long)num);
}

/* void SSL_free(SSL *ssl): the address may be reused by the next connection. */
SEC("uprobe")
int BPF_KPROBE(coral_ssl_free, void *ssl)
{
	struct coral_http_tls_key key = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.ssl = (__u64)ssl,
	};

	if (bpf_map_lookup_elem(&tls_conns, &key))
		bpf_map_delete_elem(&tls_conns, &key);
	return 0;
}

/* ------------------------------------------- new processes (TLS, cgroup/comm) */

static __always_inline void announce(__u32 tgid)
{
	struct coral_http_proc_event e = { .tgid = tgid };

	if (bpf_ringbuf_output(&procs, &e, sizeof(e), BPF_RB_NO_WAKEUP))
		count_drop(1);
}

/* current is the process, with its new comm (and its cgroup). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(coral_http_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);

	if (coral_target_matches(tgid))
		announce(tgid);
	return 0;
}

/*
 * current is the parent; the child has its comm and cgroup. Processes that
 * fork without exec (nginx's workers) map the parent's libssl already.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(coral_http_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 tgid = BPF_CORE_READ(child, tgid);

	if (BPF_CORE_READ(child, pid) != tgid)
		return 0; /* a thread */
	if (coral_target_matches(tgid))
		announce(tgid);
	return 0;
}
