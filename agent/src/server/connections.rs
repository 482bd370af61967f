//! Accepting connections, so that clients that never speak HTTP/2 cannot
//! hold the agent's file descriptors.
//!
//! Every listener (Unix socket or TCP) runs one accept loop, which:
//! - holds at most [`ConnectionLimits::max_connections`] connections at
//!   once: one slot per connection, from accept until the connection is
//!   dropped; beyond it a new connection is closed at once, counted, and
//!   logged at most once per [`LOG_EVERY`];
//! - gives each connection [`ConnectionLimits::preface_timeout`] to finish
//!   its TLS handshake (on a TLS listener) and then send the HTTP/2 client
//!   preface and its first SETTINGS frame; one that has not is closed (and
//!   counted, and logged the same way). Only then is it handed to hyper,
//!   with the bytes read so far replayed. Bytes that are not an HTTP/2
//!   preface close the connection at once, as hyper would;
//! - on an accept error that is not about one connection (EMFILE, ENFILE,
//!   ENOBUFS, ENOMEM...) logs it at most once per [`LOG_EVERY`] with a
//!   count, and backs off [`ACCEPT_BACKOFF`] before accepting again,
//!   instead of spinning on a listener that stays readable.
//!
//! Handshakes run as tasks of the loop (a `JoinSet`): when the server stops
//! accepting, the loop ends and drops them, and with them their sockets.

use super::authority::{FRAME_HEADER_LEN, MIN_MAX_FRAME_SIZE, PREFACE};
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::server::Connected;

/// Connections one listener holds at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Time a new connection gets to complete TLS (if any) and the HTTP/2
/// preface, unless configured otherwise.
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error such as EMFILE.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per kind of trouble per listener this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Connections past their preface waiting for the server to take them.
const HANDOFF_QUEUE: usize = 16;
const SETTINGS: u8 = 0x4;

/// What one listener allows its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once, from accept to close.
    pub max_connections: usize,
    /// Time to finish TLS and the HTTP/2 preface.
    pub preface_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            preface_timeout: DEFAULT_PREFACE_TIMEOUT,
        }
    }
}

/// A connection holding one of its listener's slots until it is dropped.
#[derive(Debug)]
pub struct Slot<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

/// A connection whose first bytes were already read (the preface); they
/// are read again first.
#[derive(Debug)]
pub struct Replay<T> {
    head: Vec<u8>,
    pos: usize,
    io: T,
}

impl<T> Replay<T> {
    pub fn new(head: Vec<u8>, io: T) -> Self {
        Self { head, pos: 0, io }
    }
}

/// Reads the HTTP/2 client preface: the 24-byte magic, then the frame
/// header and payload of the first frame, which must be SETTINGS. Returns
/// everything read, to be replayed. A connection that sends anything else,
/// or closes, is an error.
pub async fn read_preface<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Vec<u8>> {
    let not_http2 = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut head = Vec::with_capacity(PREFACE.len() + FRAME_HEADER_LEN + 64);
    let settings_at = PREFACE.len();
    let mut wanted = settings_at + FRAME_HEADER_LEN;
    while head.len() < wanted {
        let mut chunk = [0u8; 512];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the HTTP/2 preface",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        let magic = head.len().min(PREFACE.len());
        if head[..magic] != PREFACE[..magic] {
            return Err(not_http2("not an HTTP/2 client preface"));
        }
        if wanted == settings_at + FRAME_HEADER_LEN && head.len() >= wanted {
            let frame = &head[settings_at..];
            if frame[3] != SETTINGS {
                return Err(not_http2("the first HTTP/2 frame is not SETTINGS"));
            }
            let len =
                usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
            if len > MIN_MAX_FRAME_SIZE {
                return Err(not_http2("oversized SETTINGS frame"));
            }
            wanted += len;
        }
    }
    Ok(head)
}

/// Counts events and says when to log them: the first at once, then at
/// most one line per [`LOG_EVERY`] with the count since the last line.
#[derive(Debug, Default)]
struct RateLimited {
    count: u64,
    last: Option<Instant>,
}

