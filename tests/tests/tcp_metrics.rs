//! tcp-metrics end to end on real sockets: the real agent loads the real BPF
//! programs, `coral-tcp-peer` processes make connections whose byte counts,
//! ports and owners the tests know, and the CLI's JSON must match them exactly.
//! The lossy and slow paths run between two network namespaces joined by a
//! veth pair, shaped with tbf (this kernel has no netem).

use coral_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_COMM: &str = "coral-tcp-srv";
const CLIENT_COMM: &str = "coral-tcp-cli";

/// A `coral-tcp-peer` child and its line protocol.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Spawns the peer, inside network namespace `netns` if given.
    fn spawn(netns: Option<&str>, args: &[&str]) -> Peer {
        let peer = bin("coral-tcp-peer");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&peer);
                c
            }
            None => Command::new(&peer),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning coral-tcp-peer");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Peer {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "coral-tcp-peer exited early");
        line.trim().to_string()
    }

    /// The words after `word` on the next line.
    fn expect(&mut self, word: &str) -> Vec<String> {
        let line = self.line();
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some(word), "peer said {line:?}");
        parts.map(str::to_string).collect()
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listening server: (peer, port, pid).
fn server(netns: Option<&str>, listen: &str, extra: &[&str]) -> (Peer, u16, u32) {
    let mut args = vec!["server", "--listen", listen, "--name", SERVER_COMM];
    args.extend_from_slice(extra);
    let mut p = Peer::spawn(netns, &args);
    let words = p.expect("listening");
    (p, words[0].parse().unwrap(), words[1].parse().unwrap())
}

/// A client waiting for go: (peer, pid).
fn client(netns: Option<&str>, connect: &str, extra: &[&str]) -> (Peer, u32) {
    let mut args = vec!["client", "--connect", connect, "--name", CLIENT_COMM];
    args.extend_from_slice(extra);
    let mut p = Peer::spawn(netns, &args);
    let pid = p.expect("ready")[0].parse().unwrap();
    (p, pid)
}

/// `lport:received,...` from a client's `done` line.
fn client_ports(done: &[String]) -> Vec<(u16, u64)> {
    done[0]
        .split(',')
        .map(|pair| {
            let (port, got) = pair.split_once(':').unwrap();
            (port.parse().unwrap(), got.parse().unwrap())
        })
        .collect()
}

fn start(agent: &Agent, args: &[&str]) -> String {
    let mut full = vec!["--kind", "tcp-metrics", "--duration", "120s"];
    full.extend_from_slice(args);
    let info = agent.start_collector(&full);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    info["id"].as_str().unwrap().to_string()
}

fn connections(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .filter_map(|r| r.get("tcpConnection").cloned())
        .collect()
}

/// Polls until the collector has reported `n` closed connections (or 15 s),
/// so that a slow machine never turns into a missing event.
fn wait_connections(agent: &Agent, id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while connections(&agent.records(id)).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the collector; returns (connection events, final TcpStats).
fn stop(agent: &Agent, id: &str) -> (Vec<Value>, Value) {
    let info = agent.coral_json(&["tap", "stop", id]).remove(0);
    assert_eq!(info["state"], "COLLECTOR_STATE_STOPPED", "{info}");
    let records = agent.records(id);
    let last = records.last().expect("no records");
    assert_eq!(last["final"], true, "last record is not final: {last}");
    (connections(&records), last["tcpStats"].clone())
}

/// The aggregate for a remote, matched on address, remote and local port.
fn remote<'a>(stats: &'a Value, addr: &str, rport: u16, lport: u16) -> &'a Value {
    stats["remotes"]
        .as_array()
        .and_then(|rs| {
            rs.iter().find(|r| {
                r["remoteAddr"] == addr
                    && u64_of(&r["remotePort"]) == u64::from(rport)
                    && u64_of(&r["localPort"]) == u64::from(lport)
            })
        })
        .unwrap_or_else(|| panic!("no remote {addr} rport {rport} lport {lport} in {stats}"))
}

fn rtt_samples(r: &Value) -> u64 {
    r["rttUsLog2"]
        .as_array()
        .map_or(0, |b| b.iter().map(u64_of).sum())
}

