//! cpu-profile results for people and for profiling tools: the top-functions
//! table, folded stacks (Brendan Gregg's format, what `flamegraph.pl`,
//! inferno and speedscope read), a flamegraph SVG (inferno) and pprof
//! ([`pprof`]); and the files `--out` / `--format` write ([`export`]).

pub mod export;
pub mod pprof;

use super::{Aggregate, ViewOptions};
use crate::render::{align_right, duration_ns, table};
use coral_proto::v1::{self as pb, CpuProfile, Frame, ProfileStack, collector_spec::Config};
use std::collections::{HashMap, HashSet};

pub const ABOUT: &str = "Sampled, symbolized CPU stacks";
/// Profiles are cumulative snapshots every 2 s; there is no interval to set.
pub const TAKES_INTERVAL: bool = false;

/// cpu-profile's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "cpu-profile")]
#[group(id = "cpu-profile flags")]
pub struct Flags {
    /// Samples per second per CPU (default 49).
    #[arg(long, short = 'F')]
    pub frequency: Option<u32>,

    /// Count samples of idle CPUs too.
    #[arg(long)]
    pub include_idle: bool,
}

pub fn config(flags: &Flags, _interval_ns: u64) -> Config {
    Config::CpuProfile(pb::CpuProfileConfig {
        frequency_hz: flags.frequency.unwrap_or(0),
        include_idle: flags.include_idle,
    })
}

impl Aggregate for CpuProfile {
    fn summary(&self) -> String {
        summary_line(self)
    }

    fn report(&self, opts: &ViewOptions) -> String {
        report(self, opts.rows)
    }
}

/// A frame's name in text outputs: the function, and where it could not be
/// symbolized, the module it is in.
pub fn frame_name(f: &Frame) -> String {
    if f.function == "[unknown]" && !f.module.is_empty() {
        format!("[unknown] ({})", f.module)
    } else {
        f.function.clone()
    }
}

/// One function's share of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionShare {
    pub function: String,
    pub module: String,
    /// Samples in which it was the leaf (running itself). Code inlined into
    /// a function is its own, as `perf report` counts symbols: the leaf is
    /// the innermost frame that is not inlined, so `core::hint::black_box`
    /// or a comparison inlined into a hot loop is not reported as hotter
    /// than the loop (it once was, by 35% to 40%, in the mcp test's burner).
    pub self_samples: u64,
    /// Samples in which it was anywhere on the stack (itself or callees).
    pub total_samples: u64,
}

/// Every function's self and total samples, hottest (by self, then total) first.
pub fn functions(p: &CpuProfile) -> Vec<FunctionShare> {
    let mut by_name: HashMap<(String, String), FunctionShare> = HashMap::new();
    for s in &p.stacks {
        let mut on_stack = HashSet::new();
        let leaf = s
            .frames
            .iter()
            .rposition(|f| !f.inlined)
            .unwrap_or(s.frames.len().saturating_sub(1));
        for (i, f) in s.frames.iter().enumerate() {
            let key = (frame_name(f), f.module.clone());
            let e = by_name.entry(key.clone()).or_insert_with(|| FunctionShare {
                function: key.0.clone(),
                module: key.1.clone(),
                self_samples: 0,
                total_samples: 0,
            });
            if i == leaf {
                e.self_samples += s.count;
            }
            // A recursive function counts once per sample.
            if on_stack.insert(key) {
                e.total_samples += s.count;
            }
        }
    }
    let mut out: Vec<_> = by_name.into_values().collect();
    out.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(b.total_samples.cmp(&a.total_samples))
            .then(a.function.cmp(&b.function))
    });
    out
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

/// The header line: samples, time, rate, losses, spread.
fn headline(p: &CpuProfile) -> String {
    let pids: HashSet<u32> = p.stacks.iter().map(|s| s.pid).collect();
    let mut line = format!(
        "{} samples over {} at {} Hz, {} stacks in {} process{}",
        p.total_samples,
        duration_ns(p.elapsed_ns),
        p.frequency_hz,
        p.stacks.len(),
        pids.len(),
        if pids.len() == 1 { "" } else { "es" }
    );
    if p.lost_samples > 0 {
        line.push_str(&format!(
            ", {} lost ({:.1}%)",
            p.lost_samples,
            pct(p.lost_samples, p.total_samples + p.lost_samples)
        ));
    }
    line
}