impl RateLimited {
    /// One more; the count to log now, if it is time.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        self.flush()
    }

    /// What is left to log, if any.
    fn flush(&mut self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// Accept errors about one connection, which say nothing of the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// How a connection's handshake ended.
enum Handshake {
    /// Handed to the server.
    Served,
    /// No preface in time.
    TimedOut,
    /// Closed: TLS failed, not HTTP/2, or the client went away.
    Failed(io::Error),
}

struct Trouble {
    over_limit: RateLimited,
    timed_out: RateLimited,
    accept_failed: RateLimited,
}

struct AcceptLoop<S, P> {
    listener: S,
    listen: String,
    limits: ConnectionLimits,
    prepare: P,
}

/// The connections accepted from `listener` that completed `prepare`
/// (TLS, if any, and the preface) within the preface timeout, each holding
/// a slot; spawns the accept loop that feeds it. `listen` names the
/// listener in log lines. The loop ends when the stream is dropped.
pub fn incoming<S, IO, P, F, Out>(
    listener: S,
    listen: String,
    limits: ConnectionLimits,
    prepare: P,
) -> impl Stream<Item = Result<Out, io::Error>> + Send + 'static
where
    S: Stream<Item = io::Result<IO>> + Send + Unpin + 'static,
    IO: Send + 'static,
    P: Fn(Slot<IO>) -> F + Send + 'static,
    F: Future<Output = io::Result<Out>> + Send + 'static,
    Out: Send + 'static,
{
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
    let accept = AcceptLoop {
        listener,
        listen,
        limits,
        prepare,
    };
    tokio::spawn(accept.run(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

impl<S, IO, P, F, Out> AcceptLoop<S, P>
where
    S: Stream<Item = io::Result<IO>> + Send + Unpin + 'static,
    IO: Send + 'static,
    P: Fn(Slot<IO>) -> F + Send + 'static,
    F: Future<Output = io::Result<Out>> + Send + 'static,
    Out: Send + 'static,
{
    async fn run(mut self, tx: mpsc::Sender<Out>) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut handshakes = JoinSet::new();
        let mut trouble = Trouble {
            over_limit: RateLimited::default(),
            timed_out: RateLimited::default(),
            accept_failed: RateLimited::default(),
        };
        let mut flush = tokio::time::interval(LOG_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The server stopped accepting (shutdown): stop, and drop
                // the listener and every handshake in progress.
                () = tx.closed() => break,
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                    Ok(Handshake::Served) => {}
                    Ok(Handshake::TimedOut) => {
                        if let Some(n) = trouble.timed_out.hit() {
                            self.log_timed_out(n);
                        }
                    }
                    Ok(Handshake::Failed(error)) => {
                        tracing::debug!(listen = %self.listen, %error, "closed a connection before HTTP/2");
                    }
                    Err(e) => tracing::error!(listen = %self.listen, error = %e, "a connection handshake task panicked"),
                },
                _ = flush.tick() => {
                    if let Some(n) = trouble.over_limit.flush() {
                        self.log_over_limit(n);
                    }
                    if let Some(n) = trouble.timed_out.flush() {
                        self.log_timed_out(n);
                    }
                    if let Some(n) = trouble.accept_failed.flush() {
                        self.log_accept_failed(n, None);
                    }
                }
                accepted = self.listener.next() => match accepted {
                    None => break,
                    Some(Ok(io)) => match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let conn = Slot { io, _permit: permit };
                            let handshake = (self.prepare)(conn);
                            let timeout = self.limits.preface_timeout;
                            let tx = tx.clone();
                            handshakes.spawn(async move {
                                match tokio::time::timeout(timeout, handshake).await {
                                    Err(_) => Handshake::TimedOut,
                                    Ok(Err(e)) => Handshake::Failed(e),
                                    Ok(Ok(ready)) => {
                                        // Fails only at shutdown: the connection is dropped.
                                        let _ = tx.send(ready).await;
                                        Handshake::Served
                                    }
                                }
                            });
                        }
                        Err(_) => {
                            drop(io);
                            if let Some(n) = trouble.over_limit.hit() {
                                self.log_over_limit(n);
                            }
                        }
                    },
                    Some(Err(e)) if is_per_connection(&e) => {}
                    Some(Err(error)) => {
                        if let Some(n) = trouble.accept_failed.hit() {
                            self.log_accept_failed(n, Some(&error));
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
    }

    fn log_over_limit(&self, closed: u64) {
        tracing::warn!(listen = %self.listen, closed, max_connections = self.limits.max_connections,
            "connection limit reached: closed new connections at once (--max-connections)");
    }

    /// `error` is the one that triggered the line; a periodic flush has none.
    fn log_accept_failed(&self, failures: u64, error: Option<&io::Error>) {
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(listen = %self.listen, failures, error,
            "accepting connections failed (out of file descriptors?); backing off {ACCEPT_BACKOFF:?} each time");
    }

    fn log_timed_out(&self, closed: u64) {
        tracing::warn!(listen = %self.listen, closed, timeout = ?self.limits.preface_timeout,
            "closed connections that did not complete the HTTP/2 preface in time (--preface-timeout)");
    }
}

macro_rules! delegate_io {
    ($ty:ident, $field:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $ty<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }

        impl<T: Connected> Connected for $ty<T> {
            type ConnectInfo = T::ConnectInfo;

            fn connect_info(&self) -> Self::ConnectInfo {
                self.$field.connect_info()
            }
        }
    };
}

delegate_io!(Slot, io);
delegate_io!(Replay, io);

impl<T: AsyncRead + Unpin> AsyncRead for Slot<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.pos);
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.head.len() {
                this.head = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn settings(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0, 0, payload.len() as u8, SETTINGS, 0, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    async fn preface_of(input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for piece in input.chunks(chunk) {
                // The reader may stop early, closing its end.
                if client.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let result = read_preface(&mut server).await;
        drop(server);
        writer.await.unwrap();
        result
    }

    #[tokio::test]
    async fn reads_the_magic_and_the_first_settings_frame_whatever_the_reads() {
        let mut input = PREFACE.to_vec();
        input.extend(settings(&[0, 4, 0, 0, 0xff, 0xff]));
        let mut with_more = input.clone();
        with_more.extend(b"\0\0\0\x08");
        for chunk in [1, 5, 24, 33, 1000] {
            assert_eq!(
                preface_of(&input, chunk).await.unwrap(),
                input,
                "reads of {chunk}"
            );
            // What follows in the same read is kept for replay too.
            let head = preface_of(&with_more, chunk).await.unwrap();
            assert!(head.starts_with(&input), "reads of {chunk}");
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused_as_soon_as_it_shows() {
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let err = preface_of(http1, 1).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut ping_first = PREFACE.to_vec();
        ping_first.extend([0, 0, 8, 0x6, 0, 0, 0, 0, 0]);
        let err = preface_of(&ping_first, 7).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = preface_of(&PREFACE[..10], 3).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn replay_serves_the_head_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut replay = Replay::new(b"hello".to_vec(), server);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[test]
    fn rate_limited_logs_the_first_then_counts() {
        let mut r = RateLimited::default();
        assert_eq!(r.hit(), Some(1));
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        assert_eq!(r.flush(), Some(2));
        assert_eq!(r.flush(), None);
    }
}
