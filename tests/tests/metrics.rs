//! Metrics export end to end: a real Prometheus server scrapes the real
//! agent's `/metrics` (`--metrics-listen`) while a real syscall-stats
//! collector counts a workload's exact getppid calls; `promtool` checks the
//! exposition; an OTLP receiver built on the upstream OpenTelemetry protobuf
//! definitions (`tests/python/otlp_receiver.py`) gets the same value pushed
//! (`--otlp-endpoint`); a reaped collector's series leave `/metrics`; and
//! off loopback the endpoint needs TLS or a token.
//!
//! Prometheus (`/usr/bin/prometheus`, `/usr/bin/promtool`: Debian's
//! `prometheus` package) and the receiver's Python packages are installed
//! by `.ci/install-deps`. Every server runs on its own temporary directory
//! and a free loopback port.

use coral_e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const N_GETPPID: u64 = 4_321;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("coral-metrics-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1: (status, body), or the I/O error.
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(patience(Duration::from_secs(10))))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    // The agent answers with Content-Length; chunked bodies do not occur.
    Ok((status, body.to_string()))
}

fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics", &[]).expect("scraping /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` every 200 ms until it returns `Some`, at most `timeout` (its
/// [`patience`]).
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience(timeout);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Prometheus server scraping `targets` every second, on its own data
/// directory and port; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Prometheus {
    fn start(targets: &[u16]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = dir.file(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: coral-agent\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        );
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("running prometheus (apt-get install prometheus; .ci/install-deps does)");
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        wait_for("prometheus to be ready", Duration::from_secs(30), || {
            http_get(port, "/-/ready", &[])
                .ok()
                .filter(|(s, _)| *s == 200)
        });
        prometheus
    }

    /// The instant vector of `query`: each sample's labels and value.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(query)),
            &[],
        )
        .expect("querying prometheus");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("prometheus JSON");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent serving /metrics on a free loopback port.
fn metrics_agent(extra: &[&str]) -> (Agent, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--metrics-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (Agent::start(&args), port)
}

/// An exported syscall-stats collector on a workload that will make
/// exactly N getppid calls; returns (collector id, workload).
fn exported_collector(agent: &Agent, extra: &[&str]) -> (String, Workload) {
    let workload = Workload::spawn(&["--getppid", &N_GETPPID.to_string()]);
    let pid = workload.pid.to_string();
    let mut args = vec![
        "--kind",
        "syscall-stats",
        "--pid",
        pid.as_str(),
        "--export",
        "--label",
        "service=e2e",
        "--interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    let info = agent.start_collector(&args);
    assert_eq!(info["spec"]["export"], true, "{info}");
    (id_of(&info), workload)
}

/// `promtool check metrics` on an exposition: its lint findings, if any.
fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- exposition:\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn prometheus_scrapes_the_exact_getppid_count_and_promtool_accepts_the_exposition() {
    require_kernel();
    let (agent, port) = metrics_agent(&[]);
    // Still running when the last query asks: under TCG Prometheus alone
    // took more than 30 s to be ready.
    let life = secs_arg(patience(Duration::from_secs(60)));
    let (id, mut workload) = exported_collector(&agent, &["--duration", &life]);
    workload.go();
    let prometheus = Prometheus::start(&[port]);

    let query = format!(r#"coral_syscall_calls_total{{collector_id="{id}",syscall="getppid"}}"#);
    let (labels, value) = wait_for(
        "prometheus to hold the exact getppid count",
        Duration::from_secs(60),
        || {
            prometheus
                .query(&query)
                .into_iter()
                .find(|(_, v)| *v == N_GETPPID as f64)
        },
    );
    assert_eq!(value, N_GETPPID as f64);
    assert_eq!(labels["collector_kind"], "syscall-stats", "{labels}");
    assert_eq!(labels["label_service"], "e2e", "{labels}");
    assert_eq!(labels["job"], "coral-agent", "{labels}");
    // The latency histogram accounts for every call too.
    let count =
        format!(r#"coral_syscall_duration_seconds_count{{collector_id="{id}",syscall="getppid"}}"#);
    assert_eq!(prometheus.query(&count)[0].1, N_GETPPID as f64);
    // The agent's own health is there as well.
    let running =
        prometheus.query(r#"coral_collectors{collector_kind="syscall-stats",state="running"}"#);
    assert_eq!(running[0].1, 1.0, "{running:?}");
    assert_eq!(prometheus.query("up")[0].1, 1.0);

    let exposition = scrape(port);
    promtool_check(&exposition);
    for needle in [
        "# TYPE coral_syscall_calls_total counter",
        "# TYPE coral_syscall_duration_seconds histogram",
        "# TYPE coral_collector_start_duration_seconds histogram",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_cpu_seconds_total counter",
        "coral_collector_starts_total{collector_kind=\"syscall-stats\"} 1",
    ] {
        assert!(
            exposition.contains(needle),
            "{needle} missing:\n{exposition}"
        );
    }
    // Its programs' maps are charged to it; run counts need --bpf-stats.
    let maps = exposition
        .lines()
        .find(|l| l.starts_with("coral_bpf_map_memory_bytes{") && l.contains(&id))
        .unwrap_or_else(|| panic!("no map memory for {id}:\n{exposition}"));
    let bytes: u64 = maps.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes > 0, "{maps}");
    assert!(!exposition.contains("coral_bpf_program_runs_total"));

    // OpenMetrics when asked, as Prometheus asks.
    let (status, om) = http_get(
        port,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# UNIT coral_syscall_duration_seconds seconds"),
        "{om}"
    );
}

/// The receiver's Export requests, one proto3-JSON object per line.
struct OtlpReceiver {
    child: Child,
    port: u16,
    requests: mpsc::Receiver<Value>,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running python3 (.ci/install-deps installs opentelemetry-proto and grpcio)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().expect("receiver said nothing").unwrap();
        let port = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver said {ready:?}"));
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx
                    .send(serde_json::from_str(&line).expect("request JSON"))
                    .is_err()
                {
                    return;
                }
            }
        });
        OtlpReceiver {
            child,
            port,
            requests,
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr<'a>(attributes: &'a Value, key: &str) -> &'a Value {
    attributes
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map_or(&Value::Null, |kv| &kv["value"])
}

#[test]
#[ignore = "needs root and BPF"]
fn otlp_receiver_gets_the_same_exact_value() {
    require_kernel();
    let receiver = OtlpReceiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let agent = Agent::start(&["--otlp-endpoint", &endpoint, "--otlp-interval", "1s"]);
    let agent_id = agent.coral_json(&["caps"]).remove(0)["agentId"]
        .as_str()
        .unwrap()
        .to_string();
    let (id, mut workload) = exported_collector(&agent, &[]);
    workload.go();

    let deadline = Instant::now() + patience(Duration::from_secs(60));
    let mut last_seen = None;
    let resource = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let request = receiver
            .requests
            .recv_timeout(remaining)
            .unwrap_or_else(|_| panic!("no exact getppid count pushed; last value {last_seen:?}"));
        let rm = &request["resourceMetrics"][0];
        let points = rm["scopeMetrics"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["metrics"].as_array().cloned().unwrap_or_default())
            .filter(|m| m["name"] == "coral.syscall.calls")
            .flat_map(|m| {
                m["sum"]["dataPoints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            });
        let mut found = None;
        for p in points {
            if attr(&p["attributes"], "collector.id")["stringValue"] == id.as_str()
                && attr(&p["attributes"], "syscall")["stringValue"] == "getppid"
            {
                found = Some(u64_of(&p["asInt"]));
            }
        }
        last_seen = found.or(last_seen);
        if found == Some(N_GETPPID) {
            break rm["resource"].clone();
        }
    };
    let attrs = &resource["attributes"];
    assert_eq!(
        attr(attrs, "service.name")["stringValue"],
        "coral-agent",
        "{resource}"
    );
    assert_eq!(
        attr(attrs, "service.instance.id")["stringValue"],
        agent_id.as_str(),
        "{resource}"
    );
    assert!(
        !attr(attrs, "host.name")["stringValue"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
    assert!(
        attr(attrs, "service.version")["stringValue"].is_string(),
        "{resource}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn a_reaped_collectors_series_leave_metrics() {
    require_kernel();
    // Retention scales too: under TCG a collector kept 1 s was reaped
    // before a `coral` call saw it expired.
    let retention = secs_arg(patience(Duration::from_secs(1)));
    let (agent, port) = metrics_agent(&["--retention", &retention]);
    // Long enough for a scrape to see it: under TCG on 6.1 a 2 s collector
    // and its 1 s of retention were gone before the first scrape.
    let life = secs_arg(patience(Duration::from_secs(2)));
    let (id, mut workload) = exported_collector(&agent, &["--duration", &life]);
    workload.go();
    wait_for("its series on /metrics", Duration::from_secs(10), || {
        scrape(port)
            .lines()
            .any(|l| l.starts_with("coral_syscall_calls_total{") && l.contains(&id))
            .then_some(())
    });
    agent.wait_state(&id, "COLLECTOR_STATE_EXPIRED", Duration::from_secs(10));
    wait_for("its series to go", Duration::from_secs(15), || {
        (!scrape(port).contains(&id)).then_some(())
    });
    let out = agent.coral(&["tap", "get", &id]);
    assert!(!out.status.success(), "reaped: NOT_FOUND");
}

#[test]
#[ignore = "needs root and BPF"]
fn bpf_stats_count_every_run_of_a_collectors_programs() {
    require_kernel();
    let (agent, port) = metrics_agent(&["--bpf-stats"]);
    let (id, mut workload) = exported_collector(&agent, &[]);
    workload.go();
    // sys_enter and sys_exit run for every syscall on the machine (the
    // filter is inside the programs): at least N runs each.
    let runs = wait_for("run counts", Duration::from_secs(10), || {
        let text = scrape(port);
        let runs: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("coral_bpf_program_runs_total{") && l.contains(&id))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        (runs.len() == 2 && runs.iter().all(|&n| n >= N_GETPPID)).then_some(text)
    });
    assert!(
        runs.contains("coral_bpf_program_run_time_seconds_total{"),
        "{runs}"
    );
    assert!(runs.contains("coral_bpf_stats_enabled 1"), "{runs}");
    drop(agent);
}

/// Off loopback with nothing to protect it, the agent refuses to start.
#[test]
fn metrics_off_loopback_without_tls_or_token_is_refused() {
    let port = free_port();
    let socket = socket_path();
    let out = Command::new(bin("coral-agent"))
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args(["--metrics-listen", &format!("0.0.0.0:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing plaintext /metrics") && err.contains("--token-file"),
        "{err}"
    );
}

#[test]
fn metrics_off_loopback_need_a_token_and_read_only_tokens_may_scrape() {
    let dir = TempDir::new("tokens");
    let tokens = dir.file(
        "tokens",
        "ops:0123456789abcdef0123\nprom:fedcba9876543210fedc:read-only\n",
    );
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let addr = format!("unix://{}", socket_path().display());
    let agent = Agent::start_with(
        &addr,
        &addr,
        &[
            "--metrics-listen",
            &listen,
            "--token-file",
            tokens.to_str().unwrap(),
        ],
        &[],
        &["--token".into(), "0123456789abcdef0123".into()],
        None,
    );
    let get = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        http_get(port, "/metrics", &headers).unwrap()
    };
    let (status, body) = get(None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token is required"), "{body}");
    assert_eq!(get(Some("Bearer not-the-token-at-all")).0, 401);
    assert_eq!(get(Some("Basic fedcba9876543210fedc")).0, 401);
    let (status, body) = get(Some("Bearer fedcba9876543210fedc"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("coral_agent_info{"), "{body}");
    assert_eq!(http_get(port, "/other", &[]).unwrap().0, 404);
    drop(agent);
}

#[test]
fn metrics_off_loopback_over_tls() {
    let dir = TempDir::new("tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coral metrics test CA");
    let ca_cert = params.self_signed(&key).unwrap();
    let ca = rcgen::Issuer::new(params, key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "coral-agent");
    let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();
    let ca_pem = dir.file("ca.pem", &ca_cert.pem());
    let cert = dir.file("cert.pem", &leaf.pem());
    let key = dir.file("key.pem", &leaf_key.serialize_pem());

    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let agent = Agent::start(&[
        "--metrics-listen",
        &listen,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca_pem)
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .expect("running curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("coral_agent_info{"), "{body}");
    // Plaintext HTTP to the TLS port gets no metrics.
    if let Ok((status, body)) = http_get(port, "/metrics", &[]) {
        assert_ne!(status, 200, "{body}");
    }
    drop(agent);
}

fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Every expression of the Grafana dashboard is valid PromQL (promtool
/// parses them as recording rules, with the dashboard variables filled in).
/// That every metric they name is exported is checked in the agent crate.
#[test]
fn the_grafana_dashboard_is_valid_promql() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/coral.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut exprs);
    assert!(!exprs.is_empty());
    let mut rules = String::from("groups:\n  - name: coral-dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$instance", ".*").replace("$collector", ".*");
        rules.push_str(&format!(
            "      - record: coral_dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = TempDir::new("dashboard");
    let file = dir.file("rules.yml", &rules);
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("running promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
