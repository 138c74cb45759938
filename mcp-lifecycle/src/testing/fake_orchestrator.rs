//! [`FakeOrchestrator`]: an in-memory [`Orchestrator`] with fault injection,
//! and the [`ImageCatalog`] it shares with
//! [`FakeResolver`](super::fake_resolver::FakeResolver).
//!
//! This module owns the fake runtime: instances kept in a map, a bounded ring
//! of fake log lines per instance, a broadcast channel of runtime events, call
//! counters, and the fault knobs (nth-call failure, seeded failure rate, added
//! latency, crash on demand, crash on every start). It must not touch a real
//! runtime, spawn processes or tasks, read the network, or hold its lock
//! across an `.await`; every knob is changeable at runtime through `&self`, so
//! a chaos test can turn faults on and off while a `Lifecycle` owns a clone.
//!
//! The fake follows the [`Orchestrator`] contract and passes
//! [`orchestrator_conformance`](super::orchestrator_conformance).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::{Error, Result};
use crate::ports::{
    Connection, EventStream, InstanceId, InstanceObservation, InstanceSpec, Orchestrator,
    RuntimeEvent, RuntimeEventKind, RuntimeStatus, StopMode,
};
use crate::spec::Source;
use crate::time::{Clock, SystemClock, Timestamp};

/// The backend name the fake reports, and the `what` of its injected errors.
const BACKEND: &str = "fake";
/// The `what` of injected [`Error::Unavailable`] errors.
const INJECTED_WHAT: &str = "fake runtime";
/// Default number of log lines kept per instance.
const DEFAULT_LOG_CAPACITY: usize = 100;
/// How many `stop` calls [`FakeOrchestrator::stop_requests`] remembers.
const STOP_HISTORY: usize = 10_000;
/// Capacity of the event channel; slow subscribers lose the oldest events.
const EVENT_CHANNEL_CAPACITY: usize = 1024;
/// Exit code reported for a forced stop or removal of a running instance (SIGKILL).
const KILLED_EXIT_CODE: i32 = 137;
/// Exit code reported by instances matched by [`FakeOrchestrator::crash_on_start`].
const CRASH_ON_START_EXIT_CODE: i32 = 1;

// ---------------------------------------------------------------------------
// Image catalog
// ---------------------------------------------------------------------------

/// What images "exist" for the fakes: a map from image reference to the digest
/// a pull of it would get now. Cheap to clone; clones share the map, so a test
/// that pushes a new digest is seen at once by both the [`FakeOrchestrator`]
/// (what a start pulls) and the
/// [`FakeResolver`](super::fake_resolver::FakeResolver) (what the registry says).
///
/// References are matched exactly (`repo` and `repo:latest` are different
/// entries). A reference pinned by digest (`repo@sha256:<64 hex>`) needs no
/// entry: it resolves to its own digest.
#[derive(Clone, Default)]
pub struct ImageCatalog {
    images: Arc<Mutex<BTreeMap<String, String>>>,
}

impl ImageCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `digest` under `reference`, replacing what it pointed to
    /// (like pushing a new image to a tag).
    pub fn push(&self, reference: impl Into<String>, digest: impl Into<String>) {
        lock(&self.images).insert(reference.into(), digest.into());
    }

    /// Deletes `reference` (like deleting a tag). Returns the digest it had.
    pub fn remove(&self, reference: &str) -> Option<String> {
        lock(&self.images).remove(reference)
    }

    /// The digest published under exactly `reference`, ignoring pinning.
    pub fn get(&self, reference: &str) -> Option<String> {
        lock(&self.images).get(reference).cloned()
    }

    /// The digest a pull of `reference` would get: its pinned digest if it is
    /// pinned, otherwise the catalog's entry.
    pub fn resolve(&self, reference: &str) -> Option<String> {
        match pinned_digest(reference) {
            Some(d) => Some(d.to_owned()),
            None => self.get(reference),
        }
    }

    /// Every `(reference, digest)` entry, sorted by reference.
    pub fn entries(&self) -> Vec<(String, String)> {
        lock(&self.images)
            .iter()
            .map(|(r, d)| (r.clone(), d.clone()))
            .collect()
    }
}

