//! Many agents in one process, for the colony benchmark (bench/colony.sh):
//! a test double that speaks the real agent API (`coral.agent.v1`, each
//! fake agent on its own Unix socket) and registers with a colony like
//! `coral-agent --colony` does, but whose collectors make synthetic records
//! as fast as asked, without the kernel.
//!
//! `coral-fake-agents --colony URL --agents N --dir DIR [--rate R] [--batch B]`
//!
//! A collector started on a fake agent makes R records a second (http-latency
//! `HttpRequest` events, or syscall-stats snapshots), in batches of B, until
//! its duration ends or it is stopped; then a final record. Its records are
//! kept (all of them) and served by `GetEvents` and `StreamEvents` with the
//! agent's cursor semantics. Prints `ready` once every agent has registered.

use coral_proto::colony::v1 as cpb;
use coral_proto::colony::v1::colony_service_client::ColonyServiceClient;
use coral_proto::v1 as pb;
use coral_proto::v1::ebpf_service_server::{EbpfService, EbpfServiceServer};
use coral_proto::v1::stream_events_response::Event;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Log {
    info: pb::CollectorInfo,
    records: Vec<pb::Record>,
    stop: bool,
}

struct Collector {
    log: Mutex<Log>,
    /// The last seq, and whether it ended.
    tip: watch::Sender<(u64, bool)>,
}

#[derive(Clone)]
struct FakeAgent {
    id: String,
    rate: u64,
    batch: u64,
    collectors: Arc<Mutex<HashMap<String, Arc<Collector>>>>,
}

