/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by dns.bpf.c and the agent (mirror: ebpf-programs/src/dns.rs,
 * size-asserted and checked field by field by the layout test).
 */
#ifndef CORAL_DNS_H
#define CORAL_DNS_H

/* DNS message bytes kept per packet (the classic UDP maximum). */
#define CORAL_DNS_MSG_LEN 512
/* Ports besides 53 that carry DNS (DnsConfig.ports). */
#define CORAL_DNS_MAX_PORTS 8

/* coral_dns_event.kind */
#define CORAL_DNS_QUERY 1
#define CORAL_DNS_RESPONSE 2

/*
 * One exchange: the query's 5-tuple (client = its source) and DNS id.
 * Addresses are IPv4 in the first 4 bytes (family 4) or IPv6 (family 6).
 */
struct coral_dns_key {
	__u8 client[16];
	__u8 server[16];
	__u16 client_port;
	__u16 server_port;
	__u16 id;
	__u8 proto; /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 family;
};

/* A query in flight, from the target, waiting for its response. */
struct coral_dns_inflight {
	__u64 ns;
	__u64 cgroup_id;
	__u32 tgid;
	__u32 tid;
	char comm[16];
};

/*
 * A query leaving (process context: the querier's pid) or the response to a
 * query in flight (softirq: pid and comm are the query's).
 */
struct coral_dns_event {
	__u64 ns;	/* bpf_ktime_get_ns when the packet was seen */
	__u64 query_ns; /* responses: when their query left */
	__u64 cgroup_id;
	struct coral_dns_key key;
	__u32 tgid;
	__u32 tid;
	__u32 kind;
	__u16 len;     /* bytes of msg[] kept */
	__u16 msg_len; /* bytes of the DNS message in the packet */
	char comm[16];
	__u8 msg[CORAL_DNS_MSG_LEN];
};

#endif
