//! `coral tap extend`

use super::target::parse_duration;
use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::{self, Output};
use coral_proto::v1::ExtendCollectorRequest;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Collector id.
    pub id: String,

    /// New remaining lifetime, from now (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    pub by: Duration,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    let info = ctx
        .client
        .extend_collector(ExtendCollectorRequest {
            id: args.id,
            duration_ns: args.by.as_nanos() as u64,
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    match ctx.output {
        Output::Json => render::json_line(&info),
        Output::Table => Ok(render::out(format!(
            "collector {} now expires in {} ({})",
            info.id,
            view::remaining(&info),
            render::timestamp(info.deadline_unix_nano)
        ))?),
    }
}
