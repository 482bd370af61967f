//! `GET /metrics` (`--metrics-listen ADDR`): the exporter's families in the
//! Prometheus text format (0.0.4), or OpenMetrics 1.0 when the scraper's
//! `Accept` header asks for it, encoded by the official `prometheus-client`
//! crate and served over HTTP/1.1 (hyper).
//!
//! Plaintext only on loopback. Anywhere else the endpoint needs TLS
//! (`--tls-cert`/`--tls-key`, the gRPC listener's files) and/or bearer
//! tokens (`--token-file`: every token, read-only ones included, may
//! scrape); with `--tls-client-ca` a verified client certificate is
//! required too, as on the gRPC listener.

use super::{Exporter, Family, Type, Unit, Value, sanitize};
use crate::server::auth::Tokens;
use crate::server::tls::{TlsConfigError, TlsFiles};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Scrapers served at once; more connections wait for a slot.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a connection gets to finish TLS and send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where and how `/metrics` is served.
#[derive(Clone, Debug)]
pub struct MetricsListen {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub tokens: Option<Tokens>,
}

/// Why the metrics endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Plaintext without tokens off loopback.
    #[error(
        "refusing plaintext /metrics without tokens on non-loopback address {0}: give --tls-cert and --tls-key, and/or --token-file (scrapers then send `Authorization: Bearer <token>`), or listen on 127.0.0.1"
    )]
    Insecure(SocketAddr),
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl MetricsListen {
    /// Refuses an open endpoint off loopback, before anything is bound.
    pub fn check(&self) -> Result<(), MetricsError> {
        if !self.addr.ip().is_loopback() && self.tls.is_none() && self.tokens.is_none() {
            return Err(MetricsError::Insecure(self.addr));
        }
        Ok(())
    }
}

/// The families as one `Collector`, so that `prometheus-client` encodes
/// names, units, labels, escaping and histogram buckets.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

fn unit(u: Unit) -> Option<prometheus_client::registry::Unit> {
    use prometheus_client::registry::Unit as P;
    match u {
        Unit::Seconds => Some(P::Seconds),
        Unit::Bytes => Some(P::Bytes),
        Unit::BytesPerSecond => Some(P::Other("bytes_per_second".into())),
        Unit::Count(_) => None,
    }
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for family in &self.0 {
            if family.series.is_empty() {
                continue;
            }
            let desc = family.desc;
            let name = sanitize(desc.name);
            let unit = unit(desc.unit);
            let ty = match desc.ty {
                Type::Counter => MetricType::Counter,
                Type::Gauge => MetricType::Gauge,
                Type::Histogram(_) => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(&name, desc.help, unit.as_ref(), ty)?;
            for series in &family.series {
                let labels: Vec<(String, String)> = series
                    .labels
                    .iter()
                    .map(|(k, v)| (sanitize(k), v.clone()))
                    .collect();
                let mut m = metric.encode_family(&labels)?;
                match (desc.ty, &series.value) {
                    (Type::Counter, Value::Int(n)) => {
                        m.encode_counter::<NoLabelSet, _, u64>(n, None)?
                    }
                    (Type::Counter, Value::Float(x)) => {
                        m.encode_counter::<NoLabelSet, _, f64>(x, None)?
                    }
                    (Type::Gauge, Value::Int(n)) => m.encode_gauge(n)?,
                    (Type::Gauge, Value::Float(x)) => m.encode_gauge(x)?,
                    (
                        Type::Histogram(bounds),
                        Value::Histogram {
                            buckets,
                            count,
                            sum,
                        },
                    ) => {
                        let pairs: Vec<(f64, u64)> = bounds
                            .upper_bounds()
                            .into_iter()
                            .zip(buckets.iter().copied())
                            .collect();
                        m.encode_histogram::<NoLabelSet>(*sum, *count, &pairs, None)?
                    }
                    // A family has one kind of value; a mismatch is a bug
                    // in a mapping, left out rather than mis-encoded.
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The size of the last exposition: the next one is about as large, and
/// allocating it at once spares the heap a chain of doublings (hundreds of
/// KiB each with whole-machine collectors) that it would keep.
static LAST_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The exposition: Prometheus text 0.0.4, or OpenMetrics 1.0 (`# EOF`).
pub fn encode(families: Vec<Family>, openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let last = LAST_SIZE.load(Ordering::Relaxed);
    let mut out = String::with_capacity(last + last / 8);
    let written = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    // Writing into a String cannot fail.
    debug_assert!(written.is_ok());
    LAST_SIZE.store(out.len(), Ordering::Relaxed);
    out
}

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus
/// does by default; curl does not).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let ty = params.next().unwrap_or("");
            let refused = params.any(|p| p.replace(' ', "") == "q=0");
            ty.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Who may scrape, per connection.
#[derive(Clone)]
struct Access {
    tokens: Option<Arc<Tokens>>,
    /// Mutual TLS is configured and this connection has no verified client
    /// certificate.
    missing_cert: bool,
}

async fn handle<B>(exporter: Exporter, access: Access, req: Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "coral-agent serves /metrics only\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if access.missing_cert {
        return text(
            StatusCode::UNAUTHORIZED,
            "a client certificate is required (mutual TLS)\n",
        );
    }
    if let Some(tokens) = &access.tokens
        && let Err(why) = tokens.check_bearer(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|h| h.as_bytes()),
        )
    {
        tracing::debug!(target: "coral::audit", action = "scrape", outcome = "refused", error = why);
        let mut resp = text(StatusCode::UNAUTHORIZED, format!("{why}\n"));
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"coral-agent\""),
        );
        return resp;
    }
    let openmetrics = wants_openmetrics(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok()),
    );
    // Reading /proc, BPF fds and decoding records: not on an async worker.
    let body = tokio::task::spawn_blocking(move || encode(exporter.gather(), openmetrics)).await;
    let Ok(body) = body else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "gathering metrics failed\n",
        );
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(if openmetrics {
            OPENMETRICS_CONTENT_TYPE
        } else {
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
        }),
    );
    resp
}

