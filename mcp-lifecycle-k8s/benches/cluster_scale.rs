//! Scale benchmark of the Kubernetes backend on a real cluster, against two
//! goals of issue 13 ("observed by watch, never by polling"):
//!
//! 1. **API requests per steady minute.** N stdio servers (one replica each)
//!    run under one `Lifecycle` on `KubernetesOrchestrator`, whose kube
//!    `Client` goes through a counting tower layer. Once every server is
//!    Ready the counters are reset, the bench waits a steady window and
//!    prints the requests made in it: watch traffic (`watch=true`/`watch=1`
//!    requests, and the relists of the pod watch) apart from everything else,
//!    broken down by verb and resource. Goal: 0 requests beyond the watch's.
//! 2. **Status latency.** K times, one Ready server's MCP container is killed
//!    behind the library's back (`docker kill` of its `k8s_mcp_…` container,
//!    each time another server, so the kubelet restarts it at once, without
//!    back-off). The bench's own pod watch (a separate kube watcher on an
//!    uncounted client, with its own timestamps) notes when the pod's status
//!    changes (restart count up, or the container not running); the bench
//!    polls `Lifecycle::status` every 2 ms and notes when that instance stops
//!    being Ready or its attempt changes. Latency = the second moment minus
//!    the first (negative when the library saw it first). Goal: median under
//!    250 ms; median, p90 and max are printed.
//!
//! Servers run the local test image (`scripts/test-images.sh`) with small
//! requests (cpu 5m, memory 16Mi by default) so 200 pods fit on the one
//! node; `scripts/k8s-cluster.sh` starts its kubelet with `--max-pods=250`.
//! Everything happens in a namespace of its own, deleted at the end (also
//! after a failure, a timeout or Ctrl-C). All traffic goes to the API server
//! on 127.0.0.1 (the stdio sessions are pod attaches through it).
//!
//! Run (a cluster up, `KUBECONFIG` set):
//!
//! ```text
//! bash scripts/k8s-cluster.sh start
//! set -a; . <(bash scripts/k8s-cluster.sh env); set +a
//! cargo bench -p mcp-lifecycle-k8s --bench cluster_scale
//! ```
//!
//! Environment (defaults in brackets): `K8S_BENCH_SERVERS` [200],
//! `K8S_BENCH_STEADY_SECS` [60], `K8S_BENCH_SAMPLES` [20],
//! `K8S_BENCH_READY_SECS` (how long all servers may take to become Ready)
//! [900], `K8S_BENCH_DEADLINE_SECS` (the whole run, cleanup aside) [1800],
//! `K8S_BENCH_CPU` [5m], `K8S_BENCH_MEMORY` [16Mi]. Progress goes to
//! stderr; the summary lines (prefixed `cluster_scale:`) to stdout. Without
//! a cluster it prints why and exits 0, or fails under
//! `MCP_LIFECYCLE_REQUIRE_K8S=1`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::Request;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::client::ClientBuilder;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use mcp_lifecycle::ports::labels;
use mcp_lifecycle::spec::{Source, Transport, UpdatePolicy};
use mcp_lifecycle::state::ServerPhase;
use mcp_lifecycle::{InMemoryStore, Lifecycle, LifecycleConfig, ServerSpec, Wait};
use mcp_lifecycle_k8s::{KubernetesConfig, KubernetesOrchestrator};
use tokio::sync::Notify;
use tokio::time::sleep;
use tower::{Layer, Service};

const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";
/// The server container's name in every pod the backend creates.
const CONTAINER: &str = "mcp";
/// The latency goal of issue 13.
const LATENCY_GOAL_MS: f64 = 250.0;
/// How often the bench reads `Lifecycle::status` while waiting for a change.
const STATUS_POLL: Duration = Duration::from_millis(2);
/// How long one latency sample may take.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the namespace's deletion is waited for at the end.
const CLEANUP_WAIT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run())
}

// ------------------------------------------------------------------ settings

struct Settings {
    servers: usize,
    steady: Duration,
    samples: usize,
    ready_within: Duration,
    deadline: Duration,
    cpu: String,
    memory: String,
    image: String,
}

