//! A workload whose syscalls the tests know exactly.
//!
//! `coral-workload [--name COMM] [--getppid N] [--close-fail M]`
//!
//! Prints `ready <pid>`, waits for a line on stdin, then makes exactly N
//! `getppid` calls and M `close(-1)` calls (each fails with EBADF), prints
//! `done`, and exits when stdin closes. Between "go" and "done" it makes no
//! other syscall, so a collector filtered on it must count exactly N and M.

use std::io::{BufRead, Write};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let getppid: u64 = arg(&args, "--getppid").map_or(0, |v| v.parse().expect("--getppid N"));
    let close_fail: u64 =
        arg(&args, "--close-fail").map_or(0, |v| v.parse().expect("--close-fail M"));
    if let Some(name) = arg(&args, "--name") {
        let c = std::ffi::CString::new(name).expect("name without NUL");
        // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
        assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    stdin.lock().read_line(&mut line).unwrap();
    for _ in 0..getppid {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    for _ in 0..close_fail {
        // SAFETY: closing fd -1 touches no resource; it fails with EBADF.
        let rc = unsafe { libc::close(-1) };
        assert_eq!(rc, -1);
    }
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
}
