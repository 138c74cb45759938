//! What every handler shares: the [`Lifecycle`], the admission policy, and
//! the shutdown signal long-lived responses (event streams) end on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mcp_lifecycle::Lifecycle;
use tokio_util::sync::CancellationToken;

use crate::policy::Policy;

/// The handlers' shared state.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The lifecycle manager.
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// What specs may ask for.
    pub(crate) policy: Arc<Policy>,
    /// Cancelled when mcpd starts shutting down.
    pub(crate) shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// State around a built lifecycle; ready until shutdown begins.
    pub(crate) fn new(
        lifecycle: Arc<Lifecycle>,
        policy: Policy,
        shutdown: CancellationToken,
    ) -> Self {
        AppState {
            lifecycle,
            policy: Arc::new(policy),
            shutdown,
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether mcpd takes work (false once shutdown began).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.shutdown.is_cancelled()
    }

    /// Marks mcpd as not ready (draining).
    pub(crate) fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}
