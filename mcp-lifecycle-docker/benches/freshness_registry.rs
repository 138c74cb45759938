//! Registry load of one freshness cycle: `BENCH_SERVERS` (default 1,000)
//! servers on the fake orchestrator over `BENCH_REFS` (default 50) distinct
//! image references, checked by `RegistryResolver` against the local
//! registry of `scripts/test-images.sh` (127.0.0.1:5000). A fresh
//! `Lifecycle` has no `next_check_at`, so `run_freshness_cycle()` finds
//! every server due.
//!
//! Prints the registry requests of the cycle, counted twice: by the registry
//! itself (manifest `HEAD`/`GET` lines for the bench's tags in
//! `/var/tmp/mcp-lifecycle-registry/registry-5000.log`) and by a counting
//! `ImageResolver` decorator. The goal is exactly one request per reference
//! (PASS/MISS, never asserted); also the cycle's wall time. Panics only on
//! functional errors (a server not checked, or not up to date).
//!
//! The bench pushes v1 as `127.0.0.1:5000/mcp-test-server:bench-ref-<i>`
//! (its own tags; nothing shared is moved or deleted) and removes the local
//! tags afterwards. Needs the engine and the registry; prints why and exits 0
//! without them. Run: `cargo bench -p mcp-lifecycle-docker --all-features
//! --bench freshness_registry`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mcp_lifecycle::ports::ResolveFailure;
use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::state::Freshness;
use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, ImageCatalog};
use mcp_lifecycle::{
    Error, ImageResolver, Lifecycle, LifecycleConfig, RegistryResolver, ServerSpec, Source,
};

const REGISTRY: &str = "127.0.0.1:5000";
const REPO: &str = "127.0.0.1:5000/mcp-test-server";
const LOG: &str = "/var/tmp/mcp-lifecycle-registry/registry-5000.log";
const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";

/// Counts resolutions on their way to the real resolver.
struct Counting<R> {
    inner: R,
    calls: AtomicU64,
}

#[async_trait]
impl<R: ImageResolver> ImageResolver for Counting<R> {
    async fn resolve(&self, reference: &str) -> mcp_lifecycle::Result<String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.resolve(reference).await
    }

    fn classify(&self, error: &Error) -> ResolveFailure {
        self.inner.classify(error)
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn local_v1() -> String {
    let from_file = std::fs::read_to_string(IMAGES_ENV)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MCP_TEST_IMAGE_V1=").map(str::to_owned));
    std::env::var("MCP_TEST_IMAGE_V1")
        .ok()
        .or(from_file)
        .unwrap_or_else(|| "mcp-lifecycle/test-server:v1".to_owned())
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Tags `source` as `target`, pushes it, returns the pushed digest.
fn push_as(source: &str, target: &str) -> Result<String, String> {
    docker(&["tag", source, target])?;
    let out = docker(&["push", target])?;
    out.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_owned)
        .ok_or_else(|| format!("docker push {target} reported no digest: {out}"))
}

fn log_len() -> u64 {
    std::fs::metadata(LOG).map(|m| m.len()).unwrap_or(0)
}

/// Access-log lines written since `from`: (manifest HEAD/GET for the bench's
/// tags, `GET /v2/` version/auth probes, every request).
fn registry_requests_since(from: u64) -> (usize, usize, usize) {
    let Ok(bytes) = std::fs::read(LOG) else {
        return (0, 0, 0);
    };
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    // The access log: `127.0.0.1 - - [time] "HEAD /v2/... HTTP/1.1" 200 ...`.
    let requests: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" \"").map(|(_, r)| r))
        .filter(|r| r.contains(" HTTP/1."))
        .collect();
    let manifests = requests
        .iter()
        .filter(|r| {
            (r.starts_with("HEAD ") || r.starts_with("GET "))
                && r.contains("/v2/mcp-test-server/manifests/bench-ref-")
        })
        .count();
    let probes = requests
        .iter()
        .filter(|r| r.starts_with("GET /v2/ "))
        .count();
    (manifests, probes, requests.len())
}

fn main() {
    let servers = env_usize("BENCH_SERVERS", 1000).max(1);
    let refs = env_usize("BENCH_REFS", 50).clamp(1, servers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(servers, refs));
}

