//! Which tracepoints the running kernel has, from its BTF: every tracepoint
//! has a `btf_trace_<name>` typedef, whose name sits NUL-terminated in the
//! BTF string section. Raw tracepoints and tp_btf need no tracefs, so tracefs
//! is no place to look for them.

use std::collections::HashSet;
use std::sync::OnceLock;

/// Where the kernel describes its types, tracepoints included.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const PREFIX: &[u8] = b"\0btf_trace_";

/// The names of every `btf_trace_*` typedef in `btf`'s string section.
/// memmem over the megabytes of BTF, not a split into every string: this
/// runs when the agent starts, in debug-build tests too.
fn names_in(btf: &[u8]) -> HashSet<String> {
    memchr::memmem::find_iter(btf, PREFIX)
        .filter_map(|at| {
            let rest = &btf[at + PREFIX.len()..];
            let end = memchr::memchr(0, rest)?;
            std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
        })
        .collect()
}

/// The kernel's tracepoints, read once per process.
fn kernel() -> &'static Result<HashSet<String>, String> {
    static FOUND: OnceLock<Result<HashSet<String>, String>> = OnceLock::new();
    FOUND.get_or_init(|| {
        std::fs::read(VMLINUX_BTF)
            .map(|btf| names_in(&btf))
            .map_err(|e| format!("reading {VMLINUX_BTF}: {e}"))
    })
}

/// Which of `wanted` the running kernel lacks (in `wanted`'s order).
pub fn missing<'a>(wanted: impl IntoIterator<Item = &'a str>) -> Result<Vec<&'a str>, String> {
    let found = kernel().as_ref().map_err(Clone::clone)?;
    Ok(wanted.into_iter().filter(|n| !found.contains(*n)).collect())
}

/// Whether the running kernel has tracepoint `name`.
pub fn present(name: &str) -> Result<bool, String> {
    Ok(missing([name])?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracepoints_are_found_by_their_btf_typedef_names() {
        let btf = b"\0int\0btf_trace_tcp_probe\0btf_trace_sock_recv_length_x\0tcp_probe\0";
        let found = names_in(btf);
        assert!(found.contains("tcp_probe"));
        assert!(!found.contains("sock_recv_length"));
        assert!(found.contains("sock_recv_length_x"));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn the_running_kernel_has_sys_enter() {
        if std::path::Path::new(VMLINUX_BTF).exists() {
            assert_eq!(present("sys_enter"), Ok(true));
            assert_eq!(present("no_such_tracepoint_here"), Ok(false));
        }
    }
}
