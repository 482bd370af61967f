//! `coral tap events`

use super::view;
use crate::client::CliError;
use crate::commands::Ctx;
use crate::kinds::ViewOptions;
use crate::kinds::cpu_profile::export;
use crate::kinds::http_latency::SortBy;
use crate::render::{self, Output};
use coral_proto::v1::{Gap, GetEventsRequest, StreamEventsResponse, stream_events_response::Event};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Collector id.
    pub id: String,

    /// Keep following live records until the collector ends.
    #[arg(long, short)]
    pub follow: bool,

    /// Only records after this seq (a cursor from an earlier call).
    #[arg(long, default_value_t = 0)]
    pub after: u64,

    /// Write the cpu-profile result in this format instead of listing records
    /// (with --follow: once the collector ends).
    #[arg(long, value_enum, help_heading = "cpu-profile")]
    pub format: Option<export::Format>,

    /// Where --format writes (default: stdout); without --format the format
    /// follows the extension: .svg, .folded, .pb.gz (pprof), .txt (table).
    #[arg(long, value_name = "FILE", help_heading = "cpu-profile")]
    pub out: Option<std::path::PathBuf>,

    /// At the end, the tree of the processes seen.
    #[arg(long, help_heading = "process-events")]
    pub tree: bool,

    /// Order of the http-latency route table.
    #[arg(long, value_enum, default_value_t, help_heading = "http-latency")]
    pub sort: SortBy,
}

/// Records fetched per GetEvents call.
const PAGE: u32 = 500;

pub async fn run(mut ctx: Ctx, args: Args) -> anyhow::Result<()> {
    if args.format.is_some() || args.out.is_some() {
        let format = export::Format::resolve(args.format, args.out.as_deref());
        let out = args.out.as_deref();
        return export::run(&mut ctx.client, &args.id, args.follow, format, out).await;
    }
    let opts = ViewOptions {
        sort: args.sort,
        tree: args.tree,
        ..Default::default()
    };
    if args.follow {
        let followed = view::follow(
            &mut ctx.client,
            &args.id,
            args.after + 1,
            ctx.output,
            opts,
            false,
        )
        .await?;
        if ctx.output == Output::Table {
            view::print_result(&followed, opts)?;
        }
        return view::ensure_not_failed(&followed);
    }
    let mut cursor = args.after;
    let mut seen = view::Followed::default();
    loop {
        let page = ctx
            .client
            .get_events(GetEventsRequest {
                id: args.id.clone(),
                after_seq: cursor,
                max: PAGE,
            })
            .await
            .map_err(CliError::from)?
            .into_inner();
        if page.missed > 0 {
            if ctx.output == Output::Json {
                let gap = Gap {
                    from_seq: cursor + 1,
                    count: page.missed,
                };
                render::json_line(&StreamEventsResponse {
                    event: Some(Event::Gap(gap)),
                })?;
            } else {
                crate::render::note!(
                    "warning: {} records after seq {cursor} were dropped",
                    page.missed
                );
            }
        }
        let n = page.records.len();
        for record in page.records {
            if ctx.output == Output::Json {
                render::json_line(&StreamEventsResponse {
                    event: Some(Event::Record(record.clone())),
                })?;
            }
            seen.keep(record);
        }
        cursor = page.next_after_seq;
        // Pages also end at the agent's byte limit: only an empty page (or
        // the end of an ended collector) says there is no more.
        if n == 0 || page.end {
            break;
        }
    }
    if ctx.output == Output::Table {
        if let Some(r) = &seen.last {
            let flag = if r.r#final { " (final)" } else { "" };
            render::out(format!(
                "seq {}{flag} at {}",
                r.seq,
                render::timestamp(r.time_unix_nano)
            ))?;
        }
        view::print_result(&seen, opts)?;
        crate::render::note!("next cursor: --after {cursor}");
    }
    Ok(())
}