/// Bytes the client sends on connection i, and the server's answer: all
/// different, some spanning many segments.
fn sent(i: usize) -> u64 {
    (i as u64) * 7_919 + if i % 5 == 4 { 300_000 } else { 13 }
}
fn answered(i: usize) -> u64 {
    (i as u64) * 3_001 + 5
}

fn list(values: impl Iterator<Item = u64>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(",")
}

#[test]
#[ignore = "needs root and BPF"]
fn closed_connections_are_exact_for_both_ends() {
    require_kernel();
    const K: usize = 20;
    let agent = Agent::start(&[]);
    let replies = list((0..K).map(answered));
    let (mut srv, port, srv_pid) = server(
        None,
        "127.0.0.1:0",
        &["--conns", &K.to_string(), "--reply", &replies],
    );
    let sizes = list((0..K).map(sent));
    let target = format!("127.0.0.1:{port}");
    let (mut cli, cli_pid) = client(None, &target, &["--sizes", &sizes]);
    // Another pair of processes, outside the pid filter.
    let (mut other_srv, other_port, _) = server(None, "127.0.0.1:0", &[]);
    let other_target = format!("127.0.0.1:{other_port}");
    let (mut other_cli, _) = client(None, &other_target, &["--sizes", "12345"]);

    let (sp, cp) = (srv_pid.to_string(), cli_pid.to_string());
    let port_s = port.to_string();
    let by_pid = start(&agent, &["--pid", &sp, "--pid", &cp, "--interval", "200ms"]);
    // Kernel-side filters: only connections to the server's port (the client
    // side), and a prefix that loopback traffic is not in.
    let by_port = start(
        &agent,
        &["--pid", &sp, "--pid", &cp, "--remote-port", &port_s],
    );
    let by_prefix = start(
        &agent,
        &["--pid", &sp, "--pid", &cp, "--remote-prefix", "10.0.0.0/8"],
    );

    let retrans_before = host_retrans_segs();
    cli.go();
    let ports = client_ports(&cli.expect("done"));
    let received: Vec<u64> = srv.expect("done")[0]
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    other_cli.go();
    other_cli.expect("done");
    other_srv.expect("done");
    assert_eq!(ports.len(), K);
    for (i, (lport, got)) in ports.iter().enumerate() {
        assert_eq!(*got, answered(i), "client read on {lport}");
        assert_eq!(received[i], sent(i));
    }

    wait_connections(&agent, &by_pid, 2 * K);
    let (events, stats) = stop(&agent, &by_pid);
    let host_retransmits = host_retrans_segs() - retrans_before;
    assert_eq!(
        events.len(),
        2 * K,
        "exactly one event per end: {events:#?}"
    );
    // Loopback rarely retransmits, but can (a tail-loss probe on a loaded
    // machine): never more than the kernel counted meanwhile, machine-wide.
    let retransmits: u64 = events.iter().map(|e| u64_of(&e["retransmits"])).sum();
    assert!(
        retransmits <= host_retransmits,
        "{retransmits} retransmits reported, the kernel counted {host_retransmits}"
    );
    let index: BTreeMap<u16, usize> = ports.iter().enumerate().map(|(i, p)| (p.0, i)).collect();
    let mut seen_active = BTreeSet::new();
    let mut seen_passive = BTreeSet::new();
    for e in &events {
        assert_eq!(e["family"], 4, "{e}");
        assert_eq!(e["localAddr"], "127.0.0.1", "{e}");
        assert_eq!(e["remoteAddr"], "127.0.0.1", "{e}");
        assert_eq!(e["closeReason"], "fin", "{e}");
        assert!(u64_of(&e["durationNs"]) > 0, "{e}");
        assert!(
            u64_of(&e["endUnixNano"]) >= u64_of(&e["startUnixNano"]),
            "{e}"
        );
        let lport = u64_of(&e["localPort"]) as u16;
        let rport = u64_of(&e["remotePort"]) as u16;
        if e["active"] == true {
            assert_eq!(u64_of(&e["pid"]), u64::from(cli_pid), "{e}");
            assert_eq!(e["comm"], CLIENT_COMM, "{e}");
            assert_eq!(rport, port, "{e}");
            let i = *index
                .get(&lport)
                .unwrap_or_else(|| panic!("unknown port: {e}"));
            assert_eq!(u64_of(&e["bytesSent"]), sent(i), "{e}");
            assert_eq!(u64_of(&e["bytesReceived"]), answered(i), "{e}");
            let connect = u64_of(&e["connectLatencyNs"]);
            assert!(connect > 0 && connect <= u64_of(&e["durationNs"]), "{e}");
            assert!(seen_active.insert(lport), "duplicate: {e}");
        } else {
            assert_eq!(u64_of(&e["pid"]), u64::from(srv_pid), "{e}");
            assert_eq!(e["comm"], SERVER_COMM, "{e}");
            assert_eq!(lport, port, "{e}");
            let i = *index
                .get(&rport)
                .unwrap_or_else(|| panic!("unknown port: {e}"));
            assert_eq!(u64_of(&e["bytesSent"]), answered(i), "{e}");
            assert_eq!(u64_of(&e["bytesReceived"]), sent(i), "{e}");
            assert_eq!(u64_of(&e["connectLatencyNs"]), 0, "{e}");
            assert!(seen_passive.insert(rport), "duplicate: {e}");
        }
    }
    assert_eq!(seen_active.len(), K);
    assert_eq!(seen_passive.len(), K);

    // Aggregates: the server as seen by the client, the client as seen by
    // the server (ephemeral ports folded under the listening port).
    let total_sent: u64 = (0..K).map(sent).sum();
    let total_answered: u64 = (0..K).map(answered).sum();
    let out = remote(&stats, "127.0.0.1", port, 0);
    let inn = remote(&stats, "127.0.0.1", 0, port);
    // The aggregates' retransmits are the events' of that side (0 nearly always).
    let side_retransmits = |active: bool| -> u64 {
        events
            .iter()
            .filter(|e| e["active"] == active)
            .map(|e| u64_of(&e["retransmits"]))
            .sum()
    };
    for (r, tx, rx, active) in [
        (out, total_sent, total_answered, true),
        (inn, total_answered, total_sent, false),
    ] {
        assert_eq!(u64_of(&r["opened"]), K as u64, "{r}");
        assert_eq!(u64_of(&r["closed"]), K as u64, "{r}");
        assert_eq!(u64_of(&r["bytesSent"]), tx, "{r}");
        assert_eq!(u64_of(&r["bytesReceived"]), rx, "{r}");
        assert_eq!(u64_of(&r["retransmits"]), side_retransmits(active), "{r}");
    }
    assert_eq!(stats["remotes"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(u64_of(&stats["droppedEvents"]), 0, "{stats}");
    // Loopback RTT: sampled, and well under a millisecond.
    assert!(rtt_samples(out) > 0, "{out}");
    let p50 = u64_of(&out["rttP50Us"]);
    assert!(p50 > 0 && p50 < 1000, "loopback RTT p50 {p50}us: {out}");

    let (port_events, _) = stop(&agent, &by_port);
    assert_eq!(
        port_events.len(),
        K,
        "only the client side: {port_events:#?}"
    );
    assert!(port_events.iter().all(|e| e["active"] == true));
    let (prefix_events, prefix_stats) = stop(&agent, &by_prefix);
    assert!(prefix_events.is_empty(), "{prefix_events:#?}");
    assert!(
        prefix_stats["remotes"].as_array().is_none_or(Vec::is_empty),
        "{prefix_stats}"
    );

    // For people: the aggregate table, the connections, the RTT histogram.
    let out = agent.coral(&["tap", "events", &by_pid]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains(&format!("127.0.0.1 -> :{port}")), "{text}");
    assert!(
        text.contains("smoothed RTT") && text.contains("usecs"),
        "{text}"
    );
    // The last closed connections, tcplife-like, under their column titles.
    assert!(text.contains("PID     COMM            LADDR"), "{text}");
    assert!(
        text.contains(CLIENT_COMM) && text.contains(SERVER_COMM),
        "{text}"
    );
}

/// Names of the BPF programs a collector has loaded (bpftool).
fn program_names(agent: &Agent, id: &str) -> BTreeSet<String> {
    let info = agent.get(id);
    info["bpfProgramIds"]
        .as_array()
        .expect("program ids")
        .iter()
        .map(|p| {
            let out = Command::new("bpftool")
                .args(["-j", "prog", "show", "id", &u64_of(p).to_string()])
                .output()
                .expect("running bpftool");
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            v["name"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// Kernels before 6.3 have no sock_{recv,send}_length: accepted connections
/// then get their owner from accept(). The agent takes that path when told.
#[test]
#[ignore = "needs root and BPF"]
fn accept_fallback_names_both_ends() {
    require_kernel();
    let agent = Agent::start_at(&socket_path(), &[], &[("CORAL_TCP_OWNER", "accept")]);
    let (mut srv, port, srv_pid) =
        server(None, "127.0.0.1:0", &["--conns", "3", "--reply", "7,8,9"]);
    let (mut cli, cli_pid) = client(
        None,
        &format!("127.0.0.1:{port}"),
        &["--sizes", "100,200,300"],
    );
    let id = start(
        &agent,
        &["--pid", &srv_pid.to_string(), "--pid", &cli_pid.to_string()],
    );
    let names = program_names(&agent, &id);
    assert!(names.contains("coral_tcp_accept4"), "{names:?}");
    assert!(!names.contains("coral_tcp_recv"), "{names:?}");
    cli.go();
    cli.expect("done");
    srv.expect("done");
    wait_connections(&agent, &id, 6);
    let (events, _) = stop(&agent, &id);
    assert_eq!(events.len(), 6, "{events:#?}");
    for e in &events {
        let (pid, comm) = if e["active"] == true {
            (cli_pid, CLIENT_COMM)
        } else {
            (srv_pid, SERVER_COMM)
        };
        assert_eq!(u64_of(&e["pid"]), u64::from(pid), "{e}");
        assert_eq!(e["comm"], comm, "{e}");
    }
    let received: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["active"] != true)
        .map(|e| u64_of(&e["bytesReceived"]))
        .collect();
    assert_eq!(received, BTreeSet::from([100, 200, 300]));
}

#[test]
#[ignore = "needs root and BPF"]
fn ipv6_connections_are_reported() {
    require_kernel();
    let agent = Agent::start(&[]);
    let (mut srv, port, srv_pid) = server(None, "[::1]:0", &["--conns", "2", "--reply", "10,20"]);
    let (mut cli, cli_pid) = client(None, &format!("[::1]:{port}"), &["--sizes", "1000,2000"]);
    let id = start(
        &agent,
        &[
            "--pid",
            &srv_pid.to_string(),
            "--pid",
            &cli_pid.to_string(),
            "--remote-prefix",
            "::1/128",
        ],
    );
    cli.go();
    cli.expect("done");
    srv.expect("done");
    wait_connections(&agent, &id, 4);
    let (events, stats) = stop(&agent, &id);
    assert_eq!(events.len(), 4, "{events:#?}");
    for e in &events {
        assert_eq!(e["family"], 6, "{e}");
        assert_eq!(e["localAddr"], "::1", "{e}");
        assert_eq!(e["remoteAddr"], "::1", "{e}");
    }
    let sent: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["active"] == true)
        .map(|e| u64_of(&e["bytesSent"]))
        .collect();
    assert_eq!(sent, BTreeSet::from([1000, 2000]));
    assert_eq!(
        u64_of(&remote(&stats, "::1", port, 0)["opened"]),
        2,
        "{stats}"
    );
    assert_eq!(
        u64_of(&remote(&stats, "::1", 0, port)["closed"]),
        2,
        "{stats}"
    );

    // A dual-stack listener accepting an IPv4 client holds v4-mapped
    // addresses (family 6); an IPv4 prefix matches them.
    let (mut srv, port, srv_pid) = server(None, "[::]:0", &["--reply", "5"]);
    let (mut cli, cli_pid) = client(None, &format!("127.0.0.1:{port}"), &["--sizes", "50"]);
    let id = start(
        &agent,
        &[
            "--pid",
            &srv_pid.to_string(),
            "--pid",
            &cli_pid.to_string(),
            "--remote-prefix",
            "127.0.0.0/8",
        ],
    );
    cli.go();
    cli.expect("done");
    srv.expect("done");
    wait_connections(&agent, &id, 2);
    let (events, _) = stop(&agent, &id);
    assert_eq!(events.len(), 2, "{events:#?}");
    let accepted = events.iter().find(|e| e["active"] != true).unwrap();
    assert_eq!(accepted["family"], 6, "{accepted}");
    assert_eq!(accepted["remoteAddr"], "::ffff:127.0.0.1", "{accepted}");
    assert_eq!(u64_of(&accepted["bytesReceived"]), 50, "{accepted}");
    let opened = events.iter().find(|e| e["active"] == true).unwrap();
    assert_eq!(opened["family"], 4, "{opened}");
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
#[ignore = "needs root and BPF"]
fn resets_are_counted_on_both_ends() {
    require_kernel();
    let agent = Agent::start(&[]);
    let (mut srv, port, srv_pid) = server(None, "127.0.0.1:0", &["--ping"]);
    let (mut aborter, abort_pid) = client(None, &format!("127.0.0.1:{port}"), &["--abort"]);
    let closed = closed_port();
    let (mut refused, refused_pid) = client(None, &format!("127.0.0.1:{closed}"), &[]);

    let pids = [srv_pid, abort_pid, refused_pid].map(|p| p.to_string());
    let by_pid = start(
        &agent,
        &["--pid", &pids[0], "--pid", &pids[1], "--pid", &pids[2]],
    );
    // No process filter: the RST answering a SYN to a closed port has no
    // socket and so no owner; it is counted under the closed port.
    let closed_s = closed.to_string();
    let by_port = start(&agent, &["--local-port", &closed_s]);

    aborter.go();
    let abort_port = client_ports(&aborter.expect("done"))[0].0;
    srv.expect("done");
    refused.go();
    assert_eq!(refused.line(), "done refused");

    wait_connections(&agent, &by_pid, 3);
    let (events, stats) = stop(&agent, &by_pid);
    assert_eq!(events.len(), 3, "{events:#?}");
    let find = |active: bool, lport: u16, rport: u16| -> &Value {
        events
            .iter()
            .find(|e| {
                (e["active"] == true) == active
                    && (lport == 0 || u64_of(&e["localPort"]) == u64::from(lport))
                    && u64_of(&e["remotePort"]) == u64::from(rport)
            })
            .unwrap_or_else(|| panic!("no event {active} {lport} {rport}: {events:#?}"))
    };
    // SO_LINGER 0: this side sent the RST, the server received it.
    let abort = find(true, abort_port, port);
    assert_eq!(u64_of(&abort["pid"]), u64::from(abort_pid));
    assert_eq!(u64_of(&abort["resetsSent"]), 1, "{abort}");
    assert_eq!(u64_of(&abort["resetsReceived"]), 0, "{abort}");
    assert_eq!(abort["closeReason"], "abort", "{abort}");
    let victim = find(false, port, abort_port);
    assert_eq!(u64_of(&victim["pid"]), u64::from(srv_pid));
    assert_eq!(victim["comm"], SERVER_COMM);
    assert_eq!(u64_of(&victim["resetsReceived"]), 1, "{victim}");
    assert_eq!(victim["closeReason"], "reset", "{victim}");
    // Refused: RST received in SYN_SENT, never established.
    let refused_ev = find(true, 0, closed);
    assert_eq!(u64_of(&refused_ev["pid"]), u64::from(refused_pid));
    assert_eq!(u64_of(&refused_ev["resetsReceived"]), 1, "{refused_ev}");
    assert_eq!(refused_ev["closeReason"], "refused", "{refused_ev}");
    assert_eq!(u64_of(&refused_ev["connectLatencyNs"]), 0, "{refused_ev}");
    assert_eq!(u64_of(&refused_ev["bytesSent"]), 0, "{refused_ev}");

    assert_eq!(
        u64_of(&remote(&stats, "127.0.0.1", port, 0)["resetsSent"]),
        1,
        "{stats}"
    );
    assert_eq!(
        u64_of(&remote(&stats, "127.0.0.1", 0, port)["resetsReceived"]),
        1,
        "{stats}"
    );
    let r = remote(&stats, "127.0.0.1", closed, 0);
    assert_eq!(u64_of(&r["resetsReceived"]), 1, "{stats}");
    assert_eq!(
        u64_of(&r["opened"]),
        0,
        "a refused connect is not opened: {stats}"
    );

    let (port_events, port_stats) = stop(&agent, &by_port);
    assert!(port_events.is_empty(), "{port_events:#?}");
    // Before Linux 6.10 ("trace: tcp: fully support trace_tcp_send_reset"),
    // tcp:tcp_send_reset fires only for resets a full socket sends: the RST
    // answering a SYN to a closed port has no socket and is not traced.
    if kernel_version() < (6, 10) {
        eprintln!(
            "kernel {:?} < 6.10: tcp_send_reset does not fire without a socket; the closed port's reset is not counted",
            kernel_version()
        );
        assert!(
            port_stats["remotes"]
                .as_array()
                .is_none_or(|r| r.is_empty()),
            "{port_stats}"
        );
        return;
    }
    let r = remote(&port_stats, "127.0.0.1", 0, closed);
    assert_eq!(u64_of(&r["resetsSent"]), 1, "{port_stats}");
}

/// Two network namespaces joined by a veth pair: `a` (10.250.0.1) sends
/// through `qdisc` on its side, `b` (10.250.0.2) listens. Removed on drop,
/// even when the test fails.
struct NetPair {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (install iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetPair {
    fn create(tag: &str, qdisc: &[&str]) -> NetPair {
        let id = std::process::id();
        let pair = NetPair {
            a: format!("coral-{tag}-{id}-a"),
            b: format!("coral-{tag}-{id}-b"),
        };
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        // Interface names are created inside the namespaces, so they can repeat.
        ip(&[
            "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b,
        ]);
        ip(&["-n", a, "addr", "add", "10.250.0.1/24", "dev", "veth0"]);
        ip(&["-n", b, "addr", "add", "10.250.0.2/24", "dev", "veth1"]);
        for (ns, dev) in [(a, "veth0"), (b, "veth1")] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        let mut tc = vec!["-n", a, "qdisc", "add", "dev", "veth0", "root"];
        tc.extend_from_slice(qdisc);
        let out = Command::new("tc").args(&tc).output().expect("running tc");
        assert!(
            out.status.success(),
            "tc {tc:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pair
    }

    /// `Tcp: RetransSegs` of namespace `a`.
    fn retrans_segs(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.a, "cat", "/proc/net/snmp"])
            .output()
            .expect("reading /proc/net/snmp");
        retrans_segs_in(&String::from_utf8_lossy(&out.stdout))
    }
}

/// `Tcp: RetransSegs` of the test's own namespace.
fn host_retrans_segs() -> u64 {
    retrans_segs_in(&std::fs::read_to_string("/proc/net/snmp").expect("reading /proc/net/snmp"))
}

/// `Tcp: RetransSegs` from the text of a `/proc/net/snmp`.
fn retrans_segs_in(snmp: &str) -> u64 {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sends `bytes` from namespace a to b through the pair's qdisc with cubic;
/// returns (client event, final stats, RetransSegs of a over the window).
fn bulk_through(pair: &NetPair, bytes: u64) -> (Value, Value, u64) {
    let agent = Agent::start(&[]);
    let (mut srv, port, srv_pid) = server(Some(&pair.b), "10.250.0.2:0", &[]);
    let bytes_s = bytes.to_string();
    let (mut cli, cli_pid) = client(
        Some(&pair.a),
        &format!("10.250.0.2:{port}"),
        &["--sizes", &bytes_s, "--cc", "cubic"],
    );
    let id = start(
        &agent,
        &["--pid", &srv_pid.to_string(), "--pid", &cli_pid.to_string()],
    );
    let before = pair.retrans_segs();
    cli.go();
    cli.expect("done");
    let got: u64 = srv.expect("done")[0].parse().unwrap();
    assert_eq!(got, bytes);
    wait_connections(&agent, &id, 2);
    let after = pair.retrans_segs();
    let (events, stats) = stop(&agent, &id);
    assert_eq!(events.len(), 2, "{events:#?}");
    let active = events.iter().find(|e| e["active"] == true).unwrap().clone();
    let passive = events.iter().find(|e| e["active"] != true).unwrap();
    assert_eq!(u64_of(&passive["pid"]), u64::from(srv_pid));
    assert_eq!(u64_of(&passive["bytesReceived"]), bytes, "{passive}");
    assert_eq!(u64_of(&active["pid"]), u64::from(cli_pid));
    assert_eq!(active["remoteAddr"], "10.250.0.2");
    assert_eq!(u64_of(&active["remotePort"]), u64::from(port));
    (active, stats, after - before)
}

#[test]
#[ignore = "needs root and BPF"]
fn lossy_path_retransmits_match_the_kernel_counters() {
    require_kernel();
    // A queue of two packets in front of 20 Mbit/s: cubic overruns it.
    let pair = NetPair::create(
        "loss",
        &["tbf", "rate", "20mbit", "burst", "4kb", "limit", "3kb"],
    );
    const BYTES: u64 = 2_000_000;
    let (ev, stats, retrans_segs) = bulk_through(&pair, BYTES);
    let retransmits = u64_of(&ev["retransmits"]);
    assert!(retrans_segs > 0, "the tiny queue dropped nothing");
    // Same window, same namespace, only this connection in it.
    assert_eq!(retransmits, retrans_segs, "{ev}");
    let r = remote(&stats, "10.250.0.2", u64_of(&ev["remotePort"]) as u16, 0);
    assert_eq!(u64_of(&r["retransmits"]), retrans_segs, "{r}");
    // Retransmitted payload is not counted twice.
    assert_eq!(u64_of(&ev["bytesSent"]), BYTES, "{ev}");
}

#[test]
#[ignore = "needs root and BPF"]
fn added_delay_shows_in_rtt() {
    require_kernel();
    // A 40 ms queue in front of 20 Mbit/s: cubic fills it, and every ACK
    // comes back that much later.
    let pair = NetPair::create(
        "delay",
        &["tbf", "rate", "20mbit", "burst", "4kb", "latency", "40ms"],
    );
    let (ev, stats, _) = bulk_through(&pair, 3_000_000);
    let r = remote(&stats, "10.250.0.2", u64_of(&ev["remotePort"]) as u16, 0);
    assert!(rtt_samples(r) > 10, "{r}");
    let p50 = u64_of(&r["rttP50Us"]);
    assert!(p50 >= 4_000, "RTT p50 {p50}us does not show the queue: {r}");
}

#[test]
#[ignore = "needs root and BPF"]
fn capabilities_report_tcp_metrics() {
    require_kernel();
    let agent = Agent::start(&[]);
    let caps = agent.coral_json(&["caps"]).remove(0);
    let kind = caps["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "COLLECTOR_KIND_TCP_METRICS")
        .unwrap_or_else(|| panic!("{caps}"));
    assert_eq!(kind["available"], true, "{kind}");
    let hooks = kind["hooks"].to_string();
    assert!(
        hooks.contains("inet_sock_set_state") && hooks.contains("tcp_probe"),
        "{kind}"
    );

    // Owners of accepted connections: sock_*_length where the kernel has
    // them (no syscall tracepoint, no tax on other syscalls).
    let has_io = std::path::Path::new("/sys/kernel/tracing/events/sock/sock_recv_length").exists();
    let id = start(&agent, &["--comm", "coral-no-such"]);
    let names = program_names(&agent, &id);
    assert_eq!(names.contains("coral_tcp_recv"), has_io, "{names:?}");
    assert_eq!(names.contains("coral_tcp_accept4"), !has_io, "{names:?}");
    stop(&agent, &id);
    // Capabilities name the hooks chosen here, not both ways.
    assert_eq!(hooks.contains("sock_recv_length"), has_io, "{kind}");
    assert_eq!(hooks.contains("sys_exit_accept"), !has_io, "{kind}");

    // Bad filters are refused before anything loads.
    let out = agent.coral(&[
        "tap",
        "start",
        "--kind",
        "tcp-metrics",
        "--remote-prefix",
        "10.0.0.0/40",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prefix"));
}