fn env_num(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            servers: usize::try_from(env_num("K8S_BENCH_SERVERS", 200)).unwrap(),
            steady: Duration::from_secs(env_num("K8S_BENCH_STEADY_SECS", 60)),
            samples: usize::try_from(env_num("K8S_BENCH_SAMPLES", 20)).unwrap(),
            ready_within: Duration::from_secs(env_num("K8S_BENCH_READY_SECS", 900)),
            deadline: Duration::from_secs(env_num("K8S_BENCH_DEADLINE_SECS", 1800)),
            cpu: std::env::var("K8S_BENCH_CPU").unwrap_or_else(|_| "5m".to_owned()),
            memory: std::env::var("K8S_BENCH_MEMORY").unwrap_or_else(|_| "16Mi".to_owned()),
            image: test_image(),
        }
    }
}

/// The local test image (`mcp-lifecycle/test-server:v1` unless images.env says otherwise).
fn test_image() -> String {
    std::fs::read_to_string(IMAGES_ENV)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MCP_TEST_IMAGE_V1=").map(str::to_owned))
        })
        .unwrap_or_else(|| "mcp-lifecycle/test-server:v1".to_owned())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}", (nanos / 1000) % 0xff_ffff)
}

fn server_name(i: usize) -> String {
    format!("bench-{i:03}")
}

macro_rules! progress {
    ($start:expr, $($arg:tt)*) => {
        eprintln!("[{:>7.1} s] {}", $start.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

// ------------------------------------------------------------------ counting layer

/// Requests made through the counted client, by class.
#[derive(Default, Clone)]
struct Tally {
    /// `watch=true` / `watch=1` requests.
    watches: u64,
    /// Lists of pods by label: the pod watch's own (re)lists.
    relists: u64,
    /// Everything else, by `VERB resource[/subresource]`.
    other: BTreeMap<String, u64>,
}

impl Tally {
    fn other_total(&self) -> u64 {
        self.other.values().sum()
    }
}

#[derive(Clone, Default)]
struct Counters(Arc<Mutex<Tally>>);

impl Counters {
    fn record<B>(&self, req: &Request<B>) {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let is_watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let (resource, named) = resource_of(path);
        let mut tally = self.0.lock().unwrap();
        if is_watch {
            tally.watches += 1;
        } else if method == "GET" && !named && resource == "pods" && query.contains("labelSelector")
        {
            tally.relists += 1;
        } else {
            let key = format!("{method} {resource}{}", if named { "" } else { " (list)" });
            *tally.other.entry(key).or_default() += 1;
        }
    }

    fn reset(&self) {
        *self.0.lock().unwrap() = Tally::default();
    }

    fn snapshot(&self) -> Tally {
        self.0.lock().unwrap().clone()
    }
}

/// `resource[/subresource]` of an API path, and whether it names one object:
/// `/api/v1/namespaces/NS/pods/NAME/status` → (`pods/status`, true).
fn resource_of(path: &str) -> (String, bool) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/VERSION/... or /apis/GROUP/VERSION/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") if segments.len() >= 2 => &segments[2..],
        Some(&"apis") if segments.len() >= 3 => &segments[3..],
        _ => return (path.to_owned(), false),
    };
    let rest = match rest {
        ["namespaces", _, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    match rest {
        [] => (path.to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    }
}

/// A tower layer counting every request the kube client sends.
#[derive(Clone)]
struct CountLayer(Counters);

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counters: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    counters: Counters,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        self.counters.record(&req);
        self.inner.call(req)
    }
}

// ------------------------------------------------------------------ the bench's own pod watch

/// What the bench's watch last saw of one pod's server container.
#[derive(Clone, Copy)]
struct PodSeen {
    restarts: i32,
    running: bool,
    /// When the bench's watch received the event that changed the two above.
    changed: Instant,
}

#[derive(Default)]
struct PodBoard {
    pods: Mutex<HashMap<String, PodSeen>>,
    changed: Notify,
}

impl PodBoard {
    fn get(&self, pod: &str) -> Option<PodSeen> {
        self.pods.lock().unwrap().get(pod).copied()
    }

    fn counts(&self) -> (usize, usize) {
        let pods = self.pods.lock().unwrap();
        (pods.len(), pods.values().filter(|p| p.running).count())
    }
}

fn container_state(pod: &Pod) -> (i32, bool) {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == CONTAINER))
        .map_or((0, false), |c| {
            let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
            (c.restart_count, running)
        })
}

