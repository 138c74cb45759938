//! MCP latency benchmark (a bench binary that prints its figures).
//!
//! 1. Time from `Lifecycle::start` to Ready for the test server over stdio
//!    (spawn, MCP initialize, readiness `tools/list`, status published),
//!    beside the time to spawn the same binary and complete an MCP
//!    initialize by hand with rmcp, and their ratio (goal ≤ 1.1); and beside
//!    spawn + initialize + `tools/list`, which is what our readiness check
//!    does (an instance is not ready until `tools/list` answers).
//! 2. Cost of one liveness probe (`tools/list`) over an open streamable
//!    HTTP session.
//!
//! `cargo bench -p mcp-lifecycle-tests --bench mcp`; `MCP_BENCH_RUNS` sets
//! the number of starts (default 30).
#![allow(clippy::print_stdout)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_lifecycle::spec::Command;
use mcp_lifecycle::{Lifecycle, LocalOrchestrator, ServerSpec, Source, Transport, Wait};
use rmcp::ServiceExt;

const SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn spec(name: &str, transport: Transport) -> ServerSpec {
    let mut spec = ServerSpec::new(
        name,
        Source::Command(Command {
            program: SERVER.to_owned(),
            args: match transport {
                Transport::Stdio => vec![],
                _ => vec!["--transport".into(), "http".into()],
            },
            working_dir: None,
        }),
    );
    spec.transport = transport;
    spec
}

async fn by_hand(with_tools_list: bool) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let mut child = tokio::process::Command::new(SERVER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let client = ().serve((stdout, stdin)).await?;
    if with_tools_list {
        client.peer().list_tools(None).await?;
    }
    let elapsed = began.elapsed();
    client.cancel().await?;
    let _ = child.kill().await;
    Ok(elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("MCP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(LocalOrchestrator::new()))
        .build()
        .await?;

    // Warm the page cache and the allocator once, untimed.
    by_hand(true).await?;

    let mut ours = Vec::with_capacity(runs);
    let mut hand = Vec::with_capacity(runs);
    let mut hand_listed = Vec::with_capacity(runs);
    for n in 0..runs {
        let name = format!("bench-{n}");
        lifecycle.apply(spec(&name, Transport::Stdio)).await?;
        let began = Instant::now();
        lifecycle
            .start(&name, Wait::UntilReady(Duration::from_secs(10)))
            .await?;
        ours.push(began.elapsed());
        lifecycle.delete(&name).await?;
        hand.push(by_hand(false).await?);
        hand_listed.push(by_hand(true).await?);
    }
    let (ours_m, hand_m) = (median(ours.clone()), median(hand.clone()));
    let ratio = ours_m.as_secs_f64() / hand_m.as_secs_f64();
    println!(
        "start to ready over stdio ({runs} runs): median {ours_m:?}, min {:?}, max {:?}",
        ours.iter().min().copied().unwrap_or_default(),
        ours.iter().max().copied().unwrap_or_default()
    );
    println!(
        "spawn + initialize by hand ({runs} runs): median {hand_m:?}, min {:?}, max {:?}",
        hand.iter().min().copied().unwrap_or_default(),
        hand.iter().max().copied().unwrap_or_default()
    );
    let listed_m = median(hand_listed.clone());
    println!(
        "spawn + initialize + tools/list by hand ({runs} runs): median {listed_m:?} (what our readiness check does)"
    );
    println!(
        "ratio (ours / spawn + initialize): {ratio:.2} (goal <= 1.1: {})",
        if ratio <= 1.1 { "PASS" } else { "MISS" }
    );
    println!(
        "ratio (ours / spawn + initialize + tools/list): {:.2}",
        ours_m.as_secs_f64() / listed_m.as_secs_f64()
    );

    // Probe cost over an open streamable HTTP session.
    lifecycle
        .apply(spec(
            "bench-http",
            Transport::Http {
                port: 8080,
                path: "/mcp".into(),
            },
        ))
        .await?;
    lifecycle
        .start("bench-http", Wait::UntilReady(Duration::from_secs(10)))
        .await?;
    let peer = lifecycle.peer("bench-http").await?;
    let probes = 1000;
    for _ in 0..50 {
        peer.peer().list_tools(None).await?;
    }
    let began = Instant::now();
    for _ in 0..probes {
        peer.peer().list_tools(None).await?;
    }
    let per_probe = began.elapsed() / probes;
    println!(
        "liveness probe (tools/list) over an open streamable HTTP session: {per_probe:?} per probe ({probes} probes, sequential)"
    );
    lifecycle.shutdown().await?;
    Ok(())
}
