//! Seeded chaos: thousands of random host operations, instance crashes and
//! host restarts against a runtime that fails 20 % of its calls; then faults
//! off, settle, and check that everything converged.
//!
//! Replay a failing run with `MCP_CHAOS_SEED=<seed> cargo test -p mcp-lifecycle
//! --all-features --test chaos`; `MCP_CHAOS_STEPS` changes the step count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use mcp_lifecycle::state::ServerPhase;
use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, ImageCatalog, fake_digest};
use mcp_lifecycle::{
    ErrorKind, InMemoryStore, InstanceId, Lifecycle, LifecycleConfig, ServerSpec, Source, StopMode,
    Store, TokioClock, Wait,
};

const NAMES: [&str; 6] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
const IMAGES: [&str; 2] = ["registry.local/echo:1", "registry.local/echo:2"];

struct World {
    runtime: FakeOrchestrator,
    prober: FakeProber,
    store: Arc<InMemoryStore>,
    clock: Arc<TokioClock>,
    lifecycle: Option<Lifecycle>,
    /// What the host asked for: name → (replicas, stopped).
    model: BTreeMap<String, (u32, bool)>,
    /// Per instance id: the last attempt count seen while it had not been ready since.
    attempts: HashMap<InstanceId, u32>,
    /// Ids that disappeared during their server's life.
    gone: BTreeSet<InstanceId>,
    seed: u64,
    step: usize,
}

impl World {
    async fn build(&mut self) {
        let config = LifecycleConfig {
            resync_interval: Duration::from_secs(30),
            ..LifecycleConfig::default()
        };
        let mut tries = 0;
        loop {
            let built = Lifecycle::builder()
                .orchestrator(Arc::new(self.runtime.clone()))
                .prober(Arc::new(self.prober.clone()))
                .store(self.store.clone() as Arc<dyn Store>)
                .clock(self.clock.clone())
                .config(config.clone())
                .build()
                .await;
            match built {
                Ok(l) => {
                    self.lifecycle = Some(l);
                    return;
                }
                // Listing can fail six times in a row at p = 0.2; a host retries.
                Err(e) => {
                    tries += 1;
                    assert!(tries < 20, "{}: build kept failing: {e}", self.tag());
                }
            }
        }
    }

    fn tag(&self) -> String {
        format!(
            "seed {} step {} (replay: MCP_CHAOS_SEED={})",
            self.seed, self.step, self.seed
        )
    }

    fn lifecycle(&self) -> &Lifecycle {
        self.lifecycle.as_ref().expect("a lifecycle is built")
    }

    /// Checks what must hold at every step.
    async fn check_always(&mut self) {
        let tag = self.tag();
        for status in self.lifecycle().list().await {
            let mut seen = BTreeSet::new();
            for i in &status.instances {
                assert!(
                    seen.insert(i.id.clone()),
                    "{tag}: id {} twice in {}",
                    i.id,
                    status.name
                );
                assert!(
                    !self.gone.contains(&i.id),
                    "{tag}: removed id {} came back",
                    i.id
                );
                if i.phase == "ready" {
                    self.attempts.remove(&i.id);
                } else if let Some(prev) = self.attempts.insert(i.id.clone(), i.attempt) {
                    assert!(
                        i.attempt >= prev,
                        "{tag}: attempt of failing {} fell from {prev} to {}",
                        i.id,
                        i.attempt
                    );
                }
            }
            let known: Vec<InstanceId> = self
                .attempts
                .keys()
                .filter(|id| {
                    id.as_str().rsplit_once('-').map(|(s, _)| s) == Some(status.name.as_str())
                })
                .cloned()
                .collect();
            for id in known {
                if !seen.contains(&id) {
                    self.attempts.remove(&id);
                    self.gone.insert(id);
                }
            }
        }
    }

    fn forget_server(&mut self, name: &str) {
        let prefix = format!("{name}-");
        self.gone.retain(|id| !id.as_str().starts_with(&prefix));
        self.attempts
            .retain(|id, _| !id.as_str().starts_with(&prefix));
    }

