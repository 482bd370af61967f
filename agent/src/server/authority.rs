//! Lets stock gRPC C-core clients (Python `grpcio`, C++, Ruby, PHP) use the
//! Unix socket unchanged.
//!
//! C-core sends the percent-encoded socket path as `:authority` (for
//! `unix:///run/coral/agent.sock`, `run%2Fcoral%2Fagent.sock`; upstream
//! grpc/grpc#38142). h2 parses `:authority` as a URI authority, finds it
//! malformed and resets every stream with `PROTOCOL_ERROR`; it has no option
//! to relax that (hyperium/h2#487). An authority means nothing on a Unix
//! socket, so [`AuthorityFix`], placed between the accepted socket and
//! hyper, replaces an `:authority` that h2 would refuse with `localhost`.
//!
//! How, without desynchronising HPACK: the client compresses its header
//! blocks against a dynamic table that it and the server's decoder keep in
//! step. The layer decodes every client header block (HEADERS plus its
//! CONTINUATION frames) with its own decoder, which therefore tracks the
//! client's table exactly (insertions, evictions, size updates), and
//! re-encodes **every** block with each field a literal without indexing.
//! hyper's decoder thus only ever sees literals: its dynamic table stays empty
//! and can never disagree with anything. Padding is dropped (it carries
//! nothing); priority fields are kept; a block larger than one frame after
//! re-encoding is split into CONTINUATION frames of at most 16 KiB, the frame
//! size every HTTP/2 peer must accept. All other frames, and everything the
//! server sends, pass through untouched.
//!
//! It relies on the server never announcing a `SETTINGS_HEADER_TABLE_SIZE`
//! (tonic's server does not), so the client's table is bounded by the
//! protocol default, 4096 bytes, and hyper's decoder never expects a size
//! update. A header block the layer cannot decode, or one larger than
//! [`MAX_BLOCK_BYTES`], closes the connection (hyper would have closed it
//! with a `COMPRESSION_ERROR` or refused the call).

use super::listen::MAX_HEADER_BYTES;
use loona_hpack::decoder::DecoderError;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: length (24 bits), type, flags, stream id.
pub const FRAME_HEADER_LEN: usize = 9;
/// The frame payload size every peer accepts (SETTINGS_MAX_FRAME_SIZE cannot
/// be lower); re-encoded header blocks are cut to it.
pub const MIN_MAX_FRAME_SIZE: usize = 16_384;
/// Largest header block the layer takes, encoded (all its frames) and
/// decoded (name + value + 32 per field, as HTTP/2 counts a header list).
/// Four times what hyper accepts, so that hyper, not this layer, refuses
/// (and answers) a request near its own limit.
pub const MAX_BLOCK_BYTES: usize = 4 * MAX_HEADER_BYTES as usize;
/// The client's table size: the protocol default, as the server never
/// announces another.
const HEADER_TABLE_SIZE: usize = 4096;
/// What a malformed `:authority` becomes.
const REPLACEMENT: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Why the layer closed a connection: the client broke HTTP/2 framing or
/// HPACK, or sent a header block too large to rewrite.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The header block does not decode (RFC 7541 calls this a
    /// COMPRESSION_ERROR).
    #[error("undecodable header block on stream {stream}: {source}")]
    Hpack {
        stream: u32,
        #[source]
        source: DecoderError,
    },
    /// The block, encoded or decoded, is over [`MAX_BLOCK_BYTES`].
    #[error("header block on stream {stream} is over {MAX_BLOCK_BYTES} bytes")]
    TooLarge { stream: u32 },
    /// A frame other than the block's CONTINUATION arrived mid-block.
    #[error("frame type {frame_type} on stream {stream} inside the header block of stream {open}")]
    Interleaved {
        frame_type: u8,
        stream: u32,
        open: u32,
    },
    /// A CONTINUATION frame with no header block open.
    #[error("CONTINUATION frame on stream {stream} without a HEADERS frame")]
    OrphanContinuation { stream: u32 },
    /// The padding or priority fields do not fit in the HEADERS frame.
    #[error("HEADERS frame on stream {stream} is shorter than its padding and priority fields")]
    Truncated { stream: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface matched so far.
    Preface(usize),
    /// At a frame boundary.
    Frames,
    /// Inside the payload of a frame that passes through: this many bytes left.
    Payload(usize),
    /// Not HTTP/2 after all: everything passes through and hyper refuses it.
    Raw,
}

