//! Loading pieces every collector needs from an `aya::Ebpf`: typed maps taken
//! out of the object, and programs loaded and attached with their owned link.

use super::CollectorError;
use aya::Btf;
use aya::Ebpf;
use aya::maps::{Map, MapError};
use aya::programs::links::FdLink;
use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::{BtfTracePoint, Program, ProgramError, RawTracePoint};
use coral_proto::error_chain;

/// Takes map `name` out of `bpf` as a `T` (e.g. `RingBuf<MapData>`), so the
/// collector owns it beside the object.
pub fn take_map<T>(bpf: &mut Ebpf, name: &'static str) -> Result<T, CollectorError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = bpf.take_map(name).ok_or(CollectorError::Read {
        map: name,
        reason: "missing from object".into(),
    })?;
    T::try_from(map).map_err(read_err(name))
}

/// Turns a map error into a [`CollectorError::Read`] naming the map.
pub fn read_err(map: &'static str) -> impl Fn(MapError) -> CollectorError {
    move |e| CollectorError::Read {
        map,
        reason: error_chain(&e),
    }
}

/// Errnos with which `BPF_PROG_LOAD` says the verifier refused a program
/// (its log then says why); any other errno (EMFILE, ENOMEM, EPERM...) is
/// about the process or the machine, and the log has nothing to add.
const VERIFIER_ERRNOS: [i32; 3] = [libc::EACCES, libc::EINVAL, libc::E2BIG];

/// The verifier's words kept in a message: its last lines say why.
const VERIFIER_LOG_BYTES: usize = 2048;

/// A program error as one line: with the verifier's log when the verifier
/// refused the program (its end, where the reason is), without it otherwise.
pub fn program_error(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if !io_error
                .raw_os_error()
                .is_some_and(|errno| VERIFIER_ERRNOS.contains(&errno))
            {
                return format!("the BPF_PROG_LOAD syscall failed: {io_error}");
            }
            let log = verifier_log.to_string();
            let mut start = log.len().saturating_sub(VERIFIER_LOG_BYTES);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            let cut = if start > 0 { "…" } else { "" };
            format!(
                "the verifier refused the program ({io_error}): {cut}{}",
                log[start..].trim()
            )
        }
        other => error_chain(other),
    }
}

/// Loads and attaches program `name` as a `P` with `attach` (which loads,
/// attaches and takes the owned link: dropping the link detaches). The
/// program's kernel id is appended to `ids`. Errors name the program and hook.
pub fn attach<P, L>(
    bpf: &mut Ebpf,
    name: &'static str,
    hook: &'static str,
    ids: &mut Vec<u32>,
    attach: impl FnOnce(&mut P) -> Result<L, ProgramError>,
) -> Result<L, CollectorError>
where
    for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let err = |reason: String| CollectorError::Attach {
        program: name,
        hook,
        reason,
    };
    let program = bpf
        .program_mut(name)
        .ok_or_else(|| err("program missing from object".into()))?;
    let typed: &mut P = program.try_into().map_err(|e| err(program_error(&e)))?;
    let link = attach(typed).map_err(|e| err(program_error(&e)))?;
    if let Some(Ok(info)) = bpf.program(name).map(Program::info) {
        ids.push(info.id());
    }
    Ok(link)
}

/// Loads and attaches raw tracepoint programs, given as (program, tracepoint)
/// pairs: the common case of [`attach`].
pub fn attach_raw_tracepoints(
    bpf: &mut Ebpf,
    programs: &[(&'static str, &'static str)],
    ids: &mut Vec<u32>,
) -> Result<Vec<RawTracePointLink>, CollectorError> {
    programs
        .iter()
        .map(|&(name, hook)| {
            attach(bpf, name, hook, ids, |p: &mut RawTracePoint| {
                p.load()?;
                let id = p.attach(hook)?;
                p.take_link(id)
            })
        })
        .collect()
}

/// Loads and attaches tp_btf programs, each given as (program, tracepoint,
/// hook as reported), against the kernel's BTF.
pub fn attach_btf_tracepoints(
    bpf: &mut Ebpf,
    programs: &[(&'static str, &'static str, &'static str)],
    ids: &mut Vec<u32>,
) -> Result<Vec<FdLink>, CollectorError> {
    // The loader parsed the kernel's BTF too, but keeps it private.
    let btf = Btf::from_sys_fs().map_err(|e| CollectorError::Load(error_chain(&e)))?;
    programs
        .iter()
        .map(|&(name, tracepoint, hook)| {
            attach(bpf, name, hook, ids, |p: &mut BtfTracePoint| {
                p.load(tracepoint, &btf)?;
                let id = p.attach()?;
                p.take_link(id)
            })
            .map(FdLink::from)
        })
        .collect()
}

/// Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to Unix time, with the offset
/// between the two clocks taken once, at collector start.
#[derive(Clone, Copy, Debug)]
pub struct KtimeClock {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
    offset: i128,
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id).map_or(0, |t| {
        i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
    })
}

impl KtimeClock {
    pub fn now() -> Self {
        Self {
            offset: clock_ns(nix::time::ClockId::CLOCK_REALTIME)
                - clock_ns(nix::time::ClockId::CLOCK_MONOTONIC),
        }
    }

    /// Unix nanoseconds of a kernel timestamp; 0 stays 0 (never set).
    pub fn unix(self, ktime_ns: u64) -> u64 {
        if ktime_ns == 0 {
            return 0;
        }
        (i128::from(ktime_ns) + self.offset).clamp(0, u64::MAX as i128) as u64
    }
}
