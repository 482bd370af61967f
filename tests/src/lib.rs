//! Harness for the end-to-end tests: a real `coral-agent` process on a
//! temporary socket, the real `coral` CLI, and workloads whose syscalls are
//! known exactly.
//!
//! Kernel tests need root and a kernel that loads BPF. They are marked
//! `#[ignore = "needs root and BPF"]`: `cargo test` reports them ignored,
//! `cargo test -- --include-ignored` runs them, and a kernel test that runs
//! fails when BPF cannot be used ([`require_kernel`]).

pub mod colony;

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the whole suite with `cargo test --workspace` (it builds every binary first)",
        path.display()
    );
    path
}

/// Environment variable: how many times longer the harness waits for things
/// to happen (an agent to serve, a collector to change state, programs to go
/// away) on a slow machine; tests/kernels/run sets it under QEMU's TCG. It
/// never scales a test's workload or what a test asserts about a result
/// (that is [`WORKLOAD_SCALE_ENV`]'s job, and assertions never scale).
pub const TIME_SCALE_ENV: &str = "CORAL_TEST_TIME_SCALE";

/// How long to wait for something that takes `d` on a normal machine.
pub fn patience(d: Duration) -> Duration {
    d * scale(TIME_SCALE_ENV)
}

/// `d` as a whole-second CLI duration (`--duration`, `--agent-timeout`),
/// for durations built with [`patience`].
pub fn secs_arg(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// A scale factor from the environment: 1 when unset or not a positive integer.
fn scale(var: &str) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Environment variable: how many times more work a workload does where
/// what the test asserts is a count the workload builds up over time (e.g.
/// distinct stacks sampled from a CPU burner), so that a slow machine
/// (QEMU's TCG: tests/kernels/run sets it) reaches the same count. The
/// assertion itself stays as it is.
pub const WORKLOAD_SCALE_ENV: &str = "CORAL_TEST_WORKLOAD_SCALE";

/// `n` units of work, scaled by [`WORKLOAD_SCALE_ENV`] (1 by default).
pub fn scaled_work(n: u64) -> u64 {
    n * u64::from(scale(WORKLOAD_SCALE_ENV))
}

/// The running kernel's (major, minor) version, from its release string.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Why kernel tests cannot run here, if they cannot.
pub fn kernel_unavailable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    match (root, btf) {
        (false, _) => Some("not running as root"),
        (_, false) => Some("no kernel BTF at /sys/kernel/btf/vmlinux"),
        _ => None,
    }
}

/// Called first by every kernel test. Kernel tests are `#[ignore = "needs
/// root and BPF"]`, so a plain `cargo test` lists them as ignored, never as
/// passed; `cargo test -- --include-ignored` (what `.ci/test` runs) runs
/// them, and then they fail when the kernel cannot be used: a kernel test
/// that runs never skips.
pub fn require_kernel() {
    if let Some(reason) = kernel_unavailable() {
        panic!("this kernel test cannot run: {reason} (kernel tests need root and BPF)");
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running `coral-agent`, killed (SIGTERM, then waited for) on drop.
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    pub addr: String,
    /// Flags every `coral` call gets (credentials for TLS / token agents).
    client_args: Vec<String>,
}

/// A fresh socket path for one agent.
pub fn socket_path() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("coral-e2e-{}-{n}.sock", std::process::id()))
}

