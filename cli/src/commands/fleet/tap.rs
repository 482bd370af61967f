//! `coral --colony URL tap ...`: the tap commands on fleet taps. Ids are
//! fleet tap ids; records come from the colony's store, each with its agent
//! and node.

use super::records;
use super::{Ctx, member_status};
use crate::client::CliError;
use crate::commands::tap::{Command, view};
use crate::kinds::ViewOptions;
use crate::render::{self, Output, align_right, table};
use coral_proto::colony::v1::{
    ExtendFleetTapRequest, FleetTap, FleetTapState, GetFleetTapRequest, ListFleetTapsRequest,
    MemberStatus, QueryRecordsRequest, StartFleetTapRequest, StopFleetTapRequest,
};
use coral_proto::v1::{CollectorInfo, CollectorState};
use std::time::Duration;

pub async fn run(ctx: Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Start(a) => start(ctx, a).await,
        Command::Events(a) => events(ctx, a).await,
        Command::Run(a) => run_tap(ctx, a).await,
        Command::Get(a) => get(ctx, a.id).await,
        Command::List(_) => list(ctx).await,
        Command::Stop(a) => stop(ctx, a.id).await,
        Command::Extend(a) => extend(ctx, a).await,
    }
}

fn tap_state(t: &FleetTap) -> &'static str {
    match FleetTapState::try_from(t.state) {
        Ok(FleetTapState::Running) => "running",
        Ok(FleetTapState::Ended) => "ended",
        _ => "unknown",
    }
}

/// The tap's spec as a CollectorInfo, for the agent views (kind, target).
fn as_info(t: &FleetTap) -> CollectorInfo {
    CollectorInfo {
        id: t.id.clone(),
        spec: t.spec.clone(),
        state: CollectorState::Running as i32,
        deadline_unix_nano: t.deadline_unix_nano,
        ..Default::default()
    }
}

/// `3 members: 2 collecting, 1 unsupported`.
fn tally(t: &FleetTap) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in &t.members {
        *counts.entry(member_status(m.status)).or_default() += 1;
    }
    let parts: Vec<_> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} agents: {}", t.members.len(), parts.join(", "))
}

fn members_table(t: &FleetTap) -> String {
    let mut table = table([
        "NODE",
        "AGENT",
        "STATUS",
        "COLLECTOR",
        "STATE",
        "STORED",
        "LOST",
        "ERROR",
    ]);
    for m in &t.members {
        table.add_row([
            m.node.clone(),
            m.agent_id.clone(),
            member_status(m.status).to_string(),
            m.collector_id.clone(),
            if m.collector_id.is_empty() {
                "-".to_string()
            } else {
                render::state_name(m.collector_state).to_string()
            },
            format!("{} (seq {})", m.stored_records, m.stored_seq),
            m.lost_records.to_string(),
            m.error.clone(),
        ]);
    }
    align_right(&mut table, [6]);
    table.to_string()
}

fn describe(t: &FleetTap) -> String {
    let info = as_info(t);
    let mut kv = render::kv_table();
    kv.add_row(["fleet tap".to_string(), t.id.clone()]);
    kv.add_row(["kind".to_string(), view::kind(&info).to_string()]);
    kv.add_row(["state".to_string(), tap_state(t).to_string()]);
    kv.add_row(["target".to_string(), view::target(&info)]);
    kv.add_row([
        "created".to_string(),
        render::timestamp(t.created_unix_nano),
    ]);
    kv.add_row([
        "deadline".to_string(),
        render::timestamp(t.deadline_unix_nano),
    ]);
    kv.add_row(["members".to_string(), tally(t)]);
    format!("{kv}\n{}", members_table(t))
}

fn print_members(t: &FleetTap) {
    for m in &t.members {
        if m.status != MemberStatus::Collecting as i32 && m.status != MemberStatus::Complete as i32
        {
            render::note!(
                "  {} ({}): {}: {}",
                m.node,
                m.agent_id,
                member_status(m.status),
                m.error
            );
        }
    }
}

async fn start_tap(
    ctx: &mut Ctx,
    a: &crate::commands::tap::start::Args,
) -> anyhow::Result<FleetTap> {
    let selector = a.select.to_proto()?;
    Ok(ctx
        .client
        .start_fleet_tap(StartFleetTapRequest {
            spec: Some(a.spec.to_spec()),
            selector: Some(selector),
        })
        .await
        .map_err(CliError::from)?
        .into_inner())
}

async fn start(mut ctx: Ctx, a: crate::commands::tap::start::Args) -> anyhow::Result<()> {
    let t = start_tap(&mut ctx, &a).await?;
    if ctx.output == Output::Json {
        return render::json_line(&t);
    }
    render::out(&t.id)?;
    let info = as_info(&t);
    render::note!(
        "fleet tap: {} on {}, {} (coral --colony ... tap events {})",
        view::kind(&info),
        view::target(&info),
        tally(&t),
        t.id
    );
    print_members(&t);
    Ok(())
}

