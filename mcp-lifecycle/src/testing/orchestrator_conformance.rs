//! The [`Orchestrator`] conformance suite: the behaviour every backend (local
//! processes, Docker, Kubernetes, the fake) must show, as async check
//! functions that panic with a clear message when a backend falls short.
//!
//! This module owns the checks and the [`ConformanceFixture`] describing what
//! differs per backend. It must not know any backend's internals: it speaks
//! only through the [`Orchestrator`] trait and the fixture. Each check uses
//! its own server names with a random suffix, so suites can run concurrently
//! against one shared real engine, and removes every instance it created,
//! also when it fails (unless the fixture itself panics).
//!
//! A backend's test runs the whole suite:
//!
//! ```no_run
//! # async fn example() {
//! use mcp_lifecycle::testing::fake_orchestrator::FakeOrchestrator;
//! use mcp_lifecycle::testing::orchestrator_conformance::{ConformanceFixture, run_all};
//!
//! let fake = FakeOrchestrator::new();
//! run_all(&fake, &ConformanceFixture::for_fake(&fake)).await;
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::error::{ErrorKind, Result};
use crate::ports::{
    InstanceId, InstanceObservation, InstanceSpec, Orchestrator, RuntimeEventKind, RuntimeStatus,
    StopMode, labels,
};
use crate::spec::{Resources, Source, Transport};

use super::fake_orchestrator::{FakeOrchestrator, fake_digest};

/// Builds the spec of instance `ordinal` of server `server`; see
/// [`ConformanceFixture::instance_spec`].
pub type SpecBuilder = Arc<dyn Fn(&str, u64) -> InstanceSpec + Send + Sync>;

/// Crashes an instance behind the library's back; see [`ConformanceFixture::crash`].
pub type Crasher = Arc<dyn Fn(InstanceId) -> BoxFuture<'static, ()> + Send + Sync>;

/// The value of [`labels::MANAGED_BY`] on specs built by [`conformance_spec`].
pub const CONFORMANCE_MANAGER: &str = "mcp-lifecycle-conformance";

/// The spec hash on specs built by [`conformance_spec`].
pub const CONFORMANCE_SPEC_HASH: &str = "c0f0a11ce5eed000";

/// A label key the checks add to specs to test selectors.
pub const CONFORMANCE_ROLE_LABEL: &str = "conformance.mcp-lifecycle.dev/role";

/// The image [`ConformanceFixture::for_fake`] runs (pushed into the fake's catalog).
pub const FAKE_CONFORMANCE_IMAGE: &str = "registry.invalid/mcp-lifecycle/conformance-server:1";

/// What the conformance suite needs to know about one backend.
///
/// Both functions are shared closures so a fixture is cheap to clone and can
/// hold handles to the backend (a Docker client, a fake) by value.
#[derive(Clone)]
pub struct ConformanceFixture {
    /// Builds the spec of instance `ordinal` of server `name`, something this
    /// backend can really run and that keeps running until stopped (a
    /// long-running stdio program or image; it need not speak MCP).
    ///
    /// Requirements, checked by the suite: `id` is
    /// `InstanceId::new(name, ordinal)`, `server` is `name`, and `labels`
    /// contain [`labels::SERVER`] = `name` and [`labels::SPEC_HASH`] =
    /// `spec_hash`. [`conformance_spec`] builds such a spec from a [`Source`].
    /// Its `stop_grace_period` is used for graceful stops; keep it short.
    pub instance_spec: SpecBuilder,
    /// Crashes a running instance behind the library's back, the way the
    /// runtime would see a real crash: the fake calls
    /// [`FakeOrchestrator::crash`], Docker `docker kill`, the local backend
    /// sends SIGKILL. It should panic with a clear message if it cannot.
    pub crash: Crasher,
    /// How long to wait for something the runtime reports asynchronously (an
    /// `Exited` event, an exited status after a crash). Default: 10 s.
    pub timeout: Duration,
    /// The longest any single orchestrator call may take before the check
    /// fails instead of hanging. Default: 60 s.
    pub call_timeout: Duration,
}

