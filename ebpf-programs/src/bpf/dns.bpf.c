// SPDX-License-Identifier: GPL-2.0
/*
 * dns: the DNS queries of the target processes and their responses, over
 * UDP and TCP, on port 53 and the configured ports, seen as packets.
 *
 * Two programs on packet tracepoints through tp_btf (no kprobes, no tracefs):
 *   net_dev_queue (every packet handed to a device, in the sender's context
 *                 for UDP and for TCP data sent by the write):
 *                 a DNS query (QR clear) to a DNS port, from the target, is
 *                 remembered in `inflight` by (5-tuple, DNS id) and sent to
 *                 the agent (message bytes, pid, comm, cgroup).
 *   netif_receive_skb (every packet a device receives, in softirq: current is
 *                 not the receiver): a DNS response (QR set) from a DNS port
 *                 whose (5-tuple, id) is in flight is sent with the query's
 *                 pid and time, and the entry is deleted, so a response seen
 *                 twice (a bridge, then a veth) counts once.
 * Anything else returns after reading the IP and L4 headers (a few loads
 * and compares). The agent parses the DNS messages (names, types, rcodes,
 * answers), matches them, computes latencies and times queries out.
 * Only the linear part of a packet is read: a DNS message there is whole on
 * loopback and on the usual NIC paths (small packets are copied linear).
 */
#include "common.h"
#include "dns.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Ports besides 53 (0: unused), set by the agent before load. */
const volatile __u16 ports[CORAL_DNS_MAX_PORTS] = {};

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define PROTO_TCP 6
#define PROTO_UDP 17
/* A DNS message header: id, flags, four counts. */
#define DNS_HEADER_LEN 12
#define DNS_QR 0x80 /* in the first flags byte */

/* drops[] slots. */
#define DROP_EVENTS 0
#define DROP_INFLIGHT 1

/* The agent sizes it (DnsConfig.max_inflight) and deletes timed-out keys. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct coral_dns_key);
	__type(value, struct coral_dns_inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/*
 * Events are built here and sent with bpf_ringbuf_output at the size of the
 * message they carry (a query is ~40 bytes of its 512), so the ring holds
 * four times as many of them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct coral_dns_event);
} scratch SEC(".maps");

/* [DROP_EVENTS] ring buffer full, [DROP_INFLIGHT] inflight update failed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count(__u32 k)
{
	__u64 *d = bpf_map_lookup_elem(&drops, &k);

	if (d)
		(*d)++;
}

static __always_inline int is_dns_port(__u16 port)
{
	if (port == 53)
		return 1;
#pragma unroll
	for (int i = 0; i < CORAL_DNS_MAX_PORTS; i++) {
		if (ports[i] && ports[i] == port)
			return 1;
	}
	return 0;
}

/* Where a packet's DNS message is, and its 5-tuple as sent. */
struct packet {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 msg_len;
	const __u8 *msg;
	__u32 avail; /* linear bytes from msg on */
	__u8 hdr[4]; /* id and flags of the DNS header */
};

/*
 * Fills `p` when `l3` (with `linear` bytes readable from it) is an IPv4 or
 * IPv6 UDP datagram to a DNS port (`to_server`) or from one. The port is
 * checked before the DNS header is read: the other direction (a query
 * arriving at a local server, its answer leaving) costs no more reads.
 */
