//! Compiles every `src/bpf/*.bpf.c` with clang into `OUT_DIR/<name>.bpf.o`.
//!
//! clang is looked up as `$CORAL_CLANG`, then `clang-19`, then `clang`; `.ci/run`
//! and the README's set-up command install clang-19 from Debian. Debug info is
//! kept (`-g`) because the `.BTF` section it produces is what aya needs for
//! maps, globals and CO-RE relocations.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn clang() -> String {
    if let Ok(c) = std::env::var("CORAL_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    "clang-19".to_string()
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CORAL_CLANG");
    let src = Path::new("src/bpf");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH")?.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other.to_string().leak(),
    };
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH")?
    );
    let clang = clang();

    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".bpf.c") else {
            continue;
        };
        let obj = out.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg(format!("-I{multiarch}"))
            .arg(format!("-I{}", src.display()))
            .arg("-c")
            .arg(&path)
            .arg("-o")
            .arg(&obj)
            .status()
            .with_context(|| {
                format!("running {clang}: install clang-19 and libbpf-dev (see README.md)")
            })?;
        if !status.success() {
            bail!("{clang} failed on {}", path.display());
        }
    }
    Ok(())
}
