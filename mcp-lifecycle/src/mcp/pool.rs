//! The sessions of every instance, opened on first use and dropped when the
//! instance goes away or the connection dies.
//!
//! Opening (the MCP `initialize` handshake) can take longer than one probe's
//! timeout: a server may be slow to start. The handshake therefore lives in a
//! shared future kept here, not in the caller: a probe that gives up leaves it
//! in place, and the next probe resumes it. Dropping it would close the only
//! stdio stream a backend can hand out for the instance's current run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::error::{Error, Result};
use crate::ports::{InstanceId, Orchestrator};

use super::session::{McpSession, OpenError};

type Opening = Shared<BoxFuture<'static, Result<Arc<McpSession>, OpenError>>>;

/// Why [`SessionPool::try_get_or_open`] found no session.
pub(super) struct OpenFailure {
    pub(super) error: Error,
    /// The server did not accept connections (see [`OpenError`]).
    pub(super) not_listening: bool,
}

impl From<Error> for OpenFailure {
    fn from(error: Error) -> Self {
        OpenFailure {
            error,
            not_listening: false,
        }
    }
}

#[derive(Default)]
struct Sessions {
    open: HashMap<InstanceId, Arc<McpSession>>,
    opening: HashMap<InstanceId, Opening>,
}

/// One MCP session per instance, shared by probes and hosts.
#[derive(Default)]
pub struct SessionPool {
    sessions: Mutex<Sessions>,
    /// Serializes `connect` calls, so two callers never ask a backend for a
    /// stream twice (a stdio stream can be handed out only once per run).
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SessionPool")
            .field("open", &s.open.len())
            .field("opening", &s.opening.len())
            .finish()
    }
}

impl SessionPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, id: &InstanceId) -> Option<Arc<McpSession>> {
        let mut s = self.lock();
        match s.open.get(id) {
            Some(session) if session.is_closed() => {
                s.open.remove(id);
                None
            }
            other => other.cloned(),
        }
    }

    /// The instance's session, opening one through `orchestrator` if there is
    /// none or the last one died. If the caller stops waiting (a timeout), the
    /// handshake carries on with the next caller.
    pub async fn get_or_open(
        &self,
        id: &InstanceId,
        orchestrator: &dyn Orchestrator,
    ) -> Result<Arc<McpSession>> {
        self.try_get_or_open(id, orchestrator)
            .await
            .map_err(|failure| failure.error)
    }

    /// [`SessionPool::get_or_open`], saying whether the server was not
    /// listening yet.
    pub(super) async fn try_get_or_open(
        &self,
        id: &InstanceId,
        orchestrator: &dyn Orchestrator,
    ) -> Result<Arc<McpSession>, OpenFailure> {
        if let Some(session) = self.cached(id) {
            return Ok(session);
        }
        let opening = {
            let _connecting = self.connecting.lock().await;
            if let Some(session) = self.cached(id) {
                return Ok(session);
            }
            let in_flight = self.lock().opening.get(id).cloned();
            match in_flight {
                Some(opening) => opening,
                None => {
                    let connection = orchestrator.connect(id).await?;
                    let owned = id.clone();
                    let opening: Opening =
                        async move { McpSession::try_open(&owned, connection).await.map(Arc::new) }
                            .boxed()
                            .shared();
                    self.lock().opening.insert(id.clone(), opening.clone());
                    opening
                }
            }
        };
        let result = opening.clone().await;
        let mut s = self.lock();
        // Only the handshake we awaited is settled here; a newer one (after a
        // forget) is left alone.
        if s.opening.get(id).is_some_and(|f| f.ptr_eq(&opening)) {
            s.opening.remove(id);
            if let Ok(session) = &result {
                s.open.insert(id.clone(), session.clone());
            }
        }
        result.map_err(|e| OpenFailure {
            not_listening: e.not_listening,
            error: e.into_error(id),
        })
    }

    /// The instance's session if one is open and alive.
    pub fn get(&self, id: &InstanceId) -> Option<Arc<McpSession>> {
        self.cached(id)
    }

    /// Drops the instance's session and any handshake in flight (it stopped,
    /// restarted or was removed).
    pub fn forget(&self, id: &InstanceId) {
        let removed = {
            let mut s = self.lock();
            s.opening.remove(id);
            s.open.remove(id)
        };
        if let Some(session) = removed {
            session.cancel();
        }
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
