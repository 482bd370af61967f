//! memory end to end: the real agent, the real CLI, real memory cgroups with
//! limits and real OOM kills. `coral-grow` touches memory at a known rate
//! inside a memory cgroup created (and removed) by each test; the
//! collector's predictions are checked against the moment the kernel kills
//! it.
//!
//! The memory controller may be on cgroup v1 (our machines: hybrid, v1 at
//! /sys/fs/cgroup/memory) or v2; [`MemCgroup`] handles both.

use coral_e2e::*;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1 << 20;

/// The memory controller's hierarchy: (version, mount).
/// One test at a time: each times a grower against its limit, and another
/// test's grower or page cache would compete for the same CPUs and memory.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn memory_hierarchy() -> (u32, PathBuf) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match (f.get(2).copied(), f.get(3)) {
            (Some("cgroup"), Some(opts)) if opts.split(',').any(|o| o == "memory") => {
                return (1, PathBuf::from(f[1]));
            }
            (Some("cgroup2"), _) if v2.is_none() => {
                let root = PathBuf::from(f[1]);
                if std::fs::read_to_string(root.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
                {
                    v2 = Some(root);
                }
            }
            _ => {}
        }
    }
    (2, v2.expect("no memory cgroup hierarchy mounted"))
}

/// A memory cgroup with a limit, for one test. On drop, whatever still runs
/// in it is killed, and the directory removed: also when the test fails.
struct MemCgroup {
    dir: PathBuf,
    /// Below the mount, from "/": how the collector names it.
    path: String,
    limit: u64,
}

impl MemCgroup {
    fn create(name: &str, limit: u64) -> MemCgroup {
        let (version, mount) = memory_hierarchy();
        if version == 2 {
            // A child of a pure cgroup2 root has memory.max only when the
            // root hands the controller down (systemd does; a bare root,
            // such as a virtme guest's, does not).
            let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+memory");
        }
        let leaf = format!("coral-e2e-{name}-{}", std::process::id());
        let dir = mount.join(&leaf);
        // A leftover of a killed run of this test: take it over.
        let _ = std::fs::create_dir(&dir);
        assert!(dir.is_dir(), "creating {}", dir.display());
        let cg = MemCgroup {
            dir,
            path: format!("/{leaf}"),
            limit,
        };
        if version == 1 {
            std::fs::write(cg.dir.join("memory.limit_in_bytes"), limit.to_string())
                .expect("memory.limit_in_bytes");
        } else {
            std::fs::write(cg.dir.join("memory.max"), limit.to_string()).expect("memory.max");
            // Without swap the limit is where the OOM killer comes.
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        cg
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .expect("moving into the memory cgroup");
    }

    fn oom_kills(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.join("memory.oom_control"))
            .or_else(|_| std::fs::read_to_string(self.dir.join("memory.events")))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a pid that is in our test's cgroup; the
                // worst case is ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A `coral-grow` child; its exit (and when it happened) arrives on `exited`.
struct Grower {
    pid: u32,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    exited: mpsc::Receiver<(u64, std::process::ExitStatus)>,
}

impl Grower {
    fn spawn(args: &[&str]) -> Grower {
        let ReadyChild {
            mut child,
            stdin,
            stdout,
            pid,
        } = ReadyChild::spawn(Command::new(bin("coral-grow")).args(args));
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait().expect("waiting for coral-grow");
            let _ = tx.send((unix_now(), status));
        });
        Grower {
            pid,
            stdin,
            stdout,
            exited,
        }
    }

    /// Starts it; the Unix time it said it started.
    fn go(&mut self) -> u64 {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        self.expect("go")
    }

    /// Waits for its next line, `<word> <unix ns>`; the time.
    fn expect(&mut self, word: &str) -> u64 {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(word)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("coral-grow said {line:?}, expected {word}"))
    }

    /// [`Grower::expect`], failing after `timeout` instead of waiting on.
    fn expect_within(&mut self, word: &str, timeout: Duration) -> u64 {
        use std::os::fd::AsRawFd;
        if self.stdout.buffer().is_empty() {
            let mut fds = libc::pollfd {
                fd: self.stdout.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut fds, 1, ms) };
            assert!(ready > 0, "coral-grow said no {word:?} within {timeout:?}");
        }
        self.expect(word)
    }

    /// Waits for it to be killed: the Unix time it was reaped.
    fn killed_at(&self, timeout: Duration) -> u64 {
        let (at, status) = self.exited.recv_timeout(timeout).unwrap_or_else(|_| {
            panic!("coral-grow {} was not killed within {timeout:?}", self.pid)
        });
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "coral-grow {} ended with {status}, not by the OOM killer",
            self.pid
        );
        at
    }
}

