//! One reconcile pass for one server: observe, decide (through `state::`),
//! act through the ports, persist, publish.
//!
//! Layer: controller.
//!
//! A pass is level-triggered: it compares what the store says each instance
//! is doing with what the runtime shows, feeds the differences to the
//! instance machine as events, plans replicas, performs the resulting
//! actions, runs the probes that are due, and writes what changed. A pass in
//! steady state makes no runtime call and no store write.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use crate::error::{Error, ErrorKind};
use crate::ports::{
    InstanceId, InstanceObservation, InstanceSpec, ResolvedEnv, RuntimeStatus, StopMode, labels,
};
use crate::probe::{ProbeOutcome, ProbeTarget};
use crate::records::{self, INSTANCES, InstanceRecord, SERVERS, ServerRecord, Versioned};
use crate::spec::{EnvSource, Source};
use crate::state::{
    InstanceAction, InstanceEvent, InstancePhase, InstancePolicy, InstanceState, ReplicaAction,
    ReplicaView, derive_phase, plan_replicas,
};
use crate::status::{InstanceStatus, LifecycleEvent, LifecycleEventKind, ServerStatus};
use crate::time::Timestamp;

use super::runtime_view::ObservedMap;
use super::server::{ServerSlot, ServerState};
use super::shared::Shared;

/// What a pass leaves for the server's task.
pub(crate) enum PassOutcome {
    /// The server is deleted and all its workloads are gone.
    Deleted,
    /// Run again at this time (or only when kicked).
    WakeAt(Option<Timestamp>),
}

/// Runs one pass. Holds the server's lock throughout, so host calls and
/// passes on one server never interleave.
pub(crate) async fn pass(shared: &Arc<Shared>, slot: &ServerSlot) -> PassOutcome {
    if !shared.leadership.may_act() {
        // A standby acts on nothing; the leader's writes reach it on reload.
        return PassOutcome::WakeAt(None);
    }
    let mut st = slot.state.lock().await;
    let mut p = Pass {
        shared,
        slot,
        name: &slot.name,
        now: shared.clock.now(),
        errors: 0,
        again: false,
        phases_changed: false,
        hash: st.hash().clone(),
    };
    let outcome = p.run(&mut st).await;
    if let PassOutcome::WakeAt(wake) = outcome {
        *slot.wake.lock().unwrap_or_else(|e| e.into_inner()) = wake;
        settle_and_publish(shared, slot, &mut st, p.now);
    }
    outcome
}

/// Derives the server's phase and ready set from its instances (with the
/// events and cache invalidation their changes call for) and publishes the
/// status if anything it shows moved. Run after every pass, and by a pass
/// that has news before its probes (a runtime that owns replicas reports a
/// crash before a probe of the dead session would time out).
pub(super) fn settle_and_publish(
    shared: &Shared,
    slot: &ServerSlot,
    st: &mut ServerState,
    now: Timestamp,
) {
    let desired = st.record().map_or(0, |r| r.value.desired());
    let phase = derive_phase(
        desired,
        st.instances.values().map(|t| &t.record.value.state.phase),
    );
    if st.phase != Some(phase) {
        st.phase = Some(phase);
        st.push_event(
            shared,
            &slot.name,
            None,
            LifecycleEventKind::PhaseChanged,
            format!("server is {}", phase.name()),
        );
    }
    let ready_unchanged = st
        .instances
        .values()
        .filter(|t| matches!(t.record.value.state.phase, InstancePhase::Ready { .. }))
        .map(|t| &t.record.value.id)
        .eq(st.ready.iter());
    if !ready_unchanged {
        st.ready = st
            .instances
            .values()
            .filter(|t| matches!(t.record.value.state.phase, InstancePhase::Ready { .. }))
            .map(|t| t.record.value.id.clone())
            .collect();
        slot.ready_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.tools_cache.forget(&slot.name);
    }
    publish_if_changed(shared, slot, st, now);
}

/// Whether a pass over this server would find nothing to do: neither its
/// state nor the runtime view moved since its last pass (both are those of
/// the published status), no instance is marked for inspection, the last
/// pass had no failed call, no host stop is pending, and nothing is due
/// before `now`. A resync settles such a server without a pass.
pub(crate) fn is_settled(
    shared: &Shared,
    slot: &ServerSlot,
    st: &ServerState,
    now: Timestamp,
) -> bool {
    let Some(published) = st.published else {
        return false;
    };
    let live = st.record().is_some_and(|r| !r.value.deleting);
    let due_later = slot
        .wake
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|wake| wake > now);
    live && due_later
        && st.pending_stop.is_none()
        && st.error_streak == 0
        && published.0 == st.revision
        && shared.runtime.settled_generation(&slot.name) == Some(published.1)
}

