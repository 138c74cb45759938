//! [`LifecycleBuilder`]: assembles the ports and settings of a
//! [`Lifecycle`], filling in the defaults, and starts its controller.
//!
//! Layer: facade.

use std::sync::Arc;

use crate::config::LifecycleConfig;
use crate::controller::{Controller, Parts};
use crate::error::{Error, Result};
use crate::mcp::{McpProber, SessionPool};
use crate::ports::{ImageResolver, Orchestrator, SecretSource, StaticSecretSource, Store};
use crate::probe::Prober;
use crate::store::InMemoryStore;
use crate::time::{Clock, SystemClock};

use super::Lifecycle;

/// Builds a [`Lifecycle`].
pub struct LifecycleBuilder {
    orchestrator: Option<Arc<dyn Orchestrator>>,
    store: Option<Arc<dyn Store>>,
    secrets: Option<Arc<dyn SecretSource>>,
    prober: Option<Arc<dyn Prober>>,
    resolver: Option<Arc<dyn ImageResolver>>,
    clock: Option<Arc<dyn Clock>>,
    config: LifecycleConfig,
}

impl LifecycleBuilder {
    pub(super) fn new() -> Self {
        LifecycleBuilder {
            orchestrator: None,
            store: None,
            secrets: None,
            prober: None,
            resolver: None,
            clock: None,
            config: LifecycleConfig::default(),
        }
    }

    /// The runtime backend. Required.
    pub fn orchestrator(mut self, orchestrator: Arc<dyn Orchestrator>) -> Self {
        self.orchestrator = Some(orchestrator);
        self
    }

    /// Where state lives. Default: a fresh [`InMemoryStore`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where secret references resolve. Default: an empty source, so any
    /// secret reference fails to start (loudly) until one is given.
    pub fn secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// How instances are probed. Default: [`McpProber`], which speaks MCP
    /// over the same sessions [`Lifecycle::peer`] hands out.
    pub fn prober(mut self, prober: Arc<dyn Prober>) -> Self {
        self.prober = Some(prober);
        self
    }

    /// How image references resolve to digests, for freshness checks.
    /// Without one, freshness stays `unknown` and no update is checked.
    pub fn resolver(mut self, resolver: Arc<dyn ImageResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Where time is read. Default: [`SystemClock`]; tests under paused tokio
    /// time use [`crate::TokioClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Host-wide settings.
    pub fn config(mut self, config: LifecycleConfig) -> Self {
        self.config = config;
        self
    }

    /// Loads state from the store, lists the runtime's workloads, adopts what
    /// belongs to known servers, removes what no spec owns, and starts the
    /// controller. Must run inside a tokio runtime.
    pub async fn build(self) -> Result<Lifecycle> {
        let orchestrator = self
            .orchestrator
            .ok_or_else(|| Error::invalid("lifecycle builder", "an orchestrator is required"))?;
        let sessions = Arc::new(SessionPool::new());
        let prober = self
            .prober
            .unwrap_or_else(|| Arc::new(McpProber::new(sessions.clone())));
        let controller = Controller::launch(Parts {
            orchestrator,
            store: self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new())),
            secrets: self
                .secrets
                .unwrap_or_else(|| Arc::new(StaticSecretSource::new())),
            prober,
            sessions,
            resolver: self.resolver,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            config: self.config,
        })
        .await?;
        Ok(Lifecycle { controller })
    }
}
