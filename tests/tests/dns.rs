//! dns end to end: a real DNS server (Debian's dnsmasq, on a free port,
//! with a generated hosts file), real clients (dig, over UDP and TCP, and
//! Python's socket module: tests/python/dns_peer.py), a slow responder that
//! answers after DELAY, and the real agent and CLI. Counts are exact per
//! (name, rcode); a second process making the same queries is excluded by
//! the pid filter.

use coral_e2e::*;
use std::io::{BufRead, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the slow responder waits before it answers.
const DELAY: Duration = Duration::from_millis(100);
/// What the measured latency may exceed DELAY by on a loaded 2-CPU host
/// (measured there: 110.4 ms for the 100 ms delay, load average 6).
const TOLERANCE: Duration = Duration::from_millis(400);
/// The collector's timeout; the Python client gives up after 1 s.
const TIMEOUT: Duration = Duration::from_millis(500);

const DIG_ALPHA: u64 = 5;
const DIG_BETA_TCP: u64 = 2;
const PY_MISSING: u64 = 3;

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("coral-dns-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port free on 127.0.0.1 for both UDP and TCP (DNS takes both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq answering for `.test` from a hosts file: unknown names under
/// .test are NXDOMAIN (`--local=/test/`), nothing is forwarded.
fn dnsmasq(dir: &Path, port: u16) -> Killed {
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.5 alpha.test\n10.1.2.3 beta.test\n10.1.2.4 beta.test\n",
    )
    .unwrap();
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            &format!("--addn-hosts={}", hosts.display()),
            "--local=/test/",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning dnsmasq (Debian package dnsmasq-base, .ci/install-deps)");
    let server = Killed(child);
    // Serving once it answers (this process is not traced).
    let deadline = Instant::now() + patience(Duration::from_secs(10));
    loop {
        let out = Command::new("dig")
            .args(["+short", "+tries=1", "+time=1", "-p", &port.to_string()])
            .args(["@127.0.0.1", "alpha.test"])
            .output()
            .expect("running dig (Debian package bind9-dnsutils, .ci/install-deps)");
        if String::from_utf8_lossy(&out.stdout).trim() == "127.0.0.5" {
            return server;
        }
        assert!(Instant::now() < deadline, "dnsmasq did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/dns_peer.py")
}

fn python(args: &[&str]) -> ReadyChild {
    ReadyChild::spawn(Command::new("python3").arg(peer_script()).args(args))
}

/// Lets a ReadyChild go and waits for its "done" (python) or its end.
fn go(child: &mut ReadyChild) -> Vec<String> {
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if child.stdout.read_line(&mut line).unwrap() == 0 || line.trim() == "done" {
            break;
        }
        lines.push(line.trim().to_string());
    }
    lines
}

fn n(v: &serde_json::Value) -> u64 {
    if v.is_null() { 0 } else { u64_of(v) }
}

/// The row of (name, rcode name) in DnsStats, or panics.
fn row<'a>(stats: &'a serde_json::Value, name: &str, rcode: &str) -> &'a serde_json::Value {
    stats["names"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["name"] == name && r["rcodeName"] == rcode)
        })
        .unwrap_or_else(|| panic!("no row ({name}, {rcode}) in {stats}"))
}

