//! `coral tap stop`

use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::{self, Output};
use coral_proto::v1::{GetEventsRequest, StopCollectorRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Collector id.
    pub id: String,
}

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    let info = ctx
        .client
        .stop_collector(StopCollectorRequest {
            id: args.id.clone(),
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        return render::json_line(&info);
    }
    render::out(format!(
        "collector {} {}",
        info.id,
        render::state_name(info.state)
    ))?;
    // The final record is the last one: fetch just it.
    let page = ctx
        .client
        .get_events(GetEventsRequest {
            id: args.id,
            after_seq: info.last_seq.saturating_sub(1),
            max: 1,
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    if let Some(record) = page.records.last() {
        render::out(view::report(record, crate::kinds::ViewOptions::default()))?;
    }
    Ok(())
}