fn watch_pods(api: Api<Pod>, board: Arc<PodBoard>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = watcher::Config::default().labels(labels::SERVER);
        let stream = watcher::watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    let Some(name) = pod.metadata.name.clone() else {
                        continue;
                    };
                    let (restarts, running) = container_state(&pod);
                    let mut pods = board.pods.lock().unwrap();
                    let entry = pods.entry(name).or_insert(PodSeen {
                        restarts,
                        running,
                        changed: now,
                    });
                    if entry.restarts != restarts || entry.running != running {
                        *entry = PodSeen {
                            restarts,
                            running,
                            changed: now,
                        };
                    }
                    drop(pods);
                    board.changed.notify_waiters();
                }
                Ok(Event::Delete(pod)) => {
                    if let Some(name) = pod.metadata.name.as_deref() {
                        board.pods.lock().unwrap().remove(name);
                    }
                }
                Ok(Event::Init | Event::InitDone) => {}
                Err(error) => eprintln!("bench pod watch: {error}; retrying"),
            }
        }
    })
}

// ------------------------------------------------------------------ namespace

/// The bench's namespace; deleted (without waiting) when dropped, unless
/// [`BenchNamespace::delete_and_wait`] already did it.
struct BenchNamespace {
    client: Client,
    name: String,
    deleted: bool,
}

impl BenchNamespace {
    async fn create(client: &Client) -> Result<BenchNamespace, String> {
        let name = unique("mcpbench");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| format!("cannot create a namespace (is a cluster up?): {e}"))?;
        let guard = BenchNamespace {
            client: client.clone(),
            name,
            deleted: false,
        };
        // The default service account appears shortly after the namespace.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &guard.name);
        let until = Instant::now() + Duration::from_secs(60);
        while accounts.get_opt("default").await.ok().flatten().is_none() {
            if Instant::now() > until {
                return Err("the namespace's default service account never appeared".into());
            }
            sleep(Duration::from_millis(200)).await;
        }
        Ok(guard)
    }

    async fn delete_and_wait(&mut self, start: Instant) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        if let Err(e) = namespaces.delete(&self.name, &params).await {
            progress!(start, "deleting namespace {}: {e}", self.name);
            return;
        }
        self.deleted = true;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.name);
        let until = Instant::now() + CLEANUP_WAIT;
        let mut next_report = Instant::now();
        loop {
            if let Ok(None) = namespaces.get_opt(&self.name).await {
                progress!(start, "namespace {} deleted", self.name);
                return;
            }
            if Instant::now() > until {
                progress!(
                    start,
                    "namespace {} still terminating after {CLEANUP_WAIT:?}; left to the cluster",
                    self.name
                );
                return;
            }
            if Instant::now() >= next_report {
                let left = pods
                    .list(&Default::default())
                    .await
                    .map_or(0, |l| l.items.len());
                progress!(start, "waiting for namespace deletion: {left} pods left");
                next_report = Instant::now() + Duration::from_secs(10);
            }
            sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for BenchNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let client = self.client.clone();
        let name = self.name.clone();
        // A thread of its own: the bench's runtime may be unwinding.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let namespaces: Api<Namespace> = Api::all(client);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                let _ = namespaces.delete(&name, &params).await;
            });
        })
        .join();
    }
}

// ------------------------------------------------------------------ the run

fn skip(reason: &str) -> ExitCode {
    if std::env::var("MCP_LIFECYCLE_REQUIRE_K8S").is_ok_and(|v| v == "1") {
        eprintln!("cluster_scale: {reason} (MCP_LIFECYCLE_REQUIRE_K8S=1)");
        return ExitCode::FAILURE;
    }
    println!("cluster_scale: SKIPPED: {reason}");
    ExitCode::SUCCESS
}

/// Figures of one run; `None` where the run ended before measuring it.
#[derive(Default)]
struct Report {
    servers: usize,
    ready: usize,
    apply_secs: f64,
    ready_secs: Option<f64>,
    /// What applying and starting every server cost, up to all Ready.
    startup: Option<Tally>,
    steady: Option<(Duration, Tally)>,
    latencies_ms: Vec<f64>,
    kill_to_watch_ms: Vec<f64>,
    library_first: usize,
    missed: usize,
}

