//! Logs of a server's instances, or of one instance, the last N lines each.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use mcp_lifecycle::InstanceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::errors::ApiError;
use crate::state::AppState;

/// The most lines one instance's read may ask for.
pub(crate) const MAX_TAIL: usize = 10_000;

/// How much to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// The last N lines of each instance (at most 10000). Default: 100.
    #[serde(default)]
    #[param(maximum = 10000)]
    pub(crate) tail: Option<usize>,
}

/// One instance's lines, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct InstanceLogs {
    /// The instance.
    pub(crate) instance: String,
    /// Its output (stderr for stdio servers).
    pub(crate) lines: Vec<String>,
}

/// Lines by instance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Logs {
    /// One entry per instance read.
    pub(crate) instances: Vec<InstanceLogs>,
}

fn tail_of(query: &LogsQuery) -> Result<usize, ApiError> {
    let tail = query.tail.unwrap_or(100);
    if tail > MAX_TAIL {
        return Err(
            ApiError::invalid(format!("tail {tail} is more than {MAX_TAIL}")).with_field("tail"),
        );
    }
    Ok(tail)
}

async fn read(
    state: &AppState,
    name: &str,
    instance: Option<&InstanceId>,
    tail: usize,
) -> Result<Json<Logs>, ApiError> {
    let logs = state.lifecycle.logs(name, instance, tail).await?;
    Ok(Json(Logs {
        instances: logs
            .into_iter()
            .map(|(id, lines)| InstanceLogs {
                instance: id.to_string(),
                lines,
            })
            .collect(),
    }))
}

/// The last lines of every instance of a server.
#[utoipa::path(get, path = "/api/v1/servers/{name}/logs", tag = "logs",
    params(("name" = String, Path, description = "The server's name"), LogsQuery),
    responses((status = 200, body = Logs), (status = 404, body = ApiError),
        (status = 422, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn server(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<Logs>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    read(&state, &name, None, tail_of(&query)?).await
}

/// The last lines of one instance of a server.
#[utoipa::path(get, path = "/api/v1/servers/{name}/instances/{instance}/logs", tag = "logs",
    params(("name" = String, Path, description = "The server's name"),
        ("instance" = String, Path, description = "The instance's id"), LogsQuery),
    responses((status = 200, body = Logs), (status = 404, body = ApiError),
        (status = 422, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn instance(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<Logs>, ApiError> {
    let Path((name, instance)) = path?;
    let Query(query) = query?;
    let id = InstanceId::from_raw(instance);
    read(&state, &name, Some(&id), tail_of(&query)?).await
}
