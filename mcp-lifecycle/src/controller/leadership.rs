//! Leader election for hosts that share a store (opt-in, see
//! [`crate::config::LeaderElection`]).
//!
//! Layer: controller.
//!
//! One lease names the leader; only the leader reconciles, resyncs and runs
//! freshness cycles, and every controller write carries its fencing token, so
//! a deposed leader's late writes are rejected by the store. Standbys reload
//! what the store holds, so their status stays close to the truth, and take
//! over (reload, list, adopt) when the lease lapses. A single host needs none
//! of this and writes no lease at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::LeaderElection;
use crate::error::Result;
use crate::ports::{Fence, Lease};
use crate::records::{self, INSTANCES, InstanceRecord, SERVERS, ServerRecord};

use super::intents::publish;
use super::server::{ServerState, TrackedInstance};
use super::shared::Shared;
use super::tasks::take_listing;

/// Whether this host may act, and the fence its writes carry.
pub(crate) struct Leadership {
    pub(crate) election: Option<LeaderElection>,
    lease: Mutex<Option<Lease>>,
}

impl Leadership {
    pub(crate) fn new(election: Option<LeaderElection>) -> Self {
        Leadership {
            election,
            lease: Mutex::new(None),
        }
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Option<Lease>> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this host reconciles: always without election, else while it
    /// holds the leader lease.
    pub(crate) fn may_act(&self) -> bool {
        self.election.is_none() || self.lease().is_some()
    }

    /// The fence controller writes carry (none without election).
    pub(crate) fn fence(&self) -> Option<Fence> {
        self.lease().as_ref().map(Lease::fence)
    }

    fn set(&self, lease: Option<Lease>) -> bool {
        let mut current = self.lease();
        let was = current.is_some();
        *current = lease;
        was
    }

    pub(crate) fn held(&self) -> Option<Lease> {
        self.lease().clone()
    }
}

/// Loads server and instance records; instance records whose server is gone
/// are deleted after their workloads (the resync removes those).
pub(super) async fn load_states(shared: &Arc<Shared>) -> Result<HashMap<String, ServerState>> {
    let store = shared.store.as_ref();
    let mut states: HashMap<String, ServerState> = HashMap::new();
    for (name, record) in records::load_all::<ServerRecord>(store, SERVERS).await? {
        states.insert(name, ServerState::new(Some(record)));
    }
    for (name, record) in records::load_all::<crate::records::freshness::FreshnessRecord>(
        store,
        crate::records::freshness::FRESHNESS,
    )
    .await?
    {
        if let Some(state) = states.get_mut(&name) {
            state.update = record;
        }
    }
    for (_, record) in records::load_all::<InstanceRecord>(store, INSTANCES).await? {
        match states.get_mut(&record.value.server) {
            Some(state) => {
                state
                    .instances
                    .insert(record.value.id.clone(), TrackedInstance::new(record));
            }
            None => {
                // Its server is gone: a slot with no record removes the
                // workload, and keeps retrying until it is gone.
                states
                    .entry(record.value.server.clone())
                    .or_insert_with(|| ServerState::new(None))
                    .instances
                    .insert(record.value.id.clone(), TrackedInstance::new(record));
            }
        }
    }
    for state in states.values_mut() {
        state.settle_ordinals();
    }
    Ok(states)
}

/// Puts freshly loaded states in place: existing slots get the stored state
/// (keeping their event history), new servers get slots, and slots whose
/// server is gone from the store are dropped.
pub(crate) async fn install_states(shared: &Arc<Shared>, mut states: HashMap<String, ServerState>) {
    for slot in shared.slots() {
        match states.remove(&slot.name) {
            Some(mut fresh) => {
                let mut st = slot.state.lock().await;
                fresh.events = std::mem::take(&mut st.events);
                fresh.phase = st.phase;
                *st = fresh;
                publish(shared, &slot, &mut st);
            }
            None => shared.remove_slot(&slot),
        }
    }
    for (name, state) in states {
        let (slot, _) = shared.ensure_slot(&name, state);
        let mut st = slot.state.lock().await;
        publish(shared, &slot, &mut st);
    }
}

/// Becomes the acting host: reloads everything, lists the runtime, removes
/// what no spec owns, and reconciles every server.
async fn take_over(shared: &Arc<Shared>) -> Result<()> {
    let states = load_states(shared).await?;
    let listing = shared.runtime.begin_listing();
    let listed = shared.orchestrator.list(&shared.managed_selector()).await?;
    take_listing(shared, listing, listed, |server| {
        states.contains_key(server)
    })
    .await;
    install_states(shared, states).await;
    for slot in shared.slots() {
        slot.kick.notify_one();
    }
    shared.freshness_kick.notify_one();
    Ok(())
}

/// Host calls on other hosts (apply, scale, stop, delete) write server
/// records to the store; the leader picks up every record newer than its own
/// copy and reconciles that server. Run at every renewal, and whenever the
/// store's change announcements had a gap.
pub(super) async fn pick_up_host_writes(shared: &Arc<Shared>) -> Result<()> {
    for (name, stored) in records::load_all::<ServerRecord>(shared.store.as_ref(), SERVERS).await? {
        pick_up(shared, &name, stored).await;
    }
    Ok(())
}

/// Takes `stored` (server `name`'s record as the store holds it) if it is
/// newer than this host's copy, or a server this host does not know yet,
/// publishes the server's status (so a standby reports it too) and kicks the
/// server's task (which acts only on the leader). Older or equal copies (this
/// host's own writes coming back) change nothing.
pub(super) async fn pick_up(
    shared: &Arc<Shared>,
    name: &str,
    stored: records::Versioned<ServerRecord>,
) {
    match shared.slot(name) {
        Some(slot) => {
            let mut st = slot.state.lock().await;
            let newer = match (st.record(), stored.version) {
                (Some(mine), Some(theirs)) => mine.version.is_none_or(|v| v < theirs),
                (None, _) => false,
                (Some(_), None) => false,
            };
            if newer {
                st.set_record(Some(stored));
                publish(shared, &slot, &mut st);
                drop(st);
                slot.kick.notify_one();
            }
        }
        None => {
            let (slot, _) = shared.ensure_slot(name, ServerState::new(Some(stored)));
            let mut st = slot.state.lock().await;
            publish(shared, &slot, &mut st);
            drop(st);
            slot.kick.notify_one();
        }
    }
}

/// The election loop: acquire or renew the leader lease every `renew_every`.
pub(super) async fn run(shared: Arc<Shared>) {
    let Some(election) = shared.leadership.election else {
        return;
    };
    let key = format!("leader/{}", shared.config.manager_name);
    loop {
        let now = shared.clock.now();
        match shared
            .store
            .acquire_lease(&key, &shared.holder_id, election.lease_ttl, now)
            .await
        {
            Ok(Some(lease)) => {
                let was_leader = shared.leadership.set(Some(lease));
                if !was_leader {
                    tracing::info!(holder = %shared.holder_id, "became the leader");
                    if let Err(error) = take_over(&shared).await {
                        tracing::warn!(%error, "taking over failed; standing down until the next attempt");
                        shared.leadership.set(None);
                    }
                } else if let Err(error) = pick_up_host_writes(&shared).await {
                    tracing::warn!(%error, "could not re-read server records");
                }
            }
            Ok(None) => {
                if shared.leadership.set(None) {
                    tracing::warn!(holder = %shared.holder_id, "lost the leader lease; standing by");
                }
                match load_states(&shared).await {
                    Ok(states) => install_states(&shared, states).await,
                    Err(error) => tracing::warn!(%error, "standby could not reload the store"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "leader lease call failed");
                let expired = shared
                    .leadership
                    .held()
                    .is_some_and(|l| l.expires_at <= shared.clock.now());
                if expired {
                    shared.leadership.set(None);
                }
            }
        }
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => break,
            () = tokio::time::sleep(election.renew_every) => {}
        }
    }
    if let Some(lease) = shared.leadership.held() {
        shared.leadership.set(None);
        let _ = shared.store.release_lease(&lease).await;
    }
}
