//! Quickstart: run a server, wait until it is ready, scale it, watch a crash
//! get retried in place with backoff, and stop it — printing status at each step.
//!
//! The runtime here is the in-process `FakeOrchestrator` with `FakeProber`
//! (every instance answers its probes), so this runs on a machine with
//! nothing but Rust. The same calls drive the Docker, Kubernetes and
//! local-process backends.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcp_lifecycle::state::BackoffPolicy;
use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, ImageCatalog, fake_digest};
use mcp_lifecycle::{Lifecycle, LifecycleConfig, ServerSpec, StopMode, Wait};

const SPEC: &str = r#"
name: echo
source:
  image: registry.local/echo:1
transport:
  http: { port: 8080, path: /mcp }
env:
  - name: LOG_LEVEL
    value: info
health:
  interval: 2s
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    say("building a lifecycle manager on the in-process fake runtime");
    let catalog = ImageCatalog::new();
    catalog.push("registry.local/echo:1", fake_digest("echo-v1"));
    let runtime = FakeOrchestrator::builder().with_catalog(catalog).build();
    let config = LifecycleConfig {
        // Short, so the crash below is retried within the example.
        backoff: BackoffPolicy::stepped(&[(Duration::from_secs(1), 3)], Duration::from_secs(5)),
        ..LifecycleConfig::default()
    };
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(runtime.clone()))
        .prober(Arc::new(FakeProber::new()))
        .config(config)
        .build()
        .await?;

    say("applying the spec and waiting until it is ready");
    let spec = ServerSpec::from_yaml(SPEC)?;
    lifecycle.apply(spec).await?;
    let status = lifecycle
        .start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await?;
    show(&status);

    say("scaling to 2");
    lifecycle.scale("echo", 2).await?;
    show(
        &lifecycle
            .wait_ready("echo", Duration::from_secs(10))
            .await?,
    );

    say("crashing one instance behind the library's back");
    let victim = status.instances[0].id.clone();
    runtime.crash(&victim, 1).context("crash the instance")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    say("done");
    Ok(())
}

#[allow(clippy::print_stdout)]
fn say(what: &str) {
    println!("==> {what}");
}

#[allow(clippy::print_stdout)]
fn show(status: &mcp_lifecycle::ServerStatus) {
    println!("{}", status.to_table());
}
