//! `diagnose`: from a symptom to collectors to evidence, by rules rather
//! than by a model. [`rules`] is the table (one match over the symptoms:
//! each names the kinds that answer it, primary ones first, and why);
//! [`plan`] keeps the kinds this node can run; [`run`] starts them side by
//! side on the target for one bounded duration, waits for them to expire,
//! and [`evidence`] turns each result into findings that name what was seen.
//! docs/mcp.md shows the table as [`rule_table`] prints it (a test keeps
//! them equal).

use super::backend::{Backend, NodeCaps, TapInfo};
use super::summary::KindSummary;
use super::tools::{
    self, PROGRESS_EVERY, Progress, ResultOut, Shape, Target, ToolError, agent_error,
};
use crate::client::CliError;
use crate::kinds::Kind;
use crate::render::bytes;
use coral_proto::text::{MESSAGE_BYTES, bounded};
use coral_proto::v1::{self as pb, collector_spec::Config};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long diagnose runs its collectors unless told (shortened to the
/// agent's max_duration when that is lower).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// After the collectors' deadline, how long to wait at most for their final
/// records. Generous: a cpu-profile's final read symbolizes (the first parse
/// of a large binary's DWARF), and with two agents on one slow vCPU (Linux
/// 6.12 under QEMU's TCG) the fleet tap was still running 33 s after it was
/// due; the wait ends as soon as they do.
const END_GRACE: Duration = Duration::from_secs(120);

/// cpu-profile's frequency in diagnose: denser than the kind's default (49
/// Hz), for short runs; within every agent's default maximum (1000).
const PROFILE_HZ: u32 = 99;

/// Findings per collector.
const FINDINGS_PER_KIND: usize = 4;

/// What the target shows, in one of a fixed set of words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Symptom {
    /// Requests or work take longer than they should.
    Slow,
    /// Failures: errors returned, 5xx answers, refused or reset connections.
    Errors,
    /// High CPU use.
    Cpu,
    /// Memory grows, nears a limit, or processes get OOM-killed.
    Memory,
    /// Network trouble: retransmits, resets, slow peers.
    Network,
}

impl Symptom {
    #[cfg(test)]
    pub const ALL: [Symptom; 5] = [
        Symptom::Slow,
        Symptom::Errors,
        Symptom::Cpu,
        Symptom::Memory,
        Symptom::Network,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Symptom::Slow => "slow",
            Symptom::Errors => "errors",
            Symptom::Cpu => "cpu",
            Symptom::Memory => "memory",
            Symptom::Network => "network",
        }
    }
}

/// A kind's part in answering a symptom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers the symptom directly.
    Primary,
    /// Explains or rules out what the primary ones show.
    Supporting,
}

/// One row of the rule table.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub kind: Kind,
    pub role: Role,
    pub why: &'static str,
}

const fn rule(kind: Kind, role: Role, why: &'static str) -> Rule {
    Rule { kind, role, why }
}

/// The kinds that answer `symptom`, primary ones first.
pub fn rules(symptom: Symptom) -> &'static [Rule] {
    use Role::{Primary, Supporting};
    match symptom {
        Symptom::Cpu => {
            const {
                &[
                    rule(
                        Kind::CpuProfile,
                        Primary,
                        "which functions burn the CPU, in user space and in the kernel",
                    ),
                    rule(
                        Kind::SyscallStats,
                        Supporting,
                        "whether the CPU time goes to syscalls, and to which",
                    ),
                ]
            }
        }
        Symptom::Slow => {
            const {
                &[
                    rule(
                        Kind::SyscallStats,
                        Primary,
                        "where time waits in the kernel: the syscalls with the most total time and the worst p99",
                    ),
                    rule(
                        Kind::HttpLatency,
                        Primary,
                        "which HTTP routes are slow: p50 and p99 per route",
                    ),
                    rule(
                        Kind::CpuProfile,
                        Supporting,
                        "whether the target is busy on a CPU (and where) or waiting",
                    ),
                ]
            }
        }
        Symptom::Errors => {
            const {
                &[
                    rule(
                        Kind::SyscallStats,
                        Primary,
                        "syscalls that fail with an errno, by count",
                    ),
                    rule(
                        Kind::HttpLatency,
                        Primary,
                        "requests answered with a 5xx status, by route",
                    ),
                    rule(
                        Kind::TcpMetrics,
                        Supporting,
                        "connections reset or refused, by peer",
                    ),
                ]
            }
        }
        Symptom::Memory => {
            const {
                &[
                    rule(
                        Kind::Memory,
                        Primary,
                        "memory against its limits: growth rate, time to the limit, OOM kills",
                    ),
                    rule(
                        Kind::ProcessEvents,
                        Supporting,
                        "processes that exit, get killed or restart",
                    ),
                ]
            }
        }
        Symptom::Network => {
            const {
                &[
                    rule(
                        Kind::TcpMetrics,
                        Primary,
                        "retransmits, resets, RTT and failed connections per peer",
                    ),
                    rule(
                        Kind::HttpLatency,
                        Supporting,
                        "HTTP latency and errors over those connections",
                    ),
                ]
            }
        }
    }
}

