//! The lifecycle of one instance: Pending → Starting → Ready ⇄ Unhealthy,
//! any → Failed (retried in place with backoff), Stopping → Stopped.
//!
//! Rules this machine enforces, whatever order events arrive in:
//! - Ready is entered only on a passing readiness probe ([`InstanceEvent::ProbePassed`]).
//! - A failure increments `attempt` and sets `next_retry_at = now + backoff(attempt)`;
//!   a failed instance is retried in place (same id) only once that time has
//!   passed, and a start request while it waits changes nothing, so the count
//!   escalates instead of resetting.
//! - A run that stayed ready for the policy's `reset_after` resets `attempt`.
//!
//! No I/O and no clock reads: `now` is an argument.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backoff::BackoffPolicy;
use crate::ports::StopMode;
use crate::time::Timestamp;

/// The knobs of the instance machine, from the spec's health section and the
/// host's backoff policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePolicy {
    /// Restart backoff.
    pub backoff: BackoffPolicy,
    /// Consecutive failed liveness probes that make a ready instance unhealthy;
    /// twice as many restart it.
    pub failure_threshold: u32,
    /// How long a started instance may take to pass its readiness probe.
    pub startup_timeout: Duration,
}

impl Default for InstancePolicy {
    fn default() -> Self {
        InstancePolicy {
            backoff: BackoffPolicy::default(),
            failure_threshold: 3,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum InstancePhase {
    /// A start is due or in flight.
    Pending,
    /// The runtime started it; its readiness probe has not passed yet.
    Starting {
        /// When the runtime started it.
        since: Timestamp,
    },
    /// Its readiness probe passed and liveness probes keep passing.
    Ready {
        /// When it became ready.
        since: Timestamp,
    },
    /// It was ready, but `failure_threshold` liveness probes in a row failed.
    Unhealthy {
        /// When it became unhealthy.
        since: Timestamp,
    },
    /// It failed; it will be retried in place at `next_retry_at`.
    Failed {
        /// When the retry is due.
        next_retry_at: Timestamp,
        /// Why it failed.
        reason: String,
    },
    /// A stop was requested.
    Stopping {
        /// How.
        mode: StopMode,
    },
    /// It was stopped on request.
    Stopped,
}

impl InstancePhase {
    /// A short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            InstancePhase::Pending => "pending",
            InstancePhase::Starting { .. } => "starting",
            InstancePhase::Ready { .. } => "ready",
            InstancePhase::Unhealthy { .. } => "unhealthy",
            InstancePhase::Failed { .. } => "failed",
            InstancePhase::Stopping { .. } => "stopping",
            InstancePhase::Stopped => "stopped",
        }
    }

    /// Whether it counts against the server's replica budget: everything but
    /// Stopping and Stopped. Failed instances waiting for their retry count.
    pub fn is_live(&self) -> bool {
        !matches!(
            self,
            InstancePhase::Stopping { .. } | InstancePhase::Stopped
        )
    }

    /// Whether the process may be running (a probe or stop makes sense).
    pub fn may_be_running(&self) -> bool {
        matches!(
            self,
            InstancePhase::Starting { .. }
                | InstancePhase::Ready { .. }
                | InstancePhase::Unhealthy { .. }
        )
    }
}

/// The state of one instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// Where it is.
    #[serde(flatten)]
    pub phase: InstancePhase,
    /// Consecutive failed attempts; reset by a stable run or a fresh start
    /// after a stop.
    pub attempt: u32,
    /// Consecutive failed probes in the current run.
    pub probe_failures: u32,
    /// The most recent failure, kept after recovery for status.
    pub last_failure: Option<String>,
}

impl Default for InstanceState {
    fn default() -> Self {
        Self::new()
    }
}

/// What happened to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceEvent {
    /// Someone wants it running (a new instance, or a start after a stop).
    StartRequested,
    /// The runtime started the process.
    Started,
    /// Starting failed before the process ran (runtime error, unresolved
    /// secret, missing image). `reason` names references, never values.
    StartFailed {
        /// Why.
        reason: String,
    },
    /// A readiness or liveness probe passed.
    ProbePassed,
    /// A probe failed (JSON-RPC error, `isError`, transport error, timeout).
    ProbeFailed {
        /// Why.
        reason: String,
    },
    /// The process exited.
    Exited {
        /// Exit code, if known.
        code: Option<i32>,
        /// Killed for memory.
        oom_killed: bool,
    },
    /// Time passed; due retries and startup deadlines are acted on.
    Tick,
    /// Someone wants it stopped.
    StopRequested {
        /// How.
        mode: StopMode,
    },
    /// The runtime confirmed the stop.
    StopCompleted,
}

