//! One audit line per tool call, on stderr (stdout is the MCP channel), as
//! the agent audits its API calls: which tool, on what target, and how it
//! ended. Every value that came from the client or the agent is escaped
//! and cut (`coral_proto::text`), so a line can neither be forged nor grow with
//! the input.
//!
//! ```text
//! 2026-12-01T21:53:19Z coral::mcp::audit tool="start_tap" kind="syscall-stats" target="pid 4242" outcome=ok ids="3f0c…"
//! 2026-12-01T21:53:20Z coral::mcp::audit tool="start_tap" kind="cpu-profile" duration="2h" outcome=error error="agent refused: INVALID_ARGUMENT: duration 2h exceeds the agent's maximum of 30s"
//! ```

use coral_proto::text::{Cleaned, QUOTE_BYTES};
use rmcp::ErrorData;
use rmcp::model::{CallToolResponse, JsonObject};
use serde_json::Value;
use std::fmt::Write;

/// Bytes of an error message an audit line quotes.
const ERROR_BYTES: usize = 512;

/// Pids an audit line lists before it counts the rest.
const PIDS: usize = 8;

/// `value` escaped (control characters, and the quote and backslash that
/// delimit values) and cut.
fn esc(value: &str, limit: usize) -> String {
    let delimited = value.replace('\\', "\\\\").replace('"', "\\\"");
    Cleaned::new(&delimited, limit).to_string()
}

fn field(out: &mut String, key: &str, value: &str, limit: usize) {
    let _ = write!(out, " {key}=\"{}\"", esc(value, limit));
}

fn target(t: &JsonObject) -> String {
    let mut parts = Vec::new();
    if let Some(pids) = t.get("pids").and_then(Value::as_array)
        && !pids.is_empty()
    {
        // Numbers, as the schema says; anything else (a model's mistake)
        // escaped and cut like every other value.
        let shown: Vec<String> = pids
            .iter()
            .take(PIDS)
            .map(|p| match p.as_u64() {
                Some(n) => n.to_string(),
                None => esc(&p.to_string(), 24),
            })
            .collect();
        let more = pids.len().saturating_sub(PIDS);
        parts.push(format!(
            "pid {}{}",
            shown.join(","),
            if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            }
        ));
    }
    for key in ["comm", "cgroup", "container"] {
        if let Some(v) = t.get(key).and_then(Value::as_str) {
            parts.push(format!("{key} {}", esc(v, QUOTE_BYTES)));
        }
    }
    parts.join(", ")
}

/// Collector ids a successful answer names: the tap's, or diagnose's.
fn ids(structured: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(id) = structured.pointer("/tap/id").and_then(Value::as_str) {
        ids.push(id.to_string());
    }
    if let Some(plan) = structured.get("plan").and_then(Value::as_array) {
        ids.extend(
            plan.iter()
                .filter_map(|s| s.get("id").and_then(Value::as_str))
                .map(str::to_string),
        );
    }
    ids
}

/// The audit line of one call, without the timestamp.
pub fn line(
    tool: &str,
    args: Option<&JsonObject>,
    response: &Result<CallToolResponse, ErrorData>,
) -> String {
    let mut out = String::from("coral::mcp::audit");
    field(&mut out, "tool", tool, 64);
    if let Some(args) = args {
        for key in ["kind", "symptom", "id", "duration"] {
            if let Some(v) = args.get(key) {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                field(&mut out, key, &text, QUOTE_BYTES);
            }
        }
        if let Some(t) = args.get("target").and_then(Value::as_object) {
            let t = target(t);
            if !t.is_empty() {
                // Already escaped and cut, part by part.
                let _ = write!(out, " target=\"{t}\"");
            }
        }
    }
    match response {
        Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
            let text = r
                .content
                .iter()
                .find_map(|c| c.as_text().map(|t| t.text.clone()))
                .unwrap_or_default();
            out.push_str(" outcome=error");
            field(&mut out, "error", &text, ERROR_BYTES);
        }
        Ok(CallToolResponse::Complete(r)) => {
            out.push_str(" outcome=ok");
            let ids = r.structured_content.as_ref().map(ids).unwrap_or_default();
            if !ids.is_empty() {
                field(&mut out, "ids", &ids.join(","), 8 * 40);
            }
        }
        Ok(_) => out.push_str(" outcome=ok"),
        Err(e) => {
            out.push_str(" outcome=rejected");
            field(&mut out, "error", &e.message, ERROR_BYTES);
        }
    }
    out
}

/// Writes the audit line of one call to stderr. A closed stderr is not an
/// error: the call has been answered.
pub fn tool_call(
    tool: &str,
    args: Option<&JsonObject>,
    response: &Result<CallToolResponse, ErrorData>,
) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    crate::render::note!("{now} {}", line(tool, args, response));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{CallToolResult, ContentBlock};
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn names_tool_target_and_outcome() {
        let args =
            obj(json!({"kind": "syscall-stats", "target": {"pids": [42, 43], "comm": "nginx"}}));
        let ok = CallToolResult::structured(json!({"tap": {"id": "3f0c"}}));
        assert_eq!(
            line("start_tap", Some(&args), &Ok(ok.into())),
            r#"coral::mcp::audit tool="start_tap" kind="syscall-stats" target="pid 42,43, comm nginx" outcome=ok ids="3f0c""#
        );
        let refused = CallToolResult::error(vec![ContentBlock::text(
            "agent refused: INVALID_ARGUMENT: duration 2h exceeds the agent's maximum of 30s",
        )]);
        let l = line("start_tap", None, &Ok(refused.into()));
        assert!(l.ends_with(r#"outcome=error error="agent refused: INVALID_ARGUMENT: duration 2h exceeds the agent's maximum of 30s""#), "{l}");
        let l = line(
            "nope",
            None,
            &Err(ErrorData::invalid_params("tool not found", None)),
        );
        assert!(
            l.ends_with(r#"outcome=rejected error="tool not found""#),
            "{l}"
        );
    }

    #[test]
    fn client_text_cannot_forge_or_grow_a_line() {
        let forged = format!(
            "x\"\n2026 coral::mcp::audit tool=\"stop_tap\" outcome=ok{}",
            "y".repeat(100_000)
        );
        let mut pids: Vec<Value> = (1..=1000).map(|p| json!(p)).collect();
        pids[1] = json!(forged);
        let args = obj(
            json!({"kind": forged, "id": forged, "target": {"pids": pids, "comm": forged, "cgroup": forged}}),
        );
        let l = line(
            &forged,
            Some(&args),
            &Ok(CallToolResult::structured(json!({})).into()),
        );
        assert!(!l.contains('\n'), "{l}");
        assert!(l.len() < 2000, "{}", l.len());
        assert!(l.contains("(+992 more)"), "{l}");
        // The keys outside quoted values are the real ones only.
        let (mut keys, mut quoted, mut escaped, mut word) = (vec![], false, false, String::new());
        for c in l.chars() {
            match (quoted, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => quoted = !quoted,
                (false, _, '=') => keys.push(std::mem::take(&mut word)),
                (false, _, ' ') => word.clear(),
                (false, _, c) => word.push(c),
                _ => {}
            }
        }
        assert_eq!(keys, ["tool", "kind", "id", "target", "outcome"], "{l}");
    }
}
