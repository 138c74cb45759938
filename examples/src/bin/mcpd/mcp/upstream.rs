//! What both MCP endpoints do with a managed server: find a ready instance
//! through [`Lifecycle::peer`] (round-robin over ready replicas), forward one
//! request on its session, give up when the client cancels, and count the
//! `tools/call`s. Owns no session state: every request picks its instance
//! anew, so a replica that stopped being ready is never used again.

use std::future::Future;
use std::sync::Arc;

use mcp_lifecycle::{ErrorKind, Lifecycle, McpPeer};
use rmcp::ErrorData;
use rmcp::model::{CallToolRequestParams, CallToolResponse};
use rmcp::service::ServiceError;
use tokio_util::sync::CancellationToken;

use super::counters::ProxyCounters;
use super::errors;

/// The managed servers as MCP upstreams. Clones share everything.
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    /// The lifecycle manager the servers run under.
    pub(crate) lifecycle: Arc<Lifecycle>,
    counters: ProxyCounters,
}

impl Upstreams {
    /// Upstreams from the lifecycle, counting calls into `counters`.
    pub(crate) fn new(lifecycle: Arc<Lifecycle>, counters: ProxyCounters) -> Self {
        Upstreams {
            lifecycle,
            counters,
        }
    }

    /// A ready instance of `server`, or the JSON-RPC error saying why there
    /// is none (not found, not ready) — at once, never waiting for one.
    pub(crate) async fn peer(&self, server: &str) -> Result<McpPeer, ErrorData> {
        self.lifecycle
            .peer(server)
            .await
            .map_err(|e| errors::from_lifecycle(server, e))
    }

    /// Sends one request to a ready instance of `server`: `send` builds it
    /// from the peer. Upstream errors come back unchanged; the request is
    /// dropped (and so cancelled upstream) if `cancelled` fires first.
    pub(crate) async fn forward<T, F, Fut>(
        &self,
        server: &str,
        cancelled: &CancellationToken,
        send: F,
    ) -> Result<T, ErrorData>
    where
        F: FnOnce(McpPeer) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let peer = self.peer(server).await?;
        send_until_cancelled(server, cancelled, send(peer)).await
    }

    /// Forwards `tools/call` to `server` (with the tool name `params`
    /// carries) and counts it: a call to an unknown server is not counted
    /// (its name would become a series), every other one is, as an error
    /// when there is no ready instance, the upstream answers a JSON-RPC
    /// error, or its result has `isError: true`.
    pub(crate) async fn call_tool(
        &self,
        server: &str,
        params: CallToolRequestParams,
        cancelled: &CancellationToken,
    ) -> Result<CallToolResponse, ErrorData> {
        let peer = match self.lifecycle.peer(server).await {
            Ok(peer) => peer,
            Err(e) => {
                if e.kind() != ErrorKind::NotFound {
                    self.counters.record(server, true);
                }
                return Err(errors::from_lifecycle(server, e));
            }
        };
        let result =
            send_until_cancelled(server, cancelled, peer.peer().call_tool_once(params)).await;
        let failed = match &result {
            Ok(CallToolResponse::Complete(done)) => done.is_error == Some(true),
            Ok(_) => false,
            Err(_) => true,
        };
        self.counters.record(server, failed);
        result
    }

    /// Whether `server` is managed (in any state).
    pub(crate) async fn exists(&self, server: &str) -> bool {
        match self.lifecycle.status(server).await {
            Ok(_) => true,
            Err(e) => e.kind() != ErrorKind::NotFound,
        }
    }
}

/// Awaits an upstream request unless the client cancels first (dropping
/// the request cancels it upstream).
async fn send_until_cancelled<T>(
    server: &str,
    cancelled: &CancellationToken,
    request: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ErrorData> {
    tokio::select! {
        result = request => result.map_err(|e| errors::from_upstream(server, e)),
        () = cancelled.cancelled() => Err(errors::cancelled(server)),
    }
}