static __always_inline int parse(const __u8 *l3, __u32 linear, __u16 protocol,
				 int to_server, struct packet *p)
{
	__u32 l4_off, msg_off, l4_len;
	__u16 ports_be[2];

	__builtin_memset(p->src, 0, sizeof(p->src));
	__builtin_memset(p->dst, 0, sizeof(p->dst));
	if (protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3))
			return 0;
		if (ip.version != 4)
			return 0;
		/* A fragment (but the unfragmented first): no L4 header to read. */
		if (ip.frag_off & bpf_htons(0x1fff | 0x2000))
			return 0;
		l4_off = ip.ihl * 4;
		l4_len = bpf_ntohs(ip.tot_len);
		if (l4_off < sizeof(ip) || l4_len < l4_off)
			return 0;
		l4_len -= l4_off;
		p->proto = ip.protocol;
		p->family = 4;
		__builtin_memcpy(p->src, &ip.saddr, 4);
		__builtin_memcpy(p->dst, &ip.daddr, 4);
	} else if (protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3))
			return 0;
		/* Extension headers are not walked. */
		l4_off = sizeof(ip6);
		l4_len = bpf_ntohs(ip6.payload_len);
		p->proto = ip6.nexthdr;
		p->family = 6;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
	} else {
		return 0;
	}
	/* TCP is the cgroup_skb programs' (its payload is in page fragments). */
	if (p->proto != PROTO_UDP)
		return 0;
	if (bpf_probe_read_kernel(ports_be, sizeof(ports_be), l3 + l4_off))
		return 0;
	p->sport = bpf_ntohs(ports_be[0]);
	p->dport = bpf_ntohs(ports_be[1]);
	if (!is_dns_port(to_server ? p->dport : p->sport))
		return 0;
	msg_off = l4_off + 8;
	if (l4_len < 8)
		return 0;
	p->msg_len = l4_len - 8;
	if (p->msg_len < DNS_HEADER_LEN || linear < msg_off + DNS_HEADER_LEN)
		return 0;
	p->msg = l3 + msg_off;
	p->avail = linear - msg_off;
	if (bpf_probe_read_kernel(p->hdr, sizeof(p->hdr), p->msg))
		return 0;
	return 1;
}

