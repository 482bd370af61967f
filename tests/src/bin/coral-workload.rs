//! A workload whose syscalls the tests know exactly.
//!
//! `coral-workload [--name COMM] [--getppid N] [--close-fail M]
//!  [--file-io DIR --blocks N --block-size B [--fifo PATH --fifo-bytes F]]`
//!
//! Prints `ready <pid>`, waits for a line on stdin, then makes exactly N
//! `getppid` calls and M `close(-1)` calls (each fails with EBADF), prints
//! `done`, and exits when stdin closes. Between "go" and "done" it makes no
//! other syscall, so a collector filtered on it must count exactly N and M.
//!
//! With `--file-io DIR` (an existing directory, mode 0755, owned by root),
//! after "go" it also, in this order: creates `DIR/data` (O_WRONLY|O_CREAT|
//! O_TRUNC), writes exactly N blocks of B bytes, fsyncs it once, closes it,
//! opens it O_RDONLY, reads exactly N blocks of B bytes (no read at EOF),
//! closes it; opens `DIR/missing` 3 times (ENOENT); creates `DIR/secret`
//! (mode 0600) and, with its effective uid set to 65534, opens it twice
//! (EACCES); opens DIR O_WRONLY once (EISDIR). With `--fifo PATH` it then
//! opens that FIFO O_WRONLY and writes F bytes in one write (its reader
//! decides how long that takes).

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
    if line.is_empty() {
        // stdin closed before "go" (the test gave up): do nothing.
        return;
    }
    for _ in 0..getppid {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    for _ in 0..close_fail {
        // SAFETY: closing fd -1 touches no resource; it fails with EBADF.
        let rc = unsafe { libc::close(-1) };
        assert_eq!(rc, -1);
    }
    if let Some(dir) = arg(&args, "--file-io") {
        file_io(&args, std::path::Path::new(&dir));
    }
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
}

/// The file-io sequence of the module doc; every call's result is checked.
fn file_io(args: &[String], dir: &std::path::Path) {
    use std::ffi::CString;
    let num = |name: &str| -> usize {
        arg(args, name)
            .unwrap_or_else(|| panic!("{name} is needed with --file-io"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} N"))
    };
    let (blocks, size) = (num("--blocks"), num("--block-size"));
    let path =
        |name: &str| CString::new(dir.join(name).into_os_string().into_encoded_bytes()).unwrap();
    let open = |p: &CString, flags: i32, mode: libc::c_uint| {
        // SAFETY: p is a NUL-terminated path that outlives the call.
        unsafe { libc::open(p.as_ptr(), flags, mode) }
    };
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut buf = vec![0x5au8; size];
    let data = path("data");
    let fd = open(&data, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
    assert!(fd >= 0, "creating data: errno {}", errno());
    for _ in 0..blocks {
        // SAFETY: buf holds size bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), size) };
        assert_eq!(n, size as isize, "write");
    }
    // SAFETY: fd is ours and open.
    assert_eq!(unsafe { libc::fsync(fd) }, 0, "fsync");
    // SAFETY: fd is ours and open.
    assert_eq!(unsafe { libc::close(fd) }, 0);
    let fd = open(&data, libc::O_RDONLY, 0);
    assert!(fd >= 0, "opening data: errno {}", errno());
    for _ in 0..blocks {
        // SAFETY: buf has room for size bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), size) };
        assert_eq!(n, size as isize, "read");
    }
    // SAFETY: fd is ours and open.
    assert_eq!(unsafe { libc::close(fd) }, 0);
    let missing = path("missing");
    for _ in 0..3 {
        assert_eq!(open(&missing, libc::O_RDONLY, 0), -1);
        assert_eq!(errno(), libc::ENOENT);
    }
    let secret = path("secret");
    let fd = open(
        &secret,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o600,
    );
    assert!(fd >= 0, "creating secret: errno {}", errno());
    // SAFETY: fd is ours and open.
    assert_eq!(unsafe { libc::close(fd) }, 0);
    // SAFETY: seteuid only changes this process's effective uid; the saved
    // uid stays 0, so it can come back.
    assert_eq!(unsafe { libc::seteuid(65534) }, 0, "seteuid(65534)");
    for _ in 0..2 {
        assert_eq!(open(&secret, libc::O_RDONLY, 0), -1);
        assert_eq!(errno(), libc::EACCES);
    }
    // SAFETY: as above, back to root.
    assert_eq!(unsafe { libc::seteuid(0) }, 0, "seteuid(0)");
    let d = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(open(&d, libc::O_WRONLY, 0), -1);
    assert_eq!(errno(), libc::EISDIR);
    if let Some(fifo) = arg(args, "--fifo") {
        let bytes = num("--fifo-bytes");
        let fifo = CString::new(fifo).unwrap();
        let fd = open(&fifo, libc::O_WRONLY, 0);
        assert!(fd >= 0, "opening the FIFO: errno {}", errno());
        let big = vec![0x33u8; bytes];
        // SAFETY: big holds bytes bytes.
        let n = unsafe { libc::write(fd, big.as_ptr().cast(), bytes) };
        assert_eq!(n, bytes as isize, "FIFO write");
        // SAFETY: fd is ours and open.
        assert_eq!(unsafe { libc::close(fd) }, 0);
    }
}
