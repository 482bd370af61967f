//! `coral tap get`

use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::{self, Output};
use coral_proto::v1::GetCollectorRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Collector id.
    pub id: String,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    let info = ctx
        .client
        .get_collector(GetCollectorRequest { id: args.id })
        .await
        .map_err(CliError::from)?
        .into_inner();
    match ctx.output {
        Output::Json => render::json_line(&info),
        Output::Table => Ok(render::out(view::describe(&info))?),
    }
}
