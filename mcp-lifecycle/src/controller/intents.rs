//! What host calls change: the controller's side of `apply`, `delete`,
//! `start`, `stop`, `scale`, `set_update_policy` and `shutdown`. Each writes
//! the server record with compare-and-swap (re-reading and retrying when
//! another host wrote first), publishes a status that reflects the change,
//! and kicks the server's task.
//!
//! Layer: controller. The facade validates and waits; this module changes.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{InstanceId, StopMode};
use crate::records::{self, INSTANCES, SERVERS, ServerRecord};
use crate::spec::{ServerSpec, UpdatePolicy};
use crate::status::{ApplyOutcome, LifecycleEventKind};

use super::Controller;
use super::reconcile::{self, PassOutcome};
use super::server::{ServerSlot, ServerState};
use super::shared::Shared;
use super::tasks;

/// How long past the grace period a host call waits for a runtime that owns
/// replicas to remove them (see `owned_wait`).
const OWNED_REMOVAL_MARGIN: Duration = Duration::from_secs(120);

impl Controller {
    pub(super) fn slot(&self, name: &str) -> Result<Arc<ServerSlot>> {
        self.shared
            .slot(name)
            .ok_or_else(|| Error::not_found(format!("server {name:?}")))
    }

    /// Creates or updates a server from a validated spec.
    pub(crate) async fn apply(&self, spec: ServerSpec) -> Result<ApplyOutcome> {
        let name = spec.name.clone();
        let store = self.shared.store.as_ref();
        let started = self.shared.clock.now();
        loop {
            if let Some(slot) = self.shared.slot(&name) {
                let mut st = slot.state.lock().await;
                if st.record().is_none_or(|r| r.value.deleting) {
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
                publish(&self.shared, &slot, &mut st);
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
            let saved = record.version;
            let (slot, created) = self
                .shared
                .ensure_slot(&name, ServerState::new(Some(record)));
            let mut st = slot.state.lock().await;
            // The store's announcement of this very write may have made the
            // slot first (it holds the version just saved); any other slot
            // is another host's or call's, and the loop applies over it.
            if !created && st.record().and_then(|r| r.version) != saved {
                continue;
            }
            st.push_event(
                &self.shared,
                &name,
                None,
                LifecycleEventKind::Applied,
                "spec created".into(),
            );
            publish(&self.shared, &slot, &mut st);
            drop(st);
            slot.kick.notify_one();
            return Ok(ApplyOutcome::Created);
        }
    }

    /// Marks a server deleted and removes everything it has.
    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
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
            // Reads see the server gone from here on, without its lock.
            slot.snapshot.send_replace(None);
        }
        let mut outcome = tasks::reconcile_now(&self.shared, &slot).await;
        if self.shared.orchestrator.replica_owner().is_some() {
            // The runtime removes replicas itself: wait (bounded) until it has.
            let deadline = tokio::time::Instant::now() + self.owned_wait(&slot).await;
            while matches!(outcome, PassOutcome::WakeAt(_))
                && tokio::time::Instant::now() < deadline
            {
                let still_here = self
                    .shared
                    .slot(name)
                    .is_some_and(|current| Arc::ptr_eq(&current, &slot));
                if !still_here {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                outcome = tasks::reconcile_now(&self.shared, &slot).await;
            }
        }
        match outcome {
            PassOutcome::Deleted => Ok(()),
            PassOutcome::WakeAt(_) => Err(Error::unavailable(
                format!("removal of server {name:?}"),
                "some workloads could not be removed yet; the controller keeps retrying",
            )),
        }
    }

    /// Starts a stopped server (or one scaled to 0, which then runs one instance).
    pub(crate) async fn start(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        self.update_record(&slot, |r| {
            let changed = r.stopped || r.spec.replicas == 0;
            r.stopped = false;
            r.spec.replicas = r.spec.replicas.max(1);
            changed
        })
        .await?;
        slot.kick.notify_one();
        Ok(())
    }

    /// Stops every instance of a server; `mode` applies to this stop alone.
    /// On a runtime that owns replicas, waits until they are gone (up to
    /// the grace period and [`OWNED_REMOVAL_MARGIN`]).
    pub(crate) async fn stop(&self, name: &str, mode: StopMode) -> Result<()> {
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
        tasks::reconcile_now(&self.shared, &slot).await;
        if self.shared.orchestrator.replica_owner().is_some() {
            // The runtime stops replicas itself: wait (bounded) until it has.
            let wait = self.owned_wait(&slot).await;
            let mut snapshots = slot.snapshot.subscribe();
            let gone = tokio::time::timeout(
                wait,
                snapshots.wait_for(|s| s.as_ref().is_none_or(|s| s.instances.is_empty())),
            )
            .await;
            if gone.is_err() {
                return Err(Error::Timeout {
                    what: format!(
                        "the replicas of server {name:?} to stop (the runtime is still removing them; the controller carries on)"
                    ),
                    after: wait,
                });
            }
        }
        Ok(())
    }

    /// How long a host call waits for a runtime that owns replicas to remove
    /// them: the spec's grace period and a margin for the runtime. The
    /// margin is wide: a kubelet under load takes tens of seconds past the
    /// grace period before a stopped pod is gone from the API (a loaded
    /// single-node cluster here took over a minute for twenty pods).
    async fn owned_wait(&self, slot: &ServerSlot) -> Duration {
        let grace = slot
            .state
            .lock()
            .await
            .record()
            .map_or(Duration::from_secs(10), |r| r.value.spec.stop_grace_period);
        grace + OWNED_REMOVAL_MARGIN
    }

    /// Sets the desired replica count (already checked against the limits).
    pub(crate) async fn scale(&self, name: &str, replicas: u32) -> Result<()> {
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
    pub(crate) async fn set_update_policy(&self, name: &str, policy: UpdatePolicy) -> Result<()> {
        let slot = self.slot(name)?;
        self.update_record(&slot, |r| {
            let changed = r.spec.update != policy;
            r.spec.update = policy;
            changed
        })
        .await
    }

    /// Stops the tasks, then every server's instances (gracefully), keeping
    /// every spec and instance record for the next host.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        let acting = self.shared.leadership.may_act();
        // Tasks first, so no pass restarts what is being stopped; a pass cut
        // short is safe (as after a crash).
        self.stop_tasks().await;
        if !acting {
            // A standby owns no workload; the leader keeps running them.
            return Ok(());
        }
        let mut failures = Vec::new();
        for slot in self.shared.slots() {
            let mut st = slot.state.lock().await;
            let ids: Vec<InstanceId> = st.instances.keys().cloned().collect();
            let grace = st
                .record()
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

    async fn change_server(
        &self,
        name: &str,
        st: &mut ServerState,
        change: impl Fn(&mut ServerRecord) -> bool,
    ) -> Result<bool> {
        let store = self.shared.store.as_ref();
        for _ in 0..5 {
            let Some(record) = st.record().filter(|r| !r.value.deleting) else {
                return Err(Error::not_found(format!("server {name:?}")));
            };
            let mut updated = record.clone();
            if !change(Arc::make_mut(&mut updated.value)) {
                return Ok(false);
            }
            match records::save(store, SERVERS, name, &mut updated, None).await {
                Ok(()) => {
                    st.set_shared_record(Some(updated));
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    match records::load::<ServerRecord>(store, SERVERS, name).await? {
                        Some(fresh) => st.set_record(Some(fresh)),
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
        slot: &ServerSlot,
        change: impl Fn(&mut ServerRecord) -> bool,
    ) -> Result<()> {
        let mut st = slot.state.lock().await;
        self.update_record_locked(slot, &mut st, change).await
    }

    /// [`Self::update_record`] for a caller that holds the server's lock.
    async fn update_record_locked(
        &self,
        slot: &ServerSlot,
        st: &mut ServerState,
        change: impl Fn(&mut ServerRecord) -> bool,
    ) -> Result<()> {
        if !self.change_server(&slot.name, st, change).await? {
            return Ok(());
        }
        let desired = st.record().map_or(0, |r| r.value.desired());
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
pub(super) fn publish(shared: &Shared, slot: &ServerSlot, st: &mut ServerState) {
    let (observed, _) = shared.runtime.snapshot(&slot.name);
    reconcile::publish(shared, slot, st, &observed, shared.clock.now());
}
