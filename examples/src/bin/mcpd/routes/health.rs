//! The open probes: `/healthz` (the process answers) and `/readyz` (it
//! takes work: the lifecycle manager is built and shutdown has not begun;
//! its answer names the backend and the engine or cluster behind it, and
//! whether this mcpd leads the ones sharing its store).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

/// A probe's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `draining` during shutdown.
    pub(crate) status: String,
    /// What the servers run on (`/readyz` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) runtime: Option<mcp_lifecycle::RuntimeInfo>,
    /// Whether this mcpd acts on the servers: always alone; on a shared
    /// store, while it holds the leader lease (`/readyz` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) leader: Option<bool>,
}

/// Whether mcpd answers at all.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        runtime: None,
        leader: None,
    })
}

/// Whether mcpd takes work.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (code, status) = if state.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    };
    (
        code,
        Json(Health {
            status: status.to_owned(),
            runtime: Some(state.lifecycle.runtime()),
            leader: Some(state.lifecycle.is_leader()),
        }),
    )
}
