//! security: credential and privilege events of the target, one event each,
//! with process, parent, cgroup and container, and the call's result:
//! the setuid family and capset (ids and capabilities before and after),
//! execs of setuid, setgid and file-capability binaries, ptrace attach,
//! module loads, `bpf(BPF_PROG_LOAD)` by processes other than the agent,
//! the mount family, and a configurable list of syscalls (by default a
//! documented "suspicious" set, [`DEFAULT_SYSCALLS`]).
//!
//! Kernel side: `src/bpf/security.bpf.c`, three programs on
//! `tp_btf/sys_enter`, `tp_btf/sys_exit` (dispatching on the syscall number)
//! and `tp_btf/sched_process_exec`. No kprobes, no fentry, no tracefs. It
//! needs BTF (tp_btf, task storage, CO-RE reads of `struct cred`), a ring
//! buffer, x86_64 syscall numbers and CAP_BPF + CAP_PERFMON.
//!
//! Every event is sent (nothing is sampled), so the aggregate is counted
//! here from the events, plus what the kernel could not hand over. The
//! agent drains the ring buffer every 100ms.

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::syscall_stats::syscall_name;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::{Ebpf, EbpfLoader};
use coral_ebpf_programs::file_io::c_str;
use coral_ebpf_programs::security::{
    self as kernel, Creds, DROP_EVENTS, EXEC_CAPS, EXEC_SETGID, EXEC_SETUID, MAX_NR, OBJECT,
    SecEvent,
};
use coral_proto::error_chain;
use coral_proto::v1::{
    Credentials, SecurityConfig, SecurityEvent, SecurityEventType, SecurityProcessCount,
    SecurityStats, SecuritySyscallCount, SecurityTypeCount,
};
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::time::Duration;
use syscalls::{Errno, Sysno};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the ring buffer is drained.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// 1 MiB: about 1700 events between two drains.
const RING_BUFFER: u32 = 1 << 20;
/// Rows listed per `SecurityStats` (syscalls, processes); counted beyond
/// that up to [`MAX_COUNTED`] keys, then into the "other" row.
const LISTED: usize = 100;
const MAX_COUNTED: usize = 4096;

/// The syscalls reported when none are configured: calls that an ordinary
/// service does not make and that escapes, rootkits and tampering do
/// (docs/collectors/security.md says why each is here).
pub const DEFAULT_SYSCALLS: &[&str] = &[
    "chroot",
    "pivot_root",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "delete_module",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "process_vm_readv",
    "process_vm_writev",
    "userfaultfd",
    "syslog",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "sethostname",
    "setdomainname",
    "acct",
];

/// Calls another event type reports: refused in `SecurityConfig.syscalls`.
const OWN_CALLS: &[&str] = &[
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "capset",
    "execve",
    "execveat",
    "ptrace",
    "init_module",
    "finit_module",
    "bpf",
    "mount",
    "umount2",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsmount",
    "fspick",
    "mount_setattr",
];

/// (program, tp_btf tracepoint, hook as reported).
const PROGRAMS: [(&str, &str, &str); 3] = [
    ("coral_sec_enter", "sys_enter", "tp_btf/sys_enter"),
    ("coral_sec_exit", "sys_exit", "tp_btf/sys_exit"),
    (
        "coral_sec_exec",
        "sched_process_exec",
        "tp_btf/sched_process_exec",
    ),
];