impl ConformanceFixture {
    /// A fixture from a spec builder and a crasher, with the default timeouts.
    pub fn new(instance_spec: SpecBuilder, crash: Crasher) -> Self {
        ConformanceFixture {
            instance_spec,
            crash,
            timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
        }
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`call_timeout`](Self::call_timeout).
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    /// The fixture for a [`FakeOrchestrator`]: specs run
    /// [`FAKE_CONFORMANCE_IMAGE`] (pushed into the fake's catalog now), and a
    /// crash is [`FakeOrchestrator::crash`] with exit code 137.
    pub fn for_fake(fake: &FakeOrchestrator) -> Self {
        fake.catalog()
            .push(FAKE_CONFORMANCE_IMAGE, fake_digest(FAKE_CONFORMANCE_IMAGE));
        let crasher = fake.clone();
        ConformanceFixture::new(
            Arc::new(|server: &str, ordinal: u64| {
                conformance_spec(
                    server,
                    ordinal,
                    Source::Image(FAKE_CONFORMANCE_IMAGE.into()),
                )
            }),
            Arc::new(move |id: InstanceId| {
                let fake = crasher.clone();
                Box::pin(async move {
                    if let Err(e) = fake.crash(&id, 137) {
                        panic!("fake conformance fixture could not crash {id}: {e}");
                    }
                })
            }),
        )
    }
}

impl fmt::Debug for ConformanceFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConformanceFixture")
            .field("timeout", &self.timeout)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// A spec that meets the fixture requirements: id `InstanceId::new(server,
/// ordinal)`, spec hash [`CONFORMANCE_SPEC_HASH`], stdio transport, no env,
/// default resources, a 2 s stop grace period, and the library's labels
/// ([`labels::MANAGED_BY`] = [`CONFORMANCE_MANAGER`], `SERVER`, `INSTANCE`,
/// `SPEC_HASH`). Adjust fields (transport, grace period) as a backend needs.
pub fn conformance_spec(server: &str, ordinal: u64, source: Source) -> InstanceSpec {
    let id = InstanceId::new(server, ordinal);
    let labels = BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            CONFORMANCE_MANAGER.to_owned(),
        ),
        (labels::SERVER.to_owned(), server.to_owned()),
        (labels::INSTANCE.to_owned(), id.as_str().to_owned()),
        (
            labels::SPEC_HASH.to_owned(),
            CONFORMANCE_SPEC_HASH.to_owned(),
        ),
    ]);
    InstanceSpec {
        id,
        server: server.to_owned(),
        spec_hash: CONFORMANCE_SPEC_HASH.to_owned(),
        source,
        transport: Transport::Stdio,
        env: Vec::new(),
        resources: Resources::default(),
        labels,
        stop_grace_period: Duration::from_secs(2),
    }
}

/// Runs every check below, one after another, against `orch`:
/// [`start_is_idempotent`], [`start_after_exit_restarts_in_place`],
/// [`stop_graceful_and_force`], [`remove_is_idempotent`],
/// [`missing_instance_is_not_found`], [`list_filters_by_labels`],
/// [`scale_through_start_and_remove`], [`crash_emits_exited_event`],
/// [`observations_carry_labels`]. Panics at the first failing check.
pub async fn run_all(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    start_is_idempotent(orch, fixture).await;
    start_after_exit_restarts_in_place(orch, fixture).await;
    stop_graceful_and_force(orch, fixture).await;
    remove_is_idempotent(orch, fixture).await;
    missing_instance_is_not_found(orch, fixture).await;
    list_filters_by_labels(orch, fixture).await;
    scale_through_start_and_remove(orch, fixture).await;
    crash_emits_exited_event(orch, fixture).await;
    observations_carry_labels(orch, fixture).await;
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

type Outcome = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Starting an instance twice leaves one running instance with that id; the
/// second start returns it running.
pub async fn start_is_idempotent(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "start_is_idempotent");
    let outcome = start_is_idempotent_body(&scope).await;
    scope.finish(outcome).await;
}

async fn start_is_idempotent_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("idem");
    let spec = s.spec(&server, 0)?;
    let first = s.start(&spec).await?;
    expect_running(&first, "the first start's observation")?;
    let second = s.start(&spec).await?;
    expect_running(&second, "the second start's observation")?;
    ensure!(
        second.id == spec.id,
        "the second start returned id {} instead of {}",
        second.id,
        spec.id
    );
    s.expect_ids(&server, &[&spec.id], "after starting one instance twice")
        .await?;
    let seen = s.inspect(&spec.id).await?;
    expect_running(&seen, "inspect after two starts")
}

