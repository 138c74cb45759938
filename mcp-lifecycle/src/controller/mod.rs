//! The controller: the tasks that carry out what the state machines decide,
//! and the intents and reads the [`crate::Lifecycle`] facade reaches it by.
//!
//! Layer: controller. It sits above the data types (`records`, `status`,
//! `config`), the pure state machines and ports, and the adapters (`store`,
//! `mcp`, the backends), and below the facade; it imports nothing from the
//! facade. It holds no decision of its own: `state::` decides, this module
//! performs.
//!
//! One task per server runs reconcile passes one at a time (a server's work
//! is serialized); a semaphore bounds how many servers reconcile at once. A
//! pump turns the runtime's event stream into kicks; a resync task lists
//! every workload periodically; a freshness task checks images; a leadership
//! task holds the leader lease when hosts share a store, and every host
//! follows the store's change announcements to take other hosts' writes at
//! once.
//!
//! Files: `shared` (what the tasks share), `server` (one server's slot and
//! state), `tasks` (the long-running tasks), `reconcile` (one pass),
//! `runtime_view` (the cached listing), `leadership`, `store_changes`,
//! `freshness`, `intents`
//! (what host calls change) and `reads` (snapshots, peers, tools).

mod freshness;
mod intents;
mod leadership;
mod owned;
mod pinning;
mod reads;
mod reconcile;
mod runtime_view;
mod server;
mod shared;
mod store_changes;
mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LifecycleConfig;
use crate::error::{ErrorKind, Result};
use crate::mcp::{SessionPool, ToolsCache};
use crate::ports::{ImageResolver, InstanceObservation, Orchestrator, SecretSource, Store};
use crate::probe::Prober;
use crate::status::LifecycleEvent;
use crate::time::Clock;

use leadership::Leadership;
use runtime_view::RuntimeView;
use shared::Shared;

/// The ports and settings a controller runs on (assembled by the builder).
pub(crate) struct Parts {
    pub(crate) orchestrator: Arc<dyn Orchestrator>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) prober: Arc<dyn Prober>,
    pub(crate) sessions: Arc<SessionPool>,
    pub(crate) resolver: Option<Arc<dyn ImageResolver>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: LifecycleConfig,
}

/// A handle on a running controller: what the facade holds. Cloning it
/// shares the same controller.
#[derive(Clone)]
pub(crate) struct Controller {
    shared: Arc<Shared>,
}

impl Controller {
    /// Loads state from the store, lists the runtime's workloads, adopts what
    /// belongs to known servers, removes what no spec owns, and starts the
    /// tasks. Must run inside a tokio runtime.
    pub(crate) async fn launch(parts: Parts) -> Result<Controller> {
        let (events, _) = broadcast::channel(1024);
        let config = parts.config;
        let holder_id = config.holder_id.clone().unwrap_or_else(|| {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            format!(
                "{}-{}-{}",
                config.manager_name,
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
        let shared = Arc::new(Shared {
            orchestrator: parts.orchestrator,
            store: parts.store,
            secrets: parts.secrets,
            prober: parts.prober,
            sessions: parts.sessions,
            resolver: parts.resolver,
            freshness_kick: tokio::sync::Notify::new(),
            leadership: Leadership::new(config.leader_election),
            holder_id,
            tools_cache: ToolsCache::new(config.tools_cache_ttl, config.tools_cache_negative_ttl),
            clock: parts.clock,
            permits: Semaphore::new(config.max_concurrent_reconciles.max(1)),
            config,
            events,
            servers: RwLock::new(HashMap::default()),
            runtime: RuntimeView::default(),
            applied: Default::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        // Subscribe before listing, so nothing that happens in between is missed.
        let stream = shared.orchestrator.events();
        let mut states = leadership::load_states(&shared).await?;
        if shared.leadership.election.is_none() {
            // A single host acts at once. With leader election, listing and
            // removing orphans wait until this host leads.
            let listing = shared.runtime.begin_listing();
            let listed = list_with_retry(&shared).await?;
            tasks::take_listing(&shared, listing, listed, |server| {
                states.contains_key(server)
            })
            .await;
        }
        for (name, state) in states.drain() {
            let (slot, _) = shared.ensure_slot(&name, state);
            slot.kick.notify_one();
        }
        shared
            .tasks
            .spawn(tasks::pump_runtime_events(shared.clone(), stream));
        shared.tasks.spawn(tasks::run_resync_loop(shared.clone()));
        shared.tasks.spawn(leadership::run(shared.clone()));
        shared.tasks.spawn(store_changes::follow(shared.clone()));
        shared.tasks.spawn(freshness::run(shared.clone()));
        Ok(Controller { shared })
    }

    /// The host-wide settings in force.
    pub(crate) fn config(&self) -> &LifecycleConfig {
        &self.shared.config
    }

    /// Whether the controller was stopped (shutdown, detach or drop).
    pub(crate) fn is_stopped(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Whether the runtime owns replicas (and so can adopt existing workloads).
    pub(crate) fn owns_replicas(&self) -> bool {
        self.shared.orchestrator.replica_owner().is_some()
    }

    /// The backend's name.
    pub(crate) fn backend(&self) -> &'static str {
        self.shared.orchestrator.backend()
    }

    /// The engine or cluster the backend talks to, and its version.
    pub(crate) fn runtime_version(&self) -> Option<String> {
        self.shared.orchestrator.runtime_version()
    }

    /// Whether this host acts (see `Lifecycle::is_leader`).
    pub(crate) fn is_leader(&self) -> bool {
        self.shared.leadership.may_act()
    }

    /// How many servers the controller holds.
    pub(crate) fn server_count(&self) -> usize {
        self.shared
            .servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A stream of lifecycle events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.shared.events.subscribe()
    }

    /// Stops the tasks (they end at their next await) without waiting.
    pub(crate) fn cancel(&self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
    }

    /// Stops the tasks and waits for them to end. Workloads keep running.
    pub(crate) async fn stop_tasks(&self) {
        self.cancel();
        self.shared.tasks.wait().await;
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
