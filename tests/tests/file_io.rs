//! file-io end to end: the real agent loads the real BPF programs, the real
//! CLI drives them, and the counts must match what the workload did to its
//! own files.

use coral_e2e::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BLOCKS: u64 = 16;
const BLOCK: u64 = 4096;
/// More than a pipe holds (64 KiB): the one write waits for the reader.
const FIFO_BYTES: u64 = 256 << 10;
/// How long the FIFO's reader waits before it drains it.
const READER_DELAY: Duration = Duration::from_millis(300);

/// A fresh directory, mode 0755 (the workload drops to uid 65534 inside it).
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coral-fio-{tag}-{}-{}",
        std::process::id(),
        rand_tail()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn rand_tail() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn workload(dir: &Path, fifo: Option<&Path>) -> Workload {
    let dir = dir.to_str().unwrap().to_string();
    let (blocks, block, fifo_bytes) = (
        BLOCKS.to_string(),
        BLOCK.to_string(),
        FIFO_BYTES.to_string(),
    );
    let mut args = vec![
        "--file-io",
        &dir,
        "--blocks",
        &blocks,
        "--block-size",
        &block,
    ];
    let fifo = fifo.map(|f| f.to_str().unwrap().to_string());
    if let Some(f) = &fifo {
        args.extend(["--fifo", f, "--fifo-bytes", &fifo_bytes]);
    }
    Workload::spawn(&args)
}

/// The final record's FileIoStats, and every FileIoEvent before it.
fn results(agent: &Agent, id: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let records = agent.records(id);
    let last = records.last().expect("no records");
    assert_eq!(last["final"], true, "last record is not final: {last}");
    let events = records
        .iter()
        .filter_map(|r| r.get("fileIoEvent").cloned())
        .collect();
    (last["fileIoStats"].clone(), events)
}

fn file<'a>(stats: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    stats["files"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["path"] == path))
        .unwrap_or_else(|| panic!("no row for {path} in {stats}"))
}

fn n(v: &serde_json::Value) -> u64 {
    if v.is_null() { 0 } else { u64_of(v) }
}

