//! [`Lifecycle`]: the one type a host holds. It validates and stores what the
//! host asks for, runs the controller's tasks, and answers with honest status.
//!
//! This module owns the host-facing API and its guarantees (validation,
//! idempotence, waiting); it makes no lifecycle decision itself.

pub(crate) mod config;
pub(crate) mod records;
pub(crate) mod status;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::controller::{self, PassOutcome, RuntimeView, ServerState, Shared};
use crate::error::{Error, ErrorKind, Result};
use crate::mcp::{McpPeer, McpProber, SessionPool, ToolsCache};
use crate::ports::{
    ImageResolver, InstanceId, InstanceObservation, Orchestrator, SecretSource, StaticSecretSource,
    StopMode, Store,
};
use crate::probe::Prober;
use crate::spec::{ServerSpec, UpdatePolicy, ValidationError};
use crate::state::ServerPhase;
use crate::store::InMemoryStore;
use crate::time::{Clock, SystemClock};

pub use crate::controller::ResyncReport;
pub use crate::freshness::record::UpdateStatus;
pub use config::{LeaderElection, LifecycleConfig};
pub use records::{INSTANCES, InstanceRecord, SERVERS, ServerRecord};
pub use status::{HealthSummary, InstanceStatus, LifecycleEvent, LifecycleEventKind, ServerStatus};

/// Whether [`Lifecycle::start`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return once the start is recorded.
    No,
    /// Return once every desired instance is ready, or fail with
    /// [`ErrorKind::Timeout`] after this long.
    UntilReady(Duration),
}

/// What [`Lifecycle::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new server.
    Created,
    /// An existing server's spec changed; its instances are replaced rolling.
    Updated,
    /// The spec was already in force.
    Unchanged,
}

/// Builds a [`Lifecycle`].
pub struct LifecycleBuilder {
    orchestrator: Option<Arc<dyn Orchestrator>>,
    store: Option<Arc<dyn Store>>,
    secrets: Option<Arc<dyn SecretSource>>,
    prober: Option<Arc<dyn Prober>>,
    resolver: Option<Arc<dyn ImageResolver>>,
    clock: Option<Arc<dyn Clock>>,
    config: LifecycleConfig,
}

impl LifecycleBuilder {
    /// The runtime backend. Required.
    pub fn orchestrator(mut self, orchestrator: Arc<dyn Orchestrator>) -> Self {
        self.orchestrator = Some(orchestrator);
        self
    }

    /// Where state lives. Default: a fresh [`InMemoryStore`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where secret references resolve. Default: an empty source, so any
    /// secret reference fails to start (loudly) until one is given.
    pub fn secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// How instances are probed. Default: [`McpProber`], which speaks MCP
    /// over the same sessions [`Lifecycle::peer`] hands out.
    pub fn prober(mut self, prober: Arc<dyn Prober>) -> Self {
        self.prober = Some(prober);
        self
    }

