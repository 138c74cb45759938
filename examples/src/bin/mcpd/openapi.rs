//! The OpenAPI document, generated from the handlers' and types' own
//! annotations (utoipa) and served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{actions, events, health, logs, servers};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "mcpd", description = "A gateway daemon that runs MCP servers with mcp-lifecycle"),
    paths(
        servers::list, servers::get, servers::apply, servers::put, servers::delete,
        actions::start, actions::stop, actions::scale, actions::update_policy,
        actions::check_updates, logs::server, logs::instance, events::stream,
        health::healthz, health::readyz, crate::metrics::serve, serve,
    ),
    components(schemas(
        crate::errors::ApiError, mcp_lifecycle::LifecycleEvent, actions::StopModeParam,
    )),
    modifiers(&BearerAuth),
)]
pub(crate) struct ApiDoc;

/// Declares the `bearer` security scheme the paths name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, body = crate::errors::ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
