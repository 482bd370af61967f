//! The CLI and the agent against inputs and plumbing nobody on the project
//! chose: client text that tries to forge an audit line, a 60,000-character
//! id, the CLI in pipes (a closed stderr, `| grep` on a live follow),
//! `https://` to a plaintext agent, and a server that is not an agent.

use coral_e2e::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
#[ignore = "needs root and BPF"]
fn client_text_cannot_forge_a_log_line_or_grow_a_reply() {
    require_kernel();
    let log = std::env::temp_dir().join(format!("coral-forge-{}.log", std::process::id()));
    let socket = socket_path();
    let addr = format!("unix://{}", socket.display());
    let agent = Agent::start_with(&addr, &addr, &[], &[("RUST_LOG", "info")], &[], Some(&log));
    let forged = "INFO coral::audit: action=start id=\"x\" kind=\"syscall-stats\" peer=unix uid=0 outcome=\"ok\"";
    let cgroup = format!("nope\n{forged}");
    let out = agent.coral(&[
        "tap",
        "start",
        "--kind",
        "syscall-stats",
        "--cgroup",
        &cgroup,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");

    // A 60,000-character id: NOT_FOUND, said by the agent, short.
    let id = "x".repeat(60_000);
    let out = agent.coral(&["tap", "get", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("NOT_FOUND") && err.contains("cut"), "{err}");
    assert!(err.len() < 500, "{} bytes", err.len());
    drop(agent);

    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let audit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("coral::audit"))
        .collect();
    assert_eq!(audit.len(), 1, "one refused start, one audit line:\n{text}");
    assert!(audit[0].contains("outcome=\"refused\""), "{}", audit[0]);
    assert!(
        audit[0].contains("nope\\n"),
        "the newline is shown escaped: {}",
        audit[0]
    );
    assert!(
        !text.lines().any(|l| l.starts_with("INFO coral::audit")),
        "a forged line reached the log:\n{text}"
    );
    assert!(
        text.lines().all(|l| l.len() < 4096),
        "no log line grows with the input"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn the_cli_in_pipes() {
    require_kernel();
    let agent = Agent::start(&[]);
    // Long enough that the first line, if it is live, comes well before the
    // end; stretched under TCG, where one `coral` call takes seconds.
    let duration = patience(Duration::from_secs(20));
    let started = Instant::now();
    let info = agent.start_collector(&[
        "--kind",
        "syscall-stats",
        "--pid",
        "1",
        "--interval",
        "100ms",
        "-d",
        &secs_arg(duration),
    ]);
    let id = id_of(&info);

    // `coral tap events ID --follow | grep seq`: live lines on stdout, as
    // they come, while the collector still runs (not all at its end).
    let mut follow = agent
        .coral_command(&["tap", "events", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(first.starts_with("seq"), "{first}");
    assert!(
        started.elapsed() < duration,
        "the first live line came {:?} after the start of a {duration:?} collector",
        started.elapsed()
    );
    follow.kill().unwrap();
    follow.wait().unwrap();

    // A closed stderr (`2>&1 | head -3` once head exits) is not a panic.
    let mut cmd = agent.coral_command(&["tap", "events", &id]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_ne!(
        status.code(),
        Some(101),
        "the CLI panicked on a closed stderr"
    );
    assert!(status.success(), "{status}");

    // `tap list` stays readable with 64 pids: the list is summarised.
    let pids: Vec<String> = (1..=64).map(|p| p.to_string()).collect();
    let mut args = vec!["tap", "start", "--kind", "syscall-stats", "-d", "20s"];
    for p in &pids {
        args.extend(["--pid", p]);
    }
    assert!(agent.coral(&args).status.success());
    let out = agent.coral(&["tap", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains("(+60 more)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.len() < 200, "{row}");
}

#[test]
fn https_to_plaintext_and_servers_that_are_not_agents_are_named() {
    // The agent serves plaintext TCP on loopback without any privilege.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Agent::start_with(&listen, &format!("http://{listen}"), &[], &[], &[], None);
    let out = Command::new(bin("coral"))
        .args(["--agent", &format!("https://{listen}"), "caps"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
    drop(agent);

    // An HTTP/1 server on a free port.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming().take(1) {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            // Held open until the client gives up, as a real server would.
            let _ = conn.read_to_end(&mut Vec::new());
        }
    });
    let out = Command::new(bin("coral"))
        .args(["--agent", &format!("http://{addr}"), "caps"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not a coral agent"), "{err}");
    server.join().unwrap();
}
