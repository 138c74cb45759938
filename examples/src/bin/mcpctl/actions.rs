//! Actions on one server: `start [--wait] [--timeout]`, `stop [--force]`,
//! `scale --replicas N`, `check-updates` and `set-update-policy`. Each is
//! one API call; a waiting start shows the instances' states on a terminal
//! while mcpd waits for them.

use std::time::Duration;

use futures::StreamExt;
use mcp_lifecycle::Timestamp;

use crate::Context;
use crate::cli::{NameArg, ScaleArgs, StartArgs, StopArgs, UpdatePolicyArgs};
use crate::client::{StatusBody, StreamItem};
use crate::output;
use crate::progress::WaitIndicator;

/// How often a waiting start re-reads the status for its indicator.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Prints an action's answer: the status as JSON/YAML, or `line`.
fn report(ctx: &Context, answer: &StatusBody, line: String) -> anyhow::Result<()> {
    let text = match ctx.output {
        Some(format) => output::structured(answer, format)?,
        None => line,
    };
    output::emit(&text)?;
    Ok(())
}

/// The next item of an optional event stream; never, without one.
async fn next_event<S>(events: &mut Option<S>) -> Option<anyhow::Result<StreamItem>>
where
    S: futures::Stream<Item = anyhow::Result<StreamItem>> + Unpin,
{
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Runs `start`.
pub(crate) async fn start(ctx: &Context, args: &StartArgs) -> anyhow::Result<()> {
    if !args.wait {
        let answer = ctx.client.start(&args.name, None).await?;
        let line = format!("server/{} started\n", args.name);
        return report(ctx, &answer, line);
    }
    let indicator = WaitIndicator::start(&format!("waiting for {} to be ready", args.name));
    // The indicator is a courtesy: without a terminal nothing is read for
    // it, and a failed read just leaves it as it was.
    let mut events = match indicator.is_drawn() {
        true => ctx.client.events(Some(&args.name)).await.ok().map(Box::pin),
        false => None,
    };
    let call = ctx.client.start(&args.name, Some(args.timeout));
    tokio::pin!(call);
    let answer = loop {
        if !indicator.is_drawn() {
            break call.await;
        }
        tokio::select! {
            answer = &mut call => break answer,
            item = next_event(&mut events) => match item {
                Some(Ok(StreamItem::Event(event))) => indicator.observe(&event),
                Some(_) => {}
                // The stream ended: the status reads go on alone.
                None => events = None,
            },
            () = tokio::time::sleep(POLL_EVERY) => {
                if let Ok(view) = ctx.client.get(&args.name).await {
                    indicator.show(&view.status);
                }
            }
        }
    };
    indicator.finish();
    let answer = answer?;
    let s = &answer.status;
    let line = format!(
        "server/{} ready ({}/{} instances)\n",
        s.name, s.ready, s.desired
    );
    report(ctx, &answer, line)
}

/// Runs `stop`.
pub(crate) async fn stop(ctx: &Context, args: &StopArgs) -> anyhow::Result<()> {
    let answer = ctx.client.stop(&args.name, args.force).await?;
    let how = if args.force { " (forced)" } else { "" };
    report(ctx, &answer, format!("server/{} stopped{how}\n", args.name))
}

/// Runs `scale`.
pub(crate) async fn scale(ctx: &Context, args: &ScaleArgs) -> anyhow::Result<()> {
    let answer = ctx.client.scale(&args.name, args.replicas).await?;
    let line = format!(
        "server/{} scaled to {} replicas\n",
        args.name, args.replicas
    );
    report(ctx, &answer, line)
}

/// Runs `set-update-policy`.
pub(crate) async fn set_update_policy(
    ctx: &Context,
    args: &UpdatePolicyArgs,
) -> anyhow::Result<()> {
    let answer = ctx
        .client
        .set_update_policy(&args.name, args.check.is_on(), args.auto_reinstall.is_on())
        .await?;
    let on_off = |on: bool| if on { "on" } else { "off" };
    let line = format!(
        "server/{} update policy: check {}, auto-reinstall {}\n",
        args.name,
        on_off(args.check.is_on()),
        on_off(args.auto_reinstall.is_on())
    );
    report(ctx, &answer, line)
}

/// Runs `check-updates`.
pub(crate) async fn check_updates(ctx: &Context, args: &NameArg) -> anyhow::Result<()> {
    let answer = ctx.client.check_updates(&args.name).await?;
    if let Some(format) = ctx.output {
        output::emit(&output::structured(&answer, format)?)?;
        return Ok(());
    }
    let u = &answer.update;
    let now = Timestamp::now_system();
    let mut table = output::plain_table();
    table.add_row(["Server:".to_owned(), args.name.clone()]);
    table.add_row(["State:".to_owned(), u.state.name().to_owned()]);
    table.add_row([
        "Available digest:".to_owned(),
        output::or_none(u.available_digest.as_deref()),
    ]);
    table.add_row([
        "Last check:".to_owned(),
        output::relative_or_none(u.last_check, now),
    ]);
    table.add_row([
        "Next check:".to_owned(),
        output::relative_or_none(u.next_check_at, now),
    ]);
    table.add_row([
        "Last failure:".to_owned(),
        output::or_none(u.last_failure.as_ref().map(|f| f.message.as_str())),
    ]);
    output::emit(&output::render(table))?;
    Ok(())
}
