//! Crash-detection latency of `DockerOrchestrator`: from a `docker kill`
//! (through bollard, behind the orchestrator's back) to the `Exited` event on
//! `Orchestrator::events()`. Kills one running instance at least 20 times,
//! restarting it in place between kills, and prints the median, p90 and max.
//! The goal is a median under 250 ms; the result is printed as PASS or MISS,
//! never asserted.
//!
//! Runs against whichever engine `DOCKER_HOST` names (Docker, or Podman
//! through its Docker-compatible API) and prints that engine's name and
//! version beside the figures, so runs on both engines compare side by side.
//!
//! Needs a reachable engine and `scripts/test-images.sh`'s images; prints
//! why and exits 0 without them, or exits 1 under
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1` (as in CI, which must not skip it). Run:
//! `cargo bench -p mcp-lifecycle-docker --bench crash_detection` (`-- <kills>`
//! to change the count).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_lifecycle::Orchestrator;
use mcp_lifecycle::ports::{RuntimeEventKind, RuntimeStatus, labels};
use mcp_lifecycle::spec::Source;
use mcp_lifecycle::testing::orchestrator_conformance::conformance_spec;
use mcp_lifecycle_docker::DockerOrchestrator;
use mcp_lifecycle_docker::bollard::query_parameters::KillContainerOptionsBuilder;

const GOAL: Duration = Duration::from_millis(250);
const DEFAULT_KILLS: usize = 25;

fn main() {
    let kills = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DEFAULT_KILLS)
        .max(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(kills));
}

/// Says why the benchmark cannot run: a skip, or a failure where CI
/// requires the engine.
fn cannot_run(reason: &str) {
    if std::env::var("MCP_LIFECYCLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        println!("crash_detection: FAILED ({reason}; MCP_LIFECYCLE_REQUIRE_DOCKER=1)");
        std::process::exit(1);
    }
    println!("crash_detection: SKIPPED ({reason})");
}

fn image() -> String {
    let from_file = std::fs::read_to_string("/var/tmp/mcp-lifecycle-registry/images.env")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MCP_TEST_IMAGE_V1=").map(str::to_owned));
    std::env::var("MCP_TEST_IMAGE_V1")
        .ok()
        .or(from_file)
        .unwrap_or_else(|| "mcp-lifecycle/test-server:v1".to_owned())
}

async fn run(kills: usize) {
    let manager = format!("mcpl-bench-{}", std::process::id());
    let orch = match DockerOrchestrator::builder()
        .manager(&manager)
        .build()
        .await
    {
        Ok(orch) => orch,
        Err(e) => {
            cannot_run(&format!("no Docker engine: {e}"));
            return;
        }
    };
    let image = image();
    if orch.docker().inspect_image(&image).await.is_err() {
        cannot_run(&format!(
            "image {image} missing; run scripts/test-images.sh"
        ));
        return;
    }
    let mut spec = conformance_spec("crash-bench", 0, Source::Image(image.clone()));
    spec.labels
        .insert(labels::MANAGED_BY.to_owned(), manager.clone());

    let mut events = orch.events();
    let mut latencies = Vec::with_capacity(kills);
    let mut failures = 0;
    for _ in 0..kills {
        let obs = match orch.start(&spec).await {
            Ok(obs) => obs,
            Err(e) => {
                println!("crash_detection: start failed: {e}");
                failures += 1;
                continue;
            }
        };
        if obs.status != RuntimeStatus::Running {
            failures += 1;
            continue;
        }
        let container = match orch.container_id(&spec.id).await {
            Ok(Some(c)) => c,
            _ => {
                failures += 1;
                continue;
            }
        };
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let began = Instant::now();
        if let Err(e) = orch
            .docker()
            .kill_container(&container, Some(options))
            .await
        {
            println!("crash_detection: docker kill failed: {e}");
            failures += 1;
            continue;
        }
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.next().await {
                if event.instance == spec.id
                    && matches!(event.kind, RuntimeEventKind::Exited { .. })
                {
                    return true;
                }
            }
            false
        })
        .await;
        match seen {
            Ok(true) => latencies.push(began.elapsed()),
            _ => failures += 1,
        }
    }
    let _ = orch.remove(&spec.id).await;
    let left = orch
        .list(&BTreeMap::new())
        .await
        .map(|l| l.len())
        .unwrap_or(0);

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let engine = orch
        .runtime_version()
        .unwrap_or_else(|| "unknown engine".to_owned());
    println!(
        "crash_detection: kill -> Exited event on events(), {} kills ({} missed), {engine} (API {})",
        latencies.len(),
        failures,
        orch.docker().client_version()
    );
    if latencies.is_empty() {
        println!("crash_detection: MISS (no event observed)");
        return;
    }
    let median = latencies[latencies.len() / 2];
    let p90 = latencies[(latencies.len() * 9 / 10).min(latencies.len() - 1)];
    let min = latencies[0];
    let max = latencies[latencies.len() - 1];
    println!(
        "crash_detection: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(min),
        ms(median),
        ms(p90),
        ms(max)
    );
    let verdict = if median < GOAL && failures == 0 {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "crash_detection: {verdict} on {engine} (goal: median under {} ms, every kill observed)",
        GOAL.as_millis()
    );
    if left > 0 {
        println!("crash_detection: warning: {left} containers of {manager} left behind");
    }
}
