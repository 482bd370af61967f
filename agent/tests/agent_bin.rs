//! The `coral-agent` binary's command line.

use std::process::Command;

#[test]
fn refuses_a_bad_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_coral-agent"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither unix:///path"));
}

#[test]
fn refuses_default_longer_than_max() {
    let out = Command::new(env!("CARGO_BIN_EXE_coral-agent"))
        .args([
            "--listen",
            "/tmp/coral-never.sock",
            "--default-duration",
            "2h",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--default-duration"));
}