/// A header block whose HEADERS frame came without END_HEADERS.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server byte stream rewriter: bytes in, bytes out, with
/// every header block re-encoded. Independent of any I/O, so it can be fed
/// any split of the input.
pub struct Rewriter {
    decoder: loona_hpack::Decoder<'static>,
    state: State,
    /// Input not yet consumed: at most one frame header, or one HEADERS or
    /// CONTINUATION frame (bounded by [`MAX_BLOCK_BYTES`]).
    pending: Vec<u8>,
    open: Option<OpenBlock>,
    /// `:authority` values replaced on this connection.
    replaced: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            decoder,
            state: State::Preface(0),
            pending: Vec::new(),
            open: None,
            replaced: 0,
        }
    }
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("state", &self.state)
            .field("pending", &self.pending.len())
            .field("open", &self.open)
            .field("replaced", &self.replaced)
            .finish()
    }
}

/// Whether h2 accepts `value` as `:authority` (it parses it with this very
/// function).
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn frame_header(out: &mut Vec<u8>, len: usize, frame_type: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).expect("frame payloads are cut to 16 KiB");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(frame_type);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// A string literal, not Huffman-coded (RFC 7541 section 5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(s);
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 section
/// 6.2.2): the decoder adds nothing to its table.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    string(out, name);
    string(out, value);
}

