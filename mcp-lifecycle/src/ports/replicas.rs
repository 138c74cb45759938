//! [`ReplicaOwner`]: the capability of a runtime that owns a server's
//! replicas, restarts and rollouts itself (Kubernetes: a Deployment per
//! server), and what such a runtime reports about each replica.
//!
//! A backend with this capability still implements [`super::Orchestrator`]
//! for everything that is per instance (list, inspect, logs, connect, a
//! forced stop of one replica, events); it returns `Some` from
//! [`super::Orchestrator::replica_owner`], and the controller then hands it
//! the whole server as one [`WorkloadSpec`] instead of starting instances
//! one by one. The controller never calls `Orchestrator::start` on it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::orchestrator::{InstanceId, InstanceSpec};
use crate::error::Result;
use crate::time::Timestamp;

/// One server's workload, for a runtime that owns its replicas.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// What every replica runs. Its `id` is the server's name (replicas are
    /// named by the runtime); its labels carry no instance label.
    pub template: InstanceSpec,
    /// How many replicas the runtime should keep (0 when the server is stopped).
    pub replicas: u32,
}

/// What a replica-owning runtime says about one replica beyond
/// [`super::RuntimeStatus`]: restarts it made itself, why it waits, and
/// whether the replica runs the workload's current template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDetail {
    /// How often the runtime restarted the replica's process in place.
    pub restarts: u32,
    /// Why it is not running, in the runtime's words (`CrashLoopBackOff`,
    /// `ImagePullBackOff`, `ErrImagePull`, `CreateContainerConfigError`,
    /// `Unschedulable`, `OOMKilled`), with the runtime's message.
    pub waiting: Option<WaitingReason>,
    /// The exit code of the last terminated run, if any.
    pub last_exit_code: Option<i32>,
    /// Whether the last terminated run was killed for memory.
    pub last_oom_killed: bool,
    /// When the runtime will try again (the end of its back-off), if known.
    pub next_retry_at: Option<Timestamp>,
    /// Whether the runtime is removing the replica.
    pub terminating: bool,
    /// What the runtime currently holds as the library's readiness verdict
    /// (the readiness gate's condition), if it holds one.
    pub ready_gate: Option<bool>,
}

/// Why a replica is not running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingReason {
    /// The runtime's short reason (`CrashLoopBackOff`).
    pub reason: String,
    /// The runtime's message, if any (the scheduler's or the kubelet's words).
    pub message: Option<String>,
}

/// The capability of a runtime that owns replicas, restarts and rollouts.
///
/// # Contract
///
/// Every method is idempotent. `apply_workload` makes the runtime converge
/// on the template and replica count (a changed template starts the
/// runtime's own rollout, which waits for [`ReplicaOwner::set_ready`]).
/// `delete_workload` removes everything the backend created for the server;
/// deleting a missing workload succeeds. `set_ready` on a missing replica is
/// `NotFound`.
#[async_trait]
pub trait ReplicaOwner: Send + Sync + 'static {
    /// Creates or updates the server's workload (template and replicas).
    async fn apply_workload(&self, workload: &WorkloadSpec) -> Result<()>;

    /// Sets the replica count alone, leaving the template as it is.
    async fn scale(&self, server: &str, replicas: u32) -> Result<()>;

    /// Removes the server's workload and everything created for it.
    async fn delete_workload(&self, server: &str) -> Result<()>;

    /// Records the library's readiness verdict on a replica, so the runtime's
    /// own routing and rollouts wait for MCP readiness.
    async fn set_ready(&self, replica: &InstanceId, ready: bool) -> Result<()>;
}