/// An instance that exited (stopped, or crashed behind the library's back)
/// is started again in place: same id, running, still one instance.
pub async fn start_after_exit_restarts_in_place(
    orch: &dyn Orchestrator,
    fixture: &ConformanceFixture,
) {
    let scope = Scope::new(orch, fixture, "start_after_exit_restarts_in_place");
    let outcome = start_after_exit_body(&scope).await;
    scope.finish(outcome).await;
}

async fn start_after_exit_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("restart");
    let spec = s.spec(&server, 0)?;
    s.start(&spec).await?;

    s.stop(&spec.id, StopMode::Force, spec.stop_grace_period)
        .await?;
    expect_exited(&s.inspect(&spec.id).await?, "inspect after a forced stop")?;
    let restarted = s.start(&spec).await?;
    ensure!(
        restarted.id == spec.id,
        "start after a stop returned id {} instead of restarting {} in place",
        restarted.id,
        spec.id
    );
    expect_running(&restarted, "start after a stop")?;
    s.expect_ids(&server, &[&spec.id], "after restarting a stopped instance")
        .await?;

    s.crash(&spec.id).await;
    s.wait_exited(&spec.id).await?;
    let restarted = s.start(&spec).await?;
    ensure!(
        restarted.id == spec.id,
        "start after a crash returned id {} instead of restarting {} in place",
        restarted.id,
        spec.id
    );
    expect_running(&restarted, "start after a crash")?;
    expect_running(
        &s.inspect(&spec.id).await?,
        "inspect after restarting a crashed instance",
    )?;
    s.expect_ids(&server, &[&spec.id], "after restarting a crashed instance")
        .await
        .map(|_| ())
}

/// Graceful and forced stops leave the instance existing and exited; stopping
/// again (either mode) succeeds; stopping a missing instance is `NotFound`.
pub async fn stop_graceful_and_force(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "stop_graceful_and_force");
    let outcome = stop_body(&scope).await;
    scope.finish(outcome).await;
}

async fn stop_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("stop");
    let graceful = s.spec(&server, 0)?;
    let forced = s.spec(&server, 1)?;
    s.start(&graceful).await?;
    s.start(&forced).await?;

    let grace = graceful.stop_grace_period;
    s.stop(&graceful.id, StopMode::Graceful, grace).await?;
    expect_exited(
        &s.inspect(&graceful.id).await?,
        "inspect after a graceful stop",
    )?;
    s.stop(&graceful.id, StopMode::Graceful, grace)
        .await
        .map_err(|e| format!("a second graceful stop must succeed (idempotent): {e}"))?;
    s.stop(&graceful.id, StopMode::Force, grace)
        .await
        .map_err(|e| format!("a forced stop of a stopped instance must succeed: {e}"))?;
    expect_exited(
        &s.inspect(&graceful.id).await?,
        "inspect after stopping twice",
    )?;

    s.stop(&forced.id, StopMode::Force, grace).await?;
    expect_exited(&s.inspect(&forced.id).await?, "inspect after a forced stop")?;
    s.stop(&forced.id, StopMode::Force, grace)
        .await
        .map_err(|e| format!("a second forced stop must succeed (idempotent): {e}"))?;

    s.expect_ids(
        &server,
        &[&graceful.id, &forced.id],
        "after stopping (stop keeps instances)",
    )
    .await?;

    let missing = s.spec(&server, 99)?.id;
    for mode in [StopMode::Graceful, StopMode::Force] {
        let result = s
            .call(
                format!("stop({missing}, {mode:?}) of a missing instance"),
                s.orch.stop(&missing, mode, grace),
            )
            .await;
        expect_kind(
            result,
            ErrorKind::NotFound,
            &format!("stop({missing}, {mode:?})"),
        )?;
    }
    Ok(())
}

/// Removing works on running and stopped instances, twice in a row, and on an
/// instance that never existed; a removed instance is gone from `inspect` and
/// `list`.
pub async fn remove_is_idempotent(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "remove_is_idempotent");
    let outcome = remove_body(&scope).await;
    scope.finish(outcome).await;
}

