//! Error text shared by every Coral binary (this is the one crate they all
//! depend on).

/// `e` and its sources on one line: the top-level messages of aya, tonic and
/// rustls errors alone rarely say which syscall, verifier step or
/// certificate check failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Many errors already print their source; say each part once.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn sources_are_joined_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
        let io = std::io::Error::other("alone");
        assert_eq!(error_chain(&io), "alone");
    }
}
