// SPDX-License-Identifier: GPL-2.0
/*
 * The floors of bench/dns.sh: empty programs on the hooks
 * ebpf-programs/src/bpf/dns.bpf.c uses for UDP, tp_btf/net_dev_queue and
 * tp_btf/netif_receive_skb: what any BPF program on those hooks costs per
 * packet, before it does anything. Not built by ebpf-programs/build.rs and
 * never loaded by the agent: bench/dns.sh compiles it and attaches it with
 * `coral-bench attach`.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/net_dev_queue")
int BPF_PROG(dns_floor_egress, struct sk_buff *skb)
{
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(dns_floor_ingress, struct sk_buff *skb)
{
	return 0;
}
