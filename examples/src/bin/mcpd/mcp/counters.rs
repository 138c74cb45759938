//! The proxied-call counters the MCP endpoints keep and `/metrics` reports:
//! `tools/call` requests forwarded per server, and those among them that
//! failed (a JSON-RPC error, a server that was not ready, or a tool result
//! with `isError: true`). Owns the counter state only; the endpoints decide
//! what counts, [`crate::metrics`] encodes it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The label of every proxied-call series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

/// Per-server counts of proxied tool calls. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyCounters {
    calls: Family<ServerLabel, Counter>,
    errors: Family<ServerLabel, Counter>,
}

impl ProxyCounters {
    /// Counts one finished `tools/call` to `server`, failed or not.
    pub(crate) fn record(&self, server: &str, failed: bool) {
        let label = ServerLabel {
            server: server.to_owned(),
        };
        self.calls.get_or_create(&label).inc();
        if failed {
            self.errors.get_or_create(&label).inc();
        }
    }

    /// Adds both families to a scrape's registry (they keep their counts:
    /// the registry holds clones).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "mcpd_proxied_calls",
            "tools/call requests forwarded to the server through /mcp or /mcp/{server}",
            self.calls.clone(),
        );
        registry.register(
            "mcpd_proxied_call_errors",
            "Forwarded tools/call requests that failed: a JSON-RPC error, no ready instance, or a tool error (isError)",
            self.errors.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_errors_are_counted_per_server() {
        let counters = ProxyCounters::default();
        counters.record("a", false);
        counters.record("a", true);
        counters.record("b", false);
        let mut registry = Registry::default();
        counters.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("mcpd_proxied_calls_total{server=\"a\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcpd_proxied_calls_total{server=\"b\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcpd_proxied_call_errors_total{server=\"a\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("mcpd_proxied_call_errors_total{server=\"b\"}"),
            "{text}"
        );
    }
}
