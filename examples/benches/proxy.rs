//! Proxy overhead of mcpd's `/mcp/{server}` (a bench binary that prints its
//! figures): `tools/call` of the test server's `echo`, made through mcpd
//! and made directly to a test server over streamable HTTP, one client at a
//! time and from concurrent clients (one session each). Prints p50/p99
//! latency and throughput of both, the ratios, and PASS/FAIL against the
//! goal: the proxy adds at most 0.3 ms to p50, and keeps at least 80 % of
//! the direct throughput.
//!
//! mcpd (this package's binary) runs as a child process with the local
//! backend, managing the test server (mcpd re-executed as
//! `serve-mcp-test-server`) over streamable HTTP; the direct baseline is a
//! second test server process started the same way, so both paths end in
//! the same program over the same transport.
//!
//! `cargo bench -p mcp-lifecycle-examples --bench proxy`. Sizes:
//! `PROXY_BENCH_CALLS` (sequential calls per path, default 2000),
//! `PROXY_BENCH_CLIENTS` (concurrent clients, default 32),
//! `PROXY_BENCH_CLIENT_CALLS` (calls per concurrent client, default 100),
//! `PROXY_BENCH_WARMUP` (untimed calls per client first, default 50).
//! `PROXY_BENCH_UPSTREAM=stdio` makes mcpd reach the managed server over
//! stdio instead of streamable HTTP (the direct baseline stays HTTP), to
//! see what the second HTTP hop costs.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

const MCPD: &str = env!("CARGO_BIN_EXE_mcpd");
const TOKEN: &str = "proxy-bench-admin-token";
/// Goal: what the proxy may add to the median latency.
const MAX_ADDED_P50: Duration = Duration::from_micros(300);
/// Goal: the share of the direct throughput the proxy keeps.
const MIN_THROUGHPUT_RATIO: f64 = 0.8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process ended when dropped: SIGTERM first, so mcpd stops the
/// servers it started (a SIGKILLed mcpd would leave them running), then
/// SIGKILL if it has not exited within 10 s.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts mcpd with its configuration in `dir`; returns it and its base URL.
fn start_mcpd(dir: &std::path::Path) -> anyhow::Result<(Running, String)> {
    let config = dir.join("mcpd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nbackend: local\nstore: {{ in_memory: true }}\n\
             tokens:\n  - {{ name: bench, role: admin, token: {TOKEN} }}\n\
             local: {{ allowed_programs: [\"{MCPD}\"] }}\n"
        ),
    )?;
    let mut child = Command::new(MCPD)
        .arg("--config")
        .arg(&config)
        .arg("--stop-servers-on-exit")
        .env("RUST_LOG", "info,rmcp=warn")
        .env("NO_COLOR", "1")
        .env_remove("MCPD_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mcpd")?;
    let stderr = child.stderr.take().context("mcpd's stderr")?;
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    // Keeps draining stderr so mcpd never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                let url: String = line[at + "listening on ".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(url);
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .context("mcpd did not say where it listens")?;
    Ok((running, base))
}

/// A free loopback port (free a moment ago).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts the test server over streamable HTTP on its own.
fn start_direct(port: u16) -> anyhow::Result<Running> {
    let child = Command::new(MCPD)
        .args(["serve-mcp-test-server", "--transport", "http", "--port"])
        .arg(port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the direct test server")?;
    Ok(Running(child))
}

type McpClient = RunningService<RoleClient, ()>;

async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<McpClient> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    Ok(
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await?,
    )
}

/// Connects, retrying until the server listens or `within` passes.
async fn connect_when_up(
    url: &str,
    token: Option<&str>,
    within: Duration,
) -> anyhow::Result<McpClient> {
    let deadline = Instant::now() + within;
    loop {
        match connect(url, token).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("connecting to {url}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn echo(client: &McpClient) -> anyhow::Result<()> {
    let mut params = CallToolRequestParams::new("echo");
    params.arguments = json!({ "text": "bench" }).as_object().cloned();
    let result = client.peer().call_tool(params).await?;
    if result.is_error == Some(true) {
        bail!("echo answered a tool error: {result:?}");
    }
    Ok(())
}

/// Latencies of `calls` echoes on one session, after `warmup` untimed ones.
async fn run_client(
    client: &McpClient,
    warmup: usize,
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..warmup {
        echo(client).await?;
    }
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let began = Instant::now();
        echo(client).await?;
        latencies.push(began.elapsed());
    }
    Ok(latencies)
}

/// One path's figures.
struct Figures {
    p50: Duration,
    p99: Duration,
    calls_per_sec: f64,
}

fn figures(mut latencies: Vec<Duration>, wall: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        calls_per_sec: latencies.len() as f64 / wall.as_secs_f64(),
    }
}

