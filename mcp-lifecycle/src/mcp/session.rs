//! One rmcp client session to one instance, and the handle hosts get from
//! [`crate::Lifecycle::peer`].

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, Implementation, JsonObject, Tool,
};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpError;
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

/// Why a session could not be opened.
#[derive(Debug, Clone)]
pub(super) struct OpenError {
    /// What failed, for status and logs.
    pub(super) reason: String,
    /// Nothing listened at the server's URL (connection refused): a server
    /// that was just started has most likely not bound its port yet.
    pub(super) not_listening: bool,
}

impl OpenError {
    /// The error hosts see.
    pub(super) fn into_error(self, instance: &InstanceId) -> Error {
        Error::unavailable(format!("MCP session to {instance}"), self.reason)
    }
}

/// Whether `initialize` over HTTP failed because the connection was refused.
/// rmcp's HTTP client error does not chain its reqwest cause as a `source`,
/// so that one link is followed by hand.
fn connection_refused(error: &ClientInitializeError) -> bool {
    let ClientInitializeError::TransportError { error, .. } = error else {
        return false;
    };
    let transport: &(dyn std::error::Error + 'static) = error.error.as_ref();
    let start = match transport.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(client)) => client as &(dyn std::error::Error + 'static),
        _ => transport,
    };
    std::iter::successors(Some(start), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

impl McpSession {
    /// Opens a session over `connection` and completes the MCP `initialize`
    /// handshake. rmcp's response cache is turned off: a probe must never be
    /// answered from a cache (rmcp serves stale entries on errors by default).
    pub async fn open(instance: &InstanceId, connection: Connection) -> Result<Self> {
        Self::try_open(instance, connection)
            .await
            .map_err(|e| e.into_error(instance))
    }

    /// [`McpSession::open`], saying whether the server was not listening yet.
    pub(super) async fn try_open(
        instance: &InstanceId,
        connection: Connection,
    ) -> Result<Self, OpenError> {
        let service = match connection {
            Connection::Stdio(stream) => client_config()
                .serve((stream.reader, stream.writer))
                .await
                .map_err(|e| OpenError {
                    reason: format!("initialize over stdio failed: {e}"),
                    not_listening: false,
                })?,
            Connection::Url(url) => client_config()
                .serve(StreamableHttpClientTransport::from_uri(url.as_str()))
                .await
                .map_err(|e| OpenError {
                    reason: format!("initialize over HTTP at {url} failed: {e}"),
                    not_listening: connection_refused(&e),
                })?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_told_apart() {
        // A port that was free a moment ago: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let id = InstanceId::new("late", 0);
        let url = format!("http://127.0.0.1:{port}/mcp");
        let error = McpSession::try_open(&id, Connection::Url(url))
            .await
            .err()
            .unwrap();
        assert!(error.not_listening, "{}", error.reason);
        assert!(
            error.reason.contains("initialize over HTTP"),
            "{}",
            error.reason
        );
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_hangs_up_is_listening() {
        // Accepts and closes at once: listening, but no MCP server.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let id = InstanceId::new("rude", 0);
        let url = format!("http://127.0.0.1:{port}/mcp");
        let error = McpSession::try_open(&id, Connection::Url(url))
            .await
            .err()
            .unwrap();
        assert!(!error.not_listening, "{}", error.reason);
    }
}
