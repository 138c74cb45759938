//! The MCP server behind `/mcp/{server}`: one instance per client session,
//! forwarding each request to a ready instance of one managed server.
//! `initialize` answers with the upstream's server info, instructions and
//! the capabilities mcpd forwards (tools, resources, prompts, completions;
//! not subscriptions, list-changed or log notifications, which arrive on
//! the upstream session mcpd shares with its probes, not the client's).
//! `tools/list` comes from the library's tools cache; `tools/call`,
//! `resources/*`, `prompts/*`, `completion/complete` and `ping` are sent
//! through. A server that is unknown or has no ready instance answers a
//! JSON-RPC error at once (see [`super::errors`]).

use std::sync::{Arc, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientRequest, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams,
    InitializeResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, PingRequest, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig, ServerPeerInfo, ServerResult,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::errors;
use super::upstream::Upstreams;

/// The handler of one client session to one managed server.
#[derive(Debug, Clone)]
pub(crate) struct ServerProxy {
    server: Arc<str>,
    upstreams: Upstreams,
    /// What `initialize` learnt from the upstream, for [`ServerHandler::get_info`].
    upstream_info: Arc<OnceLock<ServerConfig>>,
}

impl ServerProxy {
    /// A handler for a new session to `server`.
    pub(crate) fn new(server: Arc<str>, upstreams: Upstreams) -> Self {
        ServerProxy {
            server,
            upstreams,
            upstream_info: Arc::new(OnceLock::new()),
        }
    }
}

/// The upstream's capabilities that mcpd forwards, without the
/// notifications it cannot relay.
fn forwarded_capabilities(upstream: &ServerCapabilities) -> ServerCapabilities {
    let mut capabilities = ServerCapabilities::default();
    capabilities.tools = upstream.tools.clone().map(|mut tools| {
        tools.list_changed = None;
        tools
    });
    capabilities.resources = upstream.resources.clone().map(|mut resources| {
        resources.subscribe = None;
        resources.list_changed = None;
        resources
    });
    capabilities.prompts = upstream.prompts.clone().map(|mut prompts| {
        prompts.list_changed = None;
        prompts
    });
    capabilities.completions = upstream.completions.clone();
    capabilities
}

/// The server info a client of the proxy sees: the upstream's identity and
/// instructions, the capabilities mcpd forwards.
fn proxied_info(server: &str, upstream: Option<&ServerPeerInfo>) -> ServerConfig {
    let Some(upstream) = upstream else {
        return ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(server, "unknown"));
    };
    let identity = upstream
        .server_info
        .clone()
        .unwrap_or_else(|| Implementation::new(server, "unknown"));
    let info = ServerConfig::new(forwarded_capabilities(&upstream.capabilities))
        .with_server_info(identity);
    match &upstream.instructions {
        Some(instructions) => info.with_instructions(instructions.clone()),
        None => info,
    }
}

impl ServerHandler for ServerProxy {
    fn get_info(&self) -> ServerConfig {
        match self.upstream_info.get() {
            Some(info) => info.clone(),
            None => proxied_info(&self.server, None),
        }
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let peer = self.upstreams.peer(&self.server).await?;
        let upstream = peer.peer().peer_info();
        let _ = self
            .upstream_info
            .set(proxied_info(&self.server, upstream.as_deref()));
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer()
                    .send_request(ClientRequest::PingRequest(PingRequest::default()))
                    .await
                    .map(|_: ServerResult| ())
            })
            .await
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // The cache holds every page; one answer carries them all.
        let tools = self
            .upstreams
            .lifecycle
            .list_tools(&self.server)
            .await
            .map_err(|e| errors::from_lifecycle(&self.server, e))?;
        Ok(ListToolsResult::with_all_items(tools.as_ref().clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.upstreams
            .call_tool(&self.server, request, &context.ct)
            .await
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer().list_resources(request).await
            })
            .await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer().list_resource_templates(request).await
            })
            .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer().read_resource_once(request).await
            })
            .await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer().list_prompts(request).await
            })
            .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer().get_prompt_once(request).await
            })
            .await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.upstreams
            .forward(&self.server, &context.ct, |peer| async move {
                peer.peer().complete(request).await
            })
            .await
    }
}