impl fmt::Debug for ImageCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(lock(&self.images).iter()).finish()
    }
}

pub use crate::state::pinned_digest;

/// A well-formed, deterministic digest (`sha256:<64 hex>`) named by `label`,
/// for tests: `fake_digest("v1")` is always the same and differs from
/// `fake_digest("v2")`.
pub fn fake_digest(label: &str) -> String {
    let hash = Sha256::digest(label.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

// ---------------------------------------------------------------------------
// Calls and counters
// ---------------------------------------------------------------------------

/// The kinds of [`Orchestrator`] call the fake counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallKind {
    /// [`Orchestrator::start`].
    Start,
    /// [`Orchestrator::stop`].
    Stop,
    /// [`Orchestrator::remove`].
    Remove,
    /// [`Orchestrator::list`].
    List,
    /// [`Orchestrator::inspect`].
    Inspect,
    /// [`Orchestrator::logs`].
    Logs,
    /// [`Orchestrator::connect`].
    Connect,
}

impl CallKind {
    /// Every kind, in declaration order.
    pub const ALL: [CallKind; 7] = [
        CallKind::Start,
        CallKind::Stop,
        CallKind::Remove,
        CallKind::List,
        CallKind::Inspect,
        CallKind::Logs,
        CallKind::Connect,
    ];

    /// The method's name (`"start"`, `"stop"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Start => "start",
            CallKind::Stop => "stop",
            CallKind::Remove => "remove",
            CallKind::List => "list",
            CallKind::Inspect => "inspect",
            CallKind::Logs => "logs",
            CallKind::Connect => "connect",
        }
    }

    fn index(self) -> usize {
        match self {
            CallKind::Start => 0,
            CallKind::Stop => 1,
            CallKind::Remove => 2,
            CallKind::List => 3,
            CallKind::Inspect => 4,
            CallKind::Logs => 5,
            CallKind::Connect => 6,
        }
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many calls of each kind the fake has received since it was built or
/// since [`FakeOrchestrator::reset_calls`]. Calls that failed by injection
/// count too. `Display` prints `start=3 stop=1 ...` for benchmark output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallCounts {
    /// Calls to `start`.
    pub start: u64,
    /// Calls to `stop`.
    pub stop: u64,
    /// Calls to `remove`.
    pub remove: u64,
    /// Calls to `list`.
    pub list: u64,
    /// Calls to `inspect`.
    pub inspect: u64,
    /// Calls to `logs`.
    pub logs: u64,
    /// Calls to `connect`.
    pub connect: u64,
}

impl CallCounts {
    /// The count for one kind.
    pub fn get(&self, kind: CallKind) -> u64 {
        match kind {
            CallKind::Start => self.start,
            CallKind::Stop => self.stop,
            CallKind::Remove => self.remove,
            CallKind::List => self.list,
            CallKind::Inspect => self.inspect,
            CallKind::Logs => self.logs,
            CallKind::Connect => self.connect,
        }
    }

