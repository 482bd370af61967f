//! http-latency end to end against real servers: Python's http.server with
//! handlers of known duration and status, and nginx under ApacheBench.

use coral_e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn python_server() -> Server {
    let mut child = Command::new("python3")
        .arg(fixtures().join("http_server.py"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("server said {line:?}"));
    Server { child, port }
}

/// Sends one request on `stream` and reads the whole response; returns the status.
fn request(stream: &mut TcpStream, method: &str, path: &str, body: &str) -> u32 {
    // One write, as real clients do: `write!` on a bare socket would send
    // each formatted piece in its own segment.
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).unwrap()
}

fn final_http_stats(agent: &Agent, id: &str) -> (Value, Vec<Value>) {
    let records = agent.records(id);
    let last = records.last().expect("records");
    assert_eq!(last["final"], true);
    let requests = records
        .iter()
        .filter_map(|r| r.get("httpRequest").cloned())
        .collect();
    (last["httpStats"].clone(), requests)
}

fn route<'a>(stats: &'a Value, method: &str, route: &str, status: u64) -> &'a Value {
    stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == method && r["route"] == route && u64_of(&r["status"]) == status)
        .unwrap_or_else(|| panic!("no {method} {route} {status} in {stats}"))
}

#[test]
#[ignore = "needs root and BPF"]
fn python_server_exact_counts_and_latency() {
    require_kernel();
    let agent = Agent::start(&[]);
    let server = python_server();
    let pid = server.child.id().to_string();
    let id = agent.start_collector(&["--kind", "http-latency", "--pid", &pid, "--duration", "60s"])
        ["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Keep-alive: ten 50 ms requests on one connection.
    let mut keep = connect(server.port);
    for _ in 0..10 {
        assert_eq!(request(&mut keep, "GET", "/sleep/50", ""), 200);
    }
    drop(keep);
    // New connections for the rest.
    for i in 0..5 {
        let path = format!("/items/{}?status=404", 1000 + i);
        assert_eq!(request(&mut connect(server.port), "GET", &path, ""), 404);
    }
    for _ in 0..3 {
        assert_eq!(
            request(&mut connect(server.port), "POST", "/orders", "{\"n\":1}"),
            201
        );
    }
    for _ in 0..4 {
        assert_eq!(request(&mut connect(server.port), "GET", "/fail", ""), 500);
    }

    agent.coral_json(&["tap", "stop", &id]);
    let (stats, requests) = final_http_stats(&agent, &id);
    assert_eq!(
        u64_of(&route(&stats, "GET", "/sleep/{id}", 200)["count"]),
        10,
        "{stats}"
    );
    assert_eq!(
        u64_of(&route(&stats, "GET", "/items/{id}", 404)["count"]),
        5,
        "{stats}"
    );
    assert_eq!(
        u64_of(&route(&stats, "POST", "/orders", 201)["count"]),
        3,
        "{stats}"
    );
    let fail = route(&stats, "GET", "/fail", 500);
    assert_eq!(u64_of(&fail["count"]), 4, "{stats}");
    assert_eq!(fail["errorRate"], 1.0);
    assert_eq!(stats["routes"].as_array().unwrap().len(), 4, "{stats}");

    let p50 = u64_of(&route(&stats, "GET", "/sleep/{id}", 200)["p50Ns"]) as f64 / 1e6;
    assert!(
        (50.0..=60.0).contains(&p50),
        "p50 of a 50 ms handler: {p50} ms"
    );

    // One event per request, with the raw path and the server's identity.
    assert_eq!(requests.len(), 22);
    let item = requests
        .iter()
        .find(|r| r["path"] == "/items/1003?status=404")
        .unwrap();
    assert_eq!(item["route"], "/items/{id}");
    assert_eq!(u64_of(&item["pid"]), server.child.id() as u64);
    assert!(
        item["comm"].as_str().unwrap().starts_with("python"),
        "{item}"
    );

    // The human table names the routes.
    let out = agent.coral(&["tap", "events", &id, "--sort", "p99"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let sleep_row = text.find("/sleep/{id}").expect("route table");
    assert!(
        sleep_row < text.find("/fail").unwrap(),
        "sorted by p99: {text}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn other_processes_are_not_seen() {
    require_kernel();
    let agent = Agent::start(&[]);
    let watched = python_server();
    let other = python_server();
    let pid = watched.child.id().to_string();
    let id = agent.start_collector(&["--kind", "http-latency", "--pid", &pid])["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        request(&mut connect(watched.port), "GET", "/items/1", "");
        request(&mut connect(other.port), "GET", "/items/1", "");
    }
    agent.coral_json(&["tap", "stop", &id]);
    let (stats, requests) = final_http_stats(&agent, &id);
    assert_eq!(
        u64_of(&route(&stats, "GET", "/items/{id}", 200)["count"]),
        3
    );
    assert_eq!(requests.len(), 3);
}

/// nginx from Debian, serving one file, in a private prefix.
fn nginx(dir: &Path, port: u16) -> Child {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello from nginx\n".repeat(20)).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &dir.display().to_string(), "-c"])
        .arg(dir.join("nginx.conf"))
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// SIGTERM to the master: it takes its workers down with it (SIGKILL would
/// orphan them).
fn stop_nginx(master: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(master.id() as i32, libc::SIGTERM) };
    let _ = master.wait();
}

/// Runs ab and returns its count of complete requests (asserting no failures).
fn ab(args: &[&str]) -> u64 {
    let out = Command::new("ab")
        .args(args)
        .output()
        .expect("ab (apt-get install apache2-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ab failed: {text}");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(field("Failed requests:"), 0, "{text}");
    field("Complete requests:")
}

#[test]
#[ignore = "needs root and BPF"]
fn nginx_count_equals_the_load_generators() {
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = std::env::temp_dir().join(format!("coral-nginx-{}", std::process::id()));
    let port = 18_000 + (std::process::id() % 1000) as u16;
    let mut server = nginx(&dir, port);
    let id = agent.start_collector(&["--kind", "http-latency", "--comm", "nginx"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://127.0.0.1:{port}/index.html");
    let keepalive = ab(&["-q", "-k", "-n", "1500", "-c", "4", &url]);
    let fresh = ab(&["-q", "-n", "500", "-c", "4", &url]);
    agent.coral_json(&["tap", "stop", &id]);
    stop_nginx(&mut server);
    let _ = std::fs::remove_dir_all(&dir);

    let (stats, _) = final_http_stats(&agent, &id);
    assert_eq!(u64_of(&stats["droppedEvents"]), 0);
    let seen = u64_of(&route(&stats, "GET", "/index.html", 200)["count"]);
    assert_eq!(seen, keepalive + fresh, "{stats}");
    assert_eq!(keepalive + fresh, 2000);
}
