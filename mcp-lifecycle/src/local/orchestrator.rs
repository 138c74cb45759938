//! [`LocalOrchestrator`]: the [`Orchestrator`] port for local commands.
//!
//! This module owns the instance table (spec, status, log ring and current
//! run of each instance), the exit watcher task of each run, the broadcast
//! channel of runtime events, the stop/remove sequences, and the kill of every
//! process group when the last handle is dropped. It must not spawn or signal
//! processes other than through `process`, poll for exits (a watcher task
//! awaits each child and pushes the result), hold its lock across an `.await`,
//! or log environment values.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tracing::Instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{
    Connection, EventStream, InstanceId, InstanceObservation, InstanceSpec, Orchestrator,
    RuntimeEvent, RuntimeEventKind, RuntimeStatus, StdioStream, StopMode,
};
use crate::spec::{Source, Transport};
use crate::time::Timestamp;

use super::BACKEND;
use super::logs::LogRing;
use super::process::{self, ProcessGroup};

/// Default number of log lines kept per instance.
const DEFAULT_LOG_CAPACITY: usize = 1000;
/// Default wait for a process group to be reaped after SIGKILL.
const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exit waits for the last output lines to reach the log ring.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Capacity of the event channel; slow subscribers lose the oldest events.
const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// Builds a [`LocalOrchestrator`]. Defaults: 1000 log lines per instance, and
/// 10 s to wait for a killed process to be reaped.
#[derive(Debug, Clone)]
pub struct LocalOrchestratorBuilder {
    log_capacity: usize,
    kill_timeout: Duration,
}

impl Default for LocalOrchestratorBuilder {
    fn default() -> Self {
        LocalOrchestratorBuilder {
            log_capacity: DEFAULT_LOG_CAPACITY,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
        }
    }
}

impl LocalOrchestratorBuilder {
    /// How many lines of output each instance keeps (older lines are
    /// dropped). 0 keeps none.
    pub fn with_log_capacity(mut self, lines: usize) -> Self {
        self.log_capacity = lines;
        self
    }

    /// How long `stop` and `remove` wait for a process to be reaped after
    /// SIGKILL before failing with a timeout (a process stuck in the kernel,
    /// say in uninterruptible I/O, can outlive SIGKILL for a while).
    pub fn with_kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    /// The orchestrator.
    pub fn build(self) -> LocalOrchestrator {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        LocalOrchestrator {
            inner: Arc::new(Inner {
                instances: Mutex::new(BTreeMap::new()),
                events,
                log_capacity: self.log_capacity,
                kill_timeout: self.kill_timeout,
                next_run: AtomicU64::new(1),
            }),
        }
    }
}

/// Runs servers whose source is a local [`Command`](crate::spec::Command) as
/// child processes of the host: the [`Orchestrator`] for development machines,
/// CLIs and hosts that ship their MCP servers as programs.
///
/// - **One process group per run.** Each run is started as the leader of a
///   new process group; stop signals the whole group, so a server's own
///   children (a shell's background jobs, a node wrapper's worker) go with it.
///   When the leader exits on its own, whatever is left of its group is
///   killed, as a container runtime does when a container's main process
///   ends.
/// - **Stop.** Graceful sends SIGTERM to the group, waits up to the grace
///   period, then sends SIGKILL; Force sends SIGKILL at once. Either way `stop`
///   returns after the leader has been reaped (no zombies).
/// - **Exits are pushed.** A watcher task awaits each child and sends a
///   [`RuntimeEventKind::Exited`] event; nothing polls. A process that exited
///   on its own reports its exit code; one killed by a signal reports no code
///   and names the signal in its status reason.
/// - **Transports.** Stdio: the process's stdin/stdout are pipes, and
///   [`connect`](Orchestrator::connect) hands them out **once per run**: a
///   second `connect` before the instance is restarted fails with
///   [`ErrorKind::Unavailable`] (a pipe cannot be duplicated; restart the
///   instance for a fresh stream). stderr goes to
///   the logs. HTTP and SSE: local processes share the host's network, so
///   the spec's port is not used; every run gets a free loopback port, passed
///   as `MCP_PORT` and `PORT` and in place of `{port}` in the arguments, and
///   `connect` returns `http://127.0.0.1:<port><path>`. stdout and stderr go
///   to the logs.
/// - **Environment.** The host's environment is inherited, then the spec's
///   variables are set. Values are never logged.
/// - **Logs.** A bounded ring of lines per instance (1000 by default, see
///   [`LocalOrchestratorBuilder::with_log_capacity`]), kept across restarts in
///   place and dropped on remove.
/// - **Limits.** Memory and CPU limits in the spec are not enforced.
/// - **Cleanup.** Handles are cheap clones of one shared state. When the last
///   one is dropped, every running process group is killed with SIGKILL
///   before `drop` returns; the watcher tasks then reap the leaders. A run's
///   group is also killed if its watcher task is dropped (the tokio runtime
///   shutting down). Instances are not adopted across host restarts: a local
///   process never outlives its orchestrator.
///
/// Needs a tokio runtime with I/O enabled (`#[tokio::main]` has it).
#[derive(Clone)]
pub struct LocalOrchestrator {
    inner: Arc<Inner>,
}

