// SPDX-License-Identifier: GPL-2.0
/*
 * The floor of the syscall-overhead benchmark (bench/): an empty program on
 * each of raw_tp sys_enter and sys_exit. Whatever a real syscall tracer costs
 * beyond this is the cost of its own work, not of the hooks it sits on.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("raw_tp/sys_enter")
int bench_floor_enter(__u64 *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int bench_floor_exit(__u64 *ctx)
{
	return 0;
}
