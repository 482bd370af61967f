// SPDX-License-Identifier: GPL-2.0
/*
 * tcp-metrics: TCP connection lifecycle, smoothed RTT, retransmits and resets,
 * from tracepoints only (no kprobes, no fentry).
 *
 * Hooks (raw tracepoints unless said otherwise):
 *   inet_sock_set_state   lifecycle: SYN_SENT (connect(), process context),
 *                         SYN_RECV (a listener's child, softirq), ESTABLISHED,
 *                         CLOSE (bytes, retransmits and error read here)
 *   tcp_destroy_sock      the connection event is sent: after an abortive
 *                         close (SO_LINGER 0) the RST leaves *after* CLOSE
 *   tcp_probe             smoothed RTT, 1 in rtt_sample_every per socket
 *   tcp_retransmit_skb    tcp_sock.total_retrans re-read (the kernel's count)
 *   tcp_send_reset / tcp_receive_reset
 *   sock_recv_length / sock_send_length
 *                         owner of an accepted socket: the first task that
 *                         reads or writes it (its handshake ran in softirq,
 *                         where `current` is whatever task happened to run);
 *                         also FIN_WAIT1 / LAST_ACK, entered in close()
 *   tracepoint syscalls:sys_exit_accept{,4}
 *                         the same, on kernels before 6.3: the task that
 *                         accept()s it
 *
 * Per-socket state lives in a hash keyed by the struct sock address, created
 * at SYN_SENT / SYN_RECV and deleted at destroy, so a socket address reused
 * later always starts from a fresh entry. Only connections opened while the
 * collector runs are tracked: the owner and start of older ones are unknown.
 *
 * Raw tracepoints rather than perf_event tracepoints: they need no tracefs and
 * the kernel does not format a trace record (tcp_probe's is ~130 bytes,
 * addresses included) for every ACK before the program runs.
 */
#include "common.h"
#include "tcp_metrics.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* Filled in by the agent before load (see agent/src/collectors/tcp_metrics.rs). */
const volatile __u16 local_ports[CORAL_TCP_MAX_PORTS] = {};
const volatile __u32 n_local_ports = 0;
const volatile __u16 remote_ports[CORAL_TCP_MAX_PORTS] = {};
const volatile __u32 n_remote_ports = 0;
/* 0: no prefix filter; else AF_INET or AF_INET6. */
const volatile __u8 prefix_family = 0;
const volatile __u8 prefix_addr[16] = {};
const volatile __u32 prefix_len = 0;
const volatile __u32 rtt_sample_every = 1;

/* max_entries set by the agent. No prealloc: memory follows live connections. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct coral_tcp_sock);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, struct coral_tcp_remote_key);
	__type(value, struct coral_tcp_remote);
} remotes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_TCP_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 slot)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &slot);

	if (d)
		__sync_fetch_and_add(d, 1);
}

/* Atomic: see coral_tcp_sock.state. */
static __always_inline void set_state(struct coral_tcp_sock *s, __u64 flags)
{
	__sync_fetch_and_or(&s->state, flags);
}

/* True when pids, cgroup or comm narrow the target: owners must be known. */
static __always_inline int process_filter_set(void)
{
	return filter_npids || filter_cgroup_id || filter_comm_set;
}

static __always_inline int port_listed(const volatile __u16 *ports, __u32 n, __u16 port)
{
	for (__u32 i = 0; i < CORAL_TCP_MAX_PORTS && i < n; i++) {
		if (ports[i] == port)
			return 1;
	}
	return 0;
}

static __always_inline int prefix_matches(__u8 family, const __u8 *addr)
{
	__u8 a[16] = {};
	__u8 fam = family;

	if (!prefix_family)
		return 1;
	__builtin_memcpy(a, addr, 16);
	/* An AF_INET6 socket talking to an IPv4 peer holds ::ffff:a.b.c.d. */
	if (fam == AF_INET6 && !a[0] && !a[1] && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] &&
	    !a[7] && !a[8] && !a[9] && a[10] == 0xff && a[11] == 0xff) {
		fam = AF_INET;
		a[0] = a[12];
		a[1] = a[13];
		a[2] = a[14];
		a[3] = a[15];
	}
	if (fam != prefix_family)
		return 0;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		__u32 bit = i * 8;
		__u8 mask;

		if (bit >= prefix_len)
			break;
		mask = prefix_len - bit >= 8 ? 0xff : (__u8)(0xff << (8 - (prefix_len - bit)));
		if ((a[i] ^ prefix_addr[i]) & mask)
			return 0;
	}
	return 1;
}

