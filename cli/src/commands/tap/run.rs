//! `coral tap run`: start, watch live, print the final result.

use super::export;
use super::target::{Kind, SpecArgs};
use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::Output;
use crate::render::http::SortBy;
use coral_proto::v1::StartCollectorRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// cpu-profile: when it ends, write the result to FILE, a flamegraph SVG
    /// (or by extension: .folded stacks, .pb.gz pprof, .txt table).
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,

    /// Order of the http-latency route table.
    #[arg(long, value_enum, default_value_t)]
    pub sort: SortBy,

    /// process-events: print the tree of the processes seen at the end.
    #[arg(long)]
    pub tree: bool,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    if args.out.is_some() && args.spec.kind != Kind::CpuProfile {
        let kind = clap::ValueEnum::to_possible_value(&args.spec.kind)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        anyhow::bail!("--out writes cpu-profile results, not {kind} ones");
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
            eprintln!("warning: {w}");
        }
        eprintln!(
            "{} {} on {} for {} (Ctrl-C stops it early)",
            view::kind(&info),
            info.id,
            view::target(&info),
            view::remaining(&info)
        );
    }
    // From seq 1: nothing recorded since the start is missed.
    let opts = view::ViewOptions {
        sort: args.sort,
        tree: args.tree,
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