fn payload(kind: pb::CollectorKind, seq: u64, elapsed_ns: u64) -> pb::record::Payload {
    use pb::record::Payload;
    match kind {
        pb::CollectorKind::SyscallStats => Payload::SyscallStats(pb::SyscallStats {
            elapsed_ns,
            syscalls: (0..10)
                .map(|i| pb::SyscallStat {
                    name: format!("syscall_{i}"),
                    count: seq * (i + 1),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        _ => Payload::HttpRequest(pb::HttpRequest {
            pid: 4242,
            comm: "fake-server".into(),
            method: "GET".into(),
            path: format!("/users/{}", seq % 1000),
            status: 200,
            latency_ns: 100_000 + seq % 5000,
            ..Default::default()
        }),
    }
}

impl FakeAgent {
    fn capabilities(&self) -> pb::Capabilities {
        pb::Capabilities {
            agent_id: self.id.clone(),
            agent_version: "fake".into(),
            kinds: [
                pb::CollectorKind::SyscallStats,
                pb::CollectorKind::HttpLatency,
            ]
            .into_iter()
            .map(|k| pb::KindAvailability {
                kind: k as i32,
                available: true,
                reason: String::new(),
                hooks: vec![],
            })
            .collect(),
            ..Default::default()
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Collector>, Status> {
        self.collectors
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no collector {id}")))
    }

    /// Makes records until the deadline or a stop.
    async fn generate(self, c: Arc<Collector>, kind: pb::CollectorKind, deadline: u64) {
        let started = now();
        let tick = Duration::from_nanos(1_000_000_000 * self.batch / self.rate.max(1));
        let mut interval = tokio::time::interval(tick);
        let mut seq = 0;
        loop {
            interval.tick().await;
            let t = now();
            let end = t >= deadline || c.log.lock().unwrap().stop;
            let mut log = c.log.lock().unwrap();
            let n = if end { 1 } else { self.batch };
            for i in 0..n {
                seq += 1;
                let record = pb::Record {
                    seq,
                    time_unix_nano: t,
                    collector_id: log.info.id.clone(),
                    agent_id: self.id.clone(),
                    labels: Default::default(),
                    r#final: end && i + 1 == n,
                    payload: Some(payload(kind, seq, t - started)),
                };
                log.records.push(record);
            }
            log.info.last_seq = seq;
            if end {
                log.info.state = if log.stop {
                    pb::CollectorState::Stopped
                } else {
                    pb::CollectorState::Expired
                } as i32;
                log.info.ended_unix_nano = t;
                let _ = c.tip.send((seq, true));
                return;
            }
            let _ = c.tip.send((seq, false));
        }
    }
}

type EventStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EbpfService for FakeAgent {
    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::Capabilities>, Status> {
        Ok(Response::new(self.capabilities()))
    }

    async fn start_collector(
        &self,
        request: Request<pb::StartCollectorRequest>,
    ) -> Result<Response<pb::StartCollectorResponse>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        let kind = pb::CollectorKind::try_from(spec.kind).unwrap_or_default();
        let id = uuid();
        let t = now();
        let deadline = t + spec.duration_ns.unwrap_or(60_000_000_000);
        let info = pb::CollectorInfo {
            id: id.clone(),
            spec: Some(spec),
            state: pb::CollectorState::Running as i32,
            created_unix_nano: t,
            started_unix_nano: t,
            deadline_unix_nano: deadline,
            first_retained_seq: 1,
            ..Default::default()
        };
        let (tip, _) = watch::channel((0, false));
        let c = Arc::new(Collector {
            log: Mutex::new(Log {
                info: info.clone(),
                records: Vec::new(),
                stop: false,
            }),
            tip,
        });
        self.collectors.lock().unwrap().insert(id, c.clone());
        tokio::spawn(self.clone().generate(c, kind, deadline));
        Ok(Response::new(pb::StartCollectorResponse {
            collector: Some(info),
            warnings: vec![],
        }))
    }

    async fn stop_collector(
        &self,
        request: Request<pb::StopCollectorRequest>,
    ) -> Result<Response<pb::CollectorInfo>, Status> {
        let c = self.get(&request.into_inner().id)?;
        c.log.lock().unwrap().stop = true;
        let mut tip = c.tip.subscribe();
        let _ = tip.wait_for(|t| t.1).await;
        let info = c.log.lock().unwrap().info.clone();
        Ok(Response::new(info))
    }

    async fn extend_collector(
        &self,
        request: Request<pb::ExtendCollectorRequest>,
    ) -> Result<Response<pb::CollectorInfo>, Status> {
        let c = self.get(&request.into_inner().id)?;
        let info = c.log.lock().unwrap().info.clone();
        Ok(Response::new(info))
    }

    async fn get_collector(
        &self,
        request: Request<pb::GetCollectorRequest>,
    ) -> Result<Response<pb::CollectorInfo>, Status> {
        let c = self.get(&request.into_inner().id)?;
        let info = c.log.lock().unwrap().info.clone();
        Ok(Response::new(info))
    }

    async fn list_collectors(
        &self,
        _: Request<pb::ListCollectorsRequest>,
    ) -> Result<Response<pb::ListCollectorsResponse>, Status> {
        let collectors = self
            .collectors
            .lock()
            .unwrap()
            .values()
            .map(|c| c.log.lock().unwrap().info.clone())
            .collect();
        Ok(Response::new(pb::ListCollectorsResponse { collectors }))
    }

    async fn get_events(
        &self,
        request: Request<pb::GetEventsRequest>,
    ) -> Result<Response<pb::GetEventsResponse>, Status> {
        let pb::GetEventsRequest { id, after_seq, max } = request.into_inner();
        let c = self.get(&id)?;
        let log = c.log.lock().unwrap();
        let max = if max == 0 { 1000 } else { max.min(10_000) } as usize;
        let from = (after_seq as usize).min(log.records.len());
        let records: Vec<pb::Record> = log.records[from..].iter().take(max).cloned().collect();
        let next_after_seq = records.last().map_or(after_seq, |r| r.seq);
        let ended = log.info.state != pb::CollectorState::Running as i32;
        Ok(Response::new(pb::GetEventsResponse {
            records,
            state: log.info.state,
            next_after_seq,
            end: ended && next_after_seq >= log.info.last_seq,
            missed: 0,
        }))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let pb::StreamEventsRequest { id, from_seq } = request.into_inner();
        let c = self.get(&id)?;
        let tip = c.tip.subscribe();
        let cursor = match from_seq {
            0 => tip.borrow().0,
            n => n - 1,
        };
        let state = (c, tip, cursor, false);
        let stream = futures_util::stream::unfold(state, |(c, mut tip, cursor, done)| async move {
            if done {
                return None;
            }
            loop {
                let (last, ended) = *tip.borrow_and_update();
                if cursor < last {
                    let r = c.log.lock().unwrap().records[cursor as usize].clone();
                    let item = Ok(pb::StreamEventsResponse {
                        event: Some(Event::Record(r)),
                    });
                    return Some((item, (c, tip, cursor + 1, false)));
                }
                if ended {
                    let info = c.log.lock().unwrap().info.clone();
                    let item = Ok(pb::StreamEventsResponse {
                        event: Some(Event::Ended(info)),
                    });
                    return Some((item, (c, tip, cursor, true)));
                }
                if tip.changed().await.is_err() {
                    return None;
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "fake-{}-{}-{}",
        std::process::id(),
        now(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn colony_client(addr: &str) -> ColonyServiceClient<tonic::transport::Channel> {
    let path = PathBuf::from(addr.strip_prefix("unix://").unwrap_or(addr));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connecting to the colony");
    ColonyServiceClient::new(channel)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let colony = arg(&args, "--colony").expect("--colony unix:///path");
    let n: usize = arg(&args, "--agents").map_or(50, |v| v.parse().expect("--agents N"));
    let dir = PathBuf::from(arg(&args, "--dir").expect("--dir DIR"));
    let rate: u64 = arg(&args, "--rate").map_or(1000, |v| v.parse().expect("--rate R"));
    let batch: u64 = arg(&args, "--batch").map_or(10, |v| v.parse().expect("--batch B"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut client = colony_client(&colony).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let socket = dir.join(format!("fake{i}.sock"));
        let _ = std::fs::remove_file(&socket);
        let agent = FakeAgent {
            id: format!("fake-agent-{i}-{}", std::process::id()),
            rate,
            batch,
            collectors: Default::default(),
        };
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let caps = agent.capabilities();
        ids.push(agent.id.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    EbpfServiceServer::new(agent).max_encoding_message_size(64 * 1024 * 1024),
                )
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        client
            .register(cpb::RegisterRequest {
                agent_id: caps.agent_id.clone(),
                node: format!("fake-node-{i}"),
                labels: [("bench".to_string(), "colony".to_string())].into(),
                address: format!("unix://{}", socket.display()),
                capabilities: Some(caps),
            })
            .await
            .expect("registering");
    }
    println!("ready");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for id in &ids {
            let _ = client
                .heartbeat(cpb::HeartbeatRequest {
                    agent_id: id.clone(),
                })
                .await;
        }
    }
}
