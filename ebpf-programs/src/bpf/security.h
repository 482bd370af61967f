/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by security.bpf.c and the agent (mirror:
 * ebpf-programs/src/security.rs, size-asserted and checked field by field by
 * the layout test).
 */
#ifndef CORAL_SECURITY_H
#define CORAL_SECURITY_H

/* Bytes of each string kept, NUL included (longer ones are cut). */
#define CORAL_SEC_STR_LEN 128
/* Syscall numbers the `report` bitmap covers (x86_64 has about 470). */
#define CORAL_SEC_MAX_NR 512

/* coral_sec_event.type and the agent's SecurityEventType. */
#define CORAL_SEC_CREDS 1 /* setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid, setfsgid */
#define CORAL_SEC_CAPSET 2
#define CORAL_SEC_EXEC 3 /* exec of a setuid, setgid or file-capability binary */
#define CORAL_SEC_PTRACE 4 /* PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_TRACEME */
#define CORAL_SEC_MODULE 5 /* init_module, finit_module */
#define CORAL_SEC_BPF 6 /* bpf(BPF_PROG_LOAD) */
#define CORAL_SEC_MOUNT 7 /* mount, umount2, fsopen, fsmount, move_mount, open_tree, fspick, mount_setattr */
#define CORAL_SEC_SYSCALL 8 /* one of the configured syscalls */

/* coral_sec_event.flags of an exec. */
#define CORAL_SEC_EXEC_SETUID 1 /* the file's mode has S_ISUID */
#define CORAL_SEC_EXEC_SETGID 2 /* the file's mode has S_ISGID */
#define CORAL_SEC_EXEC_CAPS 4 /* permitted capabilities grew (file capabilities or setuid root) */
#define CORAL_SEC_EXEC_SECURE 8 /* bprm->secureexec: AT_SECURE for the new image */

/* drops[] slots. */
#define CORAL_SEC_DROP_EVENTS 0
#define CORAL_SEC_DROP_SLOTS 1

/* Ids and capability sets of a task (kernel_cap_t as 64 bits). */
struct coral_sec_creds {
	__u32 uid;
	__u32 gid;
	__u32 suid;
	__u32 sgid;
	__u32 euid;
	__u32 egid;
	__u32 fsuid;
	__u32 fsgid;
	__u64 cap_inheritable;
	__u64 cap_permitted;
	__u64 cap_effective;
};

/*
 * One event. `old` is the task's credentials at syscall entry (creds,
 * capset, exec), `new` at return (every type: who did it). The strings and
 * arguments depend on the type (docs/collectors/security.md).
 */
struct coral_sec_event {
	__u64 time_ns;
	__u64 cgroup_id;
	__s64 ret;
	__u64 args[4];
	struct coral_sec_creds old;
	struct coral_sec_creds new;
	__u32 type;
	__u32 nr;
	__u32 tgid;
	__u32 tid;
	__u32 ppid;
	__u32 flags;
	__u32 mode;
	__u32 pad;
	char comm[16];
	char pcomm[16];
	char str0[CORAL_SEC_STR_LEN];
	char str1[CORAL_SEC_STR_LEN];
	char str2[CORAL_SEC_STR_LEN];
};

#endif
