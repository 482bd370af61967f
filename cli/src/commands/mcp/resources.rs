//! MCP resources: the documentation of each collector kind
//! (`docs/collectors/<kind>.md`, built into the binary), so an assistant can
//! read what a field means, plus this server's own page (`docs/mcp.md`).
//! [`doc`] matches every kind without a `_` arm: a new kind does not build
//! until its page is here.

use crate::kinds::Kind;

/// URI scheme and prefix of every resource.
pub const PREFIX: &str = "coral://docs/";

/// The page of one kind.
pub fn doc(kind: Kind) -> &'static str {
    match kind {
        Kind::SyscallStats => include_str!("../../../../docs/collectors/syscall-stats.md"),
        Kind::HttpLatency => include_str!("../../../../docs/collectors/http-latency.md"),
        Kind::CpuProfile => include_str!("../../../../docs/collectors/cpu-profile.md"),
        Kind::TcpMetrics => include_str!("../../../../docs/collectors/tcp-metrics.md"),
        Kind::ProcessEvents => include_str!("../../../../docs/collectors/process-events.md"),
        Kind::Memory => include_str!("../../../../docs/collectors/memory.md"),
        Kind::FileIo => include_str!("../../../../docs/collectors/file-io.md"),
        Kind::Dns => include_str!("../../../../docs/collectors/dns.md"),
        Kind::Security => include_str!("../../../../docs/collectors/security.md"),
    }
}

/// This server's page: tools, the diagnose rules.
const MCP_DOC: &str = include_str!("../../../../docs/mcp.md");

/// One readable document.
pub struct Doc {
    pub uri: String,
    pub name: String,
    pub description: String,
    pub text: &'static str,
}

/// Every document, the kinds in their registry order, then this server's.
pub fn all() -> Vec<Doc> {
    let mut docs: Vec<Doc> = Kind::ALL
        .iter()
        .map(|&k| Doc {
            uri: format!("{PREFIX}collectors/{}", k.name()),
            name: format!("collectors/{}", k.name()),
            description: format!(
                "The {} collector: kernel hooks and needs, every field of its records, limits, overhead",
                k.name()
            ),
            text: doc(k),
        })
        .collect();
    docs.push(Doc {
        uri: format!("{PREFIX}mcp"),
        name: "mcp".into(),
        description:
            "This MCP server: its tools, their limits, and the rule table diagnose follows".into(),
        text: MCP_DOC,
    });
    docs
}

/// The document at `uri`.
pub fn find(uri: &str) -> Option<Doc> {
    all().into_iter().find(|d| d.uri == uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_page() {
        for &k in Kind::ALL {
            let d = find(&format!("coral://docs/collectors/{}", k.name())).unwrap();
            assert!(d.text.starts_with('#'), "{}", d.uri);
            assert!(d.text.contains(k.name()), "{}", d.uri);
        }
        assert!(find("coral://docs/mcp").is_some());
        assert!(find("coral://docs/nope").is_none());
    }
}
