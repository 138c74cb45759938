//! What the mcpd tests share: running the daemon as a real process with a
//! configuration in a temporary directory, reading its bound address and
//! log from stderr, calling its API, and stopping it with SIGTERM.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

pub(crate) const MCPD: &str = env!("CARGO_BIN_EXE_mcpd");
pub(crate) const ADMIN: &str = "admin-token-for-tests";
pub(crate) const READER: &str = "read-only-token-for-tests";

/// A running mcpd and what it has written to stderr.
pub(crate) struct Mcpd {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) log: Arc<Mutex<String>>,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

impl Drop for Mcpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_mcpd(extra: &[&str]) -> Mcpd {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_mcpd_in(dir.path(), extra);
    d._dir = Some(dir);
    d
}

/// The command that runs mcpd with a configuration written into `dir`
/// (in-memory state unless `extra` names a store).
pub(crate) fn mcpd_command(dir: &std::path::Path, extra: &[&str]) -> Command {
    mcpd_command_with(dir, "store: { in_memory: true }\n", extra)
}

/// [`mcpd_command`] with `settings` (YAML lines: the store and anything
/// else) in the configuration file instead of the in-memory store.
pub(crate) fn mcpd_command_with(dir: &std::path::Path, settings: &str, extra: &[&str]) -> Command {
    let config = dir.join("mcpd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nbackend: local\n{settings}\
             tokens:\n  - {{ name: ops, role: admin, token: {ADMIN} }}\n  \
             - {{ name: dash, role: read-only, token_env: MCPD_TEST_READ_TOKEN }}\n\
             local: {{ allowed_programs: [\"{MCPD}\"] }}\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(MCPD);
    command
        .arg("--config")
        .arg(&config)
        .args(extra)
        .env("MCPD_TEST_READ_TOKEN", READER)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("MCPD_ADMIN_TOKEN");
    command
}

pub(crate) fn start_mcpd_in(dir: &std::path::Path, extra: &[&str]) -> Mcpd {
    spawn_mcpd(mcpd_command(dir, extra))
}

/// Starts `command` (an [`mcpd_command`]) and waits until it listens.
pub(crate) fn spawn_mcpd(mut command: Command) -> Mcpd {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                let url: String = line[at + "listening on ".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                let _ = tx.send(url);
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("mcpd did not start: {}", log.lock().unwrap()));
    Mcpd {
        child,
        base,
        log,
        _dir: None,
    }
}

impl Mcpd {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, Value) {
        let mut req = Client::new().request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((content_type, text)) = body {
            req = req.header("content-type", content_type).body(text);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
        };
        (status, value)
    }

    pub(crate) async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(
            method,
            path,
            Some(ADMIN),
            body.map(|b| ("application/json", b.to_string())),
        )
        .await
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

pub(crate) fn spec_yaml(name: &str, program: &str) -> String {
    format!(
        "name: {name}\nsource:\n  command:\n    program: \"{program}\"\n    args: [serve-mcp-test-server]\n\
         health:\n  interval: 1s\n"
    )
}

pub(crate) fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Sends SIGTERM and waits for a clean exit.
pub(crate) async fn terminate(d: &mut Mcpd) {
    let pid = d.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}: {}", d.log());
            return;
        }
        assert!(Instant::now() < deadline, "mcpd did not exit: {}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `tool` with `{"text": text}` over MCP at `path` (`/mcp/NAME` or
/// `/mcp`) with the read-only token, and returns the result's text.
pub(crate) async fn call_tool(d: &Mcpd, path: &str, tool: &str, text: &str) -> String {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config = StreamableHttpClientTransportConfig::with_uri(d.url(path)).auth_header(READER);
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .unwrap_or_else(|e| panic!("initialize at {path}: {e}"));
    let mut params = rmcp::model::CallToolRequestParams::new(tool.to_owned());
    params.arguments = serde_json::json!({ "text": text }).as_object().cloned();
    let result = client
        .call_tool(params)
        .await
        .unwrap_or_else(|e| panic!("{tool} at {path}: {e}"));
    let _ = client.cancel().await;
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}
