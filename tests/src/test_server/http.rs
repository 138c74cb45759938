//! Serving over streamable HTTP with rmcp's `StreamableHttpService`, hosted by axum.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

use super::{config::HttpConfig, server::TestServer};

/// How long open streams may keep the process alive after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds, then serves until `shutdown` fires.
pub(crate) async fn serve(
    server: TestServer,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut service_config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    if !config.bind.is_loopback() {
        // rmcp only accepts loopback Host headers by default (DNS-rebinding guard). Bound to
        // a non-loopback address (a container, a pod) the fixture is reached by other names.
        service_config = service_config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        service_config,
    );
    let router = if config.path == "/" {
        axum::Router::new().fallback_service(service)
    } else {
        axum::Router::new().nest_service(&config.path, service)
    };

    let address = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(address = %local, path = %config.path, "serving MCP over streamable HTTP");

    let graceful = shutdown.clone();
    let serving = axum::serve(listener, router)
        .with_graceful_shutdown(async move { graceful.cancelled().await })
        .into_future();
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result.context("HTTP server failed")?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(grace = ?SHUTDOWN_GRACE, "open connections outlived the shutdown grace; closing them"),
    }
    Ok(())
}
