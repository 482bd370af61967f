//! The Rust mirrors checked against the C headers: `build.rs` compiles one
//! global of every `struct coral_*` the headers declare into
//! `layout.bpf.o`, and this test reads clang's layout of each from that
//! object's BTF. A field added, removed, renamed, resized or moved on one
//! side only fails here, as does a struct of a header that has no mirror
//! (unless it is listed as kernel-only).

use btf_rs::{Btf, Type};
use object::{Object, ObjectSection};
use std::mem::{offset_of, size_of};

static LAYOUT: &[u8] = crate::bpf_object!("layout");

/// One member: name, byte offset, byte size.
type Field = (String, usize, usize);

/// One mirror: its C name, its size and its fields.
struct Mirror {
    c_name: &'static str,
    size: usize,
    fields: Vec<Field>,
}

/// The size of the field `_field` selects (no value is needed).
fn field_size<T, F>(_field: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// `mirror!("c_struct" => RustType { field, rust_field = "c_field", ... })`.
macro_rules! mirror {
    ($c:literal => $ty:ty { $($field:ident $(= $c_field:literal)?),+ $(,)? }) => {
        Mirror {
            c_name: $c,
            size: size_of::<$ty>(),
            fields: vec![$((
                mirror!(@name $field $($c_field)?),
                offset_of!($ty, $field),
                field_size(|s: &$ty| &s.$field),
            )),+],
        }
    };
    (@name $field:ident $c_field:literal) => { $c_field.to_string() };
    (@name $field:ident) => { stringify!($field).to_string() };
}

fn mirrors() -> Vec<Mirror> {
    use crate::{
        cpu_profile as cp, dns, file_io as fio, http_latency as http, memory as mem,
        process_events as pe, security as sec, syscall_stats as ss, tcp_metrics as tcp,
    };
    vec![
        mirror!("coral_sys_stat" => ss::SysStat { count, errors, total_ns, log2 }),
        mirror!("coral_sys_key" => ss::SysKey { tgid, nr }),
        mirror!("coral_sys_proc" => ss::SysProc { comm, cgroup_id }),
        mirror!("coral_proc_event" => pe::ProcEvent {
            time_ns, start_ns, cgroup_id, kind = "type", pid, tgid, ppid, uid, status, flags,
            argv_len, comm,
        }),
        mirror!("coral_proc_exec" => pe::ProcExec { hdr, filename, argv }),
        mirror!("coral_sec_creds" => sec::Creds {
            uid, gid, suid, sgid, euid, egid, fsuid, fsgid, cap_inheritable, cap_permitted,
            cap_effective,
        }),
        mirror!("coral_sec_event" => sec::SecEvent {
            time_ns, cgroup_id, ret, args, old, new, kind = "type", nr, tgid, tid, ppid, flags,
            mode, pad, comm, pcomm, str0, str1, str2,
        }),
        mirror!("coral_mem_proc" => mem::Proc { pages, reported, report_ns, memcg_id, events, comm }),
        mirror!("coral_mem_rss_event" => mem::RssEvent { kind = "type", tgid, ts, pages, memcg_id, comm }),
        mirror!("coral_mem_exit_event" => mem::ExitEvent { kind = "type", tgid, ts }),
        mirror!("coral_mem_oom_event" => mem::OomEvent {
            kind = "type", tgid, ts, pages, memcg_id, limit_memcg_id, limit_pages, usage_pages,
            memcg_level, trigger_tgid, comm, trigger_comm, memcg_name,
        }),
        mirror!("coral_tcp_event" => tcp::TcpEvent {
            start_ns, connect_ns, end_ns, bytes_sent, bytes_received, pid, retransmits,
            resets_sent, resets_received, sk_err, lport, rport, family, flags, end_state, pad,
            laddr, raddr, comm, pad2, cgroup_id,
        }),
        mirror!("coral_tcp_remote_key" => tcp::RemoteKey { addr, rport, lport, family, pad }),
        mirror!("coral_tcp_remote" => tcp::Remote {
            opened, closed, retransmits, resets_sent, resets_received, bytes_sent,
            bytes_received, rtt_log2,
        }),
        mirror!("coral_tcp_reported" => tcp::Reported {
            busy, retransmits, resets_sent, resets_received, opened, closed, pad,
        }),
        mirror!("coral_tcp_sock" => tcp::Sock { ev, key, reported, state, probes, pad }),
        mirror!("coral_http_event" => http::HttpEvent {
            start_ns, end_ns, cgroup_id, tgid, flags, req_len, pad, comm, req, resp,
        }),
        mirror!("coral_http_proc_event" => http::ProcEvent { tgid, pad }),
        mirror!("coral_fio_key" => fio::FileKey { path_hash, tgid, err }),
        mirror!("coral_fio_stat" => fio::FileStat {
            opens, reads, read_bytes, read_ns, writes, write_bytes, write_ns, fsyncs, fsync_ns,
            cgroup_id, flags, pad, comm, path, read_log2, write_log2
        }),
        mirror!("coral_fio_fd_key" => fio::FdKey { tgid, fd }),
        mirror!("coral_fio_event" => fio::FileEvent {
            start_ns, latency_ns, bytes, cgroup_id, tgid, tid, fd, op, err, flags, comm, path
        }),
        mirror!("coral_dns_key" => dns::DnsKey {
            client, server, client_port, server_port, id, proto, family
        }),
        mirror!("coral_dns_inflight" => dns::DnsInflight { ns, cgroup_id, tgid, tid, comm }),
        mirror!("coral_dns_event" => dns::DnsEvent {
            ns, query_ns, cgroup_id, key, tgid, tid, kind, len, msg_len, comm, msg
        }),
        mirror!("coral_profile_key" => cp::ProfileKey { tgid, user_stack_id, kernel_stack_id, flags }),
        mirror!("coral_stack" => cp::OverflowStack { ips }),
        mirror!("coral_profile_value" => cp::ProfileValue { count, comm, cgroup_id }),
    ]
}

/// Structs the headers share only inside the kernel (no Rust side reads them).
const KERNEL_ONLY: &[&str] = &[
    "coral_sys_start",
    "coral_http_conn_key",
    "coral_http_tls_key",
    "coral_http_conn",
];

/// The size of a member's type, through typedefs and qualifiers.
fn type_size(btf: &Btf, ty: Type) -> usize {
    match ty {
        Type::Int(t) => t.size(),
        Type::Struct(t) => t.size(),
        Type::Union(t) => t.size(),
        Type::Enum(t) => t.size(),
        Type::Enum64(t) => t.size(),
        Type::Float(t) => t.size(),
        Type::Ptr(_) => size_of::<u64>(),
        Type::Array(a) => {
            let elem = btf.resolve_chained_type(&a).expect("array element type");
            a.len() * type_size(btf, elem)
        }
        Type::Typedef(t) => type_size(btf, btf.resolve_chained_type(&t).expect("typedef")),
        Type::Const(t) => type_size(btf, btf.resolve_chained_type(&t).expect("const")),
        Type::Volatile(t) => type_size(btf, btf.resolve_chained_type(&t).expect("volatile")),
        other => panic!("a member of an unexpected type: {other:?}"),
    }
}

/// (name, size, members) of every `coral_*` struct in the layout object.
fn c_layouts() -> Vec<(String, usize, Vec<Field>)> {
    let elf = object::File::parse(LAYOUT).expect("layout.bpf.o is an ELF object");
    let section = elf.section_by_name(".BTF").expect("layout.bpf.o has BTF");
    let btf = Btf::from_bytes(section.data().expect(".BTF data")).expect("the BTF parses");
    let mut out = Vec::new();
    for id in 1.. {
        let Ok(ty) = btf.resolve_type_by_id(id) else {
            break;
        };
        let Type::Struct(s) = ty else { continue };
        let name = btf.resolve_name(&s).unwrap_or_default();
        if !name.starts_with("coral_") {
            continue;
        }
        let members = s
            .members
            .iter()
            .map(|m| {
                assert!(
                    m.bitfield_size().is_none(),
                    "{name}: bitfields are not mirrored"
                );
                let ty = btf.resolve_chained_type(m).expect("member type");
                (
                    btf.resolve_name(m).unwrap_or_default(),
                    m.bit_offset() as usize / 8,
                    type_size(&btf, ty),
                )
            })
            .collect();
        out.push((name, s.size(), members));
    }
    out
}

#[test]
fn rust_mirrors_match_the_c_headers() {
    let c = c_layouts();
    assert!(!c.is_empty(), "no coral_* structs in layout.bpf.o");
    let mirrors = mirrors();
    for (name, size, members) in &c {
        if KERNEL_ONLY.contains(&name.as_str()) {
            continue;
        }
        let m = mirrors
            .iter()
            .find(|m| m.c_name == name)
            .unwrap_or_else(|| {
                panic!("struct {name} has no Rust mirror (or add it to KERNEL_ONLY)")
            });
        assert_eq!(
            m.size, *size,
            "struct {name}: size in C {size}, in Rust {}",
            m.size
        );
        assert_eq!(
            &m.fields, members,
            "struct {name}: fields (name, offset, size) differ, Rust then C"
        );
    }
    for m in &mirrors {
        assert!(
            c.iter().any(|(name, ..)| name == m.c_name),
            "the mirror of {} has no struct in the headers",
            m.c_name
        );
    }
}