impl Drop for Grower {
    fn drop(&mut self) {
        // Closing stdin ends it; a killed one is gone already.
        drop(self.stdin.take());
        // SAFETY: kill(2) on our own child's pid; the worst case is ESRCH.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.exited.recv_timeout(Duration::from_secs(5));
    }
}

/// Starts a memory collector; its id.
fn start_memory(agent: &Agent, args: &[&str]) -> String {
    let mut full = vec!["--kind", "memory", "--duration", "60s"];
    full.extend_from_slice(args);
    let info = agent.start_collector(&full);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    info["id"].as_str().unwrap().to_string()
}

/// Stops it and returns every record; checks nothing stays attached.
fn stop_and_records(agent: &Agent, id: &str) -> Vec<Value> {
    let info = agent.get(id);
    let ids: Vec<u64> = info["bpfProgramIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(u64_of)
        .collect();
    assert_eq!(ids.len(), 3, "{info}");
    let stopped = agent.coral_json(&["tap", "stop", id]).remove(0);
    assert_eq!(stopped["state"], "COLLECTOR_STATE_STOPPED", "{stopped}");
    let linked = linked_prog_ids();
    assert!(
        ids.iter().all(|p| !linked.contains(p)),
        "programs {ids:?} still attached after stop"
    );
    agent.records(id)
}

fn snapshots(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter_map(|r| r.get("memoryStats"))
        .collect()
}

fn cgroup_row<'a>(stats: &'a Value, path: &str) -> Option<&'a Value> {
    stats["cgroups"]
        .as_array()?
        .iter()
        .find(|c| c["path"] == path)
}

