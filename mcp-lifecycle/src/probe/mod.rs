//! Health probing: the [`Prober`] seam the controller calls to decide whether
//! an instance is ready and stays live.
//!
//! The controller owns *when* to probe and what a result means (through the
//! instance state machine); a prober owns only *how* to ask. The MCP prober
//! speaks `initialize`, `tools/list` and the configured readiness tool call;
//! [`crate::testing::FakeProber`] scripts results for tests.

use async_trait::async_trait;

use crate::ports::{InstanceObservation, Orchestrator};
use crate::spec::ServerSpec;

/// One probe's inputs.
pub struct ProbeTarget<'a> {
    /// The server's spec (health settings, transport).
    pub spec: &'a ServerSpec,
    /// The instance as the runtime last reported it.
    pub instance: &'a InstanceObservation,
    /// Whether this is a readiness probe (the instance is still starting).
    pub readiness: bool,
    /// The runtime, to open a connection if the prober has none yet.
    pub orchestrator: &'a dyn Orchestrator,
}

/// A probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The server answered correctly.
    Passed,
    /// It did not: a JSON-RPC error, `isError: true`, a transport error or a
    /// timeout. The reason names what failed.
    Failed(String),
}

/// Asks an instance whether it is healthy.
///
/// # Contract
///
/// `probe` must finish within the spec's `health.timeout` (return `Failed`
/// with a timeout reason rather than hang), must not panic, and is called for
/// one instance at a time from one server's task, but for many servers at once.
/// `forget` drops whatever the prober keeps for an instance that went away.
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    /// Probes one instance.
    async fn probe(&self, target: ProbeTarget<'_>) -> ProbeOutcome;

    /// Drops any session kept for `instance`. Default: nothing kept.
    fn forget(&self, _instance: &crate::InstanceId) {}
}
