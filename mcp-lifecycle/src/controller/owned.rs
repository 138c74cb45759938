//! One reconcile pass for a server whose runtime owns its replicas
//! ([`ReplicaOwner`], Kubernetes): the controller hands the runtime one
//! workload (template and replica count), observes the replicas the runtime
//! keeps, probes them over MCP, and hands its verdicts back (readiness
//! gates). Restarts, back-off and rolling replacement are the runtime's.
//!
//! Layer: controller.
//!
//! The tracked instances of such a server are the replicas the runtime
//! shows, with phases derived from what it reports and from the probes:
//! Pending until the runtime runs the process; Failed while it waits to
//! restart or cannot start it (its reason and message, attempt = its restart
//! count, next retry = the end of its back-off); Starting until the MCP
//! readiness probe passes; Ready; Unhealthy after the failure threshold (a
//! replica failing twice as many probes is deleted, and the runtime replaces
//! it). They are not written to the store: the runtime holds them, and a host
//! that restarts reads them back from it. A steady pass makes no runtime call.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::ports::{
    InstanceId, InstanceObservation, ReplicaOwner, RuntimeStatus, StopMode, WorkloadSpec, labels,
};
use crate::records::{InstanceRecord, ServerRecord, Versioned};
use crate::state::{InstanceAction, InstanceEvent, InstancePhase, InstancePolicy, InstanceState};
use crate::status::LifecycleEventKind;

use super::reconcile::{Pass, PassOutcome};
use super::server::{ServerState, TrackedInstance};

/// What a host last handed the runtime for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A workload: its hash and replica count.
    Workload {
        /// The workload hash of the template.
        hash: Arc<str>,
        /// The replica count.
        replicas: u32,
    },
    /// The workload's deletion, requested once.
    Deleted,
}

