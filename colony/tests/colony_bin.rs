//! The `coral-colony` binary's command line. (An integration test also makes
//! `cargo test --workspace` build the binary, which the e2e tests run.)

use std::process::Command;

#[test]
fn refuses_a_bad_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_coral-colony"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither unix:///path"));
}

#[test]
fn refuses_an_unknown_store_url() {
    let dir = std::env::temp_dir().join(format!("coral-colony-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coral-colony"))
        .args(["--listen", dir.join("colony.sock").to_str().unwrap()])
        .args(["--store", "bogus://x"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected sqlite:///path/file.db, a path, or postgres://"),
        "{err}"
    );
}