/// `include/uapi/linux/capability.h`, bit n is capability n.
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `enum bpf_prog_type` (include/uapi/linux/bpf.h), lower case as bpftool prints them.
const PROG_TYPES: [&str; 33] = [
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

pub struct SecurityFactory;

fn config(spec_config: Option<&KindConfig>) -> SecurityConfig {
    match spec_config {
        Some(KindConfig::Security(c)) => c.clone(),
        _ => SecurityConfig::default(),
    }
}

/// The syscall numbers a `SecurityConfig.syscalls` list reports, sorted, or
/// why the list is refused.
pub fn resolve_syscalls(names: &[String]) -> Result<Vec<u32>, String> {
    let mut out = BTreeSet::new();
    let default = || DEFAULT_SYSCALLS.iter().map(|s| s.to_string()).collect();
    let names: Vec<String> = if names.is_empty() {
        default()
    } else {
        names.to_vec()
    };
    if names.iter().any(|n| n == "none") {
        if names.len() > 1 {
            return Err("syscalls: \"none\" must be alone".into());
        }
        return Ok(Vec::new());
    }
    for name in names {
        if name == "default" {
            for d in DEFAULT_SYSCALLS {
                out.insert(nr_of(d)?);
            }
            continue;
        }
        if OWN_CALLS.contains(&name.as_str()) {
            return Err(format!(
                "syscalls: {name} is already reported by its own event type"
            ));
        }
        out.insert(nr_of(&name)?);
    }
    Ok(out.into_iter().collect())
}

fn nr_of(name: &str) -> Result<u32, String> {
    let shown: String = name.chars().take(64).collect();
    let nr = Sysno::from_str(name)
        .map_err(|_| format!("syscalls: {shown:?} is no x86_64 syscall"))?
        .id() as u32;
    if nr as usize >= MAX_NR {
        return Err(format!("syscalls: {shown} (number {nr}) is out of range"));
    }
    Ok(nr)
}

/// The `report` global: bit nr set for each syscall number.
fn bitmap(nrs: &[u32]) -> [u64; MAX_NR / 64] {
    let mut b = [0u64; MAX_NR / 64];
    for &nr in nrs {
        b[nr as usize / 64] |= 1 << (nr % 64);
    }
    b
}

impl CollectorFactory for SecurityFactory {
    fn kind(&self) -> Kind {
        Kind::Security
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "tp_btf/sys_enter (setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid, setfsgid, capset, execve, execveat: credentials before)",
            "tp_btf/sys_exit (the same, ptrace, init_module, finit_module, bpf, mount, umount2, fsopen, fsmount, move_mount, open_tree, fspick, mount_setattr, and the configured syscalls)",
            "tp_btf/sched_process_exec (setuid, setgid and file-capability execs)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_x86_64("syscall numbers and argument registers")?;
        caps.require_btf("tp_btf programs, task storage and CO-RE reads of credentials need it")?;
        caps.require_raw_tracepoints()?;
        caps.require_ringbuf()
    }

    fn validate(&self, spec_config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let c = config(spec_config);
        check_interval(c.interval_ns, limits)?;
        if c.syscalls.len() > MAX_NR {
            return Err(format!("syscalls: at most {MAX_NR} names"));
        }
        resolve_syscalls(&c.syscalls).map(|_| ())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let c = config(ctx.spec.config.as_ref());
        let globals = FilterGlobals::resolve(ctx)?;
        let nrs = resolve_syscalls(&c.syscalls).map_err(CollectorError::Load)?;
        let report = bitmap(&nrs);
        let mut loader = EbpfLoader::new();
        // `befores` is task storage, which aya does not model (the kernel does).
        loader.allow_unsupported_maps();
        globals.apply(&mut loader);
        loader
            .override_global("report", &report, true)
            .map_max_entries("events", RING_BUFFER);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;
        let mut program_ids = Vec::new();
        let links = bpf::attach_btf_tracepoints(&mut bpf, &PROGRAMS, &mut program_ids)?;
        Ok(Box::new(SecurityCollector {
            events: take_map(&mut bpf, "events")?,
            drops: take_map(&mut bpf, "drops")?,
            links,
            program_ids,
            interval: match c.interval_ns {
                0 => DEFAULT_INTERVAL,
                ns => Duration::from_nanos(ns),
            },
            next_stats: Duration::ZERO,
            tally: Tally {
                reported: {
                    let mut names: Vec<_> = nrs.iter().map(|&nr| syscall_name(nr)).collect();
                    names.sort();
                    names
                },
                ..Default::default()
            },
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            clock: KtimeClock::now(),
            _bpf: bpf,
        }))
    }
}

/// `EPERM` for 1; `errno N` for numbers without a name.
pub fn errno_name(errno: i32) -> String {
    Errno::new(errno)
        .name()
        .map_or_else(|| format!("errno {errno}"), str::to_string)
}

/// The names of the capabilities set in `mask` (`CAP_<n>` past the table).
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            CAP_NAMES
                .get(bit)
                .map_or_else(|| format!("CAP_{bit}"), |n| n.to_string())
        })
        .collect()
}

