//! Integration tests of the `mcp-test-server` fixture binary, driven by rmcp's client.
//!
//! Each test starts the real binary (stdio over tokio pipes, or streamable HTTP on a free
//! loopback port) with a cleared environment, so only what the test passes reaches it.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use rmcp::{
    ClientCacheConfig, ClientLifecycleMode, RoleClient, ServiceError, ServiceExt as _,
    model::{
        CallToolRequestParams, CallToolResult, ClientRequest, ErrorCode, JsonObject,
        ListToolsRequest, ProtocolVersion, ServerResult,
    },
    service::{ClientServiceExt as _, PeerRequestOptions, RunningService},
    transport::StreamableHttpClientTransport,
};
use tokio::process::{Child, Command};

type Client = RunningService<RoleClient, ()>;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-test-server");
/// Upper bound for anything that should happen "promptly".
const PROMPTLY: Duration = Duration::from_secs(10);
const ALL_TOOLS: [&str; 5] = ["echo", "jsonrpc_error", "sleep", "version", "whoami"];

/// The fixture with a clean environment: only `envs` and a quiet log filter.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "mcp_test_server=warn,rmcp=error")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// A stdio fixture process with an MCP client session on its pipes.
struct StdioServer {
    child: Child,
    client: Client,
}

impl StdioServer {
    async fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_with(args, envs, ClientLifecycleMode::Initialize).await
    }

    async fn start_with(
        args: &[&str],
        envs: &[(&str, &str)],
        lifecycle: ClientLifecycleMode,
    ) -> Self {
        let mut child = command(args, envs).spawn().expect("spawn mcp-test-server");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take().expect("stdin is piped");
        let client = tokio::time::timeout(
            PROMPTLY,
            ().serve_with_lifecycle((stdout, stdin), lifecycle),
        )
        .await
        .expect("initialize in time")
        .expect("initialize");
        Self { child, client }
    }

    /// Closes the client (and so the server's stdin) and returns how the server exited.
    async fn close(mut self) -> ExitStatus {
        self.client.cancel().await.expect("client task");
        wait(&mut self.child).await
    }
}

async fn wait(child: &mut Child) -> ExitStatus {
    tokio::time::timeout(PROMPTLY, child.wait())
        .await
        .expect("server exits in time")
        .expect("wait for server")
}

fn args(value: serde_json::Value) -> JsonObject {
    value.as_object().cloned().expect("a JSON object")
}

async fn call(
    client: &Client,
    tool: &'static str,
    arguments: Option<JsonObject>,
) -> Result<CallToolResult, ServiceError> {
    let mut params = CallToolRequestParams::new(tool);
    if let Some(arguments) = arguments {
        params = params.with_arguments(arguments);
    }
    client.call_tool(params).await
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect()
}

async fn tool_names(client: &Client) -> BTreeSet<String> {
    client
        .list_tools(None)
        .await
        .expect("tools/list")
        .tools
        .into_iter()
        .map(|tool| tool.name.into_owned())
        .collect()
}

/// tools/list sent as a plain request: no client response cache involved.
async fn raw_list_tools(client: &Client) -> Result<ServerResult, ServiceError> {
    client
        .send_request(ClientRequest::ListToolsRequest(ListToolsRequest::default()))
        .await
}

/// A raw tools/list that gives up after `timeout`.
async fn raw_list_tools_within(
    client: &Client,
    timeout: Duration,
) -> Result<ServerResult, ServiceError> {
    client
        .send_request_with_option(
            ClientRequest::ListToolsRequest(ListToolsRequest::default()),
            PeerRequestOptions::with_timeout(timeout),
        )
        .await?
        .await_response()
        .await
}

fn assert_internal_error(result: Result<impl std::fmt::Debug, ServiceError>) {
    match result {
        Err(ServiceError::McpError(error)) => assert_eq!(error.code, ErrorCode::INTERNAL_ERROR),
        other => panic!("expected a JSON-RPC internal error, got {other:?}"),
    }
}

