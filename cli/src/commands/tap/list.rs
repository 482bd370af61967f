//! `coral tap list`

use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::render::{self, Output, align_right, table};
use coral_proto::v1::ListCollectorsRequest;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(mut ctx: Ctx, _: Args) -> anyhow::Result<()> {
    let list = ctx
        .client
        .list_collectors(ListCollectorsRequest {})
        .await
        .map_err(CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        for c in &list.collectors {
            render::json_line(c)?;
        }
        return Ok(());
    }
    if list.collectors.is_empty() {
        return Ok(render::out("no collectors")?);
    }
    let mut t = table(["ID", "KIND", "STATE", "TARGET", "REMAINING", "RECORDS"]);
    for c in &list.collectors {
        t.add_row([
            c.id.clone(),
            view::kind(c).to_string(),
            render::state_name(c.state).to_string(),
            view::target(c),
            view::remaining(c),
            c.last_seq.to_string(),
        ]);
    }
    align_right(&mut t, [4, 5]);
    Ok(render::out(t)?)
}
