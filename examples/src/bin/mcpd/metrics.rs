//! `/metrics` in the Prometheus (OpenMetrics) text format: per-server gauges
//! of desired, ready, starting, unhealthy and failed instances and of the
//! update state, and counters of instance failures, restarts and failed
//! probes (the status's running totals), built with prometheus-client from a
//! fresh status listing at each scrape (so a deleted server's series
//! disappear with it); and the MCP proxy's call counters
//! ([`crate::mcp::counters`]). Open, like the probes.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// The label every per-server series carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

/// A server and its update state (`up-to-date`, `update-available`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpdateStateLabel {
    server: String,
    state: String,
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
    let totals: [(&str, &str, Family<ServerLabel, Counter>); 3] = [
        (
            "mcpd_server_failures",
            "Instances that became failed (crash, failed start, liveness kill)",
            Family::default(),
        ),
        (
            "mcpd_server_restarts",
            "Failed instances started again",
            Family::default(),
        ),
        (
            "mcpd_server_probe_failures",
            "Readiness and liveness probes that failed",
            Family::default(),
        ),
    ];
    let update_state = Family::<UpdateStateLabel, Gauge>::default();
    for status in state.lifecycle.list().await {
        let label = ServerLabel {
            server: status.name.clone(),
        };
        let counts = [
            status.counters.failures,
            status.counters.restarts,
            status.counters.probe_failures,
        ];
        for ((_, _, family), value) in totals.iter().zip(counts) {
            family.get_or_create(&label).inc_by(value);
        }
        update_state
            .get_or_create(&UpdateStateLabel {
                server: status.name.clone(),
                state: status.update.state.name().to_owned(),
            })
            .set(1);
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
    for (name, help, family) in totals {
        registry.register(name, help, family);
    }
    registry.register(
        "mcpd_server_update_state",
        "The server's image update state (1 for its current state)",
        update_state,
    );
    state.proxy_counters.register(&mut registry);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// Serves the gauges.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "application/openmetrics-text",
        description = "Per-server instance gauges, update state, failure, restart and probe-failure counters, and MCP proxy call counters in the OpenMetrics text format")))]
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