/// The top `rows` functions by self time, with their total (inclusive) share.
pub fn report(p: &CpuProfile, rows: usize) -> String {
    if p.total_samples == 0 {
        return format!("{}\nno samples: was the target on a CPU?\n", headline(p));
    }
    let all = functions(p);
    let mut t = table(["SELF%", "SELF", "TOTAL%", "TOTAL", "FUNCTION", "MODULE"]);
    for f in all.iter().filter(|f| f.self_samples > 0).take(rows) {
        t.add_row([
            format!("{:.1}", pct(f.self_samples, p.total_samples)),
            f.self_samples.to_string(),
            format!("{:.1}", pct(f.total_samples, p.total_samples)),
            f.total_samples.to_string(),
            f.function.clone(),
            f.module.clone(),
        ]);
    }
    align_right(&mut t, [0, 1, 2, 3]);
    format!("{}\n{t}\n", headline(p))
}

/// One line for the live view: samples and the three hottest functions.
pub fn summary_line(p: &CpuProfile) -> String {
    let top: Vec<String> = functions(p)
        .into_iter()
        .filter(|f| f.self_samples > 0)
        .take(3)
        .map(|f| {
            format!(
                "{} {:.1}%",
                f.function,
                pct(f.self_samples, p.total_samples)
            )
        })
        .collect();
    let lost = if p.lost_samples > 0 {
        format!(" ({} lost)", p.lost_samples)
    } else {
        String::new()
    };
    format!(
        "{:>6.2}s  {} samples{lost}  top: {}",
        p.elapsed_ns as f64 / 1e9,
        p.total_samples,
        top.join(", ")
    )
}

/// A frame as a folded-stack element: `;` separates frames in that format
/// (and appears in Rust array types), kernel frames get the `_[k]` suffix
/// flamegraph tools color by, inlined ones `_[i]`.
fn folded_frame(f: &Frame) -> String {
    let name = frame_name(f).replace(';', ":");
    if f.kernel {
        format!("{name}_[k]")
    } else if f.inlined {
        format!("{name}_[i]")
    } else {
        name
    }
}

fn folded_line(s: &ProfileStack) -> String {
    let mut line = if s.comm.is_empty() {
        format!("pid {}", s.pid)
    } else {
        s.comm.replace(';', ":")
    };
    for f in &s.frames {
        line.push(';');
        line.push_str(&folded_frame(f));
    }
    line
}

/// Folded stacks: `comm;root;...;leaf count` per line, identical stacks
/// merged, sorted. The counts add up to `total_samples`.
pub fn folded(p: &CpuProfile) -> String {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for s in &p.stacks {
        *merged.entry(folded_line(s)).or_default() += s.count;
    }
    let mut lines: Vec<_> = merged.into_iter().collect();
    lines.sort();
    let mut out = String::new();
    for (stack, count) in lines {
        out.push_str(&format!("{stack} {count}\n"));
    }
    out
}

