//! `coral tap run`: start, watch live, print the final result.

use super::target::SpecArgs;
use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::kinds::cpu_profile::export;
use crate::kinds::http_latency::SortBy;
use crate::kinds::{Kind, ViewOptions};
use crate::render::Output;
use coral_proto::v1::StartCollectorRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,

    #[command(flatten)]
    pub select: crate::commands::fleet::Selection,

    /// When it ends, write the result to FILE, a flamegraph SVG (or by
    /// extension: .folded stacks, .pb.gz pprof, .txt table).
    #[arg(long, value_name = "FILE", help_heading = "cpu-profile")]
    pub out: Option<std::path::PathBuf>,

    /// At the end, the tree of the processes seen.
    #[arg(long, help_heading = "process-events")]
    pub tree: bool,

    /// Order of the route table.
    #[arg(long, value_enum, default_value_t, help_heading = "http-latency")]
    pub sort: SortBy,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    args.select.refuse_without_colony()?;
    if args.out.is_some() && args.spec.kind() != Kind::CpuProfile {
        return Err(crate::client::CliError::Usage(format!(
            "--out is a cpu-profile flag; this collector is {} (--kind {})",
            args.spec.kind().name(),
            args.spec.kind().name()
        ))
        .into());
    }
    let response = ctx
        .client
        .start_collector(StartCollectorRequest {
            spec: Some(args.spec.to_spec()),
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    let info = response
        .collector
        .ok_or_else(|| anyhow::anyhow!("agent answered without a collector"))?;
    if ctx.output == Output::Table {
        for w in &response.warnings {
            crate::render::note!("warning: {w}");
        }
        crate::render::note!(
            "{} {} on {} for {} (Ctrl-C stops it early)",
            view::kind(&info),
            info.id,
            view::target(&info),
            view::remaining(&info)
        );
    }
    // From seq 1: nothing recorded since the start is missed.
    let opts = ViewOptions {
        sort: args.sort,
        tree: args.tree,
        ..Default::default()
    };
    let followed = view::follow(&mut ctx.client, &info.id, 1, ctx.output, opts, true).await?;
    if ctx.output == Output::Table {
        view::print_result(&followed, opts)?;
    }
    view::ensure_not_failed(&followed)?;
    if let Some(path) = &args.out {
        let record = followed
            .last
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the collector recorded no result to write"))?;
        export::write(
            record,
            export::Format::resolve(None, Some(path)),
            Some(path),
        )?;
    }
    Ok(())
}
