//! The MCP handler: five tools, and the knobs that make tools/call and tools/list misbehave.
//!
//! One [`TestServer`] value is cloned per session (stdio has one; streamable HTTP builds
//! one per session or per stateless request), so everything that counts across requests
//! lives in the shared [`Shared`] state: the tools/list counter is per process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{
        router::tool::ToolRouter,
        tool::{ToolCallContext, ToolName},
        wrapper::Parameters,
    },
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        Implementation, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
        ServerCapabilities, ServerConfig,
    },
    schemars,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::config::Knobs;

/// Environment variable `whoami` reports on (by length only).
pub(crate) const TOKEN_ENV: &str = "MCP_TEST_TOKEN";
/// Environment variable `version` answers with.
pub(crate) const VERSION_ENV: &str = "MCP_TEST_VERSION";
/// What `version` answers when [`VERSION_ENV`] is unset.
const DEFAULT_VERSION: &str = "dev";

/// State shared by every session of one process.
#[derive(Debug)]
struct Shared {
    knobs: Knobs,
    /// tools/list requests received so far (answered or not).
    tools_list_calls: AtomicU64,
    /// Cancelled when hanging requests should give up: shutdown, or stdin EOF.
    release_hangs: CancellationToken,
    /// Reported by the `version` tool and in the server info.
    version: String,
}

/// How to answer the n-th tools/list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListVerdict {
    Answer,
    Hang,
    Fail,
}

impl Knobs {
    /// The answer to tools/list request number `call` (1-based). Hanging wins over failing.
    fn tools_list_verdict(&self, call: u64) -> ListVerdict {
        if self.hang_tools_list_after.is_some_and(|n| call > n) {
            ListVerdict::Hang
        } else if self.fail_tools_list_after.is_some_and(|n| call > n) {
            ListVerdict::Fail
        } else {
            ListVerdict::Answer
        }
    }
}

/// Arguments of `echo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct EchoArgs {
    /// Text to send back unchanged.
    text: String,
}

/// Arguments of `sleep`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct SleepArgs {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

/// The test MCP server.
#[derive(Debug, Clone)]
pub(crate) struct TestServer {
    shared: Arc<Shared>,
    tool_router: Arc<ToolRouter<Self>>,
}

impl TestServer {
    /// A server with the given knobs. `release_hangs` ends requests that hang on purpose,
    /// so shutdown is never held up by them.
    pub(crate) fn new(knobs: Knobs, release_hangs: CancellationToken) -> Self {
        let version = std::env::var(VERSION_ENV).unwrap_or_else(|_| DEFAULT_VERSION.to_owned());
        Self {
            shared: Arc::new(Shared {
                knobs,
                tools_list_calls: AtomicU64::new(0),
                release_hangs,
                version,
            }),
            tool_router: Arc::new(Self::tool_router()),
        }
    }

    /// Never answers: waits until the request is cancelled or hangs are released, then
    /// returns an error that nobody is waiting for any more.
    async fn hang(&self, request: &CancellationToken, what: &str) -> ErrorData {
        tracing::info!(what, "hanging on purpose");
        tokio::select! {
            () = request.cancelled() => tracing::info!(what, "hanging request cancelled"),
            () = self.shared.release_hangs.cancelled() => tracing::info!(what, "hang released"),
        }
        ErrorData::internal_error(format!("{what}: hung on purpose, released"), None)
    }
}

