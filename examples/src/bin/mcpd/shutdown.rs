//! Graceful shutdown: the signal (SIGTERM or SIGINT) that starts it, and
//! what happens to the servers after the HTTP server has drained (detach,
//! the default, or stop).

use std::sync::Arc;

use mcp_lifecycle::Lifecycle;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Backend, OnExit};
use crate::state::AppState;

/// Resolves at the first SIGTERM or SIGINT, after marking mcpd as draining
/// and ending the event streams (so open streams do not hold shutdown up).
pub(crate) async fn signalled(state: AppState) {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT; stop mcpd with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "shutting down: no new connections; finishing requests in flight"
    );
    state.set_draining();
    state.shutdown.cancel();
}

/// How long to wait for the last connection task to let go of the lifecycle.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// After the HTTP server stopped: detach from the servers or stop them.
pub(crate) async fn finish(lifecycle: Arc<Lifecycle>, on_exit: OnExit, backend: Backend) {
    // Connection tasks that just finished may still hold the router (and
    // so the lifecycle) for a moment after the server returns.
    let mut shared = lifecycle;
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    let lifecycle = loop {
        match Arc::try_unwrap(shared) {
            Ok(l) => break l,
            Err(still) if tokio::time::Instant::now() < deadline => {
                shared = still;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(still) => {
                // Dropping it cancels the controller and leaves workloads
                // running, as detach does.
                tracing::warn!("the lifecycle manager is still shared; dropping it (detach)");
                drop(still);
                return;
            }
        }
    };
    match on_exit {
        OnExit::Detach => {
            lifecycle.detach().await;
            match backend {
                Backend::Docker => tracing::info!(
                    "detached: containers keep running for the next mcpd on this store to adopt"
                ),
                Backend::Kubernetes => tracing::info!(
                    "detached: Deployments keep running for the next mcpd on this store to adopt"
                ),
                // The local backend's processes are mcpd's children: they end
                // with it, and the next mcpd starts them again from the store.
                Backend::Local => tracing::info!(
                    "detached; local server processes end with mcpd and start again with the next"
                ),
            }
        }
        OnExit::Stop => match lifecycle.shutdown().await {
            Ok(()) => tracing::info!("stopped every server"),
            Err(e) => tracing::error!(error = %e, "stopping the servers failed"),
        },
    }
}
