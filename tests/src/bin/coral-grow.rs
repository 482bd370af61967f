//! A process whose memory follows a known curve, for the memory tests.
//!
//! ```text
//! coral-grow grow      --rate-mib R [--tick-ms T] [--max-mib M]
//! coral-grow plateau   --rate-mib R --plateau-mib P [--tick-ms T]
//! coral-grow sawtooth  --rate-mib R --saw-mib A [--tick-ms T]
//! coral-grow pagecache --rate-mib R --file PATH [--tick-ms T] [--report-mib N]
//! coral-grow churn     [--chunk-mib C] [--iters N] [--reps R] [--cpu K]
//! ```
//!
//! Prints `ready <pid>` and waits for a line on stdin (so a test can move it
//! into a cgroup first), then prints `go <unix ns>` and:
//! - **grow**: touches R MiB/s of fresh anonymous memory (one write per
//!   page), in steps every T ms (default 10) on a fixed schedule, so the rate
//!   holds whatever the scheduling jitter; until M MiB (default: forever,
//!   i.e. until an OOM kill);
//! - **plateau**: grows like that to P MiB, prints `plateau <unix ns>`, then
//!   holds it, touching nothing;
//! - **sawtooth**: grows to A MiB at R MiB/s, frees it all
//!   (`MADV_DONTNEED`), and again, forever;
//! - **pagecache**: reads PATH at R MiB/s (then again from the start), so
//!   only the page cache grows; prints `read <unix ns>` once N MiB were read
//!   (a test waits for bytes, not seconds: under TCG the rate is not met).
//!
//! It exits when stdin closes (or it is killed).
//!
//! **churn** is the benchmark's allocation-heavy load (`bench/memory.sh`),
//! with no handshake: N times mmap C MiB (default 64), write every page,
//! munmap; the best of R runs (default 3) is printed as `<ns> ns/page`, in
//! the thread's CPU time (page faults included, time preempted left out),
//! pinned to CPU K if given.

