//! Rollout step benchmark (a bench binary that prints its figures).
//!
//! A rolling replacement proceeds one step at a time: a new instance turns
//! ready, then an old one is removed. This measures the time between the two
//! — from the new instance's `-> ready` event to the old instance's
//! `-> stopping` event, both taken as they reach a subscriber — over real
//! processes on the local backend (the test MCP server over stdio, 2
//! replicas, a spec change per rollout). Nothing but the controller's own
//! reaction sits between them, so the goal is a median under 50 ms.
//!
//! `cargo bench -p mcp-lifecycle-tests --bench rollout`;
//! `ROLLOUT_BENCH_ROLLOUTS` sets the number of rollouts (default 10).
#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_lifecycle::spec::{Command, EnvEntry};
use mcp_lifecycle::state::ServerPhase;
use mcp_lifecycle::{
    Lifecycle, LifecycleEvent, LifecycleEventKind, LocalOrchestrator, ServerSpec, Source, Wait,
};

const SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
const NAME: &str = "rollout";
const GOAL: Duration = Duration::from_millis(50);

fn spec(generation: usize) -> ServerSpec {
    let mut spec = ServerSpec::new(
        NAME,
        Source::Command(Command {
            program: SERVER.to_owned(),
            args: vec![],
            working_dir: None,
        }),
    );
    spec.replicas = 2;
    spec.env.push(EnvEntry::plain(
        "ROLLOUT_GENERATION",
        generation.to_string(),
    ));
    spec
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Pairs each `-> ready` with the next `-> stopping` (the step it unblocks).
fn step_latencies(events: &[(Instant, LifecycleEvent)]) -> Vec<Duration> {
    let mut steps = Vec::new();
    let mut ready_at: Option<Instant> = None;
    for (at, event) in events {
        if event.kind != LifecycleEventKind::InstancePhaseChanged {
            continue;
        }
        if event.message.ends_with("-> ready") {
            ready_at.get_or_insert(*at);
        } else if event.message.ends_with("ready -> stopping")
            && let Some(ready) = ready_at.take()
        {
            steps.push(at.duration_since(ready));
        }
    }
    steps
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rollouts: usize = std::env::var("ROLLOUT_BENCH_ROLLOUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(LocalOrchestrator::new()))
        .build()
        .await?;
    lifecycle.apply(spec(0)).await?;
    lifecycle
        .start(NAME, Wait::UntilReady(Duration::from_secs(30)))
        .await?;

    let received: Arc<Mutex<Vec<(Instant, LifecycleEvent)>>> = Arc::default();
    let mut events = lifecycle.subscribe();
    let sink = received.clone();
    let collector = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let at = Instant::now();
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((at, event));
        }
    });

    let began = Instant::now();
    for generation in 1..=rollouts {
        lifecycle.apply(spec(generation)).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = lifecycle.status(NAME).await?;
            if status.phase == ServerPhase::Running
                && status.instances.len() == 2
                && status.instances.iter().all(|i| i.current)
            {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("rollout {generation} did not finish: {}", status.to_table());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let total = began.elapsed();
    lifecycle.shutdown().await?;
    collector.abort();

    let events = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut steps = step_latencies(&events);
    steps.sort();
    if steps.len() != 2 * rollouts {
        anyhow::bail!(
            "expected {} rollout steps (2 replicas x {rollouts} rollouts), saw {}",
            2 * rollouts,
            steps.len()
        );
    }
    let median = percentile(&steps, 0.5);
    println!(
        "rollout steps (new instance ready -> old instance removal started), local backend, \
         2 replicas, {rollouts} rollouts in {total:?}: median {median:?}, p90 {:?}, max {:?}, \
         min {:?} ({} steps)",
        percentile(&steps, 0.9),
        steps[steps.len() - 1],
        steps[0],
        steps.len()
    );
    println!(
        "goal rollout step median < {GOAL:?}: {}",
        if median < GOAL { "PASS" } else { "FAIL" }
    );
    Ok(())
}
