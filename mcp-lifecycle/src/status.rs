//! What hosts read: [`ServerStatus`] per server, the [`LifecycleEvent`]s
//! streamed by [`crate::Lifecycle::subscribe`], and the reports of host
//! calls ([`ApplyOutcome`], [`ResyncReport`], [`CycleReport`]).
//!
//! Layer: data, below the controller and the facade. Plain values: this
//! module computes nothing from the runtime or the store.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ports::InstanceId;
pub use crate::records::freshness::UpdateStatus;
use crate::state::ServerPhase;
use crate::time::Timestamp;

/// One server's status: a consistent snapshot, current as of the server's
/// latest reconcile pass (a pass that changes nothing it shows keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStatus {
    /// The server's name.
    pub name: String,
    /// Its derived phase.
    pub phase: ServerPhase,
    /// How many instances should be ready.
    pub desired: u32,
    /// How many are ready.
    pub ready: u32,
    /// How many are pending or starting.
    pub starting: u32,
    /// How many are unhealthy.
    pub unhealthy: u32,
    /// How many have failed and wait for their retry.
    pub failed: u32,
    /// Whether the host stopped it.
    pub stopped: bool,
    /// The configured image (or command line).
    pub configured_source: String,
    /// The image being rolled out, pinned by digest, if any.
    pub rollout_image: Option<String>,
    /// Distinct image digests reported by ready instances.
    pub running_digests: Vec<String>,
    /// Image freshness and update bookkeeping.
    pub update: UpdateStatus,
    /// Every instance.
    pub instances: Vec<InstanceStatus>,
    /// The most recent events, oldest first (bounded).
    pub recent_events: Vec<LifecycleEvent>,
    /// Running totals since this process began managing the server.
    #[serde(default)]
    pub counters: ServerCounters,
    /// When this snapshot was computed: by the latest pass (or host call)
    /// that changed something it shows. Later passes that found nothing new
    /// leave it, so it is not a heartbeat.
    pub observed_at: Timestamp,
}

/// Running totals of what happened to a server's instances, counted by this
/// process since it began managing the server (a restarted host starts from
/// zero, as Prometheus counters do): for gateways' metrics and alerts, where
/// an instance's `attempt` resets after a stable run and cannot say how
/// often it failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerCounters {
    /// Instances that became failed (a crash, a failed start, or an
    /// instance killed for failing its liveness probes).
    pub failures: u64,
    /// Failed instances started again (each a restart after backoff).
    pub restarts: u64,
    /// Readiness and liveness probes that failed.
    pub probe_failures: u64,
}

/// One instance's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceStatus {
    /// Its id.
    pub id: InstanceId,
    /// Its phase name (`pending`, `starting`, `ready`, `unhealthy`, `failed`, `stopping`, `stopped`).
    pub phase: String,
    /// Why it is failed or unhealthy, or the last failure after recovery.
    pub reason: Option<String>,
    /// Consecutive failed attempts.
    pub attempt: u32,
    /// When a failed instance is retried.
    pub next_retry_at: Option<Timestamp>,
    /// The image digest it runs, if known.
    pub image_digest: Option<String>,
    /// Whether it runs the current spec.
    pub current: bool,
}

/// Something that happened to a server or instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleEvent {
    /// When.
    pub at: Timestamp,
    /// The server.
    pub server: String,
    /// The instance, if the event is about one.
    pub instance: Option<InstanceId>,
    /// What happened.
    pub kind: LifecycleEventKind,
    /// A human-readable account (names secret references, never values).
    pub message: String,
}

/// Kinds of [`LifecycleEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEventKind {
    /// A spec was created or changed.
    Applied,
    /// A server was deleted.
    Deleted,
    /// The host started, stopped or scaled a server.
    DesiredChanged,
    /// An instance was created.
    InstanceCreated,
    /// An instance changed phase.
    InstancePhaseChanged,
    /// An instance was removed.
    InstanceRemoved,
    /// The server's phase changed.
    PhaseChanged,
    /// An orphaned workload (no spec owns it) was removed, or one was adopted.
    Adopted,
    /// A runtime call failed; it will be retried.
    RuntimeError,
    /// Image freshness changed.
    FreshnessChanged,
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instance {
            Some(id) => write!(f, "{} {} {}: {}", self.at, self.server, id, self.message),
            None => write!(f, "{} {}: {}", self.at, self.server, self.message),
        }
    }
}

/// A one-word health verdict for dashboards and gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthSummary {
    /// Every desired instance is ready (or the server is stopped on purpose).
    Healthy,
    /// Some, not all, desired instances are ready.
    Degraded,
    /// Instances are wanted and none is ready.
    Unhealthy,
}

impl ServerStatus {
    /// Healthy, degraded or unhealthy, from the ready and desired counts.
    pub fn health(&self) -> HealthSummary {
        match (self.desired, self.ready) {
            (0, _) => HealthSummary::Healthy,
            (_, 0) => HealthSummary::Unhealthy,
            (d, r) if r >= d && self.phase == ServerPhase::Running => HealthSummary::Healthy,
            _ => HealthSummary::Degraded,
        }
    }

    /// A compact multi-line table, for CLIs and examples.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<20} {:<9} ready {}/{}  starting {}  unhealthy {}  failed {}\n  source {}  digests [{}]  freshness {}\n",
            self.name,
            self.phase.name(),
            self.ready,
            self.desired,
            self.starting,
            self.unhealthy,
            self.failed,
            self.configured_source,
            self.running_digests.join(", "),
            self.update.state.name(),
        );
        for i in &self.instances {
            let reason = match (i.phase.as_str(), &i.reason) {
                (_, None) => String::new(),
                ("failed" | "unhealthy", Some(r)) => r.clone(),
                (_, Some(r)) => format!("(last failure: {r})"),
            };
            out.push_str(&format!(
                "  {:<24} {:<10} attempt {:<2} {}\n",
                i.id.as_str(),
                i.phase,
                i.attempt,
                reason
            ));
        }
        out
    }
}

/// What the servers run on: the backend and the engine or cluster behind it
/// (see [`crate::ports::Orchestrator::runtime_version`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuntimeInfo {
    /// The backend's name: `local`, `docker`, `kubernetes`.
    pub backend: String,
    /// The engine or cluster and its version, where the backend has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What a resync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Servers reconciled (a server whose state and listing are unchanged
    /// since its last pass, with nothing due, is settled without a pass).
    pub servers: usize,
    /// Workloads the runtime listed.
    pub workloads: usize,
    /// Workloads removed because no spec owns them.
    pub orphans_removed: usize,
}

/// What one freshness cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Servers whose check ran.
    pub checked: usize,
    /// Distinct references resolved (registry requests made).
    pub resolved: usize,
    /// Rollout verifications that ran.
    pub verified: usize,
    /// Servers skipped because another host held their lease.
    pub leased_elsewhere: usize,
}

/// What [`crate::Lifecycle::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new server.
    Created,
    /// An existing server's spec changed; its instances are replaced rolling.
    Updated,
    /// The spec was already in force.
    Unchanged,
}
