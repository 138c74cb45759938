//! `mcpd`: a gateway daemon that embeds [`mcp_lifecycle::Lifecycle`] and
//! serves a REST API for it under `/api/v1` (servers, actions, logs, an
//! event stream, its own OpenAPI document) and MCP over streamable HTTP
//! (`/mcp/{server}` proxies a session to one server, `/mcp` aggregates
//! them all), behind bearer tokens with read-only and admin roles.
//!
//! ```text
//! MCPD_ADMIN_TOKEN=change-me-please cargo run --bin mcpd -- --in-memory \
//!     --allow-program "$PWD/target/debug/mcpd"
//! ```
//!
//! Run as `mcpd serve-mcp-test-server` it is the project's test MCP server
//! (on stdio), so a demo needs nothing installed: allow-list mcpd itself.
//!
//! One concern per module: [`config`] (file and flags), [`backend`] (the
//! lifecycle manager and configured specs), [`auth`], [`policy`]
//! (allow-lists), [`body`] (request bodies), [`errors`], [`routes`] (one
//! file per resource), [`mcp`] (the MCP endpoints), [`openapi`],
//! [`metrics`], [`shutdown`].

mod auth;
mod backend;
mod body;
mod config;
mod errors;
mod mcp;
mod metrics;
mod openapi;
mod policy;
mod routes;
mod shutdown;
mod state;
mod store_url;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Flags};
use crate::policy::Policy;
use crate::state::AppState;

/// The argument that makes this program the test MCP server instead.
const SERVE_TEST_SERVER: &str = "serve-mcp-test-server";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == SERVE_TEST_SERVER) {
        return mcp_lifecycle_tests::test_server::main_from(
            std::iter::once("mcp-test-server".into()).chain(args),
        );
    }
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rmcp=warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(mcp_lifecycle::secret::redacting(std::io::stderr))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start tokio");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("mcpd failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let config = Config::load(flags)?;
    let policy = Policy::new(config.backend, config.allowed_programs.clone());
    let lifecycle = backend::build(&config).await?;
    if let Some(specs) = &config.specs {
        backend::apply_configured(&lifecycle, &policy, specs).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let lifecycle = Arc::new(lifecycle);
    let state = AppState::new(lifecycle.clone(), policy, CancellationToken::new());
    let tokens = Arc::new(config.tokens);
    let app = routes::router(state.clone(), tokens);
    tracing::info!(
        backend = ?config.backend,
        store = %config.store,
        "mcpd listening on http://{local}"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown::signalled(state.clone()))
        .await
        .context("serving HTTP")?;
    drop(state);
    shutdown::finish(lifecycle, config.on_exit, config.backend).await;
    Ok(())
}