/// What the controller must do for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceAction {
    /// Call `Orchestrator::start` (create, or restart in place).
    Start,
    /// The process was judged failed but may still run: stop it (force) so the
    /// retry restarts it cleanly.
    Kill,
    /// Call `Orchestrator::stop` with this mode.
    Stop(StopMode),
    /// Probe it now and keep probing.
    Probe,
    /// Feed a [`InstanceEvent::Tick`] at this time.
    WakeAt(Timestamp),
}

impl InstanceState {
    /// A new instance, pending its first start.
    pub fn new() -> Self {
        InstanceState {
            phase: InstancePhase::Pending,
            attempt: 0,
            probe_failures: 0,
            last_failure: None,
        }
    }

    /// Whether a host that restarts from `other` would resume this instance
    /// the same way: both are pending, starting, ready or unhealthy (phases a
    /// restarted host re-derives by starting idempotently and probing) with
    /// the same attempt count and last failure. Failed, stopping and stopped
    /// states, and every attempt or failure change, are never alike.
    pub fn resumes_like(&self, other: &InstanceState) -> bool {
        let observed = |phase: &InstancePhase| {
            matches!(phase, InstancePhase::Pending) || phase.may_be_running()
        };
        observed(&self.phase)
            && observed(&other.phase)
            && self.attempt == other.attempt
            && self.last_failure == other.last_failure
    }

    /// When a failed instance's retry is due.
    pub fn next_retry_at(&self) -> Option<Timestamp> {
        match &self.phase {
            InstancePhase::Failed { next_retry_at, .. } => Some(*next_retry_at),
            _ => None,
        }
    }

    /// Checks the invariants that hold in every reachable state; `Err` names
    /// the broken one. Used by property tests and debug assertions.
    pub fn check_invariants(&self, policy: &InstancePolicy) -> Result<(), String> {
        match &self.phase {
            InstancePhase::Failed { .. } if self.attempt == 0 => {
                Err("failed with attempt 0".into())
            }
            InstancePhase::Ready { .. } if self.probe_failures >= policy.failure_threshold => {
                Err("ready with probe failures at the threshold".into())
            }
            InstancePhase::Pending | InstancePhase::Stopped if self.probe_failures != 0 => {
                Err("probe failures carried outside a run".into())
            }
            _ => Ok(()),
        }
    }

