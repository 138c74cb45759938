//! How a failure on mcpd's side of a proxied request becomes a JSON-RPC
//! error for the client. Errors the upstream server answered itself are not
//! made here: they are passed on unchanged (code, message and data).

use mcp_lifecycle::{Error, ErrorKind};
use rmcp::ErrorData;
use rmcp::model::ErrorCode;
use rmcp::service::ServiceError;
use serde_json::json;

use crate::errors::ApiError;

/// JSON-RPC error code: the named server is not managed by mcpd.
pub(crate) const SERVER_NOT_FOUND: ErrorCode = ErrorCode(-32050);
/// JSON-RPC error code: the server exists but cannot take the request now
/// (no ready instance, its session failed, mcpd is shutting down).
pub(crate) const SERVER_UNAVAILABLE: ErrorCode = ErrorCode(-32051);

/// A lifecycle error about `server` as a JSON-RPC error. `data` names the
/// server and the API's stable error code (`not_found`, `unavailable`, ...).
pub(crate) fn from_lifecycle(server: &str, error: Error) -> ErrorData {
    let code = match error.kind() {
        ErrorKind::NotFound => SERVER_NOT_FOUND,
        _ => SERVER_UNAVAILABLE,
    };
    let message = error.to_string();
    let reason = ApiError::from(error).code;
    ErrorData::new(
        code,
        message,
        Some(json!({ "server": server, "reason": reason })),
    )
}

/// A failed upstream request as a JSON-RPC error: the upstream's own error
/// unchanged, anything else (a closed session, a broken transport) as
/// [`SERVER_UNAVAILABLE`] naming the server.
pub(crate) fn from_upstream(server: &str, error: ServiceError) -> ErrorData {
    match error {
        ServiceError::McpError(upstream) => upstream,
        other => ErrorData::new(
            SERVER_UNAVAILABLE,
            format!("server {server:?}: the request to it failed: {other}"),
            Some(json!({ "server": server, "reason": "unavailable" })),
        ),
    }
}

/// The client cancelled the request (or its session ended) before the
/// upstream answered.
pub(crate) fn cancelled(server: &str) -> ErrorData {
    ErrorData::new(
        SERVER_UNAVAILABLE,
        format!("server {server:?}: the request was cancelled"),
        Some(json!({ "server": server, "reason": "cancelled" })),
    )
}
