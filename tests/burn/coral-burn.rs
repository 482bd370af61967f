//! coral-burn: the cpu-profile workload. Built by `tests/build.rs` with frame
//! pointers (`-C force-frame-pointers=yes`), optimised, with line tables, so
//! profiles of it show whole stacks and real function names.
//!
//! `coral-burn [--mode cpu|syscall|stacks] [--threads N] [--seconds S]
//! [--cpu-seconds C] [--wait] [--report]`
//!
//! Prints `ready <pid>`; with `--wait`, waits for a line on stdin. Then every
//! thread burns CPU for S seconds (default 10), or with `--cpu-seconds` until
//! the process has used C seconds of CPU (S at most). `cpu`: `hot_alpha` and
//! `hot_beta`, two distinctly named functions, in a 3:1 ratio of CPU time.
//! `syscall`: reads /dev/zero in 64 KiB chunks, so most time is spent in the
//! kernel. `stacks`: burns at the end of call paths picked at random among
//! 2^16, so a profile has thousands of distinct stacks. Then it prints `burned <cpu seconds>`: the CPU time (user + system,
//! all threads) the burn took, from /proc/self/stat. With `--wait` it then
//! waits for stdin to close before exiting; otherwise it exits at once.
//! `--report` also prints `ops <n> seconds <s> rate <n/s>`, for benchmarks.
//!
//! std only, so it builds with a bare `rustc`.

use std::hint::black_box;
use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Units of work per round; alpha gets three, beta one.
const ROUND: u64 = 20_000;

/// xorshift steps (13, 7, 17). `hot_beta` runs the same number of
/// instructions per step with other shifts: equal cost per step, so the 3:1
/// ratio of steps is a 3:1 ratio of CPU time, yet distinct code the compiler
/// cannot merge into one function.
#[inline(never)]
fn hot_alpha(n: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

/// xorshift steps (12, 25, 27).
#[inline(never)]
fn hot_beta(n: u64) -> u64 {
    let mut x = black_box(0x2545_f491_4f6c_dd1du64);
    for _ in 0..n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x = black_box(x);
    }
    x
}

#[inline(never)]
fn burn_cpu(stop: &AtomicBool, ops: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        black_box(hot_alpha(3 * ROUND));
        black_box(hot_beta(ROUND));
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

#[inline(never)]
fn burn_syscalls(stop: &AtomicBool, ops: &AtomicU64) {
    let mut zero = std::fs::File::open("/dev/zero").expect("opening /dev/zero");
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        zero.read_exact(&mut buf).expect("reading /dev/zero");
        black_box(&buf);
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// utime + stime of this process (all threads), in seconds. /proc counts
/// in USER_HZ ticks, 100 per second on Linux.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // Fields after the parenthesised comm, which may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Levels of `branch_a` / `branch_b` calls in `--mode stacks`.
const BRANCH_DEPTH: u32 = 16;

/// One level of a random call path: which function the next level is, is
/// the path's lowest bit. Each function calls both from two call sites, so
/// every path is a distinct stack (the work after each call keeps them real
/// calls, not jumps).
#[inline(never)]
fn branch_a(depth: u32, path: u64) -> u64 {
    if depth == 0 {
        return hot_alpha(200);
    }
    if path & 1 == 0 {
        black_box(branch_a(depth - 1, path >> 1)).wrapping_add(1)
    } else {
        black_box(branch_b(depth - 1, path >> 1)).wrapping_mul(3)
    }
}

#[inline(never)]
fn branch_b(depth: u32, path: u64) -> u64 {
    if depth == 0 {
        return hot_beta(200);
    }
    if path & 1 == 0 {
        black_box(branch_a(depth - 1, path >> 1)).wrapping_sub(5)
    } else {
        black_box(branch_b(depth - 1, path >> 1)).rotate_left(7)
    }
}

#[inline(never)]
fn burn_stacks(stop: &AtomicBool, ops: &AtomicU64) {
    let mut x = 0x853c_49e6_748f_ea9bu64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        black_box(branch_a(BRANCH_DEPTH, x));
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = arg(&args, "--mode").unwrap_or_else(|| "cpu".into());
    let threads: usize = arg(&args, "--threads").map_or(1, |v| v.parse().expect("--threads N"));
    let seconds: f64 = arg(&args, "--seconds").map_or(10.0, |v| v.parse().expect("--seconds S"));
    let cpu_target: Option<f64> =
        arg(&args, "--cpu-seconds").map(|v| v.parse().expect("--cpu-seconds C"));
    let report = args.iter().any(|a| a == "--report");
    let wait = args.iter().any(|a| a == "--wait");
    let burn: fn(&AtomicBool, &AtomicU64) = match mode.as_str() {
        "cpu" => burn_cpu,
        "syscall" => burn_syscalls,
        "stacks" => burn_stacks,
        other => panic!("unknown --mode {other}"),
    };

    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    let stdin = std::io::stdin();
    let mut line = String::new();
    if wait {
        stdin.lock().read_line(&mut line).unwrap();
    }

    let cpu_before = cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // The main thread burns too: `--threads 1` is a single-threaded process.
    let workers: Vec<_> = (1..threads)
        .map(|_| {
            let (stop, ops) = (stop.clone(), ops.clone());
            std::thread::spawn(move || burn(&stop, &ops))
        })
        .collect();
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || match cpu_target {
            None => {
                std::thread::sleep(Duration::from_secs_f64(seconds));
                stop.store(true, Ordering::Relaxed);
            }
            Some(target) => {
                // Until the burn has used `target` CPU seconds (at most
                // `seconds` of wall time): a busy machine then makes the run
                // longer, not the profile smaller.
                // Every 100 ms: a /proc read costs far more under QEMU's
                // TCG, and polling every 10 ms there put 18% of the samples
                // in this thread instead of the hot functions.
                while cpu_seconds() - cpu_before < target && start.elapsed().as_secs_f64() < seconds
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    burn(&stop, &ops);
    for w in workers {
        w.join().unwrap();
    }
    timer.join().unwrap();
    writeln!(out, "burned {:.2}", cpu_seconds() - cpu_before).unwrap();
    if report {
        let secs = start.elapsed().as_secs_f64();
        let n = ops.load(Ordering::Relaxed);
        writeln!(out, "ops {n} seconds {secs:.3} rate {:.1}", n as f64 / secs).unwrap();
    }
    out.flush().unwrap();
    if wait {
        // Until stdin closes: the test decides when the process goes.
        while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {}
    }
}
