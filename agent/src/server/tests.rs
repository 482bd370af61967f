//! Every RPC and every error code, over a real gRPC connection on a Unix
//! socket, with the test collector behind the manager.

use super::listen::{Listen, ServeOptions, serve};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::manager::Manager;
use crate::testing::TestFactory;
use coral_proto::v1::{self as pb, ebpf_service_client::EbpfServiceClient};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

struct Harness {
    client: EbpfServiceClient<Channel>,
    channel: Channel,
    path: PathBuf,
    /// Dropping it shuts the server down.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn harness(name: &str) -> Harness {
    let path = std::env::temp_dir().join(format!("coral-test-{name}-{}.sock", std::process::id()));
    let limits = Limits {
        max_running: 2,
        max_duration: Duration::from_secs(30),
        default_duration: Duration::from_secs(10),
        max_records: 100,
        retention: Duration::from_secs(60),
        max_filter_pids: 4,
        max_profile_frequency_hz: 1000,
        ..Limits::default()
    };
    let manager = Manager::new(
        limits,
        HostCapabilities::default(),
        vec![Box::new(TestFactory::default())],
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listen = Listen::Unix(path.clone());
    tokio::spawn(async move {
        serve(manager, &listen, ServeOptions::default(), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = path.clone();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .unwrap();
    Harness {
        client: EbpfServiceClient::new(channel.clone()),
        channel,
        path,
        stop: Some(tx),
    }
}

// The server task is not awaited when a test ends, so its own clean-up of the
// socket file may never run; the harness removes it.
impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spec(duration_ns: Option<u64>) -> pb::CollectorSpec {
    pb::CollectorSpec {
        kind: pb::CollectorKind::SyscallStats as i32,
        duration_ns,
        filter: Some(pb::TargetFilter {
            pids: vec![1],
            ..Default::default()
        }),
        labels: [("service".to_string(), "checkout".to_string())].into(),
        export: false,
        config: None,
    }
}

async fn start(
    h: &mut Harness,
    duration_ns: Option<u64>,
) -> Result<pb::StartCollectorResponse, tonic::Status> {
    h.client
        .start_collector(pb::StartCollectorRequest {
            spec: Some(spec(duration_ns)),
        })
        .await
        .map(|r| r.into_inner())
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_string())
}

#[tokio::test]
async fn socket_has_the_requested_mode_and_health_serves() {
    use std::os::unix::fs::PermissionsExt;
    let h = harness("mode").await;
    let mode = std::fs::metadata(&h.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "coral.agent.v1.EbpfService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn health_watch_follows_the_protocol_and_ends_at_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let h = harness("watch").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel.clone());
    let watch = |service: &str| {
        let mut health = health.clone();
        let service = service.to_string();
        async move {
            health
                .watch(tonic_health::pb::HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut known = watch("coral.agent.v1.EbpfService").await;
    let first = known.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // An unknown service: SERVICE_UNKNOWN, and the call stays open.
    let mut unknown = watch("no.such.Service").await;
    let first = unknown.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    let next = tokio::time::timeout(Duration::from_millis(300), unknown.message()).await;
    assert!(next.is_err(), "the watch ended: {next:?}");
    // Check still answers NOT_FOUND for it.
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Shutdown ends both watches, so the server can drain and stop.
    let mut h = h;
    h.stop.take();
    let path = h.path.clone();
    for stream in [&mut known, &mut unknown] {
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = stream.message().await {}
        })
        .await;
        assert!(end.is_ok(), "a watch outlived the shutdown");
    }
    for _ in 0..500 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server did not finish its shutdown");
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let h = harness("reflection").await;
    let expected = [
        "coral.agent.v1.EbpfService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(h.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, expected);

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(h.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn capabilities_list_every_kind_and_the_limits() {
    let mut h = harness("caps").await;
    let caps = h
        .client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.kinds.len(), crate::domain::Kind::ALL.len());
    let tcp = caps
        .kinds
        .iter()
        .find(|k| k.kind == pb::CollectorKind::TcpMetrics as i32)
        .unwrap();
    assert!(!tcp.available);
    assert!(tcp.reason.contains("no factory registered"));
    assert_eq!(caps.limits.unwrap().max_running_collectors, 2);
    assert!(!caps.agent_id.is_empty());
}

#[tokio::test]
async fn lifecycle_over_grpc() {
    let mut h = harness("life").await;
    let started = start(&mut h, Some(5_000_000_000)).await.unwrap();
    let info = started.collector.unwrap();
    assert_eq!(info.state, pb::CollectorState::Running as i32);
    assert_eq!(info.bpf_program_ids, [7, 8]);
    let id = info.id.clone();

    let got = h
        .client
        .get_collector(pb::GetCollectorRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.spec.unwrap().labels["service"], "checkout");

    let list = h
        .client
        .list_collectors(pb::ListCollectorsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.collectors.len(), 1);

    let before = got.deadline_unix_nano;
    let extended = h
        .client
        .extend_collector(pb::ExtendCollectorRequest {
            id: id.clone(),
            duration_ns: 20_000_000_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(extended.deadline_unix_nano > before + 10_000_000_000);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = h
        .client
        .stop_collector(pb::StopCollectorRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, pb::CollectorState::Stopped as i32);
    assert!(stopped.bpf_program_ids.is_empty());

    // Cursor reads: page by page, then the end.
    let first = h
        .client
        .get_events(pb::GetEventsRequest {
            id: id.clone(),
            after_seq: 0,
            max: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.records.len(), 2);
    assert_eq!(first.records[0].seq, 1);
    assert_eq!(first.next_after_seq, 2);
    assert!(!first.end);
    let record = &first.records[0];
    assert_eq!(record.collector_id, id);
    assert_eq!(record.labels["service"], "checkout");
    assert!(matches!(
        record.payload,
        Some(pb::record::Payload::SyscallStats(_))
    ));
    let rest = h
        .client
        .get_events(pb::GetEventsRequest {
            id: id.clone(),
            after_seq: 2,
            max: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rest.end);
    assert!(rest.records.last().unwrap().r#final);
    assert_eq!(rest.state, pb::CollectorState::Stopped as i32);
}

#[tokio::test]
async fn stream_replays_then_follows_until_the_end() {
    let mut h = harness("stream").await;
    let id = start(&mut h, Some(400_000_000))
        .await
        .unwrap()
        .collector
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stream = h
        .client
        .stream_events(pb::StreamEventsRequest {
            id: id.clone(),
            from_seq: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let mut ended = None;
    let mut final_seen = false;
    while let Some(msg) = stream.next().await {
        match msg.unwrap().event.unwrap() {
            pb::stream_events_response::Event::Record(r) => {
                final_seen |= r.r#final;
                seqs.push(r.seq);
            }
            pb::stream_events_response::Event::Gap(g) => panic!("unexpected gap {g:?}"),
            pb::stream_events_response::Event::Ended(info) => ended = Some(info),
        }
    }
    // Replayed from 1 and followed live, without holes or repeats.
    assert!(seqs.len() >= 5, "{seqs:?}");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(final_seen);
    assert_eq!(ended.unwrap().state, pb::CollectorState::Expired as i32);

    // A stream opened after the end replays and ends at once.
    let mut late = h
        .client
        .stream_events(pb::StreamEventsRequest { id, from_seq: 3 })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(msg) = late.next().await {
        msg.unwrap();
        n += 1;
    }
    assert_eq!(n, seqs.len() - 2 + 1, "records from seq 3, then ended");
}

#[tokio::test]
async fn dropped_stream_client_leaves_no_subscriber() {
    let mut h = harness("drop").await;
    let id = start(&mut h, None).await.unwrap().collector.unwrap().id;
    let mut stream = h
        .client
        .stream_events(pb::StreamEventsRequest {
            id: id.clone(),
            from_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    let subs = |h: &mut Harness| {
        let mut c = h.client.clone();
        let id = id.clone();
        async move {
            c.get_collector(pb::GetCollectorRequest { id })
                .await
                .unwrap()
                .into_inner()
                .stream_subscribers
        }
    };
    assert_eq!(subs(&mut h).await, 1);
    drop(stream);
    let mut left = 1;
    for _ in 0..100 {
        left = subs(&mut h).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the stream's receiver went away with the client");
}

#[tokio::test]
async fn every_error_code() {
    let mut h = harness("errors").await;

    // INVALID_ARGUMENT
    let (c, m) = code(start(&mut h, Some(0)).await);
    assert_eq!(
        (c, m.contains("greater than 0")),
        (Code::InvalidArgument, true),
        "{m}"
    );
    let (c, m) = code(start(&mut h, Some(31_000_000_000)).await);
    assert_eq!(
        (c, m.contains("maximum of 30s")),
        (Code::InvalidArgument, true),
        "{m}"
    );
    let mut bad = spec(None);
    bad.kind = 42;
    let (c, m) = code(
        h.client
            .start_collector(pb::StartCollectorRequest { spec: Some(bad) })
            .await,
    );
    assert_eq!(
        (c, m.contains("unknown collector kind 42")),
        (Code::InvalidArgument, true),
        "{m}"
    );
    let (c, _) = code(
        h.client
            .start_collector(pb::StartCollectorRequest { spec: None })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    let (c, _) = code(
        h.client
            .get_collector(pb::GetCollectorRequest { id: String::new() })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);

    // FAILED_PRECONDITION: a kind this agent does not build.
    let mut tcp = spec(None);
    tcp.kind = pb::CollectorKind::TcpMetrics as i32;
    let (c, m) = code(
        h.client
            .start_collector(pb::StartCollectorRequest { spec: Some(tcp) })
            .await,
    );
    assert_eq!(
        (c, m.contains("tcp-metrics")),
        (Code::FailedPrecondition, true),
        "{m}"
    );

    // NOT_FOUND on every id-taking RPC.
    let unknown = "00000000-0000-0000-0000-000000000000".to_string();
    let c = &mut h.client;
    let id = || unknown.clone();
    for status in [
        c.get_collector(pb::GetCollectorRequest { id: id() })
            .await
            .map(drop),
        c.stop_collector(pb::StopCollectorRequest { id: id() })
            .await
            .map(drop),
        c.extend_collector(pb::ExtendCollectorRequest {
            id: id(),
            duration_ns: 1,
        })
        .await
        .map(drop),
        c.get_events(pb::GetEventsRequest {
            id: id(),
            after_seq: 0,
            max: 0,
        })
        .await
        .map(drop),
        c.stream_events(pb::StreamEventsRequest {
            id: id(),
            from_seq: 0,
        })
        .await
        .map(drop),
    ] {
        let (c, m) = code(status);
        assert_eq!(c, Code::NotFound, "{m}");
        assert!(m.contains(&unknown), "{m}");
    }

    // RESOURCE_EXHAUSTED: one collector too many (the limit is 2).
    let a = start(&mut h, None).await.unwrap().collector.unwrap().id;
    start(&mut h, None).await.unwrap();
    let (c, m) = code(start(&mut h, None).await);
    assert_eq!(
        (c, m.contains("limit is 2")),
        (Code::ResourceExhausted, true),
        "{m}"
    );

    // FAILED_PRECONDITION: stopping what already ended.
    h.client
        .stop_collector(pb::StopCollectorRequest { id: a.clone() })
        .await
        .unwrap();
    let (c, _) = code(
        h.client
            .stop_collector(pb::StopCollectorRequest { id: a })
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
}

/// Sends `bytes` as the request message of `method`: what a broken client
/// could send.
async fn raw_call(h: &Harness, method: &'static str, bytes: Vec<u8>) -> tonic::Status {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
            prost::bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
            let n = prost::bytes::Buf::remaining(src);
            Ok(Some(prost::bytes::Buf::copy_to_bytes(src, n).to_vec()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let mut grpc = tonic::client::Grpc::new(h.channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(bytes), path, Raw)
        .await
        .map(drop)
        .unwrap_err()
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_client_codes() {
    let h = harness("raw").await;
    const START: &str = "/coral.agent.v1.EbpfService/StartCollector";
    // spec (field 1) whose length runs past the end; a string that is not
    // UTF-8 (GetCollectorRequest.id); a fixed64 where a message belongs.
    for (method, bytes) in [
        (START, vec![0x0a, 0x10, 0x08]),
        (
            "/coral.agent.v1.EbpfService/GetCollector",
            vec![0x0a, 0x02, 0xff, 0xfe],
        ),
        (START, vec![0x09, 1, 2, 3, 4, 5, 6, 7, 8]),
    ] {
        let status = raw_call(&h, method, bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("malformed request:"),
            "{status:?}"
        );
    }
    // Over the 64 KiB request limit.
    let mut huge = vec![0x0a];
    let spec = vec![0u8; 100_000];
    prost::encoding::encode_varint(spec.len() as u64, &mut huge);
    huge.extend_from_slice(&spec);
    let status = raw_call(&h, START, huge).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn client_input_is_checked_and_never_echoed_whole() {
    let mut h = harness("edges").await;
    // A 60,000-character id: a normal NOT_FOUND a default client can read,
    // quoting a short prefix.
    let long = "x".repeat(60_000);
    let (c, m) = code(
        h.client
            .get_collector(pb::GetCollectorRequest { id: long.clone() })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");
    assert!(m.len() < 300 && m.contains("(60000 bytes, cut)"), "{m}");

    // comm with a NUL: the kernel would compare only what precedes it.
    for comm in ["ab\0cd", "\0"] {
        let mut s = spec(None);
        s.filter.as_mut().unwrap().comm = comm.into();
        let (c, m) = code(
            h.client
                .start_collector(pb::StartCollectorRequest { spec: Some(s) })
                .await,
        );
        assert_eq!(c, Code::InvalidArgument, "{comm:?}: {m}");
        assert!(m.contains("NUL") && !m.contains('\0'), "{m}");
    }

    // Labels: too many, an empty or too long key, a too long value.
    let mut too_many = spec(None);
    too_many.labels = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    let mut long_key = spec(None);
    long_key.labels = [("k".repeat(64), "v".into())].into();
    let mut empty_key = spec(None);
    empty_key.labels = [(String::new(), "v".into())].into();
    let mut long_value = spec(None);
    long_value.labels = [("k".into(), "v".repeat(256))].into();
    for s in [too_many, long_key, empty_key, long_value] {
        let (c, m) = code(
            h.client
                .start_collector(pb::StartCollectorRequest { spec: Some(s) })
                .await,
        );
        assert_eq!(c, Code::InvalidArgument, "{m}");
        assert!(m.contains("label"), "{m}");
    }

    // A cursor at the very end reads nothing and does not move back.
    let id = start(&mut h, None).await.unwrap().collector.unwrap().id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let page = h
        .client
        .get_events(pb::GetEventsRequest {
            id,
            after_seq: u64::MAX,
            max: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.records.is_empty());
    assert_eq!((page.next_after_seq, page.missed), (u64::MAX, 0));
}
