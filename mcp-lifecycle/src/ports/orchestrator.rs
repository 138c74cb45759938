//! The [`Orchestrator`] port: the only thing that touches a runtime.
//!
//! The port is instance-granular. One *instance* is one process, container or
//! pod running one replica of a server. Scaling, retries with backoff and
//! rolling replacement are decided above the port (in `state/` and the
//! controller) and carried out through these few calls, so every backend gets
//! the same behaviour and a runtime never decides a restart on its own.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use super::replicas::{ReplicaDetail, ReplicaOwner};
use crate::error::Result;
use crate::secret::SecretValue;
use crate::spec::{Resources, Source, Transport};
use crate::time::Timestamp;

/// Label keys the library puts on every workload it creates, so it can find
/// and adopt them after a restart.
pub mod labels {
    /// Marks a workload as managed by mcp-lifecycle; the value is the manager's name.
    pub const MANAGED_BY: &str = "mcp-lifecycle.dev/managed-by";
    /// The server's name.
    pub const SERVER: &str = "mcp-lifecycle.dev/server";
    /// The instance id.
    pub const INSTANCE: &str = "mcp-lifecycle.dev/instance";
    /// The [`crate::ServerSpec::workload_hash`] the instance was created from.
    pub const SPEC_HASH: &str = "mcp-lifecycle.dev/spec-hash";

    /// Whether `labels` carry every key and value of `selector` (what
    /// [`super::Orchestrator::list`] filters by).
    pub fn matches(
        labels: &std::collections::BTreeMap<String, String>,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        selector
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

/// The identity of one instance: `<server>-<n>`, unique for the server's life.
/// Reused when a failed instance is retried in place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// The id of the `ordinal`-th instance ever created for `server`.
    pub fn new(server: &str, ordinal: u64) -> Self {
        InstanceId(format!("{server}-{ordinal}"))
    }

    /// An id as a backend reported it.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        InstanceId(raw.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment variable with its value resolved. Secret values stay redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedEnv {
    /// A plain value.
    Plain(String),
    /// A value from a secret.
    Secret(SecretValue),
}

impl ResolvedEnv {
    /// The value, for handing to the runtime.
    pub fn expose(&self) -> &str {
        match self {
            ResolvedEnv::Plain(v) => v,
            ResolvedEnv::Secret(s) => s.expose(),
        }
    }
}

/// Everything a backend needs to run one instance. Built by the controller
/// from a validated [`crate::ServerSpec`] with its secrets resolved.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// The instance's id.
    pub id: InstanceId,
    /// The server it belongs to.
    pub server: String,
    /// The spec's workload hash.
    pub spec_hash: String,
    /// What to run. For images, this may be a digest-pinned reference during a rollout.
    pub source: Source,
    /// How MCP is spoken to it.
    pub transport: Transport,
    /// Environment, in spec order, secrets resolved.
    pub env: Vec<(String, ResolvedEnv)>,
    /// Limits.
    pub resources: Resources,
    /// Labels to set: the spec's labels plus the library's [`labels`].
    pub labels: BTreeMap<String, String>,
    /// Grace period for a graceful stop.
    pub stop_grace_period: Duration,
}

impl InstanceSpec {
    /// The secret values in its environment (clones: the same registrations).
    pub(crate) fn secret_values(&self) -> Vec<SecretValue> {
        self.env
            .iter()
            .filter_map(|(_, value)| match value {
                ResolvedEnv::Secret(secret) => Some(secret.clone()),
                ResolvedEnv::Plain(_) => None,
            })
            .collect()
    }
}

/// What the runtime says an instance is doing. This is the runtime's view
/// only; whether it is *ready* is decided by MCP probes above the port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// Created but not started (or being pulled).
    Created,
    /// The process is running.
    Running,
    /// The process has exited.
    Exited {
        /// Its exit code, if it exited on its own.
        code: Option<i32>,
        /// Whether the runtime killed it for exceeding its memory limit.
        oom_killed: bool,
        /// The runtime's words, if any (`"Error: image not found"`).
        reason: Option<String>,
    },
}

/// One instance as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceObservation {
    /// The instance's id.
    pub id: InstanceId,
    /// The server it belongs to (from its labels).
    pub server: String,
    /// The spec hash it was created from (from its labels).
    pub spec_hash: String,
    /// What it is doing.
    pub status: RuntimeStatus,
    /// The image digest it runs (`sha256:…`), when the runtime knows it.
    pub image_digest: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// When the runtime last started it.
    pub started_at: Option<Timestamp>,
    /// What a runtime that owns replicas adds (restarts, why it waits);
    /// `None` from instance-granular backends.
    pub replica: Option<ReplicaDetail>,
}

/// How to stop an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Ask it to stop (SIGTERM), and kill it after the grace period.
    #[default]
    Graceful,
    /// Kill it now.
    Force,
}

/// A byte stream to a stdio instance: its stdout to read, its stdin to write.
pub struct StdioStream {
    /// The instance's stdout (MCP frames only; stderr goes to the logs).
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// The instance's stdin.
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
}

impl fmt::Debug for StdioStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StdioStream")
    }
}