/// Serves one connection (already through TLS, if any) until it closes or
/// `shutdown` fires.
async fn connection<IO>(io: IO, exporter: Exporter, access: Access)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (exporter, access) = (exporter.clone(), access.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(exporter, access, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "metrics connection ended");
    }
}

/// Binds `/metrics` (after [`MetricsListen::check`]). The returned future
/// serves until `shutdown` resolves.
pub async fn bind(
    exporter: Exporter,
    listen: MetricsListen,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send + 'static, MetricsError> {
    listen.check()?;
    let tls = match &listen.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(
            files.server_config_for(b"http/1.1")?,
        )),
        None => None,
    };
    let require_cert = listen.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let listener = tokio::net::TcpListener::bind(listen.addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: listen.addr,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen.addr);
    if listen.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "bearer tokens to /metrics travel in clear text without TLS");
    }
    tracing::info!(%addr, tls = tls.is_some(), tokens = listen.tokens.is_some(), "serving /metrics");
    let tokens = listen.tokens.map(Arc::new);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(async move {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (exporter, tls, tokens) = (exporter.clone(), tls.clone(), tokens.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tls {
                    Some(tls) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await
                        else {
                            return;
                        };
                        let has_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        let access = Access {
                            tokens,
                            missing_cert: require_cert && !has_cert,
                        };
                        connection(stream, exporter, access).await
                    }
                    None => {
                        let access = Access {
                            tokens,
                            missing_cert: false,
                        };
                        connection(stream, exporter, access).await
                    }
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Bounds, Desc, Merge, Series};
    use super::*;

    static CALLS: Desc = Desc {
        name: "coral.syscall.calls",
        help: "Calls.",
        unit: Unit::Count("{call}"),
        ty: Type::Counter,
        merge: Merge::Sum,
    };
    static DURATION: Desc = Desc {
        name: "http.server.request.duration",
        help: "Duration.",
        unit: Unit::Seconds,
        ty: Type::Histogram(Bounds::Fixed(&[0.1, 1.0])),
        merge: Merge::Sum,
    };

    fn families() -> Vec<Family> {
        vec![
            Family {
                desc: &CALLS,
                series: vec![Series {
                    labels: vec![
                        ("collector.id".into(), "abc".into()),
                        ("syscall".into(), "get\"ppid".into()),
                    ],
                    value: Value::Int(5000),
                    start: None,
                }],
            },
            Family {
                desc: &DURATION,
                series: vec![Series {
                    labels: vec![("http.route".into(), "/users/{id}".into())],
                    value: Value::Histogram {
                        buckets: vec![1, 2, 3],
                        count: 6,
                        sum: 9.5,
                    },
                    start: None,
                }],
            },
        ]
    }

    #[test]
    fn prometheus_text_has_names_units_labels_and_cumulative_buckets() {
        let text = encode(families(), false);
        assert!(
            text.contains("# TYPE coral_syscall_calls_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"coral_syscall_calls_total{collector_id="abc",syscall="get\"ppid"} 5000"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE http_server_request_duration_seconds histogram"),
            "{text}"
        );
        for line in [
            r#"http_server_request_duration_seconds_bucket{http_route="/users/{id}",le="0.1"} 1"#,
            r#"http_server_request_duration_seconds_bucket{http_route="/users/{id}",le="1"} 3"#,
            r#"http_server_request_duration_seconds_bucket{http_route="/users/{id}",le="+Inf"} 6"#,
            r#"http_server_request_duration_seconds_count{http_route="/users/{id}"} 6"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_when_asked() {
        let text = encode(families(), true);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# UNIT http_server_request_duration_seconds seconds"),
            "{text}"
        );
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0"
        )));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn open_endpoints_only_on_loopback() {
        let listen = |addr: &str, tokens| MetricsListen {
            addr: addr.parse().unwrap(),
            tls: None,
            tokens,
        };
        assert!(listen("127.0.0.1:9464", None).check().is_ok());
        assert!(listen("[::1]:9464", None).check().is_ok());
        let err = listen("0.0.0.0:9464", None)
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--token-file") && err.contains("--tls-cert"),
            "{err}"
        );
        let tokens = Tokens::parse("prom:0123456789abcdef:read-only").unwrap();
        assert!(listen("0.0.0.0:9464", Some(tokens)).check().is_ok());
    }
}
