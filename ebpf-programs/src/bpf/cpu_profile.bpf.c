// SPDX-License-Identifier: GPL-2.0
/*
 * cpu-profile: sampled user and kernel stacks, counted in the kernel.
 *
 * The agent opens a software CPU-clock perf event on every online CPU (one
 * per CPU, all processes) in frequency mode and attaches this program to each.
 * On every tick it walks the interrupted task's kernel stack and user stack
 * (frame pointers: bpf_get_stackid) into a stack_trace map and counts the
 * sample by (tgid, user stack id, kernel stack id). Nothing is copied to user
 * space per sample; the agent reads the counts and stacks when it snapshots.
 *
 * stack_trace maps are hash tables that refuse a stack whose bucket another
 * stack holds (without BPF_F_REUSE_STACKID, which would silently change what
 * stored ids mean). Such a stack goes to `overflow_stacks` instead, keyed by a
 * hash of its addresses and compared in full, so a collision costs a sample
 * only when both maps fail.
 *
 * The first sample of a process is announced on a ring buffer so the agent can
 * take the process's memory maps (and open its binaries) while it is alive:
 * that is what lets stacks of short-lived processes be symbolized after they
 * exit.
 */
#include "common.h"
#include "cpu_profile.h"

char LICENSE[] SEC("license") = "GPL";

/* Count samples of the idle task (pid 0) too. */
const volatile __u8 include_idle = 0;

/* Both user and kernel stacks, keyed by id. bpf_get_stackid never replaces a
 * stored stack (no BPF_F_REUSE_STACKID), so an id means one stack for the
 * collector's whole life and the agent may cache what it read. max_entries is
 * set by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, CORAL_PROFILE_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

/* Stacks whose bucket in `stacks` was taken: 31-bit hash -> stack. max_entries
 * is set by the agent. perf_event programs may only use preallocated hash
 * maps. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct coral_stack);
} overflow_stacks SEC(".maps");

/* One stack's worth of scratch per CPU (too big for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct coral_stack);
} scratch SEC(".maps");

/* perf_event programs may only use preallocated hash maps. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct coral_profile_key);
	__type(value, struct coral_profile_value);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORAL_LOST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* tgids already announced. LRU: when full, the oldest is forgotten and would
 * be announced again, which the agent ignores. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} seen SEC(".maps");

/* New tgids (one __u32 each) for the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} new_processes SEC(".maps");

static __always_inline void count_lost(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&lost, &slot);

	if (n)
		(*n)++;
}

/* True when a bpf_get_stackid result means the sample cannot be counted.
 * -EFAULT only says there is no stack of that kind (see the key). */
static __always_inline int stack_failed(long id)
{
	if (id >= 0 || id == -14 /* EFAULT */)
		return 0;
	count_lost(id == -17 /* EEXIST */ ? CORAL_LOST_STACK_COLLISION : CORAL_LOST_STACK_ERROR);
	return 1;
}

/* Stores the current stack (user with BPF_F_USER_STACK, else kernel) in
 * `overflow_stacks`. Returns its key, or -EEXIST when another stack has the
 * same key or the map is full. */
static __always_inline long overflow_stack(void *ctx, __u64 flags)
{
	struct coral_stack *buf, *stored;
	__u32 zero = 0, key;
	__u64 h = 14695981039346656037ULL; /* FNV-1a over the addresses */
	long len;
	int i;

	buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!buf)
		return -17;
	/* Zero-fills the rest of the buffer. */
	len = bpf_get_stack(ctx, buf->ips, sizeof(buf->ips), flags);
	if (len <= 0)
		return len == 0 ? -14 /* EFAULT: no stack */ : -17;
	for (i = 0; i < CORAL_PROFILE_STACK_DEPTH; i++) {
		h ^= buf->ips[i];
		h *= 1099511628211ULL;
	}
	key = (h ^ (h >> 32)) & 0x7fffffff;
	stored = bpf_map_lookup_elem(&overflow_stacks, &key);
	if (!stored) {
		if (!bpf_map_update_elem(&overflow_stacks, &key, buf, BPF_NOEXIST))
			return key;
		/* Full, or another CPU stored a stack with this key meanwhile. */
		stored = bpf_map_lookup_elem(&overflow_stacks, &key);
		if (!stored)
			return -17;
	}
	for (i = 0; i < CORAL_PROFILE_STACK_DEPTH; i++) {
		if (stored->ips[i] != buf->ips[i])
			return -17;
	}
	return key;
}

/* The id of the current stack in `stacks`, or its key in `overflow_stacks`
 * (then `overflow_bit` is set in *key_flags), or a negative errno. */
static __always_inline long stack_id(void *ctx, __u64 flags, __u32 overflow_bit, __u32 *key_flags)
{
	long id = bpf_get_stackid(ctx, &stacks, flags);

	if (id != -17 /* EEXIST: the bucket holds another stack */)
		return id;
	id = overflow_stack(ctx, flags);
	if (id >= 0)
		*key_flags |= overflow_bit;
	return id;
}

static __always_inline void announce(__u32 tgid)
{
	static const __u8 one = 1;

	if (bpf_map_lookup_elem(&seen, &tgid))
		return;
	if (bpf_map_update_elem(&seen, &tgid, &one, BPF_NOEXIST))
		return; /* another CPU announced it first */
	/* The agent polls; waking it per process would cost an IPI for nothing. */
	if (bpf_ringbuf_output(&new_processes, &tgid, sizeof(tgid), BPF_RB_NO_WAKEUP))
		count_lost(CORAL_LOST_NOTIFY);
}

SEC("perf_event")
int coral_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct coral_profile_key key = {};
	struct coral_profile_value *v;
	long user_id, kernel_id;
	int err;

	/* pid 0 is each CPU's idle task. */
	if ((__u32)id == 0 && !include_idle)
		return 0;
	if (!coral_target_matches(tgid))
		return 0;

	kernel_id = stack_id(ctx, 0, CORAL_KERNEL_OVERFLOW, &key.flags);
	user_id = stack_id(ctx, BPF_F_USER_STACK, CORAL_USER_OVERFLOW, &key.flags);
	if (stack_failed(kernel_id) || stack_failed(user_id))
		return 0;

	key.tgid = tgid;
	key.user_stack_id = user_id;
	key.kernel_stack_id = kernel_id;
	v = bpf_map_lookup_elem(&counts, &key);
	if (!v) {
		struct coral_profile_value init = { .count = 1 };

		bpf_get_current_comm(init.comm, sizeof(init.comm));
		init.cgroup_id = bpf_get_current_cgroup_id();
		err = bpf_map_update_elem(&counts, &key, &init, BPF_NOEXIST);
		if (!err)
			goto counted;
		if (err != -17 /* EEXIST: another CPU inserted it */) {
			count_lost(CORAL_LOST_MAP_FULL);
			return 0;
		}
		v = bpf_map_lookup_elem(&counts, &key);
		if (!v)
			return 0;
	}
	/* Several CPUs can sample the same process and stack at once. */
	__sync_fetch_and_add(&v->count, 1);
counted:
	if (user_id >= 0)
		announce(tgid);
	return 0;
}
