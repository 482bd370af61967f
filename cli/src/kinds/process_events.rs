//! process-events for people: one execsnoop/exitsnoop-like line per exec or
//! exit, a summary line and a report of the aggregates (executables, exit
//! statuses, busiest parents), and the process tree built from the events.

use super::{Aggregate, Event, ViewOptions};
use crate::render::{align_right, duration_ns, table, top_list};
use coral_proto::v1::{
    self as pb, ProcessEvent, ProcessEventType, ProcessStats, collector_spec::Config,
};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::time::Duration;

pub const ABOUT: &str = "Execs and process exits: argv, exit code, signal, lifetime, container";
pub const TAKES_INTERVAL: bool = true;

/// process-events' own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "process-events")]
#[group(id = "process-events flags")]
pub struct Flags {
    /// Trace only the listed pids, not the processes they fork (by default
    /// a pid filter follows children).
    #[arg(long)]
    pub no_follow: bool,

    /// Exits of processes younger than this count as short-lived (default 1s).
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub short_lived: Option<Duration>,

    /// Arguments kept per exec (default 64).
    #[arg(long)]
    pub max_args: Option<u32>,

    /// Kernel ring buffer size in bytes, a power of two >= 4096 (for tests).
    #[arg(long, hide = true)]
    pub ring_buffer_bytes: Option<u32>,
}

pub fn config(flags: &Flags, interval_ns: u64) -> Config {
    Config::ProcessEvents(pb::ProcessEventsConfig {
        interval_ns,
        no_follow: flags.no_follow,
        short_lived_ns: flags.short_lived.map_or(0, |d| d.as_nanos() as u64),
        max_args: flags.max_args.unwrap_or(0),
        max_arg_bytes: 0,
        ring_buffer_bytes: flags.ring_buffer_bytes.unwrap_or(0),
    })
}

impl Aggregate for ProcessStats {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

impl Event for ProcessEvent {
    fn line(&self) -> String {
        event_line(self)
    }

    fn header(&self) -> Option<&'static str> {
        Some(EVENT_HEADER)
    }

    fn report(&self) -> String {
        event_report(self)
    }
}

/// Column titles of [`event_line`].
pub const EVENT_HEADER: &str =
    "TIME(UTC)    PID     PPID    COMM             EVENT LIFETIME CONTAINER    ARGS / EXIT";

/// Processes the tree keeps; later ones are counted, not shown.
const TREE_NODES: usize = 10_000;

/// `SIGKILL` for 9; `SIG42` for those without a name here.
pub fn signal_name(sig: u32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match sig {
        1..=31 => NAMES[sig as usize - 1].to_string(),
        _ => format!("SIG{sig}"),
    }
}

/// How a process ended: `exit 3`, `killed by SIGKILL`.
pub fn exit_status(exit_code: u32, signal: u32, core_dumped: bool) -> String {
    if signal == 0 {
        return format!("exit {exit_code}");
    }
    let core = if core_dumped { " (core dumped)" } else { "" };
    format!("killed by {}{core}", signal_name(signal))
}

