//! cpu-profile end to end: the real agent samples real workloads with perf
//! events, symbolizes their stacks, and the real CLI writes folded stacks, a
//! flamegraph and pprof. The workload (`coral-burn`, built with frame pointers
//! by build.rs) burns CPU in two named functions in a known 3:1 ratio and
//! reports the CPU time it used, so the expected sample count is
//! CPU time x frequency whatever else the machine is doing.
//!
//! The tests run one at a time (they measure CPU shares on a small machine).

use coral_e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command};
use std::sync::Mutex;
use std::time::Duration;

/// Serialises the tests of this file.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn burn_bin() -> PathBuf {
    PathBuf::from(concat!(env!("OUT_DIR"), "/coral-burn"))
}

/// A `coral-burn` child. Killed on drop.
struct Burner {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Burner {
    fn spawn_from(bin: &Path, args: &[&str]) -> Burner {
        let ReadyChild {
            child,
            stdin,
            stdout,
            pid,
        } = ReadyChild::spawn(Command::new(bin).args(args));
        Burner {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// A burner that waits for [`go`](Self::go).
    fn waiting(args: &[&str]) -> Burner {
        let mut all = vec!["--wait"];
        all.extend_from_slice(args);
        Burner::spawn_from(&burn_bin(), &all)
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the burn to end; returns the CPU seconds it took.
    fn burned(&mut self) -> f64 {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("burned ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("coral-burn said {line:?}"))
    }

    fn wait_exit(&mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "coral-burn failed: {status}");
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_profile(agent: &Agent, args: &[&str]) -> String {
    let mut full = vec!["--kind", "cpu-profile"];
    full.extend_from_slice(args);
    let info = agent.start_collector(&full);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    info["id"].as_str().unwrap().to_string()
}

/// Stops the collector and returns its final CpuProfile payload.
fn stop_profile(agent: &Agent, id: &str) -> Value {
    let info = agent.coral_json(&["tap", "stop", id]).remove(0);
    assert_eq!(info["state"], "COLLECTOR_STATE_STOPPED", "{info}");
    final_profile(agent, id)
}

fn final_profile(agent: &Agent, id: &str) -> Value {
    let records = agent.records(id);
    let last = records.last().expect("no records");
    assert_eq!(last["final"], true, "last record is not final: {last}");
    last["cpuProfile"].clone()
}

fn stacks(p: &Value) -> &Vec<Value> {
    p["stacks"].as_array().expect("stacks")
}

fn frames(stack: &Value) -> &Vec<Value> {
    stack["frames"].as_array().expect("frames")
}

fn total(p: &Value) -> u64 {
    u64_of(&p["totalSamples"])
}

/// Samples whose stack has a frame whose function ends with `name`.
fn samples_in(p: &Value, name: &str) -> u64 {
    stacks(p)
        .iter()
        .filter(|s| {
            frames(s)
                .iter()
                .any(|f| f["function"].as_str().unwrap_or("").ends_with(name))
        })
        .map(|s| u64_of(&s["count"]))
        .sum()
}

fn assert_within(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got:.3}, want {want:.3} +- {tolerance}"
    );
}

/// pprof's messages, declared independently of the CLI's: only what the
/// test reads.
mod pprof {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
    }
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("coral-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const HZ: u64 = 199;

/// Idle seconds of each CPU so far (`/proc/stat`, USER_HZ = 100).
fn idle_seconds() -> Vec<f64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    stat.lines()
        // cpuN user nice system idle iowait ... (not the "cpu" total line)
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap() as f64 / 100.0)
        .collect()
}

/// Time the hypervisor ran something else while this machine's CPUs had
/// work, summed over all CPUs (`/proc/stat` "cpu" line, field 8), and the
/// number of CPUs. A stolen interval still passes on the clock the sampling
/// timer runs by, but is not CPU time of the task (the scheduler subtracts
/// steal, PARAVIRT_TIME_ACCOUNTING): on a contended VM, samples per CPU
/// second rise by 1 / (1 - stolen share). CI once saw 1.64 that way.
fn steal_seconds() -> (f64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let total = stat.lines().find(|l| l.starts_with("cpu ")).unwrap();
    let steal = total
        .split_whitespace()
        .nth(8)
        .map_or(0, |v| v.parse::<u64>().unwrap());
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    (steal as f64 / 100.0, cpus)
}

/// Parses a flamegraph as XML (it declares the SVG DTD).
fn parse_svg(svg: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(svg, opts).expect("the SVG parses as XML")
}

#[test]
#[ignore = "needs root and BPF"]
fn pid_profile_has_the_hot_functions_in_their_ratio_and_every_format_agrees() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    // 2.5 CPU seconds (~500 samples) however busy the machine is.
    let mut target = Burner::waiting(&["--cpu-seconds", "2.5", "--seconds", "30"]);
    // Same program, same functions, same time: must not be counted.
    let mut other = Burner::waiting(&["--seconds", "3"]);
    let id = start_profile(
        &agent,
        &[
            "--pid",
            &target.pid.to_string(),
            "-F",
            &HZ.to_string(),
            "--duration",
            "30s",
        ],
    );
    let (steal_before, cpus) = steal_seconds();
    let window = std::time::Instant::now();
    target.go();
    other.go();
    let cpu = target.burned();
    let wall = window.elapsed().as_secs_f64();
    let stolen = ((steal_seconds().0 - steal_before) / (cpus as f64 * wall)).clamp(0.0, 0.9);
    other.burned();
    let p = stop_profile(&agent, &id);

    // Only the target, and every sample accounted for.
    assert!(!stacks(&p).is_empty(), "{p}");
    for s in stacks(&p) {
        assert_eq!(s["pid"], target.pid, "a stack from another process: {s}");
        assert_eq!(s["comm"], "coral-burn");
    }
    let n = total(&p);
    assert_eq!(
        n,
        stacks(&p).iter().map(|s| u64_of(&s["count"])).sum::<u64>()
    );
    // A loss is a stack-map bucket collision: rare with a few dozen stacks
    // (each new stack meets a taken bucket with chance ~ stacks / 16384).
    let lost = u64_of(&p["lostSamples"]);
    assert!(lost * 20 <= n + lost, "{lost} samples lost: {p}");
    assert_eq!(p["frequencyHz"], HZ);
    // About one sample per 1/HZ s the target ran, stolen time included.
    let expected = cpu * HZ as f64 / (1.0 - stolen);
    assert_within(
        "samples / (CPU seconds x frequency)",
        n as f64 / expected,
        1.0,
        0.2,
    );

    // The 3:1 split, by name (demangled Rust paths).
    let alpha = samples_in(&p, "coral_burn::hot_alpha") as f64 / n as f64;
    let beta = samples_in(&p, "coral_burn::hot_beta") as f64 / n as f64;
    eprintln!(
        "{n} samples for {cpu:.2} CPU seconds at {HZ} Hz, {:.1}% stolen ({:.3} of expected); hot_alpha {:.1}%, hot_beta {:.1}%",
        stolen * 100.0,
        n as f64 / expected,
        alpha * 100.0,
        beta * 100.0
    );
    assert_within("hot_alpha share", alpha, 0.75, 0.10);
    assert_within("hot_beta share", beta, 0.25, 0.10);
    // Frame pointers: the callers are on the stack too, root first.
    let hot = stacks(&p)
        .iter()
        .find(|s| {
            frames(s)
                .last()
                .is_some_and(|f| f["function"] == "coral_burn::hot_alpha")
        })
        .expect("a stack ending in hot_alpha");
    let names: Vec<&str> = frames(hot)
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    let pos = |n: &str| names.iter().position(|f| *f == n);
    assert!(
        pos("coral_burn::main") < pos("coral_burn::burn_cpu") && pos("coral_burn::main").is_some(),
        "{names:?}"
    );
    assert_eq!(frames(hot).last().unwrap()["module"], "coral-burn");

    // The human table.
    let out = agent.coral(&["tap", "events", &id]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SELF%") && text.contains("TOTAL%"), "{text}");
    assert!(text.contains("coral_burn::hot_alpha"), "{text}");

    // Folded stacks: the same samples.
    let dir = TempDir::new("cpu-profile");
    let folded_path = dir.0.join("p.folded");
    let out = agent.coral(&[
        "tap",
        "events",
        &id,
        "--format",
        "folded",
        "--out",
        folded_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folded = std::fs::read_to_string(&folded_path).unwrap();
    let mut folded_total = 0;
    let mut folded_alpha = 0;
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count` lines");
        let count: u64 = count.parse().expect("a count");
        assert!(stack.starts_with("coral-burn;"), "{line}");
        folded_total += count;
        if stack.contains(";coral_burn::hot_alpha") {
            folded_alpha += count;
        }
    }
    assert_eq!(folded_total, n);
    assert_eq!(folded_alpha, samples_in(&p, "coral_burn::hot_alpha"));

    // The flamegraph is XML and names both functions.
    let svg_path = dir.0.join("p.svg");
    let out = agent.coral(&["tap", "events", &id, "--out", svg_path.to_str().unwrap()]);
    assert!(out.status.success());
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = parse_svg(&svg);
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    for f in ["coral_burn::hot_alpha", "coral_burn::hot_beta"] {
        assert!(
            titles.iter().any(|t| t.starts_with(f)),
            "{f} not in the flamegraph"
        );
    }

    // pprof: gzipped profile.proto with the same totals.
    let pprof_path = dir.0.join("p.pb.gz");
    let out = agent.coral(&[
        "tap",
        "events",
        &id,
        "--format",
        "pprof",
        "--out",
        pprof_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&pprof_path).unwrap())
        .read_to_end(&mut raw)
        .expect("pprof is gzipped");
    let prof = <pprof::Profile as prost::Message>::decode(&raw[..]).expect("pprof decodes");
    assert_eq!(prof.string_table[0], "");
    let st = |i: i64| prof.string_table[i as usize].as_str();
    assert_eq!(st(prof.sample_type[0].r#type), "samples");
    assert_eq!(prof.period, 1_000_000_000 / HZ as i64);
    let pprof_total: i64 = prof.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(pprof_total as u64, folded_total);
    // Leaf first: the samples whose leaf is hot_alpha are hot_alpha's self time.
    let leaf_name = |s: &pprof::Sample| {
        let loc = &prof.location[s.location_id[0] as usize - 1];
        let f = &prof.function[loc.line[0].function_id as usize - 1];
        st(f.name)
    };
    let pprof_alpha: i64 = prof
        .sample
        .iter()
        .filter(|s| leaf_name(s) == "coral_burn::hot_alpha")
        .map(|s| s.value[0])
        .sum();
    assert_eq!(
        pprof_alpha as u64,
        stacks(&p)
            .iter()
            .filter(|s| frames(s).last().unwrap()["function"] == "coral_burn::hot_alpha")
            .map(|s| u64_of(&s["count"]))
            .sum::<u64>()
    );
    assert!(pprof_alpha > 0);
}

#[test]
#[ignore = "needs root and BPF"]
fn syscall_heavy_workload_shows_kernel_frames_and_tap_run_writes_a_flamegraph() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let target = Burner::spawn_from(&burn_bin(), &["--mode", "syscall", "--seconds", "20"]);
    let dir = TempDir::new("cpu-profile-run");
    let svg_path = dir.0.join("flame.svg");
    let out = agent.coral(&[
        "tap",
        "run",
        "--kind",
        "cpu-profile",
        "--pid",
        &target.pid.to_string(),
        "-F",
        &HZ.to_string(),
        "--duration",
        "2s",
        "--out",
        svg_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ends with the top table, and kernel functions are in it.
    assert!(stdout.contains("SELF%"), "{stdout}");
    assert!(stdout.contains("[kernel]"), "{stdout}");
    let svg = std::fs::read_to_string(&svg_path).expect("tap run --out wrote the flamegraph");
    parse_svg(&svg);
    assert!(
        svg.contains("entry_SYSCALL_64"),
        "kernel frames are in the flamegraph"
    );

    // `tap run` names the collector on stderr: "cpu-profile <id> on ...".
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("cpu-profile "))
        .and_then(|l| l.split_whitespace().next())
        .expect("tap run names its collector")
        .to_string();
    let p = final_profile(&agent, &id);
    let n = total(&p);
    assert!(n > 0, "{p}");
    let mut in_kernel = 0;
    let mut names = std::collections::BTreeSet::new();
    for s in stacks(&p) {
        let f = frames(s);
        // Root first: user frames, then kernel frames, never mixed.
        let first_kernel = f.iter().position(|f| f["kernel"] == true);
        if let Some(k) = first_kernel {
            assert!(f[k..].iter().all(|f| f["kernel"] == true), "{s}");
            assert!(
                k > 0,
                "a user process's kernel stack has user frames above: {s}"
            );
            in_kernel += u64_of(&s["count"]);
            for f in &f[k..] {
                names.insert(f["function"].as_str().unwrap().to_string());
            }
        }
    }
    // Reading /dev/zero is kernel work: most samples are in the kernel.
    assert!(
        in_kernel as f64 >= 0.5 * n as f64,
        "{in_kernel} of {n} samples in the kernel"
    );
    assert!(
        names.iter().any(|n| n.contains("read")),
        "no read path in the kernel frames: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("entry_SYSCALL")),
        "no syscall entry in the kernel frames: {names:?}"
    );
    assert!(samples_in(&p, "coral_burn::burn_syscalls") > 0, "{p}");
}

#[test]
#[ignore = "needs root and BPF"]
fn thousands_of_distinct_stacks_lose_no_samples() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    // Random call paths 16 levels deep: nearly every sample a new stack.
    // Under TCG fewer samples land per CPU-second, so the burn is longer
    // there (tests/kernels/run); the count asserted is the same.
    let cpu_seconds = scaled_work(3).to_string();
    let wall = scaled_work(30);
    let mut target = Burner::waiting(&[
        "--mode",
        "stacks",
        "--threads",
        "2",
        "--cpu-seconds",
        &cpu_seconds,
        "--seconds",
        &wall.to_string(),
    ]);
    let id = start_profile(
        &agent,
        &[
            "--pid",
            &target.pid.to_string(),
            "-F",
            "999",
            "--duration",
            &format!("{wall}s"),
        ],
    );
    target.go();
    let cpu = target.burned();
    let p = stop_profile(&agent, &id);
    let n = total(&p);
    let lost = u64_of(&p["lostSamples"]);
    let distinct = stacks(&p).len();
    eprintln!("{n} samples ({lost} lost) in {distinct} stacks for {cpu:.2} CPU seconds");
    assert!(distinct >= 1000, "only {distinct} distinct stacks");
    // The stack map alone (16384 buckets, one stack each) would refuse a new
    // stack with chance ~ stacks stored / 16384, several % here; the overflow
    // map takes those.
    assert!(
        lost * 200 <= n + lost,
        "{lost} of {} samples lost in {distinct} stacks",
        n + lost
    );
    // The paths are whole: 16 levels of branch_a / branch_b under the loop.
    let whole = stacks(&p)
        .iter()
        .filter(|s| {
            frames(s)
                .iter()
                .filter(|f| {
                    f["function"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("coral_burn::branch_"))
                })
                .count()
                >= 16
        })
        .count();
    assert!(whole * 2 >= distinct, "{whole} of {distinct} stacks whole");
}

#[test]
#[ignore = "needs root and BPF"]
fn process_that_exits_before_the_end_is_still_symbolized() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    // A copy of the binary, deleted once the process is gone: only what the
    // agent took while the process ran can resolve its stacks.
    let dir = TempDir::new("cpu-profile-exit");
    let bin = dir.0.join("coral-burn-gone");
    std::fs::copy(burn_bin(), &bin).unwrap();
    let mut target = Burner::spawn_from(&bin, &["--wait", "--seconds", "1"]);
    let pid = target.pid;
    let id = start_profile(
        &agent,
        &[
            "--pid",
            &pid.to_string(),
            "-F",
            &HZ.to_string(),
            "--duration",
            "30s",
        ],
    );
    target.go();
    target.burned();
    target.wait_exit();
    std::fs::remove_file(&bin).unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // Past the first snapshot (2s): nothing was symbolized while it ran.
    std::thread::sleep(Duration::from_millis(2500));
    let p = stop_profile(&agent, &id);
    let n = total(&p);
    assert!(n > 0, "{p}");
    let alpha = samples_in(&p, "coral_burn::hot_alpha");
    let beta = samples_in(&p, "coral_burn::hot_beta");
    assert!(
        (alpha + beta) as f64 >= 0.9 * n as f64,
        "{alpha} + {beta} of {n} samples resolved: {p}"
    );
    let module = stacks(&p)
        .iter()
        .flat_map(frames)
        .find(|f| f["function"] == "coral_burn::hot_alpha")
        .map(|f| f["module"].clone());
    assert_eq!(module, Some(Value::from("coral-burn-gone")));
}

#[test]
#[ignore = "needs root and BPF"]
fn idle_counts_only_when_asked_and_frequency_is_limited() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&["--max-profile-frequency", "500"]);

    // Whole machine, idle included: the idle task (pid 0) is sampled as
    // often as the CPUs idled. The CPUs' idle time (/proc/stat) says how many
    // idle samples to expect, and the profile runs until every CPU has idled
    // half a second, however busy the machine is (at most 60 s). The least
    // idle CPU counts: on this VM one vCPU takes no cpu-clock samples at all
    // while it idles (bpftrace's `profile:hz:99` sees the same; likely the
    // kernel's `sched_vcpu_pack`), so only when every CPU idled is a
    // sampling one sure to have.
    let idle_before = idle_seconds();
    let least_idle = || {
        idle_seconds()
            .iter()
            .zip(&idle_before)
            .map(|(after, before)| after - before)
            .fold(f64::INFINITY, f64::min)
    };
    let id = start_profile(&agent, &["--include-idle", "-F", "99", "--duration", "90s"]);
    let waited = std::time::Instant::now();
    while least_idle() < 0.5 && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let p = stop_profile(&agent, &id);
    let idle = least_idle();
    assert!(
        idle >= 0.5,
        "in {:?} some CPU idled only {idle:.2}s: the machine never let it idle",
        waited.elapsed()
    );
    let idle_samples: u64 = stacks(&p)
        .iter()
        .filter(|s| s["pid"].is_null() || s["pid"] == 0)
        .map(|s| u64_of(&s["count"]))
        .sum();
    // Loose: virtual CPUs lose timer ticks while the host runs others.
    assert!(
        idle_samples as f64 >= 0.25 * idle * 99.0,
        "{idle_samples} idle samples while every CPU idled at least {idle:.2}s"
    );
    let idle_stack = stacks(&p)
        .iter()
        .find(|s| s["pid"].is_null())
        .expect("an idle stack");
    assert!(
        frames(idle_stack).iter().all(|f| f["kernel"] == true),
        "{idle_stack}"
    );

    // Idle excluded by default: no pid 0. A burner keeps a CPU busy meanwhile:
    // on an idle machine the profile would otherwise be empty and prove nothing.
    let mut burner = Burner::waiting(&["--seconds", "1"]);
    let id = start_profile(&agent, &["-F", "99", "--duration", "30s"]);
    burner.go();
    burner.burned();
    let p = stop_profile(&agent, &id);
    assert!(total(&p) > 0, "no samples while a CPU burned: {p}");
    // proto3 JSON leaves pid 0 out.
    assert!(
        stacks(&p).iter().all(|s| !s["pid"].is_null()),
        "idle samples without --include-idle"
    );

    // Over the agent's maximum: refused before anything is loaded.
    let out = agent.coral(&["tap", "start", "--kind", "cpu-profile", "-F", "501"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("500 Hz"),
        "{err}"
    );
}
