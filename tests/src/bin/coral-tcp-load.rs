//! Loopback TCP load for the tcp-metrics benchmark (`bench/tcp-metrics.sh`).
//!
//! ```text
//! coral-tcp-load conns [--secs S] [--clients N] [--size B]
//! coral-tcp-load bulk  [--secs S] [--chunk B]
//! ```
//!
//! `conns`: N client threads each open a connection to a local server, send B
//! bytes, read B bytes back and close, as fast as they can for S seconds; two
//! server threads accept, answer and close. Prints `conns <count> <per second>`.
//! Every connection is a full lifecycle (SYN, data, FIN both ways), the case
//! where a connection tracer does the most work per byte.
//!
//! `bulk`: one connection streams as fast as it can for S seconds. Prints
//! `bulk <bytes> <MB per second>`: the per-ACK hooks (tcp_probe) at work.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: bad value {v}"))
        })
}

fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn conns(args: &[String]) {
    let secs: f64 = arg(args, "--secs", 5.0);
    let clients: usize = arg(args, "--clients", 2);
    let size: usize = arg(args, "--size", 100);
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind"));
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..2 {
        let listener = Arc::clone(&listener);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; size];
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                if read_full(&mut s, &mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
                // The server closes first: TIME_WAIT stays on its side and
                // never holds back the clients' ephemeral ports.
            }
        });
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let req = vec![b'q'; size];
                let mut resp = vec![0u8; size];
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let mut s = match TcpStream::connect(addr) {
                        Ok(s) => s,
                        Err(e) => panic!("connect: {e}"),
                    };
                    s.write_all(&req).expect("request");
                    read_full(&mut s, &mut resp).expect("response");
                    let _ = s.shutdown(Shutdown::Write);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!("conns {n} {:.1}", n as f64 / elapsed);
}

fn bulk(args: &[String]) {
    let secs: f64 = arg(args, "--secs", 5.0);
    let chunk: usize = arg(args, "--chunk", 128 * 1024);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; chunk];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let data = vec![b'b'; chunk];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        s.write_all(&data).expect("write");
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let total = reader.join().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    println!("bulk {total} {:.1}", total as f64 / elapsed / 1e6);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("conns") => conns(&args),
        Some("bulk") => bulk(&args),
        _ => panic!("usage: coral-tcp-load conns|bulk [--secs S] ..."),
    }
}
