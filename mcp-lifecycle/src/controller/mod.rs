//! The controller: the tasks that carry out what the state machines decide.
//!
//! One task per server runs reconcile passes one at a time (a server's work
//! is serialized); a semaphore bounds how many servers reconcile at once. A
//! pump turns the runtime's event stream into kicks; a resync task lists
//! every workload periodically. The controller holds no decision of its own:
//! `state::` decides, this module performs.

mod leadership;
mod reconcile;
mod runtime_view;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::Result;
use crate::lifecycle::config::LifecycleConfig;
use crate::lifecycle::records::{InstanceRecord, ServerRecord, Versioned};
use crate::lifecycle::status::{LifecycleEvent, LifecycleEventKind, ServerStatus};
use crate::ports::{
    EventStream, InstanceId, InstanceObservation, Orchestrator, RuntimeEventKind, SecretSource,
    StopMode, Store, labels,
};
use crate::probe::Prober;
use crate::secret::SecretValue;
use crate::state::ServerPhase;
use crate::time::{Clock, Timestamp};

pub(crate) use leadership::{Leadership, load_states};
pub(crate) use reconcile::PassOutcome;
pub(crate) use runtime_view::RuntimeView;

/// Everything the controller's tasks share.
pub(crate) struct Shared {
    pub(crate) orchestrator: Arc<dyn Orchestrator>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) prober: Arc<dyn Prober>,
    pub(crate) sessions: Arc<crate::mcp::SessionPool>,
    pub(crate) resolver: Option<Arc<dyn crate::ports::ImageResolver>>,
    /// Wakes the freshness loop for an early cycle.
    pub(crate) freshness_kick: Notify,
    /// Who this host is, for leases.
    pub(crate) holder_id: String,
    /// Whether this host acts (leader election, when enabled).
    pub(crate) leadership: Leadership,
    pub(crate) tools_cache: crate::mcp::ToolsCache,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: LifecycleConfig,
    pub(crate) events: broadcast::Sender<LifecycleEvent>,
    pub(crate) servers: RwLock<HashMap<String, Arc<ServerSlot>>>,
    pub(crate) runtime: RuntimeView,
    pub(crate) permits: Semaphore,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// One server's place in the controller.
pub(crate) struct ServerSlot {
    pub(crate) name: String,
    /// Run a pass now.
    pub(crate) kick: Notify,
    /// A pass ran elsewhere (resync, a host call): re-read `wake`, no pass needed.
    pub(crate) rescheduled: Notify,
    /// When the server next needs a pass, as its latest pass decided.
    pub(crate) wake: std::sync::Mutex<Option<Timestamp>>,
    /// Round-robin position for `Lifecycle::peer`.
    pub(crate) next_peer: std::sync::atomic::AtomicUsize,
    /// Bumped whenever the set of ready instances changes.
    pub(crate) ready_generation: std::sync::atomic::AtomicU64,
    pub(crate) state: tokio::sync::Mutex<ServerState>,
    pub(crate) snapshot: watch::Sender<Option<ServerStatus>>,
}

/// What the controller knows of one server; guarded by the slot's lock.
pub(crate) struct ServerState {
    /// `None` once deleted.
    pub(crate) record: Option<Versioned<ServerRecord>>,
    /// Whether `record` has changes not yet in the store.
    pub(crate) record_dirty: bool,
    pub(crate) instances: BTreeMap<InstanceId, TrackedInstance>,
    pub(crate) next_probe: HashMap<InstanceId, Timestamp>,
    pub(crate) events: VecDeque<LifecycleEvent>,
    /// Consecutive passes with a failed runtime or store call.
    pub(crate) error_streak: u32,
    /// How removals stop instances; `stop(name, Force)` sets Force.
    pub(crate) stop_mode: StopMode,
    pub(crate) phase: Option<ServerPhase>,
    /// Image freshness bookkeeping (durable).
    pub(crate) update: Versioned<crate::freshness::record::FreshnessRecord>,
    /// The ready instances after the last pass.
    pub(crate) ready: Vec<InstanceId>,
}

/// An instance record and whether it has unsaved changes.
pub(crate) struct TrackedInstance {
    pub(crate) record: Versioned<InstanceRecord>,
    pub(crate) dirty: bool,
    /// The secret values its starts were given, one per distinct value.
    /// Held while the instance is tracked so they stay registered for log
    /// redaction as long as the workload may hold them (the runtime's client
    /// logs them when it inspects the workload); dropped with the instance.
    pub(crate) secrets: Vec<SecretValue>,
}

impl TrackedInstance {
    /// An instance with no secrets held yet.
    pub(crate) fn new(record: Versioned<InstanceRecord>) -> Self {
        TrackedInstance {
            record,
            dirty: false,
            secrets: Vec::new(),
        }
    }
}