    /// How image references resolve to digests, for freshness checks.
    /// Without one, freshness stays `unknown` and no update is checked.
    pub fn resolver(mut self, resolver: Arc<dyn ImageResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Where time is read. Default: [`SystemClock`]; tests under paused tokio
    /// time use [`crate::TokioClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Host-wide settings.
    pub fn config(mut self, config: LifecycleConfig) -> Self {
        self.config = config;
        self
    }

    /// Loads state from the store, lists the runtime's workloads, adopts what
    /// belongs to known servers, removes what no spec owns, and starts the
    /// controller. Must run inside a tokio runtime.
    pub async fn build(self) -> Result<Lifecycle> {
        let orchestrator = self
            .orchestrator
            .ok_or_else(|| Error::invalid("lifecycle builder", "an orchestrator is required"))?;
        let sessions = Arc::new(SessionPool::new());
        let prober = self
            .prober
            .unwrap_or_else(|| Arc::new(McpProber::new(sessions.clone())));
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            orchestrator,
            store: self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new())),
            secrets: self
                .secrets
                .unwrap_or_else(|| Arc::new(StaticSecretSource::new())),
            prober,
            sessions,
            resolver: self.resolver,
            freshness_kick: tokio::sync::Notify::new(),
            leadership: controller::Leadership::new(self.config.leader_election),
            holder_id: self.config.holder_id.clone().unwrap_or_else(|| {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                format!(
                    "{}-{}-{}",
                    self.config.manager_name,
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                )
            }),
            tools_cache: ToolsCache::new(
                self.config.tools_cache_ttl,
                self.config.tools_cache_negative_ttl,
            ),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            permits: Semaphore::new(self.config.max_concurrent_reconciles.max(1)),
            config: self.config,
            events,
            servers: RwLock::new(HashMap::new()),
            runtime: RuntimeView::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        // Subscribe before listing, so nothing that happens in between is missed.
        let stream = shared.orchestrator.events();
        let mut states = controller::load_states(&shared).await?;
        if shared.leadership.election.is_none() {
            // A single host acts at once. With leader election, listing and
            // removing orphans wait until this host leads.
            let listed = list_with_retry(&shared).await?;
            controller::take_listing(&shared, listed, |server| states.contains_key(server)).await;
        }
        for (name, state) in states.drain() {
            let (slot, _) = shared.ensure_slot(&name, state);
            slot.kick.notify_one();
        }
        let pump = shared.clone();
        shared
            .tasks
            .spawn(controller::pump_runtime_events(pump, stream));
        shared
            .tasks
            .spawn(controller::run_resync_loop(shared.clone()));
        shared
            .tasks
            .spawn(controller::run_leadership(shared.clone()));
        shared.tasks.spawn(crate::freshness::run(shared.clone()));
        Ok(Lifecycle { shared })
    }
}