impl Default for LocalOrchestrator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalOrchestrator")
            .field("instances", &self.inner.lock().len())
            .field("log_capacity", &self.inner.log_capacity)
            .field("kill_timeout", &self.inner.kill_timeout)
            .finish()
    }
}

impl LocalOrchestrator {
    /// An orchestrator with the defaults of [`LocalOrchestratorBuilder`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to change the log capacity or kill timeout.
    pub fn builder() -> LocalOrchestratorBuilder {
        LocalOrchestratorBuilder::default()
    }

    /// An orchestrator keeping `lines` lines of output per instance.
    pub fn with_log_capacity(lines: usize) -> Self {
        Self::builder().with_log_capacity(lines).build()
    }

    /// The pid of the instance's current process, which is also its process
    /// group id; `None` if the instance is missing or not running. For
    /// diagnostics and tests (sending a signal behind the backend's back).
    pub fn pid(&self, id: &InstanceId) -> Option<u32> {
        self.inner
            .lock()
            .get(id)
            .and_then(|inst| inst.run.as_ref())
            .map(|run| run.group.id())
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

struct Inner {
    instances: Mutex<BTreeMap<InstanceId, Instance>>,
    events: broadcast::Sender<RuntimeEvent>,
    log_capacity: usize,
    kill_timeout: Duration,
    next_run: AtomicU64,
}

/// One instance: its latest spec, what the runtime says about it, its logs,
/// and its current run while one is alive.
struct Instance {
    spec: InstanceSpec,
    logs: Arc<LogRing>,
    status: RuntimeStatus,
    started_at: Option<Timestamp>,
    /// `Some` from spawn until the watcher has recorded the exit.
    run: Option<Run>,
}

/// One process run of an instance.
struct Run {
    /// Tells this run's watcher from an older one's.
    id: u64,
    group: ProcessGroup,
    /// The loopback port of an HTTP/SSE run.
    port: Option<u16>,
    /// A stdio run's stream, until `connect` hands it out.
    stdio: Option<StdioStream>,
    /// Set by `stop`, so the exit reason says it was asked for.
    stop_requested: Option<StopMode>,
    /// Becomes `true` once the watcher has reaped the leader and recorded it.
    exited: watch::Receiver<bool>,
}

impl Instance {
    fn observation(&self) -> InstanceObservation {
        InstanceObservation {
            id: self.spec.id.clone(),
            server: self.spec.server.clone(),
            spec_hash: self.spec.spec_hash.clone(),
            status: self.status.clone(),
            image_digest: None,
            labels: self.spec.labels.clone(),
            started_at: self.started_at,
            replica: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<InstanceId, Instance>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, instance: &InstanceId, server: &str, kind: RuntimeEventKind) {
        // No subscribers is fine: events are not replayed.
        let _ = self.events.send(RuntimeEvent {
            instance: instance.clone(),
            server: server.to_owned(),
            kind,
        });
    }

    /// Records the exit of run `run_id` (if it is still the instance's current
    /// run) and sends the `Exited` event.
    fn record_exit(
        &self,
        id: &InstanceId,
        server: &str,
        run_id: u64,
        code: Option<i32>,
        reason: String,
    ) {
        let mut instances = self.lock();
        if let Some(inst) = instances.get_mut(id)
            && inst.run.as_ref().is_some_and(|run| run.id == run_id)
        {
            let requested = inst.run.take().and_then(|run| run.stop_requested);
            let reason = match requested {
                Some(StopMode::Graceful) => format!("stopped on request: {reason}"),
                Some(StopMode::Force) => format!("killed on request: {reason}"),
                None => reason,
            };
            tracing::info!(code, reason = %reason, "local instance exited");
            inst.status = RuntimeStatus::Exited {
                code,
                oom_killed: false,
                reason: Some(reason),
            };
        }
        self.emit(
            id,
            server,
            RuntimeEventKind::Exited {
                code,
                oom_killed: false,
            },
        );
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let instances = self.instances.get_mut().unwrap_or_else(|e| e.into_inner());
        for (id, inst) in instances.iter() {
            if let Some(run) = &inst.run {
                tracing::debug!(
                    server = %inst.spec.server,
                    instance = %id,
                    pgid = run.group.id(),
                    "local orchestrator dropped; killing process group"
                );
                run.group.kill_quietly();
            }
        }
    }
}

/// Kills a run's process group when dropped: right after the leader is
/// reaped (to take the rest of the group with it), or when the watcher task
/// is dropped unfinished (the runtime shutting down).
struct KillGroupOnDrop(ProcessGroup);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        self.0.kill_quietly();
    }
}

/// Everything the watcher task of one run needs.
struct Watch {
    inner: Weak<Inner>,
    id: InstanceId,
    server: String,
    run_id: u64,
    child: Child,
    group: ProcessGroup,
    pumps: Vec<JoinHandle<()>>,
    done: watch::Sender<bool>,
}

/// Awaits the run's leader, kills what is left of its group, lets the logs
/// drain, records the exit, sends `Exited`, and wakes anyone stopping it.
async fn watch_run(w: Watch) {
    let Watch {
        inner,
        id,
        server,
        run_id,
        mut child,
        group,
        pumps,
        done,
    } = w;
    let guard = KillGroupOnDrop(group);
    let waited = child.wait().await;
    drop(guard);
    let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, futures::future::join_all(pumps)).await;
    let (code, reason) = match waited {
        Ok(status) => process::describe_exit(status),
        Err(e) => (None, format!("waiting for the process failed: {e}")),
    };
    if let Some(inner) = inner.upgrade() {
        inner.record_exit(&id, &server, run_id, code, reason);
    }
    let _ = done.send(true);
}

