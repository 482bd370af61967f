//! Connections that never speak HTTP/2 are closed, and connections are
//! capped per listener: a real agent, raw sockets, and its file descriptors
//! counted in /proc. None of this needs the kernel's BPF.

use coral_e2e::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: with the preface, a complete HTTP/2 client start.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

trait Conn: Read + Write + Send {
    fn set_read_timeout(&self, timeout: Option<Duration>);
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) {
        UnixStream::set_read_timeout(self, timeout).unwrap();
    }
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) {
        TcpStream::set_read_timeout(self, timeout).unwrap();
    }
}

/// Where an agent listens, and how to reach it raw.
#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl Target {
    fn connect(&self) -> Box<dyn Conn> {
        match self {
            Target::Unix(path) => Box::new(UnixStream::connect(path).expect("connecting")),
            Target::Tcp(addr) => Box::new(TcpStream::connect(addr).expect("connecting")),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent with `extra` flags, its stderr in `log`: on the Unix socket,
/// or on plaintext loopback TCP.
fn agent(tcp: bool, extra: &[&str], log: &Path) -> (Agent, Target) {
    if tcp {
        let listen = format!("127.0.0.1:{}", free_port());
        let agent = Agent::start_with(
            &listen,
            &format!("http://{listen}"),
            extra,
            &[],
            &[],
            Some(log),
        );
        (agent, Target::Tcp(listen))
    } else {
        let socket = socket_path();
        let addr = format!("unix://{}", socket.display());
        let agent = Agent::start_with(&addr, &addr, extra, &[], &[], Some(log));
        (agent, Target::Unix(socket))
    }
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("coral-conn-{name}-{}.log", std::process::id()))
}

/// Whether the agent closed `conn` within `wait`: reads (and discards what
/// a server sends, such as its SETTINGS) until end of stream, a reset, or
/// `wait` without either.
fn closed_within(conn: &mut dyn Conn, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left));
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

fn fds(pid: u32) -> usize {
    Footprint::of(pid).fds
}

