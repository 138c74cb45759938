//! Process lifecycle: signals, the startup delay, and the exit-after timer.

use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub(crate) fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}

/// Sleeps for the startup delay, unless shutdown comes first. Returns false on shutdown.
pub(crate) async fn startup_delay(delay: Option<Duration>, shutdown: &CancellationToken) -> bool {
    let Some(delay) = delay else {
        return true;
    };
    tracing::info!(?delay, "startup delay");
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Exits the process with code 0 once `after` has passed (the exit-after knob).
pub(crate) fn exit_after(after: Option<Duration>) {
    let Some(after) = after else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        tracing::info!(?after, "exit-after elapsed: exiting with code 0");
        std::process::exit(0);
    });
}