/// How to reach an instance's MCP endpoint.
#[derive(Debug)]
pub enum Connection {
    /// A byte stream (local pipe, container attach, pod attach).
    Stdio(StdioStream),
    /// A URL for streamable HTTP or SSE.
    Url(String),
}

/// Where a host can hand a server out: one address the runtime serves it at
/// (not a single instance: readiness per instance is the probes' business).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    /// What kind of address it is.
    pub kind: EndpointKind,
    /// The MCP URL (`http://HOST:PORT/PATH`).
    pub url: String,
}

/// Kinds of [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// A cluster-internal virtual IP (Kubernetes `ClusterIP`).
    ClusterIp,
    /// The cluster's DNS name for the service (`NAME.NAMESPACE.svc.cluster.local`).
    ClusterDns,
    /// A port on a node's address (Kubernetes `NodePort`).
    NodePort,
    /// A load balancer's IP or hostname.
    LoadBalancer,
}

/// What happened to an instance, pushed by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The instance.
    pub instance: InstanceId,
    /// Its server.
    pub server: String,
    /// What happened.
    pub kind: RuntimeEventKind,
}

/// Kinds of [`RuntimeEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEventKind {
    /// The process started.
    Started,
    /// The process exited (crash, kill, OOM, or a stop we asked for).
    Exited {
        /// Exit code, if known.
        code: Option<i32>,
        /// Whether it was killed for memory.
        oom_killed: bool,
    },
    /// The instance was removed.
    Removed,
    /// Something else changed that a runtime owning its replicas decides
    /// (scheduling, pulling an image, waiting out its restart back-off).
    Changed,
}

/// A stream of runtime events. Ends only when the backend is dropped.
pub type EventStream = BoxStream<'static, RuntimeEvent>;

/// The runtime port. Implemented by the local-process, Docker and Kubernetes
/// backends and by [`crate::testing::FakeOrchestrator`].
///
/// # Contract
///
/// Every method is idempotent: asking for the state an instance is already in
/// succeeds and changes nothing. Instances are found by id and by the
/// [`labels`] the backend sets from [`InstanceSpec::labels`]. Errors use
/// [`crate::ErrorKind::NotFound`] for a missing instance where the method says
/// so, [`crate::ErrorKind::Unavailable`] when the runtime cannot be reached,
/// and [`crate::ErrorKind::Backend`] otherwise. Every backend must pass
/// `testing::orchestrator_conformance`.
#[async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// A short name for the backend (`local`, `docker`, `kubernetes`, `fake`).
    fn backend(&self) -> &'static str;

    /// The engine or cluster the backend talks to and its version, as it
    /// names itself (`Docker Engine - Community 20.10.24`, `Podman Engine
    /// 4.3.1`, `Kubernetes v1.20.9`), learnt when the backend connected.
    /// `None` (the default) where there is nothing beyond the host itself.
    fn runtime_version(&self) -> Option<String> {
        None
    }

    /// Ensures the instance exists and is running. Creates it if missing;
    /// starts it again in place (same id) if it exited; does nothing if it is
    /// already running. Returns once the runtime has started the process, not
    /// when MCP is ready.
    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceObservation>;

    /// Stops a running instance and keeps it (its logs, its exit state).
    /// Graceful waits up to `grace` after SIGTERM, then kills. Stopping an
    /// instance that is not running succeeds. A missing instance is `NotFound`.
    async fn stop(&self, id: &InstanceId, mode: StopMode, grace: Duration) -> Result<()>;

    /// Removes the instance, killing it first if it runs. Removing a missing
    /// instance succeeds.
    async fn remove(&self, id: &InstanceId) -> Result<()>;

    /// Every instance whose labels include all of `selector`.
    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<InstanceObservation>>;

    /// One instance. A missing instance is `NotFound`.
    async fn inspect(&self, id: &InstanceId) -> Result<InstanceObservation>;

    /// The last `tail` lines of the instance's output (stderr for stdio servers).
    /// A missing instance is `NotFound`.
    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<String>>;

    /// Opens the way to the instance's MCP endpoint. For stdio this hands over
    /// the instance's one byte stream; calling again replaces it. A missing or
    /// stopped instance is `NotFound` or `Unavailable`.
    async fn connect(&self, id: &InstanceId) -> Result<Connection>;

    /// A stream of runtime events for instances this backend manages. Each call
    /// returns a new subscription; events before the call are not replayed, so
    /// subscribe before listing.
    fn events(&self) -> EventStream;

    /// The addresses the runtime serves a server at as a whole (a Service),
    /// for hosts to hand out. Empty (the default) where the runtime has none:
    /// stdio servers, and backends that reach instances one by one.
    async fn endpoints(&self, server: &str) -> Result<Vec<Endpoint>> {
        let _ = server;
        Ok(Vec::new())
    }

    /// The replica-owning capability, for a runtime that keeps a server's
    /// replicas itself (Kubernetes). `None` (the default) means the
    /// controller starts, restarts and replaces instances one by one.
    fn replica_owner(&self) -> Option<&dyn ReplicaOwner> {
        None
    }
}
