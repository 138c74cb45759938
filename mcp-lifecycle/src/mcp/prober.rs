//! [`McpProber`]: health checks by speaking MCP.
//!
//! Liveness is `tools/list` (or a configured tool call); readiness is the
//! liveness check plus the configured readiness tool call. A JSON-RPC error,
//! a tool result with `isError: true`, a transport error or a timeout is a
//! failure. Probes use the instance's one shared session.
//!
//! A readiness probe that finds nothing listening at an HTTP server's URL
//! (connection refused) tries again within the probe, for up to half its
//! timeout: a server binds its port a moment after it starts, and a failed
//! readiness probe would otherwise wait out the controller's startup probe
//! interval (1 s by default) before the next try.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, JsonObject};

use crate::ports::InstanceId;
use crate::probe::{ProbeOutcome, ProbeTarget, Prober};
use crate::spec::{LivenessCheck, ReadinessCall};

use super::pool::SessionPool;
use super::session::McpSession;

/// The first wait before connecting again to a server not listening yet; it
/// doubles up to [`LISTEN_RETRY_MAX`].
const LISTEN_RETRY_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between two such connection attempts.
const LISTEN_RETRY_MAX: Duration = Duration::from_millis(100);

/// Probes instances over MCP, through a [`SessionPool`] it shares with
/// [`crate::Lifecycle::peer`].
#[derive(Debug, Clone)]
pub struct McpProber {
    pool: Arc<SessionPool>,
}

impl McpProber {
    /// A prober using (and filling) `pool`.
    pub fn new(pool: Arc<SessionPool>) -> Self {
        McpProber { pool }
    }

    /// The pool of sessions.
    pub fn pool(&self) -> &Arc<SessionPool> {
        &self.pool
    }
}

async fn call(session: &McpSession, call: &ReadinessCall) -> Result<(), String> {
    let mut params = CallToolRequestParams::new(call.tool.clone());
    params.arguments = match &call.arguments {
        serde_json::Value::Object(map) => Some(map.clone()),
        _ => Some(JsonObject::new()),
    };
    match session.peer().call_tool(params).await {
        Err(e) => Err(format!("tool {:?}: {e}", call.tool)),
        Ok(result) if result.is_error == Some(true) => {
            let text: Vec<String> = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect();
            Err(format!(
                "tool {:?} answered isError: true: {}",
                call.tool,
                truncate(&text.join(" "), 200)
            ))
        }
        Ok(_) => Ok(()),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

async fn check(session: &McpSession, target: &ProbeTarget<'_>) -> Result<(), String> {
    match &target.spec.health.liveness {
        LivenessCheck::ToolsList => {
            session
                .peer()
                .list_tools(None)
                .await
                .map_err(|e| format!("tools/list: {e}"))?;
        }
        LivenessCheck::Tool(c) => call(session, c).await?,
    }
    if target.readiness
        && let Some(c) = &target.spec.health.readiness
    {
        call(session, c).await?;
    }
    Ok(())
}

impl McpProber {
    /// The instance's session. A readiness probe connects again while the
    /// server is not listening yet, until half the probe's timeout has passed
    /// (then the refusal is the probe's failure, well before its timeout).
    async fn session(&self, target: &ProbeTarget<'_>) -> Result<Arc<McpSession>, String> {
        let began = tokio::time::Instant::now();
        let budget = target.spec.health.timeout / 2;
        let mut wait = LISTEN_RETRY_FIRST;
        loop {
            match self
                .pool
                .try_get_or_open(&target.instance.id, target.orchestrator)
                .await
            {
                Ok(session) => return Ok(session),
                Err(failure)
                    if target.readiness
                        && failure.not_listening
                        && began.elapsed() + wait < budget =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LISTEN_RETRY_MAX);
                }
                Err(failure) => return Err(failure.error.to_string()),
            }
        }
    }
}

#[async_trait]
impl Prober for McpProber {
    async fn probe(&self, target: ProbeTarget<'_>) -> ProbeOutcome {
        let id = &target.instance.id;
        let timeout = target.spec.health.timeout;
        let outcome = tokio::time::timeout(timeout, async {
            let session = self.session(&target).await?;
            let result = check(&session, &target).await;
            if result.is_err() && session.is_closed() {
                // The connection died: the next probe opens a new one.
                self.pool.forget(id);
            }
            result
        })
        .await;
        match outcome {
            Ok(Ok(())) => ProbeOutcome::Passed,
            Ok(Err(reason)) => ProbeOutcome::Failed(reason),
            Err(_) => {
                ProbeOutcome::Failed(format!("no answer within the {timeout:?} probe timeout"))
            }
        }
    }

    fn forget(&self, instance: &InstanceId) {
        self.pool.forget(instance);
    }
}
