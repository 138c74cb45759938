//! Reconcile benchmark: how many runtime calls, store writes, how much time
//! and memory the controller spends on N servers × 1 replica against
//! [`FakeOrchestrator`], for a cold pass (everything to start) and a
//! steady-state pass (nothing to do), next to a naive sequential baseline
//! written here.
//!
//! Run with `cargo bench -p mcp-lifecycle --all-features --bench reconcile`.
//! `RECONCILE_BENCH_SERVERS` overrides the server count (default 10000) and
//! `RECONCILE_BENCH_STEADY_RUNS` the number of steady-state passes (default 5).
//!
//! This is a benchmark, not a test: it prints its figures and one PASS/FAIL
//! line per goal, and exits non-zero only on a functional error (a call that
//! fails, servers that never become Running).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mcp_lifecycle::ports::{Fence, Lease, Precondition, Record, RuntimeStatus, Version, labels};
use mcp_lifecycle::testing::{CallCounts, FakeOrchestrator, FakeProber, ImageCatalog, fake_digest};
use mcp_lifecycle::{
    ErrorKind, InMemoryStore, InstanceId, InstanceObservation, InstanceSpec, Lifecycle,
    LifecycleConfig, Orchestrator, ServerSpec, Source, Store, Timestamp,
};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Counts live heap bytes, so the library's own share of memory can be told
/// apart from the fake runtime's and the store's (which outlive a detach).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const IMAGE: &str = "registry.local/echo:1";
const DEFAULT_SERVERS: usize = 10_000;
const DEFAULT_STEADY_RUNS: usize = 5;
/// How long the cold pass may take before the bench calls it a failure.
const COLD_TIMEOUT: Duration = Duration::from_secs(600);
/// The controller counts as quiet once nothing moved for this long.
const QUIET_FOR: Duration = Duration::from_millis(300);
/// Longest wait for the controller to become quiet.
const QUIET_MAX: Duration = Duration::from_secs(60);
/// The goal: steady-state calls at least this many times fewer than the baseline.
const GOAL_RATIO: f64 = 50.0;
/// Goal: a steady pass over 10,000 servers in at most 50 ms (5 µs a server).
const GOAL_STEADY_PER_SERVER: Duration = Duration::from_micros(5);
/// Goal: a steady pass within this factor of the naive baseline's time.
const GOAL_STEADY_VS_BASELINE: f64 = 5.0;
/// Goal: resident memory per server, fake runtime and store included.
const GOAL_BYTES_PER_SERVER: f64 = 12.0 * 1024.0;
/// Goal: store writes per instance for a cold start.
const GOAL_COLD_WRITES_PER_INSTANCE: f64 = 2.0;

fn main() -> ExitCode {
    let servers = env_usize("RECONCILE_BENCH_SERVERS", DEFAULT_SERVERS).max(1);
    let steady_runs = env_usize("RECONCILE_BENCH_STEADY_RUNS", DEFAULT_STEADY_RUNS).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reconcile bench: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(servers, steady_runs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reconcile bench: FUNCTIONAL ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// A counting store
// ---------------------------------------------------------------------------

#[derive(Default)]
struct StoreCounters {
    puts: AtomicU64,
    deletes: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    leases: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StoreCounts {
    puts: u64,
    deletes: u64,
    gets: u64,
    lists: u64,
    leases: u64,
}

impl StoreCounts {
    fn writes(&self) -> u64 {
        self.puts + self.deletes
    }

    fn reads(&self) -> u64 {
        self.gets + self.lists
    }
}

impl std::fmt::Display for StoreCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store writes {} (put={} delete={}), reads {} (get={} list={}), lease ops {}",
            self.writes(),
            self.puts,
            self.deletes,
            self.reads(),
            self.gets,
            self.lists,
            self.leases
        )
    }
}

/// [`InMemoryStore`] with counters on every operation.
#[derive(Default)]
struct CountingStore {
    inner: InMemoryStore,
    counters: StoreCounters,
}

