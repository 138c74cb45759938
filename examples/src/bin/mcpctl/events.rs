//! `events [NAME] [--follow]`: the recent lifecycle events every server's
//! status keeps, oldest first, as a table (or JSON/YAML); with `--follow`,
//! then each new event from mcpd's event stream as it happens, one line
//! each, until mcpd ends the stream.

use futures::StreamExt;
use mcp_lifecycle::{LifecycleEvent, Timestamp};

use crate::Context;
use crate::cli::EventsArgs;
use crate::client::StreamItem;
use crate::output::{self, NONE};

/// The kind of an event as the API names it (`instance_phase_changed`).
fn kind_name(event: &LifecycleEvent) -> String {
    serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Recent events as a table: when, server (when `with_server`), instance,
/// kind, message.
pub(crate) fn events_table(events: &[LifecycleEvent], now: Timestamp, with_server: bool) -> String {
    let header = ["AGE", "SERVER", "INSTANCE", "KIND", "MESSAGE"];
    let keep = |i: &usize| with_server || *i != 1;
    let mut table = output::table(
        header
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep(i))
            .map(|(_, h)| h),
    );
    for e in events {
        let cells = [
            output::relative(e.at, now),
            e.server.clone(),
            e.instance
                .as_ref()
                .map_or_else(|| NONE.to_owned(), ToString::to_string),
            kind_name(e),
            e.message.clone(),
        ];
        table.add_row(
            cells
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep(i))
                .map(|(_, c)| c),
        );
    }
    output::render(table)
}

/// One followed event as a line: its time, server, instance, kind, message.
fn event_line(e: &LifecycleEvent) -> String {
    let instance = e
        .instance
        .as_ref()
        .map_or_else(|| NONE.to_owned(), ToString::to_string);
    format!(
        "{}   {}   {}   {}   {}\n",
        e.at,
        e.server,
        instance,
        kind_name(e),
        e.message
    )
}

/// Runs `events`.
pub(crate) async fn run(ctx: &Context, args: &EventsArgs) -> anyhow::Result<()> {
    // Subscribe first, so nothing falls between the snapshot and the stream.
    let stream = if args.follow {
        Some(Box::pin(ctx.client.events(args.name.as_deref()).await?))
    } else {
        None
    };
    let servers = match &args.name {
        Some(name) => vec![ctx.client.get(name).await?.status],
        None => ctx.client.list().await?.servers,
    };
    let mut recent: Vec<LifecycleEvent> =
        servers.into_iter().flat_map(|s| s.recent_events).collect();
    recent.sort_by_key(|e| e.at);
    match ctx.output {
        Some(format) if args.follow => {
            for e in &recent {
                output::emit(&output::streamed(e, format)?)?;
            }
        }
        Some(format) => {
            output::emit(&output::structured(
                &serde_json::json!({ "events": recent }),
                format,
            )?)?;
        }
        None if args.follow => {
            for e in &recent {
                output::emit(&event_line(e))?;
            }
        }
        None if recent.is_empty() => output::emit("No events.\n")?,
        None => output::emit(&events_table(&recent, Timestamp::now_system(), true))?,
    }
    let Some(mut stream) = stream else {
        return Ok(());
    };
    let last_shown = recent.last().cloned();
    while let Some(item) = stream.next().await {
        match item? {
            StreamItem::Event(e) => {
                // The snapshot may already hold the first streamed events.
                if last_shown
                    .as_ref()
                    .is_some_and(|l| e.at <= l.at && recent.contains(&e))
                {
                    continue;
                }
                let text = match ctx.output {
                    Some(format) => output::streamed(&*e, format)?,
                    None => event_line(&e),
                };
                output::emit(&text)?;
            }
            StreamItem::Lagged(missed) => {
                eprintln!("warning: the event stream skipped {missed} events");
            }
        }
    }
    Ok(())
}