    /// The sum over all kinds.
    pub fn total(&self) -> u64 {
        CallKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    fn bump(&mut self, kind: CallKind) {
        let slot = match kind {
            CallKind::Start => &mut self.start,
            CallKind::Stop => &mut self.stop,
            CallKind::Remove => &mut self.remove,
            CallKind::List => &mut self.list,
            CallKind::Inspect => &mut self.inspect,
            CallKind::Logs => &mut self.logs,
            CallKind::Connect => &mut self.connect,
        };
        *slot = slot.saturating_add(1);
    }
}

impl fmt::Display for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in CallKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{kind}={}", self.get(*kind))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------

/// A snapshot of one fake instance, from [`FakeOrchestrator::instances`] or
/// [`FakeOrchestrator::instance`].
#[derive(Debug, Clone)]
pub struct FakeInstance {
    /// What `inspect` would return now.
    pub observation: InstanceObservation,
    /// The spec of its latest start.
    pub spec: InstanceSpec,
    /// How many times it has been started (created or restarted in place).
    /// An idempotent `start` of a running instance does not count.
    pub start_count: u64,
    /// Its log lines, oldest first (bounded; old lines are dropped).
    pub logs: Vec<String>,
}

/// Opens a [`Connection`] for an instance; see
/// [`FakeOrchestratorBuilder::with_connector`].
pub type Connector = Arc<dyn Fn(&InstanceSpec) -> Result<Connection> + Send + Sync>;

struct Instance {
    spec: InstanceSpec,
    status: RuntimeStatus,
    image_digest: Option<String>,
    started_at: Option<Timestamp>,
    start_count: u64,
    logs: VecDeque<String>,
}

impl Instance {
    fn observation(&self) -> InstanceObservation {
        InstanceObservation {
            id: self.spec.id.clone(),
            server: self.spec.server.clone(),
            spec_hash: self.spec.spec_hash.clone(),
            status: self.status.clone(),
            image_digest: self.image_digest.clone(),
            labels: self.spec.labels.clone(),
            started_at: self.started_at,
            replica: None,
        }
    }

    fn snapshot(&self) -> FakeInstance {
        FakeInstance {
            observation: self.observation(),
            spec: self.spec.clone(),
            start_count: self.start_count,
            logs: self.logs.iter().cloned().collect(),
        }
    }

    fn is_running(&self) -> bool {
        self.status == RuntimeStatus::Running
    }

    fn log(&mut self, capacity: usize, line: String) {
        if capacity == 0 {
            return;
        }
        while self.logs.len() >= capacity {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }
}

struct Faults {
    /// Per kind, the absolute call sequence numbers (1-based) that must fail.
    fail_at: BTreeMap<CallKind, BTreeSet<u64>>,
    failure_rate: f64,
    latency: Duration,
    crash_on_start: Vec<String>,
}

struct State {
    instances: BTreeMap<InstanceId, Instance>,
    /// Resettable counters, reported by `calls()`.
    calls: CallCounts,
    /// Never-reset per-kind sequence numbers, for `fail_nth`.
    seq: [u64; 7],
    faults: Faults,
    rng: SmallRng,
    connector: Option<Connector>,
    /// Every `stop` that reached an instance, oldest first (bounded).
    stops: VecDeque<(InstanceId, StopMode)>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<RuntimeEvent>,
    clock: Arc<dyn Clock>,
    catalog: ImageCatalog,
    log_capacity: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

/// Builds a [`FakeOrchestrator`]. Every setting has a default: the system
/// clock, seed 0, a fresh [`ImageCatalog`], no connector, 100 log lines per
/// instance.
pub struct FakeOrchestratorBuilder {
    clock: Arc<dyn Clock>,
    seed: u64,
    catalog: ImageCatalog,
    connector: Option<Connector>,
    log_capacity: usize,
}

impl FakeOrchestratorBuilder {
    /// The clock `started_at` is read from. Use [`crate::TokioClock`] for
    /// paused-time tests.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The seed of the random source behind
    /// [`FakeOrchestrator::set_failure_rate`]. The same seed and the same
    /// sequence of calls fail the same calls.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The image catalog starts consult; share it with a
    /// [`FakeResolver`](super::fake_resolver::FakeResolver).
    pub fn with_catalog(mut self, catalog: ImageCatalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// What `connect` returns for a running instance. Without one, `connect`
    /// fails with `Unavailable`. Can also be set later with
    /// [`FakeOrchestrator::set_connector`].
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// How many log lines each instance keeps.
    pub fn with_log_capacity(mut self, lines: usize) -> Self {
        self.log_capacity = lines;
        self
    }

    /// The orchestrator.
    pub fn build(self) -> FakeOrchestrator {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        FakeOrchestrator {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    instances: BTreeMap::new(),
                    calls: CallCounts::default(),
                    seq: [0; 7],
                    faults: Faults {
                        fail_at: BTreeMap::new(),
                        failure_rate: 0.0,
                        latency: Duration::ZERO,
                        crash_on_start: Vec::new(),
                    },
                    rng: SmallRng::seed_from_u64(self.seed),
                    connector: self.connector,
                    stops: VecDeque::new(),
                }),
                events,
                clock: self.clock,
                catalog: self.catalog,
                log_capacity: self.log_capacity,
            }),
        }
    }
}