use std::io::{BufRead, Read, Seek, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: usize = 1 << 20;
/// Address space reserved up front (not committed: MAP_NORESERVE).
const RESERVE: usize = 64 << 30;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str) -> Option<f64> {
    arg(args, name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: {v:?}")))
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// A reserved, lazily backed anonymous region.
struct Region {
    base: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Region {
        // SAFETY: a fresh private anonymous mapping, no address hint; the
        // result is checked against MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        Region {
            base: base.cast(),
            len,
        }
    }

    /// Writes one byte in every page of [from, to).
    fn touch(&self, from: usize, to: usize) {
        let to = to.min(self.len);
        let mut at = from - from % 4096;
        while at < to {
            // SAFETY: `at` < len, inside the mapping, which is writable.
            unsafe { self.base.add(at).write_volatile(1) };
            at += 4096;
        }
    }

    /// Gives [0, to) back to the kernel: its pages are freed.
    fn free(&self, to: usize) {
        // SAFETY: the range is inside the mapping; MADV_DONTNEED on private
        // anonymous memory only drops its pages (they read as zero after).
        let rc = unsafe { libc::madvise(self.base.cast(), to.min(self.len), libc::MADV_DONTNEED) };
        assert_eq!(rc, 0, "madvise");
    }
}

fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn churn(args: &[String]) {
    let chunk = num(args, "--chunk-mib").unwrap_or(64.0) as usize * MIB;
    let iters = num(args, "--iters").unwrap_or(20.0) as usize;
    let reps = num(args, "--reps").unwrap_or(3.0) as usize;
    if let Some(cpu) = num(args, "--cpu") {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity only read and write that set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            let rc = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
            assert_eq!(rc, 0, "sched_setaffinity");
        }
    }
    let pages = (chunk / 4096 * iters) as f64;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t0 = thread_cpu_ns();
        for _ in 0..iters {
            let region = Region::new(chunk);
            region.touch(0, chunk);
            // SAFETY: unmaps exactly the mapping Region::new made, which
            // nothing uses afterwards.
            let rc = unsafe { libc::munmap(region.base.cast(), region.len) };
            assert_eq!(rc, 0, "munmap");
        }
        best = best.min((thread_cpu_ns() - t0) as f64 / pages);
    }
    say(&format!("{best:.1} ns/page"));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    if mode == "churn" {
        return churn(&args);
    }
    let rate = num(&args, "--rate-mib").expect("--rate-mib R") * MIB as f64;
    let tick = Duration::from_secs_f64(num(&args, "--tick-ms").unwrap_or(10.0) / 1000.0);
    let per_tick = (rate * tick.as_secs_f64()) as usize;

    // The read buffer is written here, before `ready`, so its pages are
    // faulted in before the test moves the process: growing anonymous memory
    // after `go` (1 MiB at 96 MiB/s) would be the very growth a pagecache
    // test asserts is not there.
    let mut pagecache_buf = if mode == "pagecache" {
        vec![0x5au8; per_tick.max(4096)]
    } else {
        Vec::new()
    };
    // Likewise the file, and the thread that reads stdin: its stack, kernel
    // stack and page tables charged after `go` were 57 KB of unreclaimable
    // growth in 0.9 s, a trend a pagecache test's first window calls growth.
    let mut pagecache_file = (mode == "pagecache").then(|| {
        std::fs::File::open(arg(&args, "--file").expect("--file PATH")).expect("opening --file")
    });
    let go = std::sync::Arc::new(std::sync::Barrier::new(2));
    let stdin_go = go.clone();
    std::thread::spawn(move || {
        let mut line = String::with_capacity(64);
        std::io::stdin().lock().read_line(&mut line).unwrap();
        stdin_go.wait();
        // Quit when stdin closes, whatever the mode is doing.
        let _ = std::io::stdin().lock().read_line(&mut line);
        std::process::exit(0);
    });
    say(&format!("ready {}", std::process::id()));
    go.wait();
    say(&format!("go {}", unix_ns()));

    let start = Instant::now();
    let due = |k: u32| start + tick * k;
    let wait = |k: u32| {
        let at = due(k);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
    };
    match mode.as_str() {
        "grow" | "plateau" | "sawtooth" => {
            let region = Region::new(RESERVE);
            let cap = match mode.as_str() {
                "grow" => num(&args, "--max-mib").map_or(RESERVE, |m| m as usize * MIB),
                "plateau" => num(&args, "--plateau-mib").expect("--plateau-mib P") as usize * MIB,
                _ => num(&args, "--saw-mib").expect("--saw-mib A") as usize * MIB,
            };
            let mut used = 0;
            let mut k = 1;
            loop {
                wait(k);
                k += 1;
                let next = (used + per_tick).min(cap);
                region.touch(used, next);
                used = next;
                if used == cap {
                    match mode.as_str() {
                        "sawtooth" => {
                            region.free(used);
                            used = 0;
                        }
                        "plateau" => {
                            say(&format!("plateau {}", unix_ns()));
                            loop {
                                std::thread::sleep(Duration::from_secs(3600));
                            }
                        }
                        _ => loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        },
                    }
                }
            }
        }
        "pagecache" => {
            let report = num(&args, "--report-mib").map(|m| m as usize * MIB);
            let mut f = pagecache_file.take().expect("opened before ready");
            let mut buf = std::mem::take(&mut pagecache_buf);
            let (mut total, mut k) = (0, 1);
            loop {
                wait(k);
                k += 1;
                let n = f.read(&mut buf).expect("reading --file");
                if n == 0 {
                    f.rewind().unwrap();
                }
                let before = total;
                total += n;
                if report.is_some_and(|r| before < r && total >= r) {
                    say(&format!("read {}", unix_ns()));
                }
            }
        }
        other => panic!("unknown mode {other:?}: grow, plateau, sawtooth or pagecache"),
    }
}
