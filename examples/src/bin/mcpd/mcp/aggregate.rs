//! The MCP server behind `/mcp`: every managed server's tools as one list,
//! each named `{server}__{tool}`, and `tools/call` of such a name routed to
//! the owning server with the tool's own name. Server names are DNS labels
//! (no `_`), so the first `__` always ends the server's part.
//!
//! Listings come from the library's tools cache (positive and negative
//! TTL) and run concurrently, each in its own task: a server whose listing
//! fails is left out of the answer, and one that is slow is left out after
//! [`LISTING_WAIT`] while its listing goes on to fill the cache for the
//! next request. Only the first listing of a slow server waits on it.

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorCode, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::upstream::Upstreams;

/// Separates the server from the tool in an aggregated tool name.
pub(crate) const SEPARATOR: &str = "__";

/// How long one `tools/list` waits for a server's listing before leaving
/// that server out.
pub(crate) const LISTING_WAIT: Duration = Duration::from_secs(10);

/// The handler of one client session to the aggregated server.
#[derive(Debug, Clone)]
pub(crate) struct Aggregate {
    upstreams: Upstreams,
}

impl Aggregate {
    /// A handler over every managed server.
    pub(crate) fn new(upstreams: Upstreams) -> Self {
        Aggregate { upstreams }
    }

    /// One server's tools, renamed, or `None` if its listing failed or was
    /// too slow.
    async fn listing(&self, server: String) -> Option<Vec<Tool>> {
        let lifecycle = self.upstreams.lifecycle.clone();
        let name = server.clone();
        let task = tokio::spawn(async move { lifecycle.list_tools(&name).await });
        let tools = match tokio::time::timeout(LISTING_WAIT, task).await {
            Ok(Ok(Ok(tools))) => tools,
            Ok(Ok(Err(e))) => {
                tracing::debug!(server, error = %e, "left out of the aggregated tools: listing failed");
                return None;
            }
            Ok(Err(e)) => {
                tracing::warn!(server, error = %e, "left out of the aggregated tools: listing task failed");
                return None;
            }
            Err(_) => {
                tracing::warn!(server, wait = ?LISTING_WAIT, "left out of the aggregated tools: listing is slow");
                return None;
            }
        };
        Some(
            tools
                .iter()
                .map(|tool| {
                    let mut renamed = tool.clone();
                    renamed.name = format!("{server}{SEPARATOR}{}", tool.name).into();
                    renamed
                })
                .collect(),
        )
    }
}

/// Splits `{server}__{tool}`.
fn split_tool_name(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
        .filter(|(server, tool)| !server.is_empty() && !tool.is_empty())
}

impl ServerHandler for Aggregate {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcpd", env!("CARGO_PKG_VERSION")))
            .with_instructions("The tools of every server mcpd manages, named {server}__{tool}.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let servers = self.upstreams.lifecycle.list().await;
        let listings = servers.into_iter().map(|status| self.listing(status.name));
        let tools: Vec<Tool> = futures::future::join_all(listings)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some((server, tool)) = split_tool_name(&request.name) else {
            return Err(ErrorData::new(
                ErrorCode::INVALID_PARAMS,
                format!(
                    "tool {:?} is not named {{server}}{SEPARATOR}{{tool}}",
                    request.name
                ),
                None,
            ));
        };
        let (server, tool) = (server.to_owned(), tool.to_owned());
        request.name = tool.into();
        self.upstreams
            .call_tool(&server, request, &context.ct)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_separator_ends_the_server() {
        assert_eq!(split_tool_name("github__echo"), Some(("github", "echo")));
        assert_eq!(
            split_tool_name("github__search__code"),
            Some(("github", "search__code"))
        );
        assert_eq!(split_tool_name("echo"), None);
        assert_eq!(split_tool_name("__echo"), None);
        assert_eq!(split_tool_name("github__"), None);
    }
}
