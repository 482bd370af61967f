//! Harness for the colony's tests: a real `coral-colony` process on a
//! temporary socket (or port), and a PostgreSQL cluster of its own, made by
//! Debian's `initdb` in a temporary directory and served on a free loopback
//! port for the life of the test.

use crate::{bin, json_lines, patience};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one test, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("coral-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `coral-colony`, stopped (SIGTERM, then waited for) on drop.
pub struct Colony {
    child: Option<Child>,
    listen: String,
    pub addr: String,
    pub store: String,
    extra: Vec<String>,
    /// Flags every `coral` call gets (a token).
    pub client_args: Vec<String>,
    log: PathBuf,
}

impl Colony {
    /// Starts a colony listening on `listen` with the store `store` and
    /// extra flags; waits until it serves.
    pub fn start(listen: &str, store: &str, extra: &[&str], log: &Path) -> Colony {
        let addr = if listen.starts_with('/') || listen.starts_with("unix://") {
            listen.to_string()
        } else {
            format!("http://{listen}")
        };
        Self::start_with(listen, &addr, store, extra, &[], log)
    }

    /// The general form: `addr` is what the CLI dials, `client_args` what
    /// every CLI call adds (TLS files, a token).
    pub fn start_with(
        listen: &str,
        addr: &str,
        store: &str,
        extra: &[&str],
        client_args: &[String],
        log: &Path,
    ) -> Colony {
        let mut colony = Colony {
            child: None,
            listen: listen.to_string(),
            addr: addr.to_string(),
            store: store.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            client_args: client_args.to_vec(),
            log: log.to_path_buf(),
        };
        colony.spawn();
        colony
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the colony log");
        let child = Command::new(bin("coral-colony"))
            .args(["--listen", &self.listen, "--store", &self.store])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning coral-colony");
        self.child = Some(child);
        // Under TCG, with two agents collecting beside it, a restarted
        // colony once took more than 20 s to serve.
        let deadline = Instant::now() + patience(Duration::from_secs(20));
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "coral-colony exited during start-up: {status}\n{}",
                    self.log_text()
                );
            }
            let out = self.coral(&["agents"]);
            // Up, even if this token may not list (the tests decide).
            if out.status.success() || out.status.code() == Some(4) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "coral-colony did not come up: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, wait, start again with the same flags and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILL: no shutdown, whatever was queued and not stored is gone
    /// from the colony (the agents still have it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`kill`](Self::kill) or [`stop`](Self::stop).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; the worst case is ESRCH.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + patience(Duration::from_secs(15));
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `coral --colony <this colony> args...`.
    pub fn coral(&self, args: &[&str]) -> Output {
        Command::new(bin("coral"))
            .arg("--colony")
            .arg(&self.addr)
            .args(&self.client_args)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running coral")
    }

    /// `coral --colony ... -o json args...`, asserting success.
    pub fn coral_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.coral(&full);
        assert!(
            out.status.success(),
            "coral {full:?} failed: {}\n{}\ncolony log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        json_lines(&out.stdout)
    }

    pub fn agents(&self) -> Vec<Value> {
        self.coral_json(&["agents"])
    }

    /// Waits until `n` agents are alive (at most `timeout`, its [`patience`]);
    /// returns them.
    pub fn wait_agents(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + patience(timeout);
        loop {
            let alive: Vec<Value> = self
                .agents()
                .into_iter()
                .filter(|a| a["status"] == "AGENT_STATUS_ALIVE")
                .collect();
            if alive.len() >= n {
                return alive;
            }
            assert!(
                Instant::now() < deadline,
                "{n} agents did not become alive: {:?}\n{}",
                self.agents(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn tap(&self, id: &str) -> Value {
        self.coral_json(&["tap", "get", id]).remove(0)
    }

    /// Polls the fleet tap until `done` holds.
    pub fn wait_tap(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + patience(timeout);
        loop {
            let t = self.tap(id);
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "fleet tap {id} did not get there: {t}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The stored records of a fleet tap (`tap events ID -o json`): the
    /// `record` lines' StoredRecord objects, and the `loss` lines.
    pub fn events(&self, id: &str) -> (Vec<Value>, Vec<Value>) {
        let mut records = Vec::new();
        let mut losses = Vec::new();
        for line in self.coral_json(&["tap", "events", id]) {
            if let Some(r) = line.get("record") {
                records.push(r.clone());
            } else if let Some(l) = line.get("loss") {
                losses.push(l.clone());
            }
        }
        (records, losses)
    }
}

impl Drop for Colony {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The members of a FleetTap JSON.
pub fn members(tap: &Value) -> Vec<Value> {
    tap["members"].as_array().cloned().unwrap_or_default()
}

/// A PostgreSQL cluster of the test's own: `initdb` in a temporary
/// directory, `postgres` on a free loopback port, as the `postgres` user
/// when the test runs as root (the server refuses root). Stopped (fast
/// shutdown) and removed on drop.
pub struct Postgres {
    child: Child,
    pub url: String,
    dir: Scratch,
}

/// Debian's server binaries: /usr/lib/postgresql/<version>/bin, newest first.
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("no PostgreSQL server binaries under /usr/lib/postgresql: install them (.ci/install-deps installs postgresql)")
        })
}

/// `cmd` as the postgres user when we are root.
fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = Scratch::new("pg");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown of the cluster directory");
        }
        let data = dir.path("data");
        let out = as_postgres(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "coral", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path("postgres.log")).unwrap();
        let child = as_postgres(&pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&dir.0)
            // A test cluster: durability is the store's business, not the disk's.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning postgres");
        let mut pg = Postgres {
            child,
            url: format!("postgres://coral@127.0.0.1:{port}/postgres"),
            dir,
        };
        let deadline = Instant::now() + patience(Duration::from_secs(30));
        loop {
            if let Some(status) = pg.child.try_wait().unwrap() {
                panic!(
                    "postgres exited during start-up: {status}\n{}",
                    std::fs::read_to_string(pg.dir.path("postgres.log")).unwrap_or_default()
                );
            }
            let ready = Command::new(pg_bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "coral"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return pg;
            }
            assert!(Instant::now() < deadline, "postgres did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (clients are disconnected).
        // SAFETY: kill(2) on our own child's pid; the worst case is ESRCH.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + patience(Duration::from_secs(15));
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
