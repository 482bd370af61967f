//! The Linux implementations of the `coral-bench` subcommands.

use crate::{AttachArgs, DnsLoopArgs, HttpLoopArgs, LoopArgs, LoopSyscall, SpawnArgs};
use anyhow::{Context, bail, ensure};
use aya::programs::Program;
use aya::{Btf, Ebpf, EbpfLoader};
use std::io::Write;
use std::time::Instant;

/// `loop`: `iters` raw getppid (or write) calls, `reps` times, pinned;
/// prints the best.
///
/// Time is the thread's CPU time (CLOCK_THREAD_CPUTIME_ID) unless `--wall`:
/// BPF programs on the syscall hooks run in our thread, so they are counted,
/// while time we spend preempted by other work on a shared machine is not.
pub fn run_loop(args: &LoopArgs) -> anyhow::Result<()> {
    ensure!(args.iters > 0, "--iters must be positive");
    ensure!(args.reps > 0, "--reps must be positive");
    let cpu = match args.cpu {
        Some(cpu) => cpu,
        None => *allowed_cpus()?
            .last()
            .context("sched_getaffinity returned no CPU")?,
    };
    pin_to(cpu)?;
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    // The file of the open and pread loops, removed when the loop ends.
    let file = LoopFile::create()?;
    let path = std::ffi::CString::new(file.0.as_os_str().as_encoded_bytes())
        .context("the loops' file path")?;
    let read_fd = std::fs::File::open(&file.0).context("opening the loops' file")?;
    let calls = |iters: u64| match args.syscall {
        LoopSyscall::Getppid => getppid_loop(iters),
        LoopSyscall::Write => write_loop(std::os::fd::AsRawFd::as_raw_fd(&devnull), iters),
        LoopSyscall::Setuid => setuid_loop(iters),
        LoopSyscall::Capset => capset_loop(iters),
        LoopSyscall::Open => open_loop(&path, iters),
        LoopSyscall::Pread => pread_loop(std::os::fd::AsRawFd::as_raw_fd(&read_fd), iters),
    };

    // Warm up: fault in the code and let the CPU settle on its clock.
    calls(args.iters / 10 + 1);
    let mut best = f64::INFINITY;
    let mut all = Vec::with_capacity(args.reps as usize);
    for _ in 0..args.reps {
        let (wall0, cpu0) = (Instant::now(), thread_cpu_ns()?);
        calls(args.iters);
        let (wall, cpu_ns) = (wall0.elapsed().as_nanos(), thread_cpu_ns()? - cpu0);
        let per_call = |ns: u128| ns as f64 / args.iters as f64;
        let (cpu_per, wall_per) = (per_call(cpu_ns), per_call(wall));
        all.push(format!("{cpu_per:.1}/{wall_per:.1}"));
        best = best.min(if args.wall { wall_per } else { cpu_per });
    }
    println!(
        "{best:.1} ns/call ({} time, best of {} x {} {:?} on cpu {cpu}; cpu/wall ns per run: {})",
        if args.wall { "wall" } else { "thread CPU" },
        args.reps,
        args.iters,
        args.syscall,
        all.join(" ")
    );
    Ok(())
}