impl ServerState {
    pub(crate) fn new(record: Option<Versioned<ServerRecord>>) -> Self {
        ServerState {
            record,
            record_dirty: false,
            instances: BTreeMap::new(),
            next_probe: HashMap::new(),
            events: VecDeque::new(),
            error_streak: 0,
            stop_mode: StopMode::Graceful,
            phase: None,
            update: Versioned {
                value: Default::default(),
                version: None,
            },
            ready: Vec::new(),
        }
    }

    /// Starts tracking an instance whose record is already in the store.
    pub(crate) fn track(
        &mut self,
        shared: &Shared,
        record: Versioned<InstanceRecord>,
        kind: LifecycleEventKind,
        message: String,
    ) {
        let id = record.value.id.clone();
        let server = record.value.server.clone();
        self.instances
            .insert(id.clone(), TrackedInstance::new(record));
        self.push_event(shared, &server, Some(&id), kind, message);
    }

    /// Records an event in the bounded history and broadcasts it.
    pub(crate) fn push_event(
        &mut self,
        shared: &Shared,
        server: &str,
        instance: Option<&InstanceId>,
        kind: LifecycleEventKind,
        message: String,
    ) {
        let event = LifecycleEvent {
            at: shared.clock.now(),
            server: server.to_owned(),
            instance: instance.cloned(),
            kind,
            message,
        };
        tracing::debug!(server, instance = ?instance.map(InstanceId::as_str), ?kind, "{}", event.message);
        while self.events.len() >= shared.config.event_history.max(1) {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        // No subscribers is fine.
        let _ = shared.events.send(event);
    }
}

impl Shared {
    pub(crate) fn slot(&self, name: &str) -> Option<Arc<ServerSlot>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn slots(&self) -> Vec<Arc<ServerSlot>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Drops every session kept for an instance that stopped running.
    pub(crate) fn forget_sessions(&self, id: &InstanceId) {
        self.prober.forget(id);
        self.sessions.forget(id);
    }

    /// The label selector for every workload this manager owns.
    pub(crate) fn managed_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            labels::MANAGED_BY.to_owned(),
            self.config.manager_name.clone(),
        )])
    }

    /// Creates a slot (if missing) and starts its task.
    pub(crate) fn ensure_slot(
        self: &Arc<Self>,
        name: &str,
        state: ServerState,
    ) -> (Arc<ServerSlot>, bool) {
        let mut servers = self.servers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = servers.get(name) {
            return (existing.clone(), false);
        }
        let slot = Arc::new(ServerSlot {
            name: name.to_owned(),
            kick: Notify::new(),
            rescheduled: Notify::new(),
            wake: std::sync::Mutex::new(None),
            next_peer: std::sync::atomic::AtomicUsize::new(0),
            ready_generation: std::sync::atomic::AtomicU64::new(0),
            state: tokio::sync::Mutex::new(state),
            snapshot: watch::Sender::new(None),
        });
        servers.insert(name.to_owned(), slot.clone());
        drop(servers);
        let shared = self.clone();
        let task_slot = slot.clone();
        let span = tracing::info_span!("server", server = %name);
        self.tasks
            .spawn(async move { run_server(shared, task_slot).await }.instrument(span));
        (slot, true)
    }

    pub(crate) fn remove_slot(&self, slot: &Arc<ServerSlot>) {
        let mut servers = self.servers.write().unwrap_or_else(|e| e.into_inner());
        if servers
            .get(&slot.name)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            servers.remove(&slot.name);
        }
    }

    /// Sleeps until `at` by this controller's clock, or forever if `None`.
    async fn sleep_until(&self, at: Option<Timestamp>) {
        match at {
            Some(at) => {
                let wait = at.saturating_since(self.clock.now());
                tokio::time::sleep(wait).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// A server's task: waits for a kick or its next wake-up, then runs a pass.
async fn run_server(shared: Arc<Shared>, slot: Arc<ServerSlot>) {
    loop {
        let wake = *slot.wake.lock().unwrap_or_else(|e| e.into_inner());
        let run = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            () = slot.kick.notified() => true,
            () = slot.rescheduled.notified() => false,
            () = shared.sleep_until(wake) => true,
        };
        if !run {
            continue;
        }
        // A host that goes away mid-pass stops at the next await, like a
        // crash: the store and the runtime must make that safe.
        let outcome = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            outcome = async {
                let _permit = shared.permits.acquire().await.ok()?;
                Some(reconcile::pass(&shared, &slot).await)
            } => match outcome {
                Some(outcome) => outcome,
                None => return,
            },
        };
        if let PassOutcome::Deleted = outcome {
            shared.remove_slot(&slot);
            return;
        }
    }
}

/// Reads the runtime's event stream: marks the instance for inspection and
/// kicks its server. Resubscribes if the stream ends.
pub(crate) async fn pump_runtime_events(shared: Arc<Shared>, first: EventStream) {
    let mut first = Some(first);
    loop {
        let mut stream = first.take().unwrap_or_else(|| shared.orchestrator.events());
        loop {
            let next = tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return,
                next = stream.next() => next,
            };
            let Some(event) = next else { break };
            // Starts are the controller's own doing (runtimes here never
            // restart a workload by themselves), and their result is already
            // recorded; exits and removals are news.
            if event.kind == RuntimeEventKind::Started {
                continue;
            }
            shared.runtime.mark_dirty(&event.server, &event.instance);
            if let Some(slot) = shared.slot(&event.server) {
                slot.kick.notify_one();
            }
        }
        tracing::warn!("runtime event stream ended; resubscribing");
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Runs leader election (when enabled).
pub(crate) async fn run_leadership(shared: Arc<Shared>) {
    leadership::run(shared).await;
}

/// Lists every managed workload periodically and reconciles everything.
pub(crate) async fn run_resync_loop(shared: Arc<Shared>) {
    run_resync(shared).await;
}

async fn run_resync(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(shared.config.resync_interval) => {}
        }
        if let Err(error) = resync(&shared).await {
            tracing::warn!(%error, "periodic resync failed; will retry at the next interval");
        }
    }
}

