/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by file_io.bpf.c and the agent (mirror:
 * ebpf-programs/src/file_io.rs, size-asserted and checked field by field by
 * the layout test).
 */
#ifndef CORAL_FILE_IO_H
#define CORAL_FILE_IO_H

/* Bytes of a path kept, NUL included (longer paths are cut). */
#define CORAL_FIO_PATH_LEN 256
/* Latency buckets: [2^i, 2^(i+1)) ns, the last one open-ended (~4 s and up). */
#define CORAL_FIO_LOG2_BUCKETS 32

/* coral_fio_event.op and the agent's FileIoOp. */
#define CORAL_FIO_OPEN 1
#define CORAL_FIO_READ 2
#define CORAL_FIO_WRITE 3
#define CORAL_FIO_FSYNC 4

/*
 * One aggregate: a path as a process opened it (errno 0), or the failed
 * opens of that path with one errno.
 */
struct coral_fio_key {
	__u64 path_hash;
	__u32 tgid;
	__u32 err;
};

struct coral_fio_stat {
	__u64 opens;
	__u64 reads;
	__u64 read_bytes;
	__u64 read_ns;
	__u64 writes;
	__u64 write_bytes;
	__u64 write_ns;
	__u64 fsyncs;
	__u64 fsync_ns;
	__u64 cgroup_id;
	__u32 flags; /* of the last open */
	__u32 pad;
	char comm[16];
	char path[CORAL_FIO_PATH_LEN];
	__u64 read_log2[CORAL_FIO_LOG2_BUCKETS];
	__u64 write_log2[CORAL_FIO_LOG2_BUCKETS];
};

/* An fd of a process whose open was seen: (tgid, fd) -> its aggregate. */
struct coral_fio_fd_key {
	__u32 tgid;
	__u32 fd;
};

/* A failed open or a slow read, write or fsync. */
struct coral_fio_event {
	__u64 start_ns; /* entry (opens: return), bpf_ktime_get_ns */
	__u64 latency_ns;
	__u64 bytes;
	__u64 cgroup_id;
	__u32 tgid;
	__u32 tid;
	__s32 fd; /* -1 for opens */
	__u32 op;
	__s32 err; /* errno, positive; 0: no error */
	__u32 flags;
	char comm[16];
	char path[CORAL_FIO_PATH_LEN];
};

#endif