#[tool_router]
impl TestServer {
    /// Echo the text back.
    #[tool(description = "Answer the given text unchanged.")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Report the length of the injected token.
    #[tool(
        description = "Answer \"token-length:<n>\" when MCP_TEST_TOKEN is set; a tool error when it is missing."
    )]
    async fn whoami(&self) -> CallToolResult {
        // Read at call time so a test can see exactly what the process was started with.
        match std::env::var_os(TOKEN_ENV) {
            Some(token) if !token.is_empty() => CallToolResult::success(vec![ContentBlock::text(
                format!("token-length:{}", token.len()),
            )]),
            _ => CallToolResult::error(vec![ContentBlock::text(format!(
                "{TOKEN_ENV} is missing: no token was injected"
            ))]),
        }
    }

    /// Always fail at the JSON-RPC level.
    #[tool(description = "Always answer JSON-RPC error -32603 (internal error).")]
    async fn jsonrpc_error(&self, ToolName(name): ToolName) -> Result<String, ErrorData> {
        Err(ErrorData::internal_error(
            format!("{name}: this tool always fails"),
            None,
        ))
    }

    /// Sleep, then answer.
    #[tool(description = "Sleep for `ms` milliseconds, then answer \"slept\".")]
    async fn sleep(
        &self,
        Parameters(SleepArgs { ms }): Parameters<SleepArgs>,
        cancelled: CancellationToken,
    ) -> Result<String, ErrorData> {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => Ok("slept".to_owned()),
            () = cancelled.cancelled() => Err(ErrorData::internal_error("sleep cancelled", None)),
            () = self.shared.release_hangs.cancelled() => {
                Err(ErrorData::internal_error("sleep interrupted by shutdown", None))
            }
        }
    }

    /// Report the fixture's version.
    #[tool(description = "Answer the value of MCP_TEST_VERSION, or \"dev\".")]
    async fn version(&self) -> String {
        self.shared.version.clone()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-test-server",
                self.shared.version.clone(),
            ))
            .with_instructions(
                "Test fixture for mcp-lifecycle: echo, whoami, jsonrpc_error, sleep, version.",
            )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self
            .shared
            .knobs
            .hang_on_call
            .contains(request.name.as_ref())
        {
            let what = format!("tools/call {}", request.name);
            return Err(self.hang(&context.ct, &what).await);
        }
        let call = ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let call = self.shared.tools_list_calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.shared.knobs.tools_list_verdict(call) {
            ListVerdict::Answer => {}
            ListVerdict::Hang => {
                return Err(self.hang(&context.ct, &format!("tools/list #{call}")).await);
            }
            ListVerdict::Fail => {
                tracing::info!(call, "failing tools/list on purpose");
                return Err(ErrorData::internal_error(
                    format!("tools/list #{call}: failing on purpose (fail-tools-list-after)"),
                    None,
                ));
            }
        }
        let mut result = ListToolsResult::with_all_items(self.tool_router.list_all());
        if let Some(ttl_ms) = self.shared.knobs.tools_list_ttl_ms {
            result = result
                .with_ttl_ms(ttl_ms)
                .with_cache_scope(CacheScope::Public);
        } else if context
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28)
        {
            // 2026-07-28 requires cache hints; 0 means "never serve this from a cache".
            result = result.with_ttl_ms(0).with_cache_scope(CacheScope::Public);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hanging_wins_over_failing() {
        let knobs = Knobs {
            hang_tools_list_after: Some(3),
            fail_tools_list_after: Some(1),
            ..Knobs::default()
        };
        let verdicts: Vec<_> = (1..=4).map(|n| knobs.tools_list_verdict(n)).collect();
        assert_eq!(
            verdicts,
            [
                ListVerdict::Answer,
                ListVerdict::Fail,
                ListVerdict::Fail,
                ListVerdict::Hang
            ]
        );
    }

    #[test]
    fn no_knobs_always_answer() {
        let knobs = Knobs::default();
        assert!((1..100).all(|n| knobs.tools_list_verdict(n) == ListVerdict::Answer));
    }

    #[test]
    fn all_five_tools_are_routed() {
        let server = TestServer::new(Knobs::default(), CancellationToken::new());
        let names: Vec<_> = server
            .tool_router
            .list_all()
            .into_iter()
            .map(|tool| tool.name.into_owned())
            .collect();
        assert_eq!(
            names,
            ["echo", "jsonrpc_error", "sleep", "version", "whoami"]
        );
    }
}