/// Publishes the server's status unless nothing it shows has changed since
/// the last one (a steady pass builds no status).
pub(crate) fn publish_if_changed(
    shared: &Shared,
    slot: &ServerSlot,
    st: &mut ServerState,
    now: Timestamp,
) {
    let (observed, generation) = shared.runtime.snapshot(&slot.name);
    if st.published == Some((st.revision, generation)) {
        return;
    }
    publish(shared, slot, st, &observed, now);
    st.published = Some((st.revision, generation));
}

/// Publishes the server's status as its state shows it now. The events
/// since the last published status join the history that status carries
/// (moved, not copied: the published status is the only place the history
/// is held), keeping the latest `event_history`.
pub(crate) fn publish(
    shared: &Shared,
    slot: &ServerSlot,
    st: &mut ServerState,
    observed: &ObservedMap,
    now: Timestamp,
) {
    if st.record().is_none_or(|r| r.value.deleting) {
        // A server being deleted is gone from the host's point of view.
        st.events.clear();
        slot.snapshot.send_replace(None);
        return;
    }
    let mut status = status_of(&slot.name, st, observed, now);
    let since = std::mem::take(&mut st.events);
    let cap = shared.config.event_history.max(1);
    slot.snapshot.send_modify(|published| {
        let history = published
            .take()
            .map(|s| s.recent_events)
            .unwrap_or_default();
        status.recent_events = latest_events(history, since, cap);
        *published = Some(status);
    });
}

/// The status of the server now without publishing it: the published
/// history and the events since, the latest `event_history`.
pub(crate) fn status_now(shared: &Shared, slot: &ServerSlot, st: &ServerState) -> ServerStatus {
    let (observed, _) = shared.runtime.snapshot(&slot.name);
    let mut status = status_of(&slot.name, st, &observed, shared.clock.now());
    let history = slot
        .snapshot
        .borrow()
        .as_ref()
        .map(|s| s.recent_events.clone())
        .unwrap_or_default();
    status.recent_events = latest_events(
        history,
        st.events.clone(),
        shared.config.event_history.max(1),
    );
    status
}

/// `history` then `since`, the latest `cap` of them, in a vector of exactly
/// that size.
fn latest_events(
    mut history: Vec<LifecycleEvent>,
    since: Vec<LifecycleEvent>,
    cap: usize,
) -> Vec<LifecycleEvent> {
    if since.is_empty() && history.len() <= cap {
        return history;
    }
    let total = history.len() + since.len();
    let drop = total.saturating_sub(cap);
    let from_history = drop.min(history.len());
    let mut events = Vec::with_capacity(total - drop);
    events.extend(history.drain(from_history..));
    events.extend(since.into_iter().skip(drop - from_history));
    events
}

pub(super) struct Pass<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) slot: &'a ServerSlot,
    pub(super) name: &'a str,
    pub(super) now: Timestamp,
    pub(super) errors: u32,
    pub(super) again: bool,
    /// Whether an instance changed phase since this was last cleared.
    pub(super) phases_changed: bool,
    /// The workload hash of what new instances run (computed when the record changes).
    pub(super) hash: Arc<str>,
}