/// What a resync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Servers reconciled.
    pub servers: usize,
    /// Workloads the runtime listed.
    pub workloads: usize,
    /// Workloads removed because no spec owns them.
    pub orphans_removed: usize,
}

/// Replaces the runtime view with a listing and removes the workloads whose
/// server is not `known` (no spec owns them). Returns how many were removed;
/// a failed removal is retried at the next resync.
pub(crate) async fn take_listing(
    shared: &Shared,
    listed: Vec<InstanceObservation>,
    known: impl Fn(&str) -> bool,
) -> usize {
    let (kept, orphans): (Vec<_>, Vec<_>) = listed.into_iter().partition(|o| known(&o.server));
    shared.runtime.replace_all(kept);
    let mut removed = 0;
    for orphan in orphans {
        match shared.orchestrator.remove(&orphan.id).await {
            Ok(()) => {
                removed += 1;
                tracing::info!(server = %orphan.server, instance = %orphan.id, "removed a workload no spec owns");
            }
            Err(error) => {
                tracing::warn!(server = %orphan.server, instance = %orphan.id, %error,
                    "could not remove a workload no spec owns; the next resync retries");
            }
        }
    }
    removed
}

/// One list call, then a pass over every server, bounded in concurrency.
pub(crate) async fn resync(shared: &Arc<Shared>) -> Result<ResyncReport> {
    if !shared.leadership.may_act() {
        return Ok(ResyncReport::default());
    }
    let listed = shared.orchestrator.list(&shared.managed_selector()).await?;
    let workloads = listed.len();
    let known: HashSet<String> = shared
        .servers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    let orphans_removed = take_listing(shared, listed, |server| known.contains(server)).await;
    let slots = shared.slots();
    let servers = slots.len();
    let concurrency = shared.config.max_concurrent_reconciles.max(1);
    futures::stream::iter(slots)
        .for_each_concurrent(concurrency, |slot| {
            let shared = shared.clone();
            async move {
                let span = tracing::info_span!("server", server = %slot.name);
                if let PassOutcome::Deleted = reconcile::pass(&shared, &slot).instrument(span).await
                {
                    shared.remove_slot(&slot);
                }
                // Let the server's task re-read its next wake-up.
                slot.rescheduled.notify_one();
            }
        })
        .await;
    Ok(ResyncReport {
        servers,
        workloads,
        orphans_removed,
    })
}

/// Runs a pass now from the caller's task (host calls that must finish their
/// work before returning: stop, delete).
pub(crate) async fn reconcile_now(shared: &Arc<Shared>, slot: &Arc<ServerSlot>) -> PassOutcome {
    let span = tracing::info_span!("server", server = %slot.name);
    let outcome = reconcile::pass(shared, slot).instrument(span).await;
    match outcome {
        PassOutcome::Deleted => shared.remove_slot(slot),
        PassOutcome::WakeAt(_) => slot.rescheduled.notify_one(),
    }
    outcome
}

/// A server's status computed from its state now.
pub(crate) fn status_now(shared: &Shared, name: &str, st: &ServerState) -> ServerStatus {
    let hash = st
        .record
        .as_ref()
        .map(|r| r.value.effective_hash())
        .unwrap_or_default();
    let observed = shared.runtime.snapshot(name);
    reconcile::status_of(name, st, &hash, &observed, shared.clock.now())
}
