//! The MCP server fixture (`mcp-test-server`) that every mcp-lifecycle backend's tests run.
//!
//! It speaks MCP over stdio (default) or streamable HTTP, offers five small tools
//! (`echo`, `whoami`, `jsonrpc_error`, `sleep`, `version`) and failure knobs that make it
//! start slowly, exit, hang or fail on cue. Run it with `--help` for the full list; every
//! knob is also an `MCP_TEST_*` environment variable so containers can be configured
//! without changing their command.
//!
//! Logs go to stderr only; in stdio mode stdout carries nothing but JSON-RPC.

mod config;
mod http;
mod lifecycle;
mod server;
mod stdio;

use std::ffi::OsString;
use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use self::config::{Cli, Config, TransportConfig};

/// Log filter used when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "mcp_test_server=info,rmcp=warn";

/// Runs the server with these command-line arguments (the first is the
/// program name) and returns the process's exit code. `--help` and usage
/// errors are printed by clap, which then exits the process.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // clap prints --help/--version to stdout and usage errors to stderr, then exits.
    let cli = Cli::parse_from(args);
    init_logging();
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = config.exit_immediately_code {
        tracing::info!(code, "exit-immediately: exiting before serving");
        std::process::exit(code);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // A blocking stdin read (stdin not a pipe) cannot be cancelled; do not wait on it.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Waits out the startup delay, then serves on the configured transport.
async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    lifecycle::watch_signals(shutdown.clone())?;
    if !lifecycle::startup_delay(config.startup_delay, &shutdown).await {
        return Ok(());
    }
    // Requests that hang on purpose let go on shutdown (and, for stdio, on stdin EOF).
    let release_hangs = shutdown.child_token();
    let server = server::TestServer::new(config.knobs, release_hangs.clone());
    lifecycle::exit_after(config.exit_after);
    match &config.transport {
        TransportConfig::Stdio => stdio::serve(server, shutdown, release_hangs).await,
        TransportConfig::Http(http) => http::serve(server, http, shutdown).await,
    }
}
