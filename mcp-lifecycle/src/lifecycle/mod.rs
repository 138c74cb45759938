//! [`Lifecycle`]: the one type a host holds. It validates what the host
//! asks for, hands it to the controller as an intent, and answers with the
//! controller's status snapshots, waiting on them where the host asked to.
//!
//! Layer: facade, the top. It makes no lifecycle decision and touches no
//! port: it sends intents to the controller and reads its snapshots.

mod builder;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::mcp::McpPeer;
use crate::ports::StopMode;
use crate::spec::{ServerSpec, Source, UpdatePolicy, ValidationError};
use crate::state::ServerPhase;

pub use crate::config::{LeaderElection, LifecycleConfig};
pub use crate::records::{INSTANCES, InstanceRecord, SERVERS, ServerRecord};
pub use crate::status::{
    ApplyOutcome, CycleReport, HealthSummary, InstanceStatus, LifecycleEvent, LifecycleEventKind,
    ResyncReport, ServerStatus, UpdateStatus,
};
pub use builder::LifecycleBuilder;

/// Whether [`Lifecycle::start`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return once the start is recorded.
    No,
    /// Return once every desired instance is ready, or fail with
    /// [`crate::ErrorKind::Timeout`] after this long.
    UntilReady(Duration),
}

/// Runs MCP servers for a host and keeps them honest.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. Dropping it
/// stops the controller and leaves workloads running, so the next
/// `Lifecycle` on the same store adopts them; [`Lifecycle::shutdown`]
/// stops them first.
///
/// This example uses the in-process fakes of feature `testing`:
#[cfg_attr(feature = "testing", doc = "```")]
#[cfg_attr(not(feature = "testing"), doc = "```ignore")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mcp_lifecycle::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mcp_lifecycle::{Lifecycle, ServerSpec, Source, Wait};
/// use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, ImageCatalog, fake_digest};
///
/// let catalog = ImageCatalog::new();
/// catalog.push("registry.local/echo:1", fake_digest("echo-v1"));
/// let runtime = FakeOrchestrator::builder().with_catalog(catalog).build();
/// let lifecycle = Lifecycle::builder()
///     .orchestrator(Arc::new(runtime))
///     .prober(Arc::new(FakeProber::new()))
///     .build()
///     .await?;
///
/// let mut spec = ServerSpec::new("echo", Source::Image("registry.local/echo:1".into()));
/// spec.replicas = 2;
/// lifecycle.apply(spec).await?;
/// let status = lifecycle.start("echo", Wait::UntilReady(Duration::from_secs(10))).await?;
/// assert_eq!(status.ready, 2);
/// lifecycle.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct Lifecycle {
    controller: Controller,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("backend", &self.controller.backend())
            .field("servers", &self.controller.server_count())
            .finish()
    }
}

impl Lifecycle {
    /// Starts building a lifecycle manager.
    pub fn builder() -> LifecycleBuilder {
        LifecycleBuilder::new()
    }

    /// The host-wide settings in force.
    pub fn config(&self) -> &LifecycleConfig {
        self.controller.config()
    }

    fn ensure_running(&self) -> Result<()> {
        if self.controller.is_stopped() {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Creates or updates a server. Validates first; an unchanged spec is a
    /// no-op. A changed spec replaces instances one at a time, each new one
    /// ready before an old one goes.
    pub async fn apply(&self, spec: ServerSpec) -> Result<ApplyOutcome> {
        self.ensure_running()?;
        spec.validate(&self.controller.config().limits)?;
        if matches!(spec.source, Source::Existing(_)) && !self.controller.owns_replicas() {
            return Err(ValidationError::single(
                &spec.name,
                "source.existing",
                format!(
                    "the {} backend cannot adopt existing workloads; only runtimes that own \
                     replicas (Kubernetes) can",
                    self.controller.backend()
                ),
            )
            .into());
        }
        self.controller.apply(spec).await
    }

    /// Deletes a server: stops and removes every instance, then its records.
    /// Deleting a server that does not exist succeeds.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.ensure_running()?;
        self.controller.delete(name).await
    }

    /// The status of every server, by name.
    pub async fn list(&self) -> Vec<ServerStatus> {
        self.controller.list().await
    }

    /// One server's status: the snapshot taken after its latest pass.
    pub async fn status(&self, name: &str) -> Result<ServerStatus> {
        self.controller.status(name).await
    }

    /// Starts a server that was stopped (or scaled to 0, which then runs one
    /// instance), and optionally waits until every desired instance is ready.
    /// Starting a running server changes nothing; a failed instance keeps its
    /// backoff (a start never resets a crash loop).
    pub async fn start(&self, name: &str, wait: Wait) -> Result<ServerStatus> {
        self.ensure_running()?;
        self.controller.start(name).await?;
        match wait {
            Wait::No => self.status(name).await,
            Wait::UntilReady(timeout) => self.wait_ready(name, timeout).await,
        }
    }

    /// Stops every instance of a server and keeps its spec. Graceful stops
    /// wait up to the spec's grace period; forced ones kill at once. Returns
    /// when the instances are gone (or a runtime call failed and is retried).
    /// On a runtime that owns replicas (Kubernetes), which removes them
    /// itself, a stop they outlast by more than two minutes past the grace
    /// period fails with [`crate::ErrorKind::Timeout`]; the stop carries on.
    pub async fn stop(&self, name: &str, mode: StopMode) -> Result<ServerStatus> {
        self.ensure_running()?;
        self.controller.stop(name, mode).await?;
        self.status(name).await
    }

    /// Sets the desired replica count. 0 stops the server (phase Stopped).
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<()> {
        self.ensure_running()?;
        let max = self.controller.config().limits.max_replicas;
        if replicas > max {
            return Err(ValidationError::single(
                name,
                "replicas",
                format!("{replicas} is outside 0..={max} (the host's maximum)"),
            )
            .into());
        }
        self.controller.scale(name, replicas).await
    }

    /// Turns image update checks and automatic reinstalls on or off.
    pub async fn set_update_policy(&self, name: &str, policy: UpdatePolicy) -> Result<()> {
        self.ensure_running()?;
        self.controller.set_update_policy(name, policy).await
    }

    /// Waits until every desired instance is ready (or, at desired 0, until
    /// the server is stopped). Fails with [`crate::ErrorKind::Timeout`] naming the
    /// phase and the last failure reason.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<ServerStatus> {
        let mut rx = self.controller.watch(name)?;
        let settled = |s: &ServerStatus| match s.desired {
            0 => s.phase == ServerPhase::Stopped,
            _ => s.phase == ServerPhase::Running,
        };
        let wait = async {
            loop {
                if let Some(status) = rx.borrow_and_update().clone()
                    && settled(&status)
                {
                    return Ok(status);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::not_found(format!("server {name:?}")));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                let detail = match self.status(name).await {
                    Ok(s) => {
                        let reason = s
                            .instances
                            .iter()
                            .find_map(|i| i.reason.clone())
                            .map(|r| format!("; last failure: {r}"))
                            .unwrap_or_default();
                        format!(
                            "{} ({}/{} ready{reason})",
                            s.phase.name(),
                            s.ready,
                            s.desired
                        )
                    }
                    Err(e) => e.to_string(),
                };
                Err(Error::Timeout {
                    what: format!("server {name:?} to become ready; it is {detail}"),
                    after: timeout,
                })
            }
        }
    }

