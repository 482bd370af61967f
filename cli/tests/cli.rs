//! The `coral` binary without an agent: help, usage errors, and the
//! "unreachable" exit code.

use std::process::Command;

fn coral(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coral"))
        .args(args)
        .env_remove("CORAL_AGENT")
        .output()
        .unwrap()
}

#[test]
fn unreachable_agent_exits_3_with_a_hint() {
    let out = coral(&["--agent", "unix:///nonexistent/coral.sock", "caps"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the agent at unix:///nonexistent/coral.sock"),
        "{err}"
    );
    assert!(err.contains("CORAL_AGENT"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = coral(&[
        "tap",
        "start",
        "--kind",
        "syscall-stats",
        "--duration",
        "1 fortnight",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = coral(&["tap", "extend", "some-id"]);
    assert_eq!(out.status.code(), Some(2), "--by is required");
}

#[test]
fn a_flag_of_another_kind_is_a_usage_error() {
    let out = coral(&["tap", "start", "--kind", "syscall-stats", "-F", "99"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-F/--frequency is a cpu-profile flag") && err.contains("syscall-stats"),
        "{err}"
    );
    let out = coral(&["tap", "run", "--kind", "tcp-metrics", "--max-routes", "9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-routes is an http-latency flag"),
        "{err}"
    );
    let out = coral(&["tap", "start", "--kind", "cpu-profile", "--interval", "2s"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--interval does not apply to cpu-profile"),
        "{err}"
    );
}

#[test]
fn help_lists_the_commands() {
    let out = coral(&["tap", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["start", "events", "run", "get", "list", "stop", "extend"] {
        assert!(text.contains(cmd), "{text}");
    }
}
