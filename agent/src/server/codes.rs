//! Status codes tonic picks before a request reaches the agent's handlers,
//! made into the ones a client can act on.
//!
//! - A request that does not decode (truncated, bad UTF-8 in a string,
//!   a wrong wire type) is answered `INTERNAL` by tonic, as gRPC's status
//!   code table lists for a server's parse errors. It is the client's
//!   request that is wrong, and nothing in the agent failed: the agent
//!   answers `INVALID_ARGUMENT`, `malformed request: <prost's words>`.
//! - A request over the size limit is `OUT_OF_RANGE` from tonic; other gRPC
//!   servers (C-core, grpc-go, grpc-java) answer `RESOURCE_EXHAUSTED`, and
//!   so does the agent.
//!
//! Both come as trailers-only responses (the status in the headers, no
//! body), which is where this layer rewrites them. Every status of the
//! agent's own making is chosen in `error.rs`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};
use tonic::server::NamedService;

/// Wraps a gRPC service; see the module docs.
#[derive(Clone, Debug)]
pub struct ClientCodes<S>(pub S);

impl<S: NamedService> NamedService for ClientCodes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<Request<B>> for ClientCodes<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite(response.headers_mut());
            Ok(response)
        })
    }
}

/// gRPC status numbers.
const INVALID_ARGUMENT: &str = "3";
const RESOURCE_EXHAUSTED: &str = "8";
const OUT_OF_RANGE: &str = "11";
const INTERNAL: &str = "13";

fn rewrite(headers: &mut HeaderMap) {
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    let (code, message) = match code {
        INTERNAL if message.starts_with("failed to decode Protobuf message") => {
            (INVALID_ARGUMENT, format!("malformed request: {message}"))
        }
        OUT_OF_RANGE if message.contains("message length too large") => {
            (RESOURCE_EXHAUSTED, message)
        }
        _ => return,
    };
    headers.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", value);
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`,
/// as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(code: &str, message: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_str(code).unwrap());
        h.insert(
            "grpc-message",
            HeaderValue::from_str(&percent_encode(message)).unwrap(),
        );
        h
    }

    fn status(h: &HeaderMap) -> (String, String) {
        (
            h["grpc-status"].to_str().unwrap().to_string(),
            percent_decode(h["grpc-message"].to_str().unwrap()),
        )
    }

    #[test]
    fn decode_failures_become_invalid_argument_and_size_resource_exhausted() {
        let mut h = headers(
            "13",
            "failed to decode Protobuf message: StartCollectorRequest.spec: invalid wire type",
        );
        rewrite(&mut h);
        let (code, message) = status(&h);
        assert_eq!(code, "3");
        assert!(
            message.starts_with("malformed request: failed to decode"),
            "{message}"
        );

        let mut h = headers(
            "11",
            "Error, decoded message length too large: found 100032 bytes, the limit is: 65536 bytes",
        );
        rewrite(&mut h);
        assert_eq!(status(&h).0, "8");

        // Anything else is left as it is.
        for (code, message) in [("13", "something else"), ("3", "bad"), ("0", "")] {
            let mut h = headers(code, message);
            rewrite(&mut h);
            assert_eq!(status(&h), (code.to_string(), message.to_string()));
        }
    }

    #[test]
    fn messages_round_trip_through_the_percent_encoding() {
        let m = "100% é\nx";
        assert_eq!(percent_decode(&percent_encode(m)), m);
        assert_eq!(percent_encode("a b%"), "a b%25");
    }
}