async fn remove_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("remove");
    let running = s.spec(&server, 0)?;
    let stopped = s.spec(&server, 1)?;
    s.start(&running).await?;
    s.start(&stopped).await?;
    s.stop(&stopped.id, StopMode::Force, stopped.stop_grace_period)
        .await?;

    s.remove(&running.id).await?;
    s.remove(&running.id)
        .await
        .map_err(|e| format!("a second remove must succeed (idempotent): {e}"))?;
    let result = s
        .call(
            format!("inspect({}) after removal", running.id),
            s.orch.inspect(&running.id),
        )
        .await;
    expect_kind(
        result,
        ErrorKind::NotFound,
        &format!("inspect({}) after removal", running.id),
    )?;

    s.remove(&stopped.id)
        .await
        .map_err(|e| format!("removing a stopped instance must succeed: {e}"))?;
    s.expect_ids(&server, &[], "after removing everything")
        .await?;

    let never = s.spec(&server, 99)?.id;
    s.remove(&never)
        .await
        .map_err(|e| format!("removing an instance that never existed must succeed: {e}"))
}

/// `inspect`, `logs` and `stop` of an instance that never existed are
/// `NotFound`; `connect` is `NotFound` or `Unavailable`.
pub async fn missing_instance_is_not_found(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "missing_instance_is_not_found");
    let outcome = missing_body(&scope).await;
    scope.finish(outcome).await;
}

async fn missing_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("missing");
    let id = s.spec(&server, 0)?.id;
    let result = s.call(format!("inspect({id})"), s.orch.inspect(&id)).await;
    expect_kind(
        result,
        ErrorKind::NotFound,
        &format!("inspect({id}) of a missing instance"),
    )?;
    let result = s.call(format!("logs({id})"), s.orch.logs(&id, 10)).await;
    expect_kind(
        result,
        ErrorKind::NotFound,
        &format!("logs({id}) of a missing instance"),
    )?;
    let result = s
        .call(
            format!("stop({id})"),
            s.orch.stop(&id, StopMode::Force, Duration::from_secs(1)),
        )
        .await;
    expect_kind(
        result,
        ErrorKind::NotFound,
        &format!("stop({id}) of a missing instance"),
    )?;
    match s
        .call(format!("connect({id})"), s.orch.connect(&id))
        .await?
    {
        Ok(_) => Err(format!("connect({id}) of a missing instance succeeded")),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unavailable) => Ok(()),
        Err(e) => Err(format!(
            "connect({id}) of a missing instance must be NotFound or Unavailable, got {:?}: {e}",
            e.kind()
        )),
    }
}

/// `list` returns exactly the instances whose labels include every selector
/// pair: per server, narrowed by an extra label, nothing for a wrong spec hash
/// or an unknown label, and a superset of ours for an empty selector.
pub async fn list_filters_by_labels(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "list_filters_by_labels");
    let outcome = list_body(&scope).await;
    scope.finish(outcome).await;
}

async fn list_body(s: &Scope<'_>) -> Outcome {
    let a = s.server("lista");
    let b = s.server("listb");
    let mut a0 = s.spec(&a, 0)?;
    let mut a1 = s.spec(&a, 1)?;
    let b0 = s.spec(&b, 0)?;
    a0.labels
        .insert(CONFORMANCE_ROLE_LABEL.to_owned(), "other".to_owned());
    a1.labels
        .insert(CONFORMANCE_ROLE_LABEL.to_owned(), "picked".to_owned());
    for spec in [&a0, &a1, &b0] {
        s.start(spec).await?;
    }

    s.expect_ids(&a, &[&a0.id, &a1.id], "server A").await?;
    s.expect_ids(&b, &[&b0.id], "server B").await?;

    let picked = BTreeMap::from([
        (labels::SERVER.to_owned(), a.clone()),
        (CONFORMANCE_ROLE_LABEL.to_owned(), "picked".to_owned()),
    ]);
    expect_exact(
        &s.list(&picked).await?,
        &[&a1.id],
        "server A narrowed by role=picked",
    )?;

    let wrong_hash = BTreeMap::from([
        (labels::SERVER.to_owned(), a.clone()),
        (
            labels::SPEC_HASH.to_owned(),
            format!("not-{}", a0.spec_hash),
        ),
    ]);
    expect_exact(
        &s.list(&wrong_hash).await?,
        &[],
        "server A with a wrong spec hash",
    )?;

    let unknown = BTreeMap::from([
        (labels::SERVER.to_owned(), a.clone()),
        (
            "conformance.mcp-lifecycle.dev/absent".to_owned(),
            "x".to_owned(),
        ),
    ]);
    expect_exact(
        &s.list(&unknown).await?,
        &[],
        "server A with a label no instance has",
    )?;

    let all = s.list(&BTreeMap::new()).await?;
    let all_ids: BTreeSet<&InstanceId> = all.iter().map(|o| &o.id).collect();
    for id in [&a0.id, &a1.id, &b0.id] {
        ensure!(
            all_ids.contains(id),
            "list with an empty selector must include every instance, but {id} is missing"
        );
    }
    Ok(())
}

