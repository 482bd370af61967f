//! `coral tap run`: start, watch live, print the final result.

use super::target::SpecArgs;
use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::Output;
use coral_proto::v1::StartCollectorRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
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
    let followed = view::follow(&mut ctx.client, &info.id, 1, ctx.output, true).await?;
    if ctx.output == Output::Table {
        view::print_result(&followed)?;
    }
    Ok(())
}