#[tokio::test]
async fn stdio_initialize_list_echo_and_exit_on_stdin_eof() {
    let server = StdioServer::start(&[], &[("MCP_TEST_VERSION", "v7")]).await;
    let info = server
        .client
        .peer_info()
        .expect("server info after initialize");
    let implementation = info.server_info.clone().expect("server implementation");
    assert_eq!(implementation.name, "mcp-test-server");
    assert_eq!(implementation.version, "v7");

    assert_eq!(
        tool_names(&server.client).await,
        ALL_TOOLS.map(String::from).into()
    );

    let echoed = call(
        &server.client,
        "echo",
        Some(args(serde_json::json!({"text": "hello, fixture"}))),
    )
    .await
    .expect("echo");
    assert_eq!(echoed.is_error, Some(false));
    assert_eq!(text(&echoed), "hello, fixture");

    let version = call(&server.client, "version", None)
        .await
        .expect("version");
    assert_eq!(text(&version), "v7");

    let slept = call(
        &server.client,
        "sleep",
        Some(args(serde_json::json!({"ms": 20}))),
    )
    .await
    .expect("sleep");
    assert_eq!(text(&slept), "slept");

    let status = server.close().await;
    assert!(
        status.success(),
        "stdin EOF must end the server cleanly: {status:?}"
    );
}

#[tokio::test]
async fn echo_without_text_is_a_tool_error() {
    let server = StdioServer::start(&[], &[]).await;
    let result = call(&server.client, "echo", Some(JsonObject::new()))
        .await
        .expect("echo");
    assert_eq!(result.is_error, Some(true), "{result:?}");
    server.close().await;
}

#[tokio::test]
async fn version_defaults_to_dev() {
    let server = StdioServer::start(&[], &[]).await;
    let version = call(&server.client, "version", None)
        .await
        .expect("version");
    assert_eq!(text(&version), "dev");
    server.close().await;
}

#[tokio::test]
async fn whoami_is_a_tool_error_without_the_token() {
    let server = StdioServer::start(&[], &[]).await;
    let result = call(&server.client, "whoami", None)
        .await
        .expect("whoami answers");
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).contains("missing"), "{result:?}");
    server.close().await;
}

#[tokio::test]
async fn whoami_reports_the_token_length_never_the_token() {
    let token = "s3cret-token-value";
    let server = StdioServer::start(&[], &[("MCP_TEST_TOKEN", token)]).await;
    let result = call(&server.client, "whoami", None).await.expect("whoami");
    assert_eq!(result.is_error, Some(false));
    let answer = text(&result);
    assert_eq!(answer, format!("token-length:{}", token.len()));
    assert!(!answer.contains(token));
    server.close().await;
}

#[tokio::test]
async fn jsonrpc_error_answers_a_jsonrpc_error() {
    let server = StdioServer::start(&[], &[]).await;
    assert_internal_error(call(&server.client, "jsonrpc_error", None).await);
    // The session survives the error.
    assert!(call(&server.client, "version", None).await.is_ok());
    server.close().await;
}

#[tokio::test]
async fn fail_tools_list_after_two_fails_the_third() {
    let server = StdioServer::start(&["--fail-tools-list-after", "2"], &[]).await;
    assert_eq!(tool_names(&server.client).await.len(), ALL_TOOLS.len());
    assert!(matches!(
        raw_list_tools(&server.client).await,
        Ok(ServerResult::ListToolsResult(_))
    ));
    // The server sends no ttlMs on the legacy protocol, so rmcp stores nothing and its
    // cached list_tools surfaces the failure too.
    assert_internal_error(server.client.list_tools(None).await);
    assert_internal_error(raw_list_tools(&server.client).await);
    server.close().await;
}

#[tokio::test]
async fn fail_tools_list_knob_reads_its_environment_variable_and_the_flag_wins() {
    let by_env = StdioServer::start(&[], &[("MCP_TEST_FAIL_TOOLS_LIST_AFTER", "0")]).await;
    assert_internal_error(raw_list_tools(&by_env.client).await);
    by_env.close().await;

    let flag_wins = StdioServer::start(
        &["--fail-tools-list-after", "1"],
        &[("MCP_TEST_FAIL_TOOLS_LIST_AFTER", "0")],
    )
    .await;
    assert!(raw_list_tools(&flag_wins.client).await.is_ok());
    assert_internal_error(raw_list_tools(&flag_wins.client).await);
    flag_wins.close().await;
}