/// A flamegraph of the profile (inferno), titled `title`.
pub fn flamegraph(p: &CpuProfile, title: &str) -> anyhow::Result<Vec<u8>> {
    let text = folded(p);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some(headline(p));
    opts.count_name = "samples".into();
    // Kernel frames (_[k]) orange, inlined (_[i]) aqua, C++/Rust yellow.
    opts.colors =
        inferno::flamegraph::Palette::Multi(inferno::flamegraph::color::MultiPalette::Java);
    // The same input always gives the same SVG.
    opts.deterministic = true;
    let mut svg = Vec::new();
    if text.is_empty() {
        // inferno refuses empty input; say so in the picture instead.
        opts.notes = "no samples".into();
        inferno::flamegraph::from_lines(&mut opts, ["[no samples] 1"], &mut svg)?;
    } else {
        inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg)?;
    }
    Ok(svg)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn f(function: &str, module: &str, kernel: bool) -> Frame {
        Frame {
            function: function.into(),
            module: module.into(),
            kernel,
            address: 0x1000,
            inlined: false,
        }
    }

    /// 60 samples in `alpha` (via main), 20 in `beta`, 20 in the kernel
    /// under a read from `main`.
    pub(crate) fn profile() -> CpuProfile {
        let main = f("main", "burn", false);
        CpuProfile {
            elapsed_ns: 2_000_000_000,
            frequency_hz: 50,
            total_samples: 100,
            lost_samples: 2,
            stacks: vec![
                ProfileStack {
                    pid: 42,
                    comm: "burn".into(),
                    frames: vec![main.clone(), f("alpha", "burn", false)],
                    count: 60,
                    ..Default::default()
                },
                ProfileStack {
                    pid: 42,
                    comm: "burn".into(),
                    frames: vec![main.clone(), f("beta", "burn", false)],
                    count: 20,
                    ..Default::default()
                },
                ProfileStack {
                    pid: 42,
                    comm: "burn".into(),
                    frames: vec![
                        main,
                        f("[unknown]", "libc.so.6", false),
                        f("vfs_read", "[kernel]", true),
                    ],
                    count: 20,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn self_and_total_shares() {
        let fns = functions(&profile());
        let get = |n: &str| fns.iter().find(|f| f.function == n).unwrap();
        assert_eq!(get("alpha").self_samples, 60);
        assert_eq!(get("main").self_samples, 0);
        assert_eq!(get("main").total_samples, 100);
        assert_eq!(get("[unknown] (libc.so.6)").total_samples, 20);
        assert_eq!(fns[0].function, "alpha");
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let mut p = profile();
        p.stacks[0].frames.insert(1, f("alpha", "burn", false));
        let fns = functions(&p);
        let alpha = fns.iter().find(|f| f.function == "alpha").unwrap();
        assert_eq!(alpha.total_samples, 60);
    }

    #[test]
    fn folded_lines_add_up() {
        let text = folded(&profile());
        assert_eq!(
            text,
            "burn;main;[unknown] (libc.so.6);vfs_read_[k] 20\n\
             burn;main;alpha 60\n\
             burn;main;beta 20\n"
        );
    }

    #[test]
    fn semicolons_in_names_do_not_split_frames() {
        let mut p = profile();
        p.stacks[0].frames[1].function = "drop::<[u8; 16]>".into();
        assert!(folded(&p).contains("burn;main;drop::<[u8: 16]> 60"));
    }

    #[test]
    fn flamegraph_names_the_functions() {
        let svg = String::from_utf8(flamegraph(&profile(), "test").unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("alpha") && svg.contains("vfs_read"));
        let empty = CpuProfile::default();
        let svg = String::from_utf8(flamegraph(&empty, "test").unwrap()).unwrap();
        assert!(svg.contains("no samples"));
    }

    #[test]
    fn report_snapshot() {
        insta::assert_snapshot!(report(&profile(), 10));
    }

    #[test]
    fn inlined_leaves_count_for_the_function_they_are_in() {
        let mut p = profile();
        let mut inl = f("core::hint::black_box", "burn", false);
        inl.inlined = true;
        // 60 in alpha: 40 of them on a line of black_box inlined into it.
        p.stacks[0].count = 20;
        let mut with_inl = p.stacks[0].clone();
        with_inl.frames.push(inl);
        with_inl.count = 40;
        p.stacks.push(with_inl);
        let all = functions(&p);
        assert_eq!(all[0].function, "alpha");
        assert_eq!((all[0].self_samples, all[0].total_samples), (60, 60));
        let bb = all
            .iter()
            .find(|f| f.function == "core::hint::black_box")
            .unwrap();
        assert_eq!((bb.self_samples, bb.total_samples), (0, 40));
    }

    #[test]
    fn summary_names_the_hottest() {
        let line = summary_line(&profile());
        assert!(line.contains("100 samples (2 lost)"), "{line}");
        assert!(line.contains("alpha 60.0%"), "{line}");
    }
}