async fn get(mut ctx: Ctx, id: String) -> anyhow::Result<()> {
    let t = ctx
        .client
        .get_fleet_tap(GetFleetTapRequest { id })
        .await
        .map_err(CliError::from)?
        .into_inner();
    match ctx.output {
        Output::Json => render::json_line(&t),
        Output::Table => Ok(render::out(describe(&t))?),
    }
}

async fn list(mut ctx: Ctx) -> anyhow::Result<()> {
    let list = ctx
        .client
        .list_fleet_taps(ListFleetTapsRequest {})
        .await
        .map_err(CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        for t in &list.taps {
            render::json_line(t)?;
        }
        return Ok(());
    }
    if list.taps.is_empty() {
        return Ok(render::out("no fleet taps")?);
    }
    let mut table = table(["ID", "KIND", "STATE", "TARGET", "CREATED", "MEMBERS"]);
    for t in &list.taps {
        let info = as_info(t);
        table.add_row([
            t.id.clone(),
            view::kind(&info).to_string(),
            tap_state(t).to_string(),
            view::target(&info),
            render::timestamp(t.created_unix_nano),
            tally(t),
        ]);
    }
    Ok(render::out(table)?)
}

async fn stop(mut ctx: Ctx, id: String) -> anyhow::Result<()> {
    let t = ctx
        .client
        .stop_fleet_tap(StopFleetTapRequest { id: id.clone() })
        .await
        .map_err(CliError::from)?
        .into_inner();
    if ctx.output == Output::Json {
        return render::json_line(&t);
    }
    render::out(describe(&t))?;
    records::show(
        &mut ctx.client,
        final_records(&id),
        Output::Table,
        ViewOptions::default(),
    )
    .await
}

fn final_records(id: &str) -> QueryRecordsRequest {
    QueryRecordsRequest {
        fleet_tap_id: id.to_string(),
        final_only: true,
        ..Default::default()
    }
}

async fn extend(mut ctx: Ctx, a: crate::commands::tap::extend::Args) -> anyhow::Result<()> {
    let t = ctx
        .client
        .extend_fleet_tap(ExtendFleetTapRequest {
            id: a.id,
            duration_ns: a.by.as_nanos() as u64,
        })
        .await
        .map_err(CliError::from)?
        .into_inner();
    match ctx.output {
        Output::Json => render::json_line(&t),
        Output::Table => {
            render::out(format!(
                "fleet tap {} now expires at {}",
                t.id,
                render::timestamp(t.deadline_unix_nano)
            ))?;
            print_members(&t);
            Ok(())
        }
    }
}

async fn events(mut ctx: Ctx, a: crate::commands::tap::events::Args) -> anyhow::Result<()> {
    if a.format.is_some() || a.out.is_some() {
        return Err(CliError::Usage(
            "--format and --out export one collector's profile: give the agent (--agent) and a collector id".into(),
        )
        .into());
    }
    let opts = ViewOptions {
        sort: a.sort,
        tree: a.tree,
        ..Default::default()
    };
    if a.follow {
        wait_ended(&mut ctx, &a.id, false).await?;
    }
    records::show(
        &mut ctx.client,
        QueryRecordsRequest {
            fleet_tap_id: a.id,
            ..Default::default()
        },
        ctx.output,
        opts,
    )
    .await
}

/// Polls the tap until no member collects; with `stop_on_interrupt`,
/// Ctrl-C stops the tap.
async fn wait_ended(ctx: &mut Ctx, id: &str, stop_on_interrupt: bool) -> anyhow::Result<FleetTap> {
    let mut interrupted = !stop_on_interrupt;
    let mut last = String::new();
    loop {
        let t = ctx
            .client
            .get_fleet_tap(GetFleetTapRequest { id: id.to_string() })
            .await
            .map_err(CliError::from)?
            .into_inner();
        if ctx.output == Output::Table {
            let now = tally(&t);
            if now != last {
                render::note!("{}: {now}", tap_state(&t));
                last = now;
            }
        }
        if t.state != FleetTapState::Running as i32 {
            return Ok(t);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                render::note!("\ninterrupted: stopping fleet tap {id}");
                ctx.client
                    .stop_fleet_tap(StopFleetTapRequest { id: id.to_string() })
                    .await
                    .map_err(CliError::from)?;
            }
        }
    }
}

async fn run_tap(mut ctx: Ctx, a: crate::commands::tap::run::Args) -> anyhow::Result<()> {
    let start_args = crate::commands::tap::start::Args {
        spec: a.spec,
        select: a.select,
    };
    let t = start_tap(&mut ctx, &start_args).await?;
    if ctx.output == Output::Table {
        render::note!("fleet tap {} ({}); Ctrl-C stops it early", t.id, tally(&t));
        print_members(&t);
    } else {
        render::json_line(&t)?;
    }
    let ended = wait_ended(&mut ctx, &t.id, true).await?;
    if ctx.output == Output::Table {
        render::out(members_table(&ended))?;
    }
    records::show(
        &mut ctx.client,
        QueryRecordsRequest {
            fleet_tap_id: t.id,
            ..Default::default()
        },
        ctx.output,
        ViewOptions {
            sort: a.sort,
            tree: a.tree,
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}
