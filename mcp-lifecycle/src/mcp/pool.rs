//! The sessions of every instance, opened on first use and dropped when the
//! instance goes away or the connection dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::ports::{InstanceId, Orchestrator};

use super::session::McpSession;

/// One MCP session per instance, shared by probes and hosts.
#[derive(Default)]
pub struct SessionPool {
    sessions: Mutex<HashMap<InstanceId, Arc<McpSession>>>,
    /// Serializes opening per instance, so two callers never open two
    /// sessions (a stdio stream can be handed out only once).
    opening: tokio::sync::Mutex<HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        f.debug_struct("SessionPool").field("open", &open).finish()
    }
}

impl SessionPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn cached(&self, id: &InstanceId) -> Option<Arc<McpSession>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(id) {
            Some(s) if s.is_closed() => {
                sessions.remove(id);
                None
            }
            other => other.cloned(),
        }
    }

    /// The instance's session, opening one through `orchestrator` if there is
    /// none or the last one died.
    pub async fn get_or_open(
        &self,
        id: &InstanceId,
        orchestrator: &dyn Orchestrator,
    ) -> Result<Arc<McpSession>> {
        if let Some(session) = self.cached(id) {
            return Ok(session);
        }
        let gate = {
            let mut opening = self.opening.lock().await;
            opening.entry(id.clone()).or_default().clone()
        };
        let _guard = gate.lock().await;
        if let Some(session) = self.cached(id) {
            return Ok(session);
        }
        let connection = orchestrator.connect(id).await?;
        let session = Arc::new(McpSession::open(id, connection).await?);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), session.clone());
        Ok(session)
    }

    /// The instance's session if one is open and alive.
    pub fn get(&self, id: &InstanceId) -> Option<Arc<McpSession>> {
        self.cached(id)
    }

    /// Drops the instance's session (it stopped, restarted or was removed).
    pub fn forget(&self, id: &InstanceId) {
        let removed = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(session) = removed {
            session.cancel();
        }
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
