//! Container awareness across kinds, on the real kernel: a workload in a
//! docker-style cgroup (`coraltest.slice/docker-<id>.scope`, no container
//! runtime involved) is found by `--container <prefix>`, and the records of
//! syscall-stats, tcp-metrics and cpu-profile name its container.
//! (process-events' own checks are in process_events.rs.)

use coral_e2e::*;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn id(info: &Value) -> String {
    info["id"].as_str().unwrap().to_string()
}

fn final_payload(agent: &Agent, id: &str, field: &str) -> Value {
    agent.coral_json(&["tap", "stop", id]);
    let records = agent.records(id);
    let last = records.last().expect("no records");
    assert_eq!(last["final"], true, "{last}");
    last[field].clone()
}

#[test]
#[ignore = "needs root and BPF"]
fn every_kind_names_the_container_and_a_prefix_finds_it() {
    require_kernel();
    let scope = DockerScope::create();
    let agent = Agent::start(&[]);
    let prefix = &scope.id[..12];
    // The collectors outlive the test: under TCG with one vCPU it took more
    // than 60 s.
    let life = secs_arg(patience(Duration::from_secs(60)));

    // syscall-stats by --container: the workload inside counts exactly, the
    // one outside not at all.
    let mut inside = Workload::spawn(&["--getppid", "4242"]);
    scope.add(inside.pid);
    let mut outside = Workload::spawn(&["--getppid", "1000"]);
    let sys = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--per-process",
        "--container",
        prefix,
        "-d",
        &life,
    ]);
    let filter = &sys["spec"]["filter"];
    assert_eq!(filter["container"], prefix, "{sys}");
    assert!(
        filter["cgroup"]
            .as_str()
            .is_some_and(|c| c.ends_with(&scope.relative())),
        "the container's cgroup: {sys}"
    );

    // tcp-metrics: a server outside, a client inside.
    let peer = bin("coral-tcp-peer");
    let mut server = Command::new(&peer)
        .args(["server", "--listen", "127.0.0.1:0", "--conns", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server_out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    server_out.read_line(&mut line).unwrap();
    let port: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("server said {line:?}"));
    let mut client = ReadyChild::spawn(Command::new(&peer).args([
        "client",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--sizes",
        "1000",
    ]));
    scope.add(client.pid);
    let tcp = agent.start_collector(&[
        "--kind",
        "tcp-metrics",
        "--pid",
        &client.pid.to_string(),
        "-d",
        &life,
    ]);

    // cpu-profile of a burner inside.
    let burn = PathBuf::from(concat!(env!("OUT_DIR"), "/coral-burn"));
    let mut burner = ReadyChild::spawn(Command::new(&burn).args(["--wait", "--seconds", "1"]));
    scope.add(burner.pid);
    let profile = agent.start_collector(&[
        "--kind",
        "cpu-profile",
        "--container",
        prefix,
        "-F",
        "199",
        "-d",
        &life,
    ]);

    inside.go();
    outside.go();
    let stdin = client.stdin.as_mut().unwrap();
    writeln!(stdin, "go").unwrap();
    stdin.flush().unwrap();
    let mut done = String::new();
    client.stdout.read_line(&mut done).unwrap();
    assert!(done.starts_with("done"), "client said {done:?}");
    let stdin = burner.stdin.as_mut().unwrap();
    writeln!(stdin, "go").unwrap();
    stdin.flush().unwrap();
    let mut burned = String::new();
    burner.stdout.read_line(&mut burned).unwrap();
    assert!(burned.starts_with("burned"), "burner said {burned:?}");

    let stats = final_payload(&agent, &id(&sys), "syscallStats");
    assert_eq!(
        u64_of(&syscall(&stats, "getppid")["count"]),
        4242,
        "{stats}"
    );
    let rows = stats["processes"].as_array().expect("per-process rows");
    assert!(!rows.is_empty(), "{stats}");
    for row in rows {
        assert_eq!(row["container"]["containerId"], scope.id.as_str(), "{row}");
    }

    // Let the connection close on both sides, then read its record.
    drop(client);
    let _ = server.wait();
    agent.coral_json(&["tap", "stop", &id(&tcp)]);
    let conns: Vec<Value> = agent
        .records(&id(&tcp))
        .into_iter()
        .filter_map(|r| r.get("tcpConnection").cloned())
        .collect();
    assert!(!conns.is_empty(), "no connection recorded");
    for c in &conns {
        assert_eq!(c["container"]["containerId"], scope.id.as_str(), "{c}");
        assert_eq!(c["container"]["runtime"], "docker", "{c}");
    }

    let p = final_payload(&agent, &id(&profile), "cpuProfile");
    let stacks = p["stacks"].as_array().expect("stacks");
    let burner_stacks: Vec<&Value> = stacks
        .iter()
        .filter(|s| u64_of(&s["pid"]) == u64::from(burner.pid))
        .collect();
    assert!(!burner_stacks.is_empty(), "no samples of the burner: {p}");
    for s in stacks {
        assert_eq!(
            s["container"]["containerId"],
            scope.id.as_str(),
            "only the container is profiled, and it says so: {s}"
        );
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn container_filters_that_find_nothing_are_refused() {
    require_kernel();
    let agent = Agent::start(&[]);
    for (query, needle) in [
        ("0000deadbeef", "no container with id"),
        ("not-hex", "not a container id"),
    ] {
        let out = agent.coral(&[
            "tap",
            "start",
            "--kind",
            "syscall-stats",
            "--container",
            query,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains("INVALID_ARGUMENT") && err.contains(needle),
            "{err}"
        );
    }
    let out = agent.coral(&[
        "tap",
        "start",
        "--kind",
        "syscall-stats",
        "--container",
        "abc",
        "--cgroup",
        "/",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--cgroup and --container conflict"
    );
}