/// Documents rmcp 3.9's client response cache: `Peer::list_tools` answers from its cache
/// while a result is fresh (no request at all) and serves an expired result when the
/// re-fetch fails (`serve_stale_on_error`, on by default). A health probe must send the
/// raw request, or disable the cache, to see the failure.
#[tokio::test]
async fn rmcp_list_tools_cache_hides_failures_when_the_server_advertises_a_ttl() {
    // Fresh cache: the second list_tools never reaches the server.
    let server = StdioServer::start(
        &[
            "--tools-list-ttl-ms",
            "60000",
            "--fail-tools-list-after",
            "1",
        ],
        &[],
    )
    .await;
    assert_eq!(tool_names(&server.client).await.len(), ALL_TOOLS.len());
    assert!(
        server.client.list_tools(None).await.is_ok(),
        "served from the fresh cache"
    );
    assert_internal_error(raw_list_tools(&server.client).await);
    server
        .client
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    assert_internal_error(server.client.list_tools(None).await);
    server.close().await;

    // Expired cache: the failed re-fetch is answered with the stale result.
    let server = StdioServer::start(
        &["--tools-list-ttl-ms", "1", "--fail-tools-list-after", "1"],
        &[],
    )
    .await;
    assert_eq!(tool_names(&server.client).await.len(), ALL_TOOLS.len());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        server.client.list_tools(None).await.is_ok(),
        "stale result served on error"
    );
    assert_internal_error(raw_list_tools(&server.client).await);
    server
        .client
        .set_response_cache_config(ClientCacheConfig::default().with_serve_stale_on_error(false))
        .await;
    assert_internal_error(server.client.list_tools(None).await);
    server.close().await;
}

#[tokio::test]
async fn hang_tools_list_after_one_never_answers_the_second() {
    let server = StdioServer::start(&["--hang-tools-list-after", "1"], &[]).await;
    assert!(raw_list_tools(&server.client).await.is_ok());
    let hung = raw_list_tools_within(&server.client, Duration::from_millis(500)).await;
    assert!(
        matches!(hung, Err(ServiceError::Timeout { .. })),
        "{hung:?}"
    );
    // Other requests still answer while tools/list hangs.
    assert!(call(&server.client, "version", None).await.is_ok());
    let status = server.close().await;
    assert!(
        status.success(),
        "a hung request must not hold up exit: {status:?}"
    );
}

#[tokio::test]
async fn hang_on_call_never_answers_that_tool_only() {
    let server = StdioServer::start(&["--hang-on-call", "echo"], &[]).await;
    let hung = server
        .client
        .send_request_with_option(
            ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
                CallToolRequestParams::new("echo")
                    .with_arguments(args(serde_json::json!({"text": "x"}))),
            )),
            PeerRequestOptions::with_timeout(Duration::from_millis(500)),
        )
        .await
        .expect("request sent")
        .await_response()
        .await;
    assert!(
        matches!(hung, Err(ServiceError::Timeout { .. })),
        "{hung:?}"
    );
    assert_eq!(
        text(
            &call(&server.client, "version", None)
                .await
                .expect("version")
        ),
        "dev"
    );
    let started = Instant::now();
    let status = server.close().await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exit took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn exit_immediately_code_three_exits_with_three() {
    let mut child = command(&["--exit-immediately-code", "3"], &[])
        .spawn()
        .expect("spawn");
    assert_eq!(wait(&mut child).await.code(), Some(3));

    let mut child = command(&[], &[("MCP_TEST_EXIT_IMMEDIATELY_CODE", "4")])
        .spawn()
        .expect("spawn");
    assert_eq!(wait(&mut child).await.code(), Some(4));
}

#[tokio::test]
async fn exit_after_ms_exits_zero_while_the_session_is_open() {
    let mut server = StdioServer::start(&["--exit-after-ms", "300"], &[]).await;
    assert!(call(&server.client, "version", None).await.is_ok());
    let status = wait(&mut server.child).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn startup_delay_postpones_the_session() {
    let started = Instant::now();
    let server = StdioServer::start(&["--startup-delay-ms", "400"], &[]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    server.close().await;
}

#[tokio::test]
async fn a_client_that_gives_up_during_the_startup_delay_ends_the_server_cleanly() {
    use tokio::io::AsyncWriteExt as _;

    let mut child = command(&["--startup-delay-ms", "300"], &[])
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let initialize = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"capabilities":{},"clientInfo":{"name":"t","version":"1"},"protocolVersion":"2025-06-18"}}"#;
    stdin
        .write_all(format!("{initialize}\n").as_bytes())
        .await
        .expect("write initialize");
    // The client goes away without reading the answer: stdout's read end closes.
    drop(child.stdout.take());
    let status = wait(&mut child).await;
    assert_eq!(
        status.code(),
        Some(0),
        "a broken stdout pipe ends the session like EOF"
    );
    drop(stdin);
}