/// The rule table as docs/mcp.md shows it.
#[cfg(test)]
pub fn rule_table() -> String {
    let mut out = String::from("| symptom | kind | role | what it answers |\n|---|---|---|---|\n");
    for s in Symptom::ALL {
        for r in rules(s) {
            let role = match r.role {
                Role::Primary => "primary",
                Role::Supporting => "supporting",
            };
            out.push_str(&format!(
                "| `{}` | {} | {role} | {} |\n",
                s.name(),
                r.kind.name(),
                r.why
            ));
        }
    }
    out
}

/// A rule, and whether this node can follow it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub rule: Rule,
    /// Why the node cannot run the kind (None: it can).
    pub unavailable: Option<String>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.role == other.role
    }
}

/// The rules of `symptom`, each with the node's verdict on its kind.
pub fn plan(symptom: Symptom, caps: &pb::Capabilities) -> Vec<Planned> {
    rules(symptom)
        .iter()
        .map(|&rule| {
            let proto = pb::CollectorKind::from(rule.kind) as i32;
            let unavailable = match caps.kinds.iter().find(|k| k.kind == proto) {
                Some(k) if k.available => None,
                Some(k) => Some(bounded(&k.reason, MESSAGE_BYTES)),
                None => Some("the agent does not know this kind (an older agent)".into()),
            };
            Planned { rule, unavailable }
        })
        .collect()
}