async fn list_with_retry(shared: &Arc<Shared>) -> Result<Vec<InstanceObservation>> {
    let selector = shared.managed_selector();
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match shared.orchestrator.list(&selector).await {
            Ok(listed) => return Ok(listed),
            Err(error) if attempt < 5 && error.kind() != ErrorKind::Invalid => {
                attempt += 1;
                tracing::warn!(%error, attempt, "listing workloads failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Runs MCP servers for a host and keeps them honest.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. Dropping it
/// stops the controller and leaves workloads running, so the next
/// `Lifecycle` on the same store adopts them; [`Lifecycle::shutdown`]
/// stops them first.
///
/// This example uses the in-process fakes of feature `testing`:
#[cfg_attr(feature = "testing", doc = "```")]
#[cfg_attr(not(feature = "testing"), doc = "```ignore")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mcp_lifecycle::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mcp_lifecycle::{Lifecycle, ServerSpec, Source, Wait};
/// use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, ImageCatalog, fake_digest};
///
/// let catalog = ImageCatalog::new();
/// catalog.push("registry.local/echo:1", fake_digest("echo-v1"));
/// let runtime = FakeOrchestrator::builder().with_catalog(catalog).build();
/// let lifecycle = Lifecycle::builder()
///     .orchestrator(Arc::new(runtime))
///     .prober(Arc::new(FakeProber::new()))
///     .build()
///     .await?;
///
/// let mut spec = ServerSpec::new("echo", Source::Image("registry.local/echo:1".into()));
/// spec.replicas = 2;
/// lifecycle.apply(spec).await?;
/// let status = lifecycle.start("echo", Wait::UntilReady(Duration::from_secs(10))).await?;
/// assert_eq!(status.ready, 2);
/// lifecycle.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct Lifecycle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("backend", &self.shared.orchestrator.backend())
            .field("servers", &self.shared.slots().len())
            .finish()
    }
}

impl Lifecycle {
    /// Starts building a lifecycle manager.
    pub fn builder() -> LifecycleBuilder {
        LifecycleBuilder {
            orchestrator: None,
            store: None,
            secrets: None,
            prober: None,
            resolver: None,
            clock: None,
            config: LifecycleConfig::default(),
        }
    }

    /// The host-wide settings in force.
    pub fn config(&self) -> &LifecycleConfig {
        &self.shared.config
    }

    fn ensure_running(&self) -> Result<()> {
        if self.shared.cancel.is_cancelled() {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    fn slot(&self, name: &str) -> Result<Arc<controller::ServerSlot>> {
        self.shared
            .slot(name)
            .ok_or_else(|| Error::not_found(format!("server {name:?}")))
    }

    /// Creates or updates a server. Validates first; an unchanged spec is a
    /// no-op. A changed spec replaces instances one at a time, each new one
    /// ready before an old one goes.
    pub async fn apply(&self, spec: ServerSpec) -> Result<ApplyOutcome> {
        self.ensure_running()?;
        spec.validate(&self.shared.config.limits)?;
        let name = spec.name.clone();
        let store = self.shared.store.as_ref();
        let started = self.shared.clock.now();
        loop {
            if let Some(slot) = self.shared.slot(&name) {
                let mut st = slot.state.lock().await;
                if st.record.as_ref().is_none_or(|r| r.value.deleting) {
                    // Being deleted: let the removal finish (retrying now), then create.
                    drop(st);
                    slot.kick.notify_one();
                    let waited = self.shared.clock.now().saturating_since(started);
                    if waited > Duration::from_secs(30) {
                        return Err(Error::unavailable(
                            format!("server {name:?}"),
                            "it is still being deleted (its workloads could not all be removed yet); apply again later",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let now = self.shared.clock.now();
                let changed = self
                    .change_server(&name, &mut st, |r| {
                        if r.spec == spec {
                            return false;
                        }
                        if r.spec.source != spec.source {
                            r.rollout_image = None;
                        }
                        r.spec = spec.clone();
                        r.applied_at = now;
                        true
                    })
                    .await?;
                if !changed {
                    return Ok(ApplyOutcome::Unchanged);
                }
                st.push_event(
                    &self.shared,
                    &name,
                    None,
                    LifecycleEventKind::Applied,
                    "spec updated".into(),
                );
                publish(&self.shared, &slot, &st);
                drop(st);
                slot.kick.notify_one();
                return Ok(ApplyOutcome::Updated);
            }
            let mut record = records::Versioned {
                value: ServerRecord {
                    spec: spec.clone(),
                    stopped: false,
                    next_ordinal: 0,
                    rollout_image: None,
                    applied_at: self.shared.clock.now(),
                    deleting: false,
                },
                version: None,
            };
            match records::save(store, SERVERS, &name, &mut record, None).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    // Left behind by a crash, or written by another host:
                    // adopt the stored record and update it.
                    if let Some(existing) =
                        records::load::<ServerRecord>(store, SERVERS, &name).await?
                    {
                        self.shared
                            .ensure_slot(&name, ServerState::new(Some(existing)));
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            let mut state = ServerState::new(Some(record));
            state.push_event(
                &self.shared,
                &name,
                None,
                LifecycleEventKind::Applied,
                "spec created".into(),
            );
            let (slot, created) = self.shared.ensure_slot(&name, state);
            if !created {
                continue;
            }
            publish(&self.shared, &slot, &*slot.state.lock().await);
            slot.kick.notify_one();
            return Ok(ApplyOutcome::Created);
        }
    }

    /// Deletes a server: stops and removes every instance, then its records.
    /// Deleting a server that does not exist succeeds.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.ensure_running()?;
        let Some(slot) = self.shared.slot(name) else {
            return Ok(());
        };
        {
            let mut st = slot.state.lock().await;
            let marked = match self
                .change_server(name, &mut st, |r| !std::mem::replace(&mut r.deleting, true))
                .await
            {
                Ok(marked) => marked,
                // Already gone from the store (another host finished it).
                Err(e) if e.kind() == ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if marked {
                st.push_event(
                    &self.shared,
                    name,
                    None,
                    LifecycleEventKind::Deleted,
                    "deleted".into(),
                );
            }
        }
        match controller::reconcile_now(&self.shared, &slot).await {
            PassOutcome::Deleted => Ok(()),
            PassOutcome::WakeAt(_) => Err(Error::unavailable(
                format!("removal of server {name:?}"),
                "some workloads could not be removed yet; the controller keeps retrying",
            )),
        }
    }

    /// The status of every server, by name.
    pub async fn list(&self) -> Vec<ServerStatus> {
        let mut slots = self.shared.slots();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if let Some(status) = self.snapshot(&slot).await {
                out.push(status);
            }
        }
        out
    }

    async fn snapshot(&self, slot: &controller::ServerSlot) -> Option<ServerStatus> {
        let st = slot.state.lock().await;
        // A server being deleted is gone from the host's point of view.
        if st.record.as_ref().is_none_or(|r| r.value.deleting) {
            return None;
        }
        drop(st);
        if let Some(status) = slot.snapshot.borrow().clone() {
            return Some(status);
        }
        let st = slot.state.lock().await;
        Some(controller::status_now(&self.shared, &slot.name, &st))
    }

    /// One server's status: the snapshot taken after its latest pass.
    pub async fn status(&self, name: &str) -> Result<ServerStatus> {
        let slot = self.slot(name)?;
        self.snapshot(&slot)
            .await
            .ok_or_else(|| Error::not_found(format!("server {name:?}")))
    }

    /// Starts a server that was stopped (or scaled to 0, which then runs one
    /// instance), and optionally waits until every desired instance is ready.
    /// Starting a running server changes nothing; a failed instance keeps its
    /// backoff (a start never resets a crash loop).
    pub async fn start(&self, name: &str, wait: Wait) -> Result<ServerStatus> {
        self.ensure_running()?;
        let slot = self.slot(name)?;
        self.update_record(&slot, |r| {
            let changed = r.stopped || r.spec.replicas == 0;
            r.stopped = false;
            r.spec.replicas = r.spec.replicas.max(1);
            changed
        })
        .await?;
        slot.kick.notify_one();
        match wait {
            Wait::No => self.status(name).await,
            Wait::UntilReady(timeout) => self.wait_ready(name, timeout).await,
        }
    }

    /// Stops every instance of a server and keeps its spec. Graceful stops
    /// wait up to the spec's grace period; forced ones kill at once. Returns
    /// when the instances are gone (or a runtime call failed and is retried).
    pub async fn stop(&self, name: &str, mode: StopMode) -> Result<ServerStatus> {
        self.ensure_running()?;
        let slot = self.slot(name)?;
        {
            let mut st = slot.state.lock().await;
            self.update_record_locked(&slot, &mut st, |r| !std::mem::replace(&mut r.stopped, true))
                .await?;
            // Under the same lock as the record change, so the pass that
            // plans this stop's removals is the one that takes the mode. A
            // standby does not act: the leader stops gracefully on reload.
            if self.shared.leadership.may_act() {
                st.pending_stop = Some(mode);
            }
        }
        controller::reconcile_now(&self.shared, &slot).await;
        self.status(name).await
    }

    /// Sets the desired replica count. 0 stops the server (phase Stopped).
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<()> {
        self.ensure_running()?;
        let max = self.shared.config.limits.max_replicas;
        if replicas > max {
            return Err(ValidationError::single(
                name,
                "replicas",
                format!("{replicas} is outside 0..={max} (the host's maximum)"),
            )
            .into());
        }
        let slot = self.slot(name)?;
        self.update_record(&slot, |r| {
            let changed = r.spec.replicas != replicas || r.stopped;
            r.spec.replicas = replicas;
            r.stopped = false;
            changed
        })
        .await?;
        slot.kick.notify_one();
        Ok(())
    }

    /// Turns image update checks and automatic reinstalls on or off.
    pub async fn set_update_policy(&self, name: &str, policy: UpdatePolicy) -> Result<()> {
        self.ensure_running()?;
        let slot = self.slot(name)?;
        self.update_record(&slot, |r| {
            let changed = r.spec.update != policy;
            r.spec.update = policy;
            changed
        })
        .await
    }

    /// Waits until every desired instance is ready (or, at desired 0, until
    /// the server is stopped). Fails with [`ErrorKind::Timeout`] naming the
    /// phase and the last failure reason.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<ServerStatus> {
        let slot = self.slot(name)?;
        let mut rx = slot.snapshot.subscribe();
        let settled = |s: &ServerStatus| match s.desired {
            0 => s.phase == ServerPhase::Stopped,
            _ => s.phase == ServerPhase::Running,
        };
        let wait = async {
            loop {
                if let Some(status) = rx.borrow_and_update().clone()
                    && settled(&status)
                {
                    return Ok(status);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::not_found(format!("server {name:?}")));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                let detail = match self.status(name).await {
                    Ok(s) => {
                        let reason = s
                            .instances
                            .iter()
                            .find_map(|i| i.reason.clone())
                            .map(|r| format!("; last failure: {r}"))
                            .unwrap_or_default();
                        format!(
                            "{} ({}/{} ready{reason})",
                            s.phase.name(),
                            s.ready,
                            s.desired
                        )
                    }
                    Err(e) => e.to_string(),
                };
                Err(Error::Timeout {
                    what: format!("server {name:?} to become ready; it is {detail}"),
                    after: timeout,
                })
            }
        }
    }

    /// A live MCP client to a ready instance of `name`, round-robin across
    /// ready replicas. It uses the instance's one session, which the health
    /// probes use too; it is safe to use from many tasks at once.
    pub async fn peer(&self, name: &str) -> Result<McpPeer> {
        self.ensure_running()?;
        let slot = self.slot(name)?;
        let ready = slot.state.lock().await.ready.clone();
        if ready.is_empty() {
            return Err(Error::unavailable(
                format!("server {name:?}"),
                "no instance is ready",
            ));
        }
        let start = slot
            .next_peer
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut last_error = None;
        for k in 0..ready.len() {
            let id = &ready[(start + k) % ready.len()];
            match self
                .shared
                .sessions
                .get_or_open(id, self.shared.orchestrator.as_ref())
                .await
            {
                Ok(session) => return Ok(McpPeer::new(name, session)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::unavailable(format!("server {name:?}"), "no instance is ready")
        }))
    }

    /// The server's tools, from a cache kept for `tools_cache_ttl` (failures
    /// for `tools_cache_negative_ttl`) and dropped whenever the set of ready
    /// instances changes.
    pub async fn list_tools(&self, name: &str) -> Result<Arc<Vec<rmcp::model::Tool>>> {
        use crate::mcp::tools_cache::Lookup;
        let slot = self.slot(name)?;
        let generation = slot
            .ready_generation
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = self.shared.clock.now();
        match self.shared.tools_cache.get(name, generation, now) {
            Lookup::Hit(tools) => return Ok(tools),
            Lookup::NegativeHit(reason) => {
                return Err(Error::unavailable(
                    format!("tools of server {name:?}"),
                    reason,
                ));
            }
            Lookup::Miss => {}
        }
        let listed = match self.peer(name).await {
            Ok(peer) => peer.list_tools().await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(tools) => {
                let tools = Arc::new(tools);
                self.shared
                    .tools_cache
                    .put_tools(name, generation, now, tools.clone());
                Ok(tools)
            }
            Err(e) => {
                self.shared
                    .tools_cache
                    .put_failure(name, generation, now, e.to_string());
                Err(e)
            }
        }
    }

    /// Checks one server's image now (even if no check is due) and returns
    /// its update status. A check runs only while the server is running with
    /// update checks on; a rollout in progress is verified instead.
    pub async fn check_updates_now(&self, name: &str) -> Result<UpdateStatus> {
        self.ensure_running()?;
        self.slot(name)?;
        crate::freshness::cycle(&self.shared, Some(name)).await?;
        let slot = self.slot(name)?;
        let st = slot.state.lock().await;
        publish(&self.shared, &slot, &st);
        Ok(UpdateStatus::from(&st.update.value))
    }

    /// Runs one freshness cycle over every server now (what the controller
    /// does every `freshness_tick`), and reports what it did.
    pub async fn run_freshness_cycle(&self) -> Result<crate::freshness::CycleReport> {
        self.ensure_running()?;
        crate::freshness::cycle(&self.shared, None).await
    }

    /// A stream of lifecycle events. A subscriber that falls more than 1024
    /// events behind loses the oldest (and is told so by the receiver).
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.shared.events.subscribe()
    }

    /// Lists every workload once and reconciles every server now, waiting for
    /// the passes to finish. The controller also does this on its own every
    /// `resync_interval`.
    pub async fn resync(&self) -> Result<ResyncReport> {
        self.ensure_running()?;
        controller::resync(&self.shared).await
    }

    /// Stops every server's instances (gracefully), then the controller. The
    /// store keeps every spec, so the next `Lifecycle` starts them again.
    pub async fn shutdown(self) -> Result<()> {
        if !self.shared.leadership.may_act() {
            // A standby owns no workload; the leader keeps running them.
            self.detach().await;
            return Ok(());
        }
        let mut failures = Vec::new();
        for slot in self.shared.slots() {
            let mut st = slot.state.lock().await;
            let ids: Vec<InstanceId> = st.instances.keys().cloned().collect();
            let grace = st
                .record
                .as_ref()
                .map_or(Duration::from_secs(10), |r| r.value.spec.stop_grace_period);
            for id in ids {
                self.shared.forget_sessions(&id);
                let stopped = match self
                    .shared
                    .orchestrator
                    .stop(&id, StopMode::Graceful, grace)
                    .await
                {
                    Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
                    _ => self.shared.orchestrator.remove(&id).await,
                };
                match stopped {
                    Ok(()) => {
                        // The record stays: the next host restarts it in place.
                        if let Some(t) = st.instances.get_mut(&id) {
                            t.record.value.state = crate::state::InstanceState::new();
                            let _ = records::save(
                                self.shared.store.as_ref(),
                                INSTANCES,
                                id.as_str(),
                                &mut t.record,
                                None,
                            )
                            .await;
                        }
                    }
                    Err(e) => failures.push(format!("{id}: {e}")),
                }
            }
        }
        self.detach().await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::unavailable(
                "shutdown",
                format!(
                    "some instances could not be stopped: {}",
                    failures.join("; ")
                ),
            ))
        }
    }

    /// Stops the controller and leaves every workload running, for the next
    /// `Lifecycle` on the same store to adopt. Waits for the tasks to end.
    pub async fn detach(self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Applies `change` to the stored server record with compare-and-swap.
    /// When another host wrote it first (a conflict), re-reads the record and
    /// applies the change again. Returns whether anything changed.
    async fn change_server(
        &self,
        name: &str,
        st: &mut ServerState,
        change: impl Fn(&mut ServerRecord) -> bool,
    ) -> Result<bool> {
        let store = self.shared.store.as_ref();
        for _ in 0..5 {
            let Some(record) = st.record.as_ref().filter(|r| !r.value.deleting) else {
                return Err(Error::not_found(format!("server {name:?}")));
            };
            let mut updated = record.clone();
            if !change(&mut updated.value) {
                return Ok(false);
            }
            match records::save(store, SERVERS, name, &mut updated, None).await {
                Ok(()) => {
                    st.record = Some(updated);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    match records::load::<ServerRecord>(store, SERVERS, name).await? {
                        Some(fresh) => st.record = Some(fresh),
                        None => return Err(Error::not_found(format!("server {name:?}"))),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(
            format!("server {name:?}"),
            "its record kept changing under concurrent writers; try again",
        ))
    }

    async fn update_record(
        &self,
        slot: &controller::ServerSlot,
        change: impl Fn(&mut ServerRecord) -> bool,
    ) -> Result<()> {
        let mut st = slot.state.lock().await;
        self.update_record_locked(slot, &mut st, change).await
    }

    /// [`Self::update_record`] for a caller that holds the server's lock.
    async fn update_record_locked(
        &self,
        slot: &controller::ServerSlot,
        st: &mut ServerState,
        change: impl Fn(&mut ServerRecord) -> bool,
    ) -> Result<()> {
        if !self.change_server(&slot.name, st, change).await? {
            return Ok(());
        }
        let desired = st.record.as_ref().map_or(0, |r| r.value.desired());
        st.push_event(
            &self.shared,
            &slot.name,
            None,
            LifecycleEventKind::DesiredChanged,
            format!("desired instances: {desired}"),
        );
        publish(&self.shared, slot, st);
        Ok(())
    }
}

/// Publishes a status computed now, so a host call that changed the desired
/// state is never answered (or waited on) with a snapshot from before it.
fn publish(shared: &Shared, slot: &controller::ServerSlot, st: &ServerState) {
    slot.snapshot
        .send_replace(Some(controller::status_now(shared, &slot.name, st)));
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
    }
}