impl Default for FakeOrchestratorBuilder {
    fn default() -> Self {
        FakeOrchestratorBuilder {
            clock: Arc::new(SystemClock),
            seed: 0,
            catalog: ImageCatalog::new(),
            connector: None,
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

impl fmt::Debug for FakeOrchestratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOrchestratorBuilder")
            .field("clock", &self.clock)
            .field("seed", &self.seed)
            .field("catalog", &self.catalog)
            .field("connector", &self.connector.is_some())
            .field("log_capacity", &self.log_capacity)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The fake
// ---------------------------------------------------------------------------

/// An in-memory [`Orchestrator`] (backend name `"fake"`) with fault injection.
///
/// Cheap to clone: clones share all state, so a test keeps one handle to
/// inject faults and read counters while a `Lifecycle` owns another.
///
/// Behaviour:
/// - `start` creates the instance, or restarts an exited one in place (same
///   id, the given spec, a new `started_at` from the clock, start count + 1),
///   and does nothing to a running one. Image sources are "pulled" from the
///   [`ImageCatalog`]: the observation's `image_digest` is the catalog's digest
///   (or the pinned digest); an unknown, unpinned image fails with `NotFound`.
/// - `stop` exits the instance with code 0 (graceful) or 137 (force); `remove`
///   kills it if it runs and forgets it. Events: `Started`, `Exited`, `Removed`.
/// - `connect` uses the installed [`Connector`], and fails with `Unavailable`
///   when none is installed.
///
/// Faults, all switchable at runtime: [`fail_nth`](Self::fail_nth),
/// [`set_failure_rate`](Self::set_failure_rate),
/// [`set_latency`](Self::set_latency), [`crash`](Self::crash),
/// [`oom_kill`](Self::oom_kill), [`crash_on_start`](Self::crash_on_start).
/// Injected failures are `Error::Unavailable { what: "fake runtime", .. }`,
/// and happen before the call has any effect.
#[derive(Clone)]
pub struct FakeOrchestrator {
    inner: Arc<Inner>,
}

impl Default for FakeOrchestrator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FakeOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("FakeOrchestrator")
            .field("instances", &state.instances.keys().collect::<Vec<_>>())
            .field("calls", &state.calls)
            .finish_non_exhaustive()
    }
}

impl FakeOrchestrator {
    /// A fake with every default (see [`FakeOrchestratorBuilder`]).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a fake with a custom clock, seed, catalog or connector.
    pub fn builder() -> FakeOrchestratorBuilder {
        FakeOrchestratorBuilder::default()
    }

    /// The image catalog this fake pulls from (a shared handle).
    pub fn catalog(&self) -> ImageCatalog {
        self.inner.catalog.clone()
    }

    // ----- counters --------------------------------------------------------

    /// Every `stop` call that reached an instance (not failed by an injected
    /// fault), with the mode it asked for, oldest first. The latest 10,000 are kept.
    pub fn stop_requests(&self) -> Vec<(InstanceId, StopMode)> {
        lock(&self.inner.state).stops.iter().cloned().collect()
    }

    /// Calls received per kind since construction or the last
    /// [`reset_calls`](Self::reset_calls).
    pub fn calls(&self) -> CallCounts {
        lock(&self.inner.state).calls
    }

    /// Sets every call counter to zero. Pending [`fail_nth`](Self::fail_nth)
    /// faults are unaffected.
    pub fn reset_calls(&self) {
        lock(&self.inner.state).calls = CallCounts::default();
    }

    // ----- fault knobs -----------------------------------------------------

