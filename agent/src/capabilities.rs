//! What this node's kernel and this agent's privileges allow, found out by
//! looking and by trying: every hook type is probed by loading and attaching an
//! empty program (`probes.bpf.c`), never inferred from the kernel version.
//!
//! Detection also prepares the ground: tracefs is mounted when missing and the
//! agent may (tracepoints attached through perf_event need
//! `/sys/kernel/tracing/events/*/*/id`), and a failed RLIMIT_MEMLOCK bump is only
//! a warning (kernels >= 5.11 charge BPF memory to the memory cgroup).

use std::path::{Path, PathBuf};

/// Probed facts about the host, taken once at agent start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCapabilities {
    pub kernel_release: String,
    pub arch: String,
    pub btf: bool,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
    pub cap_sys_resource: bool,
    pub perf_event_paranoid: Option<i32>,
    pub tracefs_path: Option<PathBuf>,
    pub tracefs_mounted_by_agent: bool,
    pub kprobes: bool,
    /// fentry (BPF trampolines): needs BTF and CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS.
    pub fentry: bool,
    /// tp_btf (BTF-typed raw tracepoints).
    pub tp_btf: bool,
    pub uprobes: bool,
    pub raw_tracepoints: bool,
    pub ringbuf: bool,
    pub task_storage: bool,
    pub perf_events: bool,
    pub cgroup2_path: Option<PathBuf>,
    /// Why probing could not run at all (e.g. not Linux), if so.
    pub probe_error: Option<String>,
}

impl HostCapabilities {
    /// `Err(reason)` unless the process may load tracing BPF programs.
    pub fn require_bpf(&self) -> Result<(), String> {
        if let Some(e) = &self.probe_error {
            return Err(e.clone());
        }
        if !(self.cap_sys_admin || (self.cap_bpf && self.cap_perfmon)) {
            return Err(
                "the agent lacks CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run it as root or grant them"
                    .into(),
            );
        }
        Ok(())
    }
}

impl HostCapabilities {
    /// `Err` naming `why` the kind needs kernel BTF, when there is none.
    pub fn require_btf(&self, why: &str) -> Result<(), String> {
        if self.btf {
            Ok(())
        } else {
            Err(format!(
                "the kernel has no BTF (/sys/kernel/btf/vmlinux): {why}"
            ))
        }
    }

    /// `Err` unless raw tracepoints (and tp_btf programs, which attach the
    /// same way) can be attached.
    pub fn require_raw_tracepoints(&self) -> Result<(), String> {
        if self.raw_tracepoints {
            Ok(())
        } else {
            Err("raw tracepoints cannot be attached on this kernel".into())
        }
    }

    /// `Err` unless BPF ring buffers can be created.
    pub fn require_ringbuf(&self) -> Result<(), String> {
        if self.ringbuf {
            Ok(())
        } else {
            Err("BPF ring buffers are not supported (kernel 5.8+ needed)".into())
        }
    }

    /// `Err` off x86_64, for kinds that read `what` as x86_64 lays it out.
    pub fn require_x86_64(&self, what: &str) -> Result<(), String> {
        if self.arch == "x86_64" {
            Ok(())
        } else {
            Err(format!("{what} are x86_64's; this node is {}", self.arch))
        }
    }
}

/// Mount table lookup: the first mount point of filesystem type `fstype`.
fn mount_point(fstype: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, ty) = (fields.next()?, fields.next()?, fields.next()?);
        (ty == fstype).then(|| PathBuf::from(point))
    })
}

fn tracefs_events(path: &Path) -> bool {
    path.join("events").is_dir()
}

#[cfg(target_os = "linux")]
pub use linux::detect;

