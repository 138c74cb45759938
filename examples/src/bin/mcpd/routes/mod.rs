//! The HTTP surface: every route, the bearer-token layers over `/api` and
//! `/mcp`, and JSON answers for unknown routes and wrong methods. One file
//! per resource; the MCP endpoints are [`crate::mcp`]'s.

pub(crate) mod actions;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod logs;
pub(crate) mod servers;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, patch, post};

use crate::auth::{TokenSet, require_mcp_token, require_token};
use crate::errors::{no_route, wrong_method};
use crate::openapi;
use crate::state::AppState;

/// The whole application.
pub(crate) fn router(state: AppState, tokens: Arc<TokenSet>) -> Router {
    let api = Router::new()
        .route("/servers", get(servers::list).post(servers::apply))
        .route(
            "/servers/{name}",
            get(servers::get).put(servers::put).delete(servers::delete),
        )
        .route("/servers/{name}/start", post(actions::start))
        .route("/servers/{name}/stop", post(actions::stop))
        .route("/servers/{name}/scale", post(actions::scale))
        .route(
            "/servers/{name}/update-policy",
            patch(actions::update_policy),
        )
        .route(
            "/servers/{name}/check-updates",
            post(actions::check_updates),
        )
        .route("/servers/{name}/logs", get(logs::server))
        .route(
            "/servers/{name}/instances/{instance}/logs",
            get(logs::instance),
        )
        .route("/events", get(events::stream))
        .route("/openapi.json", get(openapi::serve))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .route_layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            require_token,
        ));
    let mcp = Router::new()
        .route("/mcp", any(crate::mcp::aggregate_endpoint))
        .route("/mcp/{server}", any(crate::mcp::server_endpoint))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            require_mcp_token,
        ));
    Router::new()
        .nest("/api/v1", api)
        .merge(mcp)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::serve))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}
