//! A workload whose syscalls the tests know exactly.
//!
//! `coral-workload [--name COMM] [--getppid N] [--close-fail M]
//!  [--file-io DIR --blocks N --block-size B [--fifo PATH --fifo-bytes F]]
//!  [--security DIR [--exec FILE]]`
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
//!
//! With `--security DIR` (mode 0755, holding `DIR/mnt`, a directory, and
//! `DIR/suid-true`, a setuid-root copy of true(1)), started as root, after
//! "go" it, in this order: loads a 2-instruction socket filter named
//! `coral_wl` with bpf(BPF_PROG_LOAD); drops CAP_NET_RAW from its effective
//! and permitted sets with capset; forks a child and PTRACE_ATTACHes to it
//! (then kills it); calls finit_module(-1, "", 0) (it fails); calls
//! setgroups(0), setresgid(65534, 65534, 65534), setresuid(65534, 65534,
//! 65534), then setuid(0) (EPERM), mount("none", DIR/mnt, "tmpfs") (EPERM)
//! and chroot("/") (EPERM). It prints one line per call that the tests
//! check ("capset OLD_EFF NEW_EFF OLD_PERM NEW_PERM", "ptrace CHILD", "NAME
//! RET ERRNO"), then `done`, and when stdin gets a line (or closes) it execs
//! `DIR/suid-true` as uid 65534: the exec makes its euid 0 (`--exec FILE`:
//! `DIR/FILE` instead).

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
    let security_dir = arg(&args, "--security").map(std::path::PathBuf::from);
    if let Some(dir) = &security_dir {
        for l in security(dir) {
            writeln!(out, "{l}").unwrap();
        }
    }
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
    if let Some(dir) = &security_dir {
        exec_setuid(&dir.join(arg(&args, "--exec").as_deref().unwrap_or("suid-true")));
    }
}

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 takes two (64 bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_RAW: u32 = 13;

fn caps() -> [CapData; 2] {
    let mut h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: h and d are the header and the two data structs version 3 reads and writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget");
    d
}

fn mask(d: &[CapData; 2], f: fn(&CapData) -> u32) -> u64 {
    u64::from(f(&d[0])) | u64::from(f(&d[1])) << 32
}

/// The security sequence of the module doc; one line per call.
fn security(dir: &std::path::Path) -> Vec<String> {
    use std::ffi::CString;
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut lines = Vec::new();

    // bpf(BPF_PROG_LOAD): r0 = 0; exit, as a socket filter.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes()); // insn_cnt
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..56].copy_from_slice(b"coral_wl"); // prog_name
    // SAFETY: attr is a zeroed union bpf_attr for BPF_PROG_LOAD whose
    // pointers (insns, license) outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
    assert!(fd >= 0, "bpf(BPF_PROG_LOAD): errno {}", errno());
    lines.push(format!("bpf {fd}"));
    // SAFETY: fd is the program's, ours.
    unsafe { libc::close(fd as i32) };

    // capset: CAP_NET_RAW out of effective and permitted.
    let before = caps();
    let mut after = before;
    after[0].effective &= !(1 << CAP_NET_RAW);
    after[0].permitted &= !(1 << CAP_NET_RAW);
    let mut h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: h and after are the header and the two data structs version 3 reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, after.as_ptr()) };
    assert_eq!(rc, 0, "capset: errno {}", errno());
    let now = caps();
    lines.push(format!(
        "capset {:#x} {:#x} {:#x} {:#x}",
        mask(&before, |d| d.effective),
        mask(&now, |d| d.effective),
        mask(&before, |d| d.permitted),
        mask(&now, |d| d.permitted)
    ));

    // ptrace: attach to a child of ours, wait for its stop, kill it.
    // SAFETY: the process is single-threaded; the child only calls pause.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments; the child waits to be killed.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: child is our own child; the null pointers are the unused addr and data.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            child,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    assert_eq!(rc, 0, "PTRACE_ATTACH: errno {}", errno());
    let mut status = 0;
    // SAFETY: child is ours; status is a valid int to write.
    unsafe { libc::waitpid(child, &mut status, 0) };
    // SAFETY: child is ours, stopped under us.
    unsafe { libc::kill(child, libc::SIGKILL) };
    // SAFETY: as above.
    unsafe { libc::waitpid(child, &mut status, 0) };
    lines.push(format!("ptrace {child}"));

    let result = |name: &str, rc: i64| format!("{name} {rc} {}", if rc < 0 { errno() } else { 0 });
    // SAFETY: fd -1 and an empty parameter string: no module can be read.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) };
    lines.push(result("finit_module", rc));

    // SAFETY: no groups: a null list of length 0.
    let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
    assert_eq!(rc, 0, "setgroups");
    // SAFETY: the three ids; the process drops root for good.
    let rc = unsafe { libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534) };
    assert_eq!(rc, 0, "setresgid");
    lines.push(result("setresgid", rc));
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
    assert_eq!(rc, 0, "setresuid");
    lines.push(result("setresuid", rc));
    // SAFETY: asking for root back: refused.
    let rc = unsafe { libc::syscall(libc::SYS_setuid, 0) };
    assert_eq!((rc, errno()), (-1, libc::EPERM), "setuid(0)");
    lines.push(result("setuid", rc));
    let target = CString::new(dir.join("mnt").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount,
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null::<libc::c_void>(),
        )
    };
    assert_eq!((rc, errno()), (-1, libc::EPERM), "mount");
    lines.push(result("mount", rc));
    // SAFETY: a NUL-terminated path; refused without CAP_SYS_CHROOT.
    let rc = unsafe { libc::syscall(libc::SYS_chroot, c"/".as_ptr()) };
    assert_eq!((rc, errno()), (-1, libc::EPERM), "chroot");
    lines.push(result("chroot", rc));
    lines
}

/// Becomes `file` (setuid root, or with file capabilities): only returns
/// if exec fails.
fn exec_setuid(file: &std::path::Path) {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(file).exec();
    panic!("exec {}: {err}", file.display());
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