async fn run() -> ExitCode {
    let start = Instant::now();
    let settings = Settings::from_env();
    // The bench's own client: namespace, its pod watch, cleanup. Not counted.
    let plain = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => return skip(&format!("no Kubernetes client from KUBECONFIG: {e}")),
    };
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(e) => return skip(&format!("no kubeconfig: {e}")),
    };
    let counters = Counters::default();
    let counted = match ClientBuilder::try_from(config) {
        Ok(builder) => builder.with_layer(&CountLayer(counters.clone())).build(),
        Err(e) => return skip(&format!("cannot build a kube client: {e}")),
    };
    let mut ns = match BenchNamespace::create(&plain).await {
        Ok(ns) => ns,
        Err(reason) => return skip(&reason),
    };
    progress!(
        start,
        "namespace {}; {} servers of {} (cpu {}, memory {}); steady window {:?}; {} latency samples",
        ns.name,
        settings.servers,
        settings.image,
        settings.cpu,
        settings.memory,
        settings.steady,
        settings.samples
    );
    let board = Arc::new(PodBoard::default());
    let watch_task = watch_pods(Api::namespaced(plain.clone(), &ns.name), board.clone());

    let mut report = Report {
        servers: settings.servers,
        ..Report::default()
    };
    let mut lifecycle = None;
    let outcome = tokio::select! {
        r = tokio::time::timeout(
            settings.deadline,
            measure(&settings, &ns.name, counted, &counters, &board, &mut report, &mut lifecycle, start),
        ) => match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("the global deadline ({:?}) passed", settings.deadline)),
        },
        _ = tokio::signal::ctrl_c() => Some("interrupted".to_owned()),
    };
    if let Some(why) = &outcome {
        progress!(start, "stopped early: {why}");
    }

    // Leave the workloads to the namespace's deletion: a graceful shutdown
    // of every server would only take longer.
    if let Some(lc) = lifecycle.take() {
        let _ = tokio::time::timeout(Duration::from_secs(30), lc.detach()).await;
    }
    watch_task.abort();
    let pass = print_report(&report, &settings, outcome.as_deref());
    ns.delete_and_wait(start).await;
    println!(
        "cluster_scale: wall time {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    settings: &Settings,
    namespace: &str,
    counted: Client,
    counters: &Counters,
    board: &PodBoard,
    report: &mut Report,
    lifecycle: &mut Option<Lifecycle>,
    start: Instant,
) -> Result<(), String> {
    let backend = KubernetesOrchestrator::builder()
        .client(counted)
        .config(KubernetesConfig {
            namespace: namespace.to_owned(),
            ..KubernetesConfig::default()
        })
        .build()
        .await
        .map_err(|e| format!("KubernetesOrchestrator::build: {e}"))?;
    let config = LifecycleConfig {
        manager_name: unique("mcpbench"),
        ..LifecycleConfig::default()
    };
    let lc = lifecycle.insert(
        Lifecycle::builder()
            .orchestrator(Arc::new(backend))
            .store(Arc::new(InMemoryStore::new()))
            .config(config)
            .build()
            .await
            .map_err(|e| format!("Lifecycle::build: {e}"))?,
    );

    // Apply and start every server.
    let t_apply = Instant::now();
    for i in 0..settings.servers {
        let name = server_name(i);
        let mut spec = ServerSpec::new(&name, Source::Image(settings.image.clone()));
        spec.transport = Transport::Stdio;
        spec.update = UpdatePolicy {
            check: false,
            auto_reinstall: false,
        };
        spec.stop_grace_period = Duration::from_secs(5);
        // 200 pods start on two cores: give them time rather than churn.
        spec.health.startup_timeout = Duration::from_secs(600);
        spec.resources.cpu = Some(settings.cpu.clone());
        spec.resources.memory = Some(settings.memory.clone());
        lc.apply(spec)
            .await
            .map_err(|e| format!("apply {name}: {e}"))?;
        lc.start(&name, Wait::No)
            .await
            .map_err(|e| format!("start {name}: {e}"))?;
    }
    report.apply_secs = t_apply.elapsed().as_secs_f64();
    progress!(
        start,
        "{} servers applied and started in {:.1} s; waiting for Ready",
        settings.servers,
        report.apply_secs
    );

    // Wait until every server is Ready.
    let until = Instant::now() + settings.ready_within;
    let mut next_report = Instant::now();
    loop {
        let statuses = lc.list().await;
        let ready = statuses
            .iter()
            .filter(|s| s.phase == ServerPhase::Running && s.ready >= 1)
            .count();
        report.ready = ready;
        if ready >= settings.servers {
            report.ready_secs = Some(t_apply.elapsed().as_secs_f64());
            progress!(
                start,
                "all {} servers Ready {:.1} s after the first apply",
                settings.servers,
                t_apply.elapsed().as_secs_f64()
            );
            break;
        }
        if Instant::now() > until {
            let stuck: Vec<String> = statuses
                .iter()
                .filter(|s| s.ready == 0)
                .take(5)
                .map(|s| {
                    let why = s.instances.iter().find_map(|i| i.reason.clone());
                    format!("{} {} {:?}", s.name, s.phase.name(), why)
                })
                .collect();
            return Err(format!(
                "only {ready}/{} servers Ready after {:?}; e.g. {stuck:?}",
                settings.servers, settings.ready_within
            ));
        }
        if Instant::now() >= next_report {
            let (pods, running) = board.counts();
            progress!(
                start,
                "Ready {ready}/{}; pods {pods}, containers running {running}",
                settings.servers
            );
            next_report = Instant::now() + Duration::from_secs(10);
        }
        sleep(Duration::from_secs(1)).await;
    }

    // Goal 1: the steady window.
    let startup = counters.snapshot();
    report.startup = Some(startup);
    counters.reset();
    let t_steady = Instant::now();
    progress!(
        start,
        "steady window of {:?} begins (counters reset)",
        settings.steady
    );
    while t_steady.elapsed() < settings.steady {
        let left = settings.steady.saturating_sub(t_steady.elapsed());
        sleep(left.min(Duration::from_secs(15))).await;
        let tally = counters.snapshot();
        progress!(
            start,
            "steady: {:.0} s in, watch {} relist {} other {}",
            t_steady.elapsed().as_secs_f64(),
            tally.watches,
            tally.relists,
            tally.other_total()
        );
    }
    let steady = t_steady.elapsed();
    report.steady = Some((steady, counters.snapshot()));

    // Goal 2: latency samples, each on another server.
    let stride = (settings.servers / settings.samples.max(1)).max(1);
    let mut candidates = (0..settings.servers)
        .step_by(stride)
        .chain(0..settings.servers);
    let mut used = std::collections::HashSet::new();
    while report.latencies_ms.len() + report.missed < settings.samples {
        let Some(i) = candidates.next() else { break };
        if !used.insert(i) {
            continue;
        }
        let name = server_name(i);
        match sample(lc, namespace, &name, board).await {
            Ok(Some(s)) => {
                progress!(
                    start,
                    "sample {:>2} {name} {}: kill→pod watch {:.0} ms, pod watch→status {:+.1} ms",
                    report.latencies_ms.len() + report.missed + 1,
                    s.pod,
                    s.kill_to_watch_ms,
                    s.latency_ms
                );
                if s.latency_ms < 0.0 {
                    report.library_first += 1;
                }
                report.latencies_ms.push(s.latency_ms);
                report.kill_to_watch_ms.push(s.kill_to_watch_ms);
            }
            Ok(None) => {}
            Err(e) => {
                progress!(start, "sample on {name} failed: {e}");
                report.missed += 1;
            }
        }
        sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

struct Sample {
    pod: String,
    latency_ms: f64,
    kill_to_watch_ms: f64,
}

/// Kills one Ready server's container and times both observers. `Ok(None)`
/// when the server was not in a state to sample (not exactly one Ready
/// instance).
async fn sample(
    lc: &Lifecycle,
    namespace: &str,
    server: &str,
    board: &PodBoard,
) -> Result<Option<Sample>, String> {
    let status = lc.status(server).await.map_err(|e| e.to_string())?;
    let [instance] = status.instances.as_slice() else {
        return Ok(None);
    };
    if instance.phase != "ready" {
        return Ok(None);
    }
    let pod = instance.id.as_str().to_owned();
    let attempt = instance.attempt;
    let Some(before) = board.get(&pod) else {
        return Ok(None);
    };
    if !before.running {
        return Ok(None);
    }
    let container = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=io.kubernetes.pod.namespace={namespace}"),
        "--filter",
        &format!("label=io.kubernetes.pod.name={pod}"),
        "--filter",
        &format!("label=io.kubernetes.container.name={CONTAINER}"),
    ])
    .await?;
    let container = container.trim();
    if container.is_empty() || container.contains('\n') {
        return Err(format!(
            "expected one running {CONTAINER} container of pod {pod}, docker says {container:?}"
        ));
    }
    let killed = Instant::now();
    docker(&["kill", container]).await?;

    let until = killed + SAMPLE_TIMEOUT;
    let mut seen_by_watch: Option<Instant> = None;
    let mut seen_by_library: Option<Instant> = None;
    loop {
        if seen_by_library.is_none() {
            let status = lc.status(server).await.map_err(|e| e.to_string())?;
            let changed = match status.instances.iter().find(|i| i.id.as_str() == pod) {
                Some(i) => i.phase != "ready" || i.attempt != attempt,
                None => true,
            };
            if changed {
                seen_by_library = Some(Instant::now());
            }
        }
        if seen_by_watch.is_none()
            && let Some(now) = board.get(&pod)
            && (now.restarts != before.restarts || !now.running)
        {
            seen_by_watch = Some(now.changed);
        }
        if let (Some(watch), Some(library)) = (seen_by_watch, seen_by_library) {
            let latency_ms = if library >= watch {
                (library - watch).as_secs_f64() * 1e3
            } else {
                -(watch - library).as_secs_f64() * 1e3
            };
            return Ok(Some(Sample {
                pod,
                latency_ms,
                kill_to_watch_ms: watch.saturating_duration_since(killed).as_secs_f64() * 1e3,
            }));
        }
        if Instant::now() > until {
            return Err(format!(
                "after {SAMPLE_TIMEOUT:?}: pod watch saw a change: {}, library: {}",
                seen_by_watch.is_some(),
                seen_by_library.is_some()
            ));
        }
        sleep(STATUS_POLL).await;
    }
}