/// Scaling 1 → 3 → 0 through `start` and `remove` of instances: `list`
/// reflects the count after every step.
pub async fn scale_through_start_and_remove(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "scale_through_start_and_remove");
    let outcome = scale_body(&scope).await;
    scope.finish(outcome).await;
}

async fn scale_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("scale");
    let specs = [
        s.spec(&server, 0)?,
        s.spec(&server, 1)?,
        s.spec(&server, 2)?,
    ];
    let ids: Vec<&InstanceId> = specs.iter().map(|spec| &spec.id).collect();

    s.start(&specs[0]).await?;
    s.expect_ids(&server, &ids[..1], "scaled to 1").await?;
    for spec in &specs[1..] {
        s.start(spec).await?;
    }
    let listed = s.expect_ids(&server, &ids, "scaled to 3").await?;
    for obs in &listed {
        expect_running(obs, "an instance after scaling to 3")?;
    }
    for n in (0..3).rev() {
        s.remove(ids[n]).await?;
        s.expect_ids(&server, &ids[..n], &format!("scaled down to {n}"))
            .await?;
    }
    Ok(())
}

/// After subscribing to `events()`, crashing an instance behind the library's
/// back yields an `Exited` event for it (with its server) within the
/// fixture's timeout, and `inspect` then reports it exited.
pub async fn crash_emits_exited_event(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "crash_emits_exited_event");
    let outcome = crash_event_body(&scope).await;
    scope.finish(outcome).await;
}

async fn crash_event_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("events");
    let spec = s.spec(&server, 0)?;
    let mut events = s.orch.events();
    s.start(&spec).await?;
    s.crash(&spec.id).await;

    let timeout = s.fixture.timeout;
    let wait = async {
        while let Some(event) = events.next().await {
            if event.instance == spec.id && matches!(event.kind, RuntimeEventKind::Exited { .. }) {
                return Some(event);
            }
        }
        None
    };
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => {
            return Err(format!(
                "no Exited event for {} arrived within {timeout:?} after crashing it \
                 (subscribe with events() must take effect when it returns)",
                spec.id
            ));
        }
        Ok(None) => {
            return Err(format!(
                "the event stream ended before an Exited event for {} arrived",
                spec.id
            ));
        }
        Ok(Some(event)) => ensure!(
            event.server == server,
            "the Exited event for {} names server {:?}, expected {:?}",
            spec.id,
            event.server,
            server
        ),
    }
    s.wait_exited(&spec.id).await
}

/// Every observation (from `start`, `inspect` and `list`) carries the spec's
/// id, server and spec hash, and every label the spec asked for.
pub async fn observations_carry_labels(orch: &dyn Orchestrator, fixture: &ConformanceFixture) {
    let scope = Scope::new(orch, fixture, "observations_carry_labels");
    let outcome = labels_body(&scope).await;
    scope.finish(outcome).await;
}

