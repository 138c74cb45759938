//! What hosts read from the controller: snapshots of status, a watch on one
//! server's status, instances' logs, live MCP peers (round-robin over ready instances), the
//! cached tool lists, and on-demand resyncs and freshness cycles.
//!
//! Layer: controller. Reads take no decision and write nothing but caches.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::mcp::McpPeer;
use crate::ports::InstanceId;
use crate::status::{CycleReport, ResyncReport, ServerStatus, UpdateStatus};

use super::Controller;
use super::intents::publish;
use super::server::ServerSlot;
use super::{freshness, reconcile, tasks};

impl Controller {
    pub(crate) async fn list(&self) -> Vec<ServerStatus> {
        let mut slots = self.shared.slots();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if let Some(status) = self.snapshot(&slot).await {
                out.push(status);
            }
        }
        out
    }

    /// A watch on one server's status snapshots (`None` before its first).
    pub(crate) fn watch(&self, name: &str) -> Result<watch::Receiver<Option<ServerStatus>>> {
        Ok(self.slot(name)?.snapshot.subscribe())
    }

    /// The published status without waiting for the server's lock (a pass
    /// holds it while it probes); computed under the lock only before the
    /// first publication. A server being deleted has none (its deletion
    /// withdraws the published status).
    async fn snapshot(&self, slot: &ServerSlot) -> Option<ServerStatus> {
        if let Some(status) = slot.snapshot.borrow().clone() {
            return Some(status);
        }
        let st = slot.state.lock().await;
        if st.record().is_none_or(|r| r.value.deleting) {
            return None;
        }
        Some(reconcile::status_now(&self.shared, slot, &st))
    }

    /// One server's status: the snapshot taken after its latest pass.
    pub(crate) async fn status(&self, name: &str) -> Result<ServerStatus> {
        let slot = self.slot(name)?;
        self.snapshot(&slot)
            .await
            .ok_or_else(|| Error::not_found(format!("server {name:?}")))
    }

    /// The addresses the runtime serves a server at (from its cache).
    pub(crate) async fn endpoints(&self, name: &str) -> Result<Vec<crate::ports::Endpoint>> {
        self.slot(name)?;
        self.shared.orchestrator.endpoints(name).await
    }

    /// The last `tail` log lines of one instance of `name`, or of each of
    /// its instances (those in its status), by instance id. An instance the
    /// runtime no longer has is left out of a whole-server read.
    pub(crate) async fn logs(
        &self,
        name: &str,
        instance: Option<&InstanceId>,
        tail: usize,
    ) -> Result<Vec<(InstanceId, Vec<String>)>> {
        let status = self.status(name).await?;
        let ids: Vec<InstanceId> = match instance {
            Some(id) => {
                if !status.instances.iter().any(|i| &i.id == id) {
                    return Err(Error::not_found(format!(
                        "instance {id} of server {name:?}"
                    )));
                }
                vec![id.clone()]
            }
            None => status.instances.into_iter().map(|i| i.id).collect(),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.shared.orchestrator.logs(&id, tail).await {
                Ok(lines) => out.push((id, lines)),
                Err(e) if instance.is_none() && e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(crate) async fn peer(&self, name: &str) -> Result<McpPeer> {
        let slot = self.slot(name)?;
        let ready = slot.state.lock().await.ready.clone();
        if ready.is_empty() {
            return Err(Error::unavailable(
                format!("server {name:?}"),
                "no instance is ready",
            ));
        }
        let start = slot
            .next_peer
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut last_error = None;
        for k in 0..ready.len() {
            let id = &ready[(start + k) % ready.len()];
            match self
                .shared
                .sessions
                .get_or_open(id, self.shared.orchestrator.as_ref())
                .await
            {
                Ok(session) => return Ok(McpPeer::new(name, session)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::unavailable(format!("server {name:?}"), "no instance is ready")
        }))
    }

    pub(crate) async fn list_tools(&self, name: &str) -> Result<Arc<Vec<rmcp::model::Tool>>> {
        use crate::mcp::tools_cache::Lookup;
        let slot = self.slot(name)?;
        let generation = slot
            .ready_generation
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = self.shared.clock.now();
        match self.shared.tools_cache.get(name, generation, now) {
            Lookup::Hit(tools) => return Ok(tools),
            Lookup::NegativeHit(reason) => {
                return Err(Error::unavailable(
                    format!("tools of server {name:?}"),
                    reason,
                ));
            }
            Lookup::Miss => {}
        }
        let listed = match self.peer(name).await {
            Ok(peer) => peer.list_tools().await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(tools) => {
                let tools = Arc::new(tools);
                self.shared
                    .tools_cache
                    .put_tools(name, generation, now, tools.clone());
                Ok(tools)
            }
            Err(e) => {
                self.shared
                    .tools_cache
                    .put_failure(name, generation, now, e.to_string());
                Err(e)
            }
        }
    }

    pub(crate) async fn check_updates_now(&self, name: &str) -> Result<UpdateStatus> {
        self.slot(name)?;
        freshness::cycle(&self.shared, Some(name)).await?;
        let slot = self.slot(name)?;
        let mut st = slot.state.lock().await;
        publish(&self.shared, &slot, &mut st);
        Ok(UpdateStatus::from(&st.update.value))
    }

    pub(crate) async fn run_freshness_cycle(&self) -> Result<CycleReport> {
        freshness::cycle(&self.shared, None).await
    }

    pub(crate) async fn resync(&self) -> Result<ResyncReport> {
        tasks::resync(&self.shared).await
    }
}