/// An argument as a shell would need it: quoted when empty or when it holds
/// spaces, quotes or other specials.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// argv as one line (the file name when argv is empty), `...` when cut.
pub fn command_line(e: &ProcessEvent) -> String {
    let mut line = if e.argv.is_empty() {
        e.filename.clone()
    } else {
        e.argv
            .iter()
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if e.argv_truncated {
        line.push_str(" ...");
    }
    line
}

/// `HH:MM:SS.mmm` of a Unix time, in UTC.
fn time_of_day(unix_nano: u64) -> String {
    let ms = unix_nano / 1_000_000;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

fn short_container(e: &ProcessEvent) -> &str {
    super::short_container(e.container.as_ref())
}

/// One exec or exit, aligned under [`EVENT_HEADER`].
pub fn event_line(e: &ProcessEvent) -> String {
    let (what, lifetime, detail) = match e.r#type() {
        ProcessEventType::Exec => ("exec", "-".to_string(), command_line(e)),
        ProcessEventType::Exit => (
            "exit",
            duration_ns(e.lifetime_ns),
            exit_status(e.exit_code, e.signal, e.core_dumped),
        ),
        ProcessEventType::Unspecified => ("?", "-".to_string(), String::new()),
    };
    format!(
        "{:<12} {:<7} {:<7} {:<16} {:<5} {:>8} {:<12} {}",
        time_of_day(e.time_unix_nano),
        e.pid,
        e.ppid,
        e.comm,
        what,
        lifetime,
        short_container(e),
        detail
    )
}

/// One event under its column titles.
pub fn event_report(e: &ProcessEvent) -> String {
    format!("{EVENT_HEADER}\n{}\n", event_line(e))
}

/// Exits with a non-zero code, and exits by a signal.
fn failures(stats: &ProcessStats) -> (u64, u64) {
    let failed = stats
        .exit_statuses
        .iter()
        .filter(|s| s.signal == 0 && s.exit_code != 0)
        .map(|s| s.count)
        .sum();
    let killed = stats
        .exit_statuses
        .iter()
        .filter(|s| s.signal != 0)
        .map(|s| s.count)
        .sum();
    (failed, killed)
}

fn losses(stats: &ProcessStats) -> String {
    let mut out = String::new();
    if stats.dropped_events > 0 {
        let _ = write!(
            out,
            ", {} lost by the kernel ({} execs, {} exits)",
            stats.dropped_events, stats.dropped_execs, stats.dropped_exits
        );
    }
    if stats.untracked_children > 0 {
        let _ = write!(
            out,
            ", {} children not followed (map full)",
            stats.untracked_children
        );
    }
    out
}

/// The file name without its directories, for short lists.
fn base(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or(path)
}

/// One line for a live view that cannot redraw.
pub fn summary_line(stats: &ProcessStats) -> String {
    let (failed, killed) = failures(stats);
    let top: Vec<String> = stats
        .executables
        .iter()
        .take(3)
        .map(|x| format!("{} x{}", base(&x.filename), x.count))
        .collect();
    format!(
        "{:>8}  {} execs, {} exits ({failed} failed, {killed} killed), {} short-lived{}  {}",
        duration_ns(stats.elapsed_ns),
        stats.execs,
        stats.exits,
        stats.short_lived,
        losses(stats),
        top_list(&top, "; ")
    )
}

/// The full report: totals, then executables, exit statuses and parents.
pub fn report(stats: &ProcessStats, limit: usize) -> String {
    let (failed, killed) = failures(stats);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} execs, {} exits over {}: {failed} exited non-zero, {killed} killed by a signal, {} short-lived (under {}){}",
        stats.execs,
        stats.exits,
        duration_ns(stats.elapsed_ns),
        stats.short_lived,
        duration_ns(stats.short_lived_threshold_ns),
        losses(stats)
    );
    if !stats.executables.is_empty() {
        let mut t = table(["EXECUTABLE", "EXECS"]);
        for x in stats.executables.iter().take(limit) {
            t.add_row([x.filename.clone(), x.count.to_string()]);
        }
        let shown: u64 = stats.executables.iter().take(limit).map(|x| x.count).sum();
        let others = stats.execs.saturating_sub(shown);
        if others > 0 {
            t.add_row(["(others)".to_string(), others.to_string()]);
        }
        align_right(&mut t, [1]);
        let _ = write!(out, "\n{t}\n");
    }
    if !stats.exit_statuses.is_empty() {
        let mut t = table(["EXIT", "COUNT"]);
        for s in stats.exit_statuses.iter().take(limit) {
            t.add_row([
                exit_status(s.exit_code, s.signal, false),
                s.count.to_string(),
            ]);
        }
        align_right(&mut t, [1]);
        let _ = write!(out, "\n{t}\n");
    }
    if !stats.top_parents.is_empty() {
        let mut t = table(["PARENT", "COMM", "CHILDREN"]);
        for p in stats.top_parents.iter().take(limit) {
            let comm = if p.comm.is_empty() { "?" } else { &p.comm };
            t.add_row([p.pid.to_string(), comm.to_string(), p.children.to_string()]);
        }
        align_right(&mut t, [0, 2]);
        let _ = write!(out, "\n{t}\n");
    }
    out
}

/// A process of the tree: what its events said.
#[derive(Clone, Debug, Default)]
struct Node {
    ppid: u32,
    start: u64,
    comm: String,
    /// The last exec's command line, if it exec'd.
    command: Option<String>,
    /// How it ended and after how long, if it did.
    end: Option<(String, u64)>,
    container: String,
}

