//! MCP latency benchmark (a bench binary that prints its figures).
//!
//! 1. Time from `Lifecycle::apply` to Ready for the test server over stdio
//!    (record written, spawn, MCP initialize, readiness `tools/list`, status
//!    published), beside the time to spawn the same binary and complete an
//!    MCP initialize and one `tools/list` by hand with rmcp — what readiness
//!    honestly needs (an instance is not ready until `tools/list` answers) —
//!    and their ratio (the median of each run's ratio, beside the ratio of
//!    the medians), PASS/FAIL against the goal ≤ 1.05. Spawn +
//!    initialize alone is printed too, for reference. The measurements take
//!    turns run by run, each after a short pause, so neither drift in the
//!    machine's load nor the previous process's exit favours one of them.
//! 2. Time from `apply` to Ready over streamable HTTP (a tenth as many runs).
//! 3. Cost of one liveness probe (`tools/list`) over an open streamable
//!    HTTP session.
//!
//! `cargo bench -p mcp-lifecycle-tests --bench mcp`; `MCP_BENCH_RUNS` sets
//! the number of starts of each kind (default 200).
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

fn http_transport() -> Transport {
    Transport::Http {
        port: 8080,
        path: "/mcp".into(),
    }
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

/// Pause before each timed start.
const SETTLE: Duration = Duration::from_millis(20);

/// `apply` of a spec with one replica starts it: the clock runs from there
/// (not from `start`, which only waits) until `start` sees it Ready. The
/// server is deleted again, untimed.
async fn ours_once(
    lifecycle: &Lifecycle,
    name: &str,
    transport: Transport,
) -> anyhow::Result<Duration> {
    let began = Instant::now();
    lifecycle.apply(spec(name, transport)).await?;
    lifecycle
        .start(name, Wait::UntilReady(Duration::from_secs(10)))
        .await?;
    let elapsed = began.elapsed();
    lifecycle.delete(name).await?;
    Ok(elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("MCP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
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
        // The three measurements take turns going first, and each starts
        // after a pause, so the previous process's exit (or a deleted
        // server's graceful stop) never overlaps the next one's start.
        for k in 0..3 {
            tokio::time::sleep(SETTLE).await;
            match (n + k) % 3 {
                0 => {
                    ours.push(ours_once(&lifecycle, &format!("bench-{n}"), Transport::Stdio).await?)
                }
                1 => hand_listed.push(by_hand(true).await?),
                _ => hand.push(by_hand(false).await?),
            }
        }
    }
    let summary = |v: &[Duration]| {
        format!(
            "median {:?}, min {:?}, max {:?}",
            median(v.to_vec()),
            v.iter().min().copied().unwrap_or_default(),
            v.iter().max().copied().unwrap_or_default()
        )
    };
    println!(
        "apply to ready over stdio ({runs} runs): {}",
        summary(&ours)
    );
    println!(
        "spawn + initialize + tools/list by hand ({runs} runs): {} (what readiness needs)",
        summary(&hand_listed)
    );
    println!(
        "spawn + initialize by hand ({runs} runs): {} (reference)",
        summary(&hand)
    );
    // Each run's own ratio: its two starts were taken moments apart, so load
    // from elsewhere on the machine mostly cancels out.
    let mut paired: Vec<f64> = ours
        .iter()
        .zip(&hand_listed)
        .map(|(o, h)| o.as_secs_f64() / h.as_secs_f64())
        .collect();
    paired.sort_by(f64::total_cmp);
    let ratio = paired[paired.len() / 2];
    let overhead = median(ours.clone()).as_secs_f64() - median(hand_listed.clone()).as_secs_f64();
    println!(
        "ratio (ours / spawn + initialize + tools/list): median of per-run ratios {ratio:.3}, of medians {:.3}; the library adds {:.0} µs (goal <= 1.05: {})",
        median(ours).as_secs_f64() / median(hand_listed).as_secs_f64(),
        overhead * 1e6,
        if ratio <= 1.05 { "PASS" } else { "FAIL" }
    );

    // Apply to Ready over streamable HTTP: the server binds its port a
    // moment after it starts, so the first connection may be refused.
    let http_runs = runs.div_ceil(10);
    let mut http = Vec::with_capacity(http_runs);
    for n in 0..http_runs {
        tokio::time::sleep(SETTLE).await;
        http.push(ours_once(&lifecycle, &format!("bench-http-{n}"), http_transport()).await?);
    }
    println!(
        "apply to ready over streamable HTTP ({http_runs} runs): {}",
        summary(&http)
    );

    // Probe cost over an open streamable HTTP session.
    lifecycle
        .apply(spec("bench-http", http_transport()))
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
