//! Builds `coral-burn` (`burn/coral-burn.rs`), the cpu-profile workload, into
//! `OUT_DIR` with frame pointers.
//!
//! The kernel walks user stacks by frame pointers, which Rust omits by
//! default. Built by cargo, the workload would need `-C force-frame-pointers`
//! for the whole workspace; a bare rustc call (the same compiler cargo uses,
//! `$RUSTC`) gives it frame pointers alone. It uses std only.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "burn/coral-burn.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("coral-burn");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2024",
            "--crate-name",
            "coral_burn",
            "--crate-type",
            "bin",
        ])
        // Optimised like a real service, with line tables so inlined
        // functions resolve, and frame pointers so stacks can be walked.
        .args(["-C", "opt-level=2", "-C", "debuginfo=1"])
        .args(["-C", "force-frame-pointers=yes", "-D", "warnings"])
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running {rustc}: {e}"));
    assert!(status.success(), "{rustc} failed to build {src}");
}
