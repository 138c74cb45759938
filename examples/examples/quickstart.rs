//! Quickstart: run a real MCP server as a local process, wait until it is
//! ready, list its tools and call one through `peer`, scale it to 2 and back,
//! watch a crash get retried in place, and stop — printing status at each step.
//!
//! The server is the project's test MCP server, run by re-executing this very
//! program with `serve-mcp-test-server`, so nothing but Rust is needed.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcp_lifecycle::spec::Command;
use mcp_lifecycle::state::BackoffPolicy;
use mcp_lifecycle::{
    Lifecycle, LifecycleConfig, LocalOrchestrator, ServerSpec, Source, StopMode, Wait,
};

const SERVE: &str = "serve-mcp-test-server";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == SERVE) {
        // We are the MCP server an instance runs.
        return mcp_lifecycle_tests::test_server::main_from(
            std::iter::once("mcp-test-server".into()).chain(args),
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quickstart: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quickstart()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn quickstart() -> anyhow::Result<()> {
    // Through the redacting writer: with RUST_LOG=debug the runtime clients'
    // own logs (request bodies, environments) would otherwise show secrets.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(mcp_lifecycle::secret::redacting(std::io::stderr))
        .init();

    say("building a lifecycle manager: local processes, in-memory store, MCP probes");
    let runtime = LocalOrchestrator::new();
    let config = LifecycleConfig {
        // Short, so the crash below is retried within the example.
        backoff: BackoffPolicy::stepped(&[(Duration::from_secs(1), 3)], Duration::from_secs(5)),
        ..LifecycleConfig::default()
    };
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(runtime.clone()))
        .config(config)
        .build()
        .await?;

    let me = std::env::current_exe().context("locating this program")?;
    let mut spec = ServerSpec::new(
        "echo",
        Source::Command(Command {
            program: me.to_string_lossy().into_owned(),
            args: vec![SERVE.into()],
            working_dir: None,
        }),
    );
    spec.health.interval = Duration::from_secs(2);
    say("applying this spec and waiting until its readiness probe passes:");
    print!("{}", spec.to_yaml()?);
    lifecycle.apply(spec).await?;
    let status = lifecycle
        .start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await?;
    show(&status);

    say("listing its tools through peer");
    let tools = lifecycle.list_tools("echo").await?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    println!("tools: {}", names.join(", "));

    say("calling the echo tool");
    let peer = lifecycle.peer("echo").await?;
    let mut arguments = serde_json::Map::new();
    arguments.insert("text".into(), "hello from the quickstart".into());
    let result = peer.call_tool("echo", Some(arguments)).await?;
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    println!("{} answered: {text}", peer.instance());

    say("scaling to 2");
    lifecycle.scale("echo", 2).await?;
    let status = lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await?;
    show(&status);

    say("killing one instance's process behind the library's back");
    let victim = status.instances[0].id.clone();
    if let Some(pid) = runtime.pid(&victim) {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .context("running kill")?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    show(&lifecycle.status("echo").await?);
    say("waiting for the retry in place (same id, attempt kept)");
    show(
        &lifecycle
            .wait_ready("echo", Duration::from_secs(10))
            .await?,
    );

    say("scaling back to 1");
    lifecycle.scale("echo", 1).await?;
    show(
        &lifecycle
            .wait_ready("echo", Duration::from_secs(10))
            .await?,
    );

    say("stopping");
    show(&lifecycle.stop("echo", StopMode::Graceful).await?);
    lifecycle.shutdown().await?;
    say("done: no process is left running");
    Ok(())
}

fn say(what: &str) {
    println!("==> {what}");
}

fn show(status: &mcp_lifecycle::ServerStatus) {
    println!("{}", status.to_table());
}
