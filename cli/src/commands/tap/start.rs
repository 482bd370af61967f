//! `coral tap start`

use super::target::SpecArgs;
use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::{self, Output};
use coral_proto::v1::StartCollectorRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,

    #[command(flatten)]
    pub select: crate::commands::fleet::Selection,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    args.select.refuse_without_colony()?;
    let response = ctx
        .client
        .start_collector(StartCollectorRequest {
            spec: Some(args.spec.to_spec()),
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        return render::json_line(&response);
    }
    for w in &response.warnings {
        crate::render::note!("warning: {w}");
    }
    if let Some(info) = &response.collector {
        render::out(&info.id)?;
        crate::render::note!(
            "started {} on {}, expires in {} (coral tap events {} --follow)",
            view::kind(info),
            view::target(info),
            view::remaining(info),
            info.id
        );
    }
    Ok(())
}