async fn docker(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------------ summary

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Prints the summary lines; true when both goals were met.
fn print_report(report: &Report, settings: &Settings, stopped: Option<&str>) -> bool {
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    match report.ready_secs {
        Some(secs) => println!(
            "cluster_scale: {} servers (stdio, 1 replica, cpu {}, memory {}) applied in {:.1} s, all Ready after {:.1} s",
            report.servers, settings.cpu, settings.memory, report.apply_secs, secs
        ),
        None => println!(
            "cluster_scale: {} servers: only {} Ready when the run stopped",
            report.servers, report.ready
        ),
    }
    if let Some(tally) = &report.startup {
        let kinds: Vec<String> = tally
            .other
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "cluster_scale: until all Ready: watch requests {}, relists {}, other requests {} ({})",
            tally.watches,
            tally.relists,
            tally.other_total(),
            kinds.join(", ")
        );
    }
    if let Some(why) = stopped {
        println!("cluster_scale: run stopped early: {why}");
    }
    let steady_ok = match &report.steady {
        Some((window, tally)) => {
            let other = tally.other_total();
            let per_minute = |n: u64| n as f64 * 60.0 / window.as_secs_f64();
            println!(
                "cluster_scale: steady window {:.1} s with {} servers Ready: watch requests {} (relists {}), other requests {} ({:.1}/min) — goal 0 other: {}",
                window.as_secs_f64(),
                report.servers,
                tally.watches,
                tally.relists,
                other,
                per_minute(other),
                verdict(other == 0)
            );
            for (kind, n) in &tally.other {
                println!("cluster_scale:   other: {kind}: {n}");
            }
            other == 0
        }
        None => {
            println!("cluster_scale: steady window: not measured — goal 0 other: FAIL");
            false
        }
    };
    let latency_ok = if report.latencies_ms.is_empty() {
        println!(
            "cluster_scale: status latency: no samples ({} failed) — goal median < {LATENCY_GOAL_MS} ms: FAIL",
            report.missed
        );
        false
    } else {
        let mut sorted = report.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let mut kills = report.kill_to_watch_ms.clone();
        kills.sort_by(f64::total_cmp);
        let med = median(&sorted);
        let ok = med < LATENCY_GOAL_MS && report.missed == 0;
        println!(
            "cluster_scale: status latency (pod watch → Lifecycle::status) over {} samples: median {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms; library first in {}; failed samples {} — goal median < {LATENCY_GOAL_MS} ms: {}",
            sorted.len(),
            med,
            percentile(&sorted, 90.0),
            sorted[sorted.len() - 1],
            sorted[0],
            report.library_first,
            report.missed,
            verdict(ok)
        );
        println!(
            "cluster_scale:   for scale: docker kill → pod watch median {:.0} ms, max {:.0} ms (kubelet PLEG and status update, not the library)",
            median(&kills),
            kills[kills.len() - 1]
        );
        ok
    };
    steady_ok && latency_ok
}
