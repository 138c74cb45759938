//! One server's place in the controller: its slot (wake-ups, snapshot,
//! round-robin position) and the state its passes work on (records, probe
//! schedule, event history, freshness bookkeeping).
//!
//! Layer: controller. Owned by the controller's tasks; the facade never sees it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::sync::{Notify, watch};

use crate::ports::{InstanceId, StopMode};
use crate::records::{InstanceRecord, ServerRecord, Versioned};
use crate::state::ServerPhase;
use crate::status::{LifecycleEvent, LifecycleEventKind, ServerStatus};
use crate::time::Timestamp;

use super::shared::Shared;

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
    /// The mode of a host's `stop` call not yet carried out. The next pass
    /// takes it (whatever it removes), so a forced stop forces only the
    /// removals it asked for; every later removal is graceful again.
    pub(crate) pending_stop: Option<StopMode>,
    pub(crate) phase: Option<ServerPhase>,
    /// Image freshness bookkeeping (durable).
    pub(crate) update: Versioned<crate::records::freshness::FreshnessRecord>,
    /// The ready instances after the last pass.
    pub(crate) ready: Vec<InstanceId>,
}

/// An instance record and whether it has unsaved changes.
pub(crate) struct TrackedInstance {
    pub(crate) record: Versioned<InstanceRecord>,
    pub(crate) dirty: bool,
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
            pending_stop: None,
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
        self.instances.insert(
            id.clone(),
            TrackedInstance {
                record,
                dirty: false,
            },
        );
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