impl CountingStore {
    fn counts(&self) -> StoreCounts {
        let c = &self.counters;
        StoreCounts {
            puts: c.puts.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            leases: c.leases.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        let c = &self.counters;
        for counter in [&c.puts, &c.deletes, &c.gets, &c.lists, &c.leases] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl Store for CountingStore {
    async fn get(&self, collection: &str, key: &str) -> mcp_lifecycle::Result<Option<Record>> {
        bump(&self.counters.gets);
        self.inner.get(collection, key).await
    }

    async fn list(&self, collection: &str) -> mcp_lifecycle::Result<Vec<Record>> {
        bump(&self.counters.lists);
        self.inner.list(collection).await
    }

    async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> mcp_lifecycle::Result<Version> {
        bump(&self.counters.puts);
        self.inner.put(collection, key, value, expect, fence).await
    }

    async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> mcp_lifecycle::Result<()> {
        bump(&self.counters.deletes);
        self.inner.delete(collection, key, expect, fence).await
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> mcp_lifecycle::Result<Option<Lease>> {
        bump(&self.counters.leases);
        self.inner.acquire_lease(key, holder, ttl, now).await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> mcp_lifecycle::Result<Lease> {
        bump(&self.counters.leases);
        self.inner.renew_lease(lease, ttl, now).await
    }

    async fn release_lease(&self, lease: &Lease) -> mcp_lifecycle::Result<()> {
        bump(&self.counters.leases);
        self.inner.release_lease(lease).await
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn server_name(i: usize) -> String {
    format!("srv-{i}")
}

fn server_spec(i: usize) -> ServerSpec {
    ServerSpec::new(server_name(i), Source::Image(IMAGE.into()))
}

fn fake_runtime() -> FakeOrchestrator {
    let catalog = ImageCatalog::new();
    catalog.push(IMAGE, fake_digest("echo-v1"));
    FakeOrchestrator::builder().with_catalog(catalog).build()
}

fn fmt_calls(c: &CallCounts) -> String {
    let mut s = format!(
        "list={} inspect={} start={} stop={} remove={}",
        c.list, c.inspect, c.start, c.stop, c.remove
    );
    if c.logs > 0 || c.connect > 0 {
        s.push_str(&format!(" logs={} connect={}", c.logs, c.connect));
    }
    s.push_str(&format!(" (total {})", c.total()));
    s
}

fn writes_of(c: &CallCounts) -> u64 {
    c.start + c.stop + c.remove
}

/// Milliseconds, with three decimals below 10 ms.
fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

fn ratio(baseline: f64, ours: f64) -> f64 {
    if ours == 0.0 {
        if baseline == 0.0 { 1.0 } else { f64::INFINITY }
    } else {
        baseline / ours
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_infinite() {
        "inf".to_owned()
    } else if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 1.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.3}x")
    }
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

fn pass_fail(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// VmHWM (peak resident set) and VmRSS of this process, in bytes, from
/// `/proc/self/status`; `None` where that file does not exist.
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line
            .trim_start_matches(name)
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM")?, field("VmRSS")?))
}

/// Waits until neither the runtime's call counters nor the store's counters
/// have moved for [`QUIET_FOR`] (at most [`QUIET_MAX`]). Returns whether it
/// became quiet.
async fn wait_quiet(fake: &FakeOrchestrator, store: &CountingStore) -> bool {
    let start = Instant::now();
    let mut last = (fake.calls(), store.counts());
    let mut since = Instant::now();
    while start.elapsed() < QUIET_MAX {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = (fake.calls(), store.counts());
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET_FOR {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

struct Figures {
    wall: Duration,
    calls: CallCounts,
}

async fn run(n: usize, steady_runs: usize) -> BenchResult<()> {
    let config = LifecycleConfig {
        // Long enough that the periodic resync never runs during the bench.
        resync_interval: Duration::from_secs(24 * 3600),
        ..LifecycleConfig::default()
    };
    println!(
        "reconcile bench: {n} servers x 1 replica, FakeOrchestrator (no latency), FakeProber, \
         counting InMemoryStore; {} tokio worker threads, max_concurrent_reconciles={}",
        std::thread::available_parallelism().map_or(0, usize::from),
        config.max_concurrent_reconciles
    );

    // ----- ours: cold pass ---------------------------------------------------
    let mem_before = memory();
    let heap_before = ALLOCATOR.allocated();
    let fake = fake_runtime();
    let store = Arc::new(CountingStore::default());
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(fake.clone()))
        .store(store.clone())
        .prober(Arc::new(FakeProber::new()))
        .config(config)
        .build()
        .await?;
    println!(
        "build: calls {}, {}",
        fmt_calls(&fake.calls()),
        store.counts()
    );
    fake.reset_calls();
    store.reset();

    let t0 = Instant::now();
    for i in 0..n {
        lifecycle.apply(server_spec(i)).await?;
    }
    let applied = t0.elapsed();
    let deadline = t0 + COLD_TIMEOUT;
    for i in 0..n {
        let remaining = deadline.saturating_duration_since(Instant::now());
        lifecycle.wait_ready(&server_name(i), remaining).await?;
    }
    let cold_wall = t0.elapsed();
    let cold_calls = fake.calls();
    let cold_store = store.counts();
    let quiet = wait_quiet(&fake, store.as_ref()).await;
    let cold_calls_settled = fake.calls();
    let cold_store_settled = store.counts();
    let mem_after = memory();
    let heap_after = ALLOCATOR.allocated();

    // Functional checks: every server Running, exactly one running instance each.
    let statuses = lifecycle.list().await;
    let running = statuses
        .iter()
        .filter(|s| s.phase == mcp_lifecycle::state::ServerPhase::Running && s.ready == 1)
        .count();
    let instances = fake.instances();
    let live = instances
        .iter()
        .filter(|i| i.observation.status == RuntimeStatus::Running)
        .count();
    if running != n || live != n || instances.len() != n {
        return Err(format!(
            "after the cold pass {running}/{n} servers are Running with 1 ready, and the runtime \
             holds {} instances of which {live} run (expected {n})",
            instances.len()
        )
        .into());
    }
    // Not kept: the heap figures below are the library's, the fake's and the store's.
    drop(statuses);
    drop(instances);

    println!(
        "cold: wall {} ms (applies done after {} ms), calls {}, {}",
        ms(cold_wall),
        ms(applied),
        fmt_calls(&cold_calls),
        cold_store
    );
    println!(
        "cold (after the controller went quiet{}): calls {}, {}",
        if quiet { "" } else { "; IT DID NOT GO QUIET" },
        fmt_calls(&cold_calls_settled),
        cold_store_settled
    );
    match (mem_before, mem_after) {
        (Some((hwm0, rss0)), Some((hwm1, rss1))) => {
            let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
            println!(
                "memory (RSS-based, from /proc/self/status; includes the fake runtime's and the \
                 in-memory store's own state): peak (VmHWM) {:.0} bytes/server, resident (VmRSS) \
                 {:.0} bytes/server [VmHWM {} -> {} KiB, VmRSS {} -> {} KiB]",
                per(hwm0, hwm1),
                per(rss0, rss1),
                hwm0 / 1024,
                hwm1 / 1024,
                rss0 / 1024,
                rss1 / 1024
            );
        }
        _ => println!("memory: n/a (/proc/self/status not readable)"),
    }
    println!(
        "heap (live bytes by the counting allocator): {:.0} bytes/server",
        heap_after.saturating_sub(heap_before) as f64 / n as f64
    );
    let rss_per_server = match (mem_before, mem_after) {
        (Some((_, rss0)), Some((_, rss1))) => Some(rss1.saturating_sub(rss0) as f64 / n as f64),
        _ => None,
    };

    // ----- ours: steady-state passes -----------------------------------------
    let mut steady_walls = Vec::with_capacity(steady_runs);
    let mut steady_worst_calls = CallCounts::default();
    let mut steady_worst_store = StoreCounts::default();
    for run in 1..=steady_runs {
        fake.reset_calls();
        store.reset();
        let t = Instant::now();
        let report = lifecycle.resync().await?;
        let wall = t.elapsed();
        let at_return = fake.calls();
        let store_at_return = store.counts();
        // The resync kicks every server's task afterwards; count what those passes do too.
        let quiet = wait_quiet(&fake, store.as_ref()).await;
        let calls = fake.calls();
        let stored = store.counts();
        if report.servers != n || report.workloads != n {
            return Err(format!(
                "steady resync #{run} reconciled {} servers over {} workloads (expected {n} and {n})",
                report.servers, report.workloads
            )
            .into());
        }
        println!(
            "steady run {run}: wall {} ms; at return: calls {}, store writes {}; \
             until quiet{}: calls {}, {}",
            ms(wall),
            fmt_calls(&at_return),
            store_at_return.writes(),
            if quiet { "" } else { " (DID NOT GO QUIET)" },
            fmt_calls(&calls),
            stored
        );
        steady_walls.push(wall);
        if calls.total() >= steady_worst_calls.total() {
            steady_worst_calls = calls;
        }
        if stored.writes() >= steady_worst_store.writes() {
            steady_worst_store = stored;
        }
    }
    let steady_median = median(&steady_walls);
    let steady_min = steady_walls.iter().copied().min().unwrap_or_default();
    println!(
        "steady: wall {} ms (median of {steady_runs}), min {} ms, calls {} (worst run), \
         store writes {} (worst run)",
        ms(steady_median),
        ms(steady_min),
        fmt_calls(&steady_worst_calls),
        steady_worst_store.writes()
    );
    // The library's share: what dropping the Lifecycle gives back (the fake
    // runtime and the store live on in this function).
    let heap_with = ALLOCATOR.allocated();
    lifecycle.detach().await;
    tokio::task::yield_now().await;
    let heap_without = ALLOCATOR.allocated();
    let library_share = heap_with.saturating_sub(heap_without) as f64 / n as f64;
    println!(
        "heap freed by dropping the Lifecycle (the library's own share): {library_share:.0} \
         bytes/server; the fake runtime and the store keep {:.0} bytes/server",
        heap_without.saturating_sub(heap_before) as f64 / n as f64
    );
    drop(fake);
    drop(store);

    // ----- naive baseline ------------------------------------------------------
    let baseline = fake_runtime();
    let desired = desired_state(n);
    let base_cold = baseline_cold(&baseline, &desired).await?;
    let base_live = baseline
        .instances()
        .iter()
        .filter(|i| i.observation.status == RuntimeStatus::Running)
        .count();
    if base_live != n {
        return Err(
            format!("the baseline's cold pass left {base_live}/{n} instances running").into(),
        );
    }
    let mut base_walls = Vec::with_capacity(steady_runs);
    let mut base_steady_calls = CallCounts::default();
    for _ in 0..steady_runs {
        let figures = baseline_steady(&baseline, &desired).await?;
        base_walls.push(figures.wall);
        base_steady_calls = figures.calls;
    }
    let base_steady_median = median(&base_walls);
    let base_steady_min = base_walls.iter().copied().min().unwrap_or_default();
    println!(
        "baseline cold: wall {} ms, calls {}",
        ms(base_cold.wall),
        fmt_calls(&base_cold.calls)
    );
    println!(
        "baseline steady: wall {} ms (median of {steady_runs}), min {} ms, calls {}",
        ms(base_steady_median),
        ms(base_steady_min),
        fmt_calls(&base_steady_calls)
    );
    println!(
        "note: the baseline has no store, no validation and no probes, and each fake call costs \
         microseconds; against a real runtime (a call costs milliseconds) time follows calls"
    );

    // ----- ratios and goals ------------------------------------------------------
    let steady_call_ratio = ratio(
        base_steady_calls.total() as f64,
        steady_worst_calls.total() as f64,
    );
    let steady_time_ratio = ratio(
        base_steady_median.as_secs_f64(),
        steady_median.as_secs_f64(),
    );
    let cold_call_ratio = ratio(
        base_cold.calls.total() as f64,
        cold_calls_settled.total() as f64,
    );
    let cold_time_ratio = ratio(base_cold.wall.as_secs_f64(), cold_wall.as_secs_f64());
    println!(
        "ratio steady (baseline / ours): calls {} ({} / {}), time {} (median {} ms / {} ms)",
        fmt_ratio(steady_call_ratio),
        base_steady_calls.total(),
        steady_worst_calls.total(),
        fmt_ratio(steady_time_ratio),
        ms(base_steady_median),
        ms(steady_median)
    );
    println!(
        "ratio cold (baseline / ours): calls {} ({} / {}), time {} ({} ms / {} ms)",
        fmt_ratio(cold_call_ratio),
        base_cold.calls.total(),
        cold_calls_settled.total(),
        fmt_ratio(cold_time_ratio),
        ms(base_cold.wall),
        ms(cold_wall)
    );

    let no_writes = writes_of(&steady_worst_calls) == 0;
    let one_list = steady_worst_calls.list <= 1;
    let fewer = steady_call_ratio >= GOAL_RATIO;
    let no_store_writes = steady_worst_store.writes() == 0;
    println!(
        "goal steady: no orchestrator write (start+stop+remove = {}): {}",
        writes_of(&steady_worst_calls),
        pass_fail(no_writes)
    );
    println!(
        "goal steady: at most one list call (list = {}): {}",
        steady_worst_calls.list,
        pass_fail(one_list)
    );
    println!(
        "goal steady: at least {GOAL_RATIO:.0}x fewer orchestrator calls than the baseline ({}): {}",
        fmt_ratio(steady_call_ratio),
        pass_fail(fewer)
    );
    println!(
        "goal steady (DESIGN.md: a steady-state pass makes no store write) (writes = {}): {}",
        steady_worst_store.writes(),
        pass_fail(no_store_writes)
    );
    let steady_goal = GOAL_STEADY_PER_SERVER * u32::try_from(n).unwrap_or(u32::MAX);
    println!(
        "goal steady: a pass over {n} servers within {} ms (5 µs a server) (median {} ms): {}",
        ms(steady_goal),
        ms(steady_median),
        pass_fail(steady_median <= steady_goal)
    );
    let vs_baseline = steady_median.as_secs_f64() / base_steady_median.as_secs_f64().max(1e-9);
    println!(
        "goal steady: within {GOAL_STEADY_VS_BASELINE:.0}x of the baseline's time ({vs_baseline:.2}x): {}",
        pass_fail(vs_baseline <= GOAL_STEADY_VS_BASELINE)
    );
    match rss_per_server {
        Some(bytes) => println!(
            "goal memory: at most {:.0} KiB resident per server, fake runtime and store included \
             ({:.1} KiB; the library's own heap share {:.1} KiB): {}",
            GOAL_BYTES_PER_SERVER / 1024.0,
            bytes / 1024.0,
            library_share / 1024.0,
            pass_fail(bytes <= GOAL_BYTES_PER_SERVER)
        ),
        None => println!("goal memory: n/a (/proc/self/status not readable): MISS"),
    }
    let writes_per_instance = cold_store_settled.writes() as f64 / n as f64;
    println!(
        "goal cold: at most {GOAL_COLD_WRITES_PER_INSTANCE:.0} store writes per instance \
         ({writes_per_instance:.2}): {}",
        pass_fail(writes_per_instance <= GOAL_COLD_WRITES_PER_INSTANCE)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The naive baseline
// ---------------------------------------------------------------------------

/// What the baseline wants per server: one instance of this spec.
struct Desired {
    spec: InstanceSpec,
}

fn desired_state(n: usize) -> Vec<Desired> {
    (0..n)
        .map(|i| {
            let server = server_spec(i);
            let id = InstanceId::new(&server.name, 0);
            let hash = server.workload_hash();
            let labels = BTreeMap::from([
                (labels::MANAGED_BY.to_owned(), "naive-baseline".to_owned()),
                (labels::SERVER.to_owned(), server.name.clone()),
                (labels::INSTANCE.to_owned(), id.to_string()),
                (labels::SPEC_HASH.to_owned(), hash.clone()),
            ]);
            Desired {
                spec: InstanceSpec {
                    id,
                    server: server.name.clone(),
                    spec_hash: hash,
                    source: server.source.clone(),
                    transport: server.transport.clone(),
                    env: Vec::new(),
                    resources: server.resources.clone(),
                    labels,
                    stop_grace_period: server.stop_grace_period,
                },
            }
        })
        .collect()
}

/// Cold: for each server in turn, inspect its instance (NotFound) and start it.
async fn baseline_cold(runtime: &FakeOrchestrator, desired: &[Desired]) -> BenchResult<Figures> {
    runtime.reset_calls();
    let t = Instant::now();
    for d in desired {
        match runtime.inspect(&d.spec.id).await {
            Ok(obs)
                if obs.status == RuntimeStatus::Running && obs.spec_hash == d.spec.spec_hash => {}
            Ok(_) => {
                runtime.remove(&d.spec.id).await?;
                runtime.start(&d.spec).await?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                runtime.start(&d.spec).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Figures {
        wall: t.elapsed(),
        calls: runtime.calls(),
    })
}

/// Steady: inspect every instance (no list), then walk the servers one by one,
/// compare desired with observed and issue the calls needed (none here).
async fn baseline_steady(runtime: &FakeOrchestrator, desired: &[Desired]) -> BenchResult<Figures> {
    runtime.reset_calls();
    let t = Instant::now();
    let mut observed: Vec<Option<InstanceObservation>> = Vec::with_capacity(desired.len());
    for d in desired {
        match runtime.inspect(&d.spec.id).await {
            Ok(obs) => observed.push(Some(obs)),
            Err(e) if e.kind() == ErrorKind::NotFound => observed.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    for (d, obs) in desired.iter().zip(&observed) {
        match obs {
            Some(o) if o.status == RuntimeStatus::Running && o.spec_hash == d.spec.spec_hash => {}
            Some(_) => {
                runtime.remove(&d.spec.id).await?;
                runtime.start(&d.spec).await?;
            }
            None => {
                runtime.start(&d.spec).await?;
            }
        }
    }
    Ok(Figures {
        wall: t.elapsed(),
        calls: runtime.calls(),
    })
}