/// User + system CPU time, in ns, of this process (`RUSAGE_SELF`) or of its
/// children that were waited for (`RUSAGE_CHILDREN`).
fn rusage_ns(who: libc::c_int) -> anyhow::Result<u128> {
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; `who` is RUSAGE_SELF or
    // RUSAGE_CHILDREN.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    let tv = |t: libc::timeval| t.tv_sec as u128 * 1_000_000_000 + t.tv_usec as u128 * 1000;
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// CPU time of this process and its reaped children so far, in ns.
fn family_cpu_ns() -> anyhow::Result<u128> {
    Ok(rusage_ns(libc::RUSAGE_SELF)? + rusage_ns(libc::RUSAGE_CHILDREN)?)
}

/// `spawn`: runs `program` `iters` times in a row, `reps` times; prints the
/// best CPU time per run (ours, the fork side, plus the children's: exec
/// and exit, where the hooks of an exec tracer run), and wall time. CPU time
/// leaves out waiting for a CPU on a shared machine; a tracer's own process
/// is not in it (the benchmark script measures that separately). Not
/// pinned: the child may run on another CPU, as it would.
pub fn spawn(args: &SpawnArgs) -> anyhow::Result<()> {
    ensure!(args.iters > 0, "--iters must be positive");
    ensure!(args.reps > 0, "--reps must be positive");
    let run = |n: u64| -> anyhow::Result<()> {
        for _ in 0..n {
            let status = std::process::Command::new(&args.program)
                .status()
                .with_context(|| format!("running {}", args.program.display()))?;
            ensure!(
                status.success(),
                "{} exited {status}",
                args.program.display()
            );
        }
        Ok(())
    };
    run(args.iters / 10 + 1)?;
    let mut best = f64::INFINITY;
    let mut all = Vec::with_capacity(args.reps as usize);
    for _ in 0..args.reps {
        let (t0, cpu0) = (Instant::now(), family_cpu_ns()?);
        run(args.iters)?;
        let per = |ns: u128| ns as f64 / args.iters as f64;
        let (cpu, wall) = (per(family_cpu_ns()? - cpu0), per(t0.elapsed().as_nanos()));
        all.push(format!("{cpu:.0}/{wall:.0}"));
        best = best.min(cpu);
    }
    println!(
        "{best:.0} ns/run (CPU of parent + children, best of {} x {} runs of {}; cpu/wall ns per measurement: {})",
        args.reps,
        args.iters,
        args.program.display(),
        all.join(" ")
    );
    Ok(())
}

/// This thread's CPU time in ns.
fn thread_cpu_ns() -> anyhow::Result<u128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128)
}

#[inline(never)]
fn getppid_loop(iters: u64) {
    for _ in 0..iters {
        // SAFETY: getppid takes no arguments, touches no memory of ours and
        // cannot fail.
        let r = unsafe { libc::syscall(libc::SYS_getppid) };
        std::hint::black_box(r);
    }
}

/// The request `http-loop` serves: wrk's, byte for byte.
const HTTP_REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18980\r\n\r\n";
/// nginx's headers for a 612-byte file.
const HTTP_HEADER: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Mon, 01 Dec 2026 21:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 612\r\n\
Last-Modified: Mon, 01 Dec 2026 21:00:00 GMT\r\nConnection: keep-alive\r\n\
ETag: \"692e0000-264\"\r\nAccept-Ranges: bytes\r\n\r\n";
const HTTP_BODY_LEN: usize = 612;
/// Requests the client writes at once (then it reads their responses).
const HTTP_BATCH: usize = 32;

/// `http-loop`: see the command's help.
pub fn http_loop(args: &HttpLoopArgs) -> anyhow::Result<()> {
    use std::ffi::CString;
    use std::io::BufRead;

    ensure!(args.iters > 0, "--iters must be positive");
    ensure!(args.reps > 0, "--reps must be positive");
    let cpus = allowed_cpus()?;
    let server_cpu = match args.cpu {
        Some(cpu) => cpu,
        None => *cpus.last().context("sched_getaffinity returned no CPU")?,
    };
    let client_cpu = cpus
        .iter()
        .copied()
        .find(|&c| c != server_cpu)
        .unwrap_or(server_cpu);
    let dir = std::env::temp_dir().join(format!("coral-http-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the file's directory")?;
    let file = dir.join("index.html");
    std::fs::write(&file, [b'x'; HTTP_BODY_LEN]).context("writing the file")?;
    let path = CString::new(file.to_str().context("temp dir path")?)?;

    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two fds into the 2-element array we pass.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("socketpair");
    }
    let (server, client) = (fds[0], fds[1]);
    // SAFETY: fork in a single-threaded process; the child only makes
    // syscalls on fds it inherited and then _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if child == 0 {
        // SAFETY: closing the server's end in the child; PR_SET_PDEATHSIG
        // takes a signal number: the client dies with the server, however
        // the server ends.
        unsafe {
            libc::close(server);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let _ = pin_to(client_cpu);
        http_client(client);
    }
    // SAFETY: closing the client's end in the parent.
    unsafe { libc::close(client) };
    pin_to(server_cpu)?;
    if args.wait {
        println!("ready {}", std::process::id());
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }

    let mut buf = [0u8; 1024];
    let mut body = [0u8; HTTP_BODY_LEN];
    let mut serve = |n: u64| -> anyhow::Result<()> {
        for _ in 0..n {
            http_one(server, &path, &mut buf, &mut body)?;
        }
        Ok(())
    };
    serve(args.iters / 10 + 1)?;
    let mut best = f64::INFINITY;
    let mut all = Vec::with_capacity(args.reps as usize);
    for _ in 0..args.reps {
        let cpu0 = thread_cpu_ns()?;
        serve(args.iters)?;
        let per = (thread_cpu_ns()? - cpu0) as f64 / args.iters as f64;
        all.push(format!("{per:.0}"));
        best = best.min(per);
    }
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{best:.1} ns/req (server thread CPU time, best of {} x {} requests on cpu {server_cpu}, client on cpu {client_cpu}; ns per run: {})",
        args.reps,
        args.iters,
        all.join(" ")
    );
    Ok(())
}