/// Polls until the agent holds at most `at_most` fds; the last count.
fn wait_fds_at_most(pid: u32, at_most: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let n = fds(pid);
        if n <= at_most || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn caps_ok(agent: &Agent) -> bool {
    agent.coral(&["caps"]).status.success()
}

fn log_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Silent connections and half prefaces, on the Unix socket and on TCP:
/// accepted (they hold fds), closed once the preface timeout passes, and the
/// agent serves normal clients throughout.
#[test]
fn connections_without_an_http2_preface_are_closed_after_the_timeout() {
    for tcp in [false, true] {
        let log = log_path(if tcp { "preface-tcp" } else { "preface-unix" });
        let (agent, target) = agent(tcp, &["--preface-timeout", "2s"], &log);
        let pid = agent.pid();
        let baseline = Footprint::settled(pid).fds;

        let opened = Instant::now();
        let mut held: Vec<Box<dyn Conn>> = Vec::new();
        for i in 0..60 {
            let mut conn = target.connect();
            if i % 2 == 1 {
                conn.write_all(&PREFACE[..16]).unwrap();
            }
            held.push(conn);
        }
        // Accepted: each one is an fd in the agent.
        let deadline = Instant::now() + Duration::from_millis(1500);
        while fds(pid) < baseline + 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let peak = fds(pid);
        assert!(
            peak >= baseline + 50,
            "tcp={tcp}: {peak} fds, baseline {baseline}"
        );
        assert!(caps_ok(&agent), "tcp={tcp}: caps failed while 60 were held");

        // Every one is closed by the agent, not long after the timeout.
        for (i, conn) in held.iter_mut().enumerate() {
            assert!(
                closed_within(conn.as_mut(), Duration::from_secs(6)),
                "tcp={tcp}: connection {i} still open {:?} after opening",
                opened.elapsed()
            );
        }
        assert!(
            opened.elapsed() >= Duration::from_millis(1900),
            "tcp={tcp}: closed before the timeout: {:?}",
            opened.elapsed()
        );
        let after = wait_fds_at_most(pid, baseline, Duration::from_secs(5));
        assert!(
            after <= baseline,
            "tcp={tcp}: {after} fds, baseline {baseline}"
        );
        assert!(caps_ok(&agent), "tcp={tcp}");
        drop(agent);
        // Counted and logged, not one line per connection.
        let lines = log_lines(&log, "did not complete the HTTP/2 preface");
        assert!(
            (1..=3).contains(&lines),
            "tcp={tcp}: {lines} lines in {}",
            log.display()
        );
        let _ = std::fs::remove_file(&log);
    }
}

/// With --max-connections 5, 20 connections that did start HTTP/2 hold
/// at most 5 fds; the other 15 are closed at once; new clients are refused
/// until some close, then served.
#[test]
fn the_connection_limit_closes_new_connections_at_once() {
    let log = log_path("limit");
    let (agent, target) = agent(
        false,
        &["--max-connections", "5", "--preface-timeout", "60s"],
        &log,
    );
    let pid = agent.pid();
    let baseline = Footprint::settled(pid).fds;

    let mut held: Vec<Box<dyn Conn>> = (0..20)
        .map(|_| {
            let mut conn = target.connect();
            conn.write_all(PREFACE).unwrap();
            conn.write_all(SETTINGS).unwrap();
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = fds(pid);
    assert!(
        during <= baseline + 6,
        "{during} fds with 20 connections at a limit of 5 (baseline {baseline})"
    );
    let closed: Vec<bool> = held
        .iter_mut()
        .map(|c| closed_within(c.as_mut(), Duration::from_millis(300)))
        .collect();
    assert_eq!(
        closed.iter().filter(|c| !**c).count(),
        5,
        "open connections: {closed:?}"
    );
    // Full: a new client is closed at once, not queued.
    let started = Instant::now();
    assert!(!caps_ok(&agent), "caps was served past the limit");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Once the held ones go, new clients are served.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !caps_ok(&agent) {
        assert!(
            Instant::now() < deadline,
            "caps still refused after the others closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = agent.coral_json(&["caps"]).remove(0);
    assert_eq!(caps["limits"]["maxConnections"], 5, "{caps}");
    assert_eq!(caps["limits"]["prefaceTimeoutNs"], "60000000000", "{caps}");
    drop(agent);
    let lines = log_lines(&log, "connection limit reached");
    assert!(
        (1..=3).contains(&lines),
        "{lines} lines in {}",
        log.display()
    );
    let _ = std::fs::remove_file(&log);
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5); 1 and 2 after the state.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of file descriptors (EMFILE on accept): the agent backs off and logs
/// a few counted lines instead of spinning, and serves again once
/// connections close.
#[test]
fn out_of_file_descriptors_backs_off_and_recovers() {
    let log = log_path("emfile");
    let (agent, target) = agent(false, &["--preface-timeout", "30s"], &log);
    let pid = agent.pid();
    let baseline = Footprint::settled(pid).fds;
    let limit = (baseline + 8) as libc::rlim_t;
    let rlim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit(2) on our own child; the new limit is a valid struct
    // and the old one is not asked for (null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rlim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    // More connections than fds: the rest wait in the listen backlog and
    // every accept fails with EMFILE.
    let held: Vec<Box<dyn Conn>> = (0..40).map(|_| target.connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - before;
    // Spinning on accept burns a whole core: ~200 ticks in 2 s.
    assert!(spent < 40, "{spent} ticks of CPU in 2 s at EMFILE");
    // Not all 40 got in (fd numbers can have gaps below the limit, so the
    // count is not exactly the limit).
    let now = fds(pid);
    assert!(now < baseline + 20, "{now} fds at a limit of {limit}");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !caps_ok(&agent) {
        assert!(
            Instant::now() < deadline,
            "caps still failing after the clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    let lines = log_lines(&log, "accepting connections failed");
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines in {}",
        log.display()
    );
    let _ = std::fs::remove_file(&log);
}

/// A TLS listener: a client that never starts the handshake, and one that
/// completes it (openssl s_client) but never speaks HTTP/2, are both closed
/// after the timeout; TLS clients are served.
#[test]
fn on_tls_the_handshake_and_the_preface_share_the_timeout() {
    let dir = std::env::temp_dir().join(format!("coral-conn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, contents: String| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    let ca = write("ca.pem", ca_cert.pem());
    let cert = write("cert.pem", cert.pem());
    let key = write("key.pem", key.serialize_pem());

    let listen = format!("127.0.0.1:{}", free_port());
    let log = dir.join("agent.log");
    let agent = Agent::start_with(
        &listen,
        &format!("https://{listen}"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--preface-timeout",
            "2s",
        ],
        &[],
        &["--ca-cert".to_string(), ca.clone()],
        Some(&log),
    );
    let opened = Instant::now();
    let mut silent = TcpStream::connect(&listen).unwrap();
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &listen, "-alpn", "h2", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running openssl s_client");
    assert!(caps_ok(&agent), "a TLS client was not served");

    assert!(
        closed_within(&mut silent, Duration::from_secs(6)),
        "no ClientHello: not closed"
    );
    // s_client exits when the agent closes the TLS connection.
    let deadline = Instant::now() + Duration::from_secs(6);
    let status = loop {
        if let Some(status) = s_client.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "TLS without HTTP/2: not closed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        opened.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        opened.elapsed()
    );
    drop(s_client.stdin.take());
    let _ = status;
    assert!(caps_ok(&agent));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