    async fn random_step(&mut self, rng: &mut SmallRng) {
        let name = NAMES[rng.random_range(0..NAMES.len())].to_owned();
        let exists = self.model.contains_key(&name);
        match rng.random_range(0..100) {
            0..=19 => {
                let mut spec =
                    ServerSpec::new(&name, Source::Image(IMAGES[rng.random_range(0..2)].into()));
                spec.replicas = rng.random_range(0..4);
                let replicas = spec.replicas;
                match self.lifecycle().apply(spec).await {
                    Ok(_) => {
                        let stopped = self.model.get(&name).is_some_and(|m| m.1);
                        self.model.insert(name, (replicas, stopped));
                    }
                    // A deletion of the same name still removing its workloads.
                    Err(e) if e.kind() == ErrorKind::Unavailable && !exists => {}
                    Err(e) => panic!("{}: apply: {e}", self.tag()),
                }
            }
            20..=34 if exists => {
                let n = rng.random_range(0..4);
                self.lifecycle()
                    .scale(&name, n)
                    .await
                    .unwrap_or_else(|e| panic!("{}: scale: {e}", self.tag()));
                self.model.insert(name, (n, false));
            }
            35..=44 if exists => {
                self.lifecycle()
                    .start(&name, Wait::No)
                    .await
                    .unwrap_or_else(|e| panic!("{}: start: {e}", self.tag()));
                let entry = self.model.entry(name).or_insert((1, false));
                *entry = (entry.0.max(1), false);
            }
            45..=54 if exists => {
                let mode = if rng.random_bool(0.5) {
                    StopMode::Graceful
                } else {
                    StopMode::Force
                };
                self.lifecycle()
                    .stop(&name, mode)
                    .await
                    .unwrap_or_else(|e| panic!("{}: stop: {e}", self.tag()));
                if let Some(entry) = self.model.get_mut(&name) {
                    entry.1 = true;
                }
            }
            55..=61 => {
                // Removal may be left to the controller's retries; the spec is gone either way.
                let _ = self.lifecycle().delete(&name).await;
                self.model.remove(&name);
                self.forget_server(&name);
            }
            62..=86 => {
                let running: Vec<InstanceId> = self
                    .runtime
                    .instances()
                    .into_iter()
                    .map(|i| i.observation.id)
                    .collect();
                if !running.is_empty() {
                    let id = &running[rng.random_range(0..running.len())];
                    let _ = self.runtime.crash(id, rng.random_range(1..3));
                }
            }
            87..=89 => {
                // Host restart: drop without a goodbye, build anew on the same store.
                self.lifecycle = None;
                tokio::task::yield_now().await;
                self.build().await;
            }
            _ => {}
        }
    }
}

async fn run(seed: u64, steps: usize) {
    let catalog = ImageCatalog::new();
    catalog.push(IMAGES[0], fake_digest("v1"));
    catalog.push(IMAGES[1], fake_digest("v2"));
    let clock = Arc::new(TokioClock::new());
    let runtime = FakeOrchestrator::builder()
        .with_catalog(catalog)
        .with_clock(clock.clone())
        .with_seed(seed)
        .build();
    let mut world = World {
        runtime,
        prober: FakeProber::new(),
        store: Arc::new(InMemoryStore::new()),
        clock,
        lifecycle: None,
        model: BTreeMap::new(),
        attempts: HashMap::new(),
        gone: BTreeSet::new(),
        seed,
        step: 0,
    };
    world.build().await;
    world.runtime.set_failure_rate(0.2);
    let mut rng = SmallRng::seed_from_u64(seed);
    for step in 0..steps {
        world.step = step;
        world.random_step(&mut rng).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
        world.check_always().await;
    }

    // Faults off; let it settle (the longest backoff is 5 min).
    world.runtime.set_failure_rate(0.0);
    world.runtime.clear_faults();
    world.step = steps;
    let tag = world.tag();
    let mut settled = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let _ = world.lifecycle().resync().await;
        world.check_always().await;
        if converged(&world).await.is_ok() {
            settled = true;
            break;
        }
    }
    if !settled {
        let why = converged(&world).await.err().unwrap_or_default();
        panic!("{tag}: did not settle within 20 min: {why}");
    }
}

/// Every server has exactly its desired ready instances and the runtime runs
/// nothing else.
async fn converged(world: &World) -> Result<(), String> {
    let statuses = world.lifecycle().list().await;
    let names: BTreeSet<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    let modelled: BTreeSet<&str> = world.model.keys().map(String::as_str).collect();
    if names != modelled {
        return Err(format!(
            "servers {names:?} but the host asked for {modelled:?}"
        ));
    }
    let mut runtime_by_server: BTreeMap<String, usize> = BTreeMap::new();
    for i in world.runtime.instances() {
        if !world.model.contains_key(&i.observation.server) {
            return Err(format!("workload {} belongs to no spec", i.observation.id));
        }
        *runtime_by_server.entry(i.observation.server).or_default() += 1;
    }
    for s in statuses {
        let (replicas, stopped) = world.model[&s.name];
        let desired = if stopped { 0 } else { replicas };
        let want_phase = if desired == 0 {
            ServerPhase::Stopped
        } else {
            ServerPhase::Running
        };
        let running = runtime_by_server.get(&s.name).copied().unwrap_or(0);
        if s.desired != desired
            || s.ready != desired
            || s.phase != want_phase
            || running != desired as usize
        {
            return Err(format!(
                "{} wants {desired}: status desired {} ready {} phase {:?}, runtime has {running}\n{}",
                s.name,
                s.desired,
                s.ready,
                s.phase,
                s.to_table()
            ));
        }
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn chaos_converges() {
    let steps = std::env::var("MCP_CHAOS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let seeds: Vec<u64> = match std::env::var("MCP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => vec![0x5eed_0001, 0x5eed_0002],
    };
    for seed in seeds {
        run(seed, steps).await;
    }
}
