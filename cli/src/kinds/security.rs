//! security for people: one line per credential or privilege event (who,
//! what, the ids or capabilities before and after, the result); a report
//! with the events per type, per syscall and result, and per process.

use super::{Aggregate, Event, ViewOptions, short_container};
use crate::render::{align_right, duration_ns, table, timestamp};
use coral_proto::v1::{
    self as pb, Credentials, SecurityEvent, SecurityEventType, SecurityStats,
    collector_spec::Config,
};
use std::fmt::Write;

pub const ABOUT: &str = "Credential and privilege events: setuid family, capset, setuid execs, ptrace, modules, bpf, mounts";
pub const TAKES_INTERVAL: bool = true;

/// security's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "security")]
#[group(id = "security flags")]
pub struct Flags {
    /// Syscalls reported one by one, by name, comma-separated (default: the
    /// "suspicious" set of docs/collectors/security.md; `default` stands for
    /// it, `none` reports none).
    #[arg(long, value_delimiter = ',')]
    pub syscalls: Vec<String>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::Security(pb::SecurityConfig {
        interval_ns,
        syscalls: flags.syscalls.clone(),
    })
}

impl Aggregate for SecurityStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

impl Event for SecurityEvent {
    fn line(&self) -> String {
        event_line(self)
    }

    fn header(&self) -> Option<&'static str> {
        Some(HEADER)
    }
}

const HEADER: &str = "TIME                     PID    PPID COMM            EVENT        SYSCALL       RESULT  DETAILS";

/// "credentials", "capset", ...
pub fn type_name(t: i32) -> &'static str {
    match SecurityEventType::try_from(t) {
        Ok(SecurityEventType::Credentials) => "credentials",
        Ok(SecurityEventType::Capset) => "capset",
        Ok(SecurityEventType::PrivilegedExec) => "priv-exec",
        Ok(SecurityEventType::Ptrace) => "ptrace",
        Ok(SecurityEventType::ModuleLoad) => "module-load",
        Ok(SecurityEventType::BpfProgLoad) => "bpf-load",
        Ok(SecurityEventType::Mount) => "mount",
        Ok(SecurityEventType::Syscall) => "syscall",
        Ok(SecurityEventType::Unspecified) | Err(_) => "?",
    }
}

/// "uid 0->65534 euid 0->65534" for the ids that changed (all of them,
/// unchanged, when none did).
fn id_changes(old: &Credentials, new: &Credentials, gids: bool) -> String {
    let pairs = if gids {
        [
            ("gid", old.gid, new.gid),
            ("egid", old.egid, new.egid),
            ("sgid", old.sgid, new.sgid),
            ("fsgid", old.fsgid, new.fsgid),
        ]
    } else {
        [
            ("uid", old.uid, new.uid),
            ("euid", old.euid, new.euid),
            ("suid", old.suid, new.suid),
            ("fsuid", old.fsuid, new.fsuid),
        ]
    };
    let changed: Vec<String> = pairs
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(n, a, b)| format!("{n} {a}->{b}"))
        .collect();
    if changed.is_empty() {
        let all: Vec<String> = pairs.iter().map(|(n, a, _)| format!("{n} {a}")).collect();
        format!("{} (unchanged)", all.join(" "))
    } else {
        changed.join(" ")
    }
}

fn cap_changes(e: &SecurityEvent) -> String {
    let mut parts: Vec<String> = e.caps_lost.iter().map(|c| format!("-{c}")).collect();
    parts.extend(e.caps_gained.iter().map(|c| format!("+{c}")));
    if parts.len() > 4 {
        let n = parts.len();
        parts.truncate(3);
        parts.push(format!("({} more)", n - 3));
    }
    parts.join(" ")
}