async fn run(servers: usize, refs: usize) {
    if tokio::net::TcpStream::connect(REGISTRY).await.is_err() {
        println!(
            "freshness_registry: SKIPPED (no registry at {REGISTRY}; run scripts/test-images.sh)"
        );
        return;
    }
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        println!("freshness_registry: SKIPPED (no Docker engine: {e})");
        return;
    }
    let source = local_v1();
    let tags: Vec<String> = (0..refs).map(|i| format!("{REPO}:bench-ref-{i}")).collect();
    let pushing = Instant::now();
    let mut digest = None;
    for tag in &tags {
        let pushed = tokio::task::block_in_place(|| push_as(&source, tag))
            .unwrap_or_else(|e| panic!("pushing {tag}: {e}"));
        assert!(
            digest.as_ref().is_none_or(|d| *d == pushed),
            "{tag} pushed as {pushed}, others as {digest:?}"
        );
        digest = Some(pushed);
    }
    let digest = digest.expect("at least one reference");
    println!(
        "freshness_registry: pushed {refs} tags of {source} ({digest}) in {:.1?}",
        pushing.elapsed()
    );

    // The fake runtime reports the real digest for each reference and its pinned form.
    let catalog = ImageCatalog::new();
    for tag in &tags {
        catalog.push(tag.clone(), digest.clone());
    }
    catalog.push(format!("{REPO}@{digest}"), digest.clone());
    let runtime = FakeOrchestrator::builder().with_catalog(catalog).build();
    let resolver = Arc::new(Counting {
        inner: RegistryResolver::builder()
            .insecure_registry(REGISTRY)
            .timeout(Duration::from_secs(10))
            .build(),
        calls: AtomicU64::new(0),
    });
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(runtime))
        .prober(Arc::new(FakeProber::new()))
        .resolver(resolver.clone())
        .config(LifecycleConfig {
            manager_name: format!("mcpl-bench-fresh-{}", std::process::id()),
            // The controller's own cycles wait this long: the bench runs the one cycle.
            freshness_tick: Duration::from_secs(3600),
            ..LifecycleConfig::default()
        })
        .build()
        .await
        .expect("Lifecycle::build");
    let starting = Instant::now();
    for n in 0..servers {
        let mut spec = ServerSpec::new(
            format!("bench-{n:05}"),
            Source::Image(tags[n % refs].clone()),
        );
        spec.update = UpdatePolicy {
            check: true,
            auto_reinstall: false,
        };
        lifecycle.apply(spec).await.expect("apply");
    }
    for n in 0..servers {
        lifecycle
            .wait_ready(&format!("bench-{n:05}"), Duration::from_secs(300))
            .await
            .expect("every server ready");
    }
    println!(
        "freshness_registry: {servers} servers ready on the fake runtime in {:.1?}",
        starting.elapsed()
    );

    let before_log = log_len();
    let before_calls = resolver.calls.load(Ordering::Relaxed);
    let started = Instant::now();
    let report = lifecycle
        .run_freshness_cycle()
        .await
        .expect("freshness cycle");
    let wall = started.elapsed();
    // The registry writes its access log line after answering; let it land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = resolver.calls.load(Ordering::Relaxed) - before_calls;
    let (manifests, probes, all_requests) = registry_requests_since(before_log);

    assert_eq!(report.checked, servers, "every server was due: {report:?}");
    let mut up_to_date = 0;
    for n in 0..servers {
        let s = lifecycle
            .status(&format!("bench-{n:05}"))
            .await
            .expect("status");
        if s.update.state
            == (Freshness::UpToDate {
                digest: digest.clone(),
            })
        {
            up_to_date += 1;
        }
    }
    assert_eq!(up_to_date, servers, "every server is up to date");

    let goal = refs as u64;
    let verdict = |n: u64| if n == goal { "PASS" } else { "MISS" };
    println!("freshness_registry: servers {servers}, distinct references {refs}");
    println!(
        "  cycle report: checked {} resolved {} verified {} leased_elsewhere {}",
        report.checked, report.resolved, report.verified, report.leased_elsewhere
    );
    println!(
        "  registry requests per cycle (registry log, manifest HEAD/GET of the bench tags): {manifests} (goal {goal}) {}",
        verdict(manifests as u64)
    );
    println!(
        "  registry requests per cycle (counting resolver): {calls} (goal {goal}) {}",
        verdict(calls)
    );
    println!(
        "  other registry requests meanwhile: GET /v2/ (API version / auth challenge) {probes}; every request logged (any client) {all_requests}"
    );
    println!(
        "  cycle wall time: {wall:.1?} ({:.1} servers/s), {up_to_date}/{servers} up to date",
        servers as f64 / wall.as_secs_f64()
    );

    lifecycle.detach().await;
    for tag in &tags {
        let _ = docker(&["rmi", "--no-prune", tag]);
    }
}