/// `clients` sessions to `url`, each making `calls` echoes at once with the others.
async fn measure(
    url: &str,
    token: Option<&str>,
    clients: usize,
    warmup: usize,
    calls: usize,
) -> anyhow::Result<Figures> {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        sessions.push(connect(url, token).await?);
    }
    for session in &sessions {
        run_client(session, warmup, 0).await?;
    }
    let began = Instant::now();
    let runs = sessions.iter().map(|s| run_client(s, 0, calls));
    let results = futures::future::join_all(runs).await;
    let wall = began.elapsed();
    let mut latencies = Vec::with_capacity(clients * calls);
    for result in results {
        latencies.extend(result?);
    }
    for session in sessions {
        let _ = session.cancel().await;
    }
    Ok(figures(latencies, wall))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn report(label: &str, direct: &Figures, proxy: &Figures) {
    println!("{label}:");
    for (name, f) in [("direct", direct), ("proxy ", proxy)] {
        println!(
            "  {name}  p50 {}  p99 {}  {:.0} calls/s",
            ms(f.p50),
            ms(f.p99),
            f.calls_per_sec
        );
    }
    let added = proxy.p50.saturating_sub(direct.p50);
    let p50_ratio = proxy.p50.as_secs_f64() / direct.p50.as_secs_f64();
    let p99_ratio = proxy.p99.as_secs_f64() / direct.p99.as_secs_f64();
    let throughput_ratio = proxy.calls_per_sec / direct.calls_per_sec;
    println!(
        "  ratios (proxy/direct): p50 {p50_ratio:.2}x  p99 {p99_ratio:.2}x  throughput {throughput_ratio:.2}"
    );
    println!(
        "  goal p50 added <= {}: {} ({})",
        ms(MAX_ADDED_P50),
        ms(added),
        verdict(added <= MAX_ADDED_P50)
    );
    println!(
        "  goal throughput >= {:.0} % of direct: {:.0} % ({})",
        MIN_THROUGHPUT_RATIO * 100.0,
        throughput_ratio * 100.0,
        verdict(throughput_ratio >= MIN_THROUGHPUT_RATIO)
    );
}

async fn run() -> anyhow::Result<()> {
    let calls = env_usize("PROXY_BENCH_CALLS", 2000);
    let clients = env_usize("PROXY_BENCH_CLIENTS", 32);
    let client_calls = env_usize("PROXY_BENCH_CLIENT_CALLS", 100);
    let warmup = env_usize("PROXY_BENCH_WARMUP", 50);

    let dir = tempfile::tempdir()?;
    let (_mcpd, base) = start_mcpd(dir.path())?;
    let direct_port = free_port()?;
    let _direct = start_direct(direct_port)?;
    let direct_url = format!("http://127.0.0.1:{direct_port}/mcp");
    let proxy_url = format!("{base}/mcp/echo");

    // The managed server: the same test server, over streamable HTTP
    // unless asked otherwise.
    let over_stdio = std::env::var("PROXY_BENCH_UPSTREAM").is_ok_and(|v| v == "stdio");
    let (args, transport) = if over_stdio {
        ("[serve-mcp-test-server]", "stdio")
    } else {
        (
            "[serve-mcp-test-server, --transport, http]",
            "{ http: { port: 8080, path: /mcp } }",
        )
    };
    let spec = format!(
        "name: echo\nsource:\n  command:\n    program: \"{MCPD}\"\n    args: {args}\n\
         transport: {transport}\nenv:\n  - {{ name: RUST_LOG, value: warn }}\n"
    );
    let http = reqwest::Client::new();
    let applied = http
        .post(format!("{base}/api/v1/servers"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await?;
    if !applied.status().is_success() {
        bail!("apply failed: {}", applied.text().await?);
    }
    let started = http
        .post(format!(
            "{base}/api/v1/servers/echo/start?wait=true&timeout=60s"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    if !started.status().is_success() {
        bail!("start failed: {}", started.text().await?);
    }
    // Both paths answer before anything is timed.
    let up = Duration::from_secs(30);
    connect_when_up(&direct_url, None, up)
        .await?
        .cancel()
        .await?;
    connect_when_up(&proxy_url, Some(TOKEN), up)
        .await?
        .cancel()
        .await?;

    println!(
        "tools/call echo, direct to the test server vs through mcpd's /mcp/echo \
         (streamable HTTP; mcpd to the server over {}; release build)",
        if over_stdio {
            "stdio"
        } else {
            "streamable HTTP"
        }
    );
    let direct = measure(&direct_url, None, 1, warmup, calls).await?;
    let proxy = measure(&proxy_url, Some(TOKEN), 1, warmup, calls).await?;
    report(
        &format!("sequential, {calls} calls on one session"),
        &direct,
        &proxy,
    );
    let direct = measure(&direct_url, None, clients, warmup, client_calls).await?;
    let proxy = measure(&proxy_url, Some(TOKEN), clients, warmup, client_calls).await?;
    report(
        &format!("{clients} concurrent clients, {client_calls} calls each"),
        &direct,
        &proxy,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
