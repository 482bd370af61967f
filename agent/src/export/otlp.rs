//! OTLP/gRPC push (`--otlp-endpoint URL`): every `--otlp-interval`, the
//! exporter's families go to an OpenTelemetry collector's
//! `MetricsService/Export`, as cumulative sums, gauges and explicit-bucket
//! histograms under the resource OpenTelemetry expects (`service.name`
//! `coral-agent` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
//! says otherwise, `service.version`, `service.instance.id` (the agent id),
//! `host.name`, `host.arch`, `os.type`, `os.version`, `process.pid`, and the
//! SDK's `telemetry.sdk.*`).
//!
//! The messages are the upstream OTLP definitions (`opentelemetry-proto`)
//! and the resource comes from `opentelemetry_sdk`'s detectors; the
//! request is built here from the same model Prometheus gets, rather than
//! through the SDK's instruments: the SDK can only aggregate measurements
//! it records itself, and collector results arrive pre-aggregated (log2
//! histograms made in the kernel), which no SDK instrument can take.

use super::{Exporter, Family, Series, Type, Value};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    self as m, AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Push interval unless configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// One export call, connection included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how often to push.
#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// `http://host:4317` or `https://host:4317`.
    pub endpoint: String,
    pub interval: Duration,
    /// CA certificate (PEM) that an `https` endpoint's certificate chains to.
    pub ca_cert: Option<PathBuf>,
}

/// Why the OTLP endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp-endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("reading --otlp-ca-cert {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
}

fn nanos(t: SystemTime) -> u64 {
    crate::manager::event_log::unix_nanos(t)
}

fn string(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The resource: the SDK's detectors (environment, `telemetry.sdk.*`), the
/// service, and the host.
pub fn resource(agent_id: &str) -> Resource {
    use opentelemetry::{Key, KeyValue as K, Value as V};
    let detected = opentelemetry_sdk::Resource::builder().build();
    let named = detected
        .get(&Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let mut builder = opentelemetry_sdk::Resource::builder();
    if !named {
        builder = builder.with_service_name("coral-agent");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let resource = builder
        .with_attributes([
            K::new("service.version", env!("CARGO_PKG_VERSION")),
            K::new("service.instance.id", agent_id.to_string()),
            K::new("host.name", host),
            K::new("host.arch", arch),
            K::new("os.type", std::env::consts::OS),
            K::new("os.version", kernel),
            K::new("process.pid", i64::from(std::process::id())),
            K::new("process.executable.name", "coral-agent"),
        ])
        .build();
    let attributes = resource
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(match v {
                    V::Bool(b) => any_value::Value::BoolValue(*b),
                    V::I64(n) => any_value::Value::IntValue(*n),
                    V::F64(f) => any_value::Value::DoubleValue(*f),
                    other => any_value::Value::StringValue(other.to_string()),
                }),
            }),
            ..Default::default()
        })
        .collect();
    Resource {
        attributes,
        ..Default::default()
    }
}

fn attributes(series: &Series) -> Vec<KeyValue> {
    series
        .labels
        .iter()
        .map(|(k, v)| string(k.as_ref(), v.clone()))
        .collect()
}

fn number(series: &Series, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(series),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(match series.value {
            Value::Int(n) => number_data_point::Value::AsInt(i64::try_from(n).unwrap_or(i64::MAX)),
            ref other => number_data_point::Value::AsDouble(other.as_f64()),
        }),
        ..Default::default()
    }
}