/// What the event is about, by type.
pub fn details(e: &SecurityEvent) -> String {
    let default = Credentials::default();
    let old = e.old_credentials.as_ref().unwrap_or(&default);
    let new = e.new_credentials.as_ref().unwrap_or(&default);
    match SecurityEventType::try_from(e.r#type) {
        Ok(SecurityEventType::Credentials) => id_changes(old, new, e.syscall.contains("gid")),
        Ok(SecurityEventType::Capset) => {
            let changes = cap_changes(e);
            format!(
                "effective {:#x}->{:#x} permitted {:#x}->{:#x}{}",
                old.cap_effective,
                new.cap_effective,
                old.cap_permitted,
                new.cap_permitted,
                if changes.is_empty() {
                    String::new()
                } else {
                    format!(" ({changes})")
                }
            )
        }
        Ok(SecurityEventType::PrivilegedExec) => {
            let mut why = Vec::new();
            if e.setuid {
                why.push("setuid");
            }
            if e.setgid {
                why.push("setgid");
            }
            if e.file_caps {
                why.push("caps");
            }
            let gained = e.caps_gained.len();
            format!(
                "{} ({} {:o}) {}{}",
                e.path,
                why.join("+"),
                e.file_mode,
                id_changes(old, new, false),
                if gained > 0 {
                    format!(", +{gained} capabilities")
                } else {
                    String::new()
                }
            )
        }
        Ok(SecurityEventType::Ptrace) => format!("{} pid {}", e.request, e.target_pid),
        Ok(SecurityEventType::ModuleLoad) => {
            let file = if e.path.is_empty() { "-" } else { &e.path };
            format!("file {file} params {:?}", e.name)
        }
        Ok(SecurityEventType::BpfProgLoad) => format!(
            "{} {:?} ({} insns)",
            e.bpf_prog_type, e.name, e.bpf_insn_count
        ),
        Ok(SecurityEventType::Mount) => {
            let mut parts = Vec::new();
            if !e.fs_type.is_empty() {
                parts.push(e.fs_type.clone());
            }
            if !e.source.is_empty() {
                parts.push(e.source.clone());
            }
            if !e.path.is_empty() {
                parts.push(format!("on {}", e.path));
            }
            parts.push(format!("flags {:#x}", e.flags));
            parts.join(" ")
        }
        Ok(SecurityEventType::Syscall) => {
            let args: Vec<String> = e.args.iter().map(|a| format!("{a:#x}")).collect();
            format!("({})", args.join(", "))
        }
        Ok(SecurityEventType::Unspecified) | Err(_) => String::new(),
    }
}

