//! syscall-stats end to end: the real agent loads the real BPF program, the
//! real CLI drives it, and the numbers must match what the workloads did.

use coral_e2e::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const N_GETPPID: u64 = 5_000;
const M_CLOSE: u64 = 300;

/// Stops a collector and returns its final syscall stats.
fn stop_and_read(agent: &Agent, id: &str) -> serde_json::Value {
    let info = agent.coral_json(&["tap", "stop", id]).remove(0);
    assert_eq!(info["state"], "COLLECTOR_STATE_STOPPED", "{info}");
    agent.final_syscalls(id)
}

/// The target (N getppid, M failing close) and another process making the
/// same calls at the same time, which a pid filter must not count.
fn target_and_other() -> (Workload, Workload) {
    let target = Workload::spawn(&[
        "--getppid",
        &N_GETPPID.to_string(),
        "--close-fail",
        &M_CLOSE.to_string(),
    ]);
    let other = Workload::spawn(&["--getppid", "777", "--close-fail", "77"]);
    (target, other)
}

#[test]
#[ignore = "needs root and BPF"]
fn pid_filter_counts_exactly_and_excludes_others() {
    require_kernel();
    let agent = Agent::start(&[]);
    let (mut target, mut other) = target_and_other();
    let info = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--pid",
        &target.pid.to_string(),
        "--duration",
        "60s",
    ]);
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING");
    target.go();
    other.go();

    let stats = stop_and_read(&agent, &id);
    let getppid = syscall(&stats, "getppid");
    assert_eq!(u64_of(&getppid["count"]), N_GETPPID, "{stats}");
    assert_eq!(u64_of(&getppid["errors"]), 0);
    let close = syscall(&stats, "close");
    assert_eq!(u64_of(&close["count"]), M_CLOSE, "{stats}");
    assert_eq!(u64_of(&close["errors"]), M_CLOSE);

    // The latency histogram accounts for every call.
    assert_eq!(stats["timed"], true, "{stats}");
    let buckets: Vec<u64> = getppid["latencyLog2"]
        .as_array()
        .expect("latency histogram")
        .iter()
        .map(u64_of)
        .collect();
    assert_eq!(buckets.iter().sum::<u64>(), N_GETPPID);
    assert!(u64_of(&getppid["totalNs"]) > 0);

    // The human view shows the same table and a histogram.
    let out = agent.coral(&["tap", "events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("getppid") && text.contains("5000"), "{text}");
    assert!(text.contains("distribution"), "{text}");
}

#[test]
#[ignore = "needs root and BPF"]
fn no_latency_counts_exactly_from_one_tp_btf_program() {
    require_kernel();
    let agent = Agent::start(&[]);
    let (mut target, mut other) = target_and_other();
    let info = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--no-latency",
        "--pid",
        &target.pid.to_string(),
    ]);
    let id = info["id"].as_str().unwrap().to_string();

    // One program, on the BTF-typed sys_exit hook: nothing on sys_enter.
    let ids: Vec<u64> = info["bpfProgramIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(u64_of)
        .collect();
    assert_eq!(ids.len(), 1, "{info}");
    let prog = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &ids[0].to_string()])
        .output()
        .expect("running bpftool");
    let prog: serde_json::Value = serde_json::from_slice(&prog.stdout).expect("bpftool JSON");
    assert_eq!(prog["type"], "tracing", "{prog}");

    target.go();
    other.go();
    let stats = stop_and_read(&agent, &id);
    let getppid = syscall(&stats, "getppid");
    assert_eq!(u64_of(&getppid["count"]), N_GETPPID, "{stats}");
    let close = syscall(&stats, "close");
    assert_eq!(u64_of(&close["count"]), M_CLOSE, "{stats}");
    assert_eq!(u64_of(&close["errors"]), M_CLOSE);
    // Nothing timed, and the record says so.
    assert!(stats.get("timed").is_none(), "{stats}");
    assert_eq!(u64_of(&getppid["totalNs"]), 0, "{stats}");
    assert!(getppid.get("latencyLog2").is_none(), "{stats}");
    assert!(linked_prog_ids().iter().all(|p| !ids.contains(p)));

    let out = agent.coral(&["tap", "events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("latency not measured"), "{text}");
    assert!(!text.contains("distribution"), "{text}");
}

#[test]
#[ignore = "needs root and BPF"]
fn comm_filter_excludes_other_names() {
    require_kernel();
    let agent = Agent::start(&[]);
    let mut a = Workload::spawn(&["--name", "coral-wl-a", "--getppid", "1234"]);
    let mut b = Workload::spawn(&["--name", "coral-wl-b", "--getppid", "4321"]);
    let id = agent.start_collector(&["--kind", "syscall-stats", "--comm", "coral-wl-a"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.go();
    b.go();
    let stats = stop_and_read(&agent, &id);
    assert_eq!(
        u64_of(&syscall(&stats, "getppid")["count"]),
        1234,
        "{stats}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn cgroup_filter_excludes_processes_outside() {
    require_kernel();
    let agent = Agent::start(&[]);
    let cgroup = Cgroup::create("coral-e2e");
    let mut inside = Workload::spawn(&["--getppid", "2222"]);
    let mut outside = Workload::spawn(&["--getppid", "3333"]);
    cgroup.add(inside.pid);
    let path = cgroup.path.to_str().unwrap();
    let id = agent.start_collector(&["--kind", "syscall-stats", "--cgroup", path])["id"]
        .as_str()
        .unwrap()
        .to_string();
    inside.go();
    outside.go();
    let stats = stop_and_read(&agent, &id);
    assert_eq!(
        u64_of(&syscall(&stats, "getppid")["count"]),
        2222,
        "{stats}"
    );
    drop(inside);

    // A cgroup that does not exist is a clear error, not a silent no-op.
    let out = agent.coral(&[
        "tap",
        "start",
        "--kind",
        "syscall-stats",
        "--cgroup",
        "/no/such/cgroup",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/cgroup"), "{err}");
}

#[test]
#[ignore = "needs root and BPF"]
fn per_process_breakdown_names_the_process() {
    require_kernel();
    let agent = Agent::start(&[]);
    let mut w = Workload::spawn(&["--name", "coral-wl-pp", "--getppid", "321"]);
    let pid = w.pid.to_string();
    let id =
        agent.start_collector(&["--kind", "syscall-stats", "--pid", &pid, "--per-process"])["id"]
            .as_str()
            .unwrap()
            .to_string();
    w.go();
    let stats = stop_and_read(&agent, &id);
    let procs = stats["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 1, "{stats}");
    assert_eq!(u64_of(&procs[0]["pid"]), w.pid as u64);
    assert_eq!(procs[0]["comm"], "coral-wl-pp");
    assert_eq!(u64_of(&syscall(&procs[0], "getppid")["count"]), 321);
}

#[test]
#[ignore = "needs root and BPF"]
fn collector_expires_by_itself_and_leaves_no_program() {
    require_kernel();
    let agent = Agent::start(&[]);
    let w = Workload::spawn(&[]);
    let info = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--pid",
        &w.pid.to_string(),
        "--duration",
        "2s",
    ]);
    let id = info["id"].as_str().unwrap();
    let prog_ids: Vec<u64> = info["bpfProgramIds"]
        .as_array()
        .expect("program ids")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(prog_ids.len(), 2);
    let loaded = loaded_prog_ids();
    assert!(
        prog_ids.iter().all(|p| loaded.contains(p)),
        "bpftool lists the programs while running"
    );

    let deadline = u64_of(&info["deadlineUnixNano"]);
    let started = Instant::now();
    let ended = agent.wait_state(id, "COLLECTOR_STATE_EXPIRED", Duration::from_secs(10));
    // Wall time includes the harness polling with `coral tap get` (about a
    // second a call under QEMU's TCG): only a bound, stretched there.
    let took = started.elapsed();
    assert!(
        took < patience(Duration::from_secs(5)),
        "expired after {took:?}"
    );
    assert!(
        ended["bpfProgramIds"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    let records = agent.records(id);
    let last = records.last().unwrap();
    assert_eq!(last["final"], true);
    // The agent's own clock: the final record was taken at the deadline.
    let late = u64_of(&last["timeUnixNano"]).saturating_sub(deadline);
    assert!(
        late < 2_000_000_000,
        "final record {late} ns after the deadline: {last}"
    );

    // Program release is deferred to a kernel workqueue: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let loaded = loaded_prog_ids();
        let left: Vec<_> = prog_ids.iter().filter(|p| loaded.contains(p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs {left:?} still loaded after expiry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn stop_extend_and_list() {
    require_kernel();
    let agent = Agent::start(&[]);
    let w = Workload::spawn(&[]);
    let pid = w.pid.to_string();
    let info = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--pid",
        &pid,
        "--duration",
        "30s",
        "--label",
        "service=e2e",
    ]);
    let id = info["id"].as_str().unwrap();
    let before = u64_of(&info["deadlineUnixNano"]);

    let extended = agent
        .coral_json(&["tap", "extend", id, "--by", "2m"])
        .remove(0);
    let after = u64_of(&extended["deadlineUnixNano"]);
    assert!(
        after >= before + 85_000_000_000,
        "deadline moved ~90s later: {before} -> {after}"
    );

    let list = agent.coral_json(&["tap", "list"]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["spec"]["labels"]["service"], "e2e");
    assert_eq!(list[0]["state"], "COLLECTOR_STATE_RUNNING");

    let table = agent.coral(&["tap", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(id) && text.contains("running"), "{text}");

    let stopped = agent.coral_json(&["tap", "stop", id]).remove(0);
    assert_eq!(stopped["state"], "COLLECTOR_STATE_STOPPED");
    // Ended collectors stay readable (retention).
    assert_eq!(agent.get(id)["state"], "COLLECTOR_STATE_STOPPED");
    // Extending an ended one is refused.
    let out = agent.coral(&["tap", "extend", id, "--by", "10s"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED_PRECONDITION"));
}

#[test]
#[ignore = "needs root and BPF"]
fn stream_follows_live_replays_and_survives_a_vanishing_client() {
    require_kernel();
    let agent = Agent::start(&[]);
    let w = Workload::spawn(&[]);
    let pid = w.pid.to_string();
    let id = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--pid",
        &pid,
        "--interval",
        "200ms",
        "--duration",
        "60s",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A live follower receives records as they are made.
    let mut follower = Command::new(bin("coral"))
        .args([
            "--agent",
            &agent.addr,
            "-o",
            "json",
            "tap",
            "events",
            &id,
            "--follow",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let line = lines.next().expect("stream ended early").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        seqs.push(u64_of(&v["record"]["seq"]));
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(u64_of(&agent.get(&id)["streamSubscribers"]), 1);

    // The client vanishes mid-stream: the agent lets go of it.
    follower.kill().unwrap();
    follower.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while u64_of(&agent.get(&id)["streamSubscribers"]) != 0 {
        assert!(Instant::now() < deadline, "subscriber not released");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A replay from seq 1 starts at the beginning and, once the collector is
    // stopped, ends with the final record and an "ended" message.
    let replay = Command::new(bin("coral"))
        .args([
            "--agent",
            &agent.addr,
            "-o",
            "json",
            "tap",
            "events",
            &id,
            "--follow",
            "--after",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    agent.coral_json(&["tap", "stop", &id]);
    let out = replay.wait_with_output().unwrap();
    assert!(out.status.success());
    let msgs = json_lines(&out.stdout);
    let replayed: Vec<u64> = msgs
        .iter()
        .filter(|m| m.get("record").is_some())
        .map(|m| u64_of(&m["record"]["seq"]))
        .collect();
    assert_eq!(replayed.first(), Some(&1));
    assert!(
        replayed.windows(2).all(|w| w[1] == w[0] + 1),
        "{replayed:?}"
    );
    let last_record = msgs.iter().rev().find_map(|m| m.get("record")).unwrap();
    assert_eq!(last_record["final"], true);
    assert_eq!(
        msgs.last().unwrap()["ended"]["state"],
        "COLLECTOR_STATE_STOPPED"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn tap_run_shows_the_result() {
    require_kernel();
    let agent = Agent::start(&[]);
    let mut w = Workload::spawn(&["--getppid", "4242"]);
    let pid = w.pid.to_string();
    let addr = agent.addr.clone();
    let runner = std::thread::spawn(move || {
        Command::new(bin("coral"))
            .args([
                "--agent",
                &addr,
                "tap",
                "run",
                "--kind",
                "syscall-stats",
                "--pid",
                &pid,
                "--duration",
                "2s",
            ])
            .output()
            .unwrap()
    });
    // Let it attach before the workload runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .coral_json(&["tap", "list"])
        .iter()
        .any(|c| c["state"] == "COLLECTOR_STATE_RUNNING")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    w.go();
    let out = runner.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("expired"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("getppid"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.split_whitespace().nth(1) == Some("4242"), "{row}");
}

#[test]
#[ignore = "needs root and BPF"]
fn bad_input_gets_clear_errors() {
    require_kernel();
    let agent = Agent::start(&["--max-running", "1", "--max-duration", "5m"]);
    let expect = |args: &[&str], code: i32, needle: &str| {
        let out = agent.coral(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "coral {args:?}: {err}");
        assert!(err.contains(needle), "coral {args:?}: {err}");
    };
    let w = Workload::spawn(&[]);
    let pid = w.pid.to_string();
    expect(
        &[
            "tap",
            "start",
            "--kind",
            "syscall-stats",
            "--pid",
            &pid,
            "--duration",
            "0s",
        ],
        4,
        "INVALID_ARGUMENT",
    );
    expect(
        &[
            "tap",
            "start",
            "--kind",
            "syscall-stats",
            "--pid",
            &pid,
            "--duration",
            "6m",
        ],
        4,
        "maximum of 5m",
    );
    expect(
        &["tap", "start", "--kind", "bogus"],
        2,
        "invalid value 'bogus'",
    );
    expect(
        &[
            "tap",
            "start",
            "--kind",
            "syscall-stats",
            "--duration",
            "soon",
        ],
        2,
        "soon",
    );
    // A cgroup that does not exist is refused before anything is loaded.
    expect(
        &[
            "tap",
            "start",
            "--kind",
            "syscall-stats",
            "--cgroup",
            "/no/such/cgroup",
        ],
        4,
        "INVALID_ARGUMENT",
    );
    expect(
        &["tap", "get", "3b241101-e2bb-4255-8caf-4136c566a962"],
        4,
        "NOT_FOUND",
    );
    expect(
        &["tap", "stop", "3b241101-e2bb-4255-8caf-4136c566a962"],
        4,
        "NOT_FOUND",
    );

    agent.start_collector(&["--kind", "syscall-stats", "--pid", &pid]);
    expect(
        &["tap", "start", "--kind", "syscall-stats", "--pid", &pid],
        4,
        "RESOURCE_EXHAUSTED",
    );

    // The agent is unharmed by all of it.
    assert!(agent.coral(&["caps"]).status.success());
}

#[test]
#[ignore = "needs root and BPF"]
fn caps_report_real_probes() {
    require_kernel();
    let agent = Agent::start(&[]);
    let caps = agent.coral_json(&["caps"]).remove(0);
    assert_eq!(caps["btf"], true);
    assert_eq!(caps["rawTracepoints"], true);
    // process-events, memory and syscall-stats --no-latency attach tp_btf.
    assert_eq!(caps["tpBtf"], true, "{caps}");
    assert!(!caps["kernelRelease"].as_str().unwrap().is_empty());
    assert!(
        !caps["tracefsPath"].as_str().unwrap_or("").is_empty(),
        "tracefs found or mounted: {caps}"
    );
    let kinds = caps["kinds"].as_array().unwrap();
    let sys = kinds
        .iter()
        .find(|k| k["kind"] == "COLLECTOR_KIND_SYSCALL_STATS")
        .unwrap();
    assert_eq!(sys["available"], true, "{sys}");
    // The agent's probes must agree with the kernel: kprobes are reported as
    // present exactly when the kprobe PMU exists.
    let kprobe_pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    assert_eq!(
        caps["kprobes"].as_bool().unwrap_or(false),
        kprobe_pmu,
        "{caps}"
    );
    let _ = agent.pid();
}
