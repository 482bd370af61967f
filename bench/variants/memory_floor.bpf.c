// SPDX-License-Identifier: GPL-2.0
/*
 * The floor of bench/memory.sh: an empty program on tp_btf/rss_stat, the
 * hook ebpf-programs/src/bpf/memory.bpf.c uses. What any BPF program on
 * that hook costs per mm counter change (a page fault, typically), before it
 * does anything. Not built by ebpf-programs/build.rs and never loaded by the
 * agent: bench/memory.sh compiles it and attaches it with `coral-bench attach`.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/rss_stat")
int BPF_PROG(memory_floor, struct mm_struct *mm, int member)
{
	return 0;
}