fn process_row(stats: &Value, pid: u32) -> Option<&Value> {
    stats["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

fn state(row: &Value) -> &str {
    row["prediction"]["state"].as_str().unwrap_or("")
}

const GROWING: &str = "PREDICTION_STATE_GROWING";

/// The first prediction of the cgroup made once its unreclaimable memory
/// reached `share` of the limit: (as_of, time_to_limit, low, high), ns.
fn prediction_at(stats: &[&Value], cg: &MemCgroup, share: f64) -> (u64, u64, u64, u64) {
    let row = stats
        .iter()
        .filter_map(|s| cgroup_row(s, &cg.path))
        .find(|c| u64_of(&c["unreclaimableBytes"]) as f64 >= share * cg.limit as f64)
        .unwrap_or_else(|| panic!("no snapshot at {share} of the limit"));
    assert_eq!(state(row), GROWING, "at {share} of the limit: {row}");
    let p = &row["prediction"];
    (
        u64_of(&p["asOfUnixNano"]),
        u64_of(&p["timeToLimitNs"]),
        u64_of(&p["timeToLimitLowNs"]),
        u64_of(&p["timeToLimitHighNs"]),
    )
}

/// One grower run into a fresh cgroup until the OOM killer takes it.
struct OomRun {
    rate_mib: u64,
    limit_mib: u64,
    /// (predicted, actual) time to the kill at 50% and 75% of the limit, s.
    half: (f64, f64),
    three_quarters: (f64, f64),
    /// The interval at 50%, s.
    half_interval: (f64, f64),
    /// From the kernel's kill (mark_victim) to the grower being reaped, s.
    reap_lag: f64,
}

fn run_to_oom(
    agent: &Agent,
    rate_mib: u64,
    limit_mib: u64,
    checks: impl FnOnce(&[Value], &MemCgroup, &Grower),
) -> OomRun {
    let cg = MemCgroup::create(&format!("oom{rate_mib}-{limit_mib}"), limit_mib * MIB);
    let mut grower = Grower::spawn(&["grow", "--rate-mib", &rate_mib.to_string()]);
    cg.add(grower.pid);
    let id = start_memory(
        agent,
        &[
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "--interval",
            "100ms",
            "--window",
            "1s",
        ],
    );
    grower.go();
    let expected = Duration::from_secs_f64(limit_mib as f64 / rate_mib as f64);
    let killed = grower.killed_at(expected * 3 + Duration::from_secs(5));
    // Let the collector drain the kill and sample the emptied cgroup.
    std::thread::sleep(Duration::from_millis(300));
    let records = stop_and_records(agent, &id);
    let stats = snapshots(&records);
    let at = |share: f64| {
        let (as_of, ttl, _, _) = prediction_at(&stats, &cg, share);
        (ttl as f64 / 1e9, killed.saturating_sub(as_of) as f64 / 1e9)
    };
    let (half, three_quarters) = (at(0.5), at(0.75));
    let (_, _, lo, hi) = prediction_at(&stats, &cg, 0.5);
    let kill_event = records
        .iter()
        .find_map(|r| r.get("oomKill"))
        .map_or(0, |k| u64_of(&k["timeUnixNano"]));
    assert!(kill_event > 0, "no OOM kill event");
    checks(&records, &cg, &grower);
    OomRun {
        rate_mib,
        limit_mib,
        half,
        three_quarters,
        half_interval: (lo as f64 / 1e9, hi as f64 / 1e9),
        reap_lag: killed.saturating_sub(kill_event) as f64 / 1e9,
    }
}

fn error(p: (f64, f64)) -> f64 {
    (p.0 - p.1).abs() / p.1
}

#[test]
#[ignore = "needs root and BPF"]
fn prediction_half_way_is_within_15_percent_of_the_oom_kill() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let run = run_to_oom(&agent, 32, 128, |records, cg, grower| {
        // The kernel's OOM kill event names the grower, its cgroup, and the
        // limit that was hit, with the victim's RSS at the kill.
        let kills: Vec<&Value> = records.iter().filter_map(|r| r.get("oomKill")).collect();
        assert_eq!(kills.len(), 1, "{kills:?}");
        let k = kills[0];
        assert_eq!(k["pid"], grower.pid, "{k}");
        assert_eq!(k["comm"], "coral-grow", "{k}");
        assert_eq!(k["cgroup"], cg.path.as_str(), "{k}");
        assert_eq!(k["limitCgroup"], cg.path.as_str(), "{k}");
        assert_eq!(u64_of(&k["limitBytes"]), cg.limit, "{k}");
        assert!(k.get("global").is_none(), "{k}");
        let rss = u64_of(&k["rssBytes"]) as f64;
        assert!(
            (rss - cg.limit as f64).abs() <= 0.05 * cg.limit as f64,
            "victim RSS {rss} not within 5% of the limit {}: {k}",
            cg.limit
        );
        assert!(u64_of(&k["anonBytes"]) > cg.limit * 9 / 10, "{k}");
        assert_eq!(cg.oom_kills(), 1, "the kernel counted one kill");
        // The table names it too.
        let line = records.iter().find(|r| r.get("oomKill").is_some()).unwrap();
        assert!(line["timeUnixNano"].is_string(), "{line}");
    });
    eprintln!(
        "32 MiB/s into 128 MiB: at 50% predicted {:.3}s ({:.3}-{:.3}), actual {:.3}s; at 75% {:.3}s vs {:.3}s; reaped {:.0} ms after the kill",
        run.half.0,
        run.half_interval.0,
        run.half_interval.1,
        run.half.1,
        run.three_quarters.0,
        run.three_quarters.1,
        run.reap_lag * 1000.0
    );
    assert!(error(run.half) <= 0.15, "at 50%: predicted {:?}", run.half);
    assert!(
        error(run.three_quarters) <= 0.15,
        "at 75%: predicted {:?}",
        run.three_quarters
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn predictions_hold_across_growth_rates() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let mut rows = Vec::new();
    for (rate, limit) in [(16, 128), (64, 128), (48, 256), (128, 256)] {
        let run = run_to_oom(&agent, rate, limit, |_, _, _| {});
        rows.push(run);
    }
    eprintln!(
        "| rate | limit | predicted at 50% (95% interval) | actual | error | predicted at 75% | actual | error | kill -> reaped | error vs the kernel's kill, 50% / 75% |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!(
            "| {} MiB/s | {} MiB | {:.2} s ({:.2}-{:.2}) | {:.2} s | {:.1}% | {:.2} s | {:.2} s | {:.1}% | {:.0} ms | {:.1}% / {:.1}% |",
            r.rate_mib,
            r.limit_mib,
            r.half.0,
            r.half_interval.0,
            r.half_interval.1,
            r.half.1,
            100.0 * error(r.half),
            r.three_quarters.0,
            r.three_quarters.1,
            100.0 * error(r.three_quarters),
            r.reap_lag * 1000.0,
            100.0 * error((r.half.0, r.half.1 - r.reap_lag)),
            100.0 * error((r.three_quarters.0, r.three_quarters.1 - r.reap_lag))
        );
    }
    for r in &rows {
        assert!(
            error(r.half) <= 0.15,
            "{} MiB/s into {} MiB at 50%: {:?}",
            r.rate_mib,
            r.limit_mib,
            r.half
        );
        assert!(
            error(r.three_quarters) <= 0.15,
            "{} MiB/s into {} MiB at 75%: {:?}",
            r.rate_mib,
            r.limit_mib,
            r.three_quarters
        );
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn a_plateau_is_not_predicted_once_it_filled_the_window() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let cg = MemCgroup::create("plateau", 256 * MIB);
    let mut grower = Grower::spawn(&["plateau", "--rate-mib", "96", "--plateau-mib", "96"]);
    cg.add(grower.pid);
    // The same, outside the cgroup: the kernel's memory cgroup filter keeps it out.
    let mut outside = Grower::spawn(&["plateau", "--rate-mib", "96", "--plateau-mib", "32"]);
    let window = Duration::from_secs(1);
    let id = start_memory(
        &agent,
        &[
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "--interval",
            "100ms",
            "--window",
            "1s",
        ],
    );
    grower.go();
    outside.go();
    let plateau = grower.expect("plateau");
    std::thread::sleep(window + Duration::from_millis(700));
    let records = stop_and_records(&agent, &id);
    let stats = snapshots(&records);
    assert!(
        stats.iter().all(|s| process_row(s, outside.pid).is_none()),
        "a process outside the cgroup was tracked"
    );
    assert!(
        stats.iter().any(|s| process_row(s, grower.pid).is_some()),
        "the process inside was not tracked"
    );

    // While it grew, it was predicted (so "not growing" below means something).
    assert!(
        stats
            .iter()
            .filter_map(|s| cgroup_row(s, &cg.path))
            .any(|c| state(c) == GROWING),
        "never predicted while growing"
    );
    // Once the window holds only the plateau: no prediction, cgroup or process.
    let settled = plateau + window.as_nanos() as u64 + 150_000_000;
    let late: Vec<&&Value> = stats
        .iter()
        .filter(|s| {
            cgroup_row(s, &cg.path)
                .is_some_and(|c| u64_of(&c["prediction"]["asOfUnixNano"]) >= settled)
        })
        .collect();
    assert!(
        late.len() >= 3,
        "only {} snapshots after the plateau filled the window",
        late.len()
    );
    for s in late {
        let c = cgroup_row(s, &cg.path).unwrap();
        assert_eq!(state(c), "PREDICTION_STATE_NOT_GROWING", "{c}");
        assert!(u64_of(&c["unreclaimableBytes"]) >= 96 * MIB, "{c}");
        let p = process_row(s, grower.pid).expect("the grower's row");
        assert_eq!(state(p), "PREDICTION_STATE_NOT_GROWING", "{p}");
        assert_eq!(u64_of(&p["limitBytes"]), cg.limit, "{p}");
    }
    assert_eq!(cg.oom_kills(), 0);
}

/// A file of `size` bytes on a disk filesystem, not in the page cache.
struct ColdFile(PathBuf);

impl ColdFile {
    fn create(name: &str, size: u64) -> ColdFile {
        let dir = std::env::temp_dir();
        // A tmpfs file's pages are shmem, charged to whoever wrote them and
        // never read in again: reading it charges the reader's cgroup
        // nothing (virtme-ng's guests have /tmp on tmpfs; the cache peaked
        // at 256 KiB there).
        assert!(
            !is_tmpfs(&dir),
            "{} is tmpfs, where reading a file adds no page cache: set TMPDIR to a disk-backed directory",
            dir.display()
        );
        let path = dir.join(format!("coral-e2e-{name}-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5au8; MIB as usize];
        for _ in 0..size / MIB {
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
        drop_cache(&path);
        ColdFile(path)
    }
}

fn is_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `struct statfs` is plain integers, for which all zeroes is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

fn drop_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: posix_fadvise on an open fd; DONTNEED only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

impl Drop for ColdFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn page_cache_growth_alone_predicts_nothing() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let file = ColdFile::create("cache", 256 * MIB);
    let cg = MemCgroup::create("cache", 128 * MIB);
    let mut reader = Grower::spawn(&[
        "pagecache",
        "--rate-mib",
        "96",
        "--file",
        file.0.to_str().unwrap(),
        "--report-mib",
        "240",
    ]);
    cg.add(reader.pid);
    let id = start_memory(
        &agent,
        &[
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "--interval",
            "100ms",
            "--window",
            "1s",
        ],
    );
    reader.go();
    // 240 MiB read through a 128 MiB limit: 2.5 s at 96 MiB/s on the host,
    // longer under TCG, where the reader cannot keep that rate.
    reader.expect_within("read", patience(Duration::from_secs(30)));
    let records = stop_and_records(&agent, &id);
    let stats = snapshots(&records);
    let rows: Vec<&Value> = stats
        .iter()
        .filter_map(|s| cgroup_row(s, &cg.path))
        .collect();
    // The cache did fill the cgroup up to its limit...
    let peak = rows
        .iter()
        .map(|c| u64_of(&c["currentBytes"]))
        .max()
        .unwrap();
    assert!(peak >= cg.limit * 3 / 4, "cache peaked at {peak}");
    let file_peak = rows.iter().map(|c| u64_of(&c["fileBytes"])).max().unwrap();
    assert!(file_peak >= cg.limit / 2, "file peaked at {file_peak}");
    // ...without a single prediction, and without an OOM kill.
    for c in &rows {
        assert_ne!(state(c), GROWING, "{c}");
        assert!(c["prediction"].get("timeToLimitNs").is_none(), "{c}");
    }
    for s in &stats {
        if let Some(p) = process_row(s, reader.pid) {
            assert_ne!(state(p), GROWING, "{p}");
        }
    }
    assert!(records.iter().all(|r| r.get("oomKill").is_none()));
    assert_eq!(cg.oom_kills(), 0);
    assert!(reader.exited.try_recv().is_err(), "the reader died");
}

#[test]
#[ignore = "needs root and BPF"]
fn a_sawtooth_is_not_predicted() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let cg = MemCgroup::create("saw", 256 * MIB);
    // Up to 96 MiB in 0.5 s, all freed, again: never near the limit.
    let mut grower = Grower::spawn(&["sawtooth", "--rate-mib", "192", "--saw-mib", "96"]);
    cg.add(grower.pid);
    let id = start_memory(
        &agent,
        &[
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "--interval",
            "100ms",
            "--window",
            "1500ms",
        ],
    );
    let go = grower.go();
    std::thread::sleep(Duration::from_millis(4500));
    let records = stop_and_records(&agent, &id);
    let stats = snapshots(&records);
    // Once the window holds a full period, the sawtooth is not a trend.
    let settled = go + 1_600_000_000;
    let mut seen = 0;
    for s in &stats {
        let Some(c) = cgroup_row(s, &cg.path) else {
            continue;
        };
        if u64_of(&c["prediction"]["asOfUnixNano"]) < settled {
            continue;
        }
        seen += 1;
        let p = &c["prediction"];
        let conf = p["confidence"].as_f64().unwrap_or(0.0);
        assert!(
            state(c) != GROWING || conf < 0.5,
            "sawtooth predicted with confidence {conf}: {c}"
        );
    }
    assert!(seen >= 20, "{seen} snapshots");
    // It did move: up to most of its 96 MiB.
    let peak = stats
        .iter()
        .filter_map(|s| cgroup_row(s, &cg.path))
        .map(|c| u64_of(&c["unreclaimableBytes"]))
        .max()
        .unwrap();
    assert!(peak >= 48 * MIB, "peak {peak}");
    assert_eq!(cg.oom_kills(), 0);
}

/// `/proc/PID/status` fields, bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        * 1024
}

#[test]
#[ignore = "needs root and BPF"]
fn process_rss_matches_proc_status() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let mut target = Grower::spawn(&["plateau", "--rate-mib", "128", "--plateau-mib", "48"]);
    let mut other = Grower::spawn(&["plateau", "--rate-mib", "128", "--plateau-mib", "16"]);
    let id = start_memory(
        &agent,
        &[
            "--pid",
            &target.pid.to_string(),
            "--interval",
            "100ms",
            "--window",
            "1s",
        ],
    );
    target.go();
    other.go();
    target.expect("plateau");
    other.expect("plateau");
    std::thread::sleep(Duration::from_millis(400));
    let (vm_rss, rss_anon, rss_file, rss_shmem) = (
        proc_status(target.pid, "VmRSS:"),
        proc_status(target.pid, "RssAnon:"),
        proc_status(target.pid, "RssFile:"),
        proc_status(target.pid, "RssShmem:"),
    );
    let records = stop_and_records(&agent, &id);
    let last = *snapshots(&records).last().unwrap();
    assert!(
        process_row(last, other.pid).is_none(),
        "the pid filter let another process in"
    );
    let row = process_row(last, target.pid).expect("the target's row");
    assert_eq!(row["comm"], "coral-grow", "{row}");

    // The collector reads each counter's percpu_counter.count, which lags
    // the exact sum by less than the per-CPU batch on each CPU:
    // nr_cpus * max(32, 2 * nr_cpus) pages per counter.
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let per_counter = cpus * 32u64.max(2 * cpus) * 4096;
    let near = |got: u64, want: u64, counters: u64, what: &str| {
        assert!(
            got.abs_diff(want) <= counters * per_counter,
            "{what}: collector {got}, /proc {want}, tolerance {}: {row}",
            counters * per_counter
        );
    };
    near(u64_of(&row["anonBytes"]), rss_anon, 1, "RssAnon");
    near(u64_of(&row["fileBytes"]), rss_file, 1, "RssFile");
    near(u64_of(&row["shmemBytes"]), rss_shmem, 1, "RssShmem");
    near(u64_of(&row["rssBytes"]), vm_rss, 3, "VmRSS");
    assert!(u64_of(&row["anonBytes"]) >= 48 * MIB, "{row}");
    eprintln!(
        "collector anon {} rss {}; /proc RssAnon {rss_anon} VmRSS {vm_rss}; tolerance {per_counter} per counter",
        u64_of(&row["anonBytes"]),
        u64_of(&row["rssBytes"])
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn cgroup_paths_of_the_wrong_hierarchy_are_refused() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let (version, mount) = memory_hierarchy();
    let out = agent.coral(&[
        "tap",
        "start",
        "--kind",
        "memory",
        "--cgroup",
        "/no/such/memcg",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/memcg"), "{err}");
    if version == 1 {
        // Hybrid host: a cgroup2 directory has no memory controller here.
        let v2 = Cgroup::create("coral-e2e-mem-v2");
        let out = agent.coral(&[
            "tap",
            "start",
            "--kind",
            "memory",
            "--cgroup",
            v2.path.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&mount.display().to_string()), "{err}");
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn a_pid_target_brings_its_limited_cgroup() {
    require_kernel();
    let _serial = serial();
    let agent = Agent::start(&[]);
    let cg = MemCgroup::create("pidcg", 192 * MIB);
    let mut grower = Grower::spawn(&["plateau", "--rate-mib", "128", "--plateau-mib", "32"]);
    cg.add(grower.pid);
    let id = start_memory(
        &agent,
        &[
            "--pid",
            &grower.pid.to_string(),
            "--interval",
            "100ms",
            "--window",
            "1s",
        ],
    );
    grower.go();
    grower.expect("plateau");
    std::thread::sleep(Duration::from_millis(400));
    let records = stop_and_records(&agent, &id);
    let last = *snapshots(&records).last().unwrap();
    // The process's limit is its memory cgroup's, and that cgroup is sampled.
    let p = process_row(last, grower.pid).expect("the grower's row");
    assert_eq!(p["cgroup"], cg.path.as_str(), "{p}");
    assert_eq!(u64_of(&p["limitBytes"]), cg.limit, "{p}");
    let limit_file = if memory_hierarchy().0 == 1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    assert_eq!(p["prediction"]["limitSource"], limit_file, "{p}");
    let c = cgroup_row(last, &cg.path).expect("its cgroup's row");
    assert_eq!(u64_of(&c["limitBytes"]), cg.limit, "{c}");
    assert!(u64_of(&c["anonBytes"]) >= 32 * MIB, "{c}");
}