impl Agent {
    /// Starts an agent with extra flags and waits until it serves.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_at(&socket_path(), extra, &[])
    }

    /// Starts an agent on the Unix socket `socket` with extra flags and
    /// environment, and waits until it serves.
    pub fn start_at(socket: &Path, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let addr = format!("unix://{}", socket.display());
        Self::start_with(&addr, &addr, extra, env, &[], None)
    }

    /// The general form: `listen` is what the agent gets, `addr` what the
    /// CLI dials, `client_args` what every CLI call adds (credentials),
    /// `log` where its stderr goes (inherited when `None`).
    pub fn start_with(
        listen: &str,
        addr: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        client_args: &[String],
        log: Option<&Path>,
    ) -> Agent {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("creating agent log")),
            None => Stdio::inherit(),
        };
        let child = Command::new(bin("coral-agent"))
            .arg("--listen")
            .arg(listen)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning coral-agent");
        let socket = PathBuf::from(listen.strip_prefix("unix://").unwrap_or(""));
        let mut agent = Agent {
            child,
            socket,
            addr: addr.to_string(),
            client_args: client_args.to_vec(),
        };
        let deadline = Instant::now() + patience(Duration::from_secs(20));
        loop {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("coral-agent exited during start-up: {status}");
            }
            let listening = agent.socket.as_os_str().is_empty() || agent.socket.exists();
            if listening && agent.coral(&["caps"]).status.success() {
                return agent;
            }
            assert!(Instant::now() < deadline, "coral-agent did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; the worst case is ESRCH.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits up to `timeout` (its [`patience`]) for the agent to exit; its
    /// status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + patience(timeout);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `coral` with this agent's address and credentials, not yet run.
    pub fn coral_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("coral"));
        cmd.arg("--agent")
            .arg(&self.addr)
            .args(&self.client_args)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `coral --agent <this agent> args...`.
    pub fn coral(&self, args: &[&str]) -> Output {
        self.coral_command(args).output().expect("running coral")
    }

    /// Like [`coral`](Self::coral) with `-o json`, asserting success; one
    /// JSON value per output line.
    pub fn coral_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.coral(&full);
        assert!(
            out.status.success(),
            "coral {full:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// Starts a collector; returns its CollectorInfo JSON.
    pub fn start_collector(&self, args: &[&str]) -> Value {
        let mut full = vec!["tap", "start"];
        full.extend_from_slice(args);
        let resp = self.coral_json(&full).remove(0);
        resp["collector"].clone()
    }

    pub fn get(&self, id: &str) -> Value {
        self.coral_json(&["tap", "get", id]).remove(0)
    }

    /// Polls until the collector reaches `state` (e.g. "COLLECTOR_STATE_EXPIRED").
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + patience(timeout);
        loop {
            let info = self.get(id);
            if info["state"] == state {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "collector {id} did not reach {state}: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every record of a collector (poll mode), in order.
    pub fn records(&self, id: &str) -> Vec<Value> {
        self.coral_json(&["tap", "events", id])
            .into_iter()
            .filter_map(|v| v.get("record").cloned())
            .collect()
    }

    /// The final record's syscall-stats payload.
    pub fn final_syscalls(&self, id: &str) -> Value {
        let records = self.records(id);
        let last = records.last().expect("no records");
        assert_eq!(last["final"], true, "last record is not final: {last}");
        last["syscallStats"].clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; the worst case is ESRCH.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + patience(Duration::from_secs(10));
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A proto3-JSON uint64 (a string), number, or absent (0).
pub fn u64_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a u64: {s}")),
        Value::Number(n) => n.as_u64().unwrap(),
        Value::Null => 0,
        other => panic!("not a u64: {other}"),
    }
}

/// The entry for syscall `name` in a SyscallStats JSON (or Null).
pub fn syscall<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["syscalls"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

/// A `coral-workload` child: waits for [`go`](Self::go), then makes its calls.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

/// A test workload started with its handshake done: it printed `ready PID`
/// and waits for commands on stdin (`coral-workload`, `coral-burn`).
pub struct ReadyChild {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl ReadyChild {
    pub fn spawn(cmd: &mut Command) -> ReadyChild {
        let what = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{what} said {line:?}"));
        ReadyChild {
            child,
            stdin,
            stdout,
            pid,
        }
    }
}

impl Workload {
    pub fn spawn(args: &[&str]) -> Workload {
        let ReadyChild {
            child,
            stdin,
            stdout,
            pid,
        } = ReadyChild::spawn(Command::new(bin("coral-workload")).args(args));
        Workload {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Lets it make its calls and waits until it has.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Program ids `bpftool prog show` lists right now.
pub fn loaded_prog_ids() -> Vec<u64> {
    bpftool_ids(&["prog", "show"], "id")
}

/// `bpftool -j <what>`, the `field` of every object it lists. bpftool walks
/// the kernel's objects one by one and fails when one goes away while it
/// reads it (another test detaching): that is retried, not a failure.
fn bpftool_ids(what: &[&str], field: &str) -> Vec<u64> {
    let mut last = String::new();
    for _ in 0..10 {
        let out = Command::new("bpftool")
            .arg("-j")
            .args(what)
            .output()
            .expect("running bpftool (install it: apt-get install bpftool)");
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
            return v
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p[field].as_u64())
                .collect();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("bpftool {what:?} failed ten times: {last}");
}

/// What a process holds, from /proc: for leak checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Open file descriptors.
    pub fds: usize,
    /// Of which BPF programs, maps and links (`anon_inode:bpf-*`).
    pub bpf_progs: usize,
    pub bpf_maps: usize,
    pub bpf_links: usize,
    /// Threads.
    pub tasks: usize,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Of which anonymous (heap, stacks), KiB.
    pub rss_anon_kib: u64,
}

impl Footprint {
    /// The footprint once the agent is quiet: open fds unchanged for a
    /// second (at most 10 s). A client that just exited, such as the
    /// start-up readiness check, can hold a connection for a moment on a
    /// loaded machine.
    pub fn settled(pid: u32) -> Footprint {
        let deadline = Instant::now() + patience(Duration::from_secs(10));
        let mut last = Footprint::of(pid);
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let fp = Footprint::of(pid);
            if fp.fds != last.fds {
                stable_since = Instant::now();
            }
            last = fp;
        }
        last
    }

    pub fn of(pid: u32) -> Footprint {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let (mut fds, mut bpf_progs, mut bpf_maps, mut bpf_links) = (0, 0, 0, 0);
        for fd in std::fs::read_dir(proc.join("fd")).expect("reading /proc/PID/fd") {
            let Ok(fd) = fd else { continue };
            fds += 1;
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            match target.to_string_lossy().as_ref() {
                "anon_inode:bpf-prog" => bpf_progs += 1,
                "anon_inode:bpf-map" => bpf_maps += 1,
                "anon_inode:bpf_link" | "anon_inode:bpf-link" => bpf_links += 1,
                _ => {}
            }
        }
        let tasks = std::fs::read_dir(proc.join("task"))
            .expect("reading /proc/PID/task")
            .count();
        let status = std::fs::read_to_string(proc.join("status")).expect("reading status");
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
        };
        let rss_kib = kib("VmRSS:");
        let rss_anon_kib = kib("RssAnon:");
        Footprint {
            fds,
            bpf_progs,
            bpf_maps,
            bpf_links,
            tasks,
            rss_kib,
            rss_anon_kib,
        }
    }
}

/// Program ids that `bpftool link show` lists links for right now.
pub fn linked_prog_ids() -> Vec<u64> {
    bpftool_ids(&["link", "show"], "prog_id")
}

pub fn id_of(info: &serde_json::Value) -> String {
    info["id"].as_str().unwrap().to_string()
}

pub fn prog_ids_of(info: &serde_json::Value) -> Vec<u64> {
    info["bpfProgramIds"]
        .as_array()
        .map(|a| a.iter().map(u64_of).collect())
        .unwrap_or_default()
}

/// Polls until none of `ids` is loaded or linked; panics after `timeout`.
/// The kernel frees programs asynchronously, shortly after the last fd goes.
pub fn wait_programs_gone(ids: &[u64], timeout: Duration) {
    let deadline = Instant::now() + patience(timeout);
    loop {
        let loaded = loaded_prog_ids();
        let linked = linked_prog_ids();
        let left: Vec<_> = ids
            .iter()
            .filter(|id| loaded.contains(id) || linked.contains(id))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "BPF programs {left:?} are still loaded or linked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tonic client of the agent on a Unix socket.
pub async fn grpc(
    socket: &Path,
) -> coral_proto::v1::ebpf_service_client::EbpfServiceClient<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connecting to the agent");
    coral_proto::v1::ebpf_service_client::EbpfServiceClient::new(channel)
}

/// The program ids a `CORAL_TEST_FAULT` message names ("... loading programs [12, 13]").
pub fn fault_program_ids(text: &str) -> Vec<u64> {
    text.split_once("loading programs [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list.split(", ").map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("no program ids in {text}"))
}

/// `<cgroup2>/coraltest.slice/docker-<id>.scope` for one test, removed on drop.
pub struct DockerScope {
    pub slice: PathBuf,
    pub scope: PathBuf,
    pub root: PathBuf,
    /// The container id its name carries (64 hex digits).
    pub id: String,
}

impl DockerScope {
    pub fn create() -> DockerScope {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("no cgroup2 mount");
        // Unique per test process and per scope within it.
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!(
            "{:016x}{:016x}",
            0xc0a1_0000_0000_0000u64 | u64::from(std::process::id()),
            0xd0c4_0000_0000_0000u64 | u64::from(n)
        )
        .repeat(2);
        let slice = root.join("coraltest.slice");
        let scope = slice.join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(&scope).expect("creating the docker scope cgroup");
        DockerScope {
            slice,
            scope,
            root,
            id,
        }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.scope.join("cgroup.procs"), pid.to_string())
            .expect("moving into the scope");
    }

    pub fn relative(&self) -> String {
        format!(
            "/{}",
            self.scope.strip_prefix(&self.root).unwrap().display()
        )
    }
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.scope.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.scope);
        // Other tests may share the slice; the last one removes it.
        let _ = std::fs::remove_dir(&self.slice);
    }
}

/// A cgroup v2 directory for one test, removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
    root: PathBuf,
}

impl Cgroup {
    pub fn create(name: &str) -> Cgroup {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("no cgroup2 mount");
        let path = root.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating cgroup");
        Cgroup { path, root }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .expect("moving into cgroup");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Move any survivors back to the root so the directory can go.
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    /// With `CORAL_REQUIRE_KERNEL_TESTS=1` (CI), a run that leaves the
    /// ignored kernel tests out fails instead of passing without them.
    #[test]
    fn required_kernel_tests_are_included() {
        if std::env::var("CORAL_REQUIRE_KERNEL_TESTS").is_ok_and(|v| v == "1") {
            let included = std::env::args().any(|a| a == "--include-ignored" || a == "--ignored");
            assert!(
                included,
                "CORAL_REQUIRE_KERNEL_TESTS=1 but the kernel tests are ignored: run `cargo test -- --include-ignored` (.ci/test does)"
            );
            super::require_kernel();
        }
    }
}
