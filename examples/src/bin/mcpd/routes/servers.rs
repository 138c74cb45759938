//! The servers resource: list, get (status with endpoints), apply (create
//! or replace, from JSON or YAML) and delete.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mcp_lifecycle::ports::Endpoint;
use mcp_lifecycle::{ApplyOutcome, ServerSpec, ServerStatus, ValidationError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::SpecBody;
use crate::errors::ApiError;
use crate::state::AppState;

/// Every server's status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ServerList {
    /// By name.
    pub(crate) servers: Vec<ServerStatus>,
}

/// One server: its full status and where the runtime serves it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ServerView {
    /// Phase, counts, instances (state, attempt, next retry, reason,
    /// digests), update state and the latest events.
    pub(crate) status: ServerStatus,
    /// Addresses of the server as a whole (empty where instances are
    /// reached one by one).
    pub(crate) endpoints: Vec<Endpoint>,
}

/// What an apply did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Applied {
    /// `created`, `updated` (instances are replaced rolling) or `unchanged`.
    pub(crate) outcome: String,
    /// The server's status after the apply.
    pub(crate) status: ServerStatus,
}

/// Lists every server.
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers",
    responses((status = 200, body = ServerList), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<ServerList> {
    Json(ServerList {
        servers: state.lifecycle.list().await,
    })
}

/// One server's status and endpoints.
#[utoipa::path(get, path = "/api/v1/servers/{name}", tag = "servers",
    params(("name" = String, Path, description = "The server's name")),
    responses((status = 200, body = ServerView), (status = 404, body = ApiError),
        (status = 401, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ServerView>, ApiError> {
    let Path(name) = name?;
    let status = state.lifecycle.status(&name).await?;
    let endpoints = state.lifecycle.endpoints(&name).await?;
    Ok(Json(ServerView { status, endpoints }))
}

async fn apply_spec(
    state: &AppState,
    spec: ServerSpec,
) -> Result<(StatusCode, Json<Applied>), ApiError> {
    state.policy.admit(&spec)?;
    let name = spec.name.clone();
    let outcome = state.lifecycle.apply(spec).await?;
    let status = state.lifecycle.status(&name).await?;
    let (code, outcome) = match outcome {
        ApplyOutcome::Created => (StatusCode::CREATED, "created"),
        ApplyOutcome::Updated => (StatusCode::OK, "updated"),
        _ => (StatusCode::OK, "unchanged"),
    };
    tracing::info!(server = %name, outcome, "applied");
    Ok((
        code,
        Json(Applied {
            outcome: outcome.to_owned(),
            status,
        }),
    ))
}

/// Creates or replaces a server from its spec (JSON, or YAML with
/// `Content-Type: application/yaml`). An unchanged spec is a no-op.
#[utoipa::path(post, path = "/api/v1/servers", tag = "servers",
    request_body(description = "A server spec (mcp-lifecycle's ServerSpec)",
        content((ServerSpec = "application/json"), (ServerSpec = "application/yaml"))),
    responses((status = 201, body = Applied, description = "Created"),
        (status = 200, body = Applied, description = "Updated or unchanged"),
        (status = 400, body = ApiError), (status = 415, body = ApiError),
        (status = 422, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn apply(
    State(state): State<AppState>,
    SpecBody(spec): SpecBody,
) -> Result<(StatusCode, Json<Applied>), ApiError> {
    apply_spec(&state, spec).await
}

/// Creates or replaces the named server; the spec's `name` must match.
#[utoipa::path(put, path = "/api/v1/servers/{name}", tag = "servers",
    params(("name" = String, Path, description = "The server's name")),
    request_body(description = "A server spec (mcp-lifecycle's ServerSpec)",
        content((ServerSpec = "application/json"), (ServerSpec = "application/yaml"))),
    responses((status = 201, body = Applied, description = "Created"),
        (status = 200, body = Applied, description = "Updated or unchanged"),
        (status = 400, body = ApiError), (status = 415, body = ApiError),
        (status = 422, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn put(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    SpecBody(spec): SpecBody,
) -> Result<(StatusCode, Json<Applied>), ApiError> {
    let Path(name) = name?;
    if spec.name != name {
        return Err(ValidationError::single(
            &spec.name,
            "name",
            format!("the spec is named {:?} but was sent to {name:?}", spec.name),
        )
        .into());
    }
    apply_spec(&state, spec).await
}

/// Deletes a server: stops and removes its instances, then its spec.
/// Deleting a server that does not exist succeeds.
#[utoipa::path(delete, path = "/api/v1/servers/{name}", tag = "servers",
    params(("name" = String, Path, description = "The server's name")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ApiError),
        (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    state.lifecycle.delete(&name).await?;
    tracing::info!(server = %name, "deleted");
    Ok(StatusCode::NO_CONTENT)
}
