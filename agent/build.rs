//! Sets `cfg(bpf)` when the agent is built with its kernel layer: the `bpf`
//! feature on Linux (aya and the C programs exist nowhere else). One cfg
//! instead of `all(feature = "bpf", target_os = "linux")` at every use.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bpf)");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::env::var_os("CARGO_FEATURE_BPF").is_some() {
        println!("cargo::rustc-cfg=bpf");
    }
}