fn prog_type_name(t: u64) -> String {
    PROG_TYPES
        .get(t as usize)
        .map_or_else(|| format!("type {t}"), |n| n.to_string())
}

fn ptrace_request(r: u64) -> String {
    match r {
        0 => "PTRACE_TRACEME".into(),
        16 => "PTRACE_ATTACH".into(),
        0x4206 => "PTRACE_SEIZE".into(),
        other => format!("request {other}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(c_str(bytes)).into_owned()
}

fn credentials(c: &Creds) -> Credentials {
    Credentials {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        cap_effective: c.cap_effective,
        cap_permitted: c.cap_permitted,
        cap_inheritable: c.cap_inheritable,
    }
}

/// The event as the API shows it (no container: the collector adds it).
pub fn event(e: &SecEvent, time_unix_nano: u64) -> SecurityEvent {
    let kind = match e.kind {
        kernel::CREDS => SecurityEventType::Credentials,
        kernel::CAPSET => SecurityEventType::Capset,
        kernel::EXEC => SecurityEventType::PrivilegedExec,
        kernel::PTRACE => SecurityEventType::Ptrace,
        kernel::MODULE => SecurityEventType::ModuleLoad,
        kernel::BPF => SecurityEventType::BpfProgLoad,
        kernel::MOUNT => SecurityEventType::Mount,
        kernel::SYSCALL => SecurityEventType::Syscall,
        _ => SecurityEventType::Unspecified,
    };
    // A syscall's error is -errno in [-4095, -1].
    let errno = if (-4095..0).contains(&e.ret) {
        -e.ret as i32
    } else {
        0
    };
    let mut out = SecurityEvent {
        r#type: kind.into(),
        time_unix_nano,
        pid: e.tgid,
        tid: e.tid,
        ppid: e.ppid,
        comm: text(&e.comm),
        parent_comm: text(&e.pcomm),
        syscall: syscall_name(e.nr),
        syscall_nr: e.nr,
        result: e.ret,
        errno,
        error: if errno == 0 {
            String::new()
        } else {
            errno_name(errno)
        },
        new_credentials: Some(credentials(&e.new)),
        cgroup_id: e.cgroup_id,
        ..Default::default()
    };
    match kind {
        SecurityEventType::Credentials => {
            out.old_credentials = Some(credentials(&e.old));
        }
        SecurityEventType::Capset | SecurityEventType::PrivilegedExec => {
            out.old_credentials = Some(credentials(&e.old));
            out.caps_gained = cap_names(e.new.cap_effective & !e.old.cap_effective);
            out.caps_lost = cap_names(e.old.cap_effective & !e.new.cap_effective);
            if kind == SecurityEventType::PrivilegedExec {
                out.path = text(&e.str0);
                out.file_mode = e.mode & 0o7777;
                out.setuid = e.flags & EXEC_SETUID != 0;
                out.setgid = e.flags & EXEC_SETGID != 0;
                out.file_caps = e.flags & EXEC_CAPS != 0;
            }
        }
        SecurityEventType::Ptrace => {
            out.request = ptrace_request(e.args[0]);
            out.target_pid = e.args[1] as u32;
        }
        SecurityEventType::ModuleLoad => {
            out.name = text(&e.str0);
            out.flags = e.args[2];
            if e.nr == Sysno::finit_module.id() as u32 {
                // The fd is still open when the event is read, or not.
                out.path = std::fs::read_link(format!("/proc/{}/fd/{}", e.tgid, e.args[0] as i32))
                    .map(|p| p.to_string_lossy().chars().take(127).collect())
                    .unwrap_or_default();
            }
        }
        SecurityEventType::BpfProgLoad => {
            out.name = text(&e.str0[..16]);
            out.bpf_prog_type = prog_type_name(e.args[1]);
            out.bpf_insn_count = e.args[2] as u32;
        }
        SecurityEventType::Mount => {
            out.source = text(&e.str0);
            out.path = text(&e.str1);
            out.fs_type = text(&e.str2);
            out.flags = e.args[0];
        }
        SecurityEventType::Syscall => {
            out.args = e.args.to_vec();
        }
        SecurityEventType::Unspecified => {}
    }
    out
}

/// The counts of the events seen so far.
#[derive(Default)]
pub struct Tally {
    /// (type, events, failed), indexed by the type's value.
    types: HashMap<i32, (u64, u64)>,
    syscalls: HashMap<(String, String), u64>,
    processes: HashMap<u32, SecurityProcessCount>,
    reported: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, e: &SecurityEvent) {
        let failed = u64::from(e.errno != 0);
        let t = self.types.entry(e.r#type).or_default();
        t.0 += 1;
        t.1 += failed;
        let key = (e.syscall.clone(), e.error.clone());
        if self.syscalls.len() < MAX_COUNTED || self.syscalls.contains_key(&key) {
            *self.syscalls.entry(key).or_default() += 1;
        } else {
            *self
                .syscalls
                .entry(("{other}".into(), String::new()))
                .or_default() += 1;
        }
        let pid = if self.processes.len() < MAX_COUNTED || self.processes.contains_key(&e.pid) {
            e.pid
        } else {
            0
        };
        let p = self
            .processes
            .entry(pid)
            .or_insert_with(|| SecurityProcessCount {
                pid,
                comm: if pid == 0 {
                    "{other}".into()
                } else {
                    e.comm.clone()
                },
                cgroup_id: e.cgroup_id,
                container: e.container.clone(),
                ..Default::default()
            });
        p.events += 1;
        p.failed += failed;
    }

    pub fn stats(&self, elapsed: Duration) -> SecurityStats {
        let mut types: Vec<_> = self
            .types
            .iter()
            .map(|(&t, &(events, failed))| SecurityTypeCount {
                r#type: t,
                events,
                failed,
            })
            .collect();
        types.sort_by(|a, b| b.events.cmp(&a.events).then(a.r#type.cmp(&b.r#type)));
        let mut syscalls: Vec<_> = self
            .syscalls
            .iter()
            .map(|((syscall, error), &count)| SecuritySyscallCount {
                syscall: syscall.clone(),
                error: error.clone(),
                count,
            })
            .collect();
        syscalls.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.syscall, &a.error).cmp(&(&b.syscall, &b.error)))
        });
        syscalls.truncate(LISTED);
        let mut processes: Vec<_> = self.processes.values().cloned().collect();
        processes.sort_by(|a, b| b.events.cmp(&a.events).then(a.pid.cmp(&b.pid)));
        processes.truncate(LISTED);
        SecurityStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            types,
            syscalls,
            processes,
            dropped_events: 0,
            reported_syscalls: self.reported.clone(),
        }
    }
}

