//! process-events end to end: the real agent loads the tp_btf programs, the
//! real CLI drives it, and `coral-procs` makes a known set of processes
//! (execs, exit codes, a signal, threads, grandchildren), so every event is
//! expected exactly.

use coral_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// SIGUSR1: the `signal` child is killed with it.
const SIGUSR1: u64 = 10;

/// A running `coral-procs`.
struct Procs(ReadyChild);

/// The processes one `go` made.
#[derive(Debug)]
struct Plan {
    /// role -> pid, for the children.
    children: HashMap<String, u32>,
    /// (pid, parent pid) of the grandchildren.
    grandchildren: Vec<(u32, u32)>,
    /// The child that never exec'd.
    noexec: u32,
}

impl Plan {
    /// Every process of the plan.
    fn pids(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.children.values().copied().collect();
        all.extend(self.grandchildren.iter().map(|g| g.0));
        all.push(self.noexec);
        all
    }

    fn child(&self, role: &str) -> u32 {
        self.children[role]
    }
}

impl Procs {
    fn spawn() -> Procs {
        Procs(ReadyChild::spawn(&mut Command::new(bin("coral-procs"))))
    }

    fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Sends a command; the lines it printed before `done`.
    fn command(&mut self, cmd: &str) -> Vec<String> {
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.0.stdout.read_line(&mut line).unwrap() > 0,
                "coral-procs ended"
            );
            match line.trim() {
                "done" => return lines,
                l => lines.push(l.to_string()),
            }
        }
    }

    fn go(&mut self) -> Plan {
        let mut plan = Plan {
            children: HashMap::new(),
            grandchildren: Vec::new(),
            noexec: 0,
        };
        for line in self.command("go") {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["child", pid, role] => {
                    plan.children.insert(role.to_string(), pid.parse().unwrap());
                }
                ["grandchild", pid, parent] => plan
                    .grandchildren
                    .push((pid.parse().unwrap(), parent.parse().unwrap())),
                ["noexec", pid] => plan.noexec = pid.parse().unwrap(),
                _ => panic!("coral-procs said {line:?}"),
            }
        }
        assert_eq!(plan.children.len(), 7, "{plan:?}");
        assert_eq!(plan.grandchildren.len(), 2, "{plan:?}");
        plan
    }

    /// Closes stdin: the process exits (0) and is waited for.
    fn end(mut self) {
        drop(self.0.stdin.take());
        let status = self.0.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.child.wait();
    }
}

fn start(agent: &Agent, args: &[&str]) -> (String, Vec<u64>) {
    let mut full = vec!["--kind", "process-events", "--duration", "2m"];
    full.extend_from_slice(args);
    let info = agent.start_collector(&full);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    let ids = info["bpfProgramIds"]
        .as_array()
        .expect("program ids")
        .iter()
        .map(u64_of)
        .collect();
    (info["id"].as_str().unwrap().to_string(), ids)
}

/// Stops the collector; its process events and its final ProcessStats.
fn stop(agent: &Agent, id: &str) -> (Vec<Value>, Value) {
    let info = agent.coral_json(&["tap", "stop", id]).remove(0);
    assert_eq!(info["state"], "COLLECTOR_STATE_STOPPED", "{info}");
    let records = agent.records(id);
    let last = records.last().expect("records");
    assert_eq!(last["final"], true, "{last}");
    let stats = last["processStats"].clone();
    assert!(
        stats.is_object(),
        "the final record is ProcessStats: {last}"
    );
    let events = records
        .iter()
        .filter_map(|r| r.get("processEvent").cloned())
        .collect();
    (events, stats)
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    let ty = format!("PROCESS_EVENT_TYPE_{ty}");
    events.iter().filter(|e| e["type"] == ty).collect()
}

fn pid_of(e: &Value) -> u32 {
    u64_of(&e["pid"]) as u32
}