    /// Makes the `n`-th call of `kind` from now fail (`n = 1` is the next
    /// one). Several can be pending for the same kind. `n = 0` does nothing.
    pub fn fail_nth(&self, kind: CallKind, n: u64) {
        if n == 0 {
            return;
        }
        let mut state = lock(&self.inner.state);
        let target = state.seq[kind.index()].saturating_add(n);
        state.faults.fail_at.entry(kind).or_default().insert(target);
    }

    /// Shorthand for `fail_nth(kind, 1)`.
    pub fn fail_next(&self, kind: CallKind) {
        self.fail_nth(kind, 1);
    }

    /// Makes every call fail with probability `p` (clamped to `0.0..=1.0`;
    /// NaN counts as 0), drawn from the seeded random source, so a run is
    /// repeatable for a given seed and call sequence. `0.0` turns it off.
    pub fn set_failure_rate(&self, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        lock(&self.inner.state).faults.failure_rate = p;
    }

    /// Delays every call by `latency` (with `tokio::time::sleep`, so paused
    /// time applies). `Duration::ZERO` turns it off.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.state).faults.latency = latency;
    }

    /// Makes every instance whose image reference or program contains
    /// `pattern` exit with code 1 right after each start (a `Started` then an
    /// `Exited` event), simulating a crash loop. `start` still succeeds and
    /// returns the exited observation.
    pub fn crash_on_start(&self, pattern: impl Into<String>) {
        lock(&self.inner.state)
            .faults
            .crash_on_start
            .push(pattern.into());
    }

    /// Stops every [`crash_on_start`](Self::crash_on_start) pattern.
    pub fn clear_crash_on_start(&self) {
        lock(&self.inner.state).faults.crash_on_start.clear();
    }

