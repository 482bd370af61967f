//! `coral-bench`: the pieces of Coral's overhead benchmarks that need to be a
//! program rather than a shell line (see `bench/syscall-overhead.sh` and
//! `docs/benchmarks.md`).
//!
//! - `loop`: a tight raw `getppid` (or `write`) loop pinned to one CPU,
//!   printing ns per call.
//! - `floor`: empty raw_tp `sys_enter` + `sys_exit` programs, attached until
//!   SIGTERM/SIGINT: the least any syscall tracer built on these hooks costs.
//! - `attach`: the same for any object file's raw_tp / tp_btf programs, to
//!   measure variants of a collector's BPF program built outside the tree.
//! - `spawn`: runs a program (`/bin/true`) over and over, one at a time,
//!   printing the CPU ns (parent and children) per fork + exec + exit + wait.
//! - `http-loop`: nginx's syscalls for one small static-file request, in a
//!   loop fed by a forked client, printing the server's CPU ns per request.
//! - `dns-loop`: A queries over UDP to a DNS server, one at a time, printing
//!   CPU ns (client and server) and wall-clock ns per query.

use clap::{Parser, Subcommand};

#[cfg(target_os = "linux")]
mod linux;

/// Coral benchmark helpers.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum Command {
    /// Run raw getppid (or write) syscalls in a tight loop and print ns per
    /// call (thread CPU time, the best of --reps runs) as the first field on
    /// stdout.
    Loop(LoopArgs),
    /// Attach empty raw_tp sys_enter/sys_exit programs, print "attached",
    /// stay attached until SIGTERM or SIGINT.
    Floor,
    /// Load an object file, attach its raw_tp / tp_btf programs, print "attached",
    /// stay attached until SIGTERM or SIGINT.
    Attach(AttachArgs),
    /// Run a program again and again, one at a time (posix_spawn + wait),
    /// and print CPU ns per run (ours and the children's, the best of
    /// --reps) as the first field.
    Spawn(SpawnArgs),
    /// Serve HTTP "requests" in a tight loop with the syscalls nginx makes
    /// for a small static file on a keep-alive connection (recvfrom, openat,
    /// fstat, pread64, writev, close), a forked client feeding the socket
    /// from another CPU; print the server thread's CPU ns per request (the
    /// best of --reps) as the first field.
    HttpLoop(HttpLoopArgs),
    /// Send A queries over UDP to a DNS server, one at a time, each waiting
    /// for its answer; print CPU ns per query (this thread's and, with
    /// --server-pid, the server's; the best of --reps) as the first field,
    /// then wall-clock ns per query.
    DnsLoop(DnsLoopArgs),
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct DnsLoopArgs {
    /// The server, as ADDRESS:PORT.
    #[arg(long)]
    server: std::net::SocketAddr,
    /// The name asked for.
    #[arg(long, default_value = "alpha.test")]
    name: String,
    /// Queries per run.
    #[arg(long, default_value_t = 20_000)]
    iters: u64,
    /// Runs; the fastest one is reported (noise only ever adds time).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Print "ready PID" and wait for a line on stdin before measuring (so a
    /// tracer can be given the loop's pid).
    #[arg(long)]
    wait: bool,
    /// The server's pid: its CPU time is added to ours (on loopback it runs
    /// the softirq of our queries' answers).
    #[arg(long)]
    server_pid: Option<i32>,
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct HttpLoopArgs {
    /// Requests per run.
    #[arg(long, default_value_t = 200_000)]
    iters: u64,
    /// Runs; the fastest one is reported (noise only ever adds time).
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// CPU of the server loop (default: the highest-numbered CPU we may run
    /// on); the client runs on another one.
    #[arg(long)]
    cpu: Option<usize>,
    /// Print "ready PID" and wait for a line on stdin before measuring (so a
    /// tracer can be given the server's pid).
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct SpawnArgs {
    /// Runs of the program per measurement.
    #[arg(long, default_value_t = 2000)]
    iters: u64,
    /// Measurements; the fastest one is reported (noise only ever adds time).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// The program, run without arguments; it must exit 0.
    #[arg(long, default_value = "/bin/true")]
    program: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct LoopArgs {
    /// Syscalls per run.
    #[arg(long, default_value_t = 5_000_000)]
    iters: u64,
    /// Runs; the fastest one is reported (noise only ever adds time).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// CPU to pin to (default: the highest-numbered CPU we may run on).
    #[arg(long)]
    cpu: Option<usize>,
    /// Report wall-clock time instead of the thread's CPU time (which leaves
    /// out time spent preempted by other work on a busy machine).
    #[arg(long)]
    wall: bool,
    /// The syscall made: `getppid` (no arguments, no work), `write` (64
    /// bytes to /dev/null: a syscall http-latency's program dispatches on),
    /// `setuid` (setuid to the current uid: a credential change the security
    /// kind reports), `capset` (the current capability sets again: one too),
    /// `open` (openat + close of a 4 KiB temporary file: a call counted as
    /// one, each an open file-io and opensnoop see) or `pread` (4 KiB from
    /// offset 0 of that file, opened once before the loop: a read file-io
    /// counts for its path).
    #[arg(long, value_enum, default_value_t = LoopSyscall::Getppid)]
    syscall: LoopSyscall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum LoopSyscall {
    Getppid,
    Write,
    Setuid,
    Capset,
    Open,
    Pread,
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct AttachArgs {
    /// The BPF object file (clang -target bpf output).
    object: std::path::PathBuf,
    /// Program to attach, as NAME=TRACEPOINT (repeatable). Default: every
    /// raw_tp / tp_btf program, on sys_enter if its name contains "enter",
    /// on sys_exit if it contains "exit".
    #[arg(long = "prog", value_name = "NAME=TRACEPOINT")]
    progs: Vec<String>,
    /// Fill Coral's pid filter globals (filter_pids, filter_npids), if the
    /// object has them.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Set a `const volatile __u8` global before load, as NAME=VALUE.
    #[arg(long = "set-u8", value_name = "NAME=VALUE")]
    set_u8: Vec<String>,
    /// Set a `const volatile __u32` global before load, as NAME=VALUE.
    #[arg(long = "set-u32", value_name = "NAME=VALUE")]
    set_u32: Vec<String>,
    /// Resize a map before load, as NAME=ENTRIES.
    #[arg(long = "max-entries", value_name = "NAME=ENTRIES")]
    max_entries: Vec<String>,
}

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Loop(args) => linux::run_loop(&args),
        Command::Floor => linux::floor(),
        Command::Attach(args) => linux::attach(&args),
        Command::Spawn(args) => linux::spawn(&args),
        Command::HttpLoop(args) => linux::http_loop(&args),
        Command::DnsLoop(args) => linux::dns_loop(&args),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    let _ = Cli::parse();
    anyhow::bail!("coral-bench measures Linux syscalls and eBPF programs: Linux only")
}