/// One request as nginx serves it: recv the request, open, fstat and read
/// the file, writev headers + body, close the file.
fn http_one(
    sock: i32,
    path: &std::ffi::CStr,
    buf: &mut [u8; 1024],
    body: &mut [u8; HTTP_BODY_LEN],
) -> anyhow::Result<()> {
    let mut got = 0;
    while got < HTTP_REQUEST.len() {
        // SAFETY: recvfrom writes at most len - got bytes into buf[got..].
        let n = unsafe {
            libc::recvfrom(
                sock,
                buf[got..].as_mut_ptr().cast(),
                HTTP_REQUEST.len() - got,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        ensure!(n > 0, "recvfrom: {}", std::io::Error::last_os_error());
        got += n as usize;
    }
    // SAFETY: a NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    ensure!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    // SAFETY: fstat fills the stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on the fd just opened.
    unsafe { libc::fstat(fd, &mut st) };
    // SAFETY: pread writes at most body.len() bytes into body.
    unsafe { libc::pread(fd, body.as_mut_ptr().cast(), body.len(), 0) };
    let iov = [
        libc::iovec {
            iov_base: HTTP_HEADER.as_ptr() as *mut _,
            iov_len: HTTP_HEADER.len(),
        },
        libc::iovec {
            iov_base: body.as_mut_ptr().cast(),
            iov_len: body.len(),
        },
    ];
    // SAFETY: writev reads the two live buffers the iovecs describe.
    let n = unsafe { libc::writev(sock, iov.as_ptr(), 2) };
    ensure!(
        n as usize == HTTP_HEADER.len() + HTTP_BODY_LEN,
        "writev: {n}"
    );
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    Ok(())
}

/// The client: writes HTTP_BATCH requests at once, waits (sleeping, not in
/// read) until all their responses are there, reads them, again, until the
/// server goes away; then exits. A client blocked in read would be woken
/// by every response: a context switch or an IPI per request, which on a VM
/// costs more than the request and varies more than what is measured.
fn http_client(sock: i32) -> ! {
    let batch: Vec<u8> = HTTP_REQUEST.repeat(HTTP_BATCH);
    let want = HTTP_BATCH * (HTTP_HEADER.len() + HTTP_BODY_LEN);
    let mut buf = vec![0u8; want];
    let nap = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000,
    };
    loop {
        // SAFETY: write reads the live batch buffer.
        let n = unsafe { libc::write(sock, batch.as_ptr().cast(), batch.len()) };
        if n != batch.len() as isize {
            break;
        }
        loop {
            let mut avail: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            if unsafe { libc::ioctl(sock, libc::FIONREAD, &mut avail) } != 0 {
                // SAFETY: _exit never returns; nothing to flush in the child.
                unsafe { libc::_exit(0) };
            }
            if avail as usize >= want {
                break;
            }
            // SAFETY: nanosleep reads the live timespec.
            unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
        }
        let mut got = 0;
        while got < want {
            // SAFETY: read writes at most want - got bytes into buf[got..].
            let n = unsafe { libc::read(sock, buf[got..].as_mut_ptr().cast(), want - got) };
            if n <= 0 {
                // SAFETY: _exit never returns; nothing to flush in the child.
                unsafe { libc::_exit(0) };
            }
            got += n as usize;
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// A 4 KiB file in the temporary directory, removed on drop.
struct LoopFile(std::path::PathBuf);

impl LoopFile {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("coral-bench-file-{}", std::process::id()));
        std::fs::write(&path, [7u8; 4096])
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for LoopFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// openat + close of `path`, read-only.
#[inline(never)]
fn open_loop(path: &std::ffi::CStr, iters: u64) {
    for _ in 0..iters {
        // SAFETY: path is a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0, "openat of the loops' file failed");
        // SAFETY: fd was just opened by us and is closed once.
        unsafe { libc::close(fd) };
    }
}

/// pread64 of 4 KiB at offset 0 of `fd` (in the page cache after the first).
#[inline(never)]
fn pread_loop(fd: i32, iters: u64) {
    let mut buf = [0u8; 4096];
    for _ in 0..iters {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        std::hint::black_box(r);
    }
}

/// setuid(getuid()): allowed for any uid, and a full credential change in
/// the kernel (prepare_creds, commit_creds) every time.
#[inline(never)]
fn setuid_loop(iters: u64) {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    for _ in 0..iters {
        // SAFETY: setting the uid it already has changes nothing.
        let r = unsafe { libc::syscall(libc::SYS_setuid, uid) };
        std::hint::black_box(r);
    }
}

/// capset with the sets capget returns: allowed, and a credential change.
#[inline(never)]
fn capset_loop(iters: u64) {
    // struct __user_cap_header_struct (version 3) and two data structs.
    let mut header = [0x2008_0522u32, 0];
    let mut data = [0u32; 6];
    // SAFETY: header and data are what capget version 3 reads and writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget");
    for _ in 0..iters {
        // SAFETY: the same sets again: allowed, nothing changes.
        let r = unsafe { libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) };
        std::hint::black_box(r);
    }
}

/// 64-byte writes to `fd` (/dev/null): long enough that a program looking
/// at written bytes gets past its length check.
#[inline(never)]
fn write_loop(fd: i32, iters: u64) {
    let buf = [b'x'; 64];
    for _ in 0..iters {
        // SAFETY: write(2) reads 64 bytes from a live 64-byte buffer; fd is
        // /dev/null, open for the whole loop.
        let r = unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) };
        std::hint::black_box(r);
    }
}

/// The CPUs this thread may run on, ascending.
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    let max = 8 * size_of::<libc::cpu_set_t>();
    Ok((0..max)
        // SAFETY: CPU_ISSET only reads the set, and `cpu` is below its size.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

fn pin_to(cpu: usize) -> anyhow::Result<()> {
    ensure!(
        cpu < 8 * size_of::<libc::cpu_set_t>(),
        "cpu {cpu} out of range"
    );
    // SAFETY: as above, all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to fit in the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size we pass; pid 0 is us.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sched_setaffinity to cpu {cpu}"));
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT (so they wait for [`wait_for_signal`] instead of
/// killing us) and returns the set.
fn block_stop_signals() -> anyhow::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    // SAFETY: `set` is initialised; we do not ask for the old mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("pthread_sigmask");
    }
    Ok(set)
}

fn wait_for_signal(set: &libc::sigset_t) -> anyhow::Result<i32> {
    let mut sig = 0;
    // SAFETY: `set` is an initialised sigset_t whose signals are blocked;
    // `sig` is a valid place for the result.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("sigwait");
    }
    Ok(sig)
}

/// Prints "attached", then holds `bpf` (and so its links) until told to stop.
fn hold(bpf: Ebpf, set: &libc::sigset_t) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "attached")?;
    out.flush()?;
    drop(out);
    let sig = wait_for_signal(set)?;
    eprintln!("signal {sig}: detaching");
    drop(bpf);
    Ok(())
}