    /// What the servers run on: the backend, and the engine or cluster it
    /// talks to with its version (`Podman Engine 4.3.1`), for status pages
    /// and bug reports.
    pub fn runtime(&self) -> crate::status::RuntimeInfo {
        crate::status::RuntimeInfo {
            backend: self.controller.backend().to_owned(),
            version: self.controller.runtime_version(),
        }
    }

    /// Whether this host acts on the servers: always without leader
    /// election; with it, while this host holds the leader lease (a standby
    /// answers reads and takes host calls, which the leader carries out).
    /// For status pages and for finding the leader among replicas.
    pub fn is_leader(&self) -> bool {
        self.controller.is_leader()
    }

    /// A live MCP client to a ready instance of `name`, round-robin across
    /// ready replicas. It uses the instance's one session, which the health
    /// probes use too; it is safe to use from many tasks at once.
    pub async fn peer(&self, name: &str) -> Result<McpPeer> {
        self.ensure_running()?;
        self.controller.peer(name).await
    }

    /// The addresses the runtime serves `name` at as a whole, for a host to
    /// hand out: on Kubernetes the Service's ClusterIP, cluster DNS name,
    /// NodePorts and load balancer; empty for stdio servers and runtimes
    /// that reach instances one by one (use [`Lifecycle::peer`] there).
    pub async fn endpoints(&self, name: &str) -> Result<Vec<crate::ports::Endpoint>> {
        self.ensure_running()?;
        self.controller.endpoints(name).await
    }

    /// The last `tail` lines of output (stderr for stdio servers) of one
    /// instance of `name`, or of each instance its status lists, as
    /// `(instance, lines)` pairs, oldest line first. An unknown server, or
    /// an instance that is not one of the server's, is
    /// [`crate::ErrorKind::NotFound`]; an instance the runtime has already
    /// removed is left out of a whole-server read.
    pub async fn logs(
        &self,
        name: &str,
        instance: Option<&crate::ports::InstanceId>,
        tail: usize,
    ) -> Result<Vec<(crate::ports::InstanceId, Vec<String>)>> {
        self.ensure_running()?;
        self.controller.logs(name, instance, tail).await
    }

    /// The server's tools, from a cache kept for `tools_cache_ttl` (failures
    /// for `tools_cache_negative_ttl`) and dropped whenever the set of ready
    /// instances changes.
    pub async fn list_tools(&self, name: &str) -> Result<Arc<Vec<rmcp::model::Tool>>> {
        self.controller.list_tools(name).await
    }

    /// Checks one server's image now (even if no check is due) and returns
    /// its update status. A check runs only while the server is running with
    /// update checks on; a rollout in progress is verified instead.
    pub async fn check_updates_now(&self, name: &str) -> Result<UpdateStatus> {
        self.ensure_running()?;
        self.controller.check_updates_now(name).await
    }

    /// Runs one freshness cycle over every server now (what the controller
    /// does every `freshness_tick`), and reports what it did.
    pub async fn run_freshness_cycle(&self) -> Result<CycleReport> {
        self.ensure_running()?;
        self.controller.run_freshness_cycle().await
    }

    /// A stream of lifecycle events. A subscriber that falls more than 1024
    /// events behind loses the oldest (and is told so by the receiver).
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.controller.subscribe()
    }

    /// Lists every workload once and reconciles every server now, waiting for
    /// the passes to finish. The controller also does this on its own every
    /// `resync_interval`.
    pub async fn resync(&self) -> Result<ResyncReport> {
        self.ensure_running()?;
        self.controller.resync().await
    }

    /// Stops every server's instances (gracefully), then the controller. The
    /// store keeps every spec, so the next `Lifecycle` starts them again.
    pub async fn shutdown(self) -> Result<()> {
        self.controller.shutdown().await
    }

    /// Stops the controller and leaves every workload running, for the next
    /// `Lifecycle` on the same store to adopt. Waits for the tasks to end.
    pub async fn detach(self) {
        self.controller.stop_tasks().await;
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.controller.cancel();
    }
}
