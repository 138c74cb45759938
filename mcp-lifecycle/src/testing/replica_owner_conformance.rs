//! The conformance suite for runtimes that own replicas (an [`Orchestrator`]
//! whose [`Orchestrator::replica_owner`] is `Some`, such as Kubernetes):
//! the counterpart of [`super::orchestrator_conformance`], whose `start`
//! such runtimes never receive.
//!
//! This module owns the checks and the [`ReplicaFixture`]. It speaks only
//! through the ports: [`ReplicaOwner`] to hand over workloads and verdicts,
//! [`Orchestrator`] to list, inspect, stop, read logs and receive events.
//! Each check uses its own server name with a random suffix (so suites can
//! share one real cluster) and deletes its workload at the end, also when it
//! fails. Waits are bounded by [`ReplicaFixture::timeout`]; nothing sleeps
//! for a fixed time except the short settle that shows an idempotent apply
//! made no new replica.
//!
//! ```no_run
//! # async fn example(orch: &dyn mcp_lifecycle::Orchestrator,
//! #                  fixture: mcp_lifecycle::testing::replica_owner_conformance::ReplicaFixture) {
//! mcp_lifecycle::testing::replica_owner_conformance::run_all(orch, &fixture).await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::error::{ErrorKind, Result};
use crate::ports::{
    InstanceId, InstanceObservation, InstanceSpec, Orchestrator, ReplicaOwner, RuntimeEventKind,
    RuntimeStatus, StopMode, WorkloadSpec, labels,
};

use super::orchestrator_conformance::Crasher;

/// Builds the pod template of server `name`; see [`ReplicaFixture::template`].
pub type TemplateBuilder = Arc<dyn Fn(&str) -> InstanceSpec + Send + Sync>;

/// What the suite needs to know about one replica-owning runtime.
#[derive(Clone)]
pub struct ReplicaFixture {
    /// The template of server `name`: something the runtime can really run
    /// and that keeps running until stopped (it need not speak MCP). Its
    /// `server` is `name` and its labels carry [`labels::SERVER`] = `name`
    /// and [`labels::MANAGED_BY`];
    /// [`conformance_spec`](super::orchestrator_conformance::conformance_spec)
    /// (without the instance label) builds one.
    pub template: TemplateBuilder,
    /// Crashes a running replica's process behind the library's back (the
    /// runtime then restarts it in place). Panics with a clear message if
    /// it cannot.
    pub crash: Crasher,
    /// How long to wait for the runtime to converge (replicas running,
    /// gone, restarted). Default: 120 s.
    pub timeout: Duration,
    /// The longest one call may take before the check fails. Default: 60 s.
    pub call_timeout: Duration,
}

impl ReplicaFixture {
    /// A fixture with the default timeouts.
    pub fn new(template: TemplateBuilder, crash: Crasher) -> Self {
        ReplicaFixture {
            template,
            crash,
            timeout: Duration::from_secs(120),
            call_timeout: Duration::from_secs(60),
        }
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for ReplicaFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaFixture")
            .field("timeout", &self.timeout)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Runs every check below against `orch`, one after another:
/// [`apply_is_idempotent`], [`scale_up_and_down`],
/// [`force_stop_replaces_the_replica`], [`crash_restarts_in_place`],
/// [`readiness_verdicts_are_recorded`], [`missing_is_not_found`],
/// [`delete_is_complete_and_idempotent`]. Panics at the first failing
/// check, naming it and the backend.
pub async fn run_all(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    apply_is_idempotent(orch, fixture).await;
    scale_up_and_down(orch, fixture).await;
    force_stop_replaces_the_replica(orch, fixture).await;
    crash_restarts_in_place(orch, fixture).await;
    readiness_verdicts_are_recorded(orch, fixture).await;
    missing_is_not_found(orch, fixture).await;
    delete_is_complete_and_idempotent(orch, fixture).await;
}

type Outcome = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// One check's context: the runtime, the fixture, its server, cleanup.
struct Scope<'a> {
    orch: &'a dyn Orchestrator,
    owner: &'a dyn ReplicaOwner,
    fixture: &'a ReplicaFixture,
    check: &'static str,
    server: String,
}

impl<'a> Scope<'a> {
    fn new(orch: &'a dyn Orchestrator, fixture: &'a ReplicaFixture, check: &'static str) -> Self {
        let Some(owner) = orch.replica_owner() else {
            panic!(
                "replica-owner conformance ({}): {check}: the backend owns no replicas \
                 (Orchestrator::replica_owner is None); use orchestrator_conformance",
                orch.backend()
            );
        };
        let suffix = super::orchestrator_conformance::unique_suffix();
        let short: String = check
            .chars()
            .filter(char::is_ascii_lowercase)
            .take(12)
            .collect();
        Scope {
            orch,
            owner,
            fixture,
            check,
            server: format!("rc-{short}-{suffix}"),
        }
    }

    fn workload(&self, replicas: u32) -> WorkloadSpec {
        let template = (self.fixture.template)(&self.server);
        WorkloadSpec { template, replicas }
    }

    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> std::result::Result<T, String> {
        match tokio::time::timeout(self.fixture.call_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{what} failed: {e}")),
            Err(_) => Err(format!(
                "{what} took longer than {:?}",
                self.fixture.call_timeout
            )),
        }
    }

    fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(labels::SERVER.to_owned(), self.server.clone())])
    }

    async fn replicas(&self) -> std::result::Result<Vec<InstanceObservation>, String> {
        let listed = self.call("list", self.orch.list(&self.selector())).await?;
        // Replicas on their way out (terminating) are not the workload's any more.
        Ok(listed
            .into_iter()
            .filter(|o| !o.replica.as_ref().is_some_and(|d| d.terminating))
            .collect())
    }

    /// Waits until `ok` holds for the server's replicas; returns them.
    async fn wait_for(
        &self,
        what: &str,
        ok: impl Fn(&[InstanceObservation]) -> bool,
    ) -> std::result::Result<Vec<InstanceObservation>, String> {
        let deadline = tokio::time::Instant::now() + self.fixture.timeout;
        loop {
            let now = self.replicas().await?;
            if ok(&now) {
                return Ok(now);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {:?} waiting for {what}; replicas: {}",
                    self.fixture.timeout,
                    describe(&now)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn running(&self, n: usize) -> std::result::Result<Vec<InstanceObservation>, String> {
        self.wait_for(&format!("{n} running replica(s)"), |r| {
            r.len() == n && r.iter().all(|o| o.status == RuntimeStatus::Running)
        })
        .await
    }

    async fn finish(self, outcome: Outcome) {
        let cleanup = self
            .call(
                "delete_workload (cleanup)",
                self.owner.delete_workload(&self.server),
            )
            .await;
        if let Err(reason) = outcome {
            panic!(
                "replica-owner conformance ({}): {}: {reason}",
                self.orch.backend(),
                self.check
            );
        }
        if let Err(reason) = cleanup {
            panic!(
                "replica-owner conformance ({}): {}: {reason}",
                self.orch.backend(),
                self.check
            );
        }
    }
}

fn describe(replicas: &[InstanceObservation]) -> String {
    if replicas.is_empty() {
        return "none".to_owned();
    }
    replicas
        .iter()
        .map(|o| format!("{} {:?}", o.id, o.status))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applying a workload runs its replicas, each reported with the server's
/// name and a `Started` event; applying the same workload again changes
/// nothing (same replicas, no new one).
pub async fn apply_is_idempotent(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "apply_is_idempotent");
    let outcome = apply_body(&s).await;
    s.finish(outcome).await;
}

async fn apply_body(s: &Scope<'_>) -> Outcome {
    let mut events = s.orch.events();
    let workload = s.workload(1);
    s.call("apply_workload", s.owner.apply_workload(&workload))
        .await?;
    let first = s.running(1).await?;
    ensure!(
        first[0].server == s.server,
        "the replica reports server {:?}, not {:?}",
        first[0].server,
        s.server
    );
    let started = tokio::time::timeout(s.fixture.timeout, async {
        while let Some(event) = events.next().await {
            if event.server == s.server && event.kind == RuntimeEventKind::Started {
                return true;
            }
        }
        false
    })
    .await;
    ensure!(
        started == Ok(true),
        "no Started event for the server's replica"
    );
    s.call("apply_workload (again)", s.owner.apply_workload(&workload))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = s.running(1).await?;
    ensure!(
        again[0].id == first[0].id,
        "applying the same workload again replaced replica {} with {}",
        first[0].id,
        again[0].id
    );
    Ok(())
}

/// Scaling changes the replica count alone: up to 2, down to 0 (with a
/// `Removed` event per replica), and back to 1.
pub async fn scale_up_and_down(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "scale_up_and_down");
    let outcome = scale_body(&s).await;
    s.finish(outcome).await;
}

async fn scale_body(s: &Scope<'_>) -> Outcome {
    s.call("apply_workload", s.owner.apply_workload(&s.workload(1)))
        .await?;
    s.running(1).await?;
    s.call("scale to 2", s.owner.scale(&s.server, 2)).await?;
    let two = s.running(2).await?;
    let mut events = s.orch.events();
    s.call("scale to 0", s.owner.scale(&s.server, 0)).await?;
    s.wait_for("no replicas", |r| r.is_empty()).await?;
    let mut removed = std::collections::BTreeSet::new();
    let all_removed = tokio::time::timeout(s.fixture.timeout, async {
        while let Some(event) = events.next().await {
            if event.server == s.server && event.kind == RuntimeEventKind::Removed {
                removed.insert(event.instance.clone());
                if two.iter().all(|o| removed.contains(&o.id)) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    ensure!(
        all_removed == Ok(true),
        "not every replica had a Removed event after scaling to 0"
    );
    s.call("scale to 1", s.owner.scale(&s.server, 1)).await?;
    s.running(1).await.map(|_| ())
}

/// A forced stop of one replica removes it, and the runtime replaces it
/// with a new one (a new id) while the workload wants it.
pub async fn force_stop_replaces_the_replica(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "force_stop_replaces_the_replica");
    let outcome = force_body(&s).await;
    s.finish(outcome).await;
}

async fn force_body(s: &Scope<'_>) -> Outcome {
    s.call("apply_workload", s.owner.apply_workload(&s.workload(1)))
        .await?;
    let old = s.running(1).await?.remove(0).id;
    s.call(
        "stop (force)",
        s.orch.stop(&old, StopMode::Force, Duration::ZERO),
    )
    .await?;
    s.wait_for("a new replica in place of the stopped one", |r| {
        r.len() == 1 && r[0].id != old && r[0].status == RuntimeStatus::Running
    })
    .await
    .map(|_| ())
}

/// A replica whose process crashes is restarted in place by the runtime:
/// the same id, running again, with its restart count grown.
pub async fn crash_restarts_in_place(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "crash_restarts_in_place");
    let outcome = crash_body(&s).await;
    s.finish(outcome).await;
}

async fn crash_body(s: &Scope<'_>) -> Outcome {
    s.call("apply_workload", s.owner.apply_workload(&s.workload(1)))
        .await?;
    let before = s.running(1).await?.remove(0);
    let restarts = before.replica.as_ref().map_or(0, |d| d.restarts);
    (s.fixture.crash)(before.id.clone()).await;
    let after = s
        .wait_for("the crashed replica restarted in place", |r| {
            r.len() == 1
                && r[0].id == before.id
                && r[0].status == RuntimeStatus::Running
                && r[0].replica.as_ref().is_some_and(|d| d.restarts > restarts)
        })
        .await?;
    let logs = s.call("logs", s.orch.logs(&after[0].id, 10)).await?;
    ensure!(
        logs.len() <= 10,
        "logs(tail 10) returned {} lines",
        logs.len()
    );
    Ok(())
}

/// `set_ready` is recorded on the replica and reported back: true, then
/// false.
pub async fn readiness_verdicts_are_recorded(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "readiness_verdicts_are_recorded");
    let outcome = ready_body(&s).await;
    s.finish(outcome).await;
}

async fn ready_body(s: &Scope<'_>) -> Outcome {
    s.call("apply_workload", s.owner.apply_workload(&s.workload(1)))
        .await?;
    let id = s.running(1).await?.remove(0).id;
    for verdict in [true, false] {
        s.call("set_ready", s.owner.set_ready(&id, verdict)).await?;
        s.wait_for(&format!("the readiness gate reported {verdict}"), |r| {
            r.iter().any(|o| {
                o.id == id && o.replica.as_ref().and_then(|d| d.ready_gate) == Some(verdict)
            })
        })
        .await?;
    }
    Ok(())
}

/// What does not exist is `NotFound`: inspecting a replica, scaling a
/// workload, setting a verdict on a replica.
pub async fn missing_is_not_found(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "missing_is_not_found");
    let outcome = missing_body(&s).await;
    s.finish(outcome).await;
}

async fn missing_body(s: &Scope<'_>) -> Outcome {
    let ghost = InstanceId::from_raw(format!("{}-ghost", s.server));
    let kind = |r: Result<()>| r.err().map(|e| e.kind());
    let inspected = tokio::time::timeout(s.fixture.call_timeout, s.orch.inspect(&ghost))
        .await
        .map_err(|_| "inspect took too long".to_owned())?;
    ensure!(
        inspected.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::NotFound),
        "inspect of a missing replica gave {:?}, not NotFound",
        inspected.map(|o| o.id)
    );
    let scaled = tokio::time::timeout(s.fixture.call_timeout, s.owner.scale(&s.server, 1))
        .await
        .map_err(|_| "scale took too long".to_owned())?;
    ensure!(
        kind(scaled) == Some(ErrorKind::NotFound),
        "scaling a missing workload did not fail with NotFound"
    );
    let verdict = tokio::time::timeout(s.fixture.call_timeout, s.owner.set_ready(&ghost, true))
        .await
        .map_err(|_| "set_ready took too long".to_owned())?;
    ensure!(
        kind(verdict) == Some(ErrorKind::NotFound),
        "set_ready on a missing replica did not fail with NotFound"
    );
    Ok(())
}

/// Deleting a workload removes every replica; deleting it again, or one
/// that never existed, succeeds.
pub async fn delete_is_complete_and_idempotent(orch: &dyn Orchestrator, fixture: &ReplicaFixture) {
    let s = Scope::new(orch, fixture, "delete_is_complete_and_idempotent");
    let outcome = delete_body(&s).await;
    s.finish(outcome).await;
}

async fn delete_body(s: &Scope<'_>) -> Outcome {
    s.call("apply_workload", s.owner.apply_workload(&s.workload(2)))
        .await?;
    s.running(2).await?;
    s.call("delete_workload", s.owner.delete_workload(&s.server))
        .await?;
    s.wait_for("no replicas after delete", |r| r.is_empty())
        .await?;
    s.call(
        "delete_workload (again)",
        s.owner.delete_workload(&s.server),
    )
    .await?;
    let never = format!("{}-never", s.server);
    s.call(
        "delete_workload (never applied)",
        s.owner.delete_workload(&never),
    )
    .await
}