/// The one event of type `ty` for `pid` (panics unless there is exactly one).
fn one<'a>(events: &'a [Value], ty: &str, pid: u32) -> &'a Value {
    let found: Vec<_> = of_type(events, ty)
        .into_iter()
        .filter(|e| pid_of(e) == pid)
        .collect();
    assert_eq!(found.len(), 1, "{ty} events of {pid}: {found:?}");
    found[0]
}

fn argv(e: &Value) -> Vec<String> {
    e["argv"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// (exit code, signal) of an exit event.
fn status(e: &Value) -> (u64, u64) {
    (u64_of(&e["exitCode"]), u64_of(&e["signal"]))
}

/// Checks every exit of the plan: exactly one per process, with its status,
/// parent and a plausible lifetime.
fn check_exits(events: &[Value], plan: &Plan, parent: u32) {
    let expected: [(&str, (u64, u64)); 7] = [
        ("exit0", (0, 0)),
        ("exit3", (3, 0)),
        ("exit42", (42, 0)),
        ("signal", (0, SIGUSR1)),
        ("threads", (7, 0)),
        ("leader", (9, 0)),
        ("spawn", (0, 0)),
    ];
    for (role, want) in expected {
        let e = one(events, "EXIT", plan.child(role));
        assert_eq!(status(e), want, "{role}: {e}");
        assert_eq!(u64_of(&e["ppid"]), u64::from(parent), "{role}: {e}");
        assert_ne!(e["coreDumped"], true, "{role}: {e}");
        let lifetime = Duration::from_nanos(u64_of(&e["lifetimeNs"]));
        assert!(
            lifetime > Duration::ZERO && lifetime < Duration::from_secs(20),
            "{role}: {e}"
        );
    }
    // The leader left first: the last thread of the process was another one,
    // after the other thread's 100 ms sleep.
    let leader = one(events, "EXIT", plan.child("leader"));
    assert_ne!(u64_of(&leader["tid"]), u64_of(&leader["pid"]), "{leader}");
    assert!(u64_of(&leader["lifetimeNs"]) >= 100_000_000, "{leader}");
    let threads = one(events, "EXIT", plan.child("threads"));
    assert!(u64_of(&threads["lifetimeNs"]) >= 10_000_000, "{threads}");
    for &(pid, ppid) in &plan.grandchildren {
        let e = one(events, "EXIT", pid);
        assert_eq!(status(e), (5, 0), "{e}");
        assert_eq!(u64_of(&e["ppid"]), u64::from(ppid), "{e}");
    }
    let e = one(events, "EXIT", plan.noexec);
    assert_eq!(status(e), (127, 0), "{e}");
    assert_eq!(e["comm"], "coral-procs", "{e}");
}

/// Checks every exec of the plan: exactly one per exec'ing process, with its
/// file, argv and parent.
fn check_execs(events: &[Value], plan: &Plan, parent: u32) {
    let path = bin("coral-procs").to_string_lossy().into_owned();
    let expected: [(&str, &[&str]); 7] = [
        ("exit0", &["child", "exit", "0", "marker-a"]),
        ("exit3", &["child", "exit", "3", "two words", ""]),
        ("exit42", &["child", "exit", "42"]),
        ("signal", &["child", "wait"]),
        ("threads", &["child", "threads", "4", "7"]),
        ("leader", &["child", "leader-first", "9"]),
        ("spawn", &["child", "spawn", "2", "5"]),
    ];
    let with_path = |rest: &[&str]| -> Vec<String> {
        std::iter::once(path.clone())
            .chain(rest.iter().map(|s| s.to_string()))
            .collect()
    };
    for (role, rest) in expected {
        let e = one(events, "EXEC", plan.child(role));
        assert_eq!(argv(e), with_path(rest), "{role}: {e}");
        assert_eq!(e["filename"], path.as_str(), "{role}: {e}");
        assert_eq!(u64_of(&e["ppid"]), u64::from(parent), "{role}: {e}");
        assert_eq!(u64_of(&e["tid"]), u64_of(&e["pid"]), "{role}: {e}");
        assert_eq!(e["comm"], "coral-procs", "{role}: {e}");
        assert_ne!(e["argvTruncated"], true, "{role}: {e}");
        assert!(
            u64_of(&e["startUnixNano"]) <= u64_of(&e["timeUnixNano"]),
            "{e}"
        );
    }
    for (i, &(pid, ppid)) in plan.grandchildren.iter().enumerate() {
        let e = one(events, "EXEC", pid);
        let gc = format!("gc-{i}");
        assert_eq!(argv(e), with_path(&["child", "exit", "5", &gc]), "{e}");
        assert_eq!(u64_of(&e["ppid"]), u64::from(ppid), "{e}");
    }
    assert!(
        of_type(events, "EXEC")
            .iter()
            .all(|e| pid_of(e) != plan.noexec),
        "a failed exec is no exec"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn children_followed_with_exact_execs_exits_codes_signal_and_argv() {
    require_kernel();
    let agent = Agent::start(&[]);
    let mut target = Procs::spawn();
    let mut other = Procs::spawn();
    let (id, _) = start(&agent, &["--pid", &target.pid().to_string()]);
    let plan = target.go();
    let other_plan = other.go();
    let (events, stats) = stop(&agent, &id);

    // Exactly the plan's processes, and nothing of the other run.
    assert_eq!(of_type(&events, "EXEC").len(), 9, "{events:#?}");
    assert_eq!(of_type(&events, "EXIT").len(), 10, "{events:#?}");
    let mine = plan.pids();
    assert!(
        events.iter().all(|e| mine.contains(&pid_of(e))),
        "{events:#?}"
    );
    assert!(other_plan.pids().iter().all(|p| !mine.contains(p)));
    check_execs(&events, &plan, target.pid());
    check_exits(&events, &plan, target.pid());

    // The aggregates agree with the events.
    assert_eq!(u64_of(&stats["execs"]), 9, "{stats}");
    assert_eq!(u64_of(&stats["exits"]), 10, "{stats}");
    assert_eq!(u64_of(&stats["droppedEvents"]), 0, "{stats}");
    assert_eq!(u64_of(&stats["shortLived"]), 10, "{stats}");
    let path = bin("coral-procs").to_string_lossy().into_owned();
    assert_eq!(
        stats["executables"][0]["filename"],
        path.as_str(),
        "{stats}"
    );
    assert_eq!(u64_of(&stats["executables"][0]["count"]), 9, "{stats}");
    let statuses: BTreeMap<(u64, u64), u64> = stats["exitStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                (u64_of(&s["exitCode"]), u64_of(&s["signal"])),
                u64_of(&s["count"]),
            )
        })
        .collect();
    let want: BTreeMap<(u64, u64), u64> = [
        ((0, 0), 2),
        ((3, 0), 1),
        ((5, 0), 2),
        ((7, 0), 1),
        ((9, 0), 1),
        ((42, 0), 1),
        ((127, 0), 1),
        ((0, SIGUSR1), 1),
    ]
    .into();
    assert_eq!(statuses, want, "{stats}");
    let parents: Vec<(u64, u64)> = stats["topParents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (u64_of(&p["pid"]), u64_of(&p["children"])))
        .collect();
    assert_eq!(
        parents,
        vec![
            (u64::from(target.pid()), 8),
            (u64::from(plan.child("spawn")), 2)
        ],
        "{stats}"
    );

    // For people: execsnoop/exitsnoop-like lines and the tree.
    let out = agent.coral(&["tap", "events", &id, "--tree"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "marker-a",
        "'two words'",
        "exit 42",
        "killed by SIGUSR1",
        "9 execs",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    let line_of = |needle: &str| -> &str {
        text.lines()
            .find(|l| l.contains(needle) && l.contains("─"))
            .unwrap_or_else(|| panic!("{needle:?} not in the tree:\n{text}"))
    };
    let indent = |l: &str| l.chars().take_while(|&c| c != '─').count();
    let spawn_line = line_of(&format!("{} ", plan.child("spawn")));
    let gc_line = line_of("gc-0");
    assert!(indent(gc_line) > indent(spawn_line), "{text}");
}

#[test]
#[ignore = "needs root and BPF"]
fn no_follow_traces_only_the_listed_pid() {
    require_kernel();
    let agent = Agent::start(&[]);
    let mut target = Procs::spawn();
    let pid = target.pid();
    let (id, ids) = start(&agent, &["--pid", &pid.to_string(), "--no-follow"]);
    // Not following children: exec and exit programs only.
    assert_eq!(ids.len(), 2, "{ids:?}");
    target.go();
    target.end();
    let (events, stats) = stop(&agent, &id);
    // The workload itself exits (0); none of its children is seen.
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = one(&events, "EXIT", pid);
    assert_eq!(status(e), (0, 0), "{e}");
    assert_eq!(u64_of(&stats["execs"]), 0, "{stats}");
}

#[test]
#[ignore = "needs root and BPF"]
fn exit_hook_of_older_kernels_counts_each_process_once() {
    require_kernel();
    // Kernels before 6.16 have no group_dead: the agent reads signal->live.
    let agent = Agent::start_at(&socket_path(), &[], &[("CORAL_PROC_EXIT_HOOK", "live")]);
    let mut target = Procs::spawn();
    let (id, ids) = start(&agent, &["--pid", &target.pid().to_string()]);
    let names: Vec<String> = ids
        .iter()
        .map(|p| {
            let out = Command::new("bpftool")
                .args(["-j", "prog", "show", "id", &p.to_string()])
                .output()
                .expect("running bpftool");
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            v["name"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    // bpftool names programs from their BTF (the kernel's own name keeps 15 bytes).
    assert!(
        names
            .iter()
            .any(|n| n == "coral_pe_exit_live" || n == "coral_pe_exit_l"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "coral_pe_exit"), "{names:?}");
    let plan = target.go();
    let (events, _) = stop(&agent, &id);
    assert_eq!(of_type(&events, "EXIT").len(), 10, "{events:#?}");
    check_exits(&events, &plan, target.pid());
}

#[test]
#[ignore = "needs root and BPF"]
fn a_burst_past_the_ring_buffer_is_counted_and_nothing_stays_attached() {
    require_kernel();
    const N: u64 = 300;
    let agent = Agent::start(&[]);
    let mut target = Procs::spawn();
    // One page: three exec events fit, drained every 100 ms.
    let (id, prog_ids) = start(
        &agent,
        &[
            "--pid",
            &target.pid().to_string(),
            "--ring-buffer-bytes",
            "4096",
        ],
    );
    assert_eq!(prog_ids.len(), 3, "fork, exec, exit: {prog_ids:?}");
    let loaded = loaded_prog_ids();
    assert!(prog_ids.iter().all(|p| loaded.contains(p)), "{prog_ids:?}");
    target.command(&format!("burst {N}"));
    let (events, stats) = stop(&agent, &id);

    // Every exec and exit either reached the agent or was counted as lost.
    let execs = of_type(&events, "EXEC").len() as u64;
    let exits = of_type(&events, "EXIT").len() as u64;
    assert_eq!(u64_of(&stats["execs"]), execs, "{stats}");
    assert_eq!(u64_of(&stats["exits"]), exits, "{stats}");
    assert_eq!(execs + u64_of(&stats["droppedExecs"]), N, "{stats}");
    assert_eq!(exits + u64_of(&stats["droppedExits"]), N, "{stats}");
    assert!(u64_of(&stats["droppedExecs"]) > 0, "no loss: {stats}");
    assert_eq!(
        u64_of(&stats["droppedEvents"]),
        u64_of(&stats["droppedExecs"]) + u64_of(&stats["droppedExits"])
    );
    // Said so to people too, and in the collector's info (`tap get`).
    let out = agent.coral(&["tap", "events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lost by the kernel"), "{text}");
    let info = agent.get(&id);
    assert_eq!(
        u64_of(&info["kernelLost"]),
        u64_of(&stats["droppedEvents"]),
        "{info}"
    );
    let out = agent.coral(&["tap", "get", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lost = format!("kernel losses  {}", u64_of(&stats["droppedEvents"]));
    assert!(text.contains(&lost), "{text}");

    // The agent is fine, and the kernel holds nothing of the collector.
    assert!(agent.coral(&["caps"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let loaded = loaded_prog_ids();
        let linked = linked_prog_ids();
        let left: Vec<_> = prog_ids
            .iter()
            .filter(|p| loaded.contains(p) || linked.contains(p))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "programs {left:?} still loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (again, _) = start(&agent, &["--pid", &target.pid().to_string()]);
    target.command("burst 3");
    let (events, stats) = stop(&agent, &again);
    assert_eq!(of_type(&events, "EXEC").len(), 3, "{events:#?}");
    assert_eq!(u64_of(&stats["droppedEvents"]), 0, "{stats}");
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
#[ignore = "needs root and BPF"]
fn container_id_from_a_docker_scope_cgroup() {
    require_kernel();
    let scope = DockerScope::create();
    let agent = Agent::start(&[]);
    let mut inside = Procs::spawn();
    let mut outside = Procs::spawn();
    scope.add(inside.pid());
    let pids = [inside.pid().to_string(), outside.pid().to_string()];
    let (by_pid, _) = start(&agent, &["--pid", &pids[0], "--pid", &pids[1]]);
    // The cgroup filter, on the slice: its descendants are included.
    let (by_cgroup, _) = start(&agent, &["--cgroup", path_str(&scope.slice)]);
    // syscall-stats' per-process rows carry the container too.
    // Outlives the test: under TCG on 6.1 it took more than the default 60 s.
    let life = secs_arg(patience(Duration::from_secs(60)));
    let syscalls = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--per-process",
        "--pid",
        &pids[0],
        "--pid",
        &pids[1],
        "--duration",
        &life,
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let plan = inside.go();
    let other = outside.go();
    let (events, _) = stop(&agent, &by_pid);
    let (in_cgroup, _) = stop(&agent, &by_cgroup);
    agent.coral_json(&["tap", "stop", &syscalls]);
    let per_process = agent.final_syscalls(&syscalls)["processes"].clone();
    let row = |pid: u32| -> &Value {
        per_process
            .as_array()
            .and_then(|a| a.iter().find(|p| u64_of(&p["pid"]) == u64::from(pid)))
            .unwrap_or_else(|| panic!("no row for {pid}: {per_process}"))
    };
    let c = &row(inside.pid())["container"];
    assert_eq!(c["containerId"], scope.id.as_str(), "{per_process}");
    assert_eq!(c["runtime"], "docker", "{per_process}");
    assert_eq!(c["cgroupPath"], scope.relative().as_str(), "{per_process}");
    let c = &row(outside.pid())["container"];
    assert_eq!(c["cgroupPath"], "/", "{per_process}");
    assert!(c.get("containerId").is_none(), "{per_process}");

    let mine = plan.pids();
    let theirs = other.pids();
    assert_eq!(events.len(), 38, "19 events per plan: {events:#?}");
    for e in &events {
        let c = &e["container"];
        if mine.contains(&pid_of(e)) {
            assert_eq!(c["containerId"], scope.id.as_str(), "{e}");
            assert_eq!(c["runtime"], "docker", "{e}");
            assert_eq!(c["cgroupPath"], scope.relative().as_str(), "{e}");
            assert!(c.get("podUid").is_none(), "{e}");
        } else {
            assert!(theirs.contains(&pid_of(e)), "{e}");
            assert!(c.get("containerId").is_none(), "{e}");
        }
    }
    // Only the processes inside the cgroup, all of them.
    assert_eq!(in_cgroup.len(), 19, "{in_cgroup:#?}");
    assert!(in_cgroup.iter().all(|e| mine.contains(&pid_of(e))));

    // People see the short container id, in the tree of the processes.
    let out = agent.coral(&["tap", "events", &by_pid, "--tree"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let spawn = plan.child("spawn").to_string();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("─ {spawn} ")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&format!("<{}>", &scope.id[..12])), "{text}");
}
