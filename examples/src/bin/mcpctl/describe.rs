//! `describe server NAME`: everything mcpd knows about one server, as
//! kubectl's describe lays it out — counts, source and digests, update
//! state, endpoints, instances (attempt, next retry, reason) and the last
//! events — or the API's JSON/YAML with `-o`.

use std::fmt::Write as _;

use mcp_lifecycle::Timestamp;

use crate::Context;
use crate::cli::DescribeArgs;
use crate::client::ServerView;
use crate::get::instances_table;
use crate::output::{self, NONE};

/// Runs `describe`.
pub(crate) async fn run(ctx: &Context, args: &DescribeArgs) -> anyhow::Result<()> {
    let view = ctx.client.get(&args.name).await?;
    let text = match ctx.output {
        Some(format) => output::structured(&view, format)?,
        None => describe(&view, Timestamp::now_system()),
    };
    output::emit(&text)?;
    Ok(())
}

/// Indents every line of `text` by two spaces.
fn indented(text: &str) -> String {
    text.lines().fold(String::new(), |mut out, line| {
        let _ = writeln!(out, "  {line}");
        out
    })
}

/// The text of `describe server`.
pub(crate) fn describe(view: &ServerView, now: Timestamp) -> String {
    let s = &view.status;
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{:<18}{value}", format!("{label}:"));
    };
    field("Name", s.name.clone());
    field("Phase", s.phase.name().to_owned());
    field(
        "Replicas",
        format!(
            "{} desired | {} ready | {} starting | {} unhealthy | {} failed",
            s.desired, s.ready, s.starting, s.unhealthy, s.failed
        ),
    );
    field("Stopped", s.stopped.to_string());
    field("Source", s.configured_source.clone());
    field("Rollout image", output::or_none(s.rollout_image.as_deref()));
    field(
        "Running digests",
        if s.running_digests.is_empty() {
            NONE.to_owned()
        } else {
            s.running_digests.join(", ")
        },
    );
    field(
        "Observed",
        format!(
            "{} ({})",
            s.observed_at,
            output::relative(s.observed_at, now)
        ),
    );

    let u = &s.update;
    let _ = writeln!(out, "Update:");
    let mut update = output::plain_table();
    update.add_row(["State:".to_owned(), u.state.name().to_owned()]);
    update.add_row([
        "Available digest:".to_owned(),
        output::or_none(u.available_digest.as_deref()),
    ]);
    update.add_row([
        "Target digest:".to_owned(),
        output::or_none(u.target_digest.as_deref()),
    ]);
    update.add_row([
        "Last check:".to_owned(),
        output::relative_or_none(u.last_check, now),
    ]);
    update.add_row([
        "Next check:".to_owned(),
        output::relative_or_none(u.next_check_at, now),
    ]);
    update.add_row([
        "Last failure:".to_owned(),
        u.last_failure.as_ref().map_or_else(
            || NONE.to_owned(),
            |f| format!("{} ({})", f.message, output::relative(f.at, now)),
        ),
    ]);
    update.add_row([
        "Last reinstall:".to_owned(),
        output::relative_or_none(u.last_reinstall_at, now),
    ]);
    out.push_str(&indented(&output::render(update)));

    let _ = writeln!(out, "Endpoints:");
    if view.endpoints.is_empty() {
        let _ = writeln!(out, "  {NONE}");
    } else {
        let mut endpoints = output::table(["KIND", "URL"]);
        for e in &view.endpoints {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            endpoints.add_row([kind, e.url.clone()]);
        }
        out.push_str(&indented(&output::render(endpoints)));
    }

    let _ = writeln!(out, "Instances:");
    if s.instances.is_empty() {
        let _ = writeln!(out, "  {NONE}");
    } else {
        out.push_str(&indented(&instances_table(
            std::slice::from_ref(s),
            now,
            false,
        )));
    }

    let _ = writeln!(out, "Events:");
    if s.recent_events.is_empty() {
        let _ = writeln!(out, "  {NONE}");
    } else {
        out.push_str(&indented(&crate::events::events_table(
            &s.recent_events,
            now,
            false,
        )));
    }
    out
}