struct SecurityCollector {
    events: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    program_ids: Vec<u32>,
    interval: Duration,
    next_stats: Duration,
    tally: Tally,
    cgroups: CgroupResolver,
    clock: KtimeClock,
    /// Owns the programs (declared last: dropped after the links).
    _bpf: Ebpf,
}

impl Collector for SecurityCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        DRAIN_EVERY
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        while let Some(item) = self.events.next() {
            let Some(raw) = SecEvent::from_bytes(&item) else {
                continue;
            };
            drop(item);
            let mut e = event(&raw, self.clock.unix(raw.time_ns));
            e.container = self.cgroups.resolve(e.cgroup_id).map(Cgroup::to_proto);
            self.tally.add(&e);
            out.push(Payload::SecurityEvent(e));
        }
        if last || elapsed >= self.next_stats {
            self.next_stats = elapsed + self.interval;
            let mut stats = self.tally.stats(elapsed);
            stats.dropped_events = self
                .drops
                .get(&DROP_EVENTS, 0)
                .map_err(read_err("drops"))?
                .iter()
                .sum();
            out.push(Payload::SecurityStats(stats));
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.links.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lists_resolve_and_refuse_what_they_must() {
        let default = resolve_syscalls(&[]).unwrap();
        assert_eq!(default.len(), DEFAULT_SYSCALLS.len());
        assert!(default.contains(&(Sysno::chroot.id() as u32)));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_syscalls(&s(&["default", "perf_event_open"]))
                .unwrap()
                .len(),
            DEFAULT_SYSCALLS.len() + 1
        );
        assert_eq!(resolve_syscalls(&s(&["none"])).unwrap(), Vec::<u32>::new());
        assert!(resolve_syscalls(&s(&["none", "chroot"])).is_err());
        let e = resolve_syscalls(&s(&["setuid"])).unwrap_err();
        assert!(e.contains("own event type"), "{e}");
        let e = resolve_syscalls(&s(&["no_such_call"])).unwrap_err();
        assert!(e.contains("no x86_64 syscall"), "{e}");
        assert_eq!(
            resolve_syscalls(&s(&["getppid"])).unwrap(),
            vec![Sysno::getppid.id() as u32]
        );
        let b = bitmap(&[0, 63, 64, 511]);
        assert_eq!((b[0], b[1], b[7]), (1 | 1 << 63, 1, 1 << 63));
    }

    #[test]
    fn names_of_capabilities_and_errors() {
        assert_eq!(
            cap_names(1 << 13 | 1 << 21),
            ["CAP_NET_RAW", "CAP_SYS_ADMIN"]
        );
        assert_eq!(cap_names(1 << 45), ["CAP_45"]);
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(38), "ENOSYS");
        assert_eq!(prog_type_name(1), "socket_filter");
        assert_eq!(ptrace_request(16), "PTRACE_ATTACH");
    }

    fn raw(kind: u32, nr: u32, ret: i64) -> SecEvent {
        SecEvent {
            time_ns: 0,
            cgroup_id: 0,
            ret,
            args: [0; 4],
            old: Creds::default(),
            new: Creds::default(),
            kind,
            nr,
            tgid: 10,
            tid: 10,
            ppid: 1,
            flags: 0,
            mode: 0,
            pad: 0,
            comm: [0; 16],
            pcomm: [0; 16],
            str0: [0; 128],
            str1: [0; 128],
            str2: [0; 128],
        }
    }

    #[test]
    fn events_carry_their_type_fields_and_results() {
        let mut capset = raw(kernel::CAPSET, Sysno::capset.id() as u32, 0);
        capset.old.cap_effective = 1 << 13 | 1;
        capset.new.cap_effective = 1;
        let e = event(&capset, 5);
        assert_eq!(e.r#type(), SecurityEventType::Capset);
        assert_eq!(e.syscall, "capset");
        assert_eq!(
            (e.caps_lost.as_slice(), e.caps_gained.len()),
            (&["CAP_NET_RAW".to_string()][..], 0)
        );
        assert_eq!(e.old_credentials.unwrap().cap_effective, 1 << 13 | 1);

        let mut mount = raw(kernel::MOUNT, Sysno::mount.id() as u32, -1);
        mount.str1[..4].copy_from_slice(b"/mnt");
        mount.str2[..5].copy_from_slice(b"tmpfs");
        let e = event(&mount, 5);
        assert_eq!((e.errno, e.error.as_str()), (1, "EPERM"));
        assert_eq!((e.path.as_str(), e.fs_type.as_str()), ("/mnt", "tmpfs"));
        assert!(e.old_credentials.is_none());

        let mut exec = raw(kernel::EXEC, Sysno::execve.id() as u32, 0);
        exec.flags = EXEC_SETUID;
        exec.mode = 0o104755;
        exec.old.euid = 65534;
        exec.new.cap_effective = 1 << 21;
        let e = event(&exec, 5);
        assert!(e.setuid && !e.setgid && !e.file_caps);
        assert_eq!(e.file_mode, 0o4755);
        assert_eq!(e.caps_gained, ["CAP_SYS_ADMIN"]);

        let mut t = Tally::default();
        for e in [&event(&capset, 1), &event(&mount, 1), &event(&mount, 2)] {
            t.add(e);
        }
        let s = t.stats(Duration::from_secs(1));
        assert_eq!(s.types[0].r#type(), SecurityEventType::Mount);
        assert_eq!((s.types[0].events, s.types[0].failed), (2, 2));
        assert_eq!(s.syscalls[0].syscall, "mount");
        assert_eq!(s.syscalls[0].error, "EPERM");
        assert_eq!((s.processes[0].events, s.processes[0].failed), (3, 2));
    }
}