impl Rewriter {
    /// How many `:authority` values this connection had replaced.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Feeds the next bytes the client sent; appends what hyper should see
    /// to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        // Fast path: nothing buffered, so the input is read in place.
        if self.pending.is_empty() {
            let used = self.consume(input, out)?;
            self.pending.extend_from_slice(&input[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(input);
            let used = self.consume(&buf, out)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// Consumes whole units (preface bytes, frame headers, payload bytes,
    /// whole header frames) from `buf`; returns how many bytes it used.
    fn consume(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, RewriteError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Raw => {
                    out.extend_from_slice(rest);
                    return Ok(buf.len());
                }
                State::Preface(matched) => {
                    let n = rest.len().min(PREFACE.len() - matched);
                    if rest[..n] != PREFACE[matched..matched + n] {
                        self.state = State::Raw;
                        continue;
                    }
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    if matched + n < PREFACE.len() {
                        self.state = State::Preface(matched + n);
                        return Ok(pos);
                    }
                    self.state = State::Frames;
                }
                State::Payload(left) => {
                    let n = rest.len().min(left);
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    if n < left {
                        self.state = State::Payload(left - n);
                        return Ok(pos);
                    }
                    self.state = State::Frames;
                }
                State::Frames => {
                    if rest.len() < FRAME_HEADER_LEN {
                        return Ok(pos);
                    }
                    let len = usize::from(rest[0]) << 16
                        | usize::from(rest[1]) << 8
                        | usize::from(rest[2]);
                    let (frame_type, flags) = (rest[3], rest[4]);
                    let stream =
                        u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
                    if frame_type == HEADERS || frame_type == CONTINUATION {
                        if len > MAX_BLOCK_BYTES {
                            return Err(RewriteError::TooLarge { stream });
                        }
                        if rest.len() < FRAME_HEADER_LEN + len {
                            return Ok(pos);
                        }
                        let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
                        self.header_frame(frame_type, flags, stream, payload, out)?;
                        pos += FRAME_HEADER_LEN + len;
                    } else {
                        if let Some(open) = &self.open {
                            return Err(RewriteError::Interleaved {
                                frame_type,
                                stream,
                                open: open.stream,
                            });
                        }
                        out.extend_from_slice(&rest[..FRAME_HEADER_LEN]);
                        pos += FRAME_HEADER_LEN;
                        if len > 0 {
                            self.state = State::Payload(len);
                        }
                    }
                }
            }
        }
    }

    fn header_frame(
        &mut self,
        frame_type: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        if frame_type == HEADERS {
            if let Some(open) = &self.open {
                return Err(RewriteError::Interleaved {
                    frame_type,
                    stream,
                    open: open.stream,
                });
            }
            let truncated = || RewriteError::Truncated { stream };
            let mut rest = payload;
            let mut padding = 0;
            if flags & PADDED != 0 {
                let (&n, after) = rest.split_first().ok_or_else(truncated)?;
                padding = usize::from(n);
                rest = after;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let (fields, after) = rest.split_first_chunk::<5>().ok_or_else(truncated)?;
                priority = Some(*fields);
                rest = after;
            }
            let fragment = rest
                .len()
                .checked_sub(padding)
                .map(|n| &rest[..n])
                .ok_or_else(truncated)?;
            self.open = Some(OpenBlock {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
            });
        } else {
            let Some(open) = self.open.as_mut() else {
                return Err(RewriteError::OrphanContinuation { stream });
            };
            if open.stream != stream {
                return Err(RewriteError::Interleaved {
                    frame_type,
                    stream,
                    open: open.stream,
                });
            }
            if open.fragment.len() + payload.len() > MAX_BLOCK_BYTES {
                return Err(RewriteError::TooLarge { stream });
            }
            open.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0 {
            let block = self.open.take().expect("a block is open");
            self.emit(block, out)?;
        }
        Ok(())
    }

    /// Decodes a complete header block and writes it re-encoded, as HEADERS
    /// and CONTINUATION frames.
    fn emit(&mut self, block: OpenBlock, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let OpenBlock {
            stream,
            end_stream,
            priority,
            fragment,
        } = block;
        let mut encoded = Vec::with_capacity(fragment.len() * 2);
        let mut decoded_size = 0usize;
        let mut replaced = None;
        self.decoder
            .decode_with_cb(&fragment, |name, value| {
                decoded_size += name.len() + value.len() + 32;
                if decoded_size > MAX_BLOCK_BYTES {
                    return;
                }
                if &name[..] == b":authority" && !valid_authority(&value) {
                    replaced = Some(String::from_utf8_lossy(&value).escape_debug().to_string());
                    literal(&mut encoded, &name, REPLACEMENT);
                } else {
                    literal(&mut encoded, &name, &value);
                }
            })
            .map_err(|source| RewriteError::Hpack { stream, source })?;
        if decoded_size > MAX_BLOCK_BYTES {
            return Err(RewriteError::TooLarge { stream });
        }
        if let Some(authority) = replaced {
            if self.replaced == 0 {
                tracing::debug!(%authority, stream, "replacing a malformed :authority with localhost (a gRPC C-core client on the Unix socket)");
            }
            self.replaced += 1;
        }

        let priority_len = if priority.is_some() { 5 } else { 0 };
        let first = encoded.len().min(MIN_MAX_FRAME_SIZE - priority_len);
        let (head, mut rest) = encoded.split_at(first);
        let mut flags = 0;
        if end_stream {
            flags |= END_STREAM;
        }
        if priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame_header(out, priority_len + head.len(), HEADERS, flags, stream);
        if let Some(fields) = priority {
            out.extend_from_slice(&fields);
        }
        out.extend_from_slice(head);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(MIN_MAX_FRAME_SIZE));
            rest = after;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            frame_header(out, chunk.len(), CONTINUATION, flags, stream);
            out.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// An accepted connection with its client-to-server header blocks rewritten
/// (see the module docs); writes pass through.
#[derive(Debug)]
pub struct AuthorityFix<T> {
    io: T,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to hyper, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Read buffer for the socket.
    scratch: Box<[u8]>,
    eof: bool,
}

impl<T> AuthorityFix<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            rewriter: Rewriter::default(),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            eof: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                continue;
            }
            if let Err(e) = this.rewriter.feed(read.filled(), &mut this.out) {
                tracing::debug!(error = %e, "closing a connection: malformed HTTP/2 header block");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for AuthorityFix<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python grpcio 1.85 sent on `unix:///tmp/cap/agent.sock` to a
    /// listener that only answered SETTINGS: the preface, SETTINGS,
    /// WINDOW_UPDATE, then two concurrent `grpc.health.v1.Health/Check`
    /// calls (HEADERS + DATA each), the second with metadata `x-test: v`.
    /// Its HEADERS insert into the dynamic table, and the second one
    /// refers to those entries by index.
    const GRPCIO: &str = include_str!("testdata/grpcio-unix.hex");

    fn unhex(s: &str) -> Vec<u8> {
        let s = s.trim();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), frame_type, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    #[derive(Debug, PartialEq)]
    struct Frame {
        frame_type: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    /// Splits what the rewriter produced into the preface and frames.
    fn frames(out: &[u8]) -> Vec<Frame> {
        assert_eq!(&out[..24], PREFACE);
        let mut rest = &out[24..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            frames.push(Frame {
                frame_type: rest[3],
                flags: rest[4],
                stream: u32::from_be_bytes(rest[5..9].try_into().unwrap()),
                payload: rest[9..9 + len].to_vec(),
            });
            rest = &rest[9 + len..];
        }
        frames
    }

    fn int(buf: &mut &[u8], prefix: u8) -> usize {
        let mask = (1u16 << prefix) as usize - 1;
        let mut value = usize::from(buf[0]) & mask;
        *buf = &buf[1..];
        if value < mask {
            return value;
        }
        let mut shift = 0;
        loop {
            let b = buf[0];
            *buf = &buf[1..];
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return value;
            }
        }
    }

    fn raw_string(buf: &mut &[u8]) -> String {
        assert_eq!(buf[0] & 0x80, 0, "Huffman-coded output");
        let len = int(buf, 7);
        let s = String::from_utf8(buf[..len].to_vec()).unwrap();
        *buf = &buf[len..];
        s
    }

    /// Decodes a re-encoded block, checking that every field is a literal
    /// without indexing with a literal name and no Huffman coding: the only
    /// form that leaves the server's table untouched.
    fn literals(mut block: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        while !block.is_empty() {
            assert_eq!(
                block[0], 0x00,
                "not a literal without indexing: {block:02x?}"
            );
            block = &block[1..];
            let name = raw_string(&mut block);
            let value = raw_string(&mut block);
            fields.push((name, value));
        }
        fields
    }

    /// A decoded header block: its HEADERS frame's stream and flags, and its
    /// fields.
    type Block = (u32, u8, Vec<(String, String)>);

    /// The header blocks in `out`, CONTINUATIONs joined.
    fn blocks(out: &[u8]) -> Vec<Block> {
        let mut result = Vec::new();
        let mut open: Option<(u32, u8, Vec<u8>)> = None;
        for f in frames(out) {
            match f.frame_type {
                HEADERS => {
                    assert!(open.is_none());
                    assert_eq!(f.flags & PADDED, 0, "padding left in");
                    let fragment = if f.flags & PRIORITY != 0 {
                        f.payload[5..].to_vec()
                    } else {
                        f.payload.clone()
                    };
                    open = Some((f.stream, f.flags, fragment));
                }
                CONTINUATION => open.as_mut().unwrap().2.extend(&f.payload),
                _ => continue,
            }
            assert!(f.payload.len() <= MIN_MAX_FRAME_SIZE);
            if f.flags & END_HEADERS != 0 {
                let (stream, flags, block) = open.take().unwrap();
                result.push((stream, flags, literals(&block)));
            }
        }
        assert!(open.is_none(), "a block was left open");
        result
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Feeds `input` in chunks of `chunk` bytes.
    fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, RewriteError> {
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.feed(piece, &mut out)?;
        }
        assert!(rewriter.pending.is_empty(), "input left over");
        Ok(out)
    }

    /// A client connection: preface, empty SETTINGS, then `frames`.
    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        for f in frames {
            input.extend_from_slice(f);
        }
        input
    }

    fn request(authority: &str) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/grpc.health.v1.Health/Check".to_vec()),
            (b":authority", authority.as_bytes().to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
        ]
    }

