//! What every task of the controller shares: the ports, the configuration,
//! the server slots, the runtime view, and the cancellation token.
//!
//! Layer: controller.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::LifecycleConfig;
use crate::ports::{InstanceId, Orchestrator, SecretSource, Store, labels};
use crate::probe::Prober;
use crate::status::LifecycleEvent;
use crate::time::{Clock, Timestamp};

use super::leadership::Leadership;
use super::owned::Applied;
use super::runtime_view::RuntimeView;
use super::server::{ServerSlot, ServerState};
use super::tasks::run_server;

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
    pub(crate) servers: RwLock<HashMap<String, Arc<ServerSlot>, foldhash::fast::RandomState>>,
    pub(crate) runtime: RuntimeView,
    /// What this host last handed a replica-owning runtime, per server
    /// (empty for instance-granular runtimes).
    pub(crate) applied: std::sync::Mutex<HashMap<String, Applied>>,
    pub(crate) permits: Semaphore,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Shared {
    pub(crate) fn slot(&self, name: &str) -> Option<Arc<ServerSlot>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn has_slot(&self, name: &str) -> bool {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Runs `f` over every slot under the read lock (no `Arc` is cloned
    /// for a slot `f` passes over); returns how many slots there are and
    /// what `f` returned.
    pub(crate) fn with_slots<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = &Arc<ServerSlot>>) -> R,
    ) -> (usize, R) {
        let servers = self.servers.read().unwrap_or_else(|e| e.into_inner());
        (servers.len(), f(&mut servers.values()))
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

    /// What this host last handed a replica-owning runtime for `server`.
    pub(crate) fn applied(&self, server: &str) -> Option<Applied> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .cloned()
    }

    /// Records (or, with `None`, forgets) what was handed to the runtime.
    pub(crate) fn set_applied(&self, server: &str, applied: Option<Applied>) {
        let mut map = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        match applied {
            Some(applied) => {
                map.insert(server.to_owned(), applied);
            }
            None => {
                map.remove(server);
            }
        }
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
    pub(super) async fn sleep_until(&self, at: Option<Timestamp>) {
        match at {
            Some(at) => {
                let wait = at.saturating_since(self.clock.now());
                tokio::time::sleep(wait).await;
            }
            None => std::future::pending().await,
        }
    }
}