/// One line per event, aligned under [`HEADER`].
pub fn event_line(e: &SecurityEvent) -> String {
    let result = if e.errno != 0 {
        e.error.clone()
    } else {
        e.result.to_string()
    };
    let container = short_container(e.container.as_ref());
    format!(
        "{} {:>7} {:>7} {:<15} {:<12} {:<13} {:<7} {}{}",
        timestamp(e.time_unix_nano),
        e.pid,
        e.ppid,
        e.comm,
        type_name(e.r#type),
        e.syscall,
        result,
        details(e),
        if container == "-" {
            String::new()
        } else {
            format!(" [container {container}]")
        }
    )
}

fn totals(stats: &SecurityStats) -> (u64, u64) {
    stats
        .types
        .iter()
        .fold((0, 0), |(n, f), t| (n + t.events, f + t.failed))
}

/// The full report: per type, per syscall and result, per process.
pub fn report(stats: &SecurityStats, limit: usize) -> String {
    let mut out = String::new();
    let (events, failed) = totals(stats);
    let _ = write!(
        out,
        "{events} security events ({failed} failed) over {} from {} processes",
        duration_ns(stats.elapsed_ns),
        stats.processes.len()
    );
    if stats.dropped_events > 0 {
        let _ = write!(out, " ({} lost by the kernel)", stats.dropped_events);
    }
    out.push('\n');
    if !stats.types.is_empty() {
        out.push_str("\nby type:\n");
        let mut t = table(["EVENT", "COUNT", "FAILED"]);
        for c in &stats.types {
            t.add_row([
                type_name(c.r#type).to_string(),
                c.events.to_string(),
                c.failed.to_string(),
            ]);
        }
        align_right(&mut t, [1, 2]);
        out.push_str(&t.to_string());
        out.push('\n');
    }
    if !stats.syscalls.is_empty() {
        out.push_str("\nby syscall:\n");
        let mut t = table(["SYSCALL", "RESULT", "COUNT"]);
        for c in stats.syscalls.iter().take(limit) {
            t.add_row([
                c.syscall.clone(),
                if c.error.is_empty() {
                    "ok".into()
                } else {
                    c.error.clone()
                },
                c.count.to_string(),
            ]);
        }
        align_right(&mut t, [2]);
        out.push_str(&t.to_string());
        out.push('\n');
    }
    if !stats.processes.is_empty() {
        out.push_str("\nby process:\n");
        let mut t = table(["PID", "COMM", "EVENTS", "FAILED", "CONTAINER"]);
        for p in stats.processes.iter().take(limit) {
            t.add_row([
                p.pid.to_string(),
                p.comm.clone(),
                p.events.to_string(),
                p.failed.to_string(),
                short_container(p.container.as_ref()).to_string(),
            ]);
        }
        align_right(&mut t, [0, 2, 3]);
        out.push_str(&t.to_string());
        out.push('\n');
    }
    let reported = if stats.reported_syscalls.is_empty() {
        "none".to_string()
    } else {
        stats.reported_syscalls.join(", ")
    };
    let _ = writeln!(out, "\nsyscalls reported as events: {reported}");
    out
}

/// One line for a live view that cannot redraw.
pub fn summary_line(stats: &SecurityStats) -> String {
    let (events, failed) = totals(stats);
    let by_type: Vec<String> = stats
        .types
        .iter()
        .map(|t| format!("{} {}", type_name(t.r#type), t.events))
        .collect();
    format!(
        "{:>8}  {events} events  {failed} failed  {}",
        duration_ns(stats.elapsed_ns),
        by_type.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> SecurityStats {
        SecurityStats {
            elapsed_ns: 2_000_000_000,
            types: vec![
                pb::SecurityTypeCount {
                    r#type: SecurityEventType::Credentials.into(),
                    events: 3,
                    failed: 1,
                },
                pb::SecurityTypeCount {
                    r#type: SecurityEventType::Mount.into(),
                    events: 1,
                    failed: 1,
                },
            ],
            syscalls: vec![
                pb::SecuritySyscallCount {
                    syscall: "setresuid".into(),
                    error: String::new(),
                    count: 2,
                },
                pb::SecuritySyscallCount {
                    syscall: "mount".into(),
                    error: "EPERM".into(),
                    count: 1,
                },
                pb::SecuritySyscallCount {
                    syscall: "setuid".into(),
                    error: "EPERM".into(),
                    count: 1,
                },
            ],
            processes: vec![pb::SecurityProcessCount {
                pid: 4242,
                comm: "coral-workload".into(),
                events: 4,
                failed: 2,
                ..Default::default()
            }],
            dropped_events: 0,
            reported_syscalls: vec!["chroot".into(), "unshare".into()],
        }
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 20));
    }

    #[test]
    fn event_lines_show_what_changed_and_the_result() {
        let creds = |uid, eff| Credentials {
            uid,
            euid: uid,
            suid: uid,
            fsuid: uid,
            cap_effective: eff,
            ..Default::default()
        };
        let setresuid = SecurityEvent {
            r#type: SecurityEventType::Credentials.into(),
            pid: 7,
            comm: "w".into(),
            syscall: "setresuid".into(),
            old_credentials: Some(creds(0, 0)),
            new_credentials: Some(creds(65534, 0)),
            ..Default::default()
        };
        let line = event_line(&setresuid);
        assert!(
            line.contains("uid 0->65534 euid 0->65534 suid 0->65534"),
            "{line}"
        );
        let mount = SecurityEvent {
            r#type: SecurityEventType::Mount.into(),
            syscall: "mount".into(),
            result: -1,
            errno: 1,
            error: "EPERM".into(),
            fs_type: "tmpfs".into(),
            source: "none".into(),
            path: "/mnt".into(),
            ..Default::default()
        };
        let line = event_line(&mount);
        assert!(
            line.contains("EPERM") && line.contains("tmpfs none on /mnt"),
            "{line}"
        );
        let capset = SecurityEvent {
            r#type: SecurityEventType::Capset.into(),
            syscall: "capset".into(),
            old_credentials: Some(creds(0, 0x3)),
            new_credentials: Some(creds(0, 0x1)),
            caps_lost: vec!["CAP_DAC_OVERRIDE".into()],
            ..Default::default()
        };
        let line = event_line(&capset);
        assert!(
            line.contains("effective 0x3->0x1") && line.contains("-CAP_DAC_OVERRIDE"),
            "{line}"
        );
    }
}