#[test]
#[ignore = "needs root and BPF"]
fn exact_counts_latency_and_timeouts_of_the_targets_only() {
    require_kernel();
    let dir = scratch_dir();
    let port = free_port();
    let _server = dnsmasq(&dir, port);
    let slow_port = free_port();
    let _slow = Killed(
        python(&[
            "responder",
            &slow_port.to_string(),
            &DELAY.as_millis().to_string(),
        ])
        .child,
    );
    // Its log says why TCP is not watched, where it is not.
    let log = dir.join("agent.log");
    let socket = socket_path();
    let addr = format!("unix://{}", socket.display());
    let agent = Agent::start_with(&addr, &addr, &[], &[], &[], Some(&log));

    // dig: DIG_ALPHA queries over UDP, DIG_BETA_TCP and one NXDOMAIN over
    // TCP, in one process (the shell execs dig: the pid stays).
    let p = port.to_string();
    let mut dig_args = vec!["+tries=1", "+time=2", "-p", &p, "@127.0.0.1"];
    dig_args.extend(std::iter::repeat_n("alpha.test", DIG_ALPHA as usize));
    for _ in 0..DIG_BETA_TCP {
        dig_args.extend(["beta.test", "+tcp"]);
    }
    dig_args.extend(["gone.test", "+tcp"]);
    let mut dig = ReadyChild::spawn(
        Command::new("bash")
            .arg("-c")
            .arg("echo ready $$; read -r _; exec dig \"$@\" >/dev/null")
            .arg("dig")
            .args(&dig_args),
    );
    // Python: NXDOMAINs from dnsmasq, one slow answer, one never answered.
    let missing = format!("{port}:missing.test:{PY_MISSING}");
    let slow = format!("{slow_port}:slow.test:1");
    let dropped = format!("{slow_port}:drop.test:1");
    let mut py = python(&["client", &missing, &slow, &dropped]);
    // Not a target: the same names, and its own.
    let mut other = python(&[
        "client",
        &format!("{port}:alpha.test:4"),
        &format!("{port}:missing.test:2"),
        &format!("{port}:other.test:3"),
    ]);

    let timeout = format!("{}ms", TIMEOUT.as_millis());
    let info = agent.start_collector(&[
        "--kind",
        "dns",
        "--pid",
        &dig.pid.to_string(),
        "--pid",
        &py.pid.to_string(),
        "--dns-port",
        &p,
        "--dns-port",
        &slow_port.to_string(),
        "--dns-timeout",
        &timeout,
        "--duration",
        "60s",
    ]);
    let id = id_of(&info);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    let programs = prog_ids_of(&info);
    // TCP needs bpf_get_current_pid_tgid in cgroup_skb programs, which
    // older kernels do not allow (6.1's verifier: "unknown func
    // bpf_get_current_pid_tgid#14"): the collector then watches UDP only,
    // and the TCP queries are not counted. Any other reason fails here.
    let tcp = programs.len() == 4;
    if !tcp {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            programs.len() == 2
                && text.contains("TCP not watched")
                && text.contains("unknown func bpf_get_current_pid_tgid"),
            "{info}\n{text}"
        );
        eprintln!("this kernel has no bpf_get_current_pid_tgid for cgroup_skb: UDP only");
    }

    go(&mut dig);
    assert!(dig.child.wait().unwrap().success(), "dig failed");
    let answers = go(&mut py);
    assert_eq!(
        answers,
        [
            "missing.test 3",
            "missing.test 3",
            "missing.test 3",
            "slow.test 0",
            "drop.test TIMEOUT"
        ]
    );
    go(&mut other);
    // The Python client waited 1 s for drop.test: past the timeout. One
    // more drain tick (100ms) for it to be swept.
    std::thread::sleep(Duration::from_millis(300));
    let stopped = agent.coral_json(&["tap", "stop", &id]).remove(0);
    assert_eq!(stopped["state"], "COLLECTOR_STATE_STOPPED", "{stopped}");

    let records = agent.records(&id);
    let last = records.last().expect("no records");
    assert_eq!(last["final"], true, "{last}");
    let stats = &last["dnsStats"];
    let events: Vec<&serde_json::Value> =
        records.iter().filter_map(|r| r.get("dnsQuery")).collect();

    // Exact counts per (name, rcode): the other process's 4 alpha.test and
    // 2 missing.test are not here, nor its other.test.
    assert_eq!(n(&row(stats, "alpha.test", "NOERROR")["count"]), DIG_ALPHA);
    // Over TCP: dig's beta.test queries and its one NXDOMAIN.
    let (tcp_queries, tcp_nx) = if tcp { (DIG_BETA_TCP + 1, 1) } else { (0, 0) };
    if tcp {
        assert_eq!(
            n(&row(stats, "beta.test", "NOERROR")["count"]),
            DIG_BETA_TCP
        );
        assert_eq!(n(&row(stats, "gone.test", "NXDOMAIN")["count"]), 1);
    }
    assert_eq!(
        n(&row(stats, "missing.test", "NXDOMAIN")["count"]),
        PY_MISSING
    );
    assert_eq!(n(&row(stats, "slow.test", "NOERROR")["count"]), 1);
    let timeout = row(stats, "drop.test", "TIMEOUT");
    assert_eq!(
        (n(&timeout["count"]), &timeout["timedOut"]),
        (1, &serde_json::json!(true))
    );
    assert_eq!(
        stats["names"].as_array().unwrap().len(),
        if tcp { 6 } else { 4 },
        "{stats}"
    );
    let total = DIG_ALPHA + tcp_queries + PY_MISSING + 2;
    assert_eq!(n(&stats["queries"]), total, "{stats}");
    assert_eq!(n(&stats["responses"]), total - 1, "{stats}");
    assert_eq!(n(&stats["nxdomain"]), PY_MISSING + tcp_nx, "{stats}");
    assert_eq!(n(&stats["servfail"]), 0, "{stats}");
    assert_eq!(n(&stats["timeouts"]), 1, "{stats}");
    assert_eq!(n(&stats["inFlight"]), 0, "{stats}");
    assert_eq!(n(&stats["droppedEvents"]), 0, "{stats}");
    // proto3 JSON leaves a false bool out.
    assert_eq!(stats["tcp"].as_bool().unwrap_or(false), tcp, "{stats}");

    // The delayed answer's latency, in the row and in its event.
    let slow_row = row(stats, "slow.test", "NOERROR");
    let p50 = Duration::from_nanos(n(&slow_row["latencyP50Ns"]));
    assert!(p50 >= DELAY && p50 < DELAY + TOLERANCE, "{p50:?}");

    // One event per exchange, all from the two targets.
    assert_eq!(events.len() as u64, total, "{events:?}");
    let targets = [u64::from(dig.pid), u64::from(py.pid)];
    for e in &events {
        assert!(targets.contains(&n(&e["pid"])), "{e}");
    }
    let of = |name: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .copied()
            .filter(|e| e["name"] == name)
            .collect()
    };
    for e in of("beta.test") {
        assert_eq!(e["transport"], "tcp", "{e}");
        assert_eq!(e["server"], format!("127.0.0.1:{port}"), "{e}");
        assert_eq!(n(&e["answerCount"]), 2, "{e}");
        let mut a: Vec<&str> = e["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        a.sort();
        assert_eq!(a, ["10.1.2.3", "10.1.2.4"], "{e}");
    }
    for e in of("alpha.test") {
        assert_eq!(e["transport"], "udp", "{e}");
        assert_eq!(n(&e["pid"]), u64::from(dig.pid), "{e}");
        assert_eq!(e["answers"], serde_json::json!(["127.0.0.5"]), "{e}");
        assert_eq!(e["qtypeName"], "A", "{e}");
    }
    let slow_event = of("slow.test")[0];
    assert_eq!(n(&slow_event["pid"]), u64::from(py.pid), "{slow_event}");
    let latency = Duration::from_nanos(n(&slow_event["latencyNs"]));
    assert!(
        latency >= DELAY && latency < DELAY + TOLERANCE,
        "{latency:?}"
    );
    assert_eq!(of("drop.test")[0]["outcome"], "DNS_OUTCOME_TIMEOUT");
    assert_eq!(of("missing.test")[0]["rcodeName"], "NXDOMAIN");

    // Nothing left attached.
    wait_programs_gone(&programs, Duration::from_secs(10));

    // The human view: the table and the counts.
    let out = agent.coral(&["tap", "events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{total} queries, {} answered, {} NXDOMAIN",
            total - 1,
            PY_MISSING + tcp_nx
        )),
        "{text}"
    );
    assert!(
        text.contains("alpha.test") && text.contains("TIMEOUT") && text.contains("P99"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
