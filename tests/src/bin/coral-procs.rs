//! A workload whose execs and exits the process-events tests know exactly.
//!
//! `coral-procs` prints `ready <pid>` and then reads commands on stdin:
//!
//! - `go`: runs the plan below, printing one line per process it made
//!   (`child <pid> <role>`, `grandchild <pid> <parent pid>`,
//!   `noexec <pid>`), then `done`.
//! - `burst N`: starts N children (`child exit 0`) at once, waits for them,
//!   then prints `done`.
//!
//! It exits when stdin closes. The plan, in order, every child a fresh exec
//! of this binary (argv[0] is its path, as given to execve):
//!
//! | role | argv after argv[0] | ends |
//! |---|---|---|
//! | `exit0` | `child exit 0 marker-a` | exit 0 |
//! | `exit3` | `child exit 3 "two words" ""` | exit 3 |
//! | `exit42` | `child exit 42` | exit 42 |
//! | `signal` | `child wait` | killed by SIGUSR1 once it is up |
//! | `threads` | `child threads 4 7` | 4 threads exit first, then exit 7 |
//! | `leader` | `child leader-first 9` | the main thread exits alone, another thread then exit_group(9) |
//! | `spawn` | `child spawn 2 5` | runs 2 grandchildren `child exit 5 gc-<i>`, then exit 0 |
//!
//! and one more process, forked without exec (`noexec`), which tries to exec
//! a path that does not exist and `_exit(127)`s: 9 execs and 10 exits in all.

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn me() -> String {
    std::env::current_exe()
        .expect("current_exe")
        .to_string_lossy()
        .into_owned()
}

fn spawn(args: &[&str], stdout: Stdio) -> Child {
    Command::new(me())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .expect("spawning a child")
}

fn wait_code(mut child: Child) -> Option<i32> {
    child.wait().expect("waiting for a child").code()
}

fn child(args: &[String]) -> ! {
    let arg = |i: usize| -> &str { args.get(i).map_or("", String::as_str) };
    let num = |i: usize| -> i32 { arg(i).parse().expect("a number") };
    match arg(0) {
        "exit" => std::process::exit(num(1)),
        "wait" => {
            let mut out = std::io::stdout().lock();
            out.write_all(b"up\n").unwrap();
            out.flush().unwrap();
            // Until killed: stdin stays open.
            let _ = std::io::stdin().read(&mut [0u8; 1]);
            std::process::exit(1)
        }
        "threads" => {
            let threads: Vec<_> = (0..num(1))
                .map(|_| std::thread::spawn(|| std::thread::sleep(Duration::from_millis(10))))
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            std::process::exit(num(2))
        }
        "leader-first" => {
            let code = num(1);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                // SAFETY: _exit ends the process (exit_group) and never returns.
                unsafe { libc::_exit(code) }
            });
            // SAFETY: SYS_exit ends this thread only; the process lives on in
            // the other thread, which ends it. Nothing of this thread's is
            // used after it is gone.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!("SYS_exit returned")
        }
        "spawn" => {
            let code = arg(2).to_string();
            let kids: Vec<Child> = (0..num(1))
                .map(|i| spawn(&["child", "exit", &code, &format!("gc-{i}")], Stdio::null()))
                .collect();
            let mut out = std::io::stdout().lock();
            for k in &kids {
                writeln!(out, "{}", k.id()).unwrap();
            }
            out.flush().unwrap();
            for k in kids {
                wait_code(k);
            }
            std::process::exit(0)
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// Forks a process that only fails an exec and exits 127; its pid.
fn fork_noexec() -> u32 {
    let path = std::ffi::CString::new("/nonexistent/coral-procs-missing").unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    // SAFETY: the child only calls execv and _exit, both async-signal-safe,
    // with memory prepared before the fork; this process has one thread.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above; execv only returns on failure.
        unsafe {
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child, status is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    pid as u32
}

fn plan(out: &mut impl Write) {
    let mut report = |what: String| {
        writeln!(out, "{what}").unwrap();
    };
    for (role, args) in [
        ("exit0", &["child", "exit", "0", "marker-a"][..]),
        ("exit3", &["child", "exit", "3", "two words", ""]),
        ("exit42", &["child", "exit", "42"]),
    ] {
        let c = spawn(args, Stdio::null());
        report(format!("child {} {role}", c.id()));
        wait_code(c);
    }

    let mut c = spawn(&["child", "wait"], Stdio::piped());
    let mut up = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut up)
        .unwrap();
    assert_eq!(up.trim(), "up");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(c.id() as i32, libc::SIGUSR1) };
    report(format!("child {} signal", c.id()));
    wait_code(c);

    for (role, args) in [
        ("threads", &["child", "threads", "4", "7"][..]),
        ("leader", &["child", "leader-first", "9"]),
    ] {
        let c = spawn(args, Stdio::null());
        report(format!("child {} {role}", c.id()));
        wait_code(c);
    }

    let mut c = spawn(&["child", "spawn", "2", "5"], Stdio::piped());
    let parent = c.id();
    report(format!("child {parent} spawn"));
    let mut pids = String::new();
    c.stdout.take().unwrap().read_to_string(&mut pids).unwrap();
    for pid in pids.split_whitespace() {
        report(format!("grandchild {pid} {parent}"));
    }
    wait_code(c);

    report(format!("noexec {}", fork_noexec()));
}

fn burst(n: usize) {
    let kids: Vec<Child> = (0..n)
        .map(|_| spawn(&["child", "exit", "0"], Stdio::null()))
        .collect();
    for k in kids {
        wait_code(k);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1..]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["go"] => plan(&mut out),
            ["burst", n] => burst(n.parse().expect("burst N")),
            _ => panic!("unknown command {line:?}"),
        }
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
    }
}