/// The process tree of a collector's events: who exec'd what under whom.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<u32, Node>,
    /// Processes not shown because the tree was full.
    left_out: u64,
}

impl Tree {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn add(&mut self, e: &ProcessEvent) {
        if !self.nodes.contains_key(&e.pid) && self.nodes.len() >= TREE_NODES {
            self.left_out += 1;
            return;
        }
        let node = self.nodes.entry(e.pid).or_default();
        // A parent that exits first hands its children to a reaper: the
        // parent first seen is the one that made the process.
        if node.start == 0 {
            node.ppid = e.ppid;
            node.start = e.start_unix_nano;
        }
        node.comm.clone_from(&e.comm);
        node.container = short_container(e).to_string();
        match e.r#type() {
            ProcessEventType::Exec => node.command = Some(command_line(e)),
            ProcessEventType::Exit => {
                node.end = Some((
                    exit_status(e.exit_code, e.signal, e.core_dumped),
                    e.lifetime_ns,
                ));
            }
            ProcessEventType::Unspecified => {}
        }
    }

    fn label(pid: u32, n: &Node) -> String {
        let mut s = format!("{pid} {}", n.command.as_deref().unwrap_or(&n.comm));
        if n.container != "-" {
            let _ = write!(s, "  <{}>", n.container);
        }
        match &n.end {
            Some((status, lifetime)) => {
                let _ = write!(s, "  [{status}, {}]", duration_ns(*lifetime));
            }
            None => s.push_str("  [running]"),
        }
        s
    }

    /// The tree, one process per line, children under their parent in
    /// start order; processes whose parent was not seen hang under a line
    /// naming that parent.
    pub fn render(&self) -> String {
        let mut children: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
        for (&pid, n) in &self.nodes {
            children.entry(n.ppid).or_default().push((n.start, pid));
        }
        for kids in children.values_mut() {
            kids.sort();
        }
        let mut out = String::new();
        let mut done = HashSet::new();
        for (&parent, kids) in &children {
            if self.nodes.contains_key(&parent) {
                continue;
            }
            let _ = writeln!(out, "{parent} (not traced)");
            self.render_children(&children, kids, "", &mut done, &mut out);
        }
        // Cycles (a reused pid as its own ancestor) have no root above.
        for (&pid, n) in &self.nodes {
            if !done.contains(&pid) {
                let _ = writeln!(out, "{}", Self::label(pid, n));
                done.insert(pid);
            }
        }
        if self.left_out > 0 {
            let _ = writeln!(out, "({} more processes not shown)", self.left_out);
        }
        out
    }

    fn render_children(
        &self,
        children: &BTreeMap<u32, Vec<(u64, u32)>>,
        kids: &[(u64, u32)],
        prefix: &str,
        done: &mut HashSet<u32>,
        out: &mut String,
    ) {
        for (i, &(_, pid)) in kids.iter().enumerate() {
            if !done.insert(pid) {
                continue;
            }
            let last = i + 1 == kids.len();
            let node = &self.nodes[&pid];
            let _ = writeln!(
                out,
                "{prefix}{}{}",
                if last { "└─ " } else { "├─ " },
                Self::label(pid, node)
            );
            if let Some(grand) = children.get(&pid) {
                let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
                self.render_children(children, grand, &deeper, done, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coral_proto::v1::{Container, ProcessExecCount, ProcessExitCount, ProcessParentCount};

    const T0: u64 = 1_796_156_097_000_000_000;

    fn exec(pid: u32, ppid: u32, argv: &[&str], at_ms: u64) -> ProcessEvent {
        ProcessEvent {
            r#type: ProcessEventType::Exec as i32,
            time_unix_nano: T0 + at_ms * 1_000_000,
            start_unix_nano: T0 + at_ms * 1_000_000 - 100_000,
            pid,
            tid: pid,
            ppid,
            comm: base(argv[0]).chars().take(15).collect(),
            filename: argv[0].to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn exit(of: &ProcessEvent, at_ms: u64, code: u32, signal: u32) -> ProcessEvent {
        let time = T0 + at_ms * 1_000_000;
        ProcessEvent {
            r#type: ProcessEventType::Exit as i32,
            time_unix_nano: time,
            exit_code: code,
            signal,
            lifetime_ns: time - of.start_unix_nano,
            argv: Vec::new(),
            filename: String::new(),
            ..of.clone()
        }
    }

    fn events() -> Vec<ProcessEvent> {
        let make = exec(200, 100, &["/usr/bin/make", "-j2"], 0);
        let mut cc = exec(201, 200, &["/usr/bin/cc", "-c", "a b.c", "-o", "a.o"], 5);
        cc.container = Some(Container {
            cgroup_path: "/system.slice/docker-3f4e2c1d0b9a8f7e.scope".into(),
            container_id: "3f4e2c1d0b9a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a29180706".into(),
            runtime: "docker".into(),
            pod_uid: String::new(),
        });
        let as_ = exec(202, 201, &["/usr/bin/as", "-o", "a.o"], 7);
        let sh = exec(203, 200, &["/bin/sh", "-c", "exit 2"], 30);
        let mut long = exec(204, 100, &["/usr/bin/python3", "-c", ""], 40);
        long.argv_truncated = true;
        vec![
            make.clone(),
            cc.clone(),
            as_.clone(),
            exit(&as_, 20, 0, 0),
            exit(&cc, 25, 0, 0),
            sh.clone(),
            exit(&sh, 31, 2, 0),
            long.clone(),
            exit(&long, 1540, 0, 9),
        ]
    }

    fn stats() -> ProcessStats {
        ProcessStats {
            elapsed_ns: 2_000_000_000,
            execs: 1204,
            exits: 1201,
            executables: vec![
                ProcessExecCount {
                    filename: "/usr/bin/cc".into(),
                    count: 1000,
                },
                ProcessExecCount {
                    filename: "/usr/bin/as".into(),
                    count: 200,
                },
                ProcessExecCount {
                    filename: "/bin/sh".into(),
                    count: 3,
                },
                ProcessExecCount {
                    filename: "/usr/bin/make".into(),
                    count: 1,
                },
            ],
            exit_statuses: vec![
                ProcessExitCount {
                    exit_code: 0,
                    signal: 0,
                    count: 1190,
                },
                ProcessExitCount {
                    exit_code: 2,
                    signal: 0,
                    count: 10,
                },
                ProcessExitCount {
                    exit_code: 0,
                    signal: 9,
                    count: 1,
                },
            ],
            short_lived: 1199,
            short_lived_threshold_ns: 1_000_000_000,
            top_parents: vec![
                ProcessParentCount {
                    pid: 200,
                    comm: "make".into(),
                    children: 1003,
                },
                ProcessParentCount {
                    pid: 201,
                    comm: String::new(),
                    children: 200,
                },
            ],
            dropped_events: 5,
            dropped_execs: 4,
            dropped_exits: 1,
            ..Default::default()
        }
    }

    #[test]
    fn lines_like_execsnoop_and_exitsnoop() {
        let ev = events();
        insta::assert_snapshot!(
            std::iter::once(EVENT_HEADER.to_string())
                .chain(ev.iter().map(event_line))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&stats(), 3));
    }

    #[test]
    fn summary_names_failures_losses_and_top_executables() {
        assert_eq!(
            summary_line(&stats()),
            "   2.00s  1204 execs, 1201 exits (10 failed, 1 killed), 1199 short-lived, 5 lost by the kernel (4 execs, 1 exits)  cc x1000; as x200; sh x3"
        );
    }

    #[test]
    fn tree_snapshot() {
        let mut tree = Tree::default();
        for e in events() {
            tree.add(&e);
        }
        insta::assert_snapshot!(tree.render());
    }

    #[test]
    fn statuses_and_arguments_read_like_a_shell() {
        assert_eq!(exit_status(0, 0, false), "exit 0");
        assert_eq!(exit_status(0, 11, true), "killed by SIGSEGV (core dumped)");
        assert_eq!(signal_name(64), "SIG64");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("--opt=/x/y.c"), "--opt=/x/y.c");
        assert_eq!(time_of_day(T0 + 123_456_789), "20:14:57.123");
    }

    #[test]
    fn the_tree_is_bounded() {
        let mut tree = Tree::default();
        for pid in 0..(TREE_NODES as u32 + 5) {
            tree.add(&exec(pid + 1000, 1, &["/bin/true"], 1));
        }
        assert!(tree.render().ends_with("(5 more processes not shown)\n"));
    }
}
