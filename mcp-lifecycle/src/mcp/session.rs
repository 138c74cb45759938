//! One rmcp client session to one instance, and the handle hosts get from
//! [`crate::Lifecycle::peer`].

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, Implementation, JsonObject, Tool,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{Peer, ServiceExt};

use crate::error::{Error, Result};
use crate::ports::{Connection, InstanceId};

/// A live MCP client session to one instance. Cheap to share: rmcp's peer
/// multiplexes concurrent requests over the one connection.
pub struct McpSession {
    instance: InstanceId,
    service: RunningService<RoleClient, ClientConfig>,
}

impl std::fmt::Debug for McpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSession")
            .field("instance", &self.instance)
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.client_info = Implementation::new("mcp-lifecycle", env!("CARGO_PKG_VERSION"));
    config
}

impl McpSession {
    /// Opens a session over `connection` and completes the MCP `initialize`
    /// handshake. rmcp's response cache is turned off: a probe must never be
    /// answered from a cache (rmcp serves stale entries on errors by default).
    pub async fn open(instance: &InstanceId, connection: Connection) -> Result<Self> {
        let failed = |e: String| Error::unavailable(format!("MCP session to {instance}"), e);
        let service = match connection {
            Connection::Stdio(stream) => client_config()
                .serve((stream.reader, stream.writer))
                .await
                .map_err(|e| failed(format!("initialize over stdio failed: {e}")))?,
            Connection::Url(url) => client_config()
                .serve(StreamableHttpClientTransport::from_uri(url.as_str()))
                .await
                .map_err(|e| failed(format!("initialize over HTTP at {url} failed: {e}")))?,
        };
        service
            .peer()
            .set_response_cache_config(rmcp::service::ClientCacheConfig::disabled())
            .await;
        Ok(McpSession {
            instance: instance.clone(),
            service,
        })
    }

    /// The instance this session talks to.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The rmcp peer, for any MCP request.
    pub fn peer(&self) -> &Peer<RoleClient> {
        self.service.peer()
    }

    /// Whether the connection is gone (the process exited, the stream closed).
    pub fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed()
    }

    /// Ends the session.
    pub fn cancel(&self) {
        self.service.cancellation_token().cancel();
    }
}

impl Drop for McpSession {
    fn drop(&mut self) {
        self.service.cancellation_token().cancel();
    }
}

/// A client to one ready instance of a server, from [`crate::Lifecycle::peer`].
/// Requests go over the same session the health probes use.
#[derive(Clone, Debug)]
pub struct McpPeer {
    server: String,
    session: Arc<McpSession>,
}

impl McpPeer {
    pub(crate) fn new(server: &str, session: Arc<McpSession>) -> Self {
        McpPeer {
            server: server.to_owned(),
            session,
        }
    }

    /// The server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The instance this peer talks to.
    pub fn instance(&self) -> &InstanceId {
        self.session.instance()
    }

    /// The rmcp peer, for any MCP request.
    pub fn peer(&self) -> &Peer<RoleClient> {
        self.session.peer()
    }

    /// Calls a tool. A JSON-RPC error or a closed transport is an error; a
    /// tool result with `isError: true` is returned as a result, for the
    /// caller to read.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = arguments;
        self.peer()
            .call_tool(params)
            .await
            .map_err(|e| self.error(format!("calling tool {name:?}"), e))
    }

    /// Lists the instance's tools (every page), uncached.
    pub async fn list_tools(&self) -> Result<Vec<Tool>> {
        self.peer()
            .list_all_tools()
            .await
            .map_err(|e| self.error("listing tools".into(), e))
    }

    fn error(&self, doing: String, e: ServiceError) -> Error {
        Error::unavailable(
            format!("server {:?} (instance {})", self.server, self.instance()),
            format!("{doing} failed: {e}"),
        )
    }
}
