//! coral-footprint: measures a running coral-agent through its gRPC API and
//! /proc, for `bench/footprint.sh`.
//!
//! ```text
//! coral-footprint --socket PATH --pid AGENT_PID [--idle-secs 10] [--starts 50]
//!                 [--settle-secs 0] [--flood 20000] [--kinds syscall-stats,tcp-metrics,...]
//! ```
//!
//! 1. Idle: the agent's RSS, and CPU time over `--idle-secs` with no collector.
//! 2. Start latency per kind: `--starts` times StartCollector (the answer
//!    comes once the programs are attached: RPC -> attached), then stop.
//!    p50 / p99 / max. Targets are this process's own pid, so the collectors
//!    trace almost nothing. RSS right after, and again after `--settle-secs`
//!    (give the agent a short `--retention` to see ended collectors reaped).
//! 3. StreamEvents throughput: a tcp-metrics collector records `--flood`
//!    loopback connections made by this process (one record per closed end),
//!    is stopped, and its retained records are streamed from seq 1 to one
//!    client, then to ten at once: records per second delivered.
//!
//! Prints one `key value` per line (machine-readable) and a Markdown summary.

use coral_proto::v1 as pb;
use coral_proto::v1::ebpf_service_client::EbpfServiceClient;
use hyper_util::rt::TokioIo;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn connect(socket: &Path) -> EbpfServiceClient<Channel> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connecting to the agent");
    EbpfServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}

/// (RSS KiB, CPU ticks user+system) of `pid`.
fn proc_sample(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
    // Fields after the command name (which may hold spaces) start at ')'.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn kind_of(name: &str) -> pb::CollectorKind {
    match name {
        "syscall-stats" => pb::CollectorKind::SyscallStats,
        "tcp-metrics" => pb::CollectorKind::TcpMetrics,
        "cpu-profile" => pb::CollectorKind::CpuProfile,
        "http-latency" => pb::CollectorKind::HttpLatency,
        other => panic!("unknown kind {other}"),
    }
}

