//! Actions on one server: start (optionally waiting until ready), stop
//! (graceful or forced), scale, the update-policy toggles, and an update
//! check now.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::{ServerStatus, StopMode, UpdateStatus, Wait};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::body::JsonBody;
use crate::errors::ApiError;
use crate::state::AppState;

/// The longest a start may wait.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// How a start waits.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StartQuery {
    /// Wait until every desired instance is ready. Default: false.
    #[serde(default)]
    pub(crate) wait: bool,
    /// How long to wait (`30s`, `2m`; at most 10 minutes). Default: 60s.
    #[serde(default, with = "humantime_serde")]
    #[param(value_type = Option<String>)]
    pub(crate) timeout: Option<Duration>,
}

/// A server's status after an action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusBody {
    /// The status.
    pub(crate) status: ServerStatus,
}

/// Starts a server; with `wait=true`, answers once it is ready (504 with
/// its phase and last failure when it is not ready in time).
#[utoipa::path(post, path = "/api/v1/servers/{name}/start", tag = "actions",
    params(("name" = String, Path, description = "The server's name"), StartQuery),
    responses((status = 200, body = StatusBody), (status = 404, body = ApiError),
        (status = 422, body = ApiError), (status = 504, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn start(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Result<Json<StatusBody>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let timeout = query.timeout.unwrap_or(Duration::from_secs(60));
    if timeout > MAX_WAIT {
        return Err(
            ApiError::invalid(format!("timeout {timeout:?} is longer than {MAX_WAIT:?}"))
                .with_field("timeout"),
        );
    }
    let wait = if query.wait {
        Wait::UntilReady(timeout)
    } else {
        Wait::No
    };
    let status = state.lifecycle.start(&name, wait).await?;
    Ok(Json(StatusBody { status }))
}

/// How a stop stops.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StopModeParam {
    /// SIGTERM, then a kill after the spec's grace period.
    #[default]
    Graceful,
    /// Kill at once.
    Force,
}

/// How to stop.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StopQuery {
    /// `graceful` (default) or `force`.
    #[serde(default)]
    pub(crate) mode: StopModeParam,
}

/// Stops every instance of a server and keeps its spec.
#[utoipa::path(post, path = "/api/v1/servers/{name}/stop", tag = "actions",
    params(("name" = String, Path, description = "The server's name"), StopQuery),
    responses((status = 200, body = StatusBody), (status = 404, body = ApiError),
        (status = 422, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<StopQuery>, QueryRejection>,
) -> Result<Json<StatusBody>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let mode = match query.mode {
        StopModeParam::Graceful => StopMode::Graceful,
        StopModeParam::Force => StopMode::Force,
    };
    let status = state.lifecycle.stop(&name, mode).await?;
    Ok(Json(StatusBody { status }))
}

/// The desired replica count.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaleBody {
    /// How many instances should be ready; 0 stops the server.
    pub(crate) replicas: u32,
}

/// Sets the desired replica count.
#[utoipa::path(post, path = "/api/v1/servers/{name}/scale", tag = "actions",
    params(("name" = String, Path, description = "The server's name")),
    request_body = ScaleBody,
    responses((status = 200, body = StatusBody), (status = 404, body = ApiError),
        (status = 400, body = ApiError), (status = 422, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn scale(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<ScaleBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let Path(name) = name?;
    state.lifecycle.scale(&name, body.replicas).await?;
    let status = state.lifecycle.status(&name).await?;
    Ok(Json(StatusBody { status }))
}

/// The update-policy toggles (both required: the API cannot read the
/// current policy back yet).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdatePolicyBody {
    /// Check the registry for a newer digest of the configured tag.
    pub(crate) check: bool,
    /// Roll out a newer digest automatically.
    pub(crate) auto_reinstall: bool,
}

/// Turns image update checks and automatic reinstalls on or off.
#[utoipa::path(patch, path = "/api/v1/servers/{name}/update-policy", tag = "actions",
    params(("name" = String, Path, description = "The server's name")),
    request_body = UpdatePolicyBody,
    responses((status = 200, body = StatusBody), (status = 404, body = ApiError),
        (status = 400, body = ApiError), (status = 422, body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn update_policy(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<UpdatePolicyBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let Path(name) = name?;
    let policy = UpdatePolicy {
        check: body.check,
        auto_reinstall: body.auto_reinstall,
    };
    state.lifecycle.set_update_policy(&name, policy).await?;
    let status = state.lifecycle.status(&name).await?;
    Ok(Json(StatusBody { status }))
}

/// A server's update state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct UpdateBody {
    /// Freshness, digests, last check and failure, next check.
    pub(crate) update: UpdateStatus,
}

/// Checks the server's image for updates now.
#[utoipa::path(post, path = "/api/v1/servers/{name}/check-updates", tag = "actions",
    params(("name" = String, Path, description = "The server's name")),
    responses((status = 200, body = UpdateBody), (status = 404, body = ApiError),
        (status = 422, body = ApiError, description = "The server's source has no image to \
            check, or mcpd has no image resolver (the local backend)"),
        (status = 503, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn check_updates(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<UpdateBody>, ApiError> {
    let Path(name) = name?;
    let update = state.lifecycle.check_updates_now(&name).await?;
    Ok(Json(UpdateBody { update }))
}