/// Waits until a run's watcher has recorded its exit (or is gone).
async fn wait_exited(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|exited| *exited).await;
}

fn not_found(id: &InstanceId) -> Error {
    Error::not_found(format!("instance {id}"))
}

// ---------------------------------------------------------------------------
// The port
// ---------------------------------------------------------------------------

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceObservation> {
        let Source::Command(command) = &spec.source else {
            return Err(Error::invalid(
                format!("source of instance {}", spec.id),
                "the local backend runs commands only (source: command); \
                 image sources need the Docker or Kubernetes backend",
            ));
        };
        let inner = &self.inner;
        let span =
            tracing::info_span!("local_instance", server = %spec.server, instance = %spec.id);
        // No `.await` below: the lock is held from the check to the insert, so
        // two concurrent starts of one id cannot both spawn.
        let mut instances = inner.lock();
        let logs = match instances.get(&spec.id) {
            Some(inst) if inst.run.is_some() => return Ok(inst.observation()),
            Some(inst) => inst.logs.clone(),
            None => Arc::new(LogRing::new(inner.log_capacity)),
        };
        let spawned = span.in_scope(|| process::spawn(spec, command, &logs))?;
        let run_id = inner.next_run.fetch_add(1, Ordering::Relaxed);
        let (done, exited) = watch::channel(false);
        let group = spawned.group;
        tokio::spawn(
            watch_run(Watch {
                inner: Arc::downgrade(inner),
                id: spec.id.clone(),
                server: spec.server.clone(),
                run_id,
                child: spawned.child,
                group,
                pumps: spawned.pumps,
                done,
            })
            .instrument(span.clone()),
        );
        let run = Run {
            id: run_id,
            group,
            port: spawned.port,
            stdio: spawned.stdio,
            stop_requested: None,
            exited,
        };
        let now = Timestamp::now_system();
        let inst = instances
            .entry(spec.id.clone())
            .or_insert_with(|| Instance {
                spec: spec.clone(),
                logs,
                status: RuntimeStatus::Created,
                started_at: None,
                run: None,
            });
        inst.spec = spec.clone();
        inst.status = RuntimeStatus::Running;
        inst.started_at = Some(now);
        inst.run = Some(run);
        inner.emit(&spec.id, &spec.server, RuntimeEventKind::Started);
        span.in_scope(|| {
            tracing::info!(
                program = %command.program,
                pid = group.id(),
                port = spawned.port,
                "local instance started"
            );
        });
        Ok(inst.observation())
    }

    async fn stop(&self, id: &InstanceId, mode: StopMode, grace: Duration) -> Result<()> {
        let (group, mut exited, server) = {
            let mut instances = self.inner.lock();
            let inst = instances.get_mut(id).ok_or_else(|| not_found(id))?;
            let server = inst.spec.server.clone();
            let Some(run) = inst.run.as_mut() else {
                return Ok(());
            };
            if run.stop_requested != Some(StopMode::Force) {
                run.stop_requested = Some(mode);
            }
            (run.group, run.exited.clone(), server)
        };
        let span =
            tracing::info_span!("local_stop", server = %server, instance = %id, pgid = group.id());
        async {
            if mode == StopMode::Graceful {
                tracing::debug!(?grace, "sending SIGTERM to the process group");
                group.signal(Signal::SIGTERM)?;
                if tokio::time::timeout(grace, wait_exited(&mut exited))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                tracing::warn!(
                    ?grace,
                    "local instance did not exit within its grace period; killing it"
                );
            }
            group.signal(Signal::SIGKILL)?;
            let limit = self.inner.kill_timeout;
            tokio::time::timeout(limit, wait_exited(&mut exited))
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("instance {id} to exit after SIGKILL"),
                    after: limit,
                })
        }
        .instrument(span)
        .await
    }

    async fn remove(&self, id: &InstanceId) -> Result<()> {
        let running = match self.inner.lock().get(id) {
            None => return Ok(()),
            Some(inst) => inst.run.is_some(),
        };
        if running {
            match self.stop(id, StopMode::Force, Duration::ZERO).await {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let mut instances = self.inner.lock();
        if let Some(inst) = instances.remove(id) {
            if let Some(run) = &inst.run {
                // Started again while we stopped it: kill it; its watcher reaps it.
                run.group.kill_quietly();
            }
            tracing::info!(server = %inst.spec.server, instance = %id, "local instance removed");
            self.inner
                .emit(id, &inst.spec.server, RuntimeEventKind::Removed);
        }
        Ok(())
    }

    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<InstanceObservation>> {
        Ok(self
            .inner
            .lock()
            .values()
            .filter(|inst| crate::ports::labels::matches(&inst.spec.labels, selector))
            .map(Instance::observation)
            .collect())
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceObservation> {
        self.inner
            .lock()
            .get(id)
            .map(Instance::observation)
            .ok_or_else(|| not_found(id))
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<String>> {
        let ring = self
            .inner
            .lock()
            .get(id)
            .map(|inst| inst.logs.clone())
            .ok_or_else(|| not_found(id))?;
        Ok(ring.tail(tail))
    }

    async fn connect(&self, id: &InstanceId) -> Result<Connection> {
        let mut instances = self.inner.lock();
        let inst = instances.get_mut(id).ok_or_else(|| not_found(id))?;
        let transport = inst.spec.transport.clone();
        let Some(run) = inst.run.as_mut() else {
            return Err(Error::unavailable(
                format!("instance {id}"),
                "it is not running; start it before connecting",
            ));
        };
        match transport {
            Transport::Stdio => run.stdio.take().map(Connection::Stdio).ok_or_else(|| {
                Error::unavailable(
                    format!("stdio of instance {id}"),
                    "the stream was already handed out for this run; the local backend hands \
                     a process's stdin/stdout out once per run, so restart the instance for a \
                     new stream",
                )
            }),
            Transport::Http { path, .. } | Transport::Sse { path, .. } => match run.port {
                Some(port) => Ok(Connection::Url(format!("http://127.0.0.1:{port}{path}"))),
                None => Err(Error::unavailable(
                    format!("instance {id}"),
                    "it was started without a port (its transport changed since); restart it",
                )),
            },
        }
    }

    fn events(&self) -> EventStream {
        BroadcastStream::new(self.inner.events.subscribe())
            .filter_map(|event| futures::future::ready(event.ok()))
            .boxed()
    }
}