#[cfg(not(target_os = "linux"))]
pub fn detect() -> HostCapabilities {
    HostCapabilities {
        arch: std::env::consts::ARCH.into(),
        probe_error: Some("eBPF collectors need Linux".into()),
        ..Default::default()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use caps::{CapSet, Capability};

    pub fn detect() -> HostCapabilities {
        let uname = nix::sys::utsname::uname().ok();
        let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
        let mut caps = HostCapabilities {
            kernel_release: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            arch: std::env::consts::ARCH.into(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            cap_bpf: has(Capability::CAP_BPF),
            cap_perfmon: has(Capability::CAP_PERFMON),
            cap_sys_admin: has(Capability::CAP_SYS_ADMIN),
            cap_sys_resource: has(Capability::CAP_SYS_RESOURCE),
            perf_event_paranoid: std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            cgroup2_path: mount_point("cgroup2"),
            ..Default::default()
        };
        #[cfg(bpf)]
        bump_memlock();
        // Only BPF programs need tracefs: an agent without them mounts nothing.
        let may_mount = cfg!(bpf) && caps.cap_sys_admin;
        (caps.tracefs_path, caps.tracefs_mounted_by_agent) = ensure_tracefs(may_mount);
        #[cfg(bpf)]
        probes::probe_hooks(&mut caps);
        caps
    }

    /// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Without
    /// CAP_SYS_RESOURCE the bump fails; newer kernels do not need it.
    #[cfg(bpf)]
    fn bump_memlock() {
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads one valid, initialised rlimit struct.
        let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
        if ret != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11 (memcg accounting)"
            );
        }
    }

    /// Finds tracefs, mounting it at /sys/kernel/tracing when absent and allowed.
    fn ensure_tracefs(may_mount: bool) -> (Option<PathBuf>, bool) {
        let standard = Path::new("/sys/kernel/tracing");
        for candidate in [
            Some(standard.to_path_buf()),
            mount_point("tracefs"),
            Some(PathBuf::from("/sys/kernel/debug/tracing")),
        ]
        .into_iter()
        .flatten()
        {
            if tracefs_events(&candidate) {
                return (Some(candidate), false);
            }
        }
        if !may_mount {
            return (None, false);
        }
        match nix::mount::mount(
            Some("tracefs"),
            standard,
            Some("tracefs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) if tracefs_events(standard) => {
                tracing::info!(path = %standard.display(), "mounted tracefs");
                (Some(standard.to_path_buf()), true)
            }
            Ok(()) => (None, false),
            Err(e) => {
                tracing::warn!(error = %e, "tracefs is not mounted and mounting it failed");
                (None, false)
            }
        }
    }

    /// Hook types, found out by attaching empty programs.
    #[cfg(bpf)]
    mod probes {
        use super::HostCapabilities;
        use aya::Btf;
        use aya::programs::perf_event::{
            PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
        };
        use aya::programs::{
            BtfTracePoint, FEntry, KProbe, PerfEvent, RawTracePoint, UProbe, uprobe::UProbeScope,
        };

        /// A function for the uprobe probe to attach to. Never called by
        /// anyone but it must stay in the symbol table.
        #[unsafe(no_mangle)]
        #[inline(never)]
        pub extern "C" fn coral_uprobe_probe_target() {
            std::hint::black_box(());
        }

        pub fn probe_hooks(caps: &mut HostCapabilities) {
            use aya::maps::MapType;
            caps.ringbuf = aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false);
            caps.task_storage = aya::sys::is_map_supported(MapType::TaskStorage).unwrap_or(false);

            let mut bpf = match aya::Ebpf::load(coral_ebpf_programs::probes::OBJECT) {
                Ok(bpf) => bpf,
                Err(e) => {
                    caps.probe_error = Some(format!(
                        "cannot load BPF programs: {}",
                        coral_proto::error_chain(&e)
                    ));
                    return;
                }
            };
            caps.raw_tracepoints = attach_ok(&mut bpf, "probe_raw_tp", |p: &mut RawTracePoint| {
                p.load()?;
                p.attach("sys_enter").map(drop)
            });
            caps.kprobes = attach_ok(&mut bpf, "probe_kprobe", |p: &mut KProbe| {
                p.load()?;
                p.attach("vfs_read", 0).map(drop)
            });
            // Both need the kernel's BTF; without it they are simply absent.
            if let Ok(btf) = Btf::from_sys_fs() {
                caps.fentry = attach_ok(&mut bpf, "probe_fentry", |p: &mut FEntry| {
                    p.load("vfs_read", &btf)?;
                    p.attach().map(drop)
                });
                caps.tp_btf = attach_ok(&mut bpf, "probe_tp_btf", |p: &mut BtfTracePoint| {
                    p.load("sys_enter", &btf)?;
                    p.attach().map(drop)
                });
            }
            caps.uprobes = attach_ok(&mut bpf, "probe_uprobe", |p: &mut UProbe| {
                p.load()?;
                std::hint::black_box(coral_uprobe_probe_target as extern "C" fn());
                p.attach(
                    "coral_uprobe_probe_target",
                    "/proc/self/exe",
                    UProbeScope::CallingProcess,
                )
                .map(drop)
            });
            caps.perf_events = attach_ok(&mut bpf, "probe_perf_event", |p: &mut PerfEvent| {
                p.load()?;
                p.attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu: 0 },
                    SamplePolicy::Frequency(1),
                    false,
                )
                .map(drop)
            });
            // Dropping `bpf` detaches and unloads every probe.
        }

        fn attach_ok<'a, P>(
            bpf: &'a mut aya::Ebpf,
            name: &str,
            f: impl FnOnce(&mut P) -> Result<(), aya::programs::ProgramError>,
        ) -> bool
        where
            &'a mut P: TryFrom<&'a mut aya::programs::Program>,
            P: 'a,
        {
            let Some(program) = bpf.program_mut(name) else {
                return false;
            };
            let Ok(program) = <&mut P>::try_from(program) else {
                return false;
            };
            match f(program) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(probe = name, error = %coral_proto::error_chain(&e), "probe failed");
                    false
                }
            }
        }
    }
}
