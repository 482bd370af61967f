//! Text from outside on its way into an error message, a log line or a
//! tool's output: the agent's clients' ids, cgroup paths, comms, prefixes
//! and certificate subjects; for `coral mcp`, a model's tool arguments and
//! an agent's error messages. Two rules hold wherever they are shown:
//! control characters (newline, NUL, terminal escapes) are escaped, so no
//! one can forge a log line or paint a terminal; and the text is cut to a
//! short prefix, marked as cut, so no reply, output or log line grows with
//! the input. Here because the agent and the CLI both need it.

use std::fmt;

/// Bytes of client input an error message quotes.
pub const QUOTE_BYTES: usize = 128;

/// Bytes of one field of a log line, client text included.
pub const LOG_FIELD_BYTES: usize = 1024;

/// Bytes of an error message a client receives.
pub const MESSAGE_BYTES: usize = 4096;

/// `s` for an error message: quoted, escaped, at most [`QUOTE_BYTES`].
pub fn quote(s: &str) -> String {
    format!("\"{}\"", Cleaned::new(s, QUOTE_BYTES))
}

/// `s` cut to at most `limit` bytes (on a character boundary), marked when
/// cut; control characters other than newline and tab are escaped. For
/// multi-line messages (an agent's error) that a model reads.
pub fn bounded(s: &str, limit: usize) -> String {
    let (head, cut) = prefix(s, limit);
    let mut out = String::with_capacity(head.len() + 32);
    for c in head.chars() {
        if (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str(&format!("…({} bytes, cut)", s.len()));
    }
    out
}

fn prefix(s: &str, limit: usize) -> (&str, bool) {
    let mut end = s.len().min(limit);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], end < s.len())
}

/// `s` escaped and cut to `limit` bytes of input (`"…" (N bytes, cut)`
/// after it when cut).
#[derive(Clone, Copy)]
pub struct Cleaned<'a> {
    text: &'a str,
    limit: usize,
}

impl<'a> Cleaned<'a> {
    pub fn new(text: &'a str, limit: usize) -> Self {
        Self { text, limit }
    }

    /// For a log field.
    pub fn log(text: &'a str) -> Self {
        Self::new(text, LOG_FIELD_BYTES)
    }
}

impl fmt::Display for Cleaned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, cut) = prefix(self.text, self.limit);
        for c in head.chars() {
            if c.is_control() || c == '\u{7f}' {
                // \n, \t, \0, \u{1b}, ...: visible, never acted on.
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if cut {
            write!(f, "…({} bytes, cut)", self.text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Cleaned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let forged = "nope\n2026-12-01T00:00:00Z INFO coral::audit: action=start outcome=\"ok\"";
        let shown = Cleaned::log(forged).to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with("nope\\n2026"), "{shown}");
        assert_eq!(
            Cleaned::log("a\0b\u{1b}[31m").to_string(),
            "a\\u{0}b\\u{1b}[31m"
        );
        assert_eq!(
            Cleaned::log("plain /kubepods/pod-1").to_string(),
            "plain /kubepods/pod-1"
        );
    }

    #[test]
    fn long_input_is_cut_and_marked() {
        let id = "a".repeat(60_000);
        let q = quote(&id);
        assert!(q.len() < QUOTE_BYTES + 40, "{}", q.len());
        assert!(q.ends_with("…(60000 bytes, cut)\""), "{q}");
        // Never inside a character.
        let wide = "é".repeat(100);
        assert!(Cleaned::new(&wide, 3).to_string().starts_with('é'));
        assert!(bounded(&wide, 3).starts_with("é…(200 bytes, cut)"));
    }
}
