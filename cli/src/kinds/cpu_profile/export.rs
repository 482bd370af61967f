//! Writing a cpu-profile result in a file format: `tap events --format`,
//! `tap run --out`.

use super::pprof;
use crate::client::{CliError, Client};
use crate::render;
use clap::ValueEnum;
use coral_proto::v1::{
    CollectorState, GetCollectorRequest, GetEventsRequest, Record, record::Payload,
};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The top-functions table (self and total %).
    Table,
    /// Folded stacks, one `comm;root;...;leaf count` line per stack.
    Folded,
    /// A flamegraph (SVG, inferno).
    Svg,
    /// pprof: gzipped profile.proto, for `go tool pprof` and friends.
    Pprof,
}

impl Format {
    /// `explicit`, else what `path`'s extension says, else a flamegraph.
    pub fn resolve(explicit: Option<Format>, path: Option<&Path>) -> Format {
        if let Some(f) = explicit {
            return f;
        }
        let name = path
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".folded") || name.ends_with(".collapsed") {
            Format::Folded
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Format::Pprof
        } else if name.ends_with(".txt") {
            Format::Table
        } else {
            Format::Svg
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Folded => "folded stacks",
            Format::Svg => "flamegraph",
            Format::Pprof => "pprof profile",
        }
    }
}

/// Renders `record` (a cpu-profile result) as `format` into `out`, or stdout.
pub fn write(record: &Record, format: Format, out: Option<&Path>) -> anyhow::Result<()> {
    let Some(Payload::CpuProfile(p)) = &record.payload else {
        anyhow::bail!(
            "record {} is not a cpu-profile result: --format and --out apply to cpu-profile collectors",
            record.seq
        );
    };
    let bytes = match format {
        Format::Table => super::report(p, render::TABLE_ROWS).into_bytes(),
        Format::Folded => super::folded(p).into_bytes(),
        Format::Svg => {
            let title = format!("coral cpu-profile {}", record.collector_id);
            super::flamegraph(p, &title)?
        }
        Format::Pprof => pprof::encode(p, record.time_unix_nano)?,
    };
    match out {
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            let seq = if record.r#final {
                "final record".to_string()
            } else {
                format!("record {} (the collector is still running)", record.seq)
            };
            crate::render::note!(
                "wrote {} of {} samples ({seq}) to {}",
                format.name(),
                p.total_samples,
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            if format == Format::Pprof && stdout.is_terminal() {
                anyhow::bail!("pprof is binary: give --out FILE or redirect stdout");
            }
            stdout.write_all(&bytes)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// `tap events ID --format ... [--out FILE] [--follow]`: the collector's
/// latest record (its result once ended), after waiting for the end with
/// `follow`.
pub async fn run(
    client: &mut Client,
    id: &str,
    follow: bool,
    format: Format,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let info = loop {
        let info = client
            .get_collector(GetCollectorRequest { id: id.to_string() })
            .await
            .map_err(CliError::from)?
            .into_inner();
        let running = matches!(
            CollectorState::try_from(info.state),
            Ok(CollectorState::Starting | CollectorState::Running)
        );
        if !(follow && running) {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if info.last_seq == 0 {
        anyhow::bail!(
            "collector {id} has no records yet ({})",
            render::state_name(info.state)
        );
    }
    // Profile records are cumulative: the last one is the whole result.
    let page = client
        .get_events(GetEventsRequest {
            id: id.to_string(),
            after_seq: info.last_seq - 1,
            max: 1,
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    let record =
        page.records.into_iter().next().ok_or_else(|| {
            anyhow::anyhow!("record {} of {id} is no longer retained", info.last_seq)
        })?;
    write(&record, format, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension_unless_given() {
        let f = |explicit, p: &str| Format::resolve(explicit, Some(Path::new(p)));
        assert_eq!(f(None, "cpu.svg"), Format::Svg);
        assert_eq!(f(None, "cpu.folded"), Format::Folded);
        assert_eq!(f(None, "cpu.pb.gz"), Format::Pprof);
        assert_eq!(f(None, "cpu.txt"), Format::Table);
        assert_eq!(f(None, "flame"), Format::Svg);
        assert_eq!(f(Some(Format::Folded), "cpu.svg"), Format::Folded);
        assert_eq!(Format::resolve(None, None), Format::Svg);
    }

    #[test]
    fn only_profiles_are_exported() {
        let record = Record {
            seq: 3,
            payload: Some(Payload::SyscallStats(Default::default())),
            ..Default::default()
        };
        let err = write(&record, Format::Folded, Some(Path::new("/nonexistent/x"))).unwrap_err();
        assert!(
            err.to_string().contains("not a cpu-profile result"),
            "{err}"
        );
    }

    #[test]
    fn folded_goes_to_the_file() {
        let record = Record {
            r#final: true,
            payload: Some(Payload::CpuProfile(super::super::tests::profile())),
            ..Default::default()
        };
        let path = std::env::temp_dir().join(format!("coral-export-{}.folded", std::process::id()));
        write(&record, Format::Folded, Some(&path)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(text.contains("burn;main;alpha 60"), "{text}");
    }
}
