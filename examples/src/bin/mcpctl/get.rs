//! `get servers|instances [NAME] [--watch]`: one row per server or per
//! instance, or the API's JSON/YAML with `-o`. `--watch` prints again each
//! time the lifecycle event stream says something changed (and the output
//! did change), until mcpd ends the stream.

use futures::StreamExt;
use mcp_lifecycle::{ServerStatus, Timestamp};

use crate::Context;
use crate::cli::{GetArgs, Resource};
use crate::client::ServerList;
use crate::output::{self, NONE};

/// Runs `get`.
pub(crate) async fn run(ctx: &Context, args: &GetArgs) -> anyhow::Result<()> {
    let mut last = fetch_and_render(ctx, args).await?;
    output::emit(&last)?;
    if !args.watch {
        return Ok(());
    }
    let mut events = Box::pin(ctx.client.events(args.name.as_deref()).await?);
    while let Some(item) = events.next().await {
        item?;
        let text = fetch_and_render(ctx, args).await?;
        if text != last {
            // Tables are printed whole again; JSON/YAML one document each.
            if ctx.output.is_none() {
                output::emit("\n")?;
            }
            output::emit(&text)?;
            last = text;
        }
    }
    Ok(())
}

async fn fetch_and_render(ctx: &Context, args: &GetArgs) -> anyhow::Result<String> {
    let servers = match &args.name {
        Some(name) => vec![ctx.client.get(name).await?.status],
        None => ctx.client.list().await?.servers,
    };
    match (ctx.output, args.resource) {
        (Some(format), Resource::Servers) => {
            let list = ServerList { servers };
            if args.watch {
                output::streamed(&list, format)
            } else {
                output::structured(&list, format)
            }
        }
        (Some(format), Resource::Instances) => {
            let rows: Vec<serde_json::Value> = servers
                .iter()
                .flat_map(|s| {
                    s.instances.iter().map(|i| {
                        let mut row = serde_json::to_value(i).unwrap_or_default();
                        row["server"] = serde_json::Value::String(s.name.clone());
                        row
                    })
                })
                .collect();
            let list = serde_json::json!({ "instances": rows });
            if args.watch {
                output::streamed(&list, format)
            } else {
                output::structured(&list, format)
            }
        }
        (None, Resource::Servers) => Ok(servers_table(&servers)),
        (None, Resource::Instances) => Ok(instances_table(&servers, Timestamp::now_system(), true)),
    }
}

/// One row per server: name, phase, ready/desired, the other counts, the
/// update state and the source.
pub(crate) fn servers_table(servers: &[ServerStatus]) -> String {
    let mut table = output::table([
        "NAME",
        "PHASE",
        "READY",
        "STARTING",
        "UNHEALTHY",
        "FAILED",
        "UPDATE",
        "SOURCE",
    ]);
    for s in servers {
        table.add_row([
            s.name.clone(),
            s.phase.name().to_owned(),
            format!("{}/{}", s.ready, s.desired),
            s.starting.to_string(),
            s.unhealthy.to_string(),
            s.failed.to_string(),
            s.update.state.name().to_owned(),
            s.configured_source.clone(),
        ]);
    }
    if servers.is_empty() {
        return "No servers.\n".to_owned();
    }
    output::render(table)
}

/// One row per instance: its server (when `with_server`), id, phase,
/// attempt, next retry, digest, whether it runs the current spec, and its
/// reason.
pub(crate) fn instances_table(
    servers: &[ServerStatus],
    now: Timestamp,
    with_server: bool,
) -> String {
    let header = [
        "SERVER",
        "INSTANCE",
        "PHASE",
        "ATTEMPT",
        "NEXT RETRY",
        "DIGEST",
        "CURRENT",
        "REASON",
    ];
    let skip = usize::from(!with_server);
    let mut table = output::table(header.into_iter().skip(skip));
    let mut rows = 0;
    for s in servers {
        for i in &s.instances {
            rows += 1;
            let cells = [
                s.name.clone(),
                i.id.to_string(),
                i.phase.clone(),
                i.attempt.to_string(),
                output::relative_or_none(i.next_retry_at, now),
                i.image_digest
                    .as_deref()
                    .map_or_else(|| NONE.to_owned(), output::short_digest),
                if i.current { "yes" } else { "no" }.to_owned(),
                output::or_none(i.reason.as_deref()),
            ];
            table.add_row(cells.into_iter().skip(skip));
        }
    }
    if rows == 0 {
        return "No instances.\n".to_owned();
    }
    output::render(table)
}