    fn encode(
        encoder: &mut loona_hpack::Encoder<'_>,
        fields: &[(&'static [u8], Vec<u8>)],
    ) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())))
    }

    #[test]
    fn grpcio_unix_authority_becomes_localhost_whatever_the_reads() {
        let input = unhex(GRPCIO);
        let whole = rewrite(&input, input.len()).unwrap();
        for chunk in [1, 2, 7, 9, 10, 100] {
            assert_eq!(
                rewrite(&input, chunk).unwrap(),
                whole,
                "reads of {chunk} bytes"
            );
        }
        let blocks = blocks(&whole);
        assert_eq!(blocks.len(), 2, "{blocks:?}");
        for (stream, flags, fields) in &blocks {
            assert_eq!(get(fields, ":authority"), Some("localhost"), "{fields:?}");
            assert_eq!(get(fields, ":path"), Some("/grpc.health.v1.Health/Check"));
            assert_eq!(get(fields, ":method"), Some("POST"));
            assert_eq!(get(fields, "content-type"), Some("application/grpc"));
            assert_eq!(flags & END_HEADERS, END_HEADERS);
            assert!(stream % 2 == 1);
        }
        // The second call's fields came from the client's dynamic table.
        assert_eq!(get(&blocks[1].2, "x-test"), Some("v"));
        assert_eq!(get(&blocks[0].2, "x-test"), None);

        // Every other frame is byte for byte what the client sent.
        let original = frames(&input);
        let rewritten = frames(&whole);
        let others = |fs: &[Frame]| -> Vec<(u8, u8, u32, Vec<u8>)> {
            fs.iter()
                .filter(|f| f.frame_type != HEADERS && f.frame_type != CONTINUATION)
                .map(|f| (f.frame_type, f.flags, f.stream, f.payload.clone()))
                .collect()
        };
        assert_eq!(others(&original), others(&rewritten));
        assert!(others(&original).iter().any(|f| f.0 == 0x0), "DATA frames");
    }

    #[test]
    fn a_valid_authority_is_left_alone_and_indexed_fields_resolve() {
        // Literals with incremental indexing (static names: :path 4,
        // :authority 1, content-type 31), as C-core sends them...
        let mut first = vec![0x83, 0x86, 0x44];
        string(&mut first, b"/grpc.health.v1.Health/Check");
        first.push(0x41);
        string(&mut first, b"example.com:8080");
        first.push(0x5f);
        string(&mut first, b"application/grpc");
        // ...then the same request again as indexes into the client's
        // dynamic table (newest entry 62), which the server never saw.
        let second = [0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62];
        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &second),
        ]);
        let out = rewrite(&input, 3).unwrap();
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 2);
        for (_, _, fields) in &blocks {
            assert_eq!(get(fields, ":authority"), Some("example.com:8080"));
            assert_eq!(get(fields, ":path"), Some("/grpc.health.v1.Health/Check"));
            assert_eq!(get(fields, "content-type"), Some("application/grpc"));
            assert_eq!(fields.len(), 5);
        }
        assert_eq!(blocks[1].0, 3);
        assert_eq!(blocks[1].1, END_HEADERS | END_STREAM);
    }

    #[test]
    fn continuation_frames_are_joined_even_mid_field() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encode(&mut encoder, &request("tmp%2Fx%2Fagent.sock"));
        let (a, rest) = block.split_at(5);
        let (b, c) = rest.split_at(rest.len() / 2);
        let input = connection(&[
            frame(HEADERS, END_STREAM, 1, a),
            frame(CONTINUATION, 0, 1, b),
            frame(CONTINUATION, END_HEADERS, 1, c),
            frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"),
        ]);
        for chunk in [1, 4, input.len()] {
            let out = rewrite(&input, chunk).unwrap();
            let blocks = blocks(&out);
            assert_eq!(blocks.len(), 1);
            let (stream, flags, fields) = &blocks[0];
            assert_eq!((*stream, *flags), (1, END_STREAM | END_HEADERS));
            assert_eq!(get(fields, ":authority"), Some("localhost"));
            assert_eq!(get(fields, ":path"), Some("/grpc.health.v1.Health/Check"));
            let last = frames(&out).pop().unwrap();
            assert_eq!(last.frame_type, 0x0);
            assert_eq!(last.payload, b"\0\0\0\0\0");
        }
    }

    #[test]
    fn padding_is_dropped_and_priority_kept() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encode(&mut encoder, &request("tmp%2Fagent.sock"));
        let priority = [0x80, 0, 0, 0x03, 0xff];
        let mut payload = vec![7u8];
        payload.extend_from_slice(&priority);
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0; 7]);
        let input = connection(&[frame(
            HEADERS,
            END_HEADERS | END_STREAM | PADDED | PRIORITY,
            5,
            &payload,
        )]);
        let out = rewrite(&input, 2).unwrap();
        let headers = frames(&out).pop().unwrap();
        assert_eq!(headers.flags, END_HEADERS | END_STREAM | PRIORITY);
        assert_eq!(headers.payload[..5], priority);
        let blocks = blocks(&out);
        assert_eq!(get(&blocks[0].2, ":authority"), Some("localhost"));

        // Padding longer than the frame is an error, not a panic.
        let bad = connection(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82])]);
        assert!(matches!(
            rewrite(&bad, 100),
            Err(RewriteError::Truncated { stream: 1 })
        ));
        let bad = connection(&[frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0])]);
        assert!(matches!(
            rewrite(&bad, 100),
            Err(RewriteError::Truncated { stream: 1 })
        ));
    }

    #[test]
    fn huffman_coded_values_are_decoded() {
        // RFC 7541 C.4.1: GET http://www.example.com/, Huffman-coded.
        let valid = unhex("828684418cf1e3c2e5f23a6ba0ab90f4ff");
        // :authority "a/b", Huffman-coded ('a' 00011, '/' 011000, 'b'
        // 100011, then EOS padding), as a literal with incremental indexing
        // and the static table's :authority name (index 1)...
        let invalid = unhex("8286844183 1b11ff".replace(' ', "").as_str());
        // ...and then by its index in the client's table (62).
        let indexed = unhex("828684be");
        let mut check = loona_hpack::Decoder::new();
        let decoded = check.decode(&invalid).unwrap();
        assert_eq!(decoded[3], (b":authority".to_vec(), b"a/b".to_vec()));

        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &valid),
            frame(HEADERS, END_HEADERS, 3, &invalid),
            frame(HEADERS, END_HEADERS, 5, &indexed),
        ]);
        let out = rewrite(&input, 5).unwrap();
        let blocks = blocks(&out);
        assert_eq!(get(&blocks[0].2, ":authority"), Some("www.example.com"));
        assert_eq!(get(&blocks[0].2, ":path"), Some("/"));
        assert_eq!(get(&blocks[1].2, ":authority"), Some("localhost"));
        assert_eq!(get(&blocks[2].2, ":authority"), Some("localhost"));
    }

    #[test]
    fn table_size_updates_are_followed_and_bounded() {
        let mut encoder = loona_hpack::Encoder::new();
        let first = encode(&mut encoder, &request("tmp%2Fa.sock"));
        // Size update to 0 (evicts everything), then back to 4096, then
        // literal fields: indexes into the old entries would now fail.
        let mut second = vec![0x20, 0x3f, 0xe1, 0x1f];
        let mut fresh = loona_hpack::Encoder::new();
        second.extend(encode(&mut fresh, &request("tmp%2Fb.sock")));
        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(HEADERS, END_HEADERS, 3, &second),
        ]);
        let out = rewrite(&input, 11).unwrap();
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 2);
        assert_eq!(get(&blocks[1].2, ":authority"), Some("localhost"));

        // An index into the evicted entries is a decoding error.
        let mut stale = vec![0x20];
        stale.push(0x80 | 62);
        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(HEADERS, END_HEADERS, 3, &stale),
        ]);
        assert!(matches!(
            rewrite(&input, 100),
            Err(RewriteError::Hpack { stream: 3, .. })
        ));

        // A size over the protocol's 4096 is refused.
        let input = connection(&[frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82])]);
        assert!(matches!(
            rewrite(&input, 100),
            Err(RewriteError::Hpack { stream: 1, .. })
        ));
    }

    #[test]
    fn a_block_that_grows_past_one_frame_is_split() {
        // A 4000-byte value inserted once, then referred to by index: a
        // small block that decodes to more than one frame can carry.
        let big = "v".repeat(4000);
        let mut block = Vec::new();
        block.push(0x40);
        string(&mut block, b"x-big");
        string(&mut block, big.as_bytes());
        block.extend([0x80 | 62; 5]);
        let input = connection(&[frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)]);
        let out = rewrite(&input, 1000).unwrap();
        let kinds: Vec<_> = frames(&out)
            .iter()
            .map(|f| (f.frame_type, f.flags))
            .collect();
        assert_eq!(
            kinds,
            [(0x4, 0), (HEADERS, END_STREAM), (CONTINUATION, END_HEADERS)]
        );
        let blocks = blocks(&out);
        assert_eq!(blocks[0].2.len(), 6);
        assert!(blocks[0].2.iter().all(|(_, v)| v == &big));

        // Decoded past MAX_BLOCK_BYTES: the connection is closed.
        let mut block = Vec::new();
        block.push(0x40);
        string(&mut block, b"x-big");
        string(&mut block, big.as_bytes());
        block.extend([0x80 | 62; 20]);
        let input = connection(&[frame(HEADERS, END_HEADERS, 1, &block)]);
        assert!(matches!(
            rewrite(&input, 100),
            Err(RewriteError::TooLarge { stream: 1 })
        ));
        // So is an encoded frame that large, before it is buffered.
        let mut header = Vec::new();
        frame_header(&mut header, MAX_BLOCK_BYTES + 1, HEADERS, 0, 1);
        let mut input = connection(&[]);
        input.extend(header);
        assert!(matches!(
            rewrite(&input, 100),
            Err(RewriteError::TooLarge { stream: 1 })
        ));
    }

    #[test]
    fn broken_framing_is_an_error() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encode(&mut encoder, &request("x"));
        let orphan = connection(&[frame(CONTINUATION, END_HEADERS, 1, &block)]);
        assert!(matches!(
            rewrite(&orphan, 100),
            Err(RewriteError::OrphanContinuation { stream: 1 })
        ));
        let interleaved = connection(&[
            frame(HEADERS, 0, 1, &block[..3]),
            frame(0x8, 0, 0, &[0, 0, 0, 1]),
        ]);
        assert!(matches!(
            rewrite(&interleaved, 100),
            Err(RewriteError::Interleaved {
                frame_type: 0x8,
                ..
            })
        ));
        let other_stream = connection(&[
            frame(HEADERS, 0, 1, &block[..3]),
            frame(CONTINUATION, END_HEADERS, 3, &block[3..]),
        ]);
        assert!(matches!(
            rewrite(&other_stream, 100),
            Err(RewriteError::Interleaved {
                stream: 3,
                open: 1,
                ..
            })
        ));
    }

    #[test]
    fn what_is_not_http2_passes_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for piece in input.chunks(4) {
            rewriter.feed(piece, &mut out).unwrap();
        }
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn the_stream_wrapper_serves_rewritten_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let input = unhex(GRPCIO);
        let expected = rewrite(&input, input.len()).unwrap();
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for piece in input.chunks(13) {
                client.write_all(piece).await.unwrap();
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        let mut buf = [0u8; 100];
        while got.len() < expected.len() {
            let n = fixed.read(&mut buf).await.unwrap();
            assert!(n > 0, "early EOF");
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, expected);
        assert_eq!(fixed.rewriter.replaced(), 2);
        // The client hung up: end of stream.
        assert_eq!(fixed.read(&mut buf).await.unwrap(), 0);
    }
}