impl Pass<'_> {
    async fn run(&mut self, st: &mut ServerState) -> PassOutcome {
        let orchestrator = self.shared.orchestrator.clone();
        if let Some(owner) = orchestrator.replica_owner() {
            return self.run_owned(st, owner).await;
        }
        // A host's stop mode applies to this pass's removals alone.
        let stop_mode = st.pending_stop.take().unwrap_or(StopMode::Graceful);
        self.refresh_dirty().await;
        self.pin_before_first_start(st).await;
        let record = match st.record() {
            Some(r) if !r.value.deleting => r.value.clone(),
            _ => return self.remove_everything(st, stop_mode).await,
        };
        let policy = InstancePolicy {
            backoff: self.shared.config.backoff.clone(),
            failure_threshold: record.spec.health.failure_threshold,
            startup_timeout: record.spec.health.startup_timeout,
        };
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        self.adopt_unknown(st, &record, &observed).await;

        // Level-triggered events from what the runtime shows, then time.
        let mut queue: VecDeque<(InstanceId, InstanceAction)> = VecDeque::new();
        let ids: Vec<InstanceId> = st.instances.keys().cloned().collect();
        for id in &ids {
            let obs = observed.get(id);
            let phase = st
                .instances
                .get(id)
                .map(|t| t.record.value.state.phase.clone());
            let Some(phase) = phase else { continue };
            let gone_or_exited = match obs {
                None => Some((None, false)),
                Some(o) => match &o.status {
                    RuntimeStatus::Exited {
                        code, oom_killed, ..
                    } => Some((*code, *oom_killed)),
                    _ => None,
                },
            };
            let event = match (&phase, gone_or_exited) {
                (p, Some((code, oom_killed))) if p.may_be_running() => {
                    Some(InstanceEvent::Exited { code, oom_killed })
                }
                (InstancePhase::Stopping { .. }, Some(_)) => Some(InstanceEvent::StopCompleted),
                (InstancePhase::Pending, _) => Some(InstanceEvent::StartRequested),
                _ => None,
            };
            if let Some(event) = event {
                self.feed(st, id, &event, &policy, &mut queue);
            }
            self.feed(st, id, &InstanceEvent::Tick, &policy, &mut queue);
        }

        self.plan(st, &policy, stop_mode, &mut queue).await;
        self.perform(st, &record, &policy, queue).await;
        self.phases_changed = false;
        self.probe_due(st, &record, &policy).await;
        if self.phases_changed {
            // A rollout or scaling step waits for an instance to turn ready
            // (or stop being ready): take the step now, not at the next wake-up.
            let mut queue = VecDeque::new();
            self.plan(st, &policy, stop_mode, &mut queue).await;
            self.perform(st, &record, &policy, queue).await;
        }
        self.persist(st).await;

        if self.errors > 0 {
            st.error_streak = st.error_streak.saturating_add(1);
        } else {
            st.error_streak = 0;
        }
        PassOutcome::WakeAt(Some(self.next_wake(st, &policy)))
    }

    /// Inspects the instances the event stream said changed.
    pub(super) async fn refresh_dirty(&mut self) {
        for id in self.shared.runtime.take_dirty(self.name) {
            match self.shared.orchestrator.inspect(&id).await {
                Ok(obs) => self.shared.runtime.upsert(obs),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.shared.runtime.remove(self.name, &id);
                }
                Err(error) => {
                    self.errors += 1;
                    tracing::warn!(instance = %id, %error, "inspect failed; will retry");
                    self.shared.runtime.mark_dirty(self.name, &id);
                }
            }
        }
    }

    /// Feeds one event to one instance's machine and queues its actions.
    pub(super) fn feed(
        &mut self,
        st: &mut ServerState,
        id: &InstanceId,
        event: &InstanceEvent,
        policy: &InstancePolicy,
        queue: &mut VecDeque<(InstanceId, InstanceAction)>,
    ) {
        let Some(tracked) = st.instances.get_mut(id) else {
            return;
        };
        let before = tracked.record.value.state.clone();
        let (after, actions) = before.step(event, self.now, policy);
        if before.phase.may_be_running() && !after.phase.may_be_running() {
            self.shared.forget_sessions(id);
        }
        count(&mut st.counters, event, &before.phase, &after.phase);
        if after != before {
            // Starting, Ready and Unhealthy are observed, not decided: a host
            // that restarts re-derives them by probing. Only what a restart
            // must resume from (attempts, failures, stops) is written, unless
            // standbys show status from the store (leader election).
            if self.shared.leadership.election.is_some() || !after.resumes_like(&before) {
                tracked.dirty = true;
            }
            tracked.record.value.state = after.clone();
            st.revision += 1;
            if after.phase.name() != before.phase.name() {
                self.phases_changed = true;
                let message = match &after.phase {
                    InstancePhase::Failed {
                        next_retry_at,
                        reason,
                    } => format!(
                        "failed (attempt {}): {reason}; retrying at {next_retry_at}",
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
        for action in actions {
            queue.push_back((id.clone(), action));
        }
    }

    /// Plans replicas and turns the plan into instance events.
    async fn plan(
        &mut self,
        st: &mut ServerState,
        policy: &InstancePolicy,
        mode: StopMode,
        queue: &mut VecDeque<(InstanceId, InstanceAction)>,
    ) {
        let Some(record) = st.record().map(|r| r.value.clone()) else {
            return;
        };
        let hash = self.hash.clone();
        let plan = {
            let views: Vec<ReplicaView<'_>> = st
                .instances
                .values()
                .map(|t| ReplicaView {
                    id: &t.record.value.id,
                    ordinal: t.record.value.ordinal,
                    current: *t.record.value.spec_hash == *hash,
                    phase: &t.record.value.state.phase,
                })
                .collect();
            plan_replicas(record.desired(), &views)
        };
        for action in plan {
            match action {
                ReplicaAction::Remove(id) => {
                    self.feed(
                        st,
                        &id,
                        &InstanceEvent::StopRequested { mode },
                        policy,
                        queue,
                    );
                }
                ReplicaAction::Create(n) => {
                    let created = self.create_instances(st, &record, &hash, n).await;
                    for id in created {
                        self.feed(st, &id, &InstanceEvent::StartRequested, policy, queue);
                    }
                }
            }
        }
        if mode == StopMode::Force {
            // A forced stop also hurries removals already under way gracefully.
            let graceful: Vec<InstanceId> = st
                .instances
                .values()
                .filter(|t| {
                    matches!(
                        t.record.value.state.phase,
                        InstancePhase::Stopping {
                            mode: StopMode::Graceful
                        }
                    )
                })
                .map(|t| t.record.value.id.clone())
                .collect();
            for id in graceful {
                self.feed(
                    st,
                    &id,
                    &InstanceEvent::StopRequested { mode },
                    policy,
                    queue,
                );
            }
        }
    }

    /// Allocates ordinals, then writes the new instance records before
    /// anything is started, so a crash never leaves an unknown workload and a
    /// deposed leader (whose fenced write fails) starts nothing. Ordinals are
    /// durable through those records: a host that loads them resumes after
    /// the largest (see `ServerState::settle_ordinals`).
    async fn create_instances(
        &mut self,
        st: &mut ServerState,
        record: &ServerRecord,
        hash: &str,
        n: u32,
    ) -> Vec<InstanceId> {
        let Some(first) = st.record().map(|r| r.value.next_ordinal) else {
            return vec![];
        };
        if let Some(server) = st.record_mut() {
            Arc::make_mut(&mut server.value).next_ordinal = first + u64::from(n);
        }
        let mut created = Vec::new();
        for ordinal in first..first + u64::from(n) {
            let id = InstanceId::new(self.name, ordinal);
            let mut versioned = Versioned {
                value: InstanceRecord {
                    id: id.clone(),
                    server: self.name.to_owned(),
                    ordinal,
                    spec_hash: hash.to_owned(),
                    source: record.effective_source(),
                    state: InstanceState::new(),
                    created_at: self.now,
                },
                version: None,
            };
            match records::save(
                self.shared.store.as_ref(),
                INSTANCES,
                id.as_str(),
                &mut versioned,
                self.shared.leadership.fence().as_ref(),
            )
            .await
            {
                Ok(()) => {
                    st.track(
                        self.shared,
                        versioned,
                        LifecycleEventKind::InstanceCreated,
                        format!("created instance {id}"),
                    );
                    created.push(id);
                }
                Err(error) => {
                    self.store_error(st, "creating an instance record", &error);
                    break;
                }
            }
        }
        created
    }

    /// Carries out queued actions; results become events that may queue more.
    async fn perform(
        &mut self,
        st: &mut ServerState,
        record: &ServerRecord,
        policy: &InstancePolicy,
        mut queue: VecDeque<(InstanceId, InstanceAction)>,
    ) {
        let orchestrator = self.shared.orchestrator.clone();
        while let Some((id, action)) = queue.pop_front() {
            match action {
                InstanceAction::Start => {
                    let Some(tracked) = st.instances.get(&id) else {
                        continue;
                    };
                    let instance = tracked.record.value.clone();
                    let event = match self.instance_spec(record, &instance).await {
                        Err(reason) => InstanceEvent::StartFailed { reason },
                        Ok(spec) => {
                            let started = orchestrator.start(&spec).await;
                            // Even a failed start may have left a workload
                            // holding these values. Earlier starts' values
                            // are kept too: a runtime may restart the same
                            // workload with the environment it was created with.
                            if let Some(tracked) = st.instances.get_mut(&id) {
                                for value in spec.secret_values() {
                                    if !tracked.secrets.contains(&value) {
                                        tracked.secrets.push(value);
                                    }
                                }
                            }
                            match started {
                                Ok(obs) => {
                                    self.shared.runtime.upsert(obs);
                                    InstanceEvent::Started
                                }
                                Err(error) => {
                                    self.runtime_error(st, Some(&id), "starting", &error);
                                    InstanceEvent::StartFailed {
                                        reason: error.to_string(),
                                    }
                                }
                            }
                        }
                    };
                    self.feed(st, &id, &event, policy, &mut queue);
                }
                InstanceAction::Kill => {
                    self.shared.forget_sessions(&id);
                    match orchestrator
                        .stop(&id, StopMode::Force, Duration::ZERO)
                        .await
                    {
                        Ok(()) => self.shared.runtime.set_exited(self.name, &id),
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            self.shared.runtime.remove(self.name, &id);
                        }
                        Err(error) => self.runtime_error(st, Some(&id), "killing", &error),
                    }
                }
                InstanceAction::Stop(mode) => {
                    self.stop_and_remove(st, &id, mode, record.spec.stop_grace_period)
                        .await;
                }
                InstanceAction::Probe => {
                    st.next_probe.insert(id, self.now);
                }
                InstanceAction::WakeAt(_) => {
                    // Wake-ups are recomputed from state in `next_wake`.
                }
            }
        }
        // Instances on their way out (stopped, but a remove call failed) are retried.
        let stopping: Vec<(InstanceId, StopMode)> = st
            .instances
            .values()
            .filter_map(|t| match t.record.value.state.phase {
                // A retry keeps the mode its stop was asked with.
                InstancePhase::Stopping { mode } => Some((t.record.value.id.clone(), mode)),
                InstancePhase::Stopped => Some((t.record.value.id.clone(), StopMode::Graceful)),
                _ => None,
            })
            .collect();
        for (id, mode) in stopping {
            self.stop_and_remove(st, &id, mode, record.spec.stop_grace_period)
                .await;
        }
    }

    /// Stops, removes, and forgets an instance. On failure it stays Stopping
    /// and the next pass tries again.
    async fn stop_and_remove(
        &mut self,
        st: &mut ServerState,
        id: &InstanceId,
        mode: StopMode,
        grace: Duration,
    ) {
        let orchestrator = self.shared.orchestrator.clone();
        self.shared.forget_sessions(id);
        match orchestrator.stop(id, mode, grace).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                self.runtime_error(st, Some(id), "stopping", &error);
                return;
            }
        }
        if let Err(error) = orchestrator.remove(id).await {
            self.runtime_error(st, Some(id), "removing", &error);
            return;
        }
        self.shared.runtime.remove(self.name, id);
        if let Err(error) = records::remove(
            self.shared.store.as_ref(),
            INSTANCES,
            id.as_str(),
            self.shared.leadership.fence().as_ref(),
        )
        .await
        {
            self.store_error(st, "deleting an instance record", &error);
            // The workload is gone; the record is deleted on the next pass.
            if let Some(t) = st.instances.get_mut(id) {
                t.record.value.state.phase = InstancePhase::Stopping { mode };
                t.dirty = false;
            }
            return;
        }
        st.instances.remove(id);
        st.next_probe.remove(id);
        st.push_event(
            self.shared,
            self.name,
            Some(id),
            LifecycleEventKind::InstanceRemoved,
            format!("removed instance {id}"),
        );
    }

    /// Builds what the runtime needs, resolving secrets. The error names the
    /// secret reference and the variable, never a value.
    pub(super) async fn instance_spec(
        &self,
        record: &ServerRecord,
        instance: &InstanceRecord,
    ) -> Result<InstanceSpec, String> {
        let spec = &record.spec;
        let mut env = Vec::with_capacity(spec.env.len());
        for entry in &spec.env {
            let value = match &entry.source {
                EnvSource::Value(v) => ResolvedEnv::Plain(v.clone()),
                EnvSource::Secret(reference) => {
                    match self.shared.secrets.resolve(reference).await {
                        Ok(v) => ResolvedEnv::Secret(v),
                        Err(error) => {
                            return Err(format!(
                                "could not resolve {reference} for env {}: {error}",
                                entry.name
                            ));
                        }
                    }
                }
            };
            env.push((entry.name.clone(), value));
        }
        let mut all_labels = spec.labels.clone();
        all_labels.insert(
            labels::MANAGED_BY.into(),
            self.shared.config.manager_name.clone(),
        );
        all_labels.insert(labels::SERVER.into(), self.name.to_owned());
        all_labels.insert(labels::INSTANCE.into(), instance.id.to_string());
        all_labels.insert(labels::SPEC_HASH.into(), instance.spec_hash.clone());
        Ok(InstanceSpec {
            id: instance.id.clone(),
            server: self.name.to_owned(),
            spec_hash: instance.spec_hash.clone(),
            source: instance.source.clone(),
            transport: spec.transport.clone(),
            env,
            resources: spec.resources.clone(),
            labels: all_labels,
            stop_grace_period: spec.stop_grace_period,
        })
    }

    /// Probes every running instance whose probe is due, concurrently.
    pub(super) async fn probe_due(
        &mut self,
        st: &mut ServerState,
        record: &ServerRecord,
        policy: &InstancePolicy,
    ) {
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        let due: Vec<(InstanceId, bool, InstanceObservation)> = st
            .instances
            .values()
            .filter(|t| t.record.value.state.phase.may_be_running())
            .filter(|t| {
                st.next_probe
                    .get(&t.record.value.id)
                    .is_none_or(|at| *at <= self.now)
            })
            .filter_map(|t| {
                let readiness =
                    matches!(t.record.value.state.phase, InstancePhase::Starting { .. });
                observed
                    .get(&t.record.value.id)
                    .filter(|o| o.status == RuntimeStatus::Running)
                    .map(|o| (t.record.value.id.clone(), readiness, o.clone()))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let prober = self.shared.prober.clone();
        let orchestrator = self.shared.orchestrator.clone();
        let spec = &record.spec;
        let results = join_all(due.iter().map(|(_, readiness, obs)| {
            prober.probe(ProbeTarget {
                spec,
                instance: obs,
                readiness: *readiness,
                orchestrator: orchestrator.as_ref(),
            })
        }))
        .await;
        // Probes take time; results are dated when they arrive.
        self.now = self.shared.clock.now().max(self.now);
        let startup_interval = self
            .shared
            .config
            .startup_probe_interval
            .min(spec.health.interval);
        let mut queue = VecDeque::new();
        for ((id, readiness, _), outcome) in due.iter().zip(results) {
            let event = match outcome {
                ProbeOutcome::Passed => InstanceEvent::ProbePassed,
                ProbeOutcome::Failed(reason) => InstanceEvent::ProbeFailed { reason },
            };
            self.feed(st, id, &event, policy, &mut queue);
            let still_starting = st.instances.get(id).is_some_and(|t| {
                matches!(t.record.value.state.phase, InstancePhase::Starting { .. })
            });
            let wait = if *readiness && still_starting {
                startup_interval
            } else {
                spec.health.interval
            };
            st.next_probe.insert(id.clone(), self.now + wait);
        }
        if !queue.is_empty() {
            // A probe verdict (an unhealthy instance killed) asks for more work.
            self.perform(st, record, policy, queue).await;
            self.again = true;
        }
    }

    /// Adopts running workloads of this server that no record knows (a host
    /// that died between starting and recording), and removes exited ones.
    async fn adopt_unknown(
        &mut self,
        st: &mut ServerState,
        record: &ServerRecord,
        observed: &ObservedMap,
    ) {
        let unknown: Vec<&InstanceObservation> = observed
            .values()
            .filter(|o| !st.instances.contains_key(&o.id))
            .collect();
        for obs in unknown {
            if obs.status != RuntimeStatus::Running {
                match self.shared.orchestrator.remove(&obs.id).await {
                    Ok(()) => self.shared.runtime.remove(self.name, &obs.id),
                    Err(error) => self.runtime_error(
                        st,
                        Some(&obs.id),
                        "removing an unknown workload",
                        &error,
                    ),
                }
                continue;
            }
            let ordinal = obs
                .id
                .as_str()
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            let source = if *obs.spec_hash == *self.hash {
                record.effective_source()
            } else {
                record.spec.source.clone()
            };
            let mut versioned = Versioned {
                value: InstanceRecord {
                    id: obs.id.clone(),
                    server: self.name.to_owned(),
                    ordinal,
                    spec_hash: obs.spec_hash.clone(),
                    source,
                    state: InstanceState {
                        phase: InstancePhase::Starting { since: self.now },
                        ..InstanceState::new()
                    },
                    created_at: self.now,
                },
                version: None,
            };
            if let Err(error) = records::save(
                self.shared.store.as_ref(),
                INSTANCES,
                obs.id.as_str(),
                &mut versioned,
                self.shared.leadership.fence().as_ref(),
            )
            .await
            {
                self.store_error(st, "adopting a workload", &error);
                continue;
            }
            // Its record, written above, keeps the ordinal in use; the
            // record's next ordinal moves past it in memory.
            if ordinal != u64::MAX
                && let Some(server) = st.record_mut()
                && server.value.next_ordinal <= ordinal
            {
                Arc::make_mut(&mut server.value).next_ordinal = ordinal + 1;
            }
            st.next_probe.insert(obs.id.clone(), self.now);
            st.track(
                self.shared,
                versioned,
                LifecycleEventKind::Adopted,
                format!("adopted running workload {}", obs.id),
            );
        }
    }

    /// Removes every workload and record of a deleted server.
    async fn remove_everything(&mut self, st: &mut ServerState, mode: StopMode) -> PassOutcome {
        let (observed, _) = self.shared.runtime.snapshot(self.name);
        let ids: BTreeSet<InstanceId> = st
            .instances
            .keys()
            .cloned()
            .chain(observed.keys().cloned())
            .collect();
        let grace = st
            .record()
            .map_or(DEFAULT_STOP_GRACE, |r| r.value.spec.stop_grace_period);
        for id in ids {
            let Some(tracked) = st.instances.get(&id) else {
                // Known to the runtime only: no record to delete.
                match self.shared.orchestrator.remove(&id).await {
                    Ok(()) => self.shared.runtime.remove(self.name, &id),
                    Err(error) => self.runtime_error(st, Some(&id), "removing", &error),
                }
                continue;
            };
            // An instance already stopping keeps the mode its stop was asked with.
            let mode = match tracked.record.value.state.phase {
                InstancePhase::Stopping { mode: asked } => asked,
                _ => mode,
            };
            self.stop_and_remove(st, &id, mode, grace).await;
        }
        if self.errors == 0 && st.instances.is_empty() {
            self.forget_server(st).await
        } else {
            st.error_streak = st.error_streak.saturating_add(1);
            PassOutcome::WakeAt(Some(self.now + error_backoff(st.error_streak)))
        }
    }

    /// Deletes a server's records once its workloads are gone.
    pub(super) async fn forget_server(&mut self, st: &mut ServerState) -> PassOutcome {
        if st.record().is_some() {
            if let Err(error) = records::remove(
                self.shared.store.as_ref(),
                SERVERS,
                self.name,
                self.shared.leadership.fence().as_ref(),
            )
            .await
            {
                self.store_error(st, "deleting the server record", &error);
                st.error_streak = st.error_streak.saturating_add(1);
                return PassOutcome::WakeAt(Some(self.now + error_backoff(st.error_streak)));
            }
            st.set_record(None);
        }
        if st.update.version.is_some() {
            let _ = records::remove(
                self.shared.store.as_ref(),
                crate::records::freshness::FRESHNESS,
                self.name,
                self.shared.leadership.fence().as_ref(),
            )
            .await;
        }
        self.shared.runtime.forget_server(self.name);
        PassOutcome::Deleted
    }

    /// Writes every changed record. A failed write is kept dirty and retried.
    async fn persist(&mut self, st: &mut ServerState) {
        let store = self.shared.store.clone();
        let fence = self.shared.leadership.fence();
        let mut failures = Vec::new();
        for (_, tracked) in st.instances.iter_mut().filter(|(_, t)| t.dirty) {
            let key = tracked.record.value.id.to_string();
            match records::save(
                store.as_ref(),
                INSTANCES,
                &key,
                &mut tracked.record,
                fence.as_ref(),
            )
            .await
            {
                Ok(()) => tracked.dirty = false,
                Err(error) => failures.push(error),
            }
        }
        for error in failures {
            self.store_error(st, "saving an instance record", &error);
        }
    }

    pub(super) fn runtime_error(
        &mut self,
        st: &mut ServerState,
        id: Option<&InstanceId>,
        doing: &str,
        error: &Error,
    ) {
        self.errors += 1;
        tracing::warn!(instance = ?id.map(InstanceId::as_str), %error, "{doing} failed; will retry");
        st.push_event(
            self.shared,
            self.name,
            id,
            LifecycleEventKind::RuntimeError,
            format!("{doing} failed: {error}"),
        );
    }

    pub(super) fn store_error(&mut self, st: &mut ServerState, doing: &str, error: &Error) {
        self.errors += 1;
        tracing::warn!(%error, "{doing} failed; will retry");
        st.push_event(
            self.shared,
            self.name,
            None,
            LifecycleEventKind::RuntimeError,
            format!("{doing} failed: {error}"),
        );
    }

    /// The earliest time anything of this server needs attention.
    pub(super) fn next_wake(&self, st: &ServerState, policy: &InstancePolicy) -> Timestamp {
        let mut wake: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| wake = Some(wake.map_or(t, |w| w.min(t)));
        if self.again {
            consider(self.now);
        }
        if self.errors > 0 {
            consider(self.now + error_backoff(st.error_streak));
        }
        for tracked in st.instances.values() {
            let state = &tracked.record.value.state;
            let id = &tracked.record.value.id;
            match &state.phase {
                InstancePhase::Failed { next_retry_at, .. } => consider(*next_retry_at),
                InstancePhase::Starting { since } => {
                    consider(*since + policy.startup_timeout);
                }
                InstancePhase::Ready { since } if state.attempt > 0 => {
                    consider(*since + policy.backoff.reset_after);
                }
                InstancePhase::Pending
                | InstancePhase::Stopping { .. }
                | InstancePhase::Stopped => {
                    consider(self.now + error_backoff(st.error_streak.max(1)));
                }
                _ => {}
            }
            if state.phase.may_be_running()
                && let Some(at) = st.next_probe.get(id)
            {
                consider(*at);
            }
        }
        // Nothing scheduled: the next resync or event wakes the server.
        wake.unwrap_or(self.now + self.shared.config.resync_interval)
    }
}

/// The grace period for instances whose spec is gone (a record lost mid-deletion).
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Retry delay after passes with failed calls: 1 s doubling to 30 s.
pub(super) fn error_backoff(streak: u32) -> Duration {
    let shift = streak.saturating_sub(1).min(5);
    Duration::from_secs(1u64 << shift).min(Duration::from_secs(30))
}

/// Adds one step of an instance to its server's running totals.
fn count(
    counters: &mut crate::status::ServerCounters,
    event: &InstanceEvent,
    before: &InstancePhase,
    after: &InstancePhase,
) {
    if matches!(event, InstanceEvent::ProbeFailed { .. }) {
        counters.probe_failures += 1;
    }
    match (before, after) {
        (InstancePhase::Failed { .. }, InstancePhase::Failed { .. }) => {}
        (_, InstancePhase::Failed { .. }) => counters.failures += 1,
        (InstancePhase::Failed { .. }, InstancePhase::Pending | InstancePhase::Starting { .. }) => {
            counters.restarts += 1;
        }
        _ => {}
    }
}

/// Builds a server's status from its state, without its recent events
/// (`publish` and `status_now` add them).
fn status_of(name: &str, st: &ServerState, observed: &ObservedMap, now: Timestamp) -> ServerStatus {
    let hash: &str = st.hash();
    let record = st.record().map(|r| &*r.value);
    let desired = record.map_or(0, ServerRecord::desired);
    let phase = derive_phase(
        desired,
        st.instances.values().map(|t| &t.record.value.state.phase),
    );
    let (mut ready, mut starting, mut unhealthy, mut failed) = (0, 0, 0, 0);
    let mut digests = BTreeSet::new();
    let instances = st
        .instances
        .values()
        .map(|t| {
            let r = &t.record.value;
            let digest = observed.get(&r.id).and_then(|o| o.image_digest.clone());
            match &r.state.phase {
                InstancePhase::Ready { .. } => {
                    ready += 1;
                    if let Some(d) = &digest {
                        digests.insert(d.clone());
                    }
                }
                InstancePhase::Pending | InstancePhase::Starting { .. } => starting += 1,
                InstancePhase::Unhealthy { .. } => unhealthy += 1,
                InstancePhase::Failed { .. } => failed += 1,
                _ => {}
            }
            let reason = match &r.state.phase {
                InstancePhase::Failed { reason, .. } => Some(reason.clone()),
                _ => r.state.last_failure.clone(),
            };
            InstanceStatus {
                id: r.id.clone(),
                phase: r.state.phase.name().to_owned(),
                reason,
                attempt: r.state.attempt,
                next_retry_at: r.state.next_retry_at(),
                image_digest: digest,
                current: r.spec_hash == hash,
            }
        })
        .collect();
    let configured_source = match record.map(|r| &r.spec.source) {
        Some(Source::Image(image)) => image.clone(),
        Some(Source::Command(c)) => std::iter::once(c.program.as_str())
            .chain(c.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        Some(Source::Existing(workload)) => workload.clone(),
        None => String::new(),
    };
    ServerStatus {
        name: name.to_owned(),
        phase,
        desired,
        ready,
        starting,
        unhealthy,
        failed,
        stopped: record.is_some_and(|r| r.stopped),
        configured_source,
        rollout_image: record.and_then(|r| r.rollout_image.clone()),
        running_digests: digests.into_iter().collect(),
        update: crate::records::freshness::UpdateStatus::from(&st.update.value),
        instances,
        recent_events: Vec::new(),
        counters: st.counters,
        observed_at: now,
    }
}