    /// Turns every fault off: pending nth failures, failure rate, latency and
    /// crash-on-start patterns. Instances and counters are kept.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.inner.state);
        state.faults.fail_at.clear();
        state.faults.failure_rate = 0.0;
        state.faults.latency = Duration::ZERO;
        state.faults.crash_on_start.clear();
    }

    /// Installs (or with `None`, removes) the connector `connect` uses.
    pub fn set_connector(&self, connector: Option<Connector>) {
        lock(&self.inner.state).connector = connector;
    }

    // ----- behind-the-back events -----------------------------------------

    /// Crashes a running instance behind the library's back: it becomes
    /// `Exited { code: Some(exit_code) }` and an `Exited` event is sent.
    /// Not a counted call and never delayed or failed by faults. An instance
    /// that is not running is left alone; a missing one is `NotFound`.
    pub fn crash(&self, id: &InstanceId, exit_code: i32) -> Result<()> {
        self.exit_behind_back(id, exit_code, false)
    }

    /// Like [`crash`](Self::crash), but as the kernel's OOM killer: code 137
    /// and `oom_killed: true`.
    pub fn oom_kill(&self, id: &InstanceId) -> Result<()> {
        self.exit_behind_back(id, KILLED_EXIT_CODE, true)
    }

    /// Appends a line to an instance's logs, as if it had printed it.
    /// A missing instance is `NotFound`.
    pub fn push_log(&self, id: &InstanceId, line: impl Into<String>) -> Result<()> {
        let mut state = lock(&self.inner.state);
        let inst = state.instances.get_mut(id).ok_or_else(|| not_found(id))?;
        inst.log(self.inner.log_capacity, line.into());
        Ok(())
    }

    // ----- snapshots -------------------------------------------------------

    /// Every instance, sorted by id.
    pub fn instances(&self) -> Vec<FakeInstance> {
        lock(&self.inner.state)
            .instances
            .values()
            .map(Instance::snapshot)
            .collect()
    }

    /// One instance, if it exists.
    pub fn instance(&self, id: &InstanceId) -> Option<FakeInstance> {
        lock(&self.inner.state)
            .instances
            .get(id)
            .map(Instance::snapshot)
    }

    // ----- internals -------------------------------------------------------

    /// Counts the call, decides whether it fails, then applies latency.
    async fn enter(&self, kind: CallKind, target: &(dyn fmt::Display + Sync)) -> Result<()> {
        let (failure, latency) = {
            let mut state = lock(&self.inner.state);
            let state = &mut *state;
            state.calls.bump(kind);
            let seq = &mut state.seq[kind.index()];
            *seq = seq.saturating_add(1);
            let n = *seq;
            let nth = state
                .faults
                .fail_at
                .get_mut(&kind)
                .is_some_and(|set| set.remove(&n));
            let p = state.faults.failure_rate;
            let failure = if nth {
                Some(format!(
                    "injected failure on {kind} call #{n} ({target}) by fail_nth"
                ))
            } else if p > 0.0 && state.rng.random_bool(p) {
                Some(format!(
                    "injected failure on {kind} call #{n} ({target}) at failure rate {p}"
                ))
            } else {
                None
            };
            (failure, state.faults.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failure {
            Some(reason) => Err(Error::unavailable(INJECTED_WHAT, reason)),
            None => Ok(()),
        }
    }

    fn emit(&self, instance: &InstanceId, server: &str, kind: RuntimeEventKind) {
        // No subscribers is fine: events are not replayed.
        let _ = self.inner.events.send(RuntimeEvent {
            instance: instance.clone(),
            server: server.to_owned(),
            kind,
        });
    }

    /// Marks a running instance exited, logs it and sends the event.
    fn exit_locked(&self, inst: &mut Instance, code: i32, oom_killed: bool, reason: &str) -> bool {
        if !inst.is_running() {
            return false;
        }
        inst.status = RuntimeStatus::Exited {
            code: Some(code),
            oom_killed,
            reason: Some(reason.to_owned()),
        };
        let suffix = if oom_killed { " (out of memory)" } else { "" };
        inst.log(
            self.inner.log_capacity,
            format!("exited with code {code}{suffix}"),
        );
        self.emit(
            &inst.spec.id,
            &inst.spec.server,
            RuntimeEventKind::Exited {
                code: Some(code),
                oom_killed,
            },
        );
        true
    }

    fn exit_behind_back(&self, id: &InstanceId, code: i32, oom_killed: bool) -> Result<()> {
        let mut state = lock(&self.inner.state);
        let inst = state.instances.get_mut(id).ok_or_else(|| not_found(id))?;
        let reason = if oom_killed { "OOMKilled" } else { "crashed" };
        self.exit_locked(inst, code, oom_killed, reason);
        Ok(())
    }

    /// The digest a start of `spec` pulls, or `NotFound` like a failed pull.
    fn pull(&self, spec: &InstanceSpec) -> Result<Option<String>> {
        match &spec.source {
            Source::Image(reference) => match self.inner.catalog.resolve(reference) {
                Some(digest) => Ok(Some(digest)),
                None => Err(Error::not_found(format!(
                    "image {reference:?} (pull for instance {} failed: not in the fake image catalog; \
                     push it with ImageCatalog::push)",
                    spec.id
                ))),
            },
            Source::Command(_) | Source::Existing(_) => Ok(None),
        }
    }
}

fn not_found(id: &InstanceId) -> Error {
    Error::not_found(format!("instance {id}"))
}

fn crashes_on_start(patterns: &[String], source: &Source) -> bool {
    let haystack = match source {
        Source::Image(reference) => reference.as_str(),
        Source::Command(command) => command.program.as_str(),
        Source::Existing(workload) => workload.as_str(),
    };
    patterns.iter().any(|p| haystack.contains(p.as_str()))
}

#[async_trait]
impl Orchestrator for FakeOrchestrator {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceObservation> {
        self.enter(CallKind::Start, &spec.id).await?;
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        if let Some(inst) = state.instances.get(&spec.id)
            && inst.is_running()
        {
            return Ok(inst.observation());
        }
        let digest = self.pull(spec)?;
        let now = self.inner.clock.now();
        let crash = crashes_on_start(&state.faults.crash_on_start, &spec.source);
        let inst = state
            .instances
            .entry(spec.id.clone())
            .or_insert_with(|| Instance {
                spec: spec.clone(),
                status: RuntimeStatus::Created,
                image_digest: None,
                started_at: None,
                start_count: 0,
                logs: VecDeque::new(),
            });
        inst.spec = spec.clone();
        inst.status = RuntimeStatus::Running;
        inst.image_digest = digest;
        inst.started_at = Some(now);
        inst.start_count = inst.start_count.saturating_add(1);
        inst.log(self.inner.log_capacity, "started".to_owned());
        self.emit(&spec.id, &spec.server, RuntimeEventKind::Started);
        if crash {
            self.exit_locked(
                inst,
                CRASH_ON_START_EXIT_CODE,
                false,
                "crashed on start (injected by crash_on_start)",
            );
        }
        Ok(inst.observation())
    }

    async fn stop(&self, id: &InstanceId, mode: StopMode, _grace: Duration) -> Result<()> {
        self.enter(CallKind::Stop, id).await?;
        let mut state = lock(&self.inner.state);
        if state.stops.len() >= STOP_HISTORY {
            state.stops.pop_front();
        }
        state.stops.push_back((id.clone(), mode));
        let inst = state.instances.get_mut(id).ok_or_else(|| not_found(id))?;
        match mode {
            StopMode::Graceful => self.exit_locked(inst, 0, false, "stopped"),
            StopMode::Force => self.exit_locked(inst, KILLED_EXIT_CODE, false, "killed"),
        };
        Ok(())
    }

    async fn remove(&self, id: &InstanceId) -> Result<()> {
        self.enter(CallKind::Remove, id).await?;
        let mut state = lock(&self.inner.state);
        if let Some(mut inst) = state.instances.remove(id) {
            self.exit_locked(&mut inst, KILLED_EXIT_CODE, false, "killed for removal");
            self.emit(id, &inst.spec.server, RuntimeEventKind::Removed);
        }
        Ok(())
    }

    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<InstanceObservation>> {
        self.enter(CallKind::List, &format!("selector {selector:?}"))
            .await?;
        let state = lock(&self.inner.state);
        let mut listed = Vec::with_capacity(state.instances.len());
        listed.extend(
            state
                .instances
                .values()
                .filter(|inst| crate::ports::labels::matches(&inst.spec.labels, selector))
                .map(Instance::observation),
        );
        Ok(listed)
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceObservation> {
        self.enter(CallKind::Inspect, id).await?;
        let state = lock(&self.inner.state);
        state
            .instances
            .get(id)
            .map(Instance::observation)
            .ok_or_else(|| not_found(id))
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<String>> {
        self.enter(CallKind::Logs, id).await?;
        let state = lock(&self.inner.state);
        let inst = state.instances.get(id).ok_or_else(|| not_found(id))?;
        let skip = inst.logs.len().saturating_sub(tail);
        Ok(inst.logs.iter().skip(skip).cloned().collect())
    }

    async fn connect(&self, id: &InstanceId) -> Result<Connection> {
        self.enter(CallKind::Connect, id).await?;
        let (spec, connector) = {
            let state = lock(&self.inner.state);
            let inst = state.instances.get(id).ok_or_else(|| not_found(id))?;
            if !inst.is_running() {
                return Err(Error::unavailable(
                    format!("instance {id}"),
                    "it is not running; start it before connecting",
                ));
            }
            (inst.spec.clone(), state.connector.clone())
        };
        // The connector runs outside the lock: it may call back into the fake.
        match connector {
            Some(connect) => connect(&spec),
            None => Err(Error::unavailable(
                INJECTED_WHAT,
                format!(
                    "no connector installed, so instance {id} cannot be connected to; \
                     install one with FakeOrchestratorBuilder::with_connector or \
                     FakeOrchestrator::set_connector"
                ),
            )),
        }
    }

    fn events(&self) -> EventStream {
        BroadcastStream::new(self.inner.events.subscribe())
            .filter_map(|event| futures::future::ready(event.ok()))
            .boxed()
    }
}