/// Takes every ring buffer out of `bpf` and drains them on a thread every
/// 5 ms, as the agent does every 100 ms: a ring nobody reads fills up, and
/// from then on a program measures the cost of failed reservations.
/// Dropping the returned guard stops the thread.
fn drain_rings(bpf: &mut Ebpf) -> anyhow::Result<Option<RingDrainer>> {
    use aya::maps::RingBuf;
    let names: Vec<String> = bpf
        .maps()
        .filter(|(_, m)| matches!(m, aya::maps::Map::RingBuf(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let mut rings = Vec::new();
    for name in &names {
        let map = bpf.take_map(name).context("ring buffer vanished")?;
        rings.push(RingBuf::try_from(map).with_context(|| format!("ring buffer {name}"))?);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for ring in &mut rings {
                while ring.next().is_some() {}
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    Ok(Some(RingDrainer {
        stop,
        thread: Some(thread),
    }))
}

struct RingDrainer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RingDrainer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loads program `name` and attaches it to tracepoint `hook`: as a raw
/// tracepoint (`raw_tp/`) or a BTF-typed one (`tp_btf/`), whichever it is.
fn load_attach(bpf: &mut Ebpf, name: &str, hook: &str) -> anyhow::Result<()> {
    let program = bpf
        .program_mut(name)
        .with_context(|| format!("program {name} not in the object"))?;
    match program {
        Program::RawTracePoint(p) => {
            p.load().with_context(|| format!("loading {name}"))?;
            p.attach(hook)
                .with_context(|| format!("attaching {name} to raw tracepoint {hook}"))?;
        }
        Program::BtfTracePoint(p) => {
            let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
            p.load(hook, &btf)
                .with_context(|| format!("loading {name} for tp_btf/{hook}"))?;
            p.attach()
                .with_context(|| format!("attaching {name} to tp_btf/{hook}"))?;
        }
        _ => bail!("program {name} is neither raw_tp nor tp_btf"),
    }
    Ok(())
}

/// `floor`: the empty programs of `bench_floor.bpf.c`.
pub fn floor() -> anyhow::Result<()> {
    let set = block_stop_signals()?;
    let mut bpf = EbpfLoader::new()
        .load(coral_ebpf_programs::bench_floor::OBJECT)
        .context("loading bench_floor")?;
    load_attach(&mut bpf, "bench_floor_enter", "sys_enter")?;
    load_attach(&mut bpf, "bench_floor_exit", "sys_exit")?;
    hold(bpf, &set)
}

fn split_pair<'a>(s: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once('=')
        .with_context(|| format!("{what}: expected NAME=VALUE, got {s:?}"))
}

/// `attach`: any object's raw tracepoint programs (scratch variants).
pub fn attach(args: &AttachArgs) -> anyhow::Result<()> {
    let set = block_stop_signals()?;
    let data = std::fs::read(&args.object)
        .with_context(|| format!("reading {}", args.object.display()))?;

    let mut u8s = Vec::new();
    for s in &args.set_u8 {
        let (name, value) = split_pair(s, "--set-u8")?;
        u8s.push((name, value.parse::<u8>().context("--set-u8 value")?));
    }
    let mut u32s = Vec::new();
    for s in &args.set_u32 {
        let (name, value) = split_pair(s, "--set-u32")?;
        u32s.push((name, value.parse::<u32>().context("--set-u32 value")?));
    }
    let mut sizes = Vec::new();
    for s in &args.max_entries {
        let (name, value) = split_pair(s, "--max-entries")?;
        sizes.push((name, value.parse::<u32>().context("--max-entries value")?));
    }
    const MAX_PIDS: usize = coral_ebpf_programs::filter::MAX_PIDS;
    ensure!(args.pids.len() <= MAX_PIDS, "at most {MAX_PIDS} --pid");
    let mut pids = [0u32; MAX_PIDS];
    pids[..args.pids.len()].copy_from_slice(&args.pids);
    let npids = args.pids.len() as u32;
    let me = std::process::id();

    let mut loader = EbpfLoader::new();
    // Task storage and friends have no aya type; the kernel side is enough.
    loader.allow_unsupported_maps();
    // Like the agent: never trace ourselves.
    loader.override_global("ignore_tgid", &me, false);
    if npids > 0 {
        loader
            .override_global("filter_pids", &pids, true)
            .override_global("filter_npids", &npids, true);
    }
    for (name, value) in &u8s {
        loader.override_global(name, value, true);
    }
    for (name, value) in &u32s {
        loader.override_global(name, value, true);
    }
    for (name, size) in &sizes {
        loader.map_max_entries(name, *size);
    }
    let mut bpf = loader
        .load(&data)
        .with_context(|| format!("loading {}", args.object.display()))?;

    let mut targets = Vec::new();
    if args.progs.is_empty() {
        for (name, program) in bpf.programs() {
            if !matches!(
                program,
                Program::RawTracePoint(_) | Program::BtfTracePoint(_)
            ) {
                continue;
            }
            let hook = if name.contains("enter") {
                "sys_enter"
            } else if name.contains("exit") {
                "sys_exit"
            } else {
                bail!("cannot guess the tracepoint of {name}: give --prog {name}=TRACEPOINT");
            };
            targets.push((name.to_string(), hook.to_string()));
        }
    } else {
        for s in &args.progs {
            let (name, hook) = split_pair(s, "--prog")?;
            targets.push((name.to_string(), hook.to_string()));
        }
    }
    ensure!(!targets.is_empty(), "no raw_tp or tp_btf program to attach");
    for (name, hook) in &targets {
        load_attach(&mut bpf, name, hook)?;
        eprintln!("{name} attached to {hook}");
    }
    let drainer = drain_rings(&mut bpf)?;
    hold(bpf, &set)?;
    drop(drainer);
    Ok(())
}

/// `dns-loop`: one A query at a time over a connected UDP socket, `iters`
/// per run, `reps` runs; prints the best run's wall-clock ns per query, the
/// queries that got no answer within a second (then resent) and the runs.
pub fn dns_loop(args: &DnsLoopArgs) -> anyhow::Result<()> {
    use std::io::BufRead;

    ensure!(args.iters > 0, "--iters must be positive");
    ensure!(args.reps > 0, "--reps must be positive");
    let socket = std::net::UdpSocket::bind(("127.0.0.1", 0)).context("binding the UDP socket")?;
    socket
        .connect(args.server)
        .context("connecting to the server")?;
    socket.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    let mut query = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in args.name.split('.') {
        query.push(u8::try_from(label.len()).context("a label longer than 255")?);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if args.wait {
        println!("ready {}", std::process::id());
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }
    let server_clock = match args.server_pid {
        Some(pid) => {
            let mut clock: libc::clockid_t = 0;
            // SAFETY: clock_getcpuclockid writes one clockid_t into `clock`.
            let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
            ensure!(rc == 0, "clock_getcpuclockid({pid}): errno {rc}");
            Some(clock)
        }
        None => None,
    };
    let cpu_ns = || -> u64 {
        let mut total = cpu_clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        if let Some(c) = server_clock {
            total += cpu_clock_ns(c);
        }
        total
    };
    let mut answer = [0u8; 1024];
    let (mut best_cpu, mut best_wall) = (f64::MAX, f64::MAX);
    let mut lost = 0u64;
    let mut id = 0u16;
    for _ in 0..args.reps {
        let (start, cpu0) = (Instant::now(), cpu_ns());
        for _ in 0..args.iters {
            loop {
                id = id.wrapping_add(1);
                query[..2].copy_from_slice(&id.to_be_bytes());
                socket.send(&query).context("send")?;
                match socket.recv(&mut answer) {
                    Ok(n) if n >= 2 && answer[..2] == id.to_be_bytes() => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => lost += 1,
                    Err(e) => return Err(e).context("recv"),
                }
            }
        }
        let n = args.iters as f64;
        best_wall = best_wall.min(start.elapsed().as_nanos() as f64 / n);
        best_cpu = best_cpu.min(cpu_ns().saturating_sub(cpu0) as f64 / n);
    }
    println!(
        "{best_cpu:.0} ns/query CPU ({}), {best_wall:.0} ns/query wall, {lost} unanswered and resent, best of {}",
        if server_clock.is_some() {
            "client + server"
        } else {
            "client"
        },
        args.reps
    );
    Ok(())
}

fn cpu_clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
