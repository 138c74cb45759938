//! Host-wide settings of a [`crate::Lifecycle`].

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
            tools_cache_ttl: Duration::from_secs(30),
            tools_cache_negative_ttl: Duration::from_secs(5),
        }
    }
}