impl Pass<'_> {
    /// A pass for a server on a runtime that owns its replicas.
    pub(super) async fn run_owned(
        &mut self,
        st: &mut ServerState,
        owner: &dyn ReplicaOwner,
    ) -> PassOutcome {
        let stop_mode = st.pending_stop.take();
        self.refresh_dirty().await;
        self.pin_before_first_start(st).await;
        let record = match st.record() {
            Some(r) if !r.value.deleting => r.value.clone(),
            _ => return self.delete_owned(st, owner).await,
        };
        let policy = InstancePolicy {
            backoff: self.shared.config.backoff.clone(),
            failure_threshold: record.spec.health.failure_threshold,
            startup_timeout: record.spec.health.startup_timeout,
        };
        let replicas = record.desired();
        self.converge_workload(st, owner, &record, replicas).await;
        if stop_mode == Some(StopMode::Force) {
            st.forcing = true;
        }
        if st.forcing && replicas == 0 {
            self.kill_replicas(st).await;
        } else {
            // A start (or scale) since the forced stop ends it.
            st.forcing = false;
        }
        self.follow_replicas(st, &policy);
        // What the runtime reported shows now, not after this pass's probes.
        super::reconcile::settle_and_publish(self.shared, self.slot, st, self.now);
        self.probe_due(st, &record, &policy).await;
        self.tick_owned(st, &policy).await;
        self.sync_gates(st, owner).await;
        if self.errors > 0 {
            st.error_streak = st.error_streak.saturating_add(1);
        } else {
            st.error_streak = 0;
        }
        PassOutcome::WakeAt(Some(self.next_wake(st, &policy)))
    }

    /// Hands the runtime the template and replica count when either changed
    /// since this host last did (a host that restarts applies once: the
    /// call is idempotent).
    async fn converge_workload(
        &mut self,
        st: &mut ServerState,
        owner: &dyn ReplicaOwner,
        record: &ServerRecord,
        replicas: u32,
    ) {
        let want = Applied::Workload {
            hash: self.hash.clone(),
            replicas,
        };
        let applied = self.shared.applied(self.name);
        if applied.as_ref() == Some(&want) {
            return;
        }
        let result = match applied {
            Some(Applied::Workload { hash, .. }) if hash == self.hash => {
                owner.scale(self.name, replicas).await
            }
            _ => {
                let template_record = InstanceRecord {
                    id: InstanceId::from_raw(self.name),
                    server: self.name.to_owned(),
                    ordinal: 0,
                    spec_hash: self.hash.to_string(),
                    source: record.effective_source(),
                    state: InstanceState::new(),
                    created_at: self.now,
                };
                let mut template = match self.instance_spec(record, &template_record).await {
                    Ok(template) => template,
                    Err(reason) => {
                        // Loud, and retried with the pass's escalating backoff.
                        self.errors += 1;
                        tracing::warn!(%reason, "cannot build the workload; will retry");
                        st.push_event(
                            self.shared,
                            self.name,
                            None,
                            LifecycleEventKind::RuntimeError,
                            format!("cannot apply the workload: {reason}"),
                        );
                        return;
                    }
                };
                template.labels.remove(labels::INSTANCE);
                let workload = WorkloadSpec { template, replicas };
                owner.apply_workload(&workload).await
            }
        };
        match result {
            Ok(()) => {
                st.push_event(
                    self.shared,
                    self.name,
                    None,
                    LifecycleEventKind::DesiredChanged,
                    format!("workload applied with {replicas} replica(s)"),
                );
                self.shared.set_applied(self.name, Some(want));
            }
            Err(error) => self.runtime_error(st, None, "applying the workload", &error),
        }
    }

    /// A forced stop: the replicas the runtime is removing (the workload is
    /// at zero replicas) are killed now, with no grace period. A replica
    /// the runtime has not started removing yet waits for the next pass:
    /// killed before the runtime saw the scale-down, it would be replaced.
    /// The stop is over when none is left.
    async fn kill_replicas(&mut self, st: &mut ServerState) {
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        if observed.is_empty() {
            st.forcing = false;
            return;
        }
        let removing = observed
            .values()
            .filter(|obs| obs.replica.as_ref().is_some_and(|d| d.terminating))
            .map(|obs| obs.id.clone());
        for id in removing.collect::<Vec<_>>().iter() {
            self.shared.forget_sessions(id);
            match self
                .shared
                .orchestrator
                .stop(id, StopMode::Force, Duration::ZERO)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(error) => self.runtime_error(st, Some(id), "killing", &error),
            }
        }
    }

    /// Makes the tracked instances the replicas the runtime shows, with the
    /// phases its reports imply.
    fn follow_replicas(&mut self, st: &mut ServerState, policy: &InstancePolicy) {
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        let gone: Vec<InstanceId> = st
            .instances
            .keys()
            .filter(|id| !observed.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.shared.forget_sessions(&id);
            st.instances.remove(&id);
            st.next_probe.remove(&id);
            st.push_event(
                self.shared,
                self.name,
                Some(&id),
                LifecycleEventKind::InstanceRemoved,
                format!("replica {id} is gone"),
            );
        }
        for obs in observed.values() {
            if !st.instances.contains_key(&obs.id) {
                let record = Versioned {
                    value: InstanceRecord {
                        id: obs.id.clone(),
                        server: self.name.to_owned(),
                        ordinal: 0,
                        spec_hash: obs.spec_hash.clone(),
                        source: match st.record() {
                            Some(r) => r.value.effective_source(),
                            None => continue,
                        },
                        state: InstanceState::new(),
                        created_at: self.now,
                    },
                    version: None,
                };
                st.revision += 1;
                st.instances
                    .insert(obs.id.clone(), TrackedInstance::new(record));
                st.push_event(
                    self.shared,
                    self.name,
                    Some(&obs.id),
                    LifecycleEventKind::InstanceCreated,
                    format!("replica {} appeared", obs.id),
                );
            }
            self.follow_one(st, obs, policy);
        }
    }

    /// Derives one replica's phase from what the runtime reports.
    fn follow_one(
        &mut self,
        st: &mut ServerState,
        obs: &InstanceObservation,
        policy: &InstancePolicy,
    ) {
        let Some(tracked) = st.instances.get(&obs.id) else {
            return;
        };
        let before = tracked.record.value.state.clone();
        let detail = obs.replica.clone().unwrap_or_default();
        let mut after = before.clone();
        after.attempt = detail.restarts;
        let restarted = detail.restarts > before.attempt;
        match (&obs.status, &detail.waiting) {
            _ if detail.terminating => {
                after.phase = InstancePhase::Stopping {
                    mode: StopMode::Graceful,
                };
            }
            (RuntimeStatus::Running, _) => {
                if restarted {
                    // A new process behind the same replica: the old session's
                    // stream is dead, and a probe over it would hang until
                    // its timeout while this server's pass waits.
                    self.shared.forget_sessions(&obs.id);
                }
                if restarted || !before.phase.may_be_running() {
                    after.phase = InstancePhase::Starting { since: self.now };
                    after.probe_failures = 0;
                    st.next_probe.insert(obs.id.clone(), self.now);
                }
            }
            (status, Some(waiting)) => {
                let mut reason = match &waiting.message {
                    Some(message) if !message.is_empty() => {
                        format!("{}: {message}", waiting.reason)
                    }
                    _ => waiting.reason.clone(),
                };
                if let Some(code) = detail.last_exit_code.or(match status {
                    RuntimeStatus::Exited { code, .. } => *code,
                    _ => None,
                }) {
                    reason.push_str(&format!(" (last exit code {code})"));
                }
                if detail.last_oom_killed {
                    reason.push_str(" (OOM-killed)");
                }
                let next_retry_at = detail
                    .next_retry_at
                    .unwrap_or(self.now + self.shared.config.resync_interval);
                if !matches!(&before.phase, InstancePhase::Failed { reason: r, .. } if *r == reason)
                {
                    after.phase = InstancePhase::Failed {
                        next_retry_at,
                        reason: reason.clone(),
                    };
                    after.last_failure = Some(reason);
                    after.probe_failures = 0;
                }
            }
            (
                RuntimeStatus::Exited {
                    code, oom_killed, ..
                },
                None,
            ) => {
                let reason = match (code, oom_killed) {
                    (_, true) => "OOM-killed".to_owned(),
                    (Some(code), false) => format!("exited with code {code}"),
                    (None, false) => "exited".to_owned(),
                };
                if !matches!(&before.phase, InstancePhase::Failed { reason: r, .. } if *r == reason)
                {
                    after.phase = InstancePhase::Failed {
                        next_retry_at: self.now + policy.backoff.delay_for(detail.restarts.max(1)),
                        reason: reason.clone(),
                    };
                    after.last_failure = Some(reason);
                }
            }
            (RuntimeStatus::Created, None) => {
                if !matches!(before.phase, InstancePhase::Pending) {
                    after.phase = InstancePhase::Pending;
                }
            }
        }
        if after.phase.may_be_running() != before.phase.may_be_running()
            && !after.phase.may_be_running()
        {
            self.shared.forget_sessions(&obs.id);
        }
        self.set_state(st, &obs.id, before, after);
    }

    /// Stores a replica's new state, with an event when its phase changed.
    fn set_state(
        &mut self,
        st: &mut ServerState,
        id: &InstanceId,
        before: InstanceState,
        after: InstanceState,
    ) {
        if after == before {
            return;
        }
        if let Some(tracked) = st.instances.get_mut(id) {
            tracked.record.value.state = after.clone();
        }
        st.revision += 1;
        if after.phase.name() != before.phase.name() {
            self.phases_changed = true;
            let message = match &after.phase {
                InstancePhase::Failed { reason, .. } => format!(
                    "{} -> failed (restarts {}): {reason}",
                    before.phase.name(),
                    after.attempt
                ),
                other => format!("{} -> {}", before.phase.name(), other.name()),
            };
            st.push_event(
                self.shared,
                self.name,
                Some(id),
                LifecycleEventKind::InstancePhaseChanged,
                message,
            );
        }
    }

    /// Startup deadlines and probe verdicts that ask for a replica to be
    /// killed: the runtime replaces what is deleted. Starting again is the
    /// runtime's business, so start actions are not carried out here.
    async fn tick_owned(&mut self, st: &mut ServerState, policy: &InstancePolicy) {
        let ids: Vec<InstanceId> = st.instances.keys().cloned().collect();
        let mut kills = BTreeSet::new();
        for id in &ids {
            let mut queue = VecDeque::new();
            self.feed(st, id, &InstanceEvent::Tick, policy, &mut queue);
            for (id, action) in queue {
                if action == InstanceAction::Kill {
                    kills.insert(id);
                }
            }
        }
        for id in kills {
            self.shared.forget_sessions(&id);
            match self
                .shared
                .orchestrator
                .stop(&id, StopMode::Force, Duration::ZERO)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(error) => {
                    self.runtime_error(st, Some(&id), "replacing a failed replica", &error)
                }
            }
        }
    }

    /// Hands the runtime the library's readiness verdicts that it does not
    /// hold yet.
    async fn sync_gates(&mut self, st: &mut ServerState, owner: &dyn ReplicaOwner) {
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        for tracked in st.instances.values() {
            let id = &tracked.record.value.id;
            let ready = matches!(
                tracked.record.value.state.phase,
                InstancePhase::Ready { .. }
            );
            let Some(obs) = observed.get(id) else {
                continue;
            };
            let holds = obs.replica.as_ref().and_then(|d| d.ready_gate);
            if holds == Some(ready) || (holds.is_none() && !ready) {
                continue;
            }
            match owner.set_ready(id, ready).await {
                Ok(()) => {
                    let mut updated = obs.clone();
                    updated
                        .replica
                        .get_or_insert_with(Default::default)
                        .ready_gate = Some(ready);
                    self.shared.runtime.upsert(updated);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(error) => {
                    self.errors += 1;
                    tracing::warn!(instance = %id, %error, "setting the readiness gate failed; will retry");
                }
            }
        }
    }

    /// Deletes the server's workload, then (once the runtime shows none of
    /// its replicas) its records. The delete call is made once.
    async fn delete_owned(
        &mut self,
        st: &mut ServerState,
        owner: &dyn ReplicaOwner,
    ) -> PassOutcome {
        let requested = self
            .shared
            .applied(self.name)
            .is_some_and(|a| a == Applied::Deleted);
        if !requested {
            match owner.delete_workload(self.name).await {
                Ok(()) => self.shared.set_applied(self.name, Some(Applied::Deleted)),
                Err(error) => {
                    self.runtime_error(st, None, "deleting the workload", &error);
                    st.error_streak = st.error_streak.saturating_add(1);
                    return PassOutcome::WakeAt(Some(
                        self.now + super::reconcile::error_backoff(st.error_streak),
                    ));
                }
            }
        }
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        if !observed.is_empty() {
            // The runtime is still terminating replicas; their removal
            // events wake this server, the deadline is a fallback.
            return PassOutcome::WakeAt(Some(self.now + Duration::from_secs(1)));
        }
        self.shared.set_applied(self.name, None);
        let ids: Vec<InstanceId> = st.instances.keys().cloned().collect();
        for id in ids {
            self.shared.forget_sessions(&id);
        }
        st.instances.clear();
        st.next_probe.clear();
        self.forget_server(st).await
    }
}
