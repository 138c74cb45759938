//! `/metrics` in the Prometheus (OpenMetrics) text format: per-server gauges
//! of desired, ready, starting, unhealthy and failed instances, built with
//! prometheus-client from a fresh status listing at each scrape (so a deleted
//! server's series disappear with it), and the MCP proxy's call counters
//! ([`crate::mcp::counters`]). Open, like the probes.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// The label every per-server series carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

/// The OpenMetrics text media type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes the current gauges.
pub(crate) async fn render(state: &AppState) -> Result<String, std::fmt::Error> {
    let families: [(&str, &str, Family<ServerLabel, Gauge>); 5] = [
        (
            "mcpd_server_desired_instances",
            "Instances the server should have ready",
            Family::default(),
        ),
        (
            "mcpd_server_ready_instances",
            "Instances whose readiness probe passes",
            Family::default(),
        ),
        (
            "mcpd_server_starting_instances",
            "Instances not yet ready",
            Family::default(),
        ),
        (
            "mcpd_server_unhealthy_instances",
            "Instances failing liveness probes",
            Family::default(),
        ),
        (
            "mcpd_server_failed_instances",
            "Instances that exited or failed to start",
            Family::default(),
        ),
    ];
    for status in state.lifecycle.list().await {
        let label = ServerLabel {
            server: status.name.clone(),
        };
        let values = [
            status.desired,
            status.ready,
            status.starting,
            status.unhealthy,
            status.failed,
        ];
        for ((_, _, family), value) in families.iter().zip(values) {
            family.get_or_create(&label).set(i64::from(value));
        }
    }
    let mut registry = Registry::default();
    for (name, help, family) in families {
        registry.register(name, help, family);
    }
    state.proxy_counters.register(&mut registry);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// Serves the gauges.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "application/openmetrics-text",
        description = "Per-server instance gauges in the OpenMetrics text format")))]
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    match render(&state).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
            .into_response(),
    }
}
