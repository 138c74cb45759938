//! Host-wide settings of a [`crate::Lifecycle`].
//!
//! Layer: data, below the controller and the facade.

use std::time::Duration;

use crate::spec::Limits;
use crate::state::{BackoffPolicy, FreshnessPolicy};

/// Settings that apply to every server a [`crate::Lifecycle`] manages.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// The value of the `managed-by` label on every workload. Two hosts that
    /// must not touch each other's workloads on one runtime use two names.
    /// Default: `mcp-lifecycle`.
    pub manager_name: String,
    /// Bounds on specs (maximum replicas, longest duration).
    pub limits: Limits,
    /// Restart backoff for failed instances.
    pub backoff: BackoffPolicy,
    /// How often everything is listed and reconciled even without events. Default: 60 s.
    pub resync_interval: Duration,
    /// How many servers are reconciled at once. Default: 64.
    pub max_concurrent_reconciles: usize,
    /// How often a starting instance is probed for readiness (capped by the
    /// spec's interval). Default: 1 s.
    pub startup_probe_interval: Duration,
    /// How many recent events each status keeps. Default: 32.
    pub event_history: usize,
    /// Image freshness checks and rollouts.
    pub freshness: FreshnessPolicy,
    /// How often the freshness loop looks for due checks and verifications.
    /// Default: 10 s. (When checks run is the freshness policy's interval.)
    pub freshness_tick: Duration,
    /// How long one registry resolution may take. Default: 10 s.
    pub resolve_timeout: Duration,
    /// How many references are resolved at once. Default: 8.
    pub resolve_concurrency: usize,
    /// How long a host holds a server's freshness lease. Default: 60 s.
    pub freshness_lease_ttl: Duration,
    /// Leader election among hosts sharing one store. `None` (the default)
    /// for a single host: it always acts and writes no lease.
    pub leader_election: Option<LeaderElection>,
    /// This host's name in leases. Default: the manager name, the process
    /// id and a per-process counter, so several `Lifecycle`s differ.
    pub holder_id: Option<String>,
    /// How long a server's `tools/list` answer is reused. Default: 30 s.
    pub tools_cache_ttl: Duration,
    /// How long a failed `tools/list` is remembered. Default: 5 s.
    pub tools_cache_negative_ttl: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            manager_name: "mcp-lifecycle".to_owned(),
            limits: Limits::default(),
            backoff: BackoffPolicy::default(),
            resync_interval: Duration::from_secs(60),
            max_concurrent_reconciles: 64,
            startup_probe_interval: Duration::from_secs(1),
            event_history: 32,
            freshness: FreshnessPolicy::default(),
            freshness_tick: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            resolve_concurrency: 8,
            freshness_lease_ttl: Duration::from_secs(60),
            holder_id: None,
            leader_election: None,
            tools_cache_ttl: Duration::from_secs(30),
            tools_cache_negative_ttl: Duration::from_secs(5),
        }
    }
}

/// Leader election settings: only the host holding the leader lease
/// reconciles; the others stand by and take over when it lapses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderElection {
    /// How long the lease lasts without renewal. Default: 15 s.
    pub lease_ttl: Duration,
    /// How often the leader renews it (and standbys try it). Default: 5 s.
    pub renew_every: Duration,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            lease_ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}