/// The config diagnose gives a kind: the kind's defaults, plus per-process
/// syscall counts (to name the process within a comm, cgroup or container)
/// and a denser profile.
fn config(kind: Kind, limits: Option<&pb::Limits>) -> Config {
    match kind {
        Kind::SyscallStats => Config::SyscallStats(pb::SyscallStatsConfig {
            per_process: true,
            latency: pb::SyscallLatency::Exact as i32,
            ..Default::default()
        }),
        Kind::CpuProfile => Config::CpuProfile(pb::CpuProfileConfig {
            frequency_hz: if limits.is_none_or(|l| l.max_profile_frequency_hz >= PROFILE_HZ) {
                PROFILE_HZ
            } else {
                0
            },
            ..Default::default()
        }),
        Kind::HttpLatency => Config::HttpLatency(Default::default()),
        Kind::TcpMetrics => Config::TcpMetrics(Default::default()),
        Kind::ProcessEvents => Config::ProcessEvents(Default::default()),
        Kind::Memory => Config::Memory(Default::default()),
        Kind::FileIo => Config::FileIo(Default::default()),
        Kind::Dns => Config::Dns(Default::default()),
        Kind::Security => Config::Security(Default::default()),
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diagnose {
    /// What the target shows.
    pub symptom: Symptom,
    /// The process(es), service or container to look at: at least one of
    /// pids, comm, cgroup, container.
    pub target: Target,
    /// How long the collectors run, side by side, e.g. "10s" (default 10s,
    /// or the agent's max_duration when that is lower; over max_duration
    /// is refused).
    pub duration: Option<String>,
    /// On a colony: the nodes to look on (empty: every alive agent); the
    /// target (pids especially) is read on each node. Not for one agent.
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Step {
    pub kind: String,
    pub role: Role,
    /// What it answers for this symptom.
    pub why: String,
    /// Ran on the target.
    pub ran: bool,
    /// Why not, when it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CollectorResult {
    pub kind: String,
    /// On a colony: the node this result is from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub id: String,
    pub state: String,
    /// The collector's own findings.
    pub findings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<KindSummary>,
    /// The newest discrete events it saw.
    pub recent_events: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DiagnoseOut {
    /// The evidence, most direct first, each finding prefixed by its collector.
    pub findings: Vec<String>,
    pub symptom: Symptom,
    pub target: String,
    pub duration: String,
    /// The rules followed: which kinds, why, and which could not run.
    pub plan: Vec<Step>,
    pub results: Vec<CollectorResult>,
}

/// What a collector's result shows about `symptom`.
pub fn evidence(symptom: Symptom, s: &KindSummary, events: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    match s {
        KindSummary::CpuProfile(c) => {
            if c.samples == 0 {
                out.push(
                    "no CPU samples of the target: it was not running on a CPU (waiting or idle)"
                        .into(),
                );
            } else {
                if let Some(f) = c.hottest.first() {
                    out.push(format!(
                        "hottest function {} ({}): {:.1}% of {} samples",
                        f.function, f.module, f.self_pct, c.samples
                    ));
                }
                let next: Vec<String> = c
                    .hottest
                    .iter()
                    .skip(1)
                    .take(2)
                    .map(|f| format!("{} {:.1}%", f.function, f.self_pct))
                    .collect();
                if !next.is_empty() {
                    out.push(format!("then {}", next.join(", ")));
                }
                if c.elapsed_s > 0.0 && c.frequency_hz > 0 {
                    out.push(format!(
                        "about {:.2} CPUs busy ({} samples at {} Hz over {})",
                        c.samples as f64 / (f64::from(c.frequency_hz) * c.elapsed_s),
                        c.samples,
                        c.frequency_hz,
                        c.elapsed
                    ));
                }
                if c.processes.len() > 1
                    && let Some(p) = c.processes.first()
                {
                    out.push(format!(
                        "busiest process {} (pid {}): {:.1}% of samples",
                        p.comm, p.pid, p.pct
                    ));
                }
            }
        }
        KindSummary::SyscallStats(sc) => {
            if sc.calls == 0 {
                out.push(match symptom {
                    Symptom::Cpu => format!(
                        "the target made no syscalls in {}: its CPU time is not spent in syscalls",
                        sc.elapsed
                    ),
                    _ => format!(
                        "the target made no syscalls in {} (idle, or not running)",
                        sc.elapsed
                    ),
                });
            } else {
                match symptom {
                    Symptom::Errors => {
                        for f in sc.failing.iter().take(3) {
                            out.push(format!(
                                "syscall {} failed {} of {} calls",
                                f.name, f.errors, f.count
                            ));
                        }
                        if sc.failing.is_empty() {
                            out.push(format!("none of {} syscalls returned an error", sc.calls));
                        }
                    }
                    Symptom::Slow => {
                        for f in sc.slowest.iter().take(3) {
                            out.push(format!(
                                "syscall {}: {} calls took {} in all (avg {}, p99 {})",
                                f.name,
                                f.count,
                                f.total.as_deref().unwrap_or("-"),
                                f.avg.as_deref().unwrap_or("-"),
                                f.p99.as_deref().unwrap_or("-")
                            ));
                        }
                    }
                    Symptom::Cpu | Symptom::Memory | Symptom::Network => {
                        if let Some(f) = sc.busiest.first() {
                            out.push(format!(
                                "busiest syscall {}: {} calls ({}/s), {} in the kernel",
                                f.name,
                                f.count,
                                f.rate_per_s,
                                f.total.as_deref().unwrap_or("-")
                            ));
                        }
                    }
                }
                if let Some(p) = sc.processes.first().filter(|_| sc.processes.len() > 1) {
                    out.push(format!(
                        "most syscalls from {} (pid {}): {} calls, {} errors",
                        p.comm, p.pid, p.calls, p.errors
                    ));
                }
            }
        }
        KindSummary::HttpLatency(h) => {
            if h.requests == 0 {
                out.push("no HTTP/1.x requests seen (TLS and HTTP/2 traffic is not parsed)".into());
            } else if symptom == Symptom::Errors {
                out.push(format!(
                    "{} of {} HTTP requests answered 5xx",
                    h.errors_5xx, h.requests
                ));
                for r in h.server_errors.iter().take(3) {
                    out.push(format!(
                        "{} {} answered {} {} times",
                        r.method, r.route, r.status, r.count
                    ));
                }
            } else {
                for r in h.slowest.iter().take(2) {
                    out.push(format!(
                        "slow route {} {} {}: p99 {} over {} requests (p50 {})",
                        r.method, r.route, r.status, r.p99, r.count, r.p50
                    ));
                }
                if h.errors_5xx > 0 {
                    out.push(format!(
                        "{} of {} requests answered 5xx",
                        h.errors_5xx, h.requests
                    ));
                }
            }
        }
        KindSummary::TcpMetrics(t) => {
            if t.opened + t.closed == 0 && t.busiest.is_empty() {
                out.push("no TCP connections seen".into());
            } else {
                for r in t.retransmitting.iter().take(2) {
                    out.push(format!(
                        "peer {}: {} retransmits over {} connections (RTT p99 {})",
                        r.remote,
                        r.retransmits,
                        r.opened,
                        r.rtt_p99.as_deref().unwrap_or("-")
                    ));
                }
                for r in t.resetting.iter().take(2) {
                    out.push(format!(
                        "peer {}: {} resets sent, {} received",
                        r.remote, r.resets_sent, r.resets_received
                    ));
                }
                if symptom == Symptom::Network
                    && let Some(r) = t.slowest.first()
                {
                    out.push(format!(
                        "slowest peer by RTT: {} (p99 {})",
                        r.remote,
                        r.rtt_p99.as_deref().unwrap_or("-")
                    ));
                }
                if t.retransmitting.is_empty() && t.resetting.is_empty() {
                    out.push(format!(
                        "no retransmits or resets over {} connections",
                        t.opened.max(t.closed)
                    ));
                }
            }
        }
        KindSummary::Memory(m) => {
            for r in m.growing.iter().take(3) {
                out.push(format!(
                    "{} uses {}{} and grows {}: {}",
                    r.name,
                    r.used,
                    r.limit
                        .as_ref()
                        .map_or(String::new(), |l| format!(" of {l}")),
                    r.rate.as_deref().unwrap_or("-"),
                    r.forecast
                ));
            }
            if m.growing.is_empty() {
                let largest = m
                    .processes
                    .iter()
                    .max_by_key(|p| p.used_bytes)
                    .map_or(String::new(), |p| {
                        format!("; largest: {} with {} ({})", p.name, p.used, p.forecast)
                    });
                out.push(format!(
                    "nothing grows toward a limit ({} processes tracked){largest}",
                    m.processes_tracked
                ));
            }
            if m.oom_kills > 0 {
                out.push(format!("{} OOM kills in the sampled cgroups", m.oom_kills));
            }
        }
        KindSummary::FileIo(f) => {
            out.push(f.headline.clone());
            for r in f.files.iter().take(2) {
                out.push(format!(
                    "{} ({} {}): {} read, {} written, write p99 {}",
                    r.path,
                    r.pid,
                    r.comm,
                    bytes(r.read_bytes),
                    bytes(r.write_bytes),
                    r.write_p99
                ));
            }
            for e in f.failed_opens.iter().take(2) {
                out.push(format!("{} x{}", e.what, e.count));
            }
        }
        KindSummary::Dns(d) => {
            out.push(d.headline.clone());
            for r in d.names.iter().filter(|r| r.rcode != "NOERROR").take(3) {
                out.push(format!("{} {} {} x{}", r.name, r.qtype, r.rcode, r.count));
            }
            for r in d.names.iter().filter(|r| r.rcode == "NOERROR").take(2) {
                out.push(format!(
                    "{} {}: x{}, p50 {}, p99 {}",
                    r.name, r.qtype, r.count, r.p50, r.p99
                ));
            }
        }
        KindSummary::Security(s) => {
            out.push(s.headline.clone());
            for r in s.types.iter().take(3) {
                out.push(format!("{} x{}", r.what, r.count));
            }
        }
        KindSummary::ProcessEvents(p) => {
            out.push(format!(
                "{} execs, {} exits ({} failed, {} shorter than {})",
                p.execs, p.exits, p.failed_exits, p.short_lived, p.short_lived_threshold
            ));
            for e in p
                .exit_statuses
                .iter()
                .filter(|e| e.what != "exit 0")
                .take(2)
            {
                out.push(format!("{} x{}", e.what, e.count));
            }
        }
    }
    // OOM kills are the evidence of memory trouble, whatever the aggregate says.
    out.extend(
        events
            .iter()
            .filter(|e| e.starts_with("OOM kill"))
            .take(2)
            .cloned(),
    );
    out.truncate(FINDINGS_PER_KIND);
    out
}

fn target_words(t: &Target) -> String {
    let mut parts = Vec::new();
    if !t.pids.is_empty() {
        let pids: Vec<String> = t.pids.iter().take(4).map(u32::to_string).collect();
        let more = t.pids.len().saturating_sub(4);
        parts.push(format!(
            "pid {}{}",
            pids.join(","),
            if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            }
        ));
    }
    for (what, v) in [
        ("comm", &t.comm),
        ("cgroup", &t.cgroup),
        ("container", &t.container),
    ] {
        if let Some(v) = v {
            parts.push(format!(
                "{what} {}",
                coral_proto::text::Cleaned::new(v, 128)
            ));
        }
    }
    parts.join(", ")
}

/// One node's part of a collector's result.
struct Part {
    node: Option<String>,
    latest: Option<KindSummary>,
    recent: Vec<String>,
    error: Option<String>,
}

/// The capabilities diagnose plans with: the agent's; on a colony, the
/// chosen nodes' together (a kind any of them can run; the tightest
/// limits).
fn merged(nodes: &[NodeCaps], wanted: &[String]) -> Result<pb::Capabilities, CliError> {
    let chosen: Vec<&NodeCaps> = nodes
        .iter()
        .filter(|n| wanted.is_empty() || n.node.as_ref().is_some_and(|name| wanted.contains(name)))
        .collect();
    let Some((first, rest)) = chosen.split_first() else {
        return Err(CliError::Usage(if wanted.is_empty() {
            "the colony has no alive agent".to_string()
        } else {
            format!(
                "no alive agent of the colony is on nodes {}",
                coral_proto::text::bounded(&wanted.join(", "), 512)
            )
        }));
    };
    let mut caps = first.caps.clone();
    for n in rest {
        for k in &n.caps.kinds {
            match caps.kinds.iter_mut().find(|e| e.kind == k.kind) {
                Some(e) if !e.available && k.available => *e = k.clone(),
                Some(_) => {}
                None => caps.kinds.push(k.clone()),
            }
        }
        if let (Some(l), Some(o)) = (caps.limits.as_mut(), n.caps.limits.as_ref()) {
            l.max_duration_ns = l.max_duration_ns.min(o.max_duration_ns);
            l.max_profile_frequency_hz = l.max_profile_frequency_hz.min(o.max_profile_frequency_hz);
        }
    }
    Ok(caps)
}

/// Runs `args` against `backend`.
pub async fn run(
    backend: &Backend,
    args: Diagnose,
    progress: &Progress,
) -> Result<DiagnoseOut, ToolError> {
    if args.target.is_empty() {
        return Err(
            "diagnose needs a target: target.pids, target.comm, target.cgroup or target.container"
                .into(),
        );
    }
    let nodes = backend.capabilities().await.map_err(agent_error)?;
    let caps = merged(&nodes, &args.nodes).map_err(agent_error)?;
    let limits = caps.limits.as_ref();
    let duration = match args.duration.as_deref() {
        Some(s) => crate::commands::parse_duration(s).map_err(|_| {
            format!(
                "duration {} is not a duration (try 10s, 30s)",
                coral_proto::text::quote(s)
            )
        })?,
        None => match limits.map(|l| Duration::from_nanos(l.max_duration_ns)) {
            Some(max) if !max.is_zero() && max < DEFAULT_DURATION => max,
            _ => DEFAULT_DURATION,
        },
    };
    let planned = plan(args.symptom, &caps);
    if planned.iter().all(|p| p.unavailable.is_some()) {
        let why: Vec<String> = planned
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    p.rule.kind.name(),
                    p.unavailable.as_deref().unwrap_or("")
                )
            })
            .collect();
        return Err(format!(
            "{} can run none of the collectors for {}: {}",
            if backend.is_colony() {
                "no node of the colony"
            } else {
                "this node"
            },
            args.symptom.name(),
            why.join("; ")
        ));
    }
    // Started side by side: each gets the same duration from its own start.
    let starts = planned.iter().map(|p| {
        let target = &args.target;
        let nodes = &args.nodes;
        async move {
            if p.unavailable.is_some() {
                return None;
            }
            let spec = tools::spec(
                p.rule.kind,
                Some(duration),
                target,
                config(p.rule.kind, limits),
            );
            Some(backend.start(spec, nodes).await)
        }
    });
    let started = futures_util::future::join_all(starts).await;
    let mut steps = Vec::new();
    let mut running: Vec<(Kind, TapInfo)> = Vec::new();
    let mut refusals = Vec::new();
    for (p, outcome) in planned.iter().zip(started) {
        let mut step = Step {
            kind: p.rule.kind.name().to_string(),
            role: p.rule.role,
            why: p.rule.why.to_string(),
            ran: false,
            skipped: p.unavailable.clone(),
            id: None,
        };
        match outcome {
            None => {}
            Some(Ok((info, _))) => {
                step.ran = true;
                step.id = Some(info.info.id.clone());
                running.push((p.rule.kind, info));
            }
            Some(Err(err)) => {
                let msg = agent_error(err);
                refusals.push((p.rule.kind.name(), msg.clone()));
                step.skipped = Some(msg);
            }
        }
        steps.push(step);
    }
    if running.is_empty() {
        // One refusal for all (a read-only token, the running limit): once.
        let detail = match refusals.first() {
            Some((_, msg)) if refusals.iter().all(|(_, m)| m == msg) => msg.clone(),
            _ => refusals
                .iter()
                .map(|(kind, msg)| format!("{kind}: {msg}"))
                .collect::<Vec<_>>()
                .join("; "),
        };
        return Err(format!(
            "no collector could start for {}: {detail}",
            args.symptom.name()
        ));
    }
    // The collectors expire by themselves (in the agent, whatever happens
    // to this call); meanwhile, progress for the client.
    let kinds: Vec<&str> = running.iter().map(|(k, _)| k.name()).collect();
    let start = tokio::time::Instant::now();
    let end = start + duration;
    while tokio::time::Instant::now() + PROGRESS_EVERY < end {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let done = start.elapsed().as_secs_f64();
        progress
            .report(
                done,
                duration.as_secs_f64(),
                format!(
                    "collecting {} ({done:.0}s of {})",
                    kinds.join(", "),
                    crate::render::duration(duration)
                ),
            )
            .await;
    }
    // Then for each one's end and final record.
    let wait = duration + END_GRACE;
    let mut results = Vec::new();
    let mut findings = Vec::new();
    for (kind, info) in &running {
        let info = tools::wait_end(backend, &info.info.id, wait, None)
            .await
            .map_err(agent_error)?;
        // Not ended when the wait ran out (a collector still loading on a
        // slow machine): its missing result says so rather than nothing.
        let ended = tools::is_terminal(&info);
        let shape = Shape {
            top: 5,
            record_bytes: None,
        };
        let out: ResultOut = tools::result(backend, &info, shape)
            .await
            .map_err(agent_error)?;
        // One part per node: the agent's, or each member's on a colony.
        let parts: Vec<Part> = match out.nodes {
            None => vec![Part {
                node: None,
                latest: out.latest,
                recent: out.events.recent,
                error: out.tap.error.clone(),
            }],
            Some(nodes) => nodes
                .into_iter()
                .map(|n| Part {
                    error: n.error.or_else(|| {
                        (n.status != "collecting" && n.status != "complete")
                            .then(|| n.status.clone())
                    }),
                    node: Some(n.node),
                    latest: n.latest,
                    recent: n.events.recent,
                })
                .collect(),
        };
        for Part {
            node,
            latest,
            recent,
            error,
        } in parts
        {
            let own = match &latest {
                Some(s) => evidence(args.symptom, s, &recent),
                None => vec![match &error {
                    Some(e) => format!("failed: {e}"),
                    None if !ended => format!(
                        "no result: still {} {} after it was due",
                        out.tap.state,
                        crate::render::duration(wait)
                    ),
                    None => "recorded no result".to_string(),
                }],
            };
            let prefix = match &node {
                Some(n) => format!("[{}] node {n}: ", kind.name()),
                None => format!("[{}] ", kind.name()),
            };
            findings.extend(own.iter().map(|f| format!("{prefix}{f}")));
            results.push(CollectorResult {
                kind: kind.name().to_string(),
                node,
                id: out.tap.id.clone(),
                state: out.tap.state.clone(),
                findings: own,
                latest,
                recent_events: recent,
            });
        }
    }
    for s in steps.iter().filter(|s| !s.ran) {
        findings.push(format!(
            "[{}] not run: {}",
            s.kind,
            s.skipped.as_deref().unwrap_or("")
        ));
    }
    Ok(DiagnoseOut {
        findings,
        symptom: args.symptom,
        target: target_words(&args.target),
        duration: crate::render::duration(duration),
        plan: steps,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(unavailable: &[(Kind, &str)]) -> pb::Capabilities {
        pb::Capabilities {
            kinds: Kind::ALL
                .iter()
                .map(|&k| {
                    let reason = unavailable.iter().find(|(u, _)| *u == k).map(|(_, r)| *r);
                    pb::KindAvailability {
                        kind: pb::CollectorKind::from(k) as i32,
                        available: reason.is_none(),
                        reason: reason.unwrap_or("").into(),
                        hooks: vec![],
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    fn kinds(symptom: Symptom) -> Vec<&'static str> {
        rules(symptom).iter().map(|r| r.kind.name()).collect()
    }

    #[test]
    fn the_rule_table() {
        assert_eq!(kinds(Symptom::Cpu), ["cpu-profile", "syscall-stats"]);
        assert_eq!(
            kinds(Symptom::Slow),
            ["syscall-stats", "http-latency", "cpu-profile"]
        );
        assert_eq!(
            kinds(Symptom::Errors),
            ["syscall-stats", "http-latency", "tcp-metrics"]
        );
        assert_eq!(kinds(Symptom::Memory), ["memory", "process-events"]);
        assert_eq!(kinds(Symptom::Network), ["tcp-metrics", "http-latency"]);
        for s in Symptom::ALL {
            assert_eq!(rules(s)[0].role, Role::Primary, "{s:?}");
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.name());
        }
    }

    #[test]
    fn plan_keeps_what_the_node_can_run() {
        let plan = plan(
            Symptom::Slow,
            &caps(&[(Kind::HttpLatency, "not on aarch64")]),
        );
        let verdicts: Vec<_> = plan
            .iter()
            .map(|p| (p.rule.kind.name(), p.unavailable.as_deref()))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("syscall-stats", None),
                ("http-latency", Some("not on aarch64")),
                ("cpu-profile", None)
            ]
        );
        let none = super::plan(Symptom::Cpu, &pb::Capabilities::default());
        assert!(none.iter().all(|p| p.unavailable.is_some()));
    }

    #[test]
    fn docs_show_the_rule_table() {
        let doc = include_str!("../../../../docs/mcp.md");
        assert!(
            doc.contains(&rule_table()),
            "docs/mcp.md must contain the rule table exactly as rule_table() prints it:\n{}",
            rule_table()
        );
    }

    #[test]
    fn cpu_evidence_names_the_hot_function() {
        let p = crate::kinds::cpu_profile::tests::profile();
        let s = KindSummary::CpuProfile(super::super::summary::cpu(&p, 5));
        let found = evidence(Symptom::Cpu, &s, &[]);
        assert_eq!(
            found[0],
            "hottest function alpha (burn): 60.0% of 100 samples"
        );
        assert_eq!(found[1], "then beta 20.0%, vfs_read 20.0%");
        assert!(found[2].starts_with("about 1.00 CPUs busy"), "{found:?}");
    }

    #[test]
    fn error_evidence_names_failing_syscalls() {
        let s = pb::SyscallStats {
            elapsed_ns: 1_000_000_000,
            syscalls: vec![pb::SyscallStat {
                nr: 3,
                name: "close".into(),
                count: 300,
                errors: 300,
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = KindSummary::SyscallStats(super::super::summary::syscalls(&s, 5));
        assert_eq!(
            evidence(Symptom::Errors, &s, &[]),
            ["syscall close failed 300 of 300 calls"]
        );
    }
    fn route(
        method: &str,
        route: &str,
        status: u32,
        count: u64,
        p99_ms: u64,
    ) -> pb::HttpRouteStats {
        pb::HttpRouteStats {
            method: method.into(),
            route: route.into(),
            status,
            count,
            total_ns: count * p99_ms * 500_000,
            p50_ns: p99_ms * 500_000,
            p90_ns: p99_ms * 900_000,
            p99_ns: p99_ms * 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn http_evidence_names_failing_and_slow_routes() {
        let s = pb::HttpStats {
            elapsed_ns: 2_000_000_000,
            routes: vec![
                route("GET", "/users/{id}", 200, 40, 3),
                route("POST", "/orders", 503, 2, 50),
            ],
            dropped_events: 0,
            unrecorded_requests: 0,
        };
        let s = KindSummary::HttpLatency(super::super::summary::http(&s, 5));
        assert_eq!(
            evidence(Symptom::Errors, &s, &[]),
            [
                "2 of 42 HTTP requests answered 5xx",
                "POST /orders answered 503 2 times"
            ]
        );
        assert_eq!(
            evidence(Symptom::Slow, &s, &[]),
            [
                "slow route POST /orders 503: p99 50.0ms over 2 requests (p50 25.0ms)",
                "slow route GET /users/{id} 200: p99 3.0ms over 40 requests (p50 1.5ms)",
                "2 of 42 requests answered 5xx"
            ]
        );
    }

    #[test]
    fn tcp_evidence_names_the_peers() {
        let s = pb::TcpStats {
            elapsed_ns: 3_000_000_000,
            remotes: vec![
                pb::TcpRemoteStats {
                    remote_addr: "10.0.0.7".into(),
                    remote_port: 5432,
                    opened: 12,
                    closed: 10,
                    retransmits: 3,
                    resets_received: 1,
                    rtt_us_log2: vec![0, 0, 0, 0, 0, 0, 0, 2, 30, 5],
                    rtt_p50_us: 511,
                    rtt_p99_us: 1023,
                    ..Default::default()
                },
                pb::TcpRemoteStats {
                    remote_addr: "fd00::2".into(),
                    local_port: 8080,
                    opened: 4,
                    closed: 4,
                    resets_sent: 2,
                    ..Default::default()
                },
            ],
            dropped_events: 0,
        };
        let s = KindSummary::TcpMetrics(super::super::summary::tcp(&s, 5));
        assert_eq!(
            evidence(Symptom::Network, &s, &[]),
            [
                "peer 10.0.0.7:5432: 3 retransmits over 12 connections (RTT p99 1.0ms)",
                "peer [fd00::2] -> :8080: 2 resets sent, 0 received",
                "peer 10.0.0.7:5432: 0 resets sent, 1 received",
                "slowest peer by RTT: 10.0.0.7:5432 (p99 1.0ms)"
            ]
        );
    }

    #[test]
    fn memory_evidence_names_what_grows_and_oom_kills() {
        let growing = pb::MemoryPrediction {
            state: pb::PredictionState::Growing as i32,
            rate_bytes_per_sec: 18.0 * 1024.0 * 1024.0 / 60.0,
            time_to_limit_ns: 443_000_000_000,
            time_to_limit_low_ns: 410_000_000_000,
            time_to_limit_high_ns: 485_000_000_000,
            r2: 0.97,
            confidence: 0.99,
            horizon_ns: 3_600_000_000_000,
            limit_source: "memory.max".into(),
            ..Default::default()
        };
        let s = pb::MemoryStats {
            elapsed_ns: 61_000_000_000,
            cgroups: vec![pb::MemoryCgroup {
                path: "/api.slice".into(),
                current_bytes: 890 << 20,
                limit_bytes: 1 << 30,
                oom_kills: 1,
                prediction: Some(growing),
                ..Default::default()
            }],
            processes_tracked: 3,
            ..Default::default()
        };
        let s = KindSummary::Memory(super::super::summary::memory_stats(&s, 5));
        let oom = "OOM kill: pid 9 (java) in /api.slice".to_string();
        assert_eq!(
            evidence(Symptom::Memory, &s, &[oom.clone(), "exec pid 3".into()]),
            [
                "/api.slice uses 890 MiB of 1 GiB and grows +18 MiB/min: reaches memory.max in 7m23s (6m50s-8m05s), R2 0.97, 99% within 1h",
                "1 OOM kills in the sampled cgroups",
                oom.as_str()
            ]
        );
    }
}