static __always_inline int tuple_matches(__u8 family, const __u8 *raddr, __u16 lport,
					 __u16 rport)
{
	if (n_local_ports && !port_listed(local_ports, n_local_ports, lport))
		return 0;
	if (n_remote_ports && !port_listed(remote_ports, n_remote_ports, rport))
		return 0;
	return prefix_matches(family, raddr);
}

/*
 * Reads the 4-tuple into the event and the aggregate key and runs the port /
 * prefix filter, once the socket has it: an active open only gets its local
 * port after SYN_SENT (inet_hash_connect), an IPv6 child its addresses after
 * SYN_RECV. Returns whether the connection passes.
 */
static __always_inline int ensure_tuple(struct sock *sk, struct coral_tcp_sock *s)
{
	struct coral_tcp_event *ev = &s->ev;
	__u16 family;

	if (s->state & CORAL_SOCK_TUPLE)
		return !!(s->state & CORAL_SOCK_TUPLE_MATCH);
	/*
	 * inet_sport, not skc_num: entering CLOSE, inet_put_port() has already
	 * zeroed skc_num when the tracepoint fires.
	 */
	ev->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (!ev->lport)
		return 0; /* not bound yet */
	ev->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		ev->family = AF_INET;
		bpf_core_read(ev->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(ev->raddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		ev->family = AF_INET6;
		bpf_core_read(ev->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(ev->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	__builtin_memcpy(s->key.addr, ev->raddr, 16);
	s->key.family = ev->family;
	if (ev->flags & CORAL_TCP_ACTIVE)
		s->key.rport = ev->rport;
	else
		s->key.lport = ev->lport;
	if (tuple_matches(ev->family, ev->raddr, ev->lport, ev->rport))
		set_state(s, CORAL_SOCK_TUPLE | CORAL_SOCK_TUPLE_MATCH);
	else
		set_state(s, CORAL_SOCK_TUPLE);
	return !!(s->state & CORAL_SOCK_TUPLE_MATCH);
}

static __always_inline int counted(const struct coral_tcp_sock *s)
{
	return (s->state & CORAL_SOCK_TARGET) && (s->state & CORAL_SOCK_TUPLE_MATCH);
}

static __always_inline struct coral_tcp_remote *remote_get(const struct coral_tcp_remote_key *key)
{
	static const struct coral_tcp_remote zero;
	struct coral_tcp_remote *r = bpf_map_lookup_elem(&remotes, key);

	if (r)
		return r;
	if (coral_insert_full(&remotes, key, &zero)) {
		count_drop(CORAL_TCP_DROP_REMOTES);
		return 0;
	}
	return bpf_map_lookup_elem(&remotes, key);
}

/*
 * Adds to the remote's aggregates what this connection has not added yet.
 * Counts made before the connection could be attributed (an accepted socket
 * before its owner shows up) are added when it is; RTT samples are not kept
 * for that.
 *
 * Softirq hooks of one socket are serialised by the socket lock, but
 * adopt() runs without it (after sock_recvmsg() / sock_sendmsg(), or at
 * accept()): it may race with softirq on another CPU, or be
 * interrupted by softirq on its own. So one updater at a time (a try-lock);
 * a loser just returns, and what it saw is added by the next sync (every
 * hook syncs, tcp_destroy_sock last). Adds are atomic because per-CPU values
 * of a remote shared by several connections can be updated from nested
 * contexts on one CPU.
 */
static __always_inline void sync_remote(struct coral_tcp_sock *s)
{
	struct coral_tcp_reported *rep = &s->reported;
	struct coral_tcp_event *ev = &s->ev;
	struct coral_tcp_remote *r;

	if (!counted(s))
		return;
	r = remote_get(&s->key);
	if (!r)
		return;
	if (__sync_val_compare_and_swap(&rep->busy, 0, 1) != 0)
		return;
	if ((ev->flags & CORAL_TCP_ESTABLISHED) && !rep->opened) {
		__sync_fetch_and_add(&r->opened, 1);
		rep->opened = 1;
	}
	if ((s->state & CORAL_SOCK_CLOSED) && rep->opened && !rep->closed) {
		__sync_fetch_and_add(&r->closed, 1);
		__sync_fetch_and_add(&r->bytes_sent, ev->bytes_sent);
		__sync_fetch_and_add(&r->bytes_received, ev->bytes_received);
		rep->closed = 1;
	}
	if (ev->retransmits > rep->retransmits) {
		__sync_fetch_and_add(&r->retransmits, ev->retransmits - rep->retransmits);
		rep->retransmits = ev->retransmits;
	}
	if (ev->resets_sent > rep->resets_sent) {
		__sync_fetch_and_add(&r->resets_sent, ev->resets_sent - rep->resets_sent);
		rep->resets_sent = ev->resets_sent;
	}
	if (ev->resets_received > rep->resets_received) {
		__sync_fetch_and_add(&r->resets_received,
				     ev->resets_received - rep->resets_received);
		rep->resets_received = ev->resets_received;
	}
	/* xchg: a full barrier, so the updates above are visible first. */
	__sync_lock_test_and_set(&rep->busy, 0);
}

static __always_inline struct coral_tcp_sock *sock_get(const void *sk)
{
	__u64 key = (__u64)sk;

	return bpf_map_lookup_elem(&socks, &key);
}

static __always_inline void sock_del(const void *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&socks, &key);
}

/* Hands a closed connection to user space. */
static __always_inline void emit(struct coral_tcp_sock *s)
{
	if (!(s->state & CORAL_SOCK_CLOSED) || !counted(s))
		return;
	/* User space drains on its own tick: no wake-up per event. */
	if (bpf_ringbuf_output(&events, &s->ev, sizeof(s->ev), BPF_RB_NO_WAKEUP))
		count_drop(CORAL_TCP_DROP_RINGBUF);
}

static __always_inline void track(struct sock *sk, struct coral_tcp_sock *s)
{
	__u64 key = (__u64)sk;

	if (bpf_map_update_elem(&socks, &key, s, BPF_ANY))
		count_drop(CORAL_TCP_DROP_SOCKS);
}

/* connect(): CLOSE -> SYN_SENT runs in the calling process. */
static __always_inline void on_connect(struct sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct coral_tcp_sock s = {};
	struct coral_tcp_sock *old;

	if (!coral_target_matches(tgid))
		return;
	/* A socket disconnected (connect(AF_UNSPEC)) and connected again. */
	old = sock_get(sk);
	if (old)
		emit(old);
	s.ev.start_ns = bpf_ktime_get_ns();
	s.ev.pid = tgid;
	s.ev.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(s.ev.comm, sizeof(s.ev.comm));
	s.ev.flags = CORAL_TCP_ACTIVE | CORAL_TCP_OWNED;
	s.state = CORAL_SOCK_TARGET;
	track(sk, &s);
}

/* A listener's child is born in softirq: its owner shows up later (adopt). */
static __always_inline void on_syn_recv(struct sock *sk)
{
	struct coral_tcp_sock s = {};

	s.ev.start_ns = bpf_ktime_get_ns();
	if (!process_filter_set())
		s.state = CORAL_SOCK_TARGET;
	track(sk, &s);
}

static __always_inline void on_established(struct sock *sk, int oldstate)
{
	struct coral_tcp_sock *s = sock_get(sk);

	if (!s)
		return;
	s->ev.flags |= CORAL_TCP_ESTABLISHED;
	if ((s->ev.flags & CORAL_TCP_ACTIVE) && oldstate == TCP_SYN_SENT)
		s->ev.connect_ns = bpf_ktime_get_ns() - s->ev.start_ns;
	if (!ensure_tuple(sk, s)) {
		sock_del(sk);
		return;
	}
	sync_remote(s);
}

/*
 * An accepted connection's owner is the task acting on it from process
 * context: it passes the filter or the connection is dropped. Returns
 * whether the entry is still there.
 */
static __always_inline int adopt(struct sock *sk, struct coral_tcp_sock *s)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!coral_target_matches(tgid)) {
		sock_del(sk);
		return 0;
	}
	s->ev.pid = tgid;
	s->ev.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(s->ev.comm, sizeof(s->ev.comm));
	s->ev.flags |= CORAL_TCP_OWNED;
	set_state(s, CORAL_SOCK_TARGET);
	/* Closed before it was adopted: the tuple is in the event already. */
	if (!(s->state & CORAL_SOCK_CLOSED))
		ensure_tuple(sk, s);
	sync_remote(s);
	return 1;
}

static __always_inline int unowned(const struct coral_tcp_sock *s)
{
	return !(s->ev.flags & (CORAL_TCP_ACTIVE | CORAL_TCP_OWNED));
}

/*
 * FIN_WAIT1 and LAST_ACK are only entered through tcp_close_state(), from
 * close() or shutdown(): process context, the owner's. The FIN is queued
 * right after (tcp_send_fin).
 */
static __always_inline void on_fin_sent(struct sock *sk)
{
	struct coral_tcp_sock *s = sock_get(sk);

	if (!s)
		return;
	if (unowned(s) && !adopt(sk, s))
		return;
	set_state(s, CORAL_SOCK_FIN_SENT);
}

/*
 * Entering CLOSE: everything but late resets is final here, and must be read
 * now, because tcp_disconnect() zeroes the counters and the addresses next.
 */
static __always_inline void on_close(struct sock *sk, int oldstate)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct coral_tcp_sock *s = sock_get(sk);
	__u64 acked, received;
	unsigned long flags;

	if (!s || (s->state & CORAL_SOCK_CLOSED))
		return;
	if (!ensure_tuple(sk, s)) {
		sock_del(sk);
		return;
	}
	s->ev.end_ns = bpf_ktime_get_ns();
	s->ev.end_state = oldstate;
	/*
	 * bytes_acked follows snd_una, so it counts our SYN (active opens) and
	 * our FIN once acknowledged: neither is payload. (bytes_sent would count
	 * a segment twice when the local qdisc drops it and TCP sends it again
	 * as new data, without a retransmission.) The FIN, when one was sent, is
	 * the last sequence number: acknowledged when snd_una reaches write_seq.
	 */
	acked = BPF_CORE_READ(tp, bytes_acked);
	if ((s->ev.flags & CORAL_TCP_ACTIVE) && (s->ev.flags & CORAL_TCP_ESTABLISHED) && acked)
		acked--;
	if ((s->state & CORAL_SOCK_FIN_SENT) && acked &&
	    BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		acked--;
	s->ev.bytes_sent = acked;
	/* bytes_received counts the peer's FIN, which tcp_fin() marks with SOCK_DONE. */
	received = BPF_CORE_READ(tp, bytes_received);
	flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	if (received && (flags & (1UL << SOCK_DONE)))
		received--;
	s->ev.bytes_received = received;
	s->ev.retransmits = BPF_CORE_READ(tp, total_retrans);
	s->ev.sk_err = BPF_CORE_READ(sk, sk_err);
	set_state(s, CORAL_SOCK_CLOSED);
	sync_remote(s);
}

SEC("raw_tp/inet_sock_set_state")
int coral_tcp_state(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int oldstate = (int)ctx[1];
	int newstate = (int)ctx[2];

	/* MPTCP and SCTP sockets change state through here too. */
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	switch (newstate) {
	case TCP_SYN_SENT:
		on_connect(sk);
		break;
	case TCP_SYN_RECV:
		on_syn_recv(sk);
		break;
	case TCP_ESTABLISHED:
		on_established(sk, oldstate);
		break;
	case TCP_CLOSE:
		on_close(sk, oldstate);
		break;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		on_fin_sent(sk);
		break;
	}
	return 0;
}

SEC("raw_tp/tcp_destroy_sock")
int coral_tcp_destroy(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct coral_tcp_sock *s = sock_get(sk);

	if (!s)
		return 0;
	/* Whatever an earlier sync had to leave for later. */
	sync_remote(s);
	emit(s);
	sock_del(sk);
	return 0;
}

SEC("raw_tp/tcp_probe")
int coral_tcp_rtt(__u64 *ctx)
{
	struct tcp_sock *tp = (struct tcp_sock *)ctx[0];
	struct coral_tcp_sock *s = sock_get(tp);
	struct coral_tcp_remote *r;
	__u32 srtt_us, slot;

	if (!s || !counted(s))
		return 0;
	if (rtt_sample_every > 1 && (s->probes++ % rtt_sample_every))
		return 0;
	/* srtt_us holds 8 times the smoothed RTT; 0 until the first sample. */
	srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	if (!srtt_us)
		return 0;
	r = remote_get(&s->key);
	if (!r)
		return 0;
	slot = coral_log2(srtt_us);
	if (slot >= CORAL_TCP_RTT_BUCKETS)
		slot = CORAL_TCP_RTT_BUCKETS - 1;
	__sync_fetch_and_add(&r->rtt_log2[slot], 1);
	return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int coral_tcp_retransmit(__u64 *ctx)
{
	struct tcp_sock *tp = (struct tcp_sock *)ctx[0];
	struct coral_tcp_sock *s = sock_get(tp);

	if (!s || (s->state & CORAL_SOCK_CLOSED))
		return 0;
	/*
	 * The kernel's own per-socket count (in segments, like RetransSegs),
	 * rather than one per hook hit: a TSO skb is several segments, and
	 * whatever this hit misses, the next one or CLOSE catches up.
	 */
	s->ev.retransmits = BPF_CORE_READ(tp, total_retrans);
	ensure_tuple((struct sock *)tp, s);
	sync_remote(s);
	return 0;
}

/* A RST answering a segment no socket wanted (e.g. a SYN to a closed port). */
static __always_inline void sockless_reset(struct sk_buff *skb)
{
	struct coral_tcp_remote_key key = {};
	struct coral_tcp_remote *r;
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct tcphdr tcp;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return;
	version >>= 4;
	if (version == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return;
		__builtin_memcpy(key.addr, &ip.saddr, 4);
		key.family = AF_INET;
	} else if (version == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return;
		__builtin_memcpy(key.addr, &ip6.saddr, 16);
		key.family = AF_INET6;
	} else {
		return;
	}
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return;
	key.lport = bpf_ntohs(tcp.dest);
	if (!tuple_matches(key.family, key.addr, key.lport, bpf_ntohs(tcp.source)))
		return;
	r = remote_get(&key);
	if (r)
		__sync_fetch_and_add(&r->resets_sent, 1);
}

SEC("raw_tp/tcp_send_reset")
int coral_tcp_send_reset(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct coral_tcp_sock *s;

	if (!sk) {
		/* No socket, so no owner: only counted when no process filter is set. */
		if (!process_filter_set() && ctx[1])
			sockless_reset((struct sk_buff *)ctx[1]);
		return 0;
	}
	/* Timewait and request sockets are never in the map: not tracked. */
	s = sock_get(sk);
	if (!s)
		return 0;
	s->ev.resets_sent++;
	sync_remote(s);
	return 0;
}

SEC("raw_tp/tcp_receive_reset")
int coral_tcp_receive_reset(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct coral_tcp_sock *s = sock_get(sk);

	if (!s)
		return 0;
	s->ev.resets_received++;
	ensure_tuple(sk, s);
	sync_remote(s);
	return 0;
}

/* The struct sock behind file descriptor `fd` of the current task. */
static __always_inline struct sock *fd_sock(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file;
	struct socket *sock;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	return BPF_CORE_READ(sock, sk);
}

/*
 * sock_recvmsg() / sock_sendmsg() on a socket (read, recv*, write, send*,
 * splice, io_uring alike), in the calling task: the first one on an
 * accepted connection names its owner. Unlike syscall tracepoints these put
 * no tax on other syscalls. (Linux 6.3+; older kernels use accept().)
 */
static __always_inline void on_io(struct sock *sk)
{
	struct coral_tcp_sock *s = sock_get(sk);

	if (s && unowned(s))
		adopt(sk, s);
}

SEC("raw_tp/sock_recv_length")
int coral_tcp_recv(__u64 *ctx)
{
	on_io((struct sock *)ctx[0]);
	return 0;
}

SEC("raw_tp/sock_send_length")
int coral_tcp_send(__u64 *ctx)
{
	on_io((struct sock *)ctx[0]);
	return 0;
}

/*
 * Fallback for kernels without sock_{recv,send}_length: accept() returned
 * `ret`, the caller owns that connection. Enabling any syscall tracepoint
 * sends every syscall of every task through the slow path while attached.
 */
static __always_inline void on_accept(long ret)
{
	struct coral_tcp_sock *s;
	struct sock *sk;

	if (ret < 0)
		return;
	sk = fd_sock(ret);
	if (!sk)
		return;
	s = sock_get(sk);
	if (s && unowned(s))
		adopt(sk, s);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int coral_tcp_accept4(struct trace_event_raw_sys_exit *ctx)
{
	on_accept(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int coral_tcp_accept(struct trace_event_raw_sys_exit *ctx)
{
	on_accept(ctx->ret);
	return 0;
}