#[test]
#[ignore = "needs root and BPF"]
fn counts_bytes_errors_and_slow_writes_of_the_target_only() {
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = scratch_dir("target");
    let other_dir = scratch_dir("other");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");

    let mut target = workload(&dir, Some(&fifo));
    let mut other = workload(&other_dir, None);
    let info = agent.start_collector(&[
        "--kind",
        "file-io",
        "--pid",
        &target.pid.to_string(),
        "--slow",
        "100ms",
        "--duration",
        "60s",
    ]);
    let id = id_of(&info);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    let programs = prog_ids_of(&info);
    assert_eq!(programs.len(), 2, "{info}");

    // The slow reader: this process (not traced) opens the FIFO, waits,
    // then drains it, so the target's one write blocks for READER_DELAY.
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&reader_path).unwrap();
        std::thread::sleep(READER_DELAY);
        let mut all = Vec::new();
        f.read_to_end(&mut all).unwrap();
        all.len() as u64
    });
    target.go();
    assert_eq!(reader.join().unwrap(), FIFO_BYTES);
    other.go();

    let stopped = agent.coral_json(&["tap", "stop", &id]).remove(0);
    assert_eq!(stopped["state"], "COLLECTOR_STATE_STOPPED", "{stopped}");
    let (stats, events) = results(&agent, &id);

    // Exact counts and bytes for the data file, one row per (pid, path).
    let data = file(&stats, dir.join("data").to_str().unwrap());
    assert_eq!(n(&data["pid"]), u64::from(target.pid), "{data}");
    assert_eq!(n(&data["opens"]), 2, "{data}");
    assert_eq!(n(&data["writes"]), BLOCKS, "{data}");
    assert_eq!(n(&data["writeBytes"]), BLOCKS * BLOCK, "{data}");
    assert_eq!(n(&data["reads"]), BLOCKS, "{data}");
    assert_eq!(n(&data["readBytes"]), BLOCKS * BLOCK, "{data}");
    assert_eq!(n(&data["fsyncs"]), 1, "{data}");
    // The last open's flags, as the syscall got them.
    assert_eq!(data["flagNames"], "O_RDONLY", "{data}");
    let hist: u64 = data["writeLatencyLog2"]
        .as_array()
        .expect("write histogram")
        .iter()
        .map(u64_of)
        .sum();
    assert_eq!(hist, BLOCKS, "{data}");
    assert!(
        n(&data["writeP99Ns"]) > 0 && n(&data["readP50Ns"]) > 0,
        "{data}"
    );

    // The FIFO: one write of FIFO_BYTES.
    let f = file(&stats, fifo.to_str().unwrap());
    assert_eq!(
        (n(&f["writes"]), n(&f["writeBytes"])),
        (1, FIFO_BYTES),
        "{f}"
    );

    // Failed opens with their errno: 3 ENOENT, 2 EACCES, 1 EISDIR.
    let errors = stats["openErrors"].as_array().expect("open errors");
    let count = |path: &Path, error: &str| {
        errors
            .iter()
            .filter(|e| e["path"] == path.to_str().unwrap() && e["error"] == error)
            .map(|e| n(&e["count"]))
            .sum::<u64>()
    };
    assert_eq!(count(&dir.join("missing"), "ENOENT"), 3, "{stats}");
    assert_eq!(count(&dir.join("secret"), "EACCES"), 2, "{stats}");
    assert_eq!(count(&dir, "EISDIR"), 1, "{stats}");
    assert_eq!(errors.len(), 3, "{stats}");

    // Events: the 6 failed opens, and the slow FIFO write, and nothing else
    // (data blocks are far below 100ms).
    let opens: Vec<_> = events
        .iter()
        .filter(|e| e["op"] == "FILE_IO_OP_OPEN")
        .collect();
    assert_eq!(opens.len(), 6, "{events:?}");
    assert!(opens.iter().all(|e| n(&e["errno"]) > 0));
    let slow: Vec<_> = events
        .iter()
        .filter(|e| e["op"] != "FILE_IO_OP_OPEN")
        .collect();
    assert_eq!(slow.len(), 1, "{events:?}");
    let w = slow[0];
    assert_eq!(w["op"], "FILE_IO_OP_WRITE", "{w}");
    assert_eq!(w["path"], fifo.to_str().unwrap(), "{w}");
    assert_eq!(n(&w["bytes"]), FIFO_BYTES, "{w}");
    let latency = Duration::from_nanos(n(&w["latencyNs"]));
    // At least the reader's delay; at most a second more on a loaded host.
    assert!(
        latency >= READER_DELAY && latency < READER_DELAY + Duration::from_secs(1),
        "{latency:?}"
    );

    // The other process did the same, and none of it is here.
    let other_dir_s = other_dir.to_str().unwrap();
    for row in stats["files"].as_array().unwrap().iter().chain(errors) {
        assert_eq!(n(&row["pid"]), u64::from(target.pid), "{row}");
        assert!(
            !row["path"].as_str().unwrap().starts_with(other_dir_s),
            "{row}"
        );
    }
    let procs = stats["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{stats}");
    assert_eq!(n(&procs[0]["openErrors"]), 6);

    // Nothing left attached.
    wait_programs_gone(&programs, Duration::from_secs(10));

    // The human view: the top-files table and the failed opens.
    let out = agent.coral(&["tap", "events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("top files by bytes") && text.contains("64 KiB"),
        "{text}"
    );
    assert!(text.contains("EACCES") && text.contains("ENOENT"), "{text}");

    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[test]
#[ignore = "needs root and BPF"]
fn fds_opened_before_the_start_are_counted_as_untracked() {
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = scratch_dir("untracked");
    // The target's stdin and stdout (pipes opened before the start) carry
    // "go" and "done": that I/O is untracked, not attributed to a path.
    let mut target = workload(&dir, None);
    let info = agent.start_collector(&["--kind", "file-io", "--pid", &target.pid.to_string()]);
    let id = id_of(&info);
    target.go();
    agent.coral_json(&["tap", "stop", &id]);
    let (stats, _) = results(&agent, &id);
    assert!(n(&stats["untrackedOps"]) >= 1, "{stats}");
    let paths: Vec<&str> = stats["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().all(|p| p.starts_with(dir.to_str().unwrap())),
        "{paths:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// dd opens its files and dup2s them onto stdin and stdout (as shells do
/// for redirections): the I/O on the new fds is the opened file's.
#[test]
#[ignore = "needs root and BPF"]
fn io_on_a_dup2ed_fd_counts_for_the_file_opened() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = scratch_dir("dup");
    let out = dir.join("out");
    // The shell waits for a line (so the tap is attached first), then
    // becomes dd under the same pid.
    let mut dd = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "read -r _; exec dd if=/dev/zero of={} bs={BLOCK} count={BLOCKS} conv=fsync status=none",
            out.display()
        ))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let info = agent.start_collector(&["--kind", "file-io", "--pid", &dd.id().to_string()]);
    let id = id_of(&info);
    dd.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(dd.wait().unwrap().success());
    agent.coral_json(&["tap", "stop", &id]);
    let (stats, _) = results(&agent, &id);

    let written = file(&stats, out.to_str().unwrap());
    assert_eq!(n(&written["writes"]), BLOCKS, "{written}");
    assert_eq!(n(&written["writeBytes"]), BLOCKS * BLOCK, "{written}");
    assert_eq!(n(&written["fsyncs"]), 1, "{written}");
    assert_eq!(n(&written["reads"]), 0, "{written}");
    let zero = file(&stats, "/dev/zero");
    assert_eq!(n(&zero["reads"]), BLOCKS, "{zero}");
    assert_eq!(n(&zero["readBytes"]), BLOCKS * BLOCK, "{zero}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A files map too small for the workload: each open of a file that finds
/// no room is one drop. bash opens each of 12 files once and does no I/O on
/// them, so only the opens can count: on a kernel where a program misread
/// the full map's error (6.1: `coral_insert_full` in common.h) this is 0.
#[test]
#[ignore = "needs root and BPF"]
fn opens_that_find_the_files_map_full_are_counted_as_drops() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    require_kernel();
    const KEPT: u64 = 4;
    const OPENED: u64 = 12;
    let agent = Agent::start(&[]);
    let dir = scratch_dir("full");
    for i in 0..OPENED {
        std::fs::write(dir.join(format!("f{i}")), b"").unwrap();
    }
    // Brace expansion and `:` are bash's own: no child, no other file.
    let mut sh = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "read -r _; for i in {{0..{}}}; do : < {}/f$i; done",
            OPENED - 1,
            dir.display()
        ))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let info = agent.start_collector(&[
        "--kind",
        "file-io",
        "--pid",
        &sh.id().to_string(),
        "--max-files",
        &KEPT.to_string(),
    ]);
    let id = id_of(&info);
    sh.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(sh.wait().unwrap().success());
    agent.coral_json(&["tap", "stop", &id]);
    let (stats, _) = results(&agent, &id);
    let files = stats["files"].as_array().unwrap();
    assert_eq!(files.len() as u64, KEPT, "{stats}");
    for f in files {
        assert_eq!(n(&f["opens"]), 1, "{f}");
    }
    assert_eq!(n(&stats["droppedFiles"]), OPENED - KEPT, "{stats}");
    let _ = std::fs::remove_dir_all(&dir);
}
