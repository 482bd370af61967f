//! Text from outside (a model's tool arguments, an agent's error messages)
//! on its way into a tool's output or a log line. The same two rules as the
//! agent's (`agent/src/text.rs`; the CLI does not depend on the agent):
//! control characters are escaped, so no one can forge a log line or paint
//! a terminal, and the text is cut to a short prefix, marked as cut, so no
//! output and no log line grows with the input.

use std::fmt;

/// Bytes of input a message or a log field quotes.
pub const QUOTE_BYTES: usize = 128;

/// Bytes of an error message passed on (the agent's own bound).
pub const MESSAGE_BYTES: usize = 4096;

/// `s` for a message: quoted, escaped, at most [`QUOTE_BYTES`].
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

/// `s` escaped and cut to `limit` bytes of input (`…(N bytes, cut)` after
/// it when cut).
#[derive(Clone, Copy)]
pub struct Cleaned<'a> {
    text: &'a str,
    limit: usize,
}

impl<'a> Cleaned<'a> {
    pub fn new(text: &'a str, limit: usize) -> Self {
        Self { text, limit }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let forged = "x\ncoral mcp audit: tool=start_tap outcome=ok";
        let shown = Cleaned::new(forged, QUOTE_BYTES).to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with("x\\ncoral"), "{shown}");
        assert_eq!(
            Cleaned::new("a\0b\u{1b}[31m", 64).to_string(),
            "a\\u{0}b\\u{1b}[31m"
        );
        assert_eq!(bounded("two\nlines\u{1b}", 64), "two\nlines\\u{1b}");
    }

    #[test]
    fn long_input_is_cut_and_marked() {
        let q = quote(&"a".repeat(60_000));
        assert!(q.len() < QUOTE_BYTES + 40, "{}", q.len());
        assert!(q.ends_with("…(60000 bytes, cut)\""), "{q}");
        assert!(bounded(&"é".repeat(100), 3).starts_with("é…(200 bytes, cut)"));
    }
}
