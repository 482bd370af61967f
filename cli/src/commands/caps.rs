//! `coral caps`

use super::Ctx;
use crate::kinds::kind_name;
use crate::render::{self, Output, align_right, bytes, duration_ns, table};
use coral_proto::v1::GetCapabilitiesRequest;

#[derive(Debug, clap::Args)]
pub struct Args {}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub async fn run(mut ctx: Ctx, _: Args) -> anyhow::Result<()> {
    let caps = ctx
        .client
        .get_capabilities(GetCapabilitiesRequest {})
        .await
        .map_err(crate::client::CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        return render::json_line(&caps);
    }
    let mut t = render::kv_table();
    let paranoid = caps
        .perf_event_paranoid
        .map_or("unknown".into(), |p| p.to_string());
    let tracefs = match (caps.tracefs_path.as_str(), caps.tracefs_mounted_by_agent) {
        ("", _) => "not mounted".to_string(),
        (p, true) => format!("{p} (mounted by the agent)"),
        (p, false) => p.to_string(),
    };
    let rows: Vec<(&str, String)> = vec![
        (
            "agent",
            format!("{} (v{})", caps.agent_id, caps.agent_version),
        ),
        ("kernel", format!("{} {}", caps.kernel_release, caps.arch)),
        ("BTF", yes(caps.btf).into()),
        (
            "capabilities",
            format!(
                "CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={} CAP_SYS_RESOURCE={}",
                yes(caps.cap_bpf),
                yes(caps.cap_perfmon),
                yes(caps.cap_sys_admin),
                yes(caps.cap_sys_resource)
            ),
        ),
        ("perf_event_paranoid", paranoid),
        ("tracefs", tracefs),
        (
            "hooks",
            format!(
                "raw_tracepoint={} tp_btf={} kprobe={} fentry={} uprobe={} perf_event={} ringbuf={}",
                yes(caps.raw_tracepoints),
                yes(caps.tp_btf),
                yes(caps.kprobes),
                yes(caps.fentry),
                yes(caps.uprobes),
                yes(caps.perf_events),
                yes(caps.ringbuf)
            ),
        ),
        (
            "cgroup2",
            if caps.cgroup2_path.is_empty() {
                "not mounted".into()
            } else {
                caps.cgroup2_path.clone()
            },
        ),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    render::out(format!("{t}\n"))?;
    let mut kinds = table(["KIND", "AVAILABLE", "HOOKS / REASON"]);
    for k in &caps.kinds {
        // An available kind's reason is a note: what it cannot do here.
        let detail = match (k.available, k.reason.is_empty()) {
            (true, true) => k.hooks.join(", "),
            (true, false) => format!("{}\nnote: {}", k.hooks.join(", "), k.reason),
            (false, _) => k.reason.clone(),
        };
        kinds.add_row([
            kind_name(k.kind).to_string(),
            yes(k.available).to_string(),
            detail,
        ]);
    }
    render::out(&kinds)?;
    if let Some(l) = caps.limits {
        let mut t = table(["LIMIT", "VALUE"]);
        t.add_row([
            "running collectors".to_string(),
            l.max_running_collectors.to_string(),
        ]);
        t.add_row(["max duration".to_string(), duration_ns(l.max_duration_ns)]);
        t.add_row([
            "default duration".to_string(),
            duration_ns(l.default_duration_ns),
        ]);
        t.add_row([
            "records per collector".to_string(),
            l.max_records_per_collector.to_string(),
        ]);
        t.add_row([
            "retention after end".to_string(),
            duration_ns(l.retention_ns),
        ]);
        t.add_row(["pids per filter".to_string(), l.max_filter_pids.to_string()]);
        t.add_row([
            "record bytes per collector".to_string(),
            bytes(l.max_collector_bytes),
        ]);
        t.add_row([
            "record bytes in all".to_string(),
            format!(
                "{} ({} used)",
                bytes(l.max_retained_bytes),
                bytes(caps.retained_bytes)
            ),
        ]);
        t.add_row([
            "ended collectors kept".to_string(),
            l.max_ended_collectors.to_string(),
        ]);
        t.add_row(["GetEvents page".to_string(), bytes(l.max_page_bytes)]);
        t.add_row([
            "labels".to_string(),
            format!(
                "{} (keys {} B, values {} B)",
                l.max_labels, l.max_label_key_bytes, l.max_label_value_bytes
            ),
        ]);
        t.add_row(["stop timeout".to_string(), duration_ns(l.stop_timeout_ns)]);
        t.add_row([
            "connections per listener".to_string(),
            l.max_connections.to_string(),
        ]);
        t.add_row([
            "HTTP/2 preface timeout".to_string(),
            duration_ns(l.preface_timeout_ns),
        ]);
        align_right(&mut t, [1]);
        render::out(format!("\n{t}"))?;
    }
    Ok(())
}
