//! `coral mcp` driven by a real MCP client: the official Python SDK (`mcp`
//! on PyPI), as an assistant's host runs it. The client
//! (`tests/python/mcp_client.py`) starts `coral mcp` over stdio (or over
//! streamable HTTP), lists the tools, checks their JSON schemas and every
//! call against them with `jsonschema`, runs one scenario and prints what it
//! saw as JSON, which these tests assert on. `.ci/install-deps` installs
//! its packages.

use coral_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const ADMIN: &str = "admin-token-0123456789";
const DASH: &str = "dash-token-0123456789";

fn burn_bin() -> PathBuf {
    PathBuf::from(concat!(env!("OUT_DIR"), "/coral-burn"))
}

/// Runs the MCP client against `coral mcp --agent <agent>`; its report.
fn mcp_client(agent: &Agent, token: Option<&str>, scenario: &str, extra: &[&str]) -> Value {
    run_client(&["--agent", &agent.addr], token, scenario, extra)
}

/// Runs the MCP client against `coral <server> mcp`; its report.
fn run_client(server: &[&str], token: Option<&str>, scenario: &str, extra: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg("--coral")
        .arg(bin("coral"))
        .args(server)
        .arg("--scenario")
        .arg(scenario)
        .arg("--workload")
        .arg(bin("coral-workload"))
        .arg("--burn")
        .arg(burn_bin())
        .args(extra);
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    let out = cmd.output().expect("running python3");
    assert!(
        out.status.success(),
        "the MCP client failed ({}): {}\n(its Python packages come from .ci/install-deps)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "MCP client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // Every call's arguments and answers matched the tools' own schemas.
    assert_eq!(
        report["call_schema_errors"],
        serde_json::json!([]),
        "{report}"
    );
    report
}

fn tool_names(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["tools"]
        .as_object()
        .expect("tools")
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

fn assert_tool_error(answer: &Value, needles: &[&str]) {
    assert_eq!(answer["is_error"], true, "{answer}");
    assert!(
        answer.get("protocol_error").is_none(),
        "a tool error, not a protocol error: {answer}"
    );
    let text = answer["text"].as_str().unwrap();
    for n in needles {
        assert!(text.contains(n), "{n:?} not in {text:?}");
    }
}

fn token_agent() -> (Agent, PathBuf) {
    let dir = std::env::temp_dir().join(format!("coral-mcp-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, format!("admin:{ADMIN}\ndash:{DASH}:read-only\n")).unwrap();
    let socket = socket_path();
    let addr = format!("unix://{}", socket.display());
    let agent = Agent::start_with(
        &addr,
        &addr,
        &[
            "--token-file",
            file.to_str().unwrap(),
            "--max-duration",
            "30s",
            "--default-duration",
            "10s",
        ],
        &[],
        &["--token".to_string(), ADMIN.to_string()],
        None,
    );
    (agent, dir)
}

fn check_tools_scenario(r: &Value) {
    assert_eq!(
        tool_names(r),
        [
            "capabilities",
            "diagnose",
            "list_taps",
            "start_tap",
            "stop_tap",
            "tap_result"
        ],
        "{r}"
    );
    for (name, t) in r["tools"].as_object().unwrap() {
        assert_eq!(t["schema_errors"], serde_json::json!([]), "{name}: {t}");
        assert_eq!(t["input_type"], "object", "{name}: {t}");
        assert!(
            t["description_chars"].as_u64().unwrap() > 100,
            "{name}: {t}"
        );
    }
    assert_eq!(r["tools"]["capabilities"]["read_only_hint"], true, "{r}");
    assert_eq!(r["tools"]["start_tap"]["read_only_hint"], false, "{r}");
    assert_eq!(
        r["tools"]["diagnose"]["input_properties"],
        serde_json::json!(["duration", "nodes", "symptom", "target"])
    );

    // capabilities: every kind with a verdict, the agent's limits, the
    // summary first in the text a model reads.
    let caps = &r["capabilities"];
    assert_eq!(caps["is_error"], false, "{caps}");
    assert_eq!(caps["text_keys"][0], "summary", "{caps}");
    let s = &caps["structured"];
    let kinds: Vec<&str> = s["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for k in [
        "syscall-stats",
        "cpu-profile",
        "http-latency",
        "tcp-metrics",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {s}");
    }
    for k in s["kinds"].as_array().unwrap() {
        // Unavailable kinds say why.
        assert!(
            k["available"] == true || k["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{k}"
        );
    }
    assert_eq!(s["limits"]["max_duration_s"], 30, "{s}");
    assert_eq!(s["limits"]["default_duration_s"], 10, "{s}");
    assert!(
        s["summary"][0]
            .as_str()
            .unwrap()
            .contains("kinds available"),
        "{s}"
    );

    // Docs of every kind are resources.
    let resources = r["resources"].as_array().unwrap();
    for k in &kinds {
        let uri = format!("coral://docs/collectors/{k}");
        assert!(resources.iter().any(|u| u == &uri), "{uri}: {resources:?}");
    }
    assert!(
        r["syscall_doc_start"]
            .as_str()
            .unwrap()
            .starts_with("# syscall-stats")
    );

    // A duration over the agent's --max-duration: the agent's own refusal.
    assert_tool_error(
        &r["over_max"],
        &[
            "INVALID_ARGUMENT",
            "duration 1h exceeds the agent's maximum of 30s",
        ],
    );
    assert_tool_error(&r["bad_duration"], &["\"soon\" is not a duration"]);
    assert_tool_error(&r["unknown_tap"], &["NOT_FOUND", "no collector with id"]);
    assert_eq!(r["list"]["is_error"], false, "{r}");
    // Arguments off the schema: a tool error that quotes 100 KB of input
    // only in part.
    for case in ["unknown_field", "wrong_type", "unknown_kind"] {
        let answer = &r[case];
        assert_tool_error(answer, &["(100", "bytes, cut)"]);
        assert!(
            answer["text"].as_str().unwrap().len() < 700,
            "{case}: {answer}"
        );
    }
}

#[test]
fn mcp_over_stdio_lists_valid_tools_and_passes_the_agents_refusals() {
    let agent = Agent::start(&["--max-duration", "30s", "--default-duration", "10s"]);
    let r = mcp_client(&agent, None, "tools", &[]);
    assert!(r["protocol_version"].as_str().is_some(), "{r}");
    check_tools_scenario(&r);
}

#[test]
fn mcp_over_streamable_http() {
    let agent = Agent::start(&["--max-duration", "30s", "--default-duration", "10s"]);
    let r = mcp_client(&agent, None, "tools", &["--http"]);
    assert!(
        r["http_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{r}"
    );
    check_tools_scenario(&r);
    // Audited on stderr like over stdio.
    let log = r["http_log"].as_str().unwrap();
    assert!(
        log.contains(
            r#"tool="start_tap" kind="syscall-stats" duration="1h" target="pid 1" outcome=error"#
        ),
        "{log}"
    );
    // 100 KB arguments leave bounded audit lines (each value cut).
    for line in log.lines() {
        assert!(line.len() < 2000, "{} bytes: {line}", line.len());
    }
}

#[test]
fn mcp_outlives_an_agent_restart() {
    let socket = socket_path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--coral")
        .arg(bin("coral"))
        .arg("--agent")
        .arg(format!("unix://{}", socket.display()))
        .arg("--agent-bin")
        .arg(bin("coral-agent"))
        .args(["--scenario", "agent-restart"])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "the MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["before"]["is_error"], false, "{r}");
    // While it is away: a tool error naming the address, not a dead server.
    assert_tool_error(
        &r["away"],
        &[&format!(
            "cannot reach the agent at unix://{}",
            socket.display()
        )],
    );
    assert_eq!(r["back"]["is_error"], false, "{r}");
}

#[test]
fn http_refuses_non_loopback_addresses() {
    let agent = Agent::start(&[]);
    let out = agent.coral(&["mcp", "--http", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback addresses only"), "{err}");
}

#[test]
fn a_read_only_token_reads_and_the_agent_refuses_the_rest() {
    let (agent, dir) = token_agent();
    let r = mcp_client(&agent, Some(DASH), "read-only", &[]);
    assert_eq!(r["capabilities"]["is_error"], false, "{r}");
    assert_eq!(r["list"]["is_error"], false, "{r}");
    assert_tool_error(
        &r["start"],
        &[
            "PERMISSION_DENIED",
            "token dash is read-only: it may not start collectors",
        ],
    );
    // --read-only: the tools that start or stop are not offered, and say so.
    let r = mcp_client(&agent, Some(ADMIN), "read-only", &["--mcp-arg=--read-only"]);
    assert_eq!(
        tool_names(&r),
        ["capabilities", "list_taps", "tap_result"],
        "{r}"
    );
    assert_eq!(r["capabilities"]["is_error"], false, "{r}");
    assert_tool_error(&r["start"], &["start_tap is not offered", "--read-only"]);
    assert_tool_error(&r["diagnose"], &["diagnose is not offered"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[ignore = "needs root and BPF"]
fn a_read_only_token_cannot_diagnose() {
    require_kernel();
    let (agent, dir) = token_agent();
    let r = mcp_client(&agent, Some(DASH), "read-only", &[]);
    // diagnose starts collectors: the agent refuses each, said once.
    assert_tool_error(
        &r["diagnose"],
        &[
            "no collector could start for cpu: agent refused: PERMISSION_DENIED: token dash is read-only",
        ],
    );
    let _ = std::fs::remove_dir_all(dir);
}

const N_GETPPID: u64 = 5_000;

#[test]
#[ignore = "needs root and BPF"]
fn start_tap_counts_exactly_n_getppid_calls() {
    require_kernel();
    let agent = Agent::start(&[]);
    let r = mcp_client(&agent, None, "getppid", &["--n", &N_GETPPID.to_string()]);
    let start = &r["start"];
    assert_eq!(start["is_error"], false, "{start}");
    let tap = &start["structured"]["tap"];
    assert_eq!(tap["state"], "running", "{tap}");
    assert_eq!(tap["started_by_mcp"], true, "{tap}");
    assert_eq!(r["workload"], "done", "{r}");
    let id = tap["id"].as_str().unwrap();

    // The agent's own view: the tap carries the started-by label.
    let info = agent.get(id);
    assert_eq!(info["spec"]["labels"]["started-by"], "coral-mcp", "{info}");
    let listed = r["list"]["structured"]["taps"].as_array().unwrap();
    assert!(listed.iter().any(|t| t["id"] == id), "{listed:?}");

    // stop_tap answers with the final result; tap_result reads it again.
    for answer in [&r["stop"], &r["result"]] {
        assert_eq!(answer["is_error"], false, "{answer}");
        let s = &answer["structured"];
        assert_eq!(s["result"], "final", "{s}");
        assert_eq!(s["tap"]["state"], "stopped", "{s}");
        let stats = &s["latest"]["syscall_stats"];
        let getppid = stats["busiest"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == "getppid")
            .unwrap_or_else(|| panic!("no getppid row: {stats}"));
        assert_eq!(getppid["count"], N_GETPPID, "{stats}");
        assert_eq!(getppid["errors"], 0, "{stats}");
        assert!(getppid["p99"].as_str().is_some(), "{stats}");
        assert!(
            s["summary"][1]
                .as_str()
                .unwrap()
                .contains(&format!("getppid {N_GETPPID}")),
            "{s}"
        );
    }
    // top: 3 rows at most; the full record on request, in proto3 JSON.
    let s = &r["result"]["structured"];
    assert!(
        s["latest"]["syscall_stats"]["busiest"]
            .as_array()
            .unwrap()
            .len()
            <= 3
    );
    let record = &s["record"];
    assert_eq!(record["final"], true, "{record}");
    assert_eq!(
        u64_of(&syscall(&record["syscallStats"], "getppid")["count"]),
        N_GETPPID,
        "{record}"
    );
    // Over max_bytes the record is left out, and the answer says why.
    let small = &r["small_record"]["structured"];
    assert!(small["record"].is_null(), "{small}");
    assert!(
        small["record_note"]
            .as_str()
            .unwrap()
            .contains("over max_bytes 10"),
        "{small}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn diagnose_cpu_names_the_hot_function() {
    require_kernel();
    let agent = Agent::start(&[]);
    let r = mcp_client(&agent, None, "diagnose-cpu", &[]);
    let d = &r["diagnose"];
    assert_eq!(d["is_error"], false, "{d}");
    let s = &d["structured"];
    // The rule table for cpu: cpu-profile, then syscall-stats, both run.
    let plan: Vec<(&str, bool)> = s["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["ran"] == true))
        .collect();
    assert_eq!(
        plan,
        [("cpu-profile", true), ("syscall-stats", true)],
        "{s}"
    );
    // The first finding names the evidence: coral-burn spends about 3/4
    // of its CPU in hot_alpha (itself and what it inlines).
    let first = s["findings"][0].as_str().unwrap();
    assert!(
        first.starts_with("[cpu-profile] hottest function coral_burn::hot_alpha (coral-burn): "),
        "{first}"
    );
    assert!(first.contains("% of "), "{first}");
    let profile = &s["results"][0]["latest"]["cpu_profile"];
    assert_eq!(profile["hottest"][0]["function"], "coral_burn::hot_alpha");
    assert!(profile["samples"].as_u64().unwrap() > 50, "{profile}");
    assert_eq!(s["results"][0]["state"], "expired", "{s}");
    // Both collectors ran side by side for the duration asked.
    assert_eq!(s["duration"], "3.00s", "{s}");
    assert_tool_error(&r["no_target"], &["diagnose needs a target"]);
    // While it ran, progress notifications (one a second): seconds of the
    // duration.
    let progress = r["progress"].as_array().unwrap();
    assert!(!progress.is_empty(), "{progress:?}");
    assert_eq!(progress[0]["total"], 3.0, "{progress:?}");
    assert!(
        progress[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("collecting cpu-profile, syscall-stats"),
        "{progress:?}"
    );
}

/// `coral --colony URL mcp` over two agents joined to a real colony: the
/// tools answer per node, a fleet tap counts the workload's exact getppid
/// calls on each node, every agent's refusal comes back as a tool error,
/// and diagnose names the hot function on each node.
#[test]
#[ignore = "needs root and BPF"]
fn mcp_over_a_colony_answers_per_node() {
    use coral_e2e::colony::{Colony, Scratch};
    require_kernel();
    let s = Scratch::new("mcp-colony");
    let unix = |p: PathBuf| format!("unix://{}", p.display());
    let colony = Colony::start(
        &unix(s.path("colony.sock")),
        &format!("sqlite://{}", s.path("colony.db").display()),
        &["--heartbeat-interval", "300ms", "--agent-timeout", "3s"],
        &s.path("colony.log"),
    );
    let _agents: Vec<Agent> = (1..=2)
        .map(|i| {
            let addr = unix(s.path(&format!("agent{i}.sock")));
            let node = format!("node{i}");
            Agent::start_with(
                &addr,
                &addr,
                &[
                    "--colony",
                    &colony.addr,
                    "--node-name",
                    &node,
                    "--max-duration",
                    "30s",
                    "--default-duration",
                    "10s",
                ],
                &[],
                &[],
                Some(&s.path(&format!("agent{i}.log"))),
            )
        })
        .collect();
    colony.wait_agents(2, std::time::Duration::from_secs(60));
    let r = run_client(
        &["--colony", &colony.addr],
        None,
        "colony",
        &["--n", &N_GETPPID.to_string()],
    );

    // capabilities: both nodes, each with what it can run and its limits.
    let caps = &r["capabilities"]["structured"];
    let nodes: Vec<&str> = caps["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["node1", "node2"], "{caps}");
    for n in caps["nodes"].as_array().unwrap() {
        assert!(
            n["available"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "syscall-stats"),
            "{n}"
        );
        assert_eq!(n["limits"]["max_duration_s"], 30, "{n}");
    }
    assert!(caps["node"].is_null(), "{caps}");
    assert!(
        caps["summary"][0]
            .as_str()
            .unwrap()
            .starts_with("colony: 2 alive agents on nodes node1, node2"),
        "{caps}"
    );

    // Every agent refused 1h: the tool error names each node and the
    // agent's own message.
    assert_tool_error(
        &r["over_max"],
        &["node node1: refused", "node node2: refused", "30s"],
    );
    assert_tool_error(&r["unknown_node"], &["nowhere"]);

    // The fleet tap: one id, a member per node, each counting exactly N.
    let start = &r["start"];
    assert_eq!(start["is_error"], false, "{start}");
    assert_eq!(r["workload"], "done", "{r}");
    let members = start["structured"]["tap"]["nodes"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{start}");
    for answer in [&r["stop"], &r["result"]] {
        assert_eq!(answer["is_error"], false, "{answer}");
        let s = &answer["structured"];
        assert_eq!(s["result"], "final", "{s}");
        assert_eq!(s["tap"]["state"], "stopped", "{s}");
        let per_node = s["nodes"].as_array().unwrap();
        assert_eq!(per_node.len(), 2, "{s}");
        for n in per_node {
            assert_eq!(n["status"], "complete", "{n}");
            assert_eq!(n["result"], "final", "{n}");
            let getppid = n["latest"]["syscall_stats"]["busiest"]
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row["name"] == "getppid")
                .unwrap_or_else(|| panic!("no getppid row: {n}"));
            assert_eq!(getppid["count"], N_GETPPID, "{n}");
        }
        let lines: Vec<&str> = s["summary"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        for node in ["node1", "node2"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("node {node}: "))
                        && l.contains(&format!("getppid {N_GETPPID}"))),
                "{lines:?}"
            );
        }
    }

    // diagnose cpu on both nodes: the hot function, named per node.
    let d = &r["diagnose"];
    assert_eq!(d["is_error"], false, "{d}");
    let findings: Vec<&str> = d["structured"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for node in ["node1", "node2"] {
        let prefix = format!(
            "[cpu-profile] node {node}: hottest function coral_burn::hot_alpha (coral-burn): "
        );
        assert!(
            findings.iter().any(|f| f.starts_with(&prefix)),
            "{prefix:?} not in {findings:?}"
        );
    }
}