/* The per-CPU event being built. */
static __always_inline struct coral_dns_event *new_event(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

/* Sends `e` up to the end of its message, without a wake-up. */
static __always_inline void send(struct coral_dns_event *e)
{
	__u32 size = __builtin_offsetof(struct coral_dns_event, msg) + (e->len & 0x3ff);

	if (size > sizeof(*e))
		size = sizeof(*e);
	if (bpf_ringbuf_output(&events, e, size, BPF_RB_NO_WAKEUP))
		count(DROP_EVENTS);
}

static __always_inline struct coral_dns_event *reserve(__u32 kind, const struct packet *p)
{
	struct coral_dns_event *e = new_event();
	__u32 len;

	if (!e)
		return 0;
	e->kind = kind;
	e->ns = bpf_ktime_get_ns();
	e->msg_len = p->msg_len;
	len = p->msg_len;
	if (len > p->avail)
		len = p->avail;
	len &= 0x3ff;
	if (len > CORAL_DNS_MSG_LEN)
		len = CORAL_DNS_MSG_LEN;
	e->len = len;
	if (bpf_probe_read_kernel(e->msg, len, p->msg))
		e->len = 0;
	return e;
}

/* skb->len minus the paged part: bytes readable from skb->data on. */
static __always_inline __u32 linear_len(struct sk_buff *skb)
{
	return skb->len - skb->data_len;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(coral_dns_egress, struct sk_buff *skb)
{
	struct coral_dns_inflight q = {};
	struct coral_dns_event *e;
	struct coral_dns_key k;
	struct packet p;
	const __u8 *l3;
	__u32 before, tgid;
	__u64 id;

	/* The network header as an offset from head; data is at the L2 header. */
	l3 = skb->head + skb->network_header;
	before = l3 - skb->data;
	if (before > linear_len(skb))
		return 0;
	if (!parse(l3, linear_len(skb) - before, skb->protocol, 1, &p))
		return 0;
	if (p.hdr[2] & DNS_QR)
		return 0;
	id = bpf_get_current_pid_tgid();
	tgid = id >> 32;
	if (!coral_target_matches(tgid))
		return 0;
	__builtin_memcpy(k.client, p.src, 16);
	__builtin_memcpy(k.server, p.dst, 16);
	k.client_port = p.sport;
	k.server_port = p.dport;
	k.id = ((__u16)p.hdr[0] << 8) | p.hdr[1];
	k.proto = p.proto;
	k.family = p.family;
	q.ns = bpf_ktime_get_ns();
	q.cgroup_id = bpf_get_current_cgroup_id();
	q.tgid = tgid;
	q.tid = (__u32)id;
	bpf_get_current_comm(q.comm, sizeof(q.comm));
	/*
	 * Already in flight: the same query again (a retransmission, or the
	 * packet seen on a second device): the first one stands.
	 */
	if (bpf_map_update_elem(&inflight, &k, &q, BPF_NOEXIST)) {
		if (bpf_map_lookup_elem(&inflight, &k))
			return 0;
		count(DROP_INFLIGHT);
	}
	e = reserve(CORAL_DNS_QUERY, &p);
	if (!e)
		return 0;
	e->query_ns = q.ns;
	e->cgroup_id = q.cgroup_id;
	e->key = k;
	e->tgid = q.tgid;
	e->tid = q.tid;
	__builtin_memcpy(e->comm, q.comm, sizeof(e->comm));
	send(e);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(coral_dns_ingress, struct sk_buff *skb)
{
	struct coral_dns_inflight *q;
	struct coral_dns_event *e;
	struct coral_dns_key k;
	struct packet p;

	/* The driver has pulled the L2 header: data is at the network header. */
	if (!parse(skb->data, linear_len(skb), skb->protocol, 0, &p))
		return 0;
	if (!(p.hdr[2] & DNS_QR))
		return 0;
	__builtin_memcpy(k.client, p.dst, 16);
	__builtin_memcpy(k.server, p.src, 16);
	k.client_port = p.dport;
	k.server_port = p.sport;
	k.id = ((__u16)p.hdr[0] << 8) | p.hdr[1];
	k.proto = p.proto;
	k.family = p.family;
	q = bpf_map_lookup_elem(&inflight, &k);
	if (!q)
		return 0;
	e = reserve(CORAL_DNS_RESPONSE, &p);
	if (e) {
		e->query_ns = q->ns;
		e->cgroup_id = q->cgroup_id;
		e->key = k;
		e->tgid = q->tgid;
		e->tid = q->tid;
		__builtin_memcpy(e->comm, q->comm, sizeof(e->comm));
		send(e);
	}
	bpf_map_delete_elem(&inflight, &k);
	return 0;
}

/*
 * TCP: cgroup_skb programs on the cgroup2 root, whose bpf_skb_load_bytes
 * reads page fragments (where TCP puts what a write sends; tracing programs
 * cannot read those without kfuncs). Egress runs in the writer's context
 * (tcp_sendmsg down to ip_finish_output), ingress in softirq with the
 * receiving socket. Both always return 1: they never drop a packet.
 */
struct tcp_dns {
	struct coral_dns_key k; /* as sent: client = source */
	__u32 msg_off;
	__u16 msg_len;
	__u8 flags; /* the DNS header's first flags byte */
};

/* A TCP segment to a DNS port (`to_server`) or from one, starting with a framed message. */
static __always_inline int parse_tcp(struct __sk_buff *skb, int to_server, struct tcp_dns *t)
{
	__u32 l4_off, l4_len, doff_len;
	__u8 hdr[4], doff;
	__u16 ports_be[2], framed;

	__builtin_memset(&t->k, 0, sizeof(t->k));
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		if (ip.protocol != PROTO_TCP || (ip.frag_off & bpf_htons(0x1fff | 0x2000)))
			return 0;
		l4_off = ip.ihl * 4;
		l4_len = bpf_ntohs(ip.tot_len);
		if (l4_off < sizeof(ip) || l4_len < l4_off)
			return 0;
		l4_len -= l4_off;
		t->k.family = 4;
		__builtin_memcpy(t->k.client, &ip.saddr, 4);
		__builtin_memcpy(t->k.server, &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		if (ip6.nexthdr != PROTO_TCP)
			return 0;
		l4_off = sizeof(ip6);
		l4_len = bpf_ntohs(ip6.payload_len);
		t->k.family = 6;
		__builtin_memcpy(t->k.client, &ip6.saddr, 16);
		__builtin_memcpy(t->k.server, &ip6.daddr, 16);
	} else {
		return 0;
	}
	if (bpf_skb_load_bytes(skb, l4_off, ports_be, sizeof(ports_be)))
		return 0;
	t->k.client_port = bpf_ntohs(ports_be[0]);
	t->k.server_port = bpf_ntohs(ports_be[1]);
	if (!is_dns_port(to_server ? t->k.server_port : t->k.client_port))
		return 0;
	/* The data offset: the high nibble of byte 12 of the TCP header. */
	if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1))
		return 0;
	doff_len = (doff >> 4) * 4;
	/* A segment that starts with a message's 2-byte length and header. */
	if (l4_len < doff_len + 2 + DNS_HEADER_LEN)
		return 0;
	t->msg_off = l4_off + doff_len + 2;
	if (bpf_skb_load_bytes(skb, t->msg_off - 2, &framed, 2))
		return 0;
	t->msg_len = bpf_ntohs(framed);
	if (t->msg_len < DNS_HEADER_LEN)
		return 0;
	if (bpf_skb_load_bytes(skb, t->msg_off, hdr, sizeof(hdr)))
		return 0;
	t->k.id = ((__u16)hdr[0] << 8) | hdr[1];
	t->k.proto = PROTO_TCP;
	t->flags = hdr[2];
	return 1;
}

static __always_inline struct coral_dns_event *reserve_tcp(__u32 kind, struct __sk_buff *skb,
							   const struct tcp_dns *t)
{
	struct coral_dns_event *e = new_event();
	__u32 len;

	if (!e)
		return 0;
	e->kind = kind;
	e->ns = bpf_ktime_get_ns();
	e->msg_len = t->msg_len;
	len = t->msg_len;
	if (len > skb->len - t->msg_off)
		len = skb->len - t->msg_off;
	len &= 0x3ff;
	if (len > CORAL_DNS_MSG_LEN)
		len = CORAL_DNS_MSG_LEN;
	if (len < DNS_HEADER_LEN || bpf_skb_load_bytes(skb, t->msg_off, e->msg, len))
		len = 0;
	e->len = len;
	return e;
}

/*
 * The current task's comm in a cgroup_skb program. bpf_get_current_comm is
 * refused there before the kernel made it a base helper (6.12's verifier:
 * "program of this type cannot use helper bpf_get_current_comm#16"; 6.18
 * takes it); reading task->comm through bpf_get_current_task works on both.
 */
static __always_inline void skb_task_comm(char (*comm)[CORAL_COMM_LEN])
{
	struct task_struct *task = (void *)bpf_get_current_task();

	BPF_CORE_READ_STR_INTO(comm, task, comm);
}

SEC("cgroup_skb/egress")
int coral_dns_tcp_egress(struct __sk_buff *skb)
{
	struct coral_dns_inflight q = {};
	struct coral_dns_event *e;
	struct tcp_dns t;
	__u32 tgid;
	__u64 id;

	if (!parse_tcp(skb, 1, &t) || (t.flags & DNS_QR))
		return 1;
	id = bpf_get_current_pid_tgid();
	tgid = id >> 32;
	if (!coral_target_matches(tgid))
		return 1;
	q.ns = bpf_ktime_get_ns();
	q.cgroup_id = bpf_get_current_cgroup_id();
	q.tgid = tgid;
	q.tid = (__u32)id;
	skb_task_comm(&q.comm);
	if (bpf_map_update_elem(&inflight, &t.k, &q, BPF_NOEXIST)) {
		if (bpf_map_lookup_elem(&inflight, &t.k))
			return 1;
		count(DROP_INFLIGHT);
	}
	e = reserve_tcp(CORAL_DNS_QUERY, skb, &t);
	if (!e)
		return 1;
	e->query_ns = q.ns;
	e->cgroup_id = q.cgroup_id;
	e->key = t.k;
	e->tgid = q.tgid;
	e->tid = q.tid;
	__builtin_memcpy(e->comm, q.comm, sizeof(e->comm));
	send(e);
	return 1;
}

SEC("cgroup_skb/ingress")
int coral_dns_tcp_ingress(struct __sk_buff *skb)
{
	struct coral_dns_inflight *q;
	struct coral_dns_event *e;
	struct coral_dns_key k;
	struct tcp_dns t;

	if (!parse_tcp(skb, 0, &t) || !(t.flags & DNS_QR))
		return 1;
	/* A response: its source is the server. */
	__builtin_memcpy(k.client, t.k.server, 16);
	__builtin_memcpy(k.server, t.k.client, 16);
	k.client_port = t.k.server_port;
	k.server_port = t.k.client_port;
	k.id = t.k.id;
	k.proto = PROTO_TCP;
	k.family = t.k.family;
	q = bpf_map_lookup_elem(&inflight, &k);
	if (!q)
		return 1;
	e = reserve_tcp(CORAL_DNS_RESPONSE, skb, &t);
	if (e) {
		e->query_ns = q->ns;
		e->cgroup_id = q->cgroup_id;
		e->key = k;
		e->tgid = q->tgid;
		e->tid = q->tid;
		__builtin_memcpy(e->comm, q->comm, sizeof(e->comm));
		send(e);
	}
	bpf_map_delete_elem(&inflight, &k);
	return 1;
}
