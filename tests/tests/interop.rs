//! Stock gRPC clients that nobody on the project wrote: Python `grpcio` (gRPC
//! C-core, as C++, Ruby and PHP use it), knowing the API only through server
//! reflection (v1alpha, as stock grpcio-reflection speaks it), on the default
//! transport, the Unix socket, and on loopback TCP. The channel is
//! `grpc.insecure_channel(target)` with no options: on the Unix socket
//! C-core then sends the socket path as `:authority`, which the agent's
//! HTTP/2 stack refuses unless `server/authority.rs` rewrites it.
//!
//! The client is `tests/python/grpcio_client.py`; `.ci/install-deps`
//! installs its packages.

use coral_e2e::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

const SERVICES: [&str; 4] = [
    "coral.agent.v1.EbpfService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Runs the Python client on `target`; the JSON it printed.
fn grpcio(target: &str, extra: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpcio_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(target)
        .args(extra)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "the grpcio client failed on {target} ({}): {}\n(its Python packages come from .ci/install-deps)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpcio client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What every run must have seen: reflection (both versions), capabilities,
/// health Check and Watch as the health protocol has them.
fn check_the_basics(v: &Value) {
    let names = |key: &str| -> Vec<&str> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    };
    assert_eq!(names("services"), SERVICES, "reflection v1alpha: {v}");
    assert_eq!(
        names("reflection_v1_services"),
        SERVICES,
        "reflection v1: {v}"
    );
    assert!(!v["caps"]["agent_id"].as_str().unwrap().is_empty(), "{v}");
    assert!(v["caps"]["kinds"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["caps"]["limits"]["maxRunningCollectors"]
            .as_u64()
            .unwrap()
            > 0,
        "{v}"
    );
    assert_eq!(v["health_check"]["(server)"], "SERVING", "{v}");
    assert_eq!(
        v["health_check"]["coral.agent.v1.EbpfService"], "SERVING",
        "{v}"
    );
    assert_eq!(v["health_check_unknown"], "NOT_FOUND", "{v}");
    assert_eq!(v["watch_known_first"], "SERVING", "{v}");
    // SERVICE_UNKNOWN first, then the call stays open until the client's
    // own 2 s deadline ends it.
    let unknown = &v["watch_unknown"];
    assert_eq!(unknown["first"], "SERVICE_UNKNOWN", "{v}");
    assert_eq!(unknown["then"], "DEADLINE_EXCEEDED", "{v}");
    assert!(unknown["open_s"].as_f64().unwrap() >= 1.9, "{v}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tcp_agent() -> (Agent, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start_with(&listen, &format!("http://{listen}"), &[], &[], &[], None);
    (agent, listen)
}

#[test]
fn grpcio_with_reflection_only_on_the_unix_socket() {
    let agent = Agent::start(&[]);
    check_the_basics(&grpcio(&agent.addr, &[]));
}

#[test]
fn grpcio_with_reflection_only_on_loopback_tcp() {
    let (_agent, target) = tcp_agent();
    check_the_basics(&grpcio(&target, &[]));
}

#[test]
#[ignore = "needs root and BPF"]
fn grpcio_starts_a_collector_and_streams_it_to_the_end() {
    require_kernel();
    let unix = Agent::start(&[]);
    let (_tcp, tcp_target) = tcp_agent();
    for target in [unix.addr.as_str(), tcp_target.as_str()] {
        // syscall-stats on the client's own pid for 2 s, snapshots every
        // 200 ms, streamed from seq 1 until the stream says it ended.
        let v = grpcio(target, &["--collect", "--duration", "2"]);
        check_the_basics(&v);
        assert_eq!(v["started_state"], "COLLECTOR_STATE_RUNNING", "{v}");
        let stream = &v["stream"];
        assert!(stream["records"].as_u64().unwrap() > 1, "{v}");
        assert_eq!(stream["gaps"], 0, "{v}");
        assert_eq!(stream["final"], true, "{v}");
        assert!(stream["final_syscalls"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(stream["ended"], "COLLECTOR_STATE_EXPIRED", "{v}");
    }
}