/// One family as an OTLP metric.
fn metric(family: &Family, agent_start: SystemTime, now: SystemTime) -> Metric {
    let desc = family.desc;
    let now = nanos(now);
    let start = |s: &Series| nanos(s.start.unwrap_or(agent_start));
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match desc.ty {
        Type::Counter => metric::Data::Sum(m::Sum {
            data_points: family
                .series
                .iter()
                .map(|s| number(s, start(s), now))
                .collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        Type::Gauge => metric::Data::Gauge(m::Gauge {
            data_points: family.series.iter().map(|s| number(s, 0, now)).collect(),
        }),
        Type::Histogram(bounds) => metric::Data::Histogram(m::Histogram {
            data_points: family
                .series
                .iter()
                .filter_map(|s| match &s.value {
                    Value::Histogram {
                        buckets,
                        count,
                        sum,
                    } => Some(HistogramDataPoint {
                        attributes: attributes(s),
                        start_time_unix_nano: start(s),
                        time_unix_nano: now,
                        count: *count,
                        sum: Some(*sum),
                        bucket_counts: buckets.clone(),
                        explicit_bounds: bounds.upper_bounds(),
                        ..Default::default()
                    }),
                    Value::Int(_) | Value::Float(_) => None,
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
    };
    Metric {
        name: desc.name.to_string(),
        description: desc.help.to_string(),
        unit: desc.unit.ucum().to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// The export request for `families`.
pub fn request(
    families: &[Family],
    resource: &Resource,
    agent_start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "coral-agent".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: families
                    .iter()
                    .filter(|f| !f.series.is_empty())
                    .map(|f| metric(f, agent_start, now))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The channel to the endpoint, connected lazily: the agent starts (and
/// keeps collecting) whether or not the collector is up.
pub fn channel(options: &OtlpOptions) -> Result<tonic::transport::Channel, OtlpError> {
    let bad = |reason: String| OtlpError::Endpoint {
        endpoint: options.endpoint.clone(),
        reason,
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(options.endpoint.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(EXPORT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT);
    match endpoint.uri().scheme_str() {
        Some("http") => {}
        Some("https") => {
            let Some(path) = &options.ca_cert else {
                return Err(bad(
                    "an https endpoint needs --otlp-ca-cert (the CA its certificate chains to)"
                        .into(),
                ));
            };
            let pem = std::fs::read(path).map_err(|source| OtlpError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        }
        _ => return Err(bad("use http://host:port or https://host:port".into())),
    }
    Ok(endpoint.connect_lazy())
}

/// Pushes every interval until `stopping` turns true, then once more (the
/// collectors' final results), and returns.
pub async fn run(
    exporter: Exporter,
    options: OtlpOptions,
    channel: tonic::transport::Channel,
    mut stopping: watch::Receiver<bool>,
) {
    let resource = resource(exporter.manager().agent_id());
    let mut client = MetricsServiceClient::new(channel);
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stopping.wait_for(|s| *s) => true,
        };
        let gathering = exporter.clone();
        let Ok(families) = tokio::task::spawn_blocking(move || gathering.gather()).await else {
            return;
        };
        let request = request(&families, &resource, exporter.started(), SystemTime::now());
        match tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await {
            Ok(Ok(_)) => {
                if failing {
                    tracing::info!(endpoint = %options.endpoint, "OTLP export works again");
                }
                failing = false;
            }
            Ok(Err(status)) => {
                if !failing {
                    tracing::warn!(endpoint = %options.endpoint, code = ?status.code(),
                        message = %coral_proto::text::Cleaned::log(status.message()), "OTLP export failed; retrying every interval");
                }
                failing = true;
            }
            Err(_) => {
                if !failing {
                    tracing::warn!(endpoint = %options.endpoint, "OTLP export timed out; retrying every interval");
                }
                failing = true;
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Bounds, Desc, Merge, Unit};
    use super::*;

    static CALLS: Desc = Desc {
        name: "coral.syscall.calls",
        help: "Calls.",
        unit: Unit::Count("{call}"),
        ty: Type::Counter,
        merge: Merge::Sum,
    };
    static DURATION: Desc = Desc {
        name: "coral.syscall.duration",
        help: "Duration.",
        unit: Unit::Seconds,
        ty: Type::Histogram(Bounds::Fixed(&[0.1, 1.0])),
        merge: Merge::Sum,
    };

    #[test]
    fn counters_are_cumulative_sums_and_histograms_keep_their_buckets() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let now = t0 + Duration::from_secs(5);
        let families = vec![
            Family {
                desc: &CALLS,
                series: vec![Series {
                    labels: vec![("syscall".into(), "getppid".into())],
                    value: Value::Int(5000),
                    start: Some(t0),
                }],
            },
            Family {
                desc: &DURATION,
                series: vec![Series {
                    labels: vec![],
                    value: Value::Histogram {
                        buckets: vec![1, 2, 3],
                        count: 6,
                        sum: 2.5,
                    },
                    start: None,
                }],
            },
        ];
        let req = request(&families, &Resource::default(), t0, now);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics[0].name, "coral.syscall.calls");
        assert_eq!(metrics[0].unit, "{call}");
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("not a sum")
        };
        assert!(sum.is_monotonic);
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(5000)));
        assert_eq!(p.start_time_unix_nano, 100_000_000_000);
        assert_eq!(p.attributes[0].key, "syscall");
        let Some(metric::Data::Histogram(h)) = &metrics[1].data else {
            panic!("not a histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.bucket_counts.clone(), p.explicit_bounds.clone()),
            (vec![1, 2, 3], vec![0.1, 1.0])
        );
    }

    #[test]
    fn the_resource_names_the_service_and_the_host() {
        let r = resource("agent-1");
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            get("service.instance.id"),
            Some(any_value::Value::StringValue("agent-1".into()))
        );
        assert!(get("service.name").is_some());
        assert!(get("host.name").is_some());
        assert!(get("telemetry.sdk.name").is_some());
    }
}