    /// Applies `event` at `now` and returns the next state and what to do.
    pub fn step(
        &self,
        event: &InstanceEvent,
        now: Timestamp,
        policy: &InstancePolicy,
    ) -> (InstanceState, Vec<InstanceAction>) {
        use InstanceEvent as E;
        use InstancePhase as P;
        let mut next = self.clone();
        let mut actions = Vec::new();
        match (&self.phase, event) {
            (_, E::StopRequested { mode }) => {
                if !matches!(self.phase, P::Stopped | P::Stopping { .. }) {
                    next.phase = P::Stopping { mode: *mode };
                    next.probe_failures = 0;
                    actions.push(InstanceAction::Stop(*mode));
                } else if let (P::Stopping { .. }, StopMode::Force) = (&self.phase, mode) {
                    // Escalate a graceful stop in progress.
                    next.phase = P::Stopping { mode: *mode };
                    actions.push(InstanceAction::Stop(*mode));
                }
            }
            (P::Stopping { .. }, E::StopCompleted | E::Exited { .. }) => {
                next.phase = P::Stopped;
                next.probe_failures = 0;
            }
            (P::Stopping { .. }, _) => {}

            (P::Stopped, E::StartRequested) => {
                // A fresh start after a deliberate stop: the operator's intent
                // clears the failure count.
                next.phase = P::Pending;
                next.attempt = 0;
                actions.push(InstanceAction::Start);
            }
            (P::Stopped, _) => {}

            (P::Pending, E::StartRequested) => actions.push(InstanceAction::Start),
            (P::Pending, E::Started) => {
                next.phase = P::Starting { since: now };
                next.probe_failures = 0;
                actions.push(InstanceAction::Probe);
                actions.push(InstanceAction::WakeAt(now + policy.startup_timeout));
            }
            (P::Pending, E::StartFailed { reason }) => {
                next.fail(now, format!("start failed: {reason}"), policy, &mut actions);
            }
            // An exit or probe result from the previous run; the start in
            // flight decides what happens next.
            (P::Pending, _) => {}

            (P::Starting { .. }, E::ProbePassed) => {
                next.phase = P::Ready { since: now };
                next.probe_failures = 0;
            }
            (P::Starting { .. }, E::ProbeFailed { reason }) => {
                // Expected while the server boots; the startup deadline decides.
                next.last_failure = Some(format!("not ready yet: {reason}"));
            }
            (P::Starting { since }, E::Tick) => {
                if now.saturating_since(*since) >= policy.startup_timeout {
                    let why = match &self.last_failure {
                        Some(last) => format!(
                            "not ready within the {:?} startup timeout ({last})",
                            policy.startup_timeout
                        ),
                        None => format!(
                            "not ready within the {:?} startup timeout",
                            policy.startup_timeout
                        ),
                    };
                    actions.push(InstanceAction::Kill);
                    next.fail(now, why, policy, &mut actions);
                } else {
                    actions.push(InstanceAction::WakeAt(*since + policy.startup_timeout));
                }
            }

            (P::Ready { since }, E::ProbePassed) => {
                next.probe_failures = 0;
                next.reset_if_stable(*since, now, policy);
            }
            (P::Ready { since }, E::Tick) => next.reset_if_stable(*since, now, policy),
            (P::Ready { .. }, E::ProbeFailed { reason }) => {
                next.probe_failures += 1;
                next.last_failure = Some(reason.clone());
                if next.probe_failures >= policy.failure_threshold {
                    next.phase = P::Unhealthy { since: now };
                }
            }

            (P::Unhealthy { .. }, E::ProbePassed) => {
                next.phase = P::Ready { since: now };
                next.probe_failures = 0;
            }
            (P::Unhealthy { .. }, E::ProbeFailed { reason }) => {
                next.probe_failures += 1;
                next.last_failure = Some(reason.clone());
                if next.probe_failures >= policy.failure_threshold.saturating_mul(2) {
                    actions.push(InstanceAction::Kill);
                    next.fail(
                        now,
                        format!(
                            "unhealthy: {} probes failed in a row: {reason}",
                            next.probe_failures
                        ),
                        policy,
                        &mut actions,
                    );
                }
            }

            (
                P::Starting { .. } | P::Ready { .. } | P::Unhealthy { .. },
                E::Exited { code, oom_killed },
            ) => {
                if let P::Ready { since } | P::Unhealthy { since } = &self.phase {
                    next.reset_if_stable(*since, now, policy);
                }
                let why = match (oom_killed, code) {
                    (true, _) => "killed for exceeding its memory limit (OOM)".to_owned(),
                    (false, Some(code)) => format!("exited with code {code}"),
                    (false, None) => "exited".to_owned(),
                };
                next.fail(now, why, policy, &mut actions);
            }
            (P::Starting { .. } | P::Ready { .. } | P::Unhealthy { .. }, _) => {}

            (P::Failed { next_retry_at, .. }, E::Tick) => {
                if now >= *next_retry_at {
                    next.phase = P::Pending;
                    actions.push(InstanceAction::Start);
                } else {
                    actions.push(InstanceAction::WakeAt(*next_retry_at));
                }
            }
            // Waiting out the backoff: a start request, a late exit or probe
            // result changes nothing, so the count is never reset by a
            // replacement.
            (P::Failed { .. }, _) => {}
        }
        (next, actions)
    }

    fn fail(
        &mut self,
        now: Timestamp,
        reason: String,
        policy: &InstancePolicy,
        actions: &mut Vec<InstanceAction>,
    ) {
        self.attempt = self.attempt.saturating_add(1);
        let next_retry_at = now + policy.backoff.delay_for(self.attempt);
        self.phase = InstancePhase::Failed {
            next_retry_at,
            reason: reason.clone(),
        };
        self.probe_failures = 0;
        self.last_failure = Some(reason);
        actions.push(InstanceAction::WakeAt(next_retry_at));
    }

    fn reset_if_stable(&mut self, ready_since: Timestamp, now: Timestamp, policy: &InstancePolicy) {
        if self.attempt > 0 && now.saturating_since(ready_since) >= policy.backoff.reset_after {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