#[tokio::test]
async fn help_prints_usage() {
    let output = command(&["--help"], &[])
        .output()
        .await
        .expect("run --help");
    assert!(output.status.success());
    let usage = String::from_utf8_lossy(&output.stdout);
    assert!(usage.contains("Usage: mcp-test-server"));
    for knob in [
        "--transport",
        "--startup-delay-ms",
        "--exit-after-ms",
        "--exit-immediately-code",
        "--hang-on-call",
        "--hang-tools-list-after",
        "--fail-tools-list-after",
        "MCP_TEST_FAIL_TOOLS_LIST_AFTER",
        "MCP_PORT",
    ] {
        assert!(usage.contains(knob), "--help does not mention {knob}");
    }
}

#[tokio::test]
async fn bad_arguments_exit_with_an_error_and_nothing_on_stdout() {
    let output = command(&["--startup-delay-ms", "soon"], &[])
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let output = command(&["--transport", "http"], &[])
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn stdio_speaks_the_2026_07_28_discover_lifecycle() {
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let server = StdioServer::start_with(&["--fail-tools-list-after", "1"], &[], lifecycle).await;
    let listed = server.client.list_tools(None).await.expect("tools/list");
    assert_eq!(listed.tools.len(), ALL_TOOLS.len());
    // 2026-07-28 requires cache hints; the fixture says "do not cache".
    assert_eq!(listed.ttl_ms, Some(0));
    let echoed = call(
        &server.client,
        "echo",
        Some(args(serde_json::json!({"text": "new protocol"}))),
    )
    .await
    .expect("echo");
    assert_eq!(text(&echoed), "new protocol");
    assert_internal_error(server.client.list_tools(None).await);
    server.close().await;
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Starts the fixture on HTTP and waits until it accepts connections.
async fn start_http(extra: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let port = free_port();
    let port_arg = port.to_string();
    let mut args = vec!["--transport", "http", "--port", &port_arg];
    args.extend_from_slice(extra);
    let mut child = command(&args, envs)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + PROMPTLY;
    while TcpStream::connect(address).is_err() {
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "server exited early"
        );
        assert!(
            Instant::now() < deadline,
            "server did not listen on {address}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, format!("http://{address}/mcp"))
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn http_echo_and_sigterm_exits_cleanly() {
    let (mut child, url) = start_http(&[], &[("MCP_TEST_VERSION", "http-1")]).await;
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(url))
            .await
            .expect("initialize over HTTP");
    assert_eq!(
        tool_names(&client).await,
        ALL_TOOLS.map(String::from).into()
    );
    let echoed = call(
        &client,
        "echo",
        Some(args(serde_json::json!({"text": "over http"}))),
    )
    .await
    .expect("echo");
    assert_eq!(text(&echoed), "over http");
    assert_eq!(
        text(&call(&client, "version", None).await.expect("version")),
        "http-1"
    );
    assert_internal_error(call(&client, "jsonrpc_error", None).await);

    sigterm(&child);
    let status = wait(&mut child).await;
    assert!(
        status.success(),
        "SIGTERM must end the HTTP server cleanly: {status:?}"
    );
    drop(client);
}

#[tokio::test]
async fn http_tools_list_counter_is_shared_across_sessions() {
    let (mut child, url) = start_http(&["--fail-tools-list-after", "1"], &[]).await;
    let first =
        ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
            .await
            .expect("first session");
    assert!(raw_list_tools(&first).await.is_ok());
    let second =
        ().serve(StreamableHttpClientTransport::from_uri(url))
            .await
            .expect("second session");
    assert_internal_error(raw_list_tools(&second).await);
    sigterm(&child);
    assert!(wait(&mut child).await.success());
}

#[tokio::test]
async fn http_port_from_mcp_port_and_the_2026_07_28_lifecycle() {
    let port = free_port().to_string();
    let mut child = command(&["--transport", "http"], &[("MCP_PORT", &port)])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let deadline = Instant::now() + PROMPTLY;
    while TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not listen on MCP_PORT {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let client =
        ().serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle)
            .await
            .expect("discover over HTTP");
    let echoed = call(
        &client,
        "echo",
        Some(args(serde_json::json!({"text": "stateless"}))),
    )
    .await
    .expect("echo");
    assert_eq!(text(&echoed), "stateless");
    sigterm(&child);
    assert!(wait(&mut child).await.success());
}
