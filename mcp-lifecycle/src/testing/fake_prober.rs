//! [`FakeProber`]: scripted probe results, so controller behaviour can be
//! tested without speaking MCP.
//!
//! By default every probe passes. A test can make a server's (or one
//! instance's) probes fail, or make readiness arrive only after a delay
//! measured on tokio's clock (so paused-time tests control it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::InstanceId;
use crate::probe::{ProbeOutcome, ProbeTarget, Prober};

#[derive(Default)]
struct Script {
    failing_servers: HashMap<String, String>,
    failing_instances: HashMap<InstanceId, String>,
    ready_after: HashMap<String, Duration>,
    first_seen: HashMap<InstanceId, tokio::time::Instant>,
    probes: u64,
}

/// Scripted probe results. Cheap to clone; clones share the script.
#[derive(Clone, Default)]
pub struct FakeProber {
    script: Arc<Mutex<Script>>,
}

impl std::fmt::Debug for FakeProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProber")
            .field("probes", &self.probes())
            .finish()
    }
}

impl FakeProber {
    /// Every probe passes.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every probe of `server`'s instances fails with `reason` until [`FakeProber::heal`].
    pub fn fail_server(&self, server: &str, reason: &str) {
        self.with(|s| {
            s.failing_servers
                .insert(server.to_owned(), reason.to_owned())
        });
    }

    /// Probes of one instance fail with `reason` until [`FakeProber::heal`].
    pub fn fail_instance(&self, id: &InstanceId, reason: &str) {
        self.with(|s| s.failing_instances.insert(id.clone(), reason.to_owned()));
    }

    /// Clears every failure for `server` and its instances.
    pub fn heal(&self, server: &str) {
        self.with(|s| {
            s.failing_servers.remove(server);
            let prefix = format!("{server}-");
            s.failing_instances
                .retain(|id, _| !id.as_str().starts_with(&prefix));
        });
    }

    /// An instance of `server` answers readiness only `delay` after its first
    /// probe (a slow start).
    pub fn ready_after(&self, server: &str, delay: Duration) {
        self.with(|s| s.ready_after.insert(server.to_owned(), delay));
    }

    /// How many probes ran.
    pub fn probes(&self) -> u64 {
        self.with(|s| s.probes)
    }
}

#[async_trait]
impl Prober for FakeProber {
    async fn probe(&self, target: ProbeTarget<'_>) -> ProbeOutcome {
        let server = &target.spec.name;
        let id = &target.instance.id;
        let now = tokio::time::Instant::now();
        self.with(|s| {
            s.probes += 1;
            if let Some(reason) = s
                .failing_instances
                .get(id)
                .or_else(|| s.failing_servers.get(server))
            {
                return ProbeOutcome::Failed(reason.clone());
            }
            if let Some(delay) = s.ready_after.get(server).copied() {
                let first = *s.first_seen.entry(id.clone()).or_insert(now);
                if now.duration_since(first) < delay {
                    return ProbeOutcome::Failed("connection refused (still starting)".into());
                }
            }
            ProbeOutcome::Passed
        })
    }

    fn forget(&self, instance: &InstanceId) {
        self.with(|s| s.first_seen.remove(instance));
    }
}
