//! One server's place in the controller: its slot (wake-ups, snapshot,
//! round-robin position) and the state its passes work on (records, probe
//! schedule, the events its published status does not show yet, freshness
//! bookkeeping).
//!
//! Layer: controller. Owned by the controller's tasks; the facade never sees it.

use std::sync::Arc;

use litemap::LiteMap;
use tokio::sync::{Notify, watch};

use crate::ports::{InstanceId, StopMode};
use crate::records::{InstanceRecord, ServerRecord, Versioned};
use crate::secret::SecretValue;
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
    /// `None` once deleted. Shared, so a pass holds it without copying the
    /// spec; set it through [`ServerState::set_record`], which keeps `hash`.
    record: Option<Versioned<Arc<ServerRecord>>>,
    /// The workload hash of what new instances run, computed when the record
    /// is set (hashing the spec every pass would dominate a steady pass).
    hash: Arc<str>,
    /// Bumped by every change a status shows (instances, events, freshness);
    /// a pass that leaves it and the runtime view alone republishes nothing.
    pub(crate) revision: u64,
    /// The revision and runtime-view generation of the published status.
    pub(crate) published: Option<(u64, u64)>,
    /// Sorted by id; a flat map, since a server has few instances and a
    /// B-tree node would cost kilobytes for each server.
    pub(crate) instances: LiteMap<InstanceId, TrackedInstance>,
    pub(crate) next_probe: LiteMap<InstanceId, Timestamp>,
    /// Events not yet in the published status, oldest first (at most
    /// `event_history`). The history before them is held by the published
    /// status alone (see `reconcile::publish`), so each event is kept once.
    pub(crate) events: Vec<LifecycleEvent>,
    /// Consecutive passes with a failed runtime or store call.
    pub(crate) error_streak: u32,
    /// The mode of a host's `stop` call not yet carried out. The next pass
    /// takes it (whatever it removes), so a forced stop forces only the
    /// removals it asked for; every later removal is graceful again.
    pub(crate) pending_stop: Option<StopMode>,
    /// A forced stop on a replica-owning runtime is under way: replicas the
    /// runtime is removing are killed (grace 0) until none is left.
    pub(crate) forcing: bool,
    pub(crate) phase: Option<ServerPhase>,
    /// Image freshness bookkeeping (durable).
    pub(crate) update: Versioned<crate::records::freshness::FreshnessRecord>,
    /// The ready instances after the last pass.
    pub(crate) ready: Vec<InstanceId>,
    /// Running totals the status shows.
    pub(crate) counters: crate::status::ServerCounters,
    /// The workload hash whose instances pinning the tag failed for: they
    /// run the tag, and pinning waits for the next start or the next change
    /// of the spec (see `pinning`).
    pub(crate) pin_failed_for: Option<Arc<str>>,
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
        let mut state = ServerState {
            record: None,
            hash: Arc::from(""),
            revision: 0,
            published: None,
            // Room for one: most servers run one instance, and a vector's
            // first growth would reserve four.
            instances: LiteMap::with_capacity(1),
            next_probe: LiteMap::with_capacity(1),
            events: Vec::new(),
            error_streak: 0,
            pending_stop: None,
            forcing: false,
            phase: None,
            update: Versioned {
                value: Default::default(),
                version: None,
            },
            ready: Vec::new(),
            counters: Default::default(),
            pin_failed_for: None,
        };
        state.set_record(record);
        state
    }

    /// The server record, if the server is not deleted.
    pub(crate) fn record(&self) -> Option<&Versioned<Arc<ServerRecord>>> {
        self.record.as_ref()
    }

    /// The record to change in place: only fields outside the workload hash
    /// (`next_ordinal`, `stopped`, `deleting`) may change through it.
    pub(crate) fn record_mut(&mut self) -> Option<&mut Versioned<Arc<ServerRecord>>> {
        self.revision += 1;
        self.record.as_mut()
    }

    /// Replaces the record and recomputes the workload hash.
    pub(crate) fn set_record(&mut self, record: Option<Versioned<ServerRecord>>) {
        self.set_shared_record(record.map(|r| Versioned {
            value: Arc::new(r.value),
            version: r.version,
        }));
    }

    /// [`Self::set_record`] for a record already shared. The record's
    /// `next_ordinal` never moves back below what is in use (a record read
    /// back from the store may hold an older value: ordinals are durable
    /// through instance records, not through the server record).
    pub(crate) fn set_shared_record(&mut self, mut record: Option<Versioned<Arc<ServerRecord>>>) {
        let floor = self.ordinal_floor();
        if let Some(r) = record.as_mut()
            && r.value.next_ordinal < floor
        {
            Arc::make_mut(&mut r.value).next_ordinal = floor;
        }
        let unchanged_spec = match (&self.record, &record) {
            (Some(old), Some(new)) => {
                old.value.spec == new.value.spec
                    && old.value.rollout_image == new.value.rollout_image
            }
            _ => false,
        };
        if !unchanged_spec {
            self.hash = record
                .as_ref()
                .map_or_else(|| Arc::from(""), |r| Arc::from(r.value.effective_hash()));
        }
        self.record = record;
        self.revision += 1;
    }

    /// The smallest ordinal no instance (tracked, or allocated by the record
    /// in memory) has used.
    fn ordinal_floor(&self) -> u64 {
        let tracked = self
            .instances
            .values()
            .map(|t| t.record.value.ordinal.saturating_add(1))
            .max()
            .unwrap_or(0);
        let allocated = self.record.as_ref().map_or(0, |r| r.value.next_ordinal);
        tracked.max(allocated)
    }

    /// Raises the record's `next_ordinal` above every tracked instance (after
    /// loading instance records from the store).
    pub(crate) fn settle_ordinals(&mut self) {
        let floor = self.ordinal_floor();
        if let Some(r) = self.record.as_mut()
            && r.value.next_ordinal < floor
        {
            Arc::make_mut(&mut r.value).next_ordinal = floor;
        }
    }

    /// The workload hash of what new instances run ("" once deleted).
    pub(crate) fn hash(&self) -> &Arc<str> {
        &self.hash
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
        self.revision += 1;
        self.instances
            .insert(id.clone(), TrackedInstance::new(record));
        self.push_event(shared, &server, Some(&id), kind, message);
    }

    /// Records an event for the next published status and broadcasts it.
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
        self.revision += 1;
        let cap = shared.config.event_history.max(1);
        if self.events.len() >= cap {
            self.events.drain(..=self.events.len() - cap);
        }
        self.events.push(event.clone());
        // No subscribers is fine.
        let _ = shared.events.send(event);
    }
}
