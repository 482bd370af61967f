//! TCP peers whose connections the tcp-metrics tests know exactly.
//!
//! ```text
//! coral-tcp-peer server --listen ADDR:PORT [--name COMM] [--conns K]
//!                       [--reply N1,N2,...] [--ping]
//! coral-tcp-peer client --connect ADDR:PORT [--name COMM] [--sizes N1,N2,...]
//!                       [--abort] [--cc ALGO]
//! ```
//!
//! The server prints `listening <port> <pid>`, accepts K connections one after
//! the other, reads each to EOF (or error), answers with its reply size, closes,
//! and prints `done <bytes received per connection>`. With `--ping` it first
//! reads one byte and answers one byte, so a client knows it was accepted.
//!
//! The client prints `ready <pid>` and waits for a line on stdin. Then, per
//! size, it connects, sends that many bytes, shuts its side down, reads to EOF
//! and closes; it prints `done lport:received,...`. With `--abort` it instead
//! pings once and closes with SO_LINGER 0 (an RST). With `--cc` it sets the
//! congestion control of its sockets (the lossy-path tests want cubic, which
//! fills a queue, rather than BBR). When the connect is refused it prints
//! `done refused`.
//!
//! Both name themselves (`--name`, the comm a collector reports) before any
//! socket exists, and exit when stdin closes.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn sizes(list: Option<String>) -> Vec<usize> {
    list.map(|l| {
        l.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("sizes are integers"))
            .collect()
    })
    .unwrap_or_default()
}

fn set_name(name: &str) {
    let c = std::ffi::CString::new(name).expect("name without NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
    assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
}

fn setsockopt<T>(s: &TcpStream, level: i32, opt: i32, value: &T) {
    // SAFETY: `value` points to a live T of the size passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {opt}): {}",
        std::io::Error::last_os_error()
    );
}

/// Reads until EOF or an error (an RST shows up as ECONNRESET): bytes read.
fn drain(s: &mut TcpStream) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}

fn send(s: &mut TcpStream, n: usize) {
    let chunk = vec![b'c'; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        s.write_all(&chunk[..k]).expect("write");
        left -= k;
    }
}

fn ping(s: &mut TcpStream) {
    s.write_all(b"p").expect("ping");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("pong");
}

fn wait_for_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").unwrap();
    out.flush().unwrap();
}

fn server(args: &[String]) {
    let listener =
        TcpListener::bind(arg(args, "--listen").expect("--listen ADDR:PORT")).expect("bind");
    let conns: usize = arg(args, "--conns").map_or(1, |v| v.parse().expect("--conns K"));
    let reply = sizes(arg(args, "--reply"));
    let ping_first = args.iter().any(|a| a == "--ping");
    say(&format!(
        "listening {} {}",
        listener.local_addr().unwrap().port(),
        std::process::id()
    ));
    let mut received = Vec::with_capacity(conns);
    for i in 0..conns {
        let (mut s, _) = listener.accept().expect("accept");
        if ping_first {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("ping");
            s.write_all(b"P").expect("pong");
        }
        received.push(drain(&mut s).to_string());
        send(&mut s, reply.get(i).copied().unwrap_or(0));
        drop(s);
    }
    say(&format!("done {}", received.join(",")));
    wait_for_line();
}

fn client(args: &[String]) {
    let target = arg(args, "--connect").expect("--connect ADDR:PORT");
    let abort = args.iter().any(|a| a == "--abort");
    let cc = arg(args, "--cc");
    let mut sizes = sizes(arg(args, "--sizes"));
    if sizes.is_empty() {
        sizes.push(0);
    }
    say(&format!("ready {}", std::process::id()));
    wait_for_line();
    let mut report = Vec::new();
    for n in sizes {
        let mut s = match TcpStream::connect(&target) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                say("done refused");
                wait_for_line();
                return;
            }
            Err(e) => panic!("connect {target}: {e}"),
        };
        if let Some(cc) = &cc {
            let name = std::ffi::CString::new(cc.as_str()).unwrap();
            let bytes = name.as_bytes();
            let mut buf = [0u8; 16];
            buf[..bytes.len()].copy_from_slice(bytes);
            setsockopt(&s, libc::IPPROTO_TCP, libc::TCP_CONGESTION, &buf);
        }
        let lport = s.local_addr().unwrap().port();
        if abort {
            ping(&mut s);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            setsockopt(&s, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
            drop(s);
            report.push(format!("{lport}:0"));
            continue;
        }
        send(&mut s, n);
        s.shutdown(Shutdown::Write).expect("shutdown");
        let got = drain(&mut s);
        drop(s);
        report.push(format!("{lport}:{got}"));
    }
    say(&format!("done {}", report.join(",")));
    wait_for_line();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = arg(&args, "--name") {
        set_name(&name);
    }
    match args.get(1).map(String::as_str) {
        Some("server") => server(&args),
        Some("client") => client(&args),
        _ => panic!("usage: coral-tcp-peer server|client ..."),
    }
}
