//! mcpd's MCP endpoints over real HTTP: mcpd runs as a real process with the
//! local backend and the project's test MCP server (mcpd re-executed as
//! `serve-mcp-test-server`), and an rmcp client speaks streamable HTTP to
//! `/mcp/{server}` and to the aggregated `/mcp` with a read-only token:
//! initialize info, tools/list, tools/call of `echo`, a tool error and a
//! JSON-RPC error passed through unchanged, prompt JSON-RPC errors for an
//! unknown server and one that is not ready, 401 without a valid token,
//! and the proxied-call counters in `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ADMIN, MCPD, Mcpd, READER, spec_yaml, start_mcpd};
use reqwest::{Client, Method, StatusCode};
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode};
use rmcp::service::{ClientInitializeError, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// mcpd's JSON-RPC code for a server it does not manage.
const SERVER_NOT_FOUND: i32 = -32050;
/// mcpd's JSON-RPC code for a server with no ready instance.
const SERVER_UNAVAILABLE: i32 = -32051;
/// How long an answer that must come "at once" may take.
const PROMPTLY: Duration = Duration::from_secs(5);

type McpClient = RunningService<RoleClient, ()>;

async fn connect(d: &Mcpd, path: &str, token: &str) -> Result<McpClient, ClientInitializeError> {
    let config = StreamableHttpClientTransportConfig::with_uri(d.url(path)).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
}

async fn apply(d: &Mcpd, name: &str, replicas: u32) {
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(ADMIN),
            Some((
                "application/yaml",
                format!("{}replicas: {replicas}\n", spec_yaml(name, MCPD)),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A managed server with no instance: known, never ready.
async fn apply_idle(d: &Mcpd, name: &str) {
    apply(d, name, 0).await;
}

async fn start_ready(d: &Mcpd, name: &str) {
    apply(d, name, 1).await;
    let (status, body) = d
        .admin(
            Method::POST,
            &format!("/api/v1/servers/{name}/start?wait=true&timeout=30s"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["ready"], 1, "{body}");
}

fn call(tool: &str, arguments: Value) -> CallToolRequestParams {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = arguments.as_object().cloned();
    params
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

fn json_rpc_error(error: ServiceError) -> rmcp::ErrorData {
    match error {
        ServiceError::McpError(e) => e,
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

async fn tool_names(client: &McpClient) -> BTreeSet<String> {
    client
        .peer()
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect()
}

/// The value of one series in `/metrics`, if it is there.
async fn metric(d: &Mcpd, series: &str) -> Option<f64> {
    let text = Client::new()
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_and_called_through_both_endpoints() {
    let d = start_mcpd(&[]);
    start_ready(&d, "echo").await;
    apply_idle(&d, "idle").await;

    // /mcp/echo: the upstream's identity, its tools, its echo.
    let client = connect(&d, "/mcp/echo", READER).await.unwrap();
    let info = client.peer().peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("mcp-test-server"),
        "{info:?}"
    );
    assert!(info.capabilities.tools.is_some(), "{info:?}");
    let direct = tool_names(&client).await;
    assert!(
        direct.contains("echo") && direct.contains("jsonrpc_error"),
        "{direct:?}"
    );
    let answer = client
        .peer()
        .call_tool(call("echo", json!({ "text": "through the proxy" })))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{answer:?}");
    assert_eq!(text_of(&answer), "through the proxy");

    // A tool error is a result, passed on as it came.
    let tool_error = client
        .peer()
        .call_tool(call("whoami", json!({})))
        .await
        .unwrap();
    assert_eq!(tool_error.is_error, Some(true), "{tool_error:?}");
    assert!(
        text_of(&tool_error).contains("MCP_TEST_TOKEN is missing"),
        "{tool_error:?}"
    );

    // A JSON-RPC error keeps the upstream's code and message.
    let error = json_rpc_error(
        client
            .peer()
            .call_tool(call("jsonrpc_error", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(error.code, ErrorCode::INTERNAL_ERROR, "{error:?}");
    assert_eq!(error.message, "jsonrpc_error: this tool always fails");

    // /mcp: every ready server's tools, prefixed; idle's listing fails and
    // is left out.
    let aggregated = connect(&d, "/mcp", READER).await.unwrap();
    assert_eq!(
        aggregated
            .peer()
            .peer_info()
            .unwrap()
            .server_info
            .as_ref()
            .map(|i| i.name.clone()),
        Some("mcpd".to_owned())
    );
    let names = tool_names(&aggregated).await;
    let expected: BTreeSet<String> = direct.iter().map(|t| format!("echo__{t}")).collect();
    assert_eq!(names, expected);
    let answer = aggregated
        .peer()
        .call_tool(call(
            "echo__echo",
            json!({ "text": "through the aggregate" }),
        ))
        .await
        .unwrap();
    assert_eq!(text_of(&answer), "through the aggregate");

    // A call routed to a server that is not ready fails at once.
    let error = json_rpc_error(
        tokio::time::timeout(
            PROMPTLY,
            aggregated
                .peer()
                .call_tool(call("idle__echo", json!({ "text": "x" }))),
        )
        .await
        .expect("a call to a server that is not ready must not hang")
        .unwrap_err(),
    );
    assert_eq!(error.code.0, SERVER_UNAVAILABLE, "{error:?}");
    assert!(error.message.contains("idle"), "{error:?}");

    // And one to a server mcpd does not manage.
    let error = json_rpc_error(
        aggregated
            .peer()
            .call_tool(call("nope__echo", json!({ "text": "x" })))
            .await
            .unwrap_err(),
    );
    assert_eq!(error.code.0, SERVER_NOT_FOUND, "{error:?}");

    // Counters: four calls to echo (two failed: the tool error and the
    // JSON-RPC error), one failed call to idle, nothing for nope.
    assert_eq!(
        metric(&d, "mcpd_proxied_calls_total{server=\"echo\"}").await,
        Some(4.0)
    );
    assert_eq!(
        metric(&d, "mcpd_proxied_call_errors_total{server=\"echo\"}").await,
        Some(2.0)
    );
    assert_eq!(
        metric(&d, "mcpd_proxied_calls_total{server=\"idle\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&d, "mcpd_proxied_call_errors_total{server=\"idle\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&d, "mcpd_proxied_calls_total{server=\"nope\"}").await,
        None
    );

    // Once echo is stopped, its open session answers an error at once.
    let (status, body) = d
        .admin(Method::POST, "/api/v1/servers/echo/stop?force=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = tokio::time::timeout(
        PROMPTLY,
        client
            .peer()
            .call_tool(call("echo", json!({ "text": "too late" }))),
    )
    .await
    .expect("a call to a stopped server must not hang");
    let error = json_rpc_error(result.unwrap_err());
    assert_eq!(error.code.0, SERVER_UNAVAILABLE, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_idle_server_refuses_initialize_at_once() {
    let d = start_mcpd(&[]);
    apply_idle(&d, "idle").await;
    for (path, code) in [
        ("/mcp/nope", SERVER_NOT_FOUND),
        ("/mcp/idle", SERVER_UNAVAILABLE),
    ] {
        let Ok(refused) = tokio::time::timeout(PROMPTLY, connect(&d, path, READER)).await else {
            panic!("{path}: initialize hung");
        };
        match refused {
            Err(ClientInitializeError::JsonRpcError(e)) => {
                assert_eq!(e.code.0, code, "{path}: {e:?}");
                let server = path.trim_start_matches("/mcp/");
                assert_eq!(e.data.as_ref().unwrap()["server"], server, "{e:?}");
            }
            Err(other) => panic!("{path}: expected a JSON-RPC error, got {other}"),
            Ok(_) => panic!("{path}: initialize succeeded"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_endpoints_need_a_valid_token() {
    let d = start_mcpd(&[]);
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    });
    for path in ["/mcp", "/mcp/echo"] {
        for token in [None, Some("wrong-token-value")] {
            for method in [Method::POST, Method::GET, Method::DELETE] {
                let mut request = Client::new()
                    .request(method.clone(), d.url(path))
                    .header("accept", "application/json, text/event-stream");
                if method == Method::POST {
                    request = request.json(&initialize);
                }
                if let Some(t) = token {
                    request = request.bearer_auth(t);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {token:?}"
                );
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "unauthorized", "{body}");
            }
        }
    }
    assert!(!d.log().contains("wrong-token-value"), "{}", d.log());
    // The same request with a read-only token is served.
    let response = Client::new()
        .post(d.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(READER)
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
