//! DNS messages as the kernel copied them (at most 512 bytes of each): the
//! header, the first question and the answers' addresses (RFC 1035 4.1).
//! Every read is bounds-checked; a message cut short yields what was read
//! before the cut, never a panic. Names follow compression pointers (at
//! most [`MAX_JUMPS`]) and are kept to [`NAME_MAX`] bytes of text.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Text bytes kept of a name (a wire name is at most 255 bytes).
pub const NAME_MAX: usize = 255;
/// Compression pointers followed per name: a loop ends here.
const MAX_JUMPS: usize = 16;
/// Answers listed per response.
pub const MAX_ANSWERS: usize = 16;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

/// Why a message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the 12-byte header, or cut inside the question.
    #[error("message cut short")]
    Short,
    /// A label of a reserved type, or too many compression pointers.
    #[error("malformed name")]
    BadName,
    /// QDCOUNT is 0: nothing to attribute the exchange to.
    #[error("no question")]
    NoQuestion,
}

/// What the collector reads of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    pub name: String,
    pub qtype: u16,
    /// ANCOUNT as the header says.
    pub answer_count: u16,
    /// A and AAAA addresses and CNAME targets of the answers read.
    pub answers: Vec<String>,
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, WireError> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(WireError::Short)
}

/// The name at `at`, lower case, without the final dot, and where the bytes
/// after it (in the message, not the pointer's target) begin.
pub fn name_at(msg: &[u8], mut at: usize) -> Result<(String, usize), WireError> {
    let mut text = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or(WireError::Short)?;
        match len & 0xc0 {
            0x00 => {}
            0xc0 => {
                let target = usize::from(u16_at(msg, at)? & 0x3fff);
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(WireError::BadName);
                }
                at = target;
                continue;
            }
            _ => return Err(WireError::BadName),
        }
        if len == 0 {
            let end = end.unwrap_or(at + 1);
            if text.is_empty() {
                text.push('.');
            }
            return Ok((text, end));
        }
        let label = msg
            .get(at + 1..at + 1 + usize::from(len))
            .ok_or(WireError::Short)?;
        if !text.is_empty() {
            push_bounded(&mut text, ".");
        }
        for &b in label {
            match b {
                b'.' | b'\\' => push_bounded(&mut text, &format!("\\{}", b as char)),
                0x21..=0x7e => {
                    push_bounded(&mut text, &(b.to_ascii_lowercase() as char).to_string())
                }
                _ => push_bounded(&mut text, &format!("\\{b:03}")),
            }
        }
        at += 1 + usize::from(len);
    }
}

fn push_bounded(text: &mut String, s: &str) {
    if text.len() + s.len() <= NAME_MAX {
        text.push_str(s);
    }
}

/// Reads the header, the first question and (of a response) the answers.
pub fn parse(msg: &[u8]) -> Result<Message, WireError> {
    if msg.len() < 12 {
        return Err(WireError::Short);
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    let qdcount = u16_at(msg, 4)?;
    let ancount = u16_at(msg, 6)?;
    if qdcount == 0 {
        return Err(WireError::NoQuestion);
    }
    let (name, mut at) = name_at(msg, 12)?;
    let qtype = u16_at(msg, at)?;
    at += 4;
    // Further questions (no server sends them) are skipped.
    for _ in 1..qdcount {
        let Ok((_, next)) = name_at(msg, at) else {
            break;
        };
        at = next + 4;
    }
    let response = flags & 0x8000 != 0;
    let mut answers = Vec::new();
    if response {
        for _ in 0..ancount {
            let Some((answer, next)) = answer_at(msg, at) else {
                break;
            };
            at = next;
            if let Some(a) = answer
                && answers.len() < MAX_ANSWERS
            {
                answers.push(a);
            }
        }
    }
    Ok(Message {
        id,
        response,
        rcode: (flags & 0x000f) as u8,
        name,
        qtype,
        answer_count: ancount,
        answers,
    })
}

/// One resource record at `at`: its address or CNAME target as text (None
/// for other types), and where the next one starts; None when cut short.
fn answer_at(msg: &[u8], at: usize) -> Option<(Option<String>, usize)> {
    let (_, at) = name_at(msg, at).ok()?;
    let rtype = u16_at(msg, at).ok()?;
    let rdlen = usize::from(u16_at(msg, at + 8).ok()?);
    let rdata_at = at + 10;
    let rdata = msg.get(rdata_at..rdata_at + rdlen)?;
    let text = match (rtype, rdlen) {
        (TYPE_A, 4) => Some(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string()),
        (TYPE_AAAA, 16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(rdata);
            Some(Ipv6Addr::from(b).to_string())
        }
        (TYPE_CNAME, _) => name_at(msg, rdata_at).ok().map(|(n, _)| n),
        _ => None,
    };
    Some((text, rdata_at + rdlen))
}

/// "A", "AAAA", ..., "TYPE<n>" for the others (RFC 3597's spelling).
pub fn type_name(qtype: u16) -> String {
    let name = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{qtype}"),
    };
    name.to_string()
}

