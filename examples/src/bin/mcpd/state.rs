//! What every handler shares: the [`Lifecycle`], the admission policy, the
//! MCP endpoints and their call counters, and the shutdown signal
//! long-lived responses (event streams, MCP sessions) end on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mcp_lifecycle::Lifecycle;
use tokio_util::sync::CancellationToken;

use crate::mcp::McpEndpoints;
use crate::mcp::counters::ProxyCounters;
use crate::mcp::upstream::Upstreams;
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
    /// The MCP services behind `/mcp` and `/mcp/{server}`.
    pub(crate) mcp: McpEndpoints,
    /// Proxied `tools/call` counts, for `/metrics`.
    pub(crate) proxy_counters: ProxyCounters,
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// State around a built lifecycle; ready until shutdown begins.
    pub(crate) fn new(
        lifecycle: Arc<Lifecycle>,
        policy: Policy,
        shutdown: CancellationToken,
    ) -> Self {
        let proxy_counters = ProxyCounters::default();
        let mcp = McpEndpoints::new(
            Upstreams::new(lifecycle.clone(), proxy_counters.clone()),
            &shutdown,
        );
        AppState {
            lifecycle,
            policy: Arc::new(policy),
            shutdown,
            mcp,
            proxy_counters,
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
