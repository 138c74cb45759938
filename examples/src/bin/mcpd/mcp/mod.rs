//! The MCP endpoints over streamable HTTP (rmcp's `StreamableHttpService`
//! served by axum): `/mcp/{server}` proxies a client session to one
//! managed server ([`proxy`]), `/mcp` is one aggregated server for all of
//! them ([`aggregate`]). Both reach the servers through [`upstream`] and
//! count calls in [`counters`]; [`errors`] makes mcpd's own failures
//! JSON-RPC errors. Authentication is the router's layer, not this module's.
//!
//! Each managed server has its own service (and so its own session table),
//! made on its first request; a name mcpd does not manage gets a throwaway
//! one whose `initialize` answers "not found", so unknown names cost nothing
//! that stays.

pub(crate) mod aggregate;
pub(crate) mod counters;
pub(crate) mod errors;
pub(crate) mod proxy;
pub(crate) mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use self::aggregate::Aggregate;
use self::proxy::ServerProxy;
use self::upstream::Upstreams;
use crate::state::AppState;

type ProxyService = StreamableHttpService<ServerProxy, LocalSessionManager>;
type AggregateService = StreamableHttpService<Aggregate, LocalSessionManager>;

/// The MCP services: one per managed server that was asked for, and the
/// aggregated one. Clones share them.
#[derive(Clone)]
pub(crate) struct McpEndpoints {
    upstreams: Upstreams,
    config: StreamableHttpServerConfig,
    per_server: Arc<Mutex<HashMap<String, Arc<ProxyService>>>>,
    aggregate: Arc<AggregateService>,
}

impl std::fmt::Debug for McpEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpEndpoints").finish_non_exhaustive()
    }
}

impl McpEndpoints {
    /// The endpoints over `upstreams`; their sessions end when `shutdown`
    /// is cancelled.
    pub(crate) fn new(upstreams: Upstreams, shutdown: &CancellationToken) -> Self {
        // Every MCP route needs a bearer token, which a DNS-rebinding page
        // cannot send, so rmcp's Host allow-list (loopback names only) would
        // only lock out clients that reach mcpd by another name.
        let config = StreamableHttpServerConfig::default()
            .with_cancellation_token(shutdown.child_token())
            .disable_allowed_hosts();
        let aggregate = {
            let upstreams = upstreams.clone();
            StreamableHttpService::new(
                move || Ok(Aggregate::new(upstreams.clone())),
                Arc::new(LocalSessionManager::default()),
                config.clone(),
            )
        };
        McpEndpoints {
            upstreams,
            config,
            per_server: Arc::default(),
            aggregate: Arc::new(aggregate),
        }
    }

    fn proxy_service(&self, server: &str) -> ProxyService {
        let upstreams = self.upstreams.clone();
        let server: Arc<str> = server.into();
        StreamableHttpService::new(
            move || Ok(ServerProxy::new(server.clone(), upstreams.clone())),
            Arc::new(LocalSessionManager::default()),
            self.config.clone(),
        )
    }

    /// The service of `server`: kept if mcpd manages it, made for this
    /// request only if not.
    async fn service_for(&self, server: &str) -> Arc<ProxyService> {
        let known = self
            .per_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(server)
            .cloned();
        if let Some(service) = known {
            return service;
        }
        let service = Arc::new(self.proxy_service(server));
        if self.upstreams.exists(server).await {
            let mut per_server = self
                .per_server
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A concurrent first request may have made one already: keep
            // that one, with whatever sessions it holds.
            return per_server
                .entry(server.to_owned())
                .or_insert(service)
                .clone();
        }
        service
    }
}

/// `/mcp/{server}`: an MCP session proxied to one managed server.
pub(crate) async fn server_endpoint(
    State(state): State<AppState>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    let service = state.mcp.service_for(&server).await;
    service.handle(request).await.into_response()
}

/// `/mcp`: the aggregated MCP server.
pub(crate) async fn aggregate_endpoint(
    State(state): State<AppState>,
    request: Request,
) -> Response {
    state.mcp.aggregate.handle(request).await.into_response()
}