/// "NOERROR", "NXDOMAIN", ..., "RCODE<n>" for the others.
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{rcode}"),
    };
    name.to_string()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A query for `name` of `qtype` with id `id`, as a stub resolver sends it.
    pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    /// Its response: `rcode`, then one A record per address, named by a
    /// pointer to the question.
    pub fn response(id: u16, name: &str, rcode: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
        let mut m = query(id, name, TYPE_A);
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = addrs.len() as u8;
        for a in addrs {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    #[test]
    fn reads_a_query() {
        let m = parse(&query(0x1234, "Alpha.Test", 28)).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(!m.response);
        assert_eq!(m.name, "alpha.test");
        assert_eq!(type_name(m.qtype), "AAAA");
    }

    #[test]
    fn reads_answers_through_pointers() {
        let m = parse(&response(
            7,
            "beta.test",
            0,
            &[[10, 1, 2, 3], [10, 1, 2, 4]],
        ))
        .unwrap();
        assert!(m.response);
        assert_eq!(rcode_name(m.rcode), "NOERROR");
        assert_eq!(m.answer_count, 2);
        assert_eq!(m.answers, ["10.1.2.3", "10.1.2.4"]);
        let nx = parse(&response(8, "nope.test", 3, &[])).unwrap();
        assert_eq!(rcode_name(nx.rcode), "NXDOMAIN");
        assert!(nx.answers.is_empty());
    }

    #[test]
    fn cut_and_looping_messages_are_errors_or_partial() {
        let full = response(7, "beta.test", 0, &[[10, 1, 2, 3], [10, 1, 2, 4]]);
        // Cut inside the second answer: the first is still read.
        let cut = parse(&full[..full.len() - 2]).unwrap();
        assert_eq!(cut.answers, ["10.1.2.3"]);
        assert_eq!(cut.answer_count, 2);
        assert_eq!(parse(&full[..11]), Err(WireError::Short));
        assert_eq!(parse(&full[..15]), Err(WireError::Short));
        // A name that points at itself.
        let mut looping = query(1, "a", 1);
        looping.truncate(12);
        looping.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&looping), Err(WireError::BadName));
        let mut none = query(1, "a", 1);
        none[5] = 0;
        assert_eq!(parse(&none), Err(WireError::NoQuestion));
    }

    #[test]
    fn names_are_bounded_and_escaped() {
        let long: Vec<String> = (0..8).map(|_| "x".repeat(63)).collect();
        let m = parse(&query(1, &long.join("."), 1)).unwrap();
        assert!(m.name.len() <= NAME_MAX, "{}", m.name.len());
        let mut odd = query(1, "ab", 1);
        odd[13] = b'.';
        assert_eq!(parse(&odd).unwrap().name, "\\.b");
        assert_eq!(name_at(&[0], 0).unwrap().0, ".");
        assert_eq!(type_name(65), "HTTPS");
        assert_eq!(type_name(999), "TYPE999");
        assert_eq!(rcode_name(12), "RCODE12");
    }
}