async fn labels_body(s: &Scope<'_>) -> Outcome {
    let server = s.server("labels");
    let mut spec = s.spec(&server, 0)?;
    spec.labels
        .insert(CONFORMANCE_ROLE_LABEL.to_owned(), "labelled".to_owned());
    let started = s.start(&spec).await?;
    expect_carries(&started, &spec, "the start observation")?;
    let inspected = s.inspect(&spec.id).await?;
    expect_carries(&inspected, &spec, "the inspect observation")?;
    let listed = s
        .expect_ids(&server, &[&spec.id], "one labelled instance")
        .await?;
    for obs in &listed {
        expect_carries(obs, &spec, "the list observation")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One check's context: names it made up and instances it started, so
/// [`Scope::finish`] can remove them whatever happened.
struct Scope<'a> {
    orch: &'a dyn Orchestrator,
    fixture: &'a ConformanceFixture,
    check: &'static str,
    servers: Mutex<Vec<String>>,
    ids: Mutex<BTreeSet<InstanceId>>,
}

impl<'a> Scope<'a> {
    fn new(
        orch: &'a dyn Orchestrator,
        fixture: &'a ConformanceFixture,
        check: &'static str,
    ) -> Self {
        Scope {
            orch,
            fixture,
            check,
            servers: Mutex::new(Vec::new()),
            ids: Mutex::new(BTreeSet::new()),
        }
    }

    /// A server name unique across processes and runs: `cf-<role>-<8 hex>`.
    fn server(&self, role: &str) -> String {
        let name = format!("cf-{role}-{}", unique_suffix());
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        name
    }

    /// The fixture's spec, checked against the fixture requirements.
    fn spec(&self, server: &str, ordinal: u64) -> std::result::Result<InstanceSpec, String> {
        let spec = (self.fixture.instance_spec)(server, ordinal);
        let expected_id = InstanceId::new(server, ordinal);
        ensure!(
            spec.id == expected_id,
            "fixture bug: instance_spec({server:?}, {ordinal}) has id {}, expected {expected_id}",
            spec.id
        );
        ensure!(
            spec.server == server,
            "fixture bug: instance_spec({server:?}, {ordinal}) has server {:?}",
            spec.server
        );
        ensure!(
            spec.labels.get(labels::SERVER).map(String::as_str) == Some(server),
            "fixture bug: instance_spec({server:?}, {ordinal}) lacks label {}={server}",
            labels::SERVER
        );
        ensure!(
            spec.labels.get(labels::SPEC_HASH) == Some(&spec.spec_hash),
            "fixture bug: instance_spec({server:?}, {ordinal}) lacks label {}={}",
            labels::SPEC_HASH,
            spec.spec_hash
        );
        Ok(spec)
    }

    /// Runs one orchestrator call under the fixture's call timeout.
    async fn call<T>(
        &self,
        what: String,
        fut: impl Future<Output = Result<T>>,
    ) -> std::result::Result<Result<T>, String> {
        let limit = self.fixture.call_timeout;
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| format!("{what} did not return within {limit:?}"))
    }

    async fn start(&self, spec: &InstanceSpec) -> std::result::Result<InstanceObservation, String> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.id.clone());
        let obs = self
            .call(format!("start({})", spec.id), self.orch.start(spec))
            .await?
            .map_err(|e| format!("start({}) failed: {e}", spec.id))?;
        ensure!(
            obs.id == spec.id,
            "start({}) returned an observation of {}",
            spec.id,
            obs.id
        );
        Ok(obs)
    }

    async fn stop(
        &self,
        id: &InstanceId,
        mode: StopMode,
        grace: Duration,
    ) -> std::result::Result<(), String> {
        self.call(
            format!("stop({id}, {mode:?})"),
            self.orch.stop(id, mode, grace),
        )
        .await?
        .map_err(|e| format!("stop({id}, {mode:?}) failed: {e}"))
    }

    async fn remove(&self, id: &InstanceId) -> std::result::Result<(), String> {
        self.call(format!("remove({id})"), self.orch.remove(id))
            .await?
            .map_err(|e| format!("remove({id}) failed: {e}"))
    }

    async fn inspect(&self, id: &InstanceId) -> std::result::Result<InstanceObservation, String> {
        let obs = self
            .call(format!("inspect({id})"), self.orch.inspect(id))
            .await?
            .map_err(|e| format!("inspect({id}) failed: {e}"))?;
        ensure!(
            &obs.id == id,
            "inspect({id}) returned an observation of {}",
            obs.id
        );
        Ok(obs)
    }

    async fn list(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> std::result::Result<Vec<InstanceObservation>, String> {
        self.call(format!("list({selector:?})"), self.orch.list(selector))
            .await?
            .map_err(|e| format!("list({selector:?}) failed: {e}"))
    }

    /// Lists the server's instances and checks they are exactly `expected`.
    async fn expect_ids(
        &self,
        server: &str,
        expected: &[&InstanceId],
        when: &str,
    ) -> std::result::Result<Vec<InstanceObservation>, String> {
        let selector = BTreeMap::from([(labels::SERVER.to_owned(), server.to_owned())]);
        let listed = self.list(&selector).await?;
        expect_exact(&listed, expected, when)?;
        for obs in &listed {
            ensure!(
                obs.server == server,
                "{when}: list by {}={server} returned {} of server {:?}",
                labels::SERVER,
                obs.id,
                obs.server
            );
        }
        Ok(listed)
    }

    async fn crash(&self, id: &InstanceId) {
        (self.fixture.crash)(id.clone()).await;
    }

    /// Polls `inspect` until the instance has exited, up to the fixture's timeout.
    async fn wait_exited(&self, id: &InstanceId) -> std::result::Result<(), String> {
        let timeout = self.fixture.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let obs = self.inspect(id).await?;
            if matches!(obs.status, RuntimeStatus::Exited { .. }) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{id} still reports {:?} {timeout:?} after being crashed",
                    obs.status
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes everything the check created (recorded ids and anything
    /// labelled with its servers), then panics if the check or the cleanup failed.
    async fn finish(self, outcome: Outcome) {
        let servers = std::mem::take(&mut *self.servers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cleanup_errors = Vec::new();
        for server in &servers {
            let selector = BTreeMap::from([(labels::SERVER.to_owned(), server.clone())]);
            match self.list(&selector).await {
                Ok(found) => ids.extend(found.into_iter().map(|o| o.id)),
                Err(e) => cleanup_errors.push(e),
            }
        }
        for id in &ids {
            if let Err(e) = self.remove(id).await {
                cleanup_errors.push(e);
            }
        }
        let backend = self.orch.backend();
        let check = self.check;
        match (outcome, cleanup_errors.is_empty()) {
            (Ok(()), true) => {}
            (Ok(()), false) => panic!(
                "orchestrator conformance [{backend}] {check}: passed, but cleanup failed: {}",
                cleanup_errors.join("; ")
            ),
            (Err(message), true) => {
                panic!("orchestrator conformance [{backend}] {check}: {message}")
            }
            (Err(message), false) => panic!(
                "orchestrator conformance [{backend}] {check}: {message} (cleanup also failed: {})",
                cleanup_errors.join("; ")
            ),
        }
    }
}

/// 8 hex characters that differ between calls, processes and runs.
pub(super) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // RandomState is seeded randomly per process, so this is unpredictable
    // across processes even at the same instant.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

fn expect_running(obs: &InstanceObservation, what: &str) -> Outcome {
    ensure!(
        obs.status == RuntimeStatus::Running,
        "{what}: {} should be Running, is {:?}",
        obs.id,
        obs.status
    );
    Ok(())
}

fn expect_exited(obs: &InstanceObservation, what: &str) -> Outcome {
    ensure!(
        matches!(obs.status, RuntimeStatus::Exited { .. }),
        "{what}: {} should be Exited, is {:?}",
        obs.id,
        obs.status
    );
    Ok(())
}

fn expect_kind<T>(
    result: std::result::Result<Result<T>, String>,
    kind: ErrorKind,
    what: &str,
) -> Outcome {
    match result? {
        Ok(_) => Err(format!("{what} succeeded, expected a {kind:?} error")),
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(format!(
            "{what} must fail with {kind:?}, got {:?}: {e}",
            e.kind()
        )),
    }
}

fn expect_exact(listed: &[InstanceObservation], expected: &[&InstanceId], when: &str) -> Outcome {
    let got: Vec<&InstanceId> = listed.iter().map(|o| &o.id).collect();
    let got_set: BTreeSet<&InstanceId> = got.iter().copied().collect();
    let want: BTreeSet<&InstanceId> = expected.iter().copied().collect();
    ensure!(
        got.len() == got_set.len() && got_set == want,
        "{when}: list returned {got:?}, expected exactly {want:?}"
    );
    Ok(())
}

fn expect_carries(obs: &InstanceObservation, spec: &InstanceSpec, what: &str) -> Outcome {
    ensure!(
        obs.id == spec.id,
        "{what}: id {} should be {}",
        obs.id,
        spec.id
    );
    ensure!(
        obs.server == spec.server,
        "{what} of {}: server {:?} should be {:?}",
        obs.id,
        obs.server,
        spec.server
    );
    ensure!(
        obs.spec_hash == spec.spec_hash,
        "{what} of {}: spec hash {:?} should be {:?}",
        obs.id,
        obs.spec_hash,
        spec.spec_hash
    );
    for (key, value) in &spec.labels {
        ensure!(
            obs.labels.get(key) == Some(value),
            "{what} of {}: label {key} should be {value:?}, is {:?}",
            obs.id,
            obs.labels.get(key)
        );
    }
    Ok(())
}