fn spec(kind: pb::CollectorKind, pid: u32) -> pb::CollectorSpec {
    pb::CollectorSpec {
        kind: kind as i32,
        duration_ns: Some(60_000_000_000),
        filter: Some(pb::TargetFilter {
            pids: vec![pid],
            ..Default::default()
        }),
        labels: Default::default(),
        export: false,
        config: None,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let socket = PathBuf::from(arg(&args, "--socket").expect("--socket PATH"));
    let pid: u32 = arg(&args, "--pid")
        .expect("--pid AGENT_PID")
        .parse()
        .unwrap();
    let idle_secs: u64 = arg(&args, "--idle-secs").map_or(10, |v| v.parse().unwrap());
    let starts: usize = arg(&args, "--starts").map_or(50, |v| v.parse().unwrap());
    let flood: usize = arg(&args, "--flood").map_or(20_000, |v| v.parse().unwrap());
    let settle_secs: u64 = arg(&args, "--settle-secs").map_or(0, |v| v.parse().unwrap());
    let me = std::process::id();
    let mut client = connect(&socket).await;
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner();
    let available: Vec<String> = caps
        .kinds
        .iter()
        .filter(|k| k.available)
        .map(|k| {
            pb::CollectorKind::try_from(k.kind)
                .map(|k| k.as_str_name().to_string())
                .unwrap_or_default()
        })
        .collect();
    let kinds: Vec<String> = arg(&args, "--kinds")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| {
            [
                "syscall-stats",
                "tcp-metrics",
                "http-latency",
                "cpu-profile",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        });
    let mut summary = vec![
        format!("agent {} on {}", caps.agent_version, caps.kernel_release),
        String::new(),
    ];

    // 1. Idle.
    let (rss0, ticks0) = proc_sample(pid);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (rss1, ticks1) = proc_sample(pid);
    let cpu_pct = (ticks1 - ticks0) as f64 / clock_ticks() as f64 / idle_secs as f64 * 100.0;
    println!("idle_rss_kib {rss1}");
    println!("idle_cpu_percent {cpu_pct:.3}");
    summary.push(format!(
        "| idle RSS | {:.1} MiB (at start of the idle window: {:.1} MiB) |",
        rss1 as f64 / 1024.0,
        rss0 as f64 / 1024.0
    ));
    summary.push(format!(
        "| idle CPU over {idle_secs} s | {cpu_pct:.3} % of one core |"
    ));

    // 2. Start latency per kind.
    for name in &kinds {
        let kind = kind_of(name);
        if !available.iter().any(|a| a == kind.as_str_name()) {
            println!("start_latency_{name} unavailable");
            summary.push(format!(
                "| start latency {name} | not available on this node |"
            ));
            continue;
        }
        let mut took = Vec::with_capacity(starts);
        for _ in 0..starts {
            let t = Instant::now();
            let started = client
                .start_collector(pb::StartCollectorRequest {
                    spec: Some(spec(kind, me)),
                })
                .await
                .unwrap_or_else(|e| panic!("starting {name}: {e}"))
                .into_inner();
            took.push(t.elapsed());
            let id = started.collector.unwrap().id;
            client
                .stop_collector(pb::StopCollectorRequest { id })
                .await
                .expect("stop");
        }
        took.sort();
        let (p50, p99, max) = (
            percentile(&took, 0.5),
            percentile(&took, 0.99),
            took[took.len() - 1],
        );
        println!("start_latency_{name}_p50_ms {}", ms(p50));
        println!("start_latency_{name}_p99_ms {}", ms(p99));
        println!("start_latency_{name}_max_ms {}", ms(max));
        summary.push(format!(
            "| start latency {name} ({starts} starts) | p50 {} ms, p99 {} ms, max {} ms |",
            ms(p50),
            ms(p99),
            ms(max)
        ));
    }
    let (rss_after, _) = proc_sample(pid);
    println!("rss_after_starts_kib {rss_after}");
    summary.push(format!(
        "| RSS right after the starts | {:.1} MiB |",
        rss_after as f64 / 1024.0
    ));
    if settle_secs > 0 {
        tokio::time::sleep(Duration::from_secs(settle_secs)).await;
        let (rss_settled, _) = proc_sample(pid);
        println!("rss_settled_kib {rss_settled}");
        summary.push(format!(
            "| RSS {settle_secs} s later (ended collectors reaped) | {:.1} MiB |",
            rss_settled as f64 / 1024.0
        ));
    }

    // 3. StreamEvents throughput.
    if available.iter().any(|a| a == "COLLECTOR_KIND_TCP_METRICS") {
        let id = client
            .start_collector(pb::StartCollectorRequest {
                spec: Some(spec(pb::CollectorKind::TcpMetrics, me)),
            })
            .await
            .expect("starting tcp-metrics")
            .into_inner()
            .collector
            .unwrap()
            .id;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming().take(flood) {
                drop(conn.unwrap());
            }
        });
        for _ in 0..flood {
            drop(TcpStream::connect(addr).unwrap());
        }
        acceptor.join().unwrap();
        // Let the collector drain its ring buffer, then end it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let info = client
            .stop_collector(pb::StopCollectorRequest { id: id.clone() })
            .await
            .expect("stop")
            .into_inner();
        let retained = info.last_seq + 1 - info.first_retained_seq;
        println!("stream_records_retained {retained}");
        for clients in [1usize, 10] {
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let socket = socket.clone();
                let id = id.clone();
                tasks.push(tokio::spawn(async move {
                    let mut client = connect(&socket).await;
                    let mut stream = client
                        .stream_events(pb::StreamEventsRequest { id, from_seq: 1 })
                        .await
                        .expect("stream")
                        .into_inner();
                    let mut n = 0u64;
                    while let Some(msg) = stream.message().await.expect("stream") {
                        if let Some(pb::stream_events_response::Event::Record(_)) = msg.event {
                            n += 1;
                        }
                    }
                    n
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let rate = total as f64 / secs;
            println!("stream_records_per_sec_{clients}_clients {rate:.0}");
            summary.push(format!(
                "| StreamEvents to {clients} client(s) | {rate:.0} records/s ({total} records in {:.2} s) |",
                secs
            ));
        }
    } else {
        summary.push("| StreamEvents | tcp-metrics not available: not measured |".into());
    }
    let (rss_end, _) = proc_sample(pid);
    println!("rss_end_kib {rss_end}");
    summary.push(format!(
        "| RSS at the end | {:.1} MiB |",
        rss_end as f64 / 1024.0
    ));
    println!();
    for line in summary {
        println!("{line}");
    }
}
