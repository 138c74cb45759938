//! The secret canary on the real engine: the Docker client's own logs.
//!
//! With every log forwarded from `log` into `tracing` (tracing-log) and a
//! subscriber at TRACE, bollard logs the container-create body (the
//! environment, secrets included) and each inspect it decodes. This test
//! starts real containers with secret environment variables and captures
//! every event twice: raw, and through `mcp_lifecycle::secret::redacting` (as
//! text and as JSON). The raw capture must contain the values — proof that the
//! test drives the leak path — and the redacted captures must not.
//!
//! Two sources: a `StaticSecretSource` (which holds its values for its whole
//! life), with a plain token and one full of characters that logs escape;
//! and a source that resolves a fresh value at each start and keeps none, as
//! a vault client or `EnvSecretSource` does — only the controller's hold on
//! an instance's values keeps that one registered after the start. Its
//! container is killed behind the library's back, so the library inspects
//! and restarts it.
//!
//! The whole process shares one global subscriber, so this file holds one
//! test. It skips without an engine or the images of
//! `scripts/test-images.sh`, and fails instead under
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Cleanup, containers_of, eventually, setup, unique};
use mcp_lifecycle::ports::StaticSecretSource;
use mcp_lifecycle::secret::{REDACTED, redacting};
use mcp_lifecycle::spec::{EnvEntry, SecretRef, Source, UpdatePolicy};
use mcp_lifecycle::state::BackoffPolicy;
use mcp_lifecycle::testing::LogCapture;
use mcp_lifecycle::{
    InMemoryStore, Lifecycle, LifecycleConfig, SecretSource, SecretValue, ServerSpec, Wait,
};
use mcp_lifecycle_docker::DockerOrchestrator;
use mcp_lifecycle_docker::bollard::Docker;
use mcp_lifecycle_docker::bollard::query_parameters::KillContainerOptionsBuilder;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A typical token: `whoami` reports its length.
const TOKEN: &str = "canary-d0c4e7-SECRET-token-do-not-leak";
/// A value with every character the logs escape differently: JSON, Go's
/// HTML-safe JSON, Rust `Debug` and byte-string `Debug` each write it
/// otherwise.
const TRICKY: &str = "canary-d0c4e7-SECRET\"quote\\slash<&>'\nline\ttab-end";
/// Resolved afresh at each start by [`FreshSource`].
const FRESH: &str = "canary-f7e5a1-SECRET-fresh-do-not-leak";
/// Parts of the values free of escapable characters: found in any form.
const FRAGMENTS: [&str; 3] = ["d0c4e7-SECRET", "f7e5a1-SECRET", "slash<&>"];

const READY: Duration = Duration::from_secs(60);

// ----- capture -----------------------------------------------------------------

/// Everything the subscriber writes, shared with the test.
type Captured = LogCapture;

struct Captures {
    raw: Captured,
    redacted: Captured,
    redacted_json: Captured,
}

/// One global subscriber at TRACE, `log` records forwarded (tracing-log,
/// installed by `try_init`), three fmt layers: raw, redacted, redacted JSON.
fn capture_everything() -> Captures {
    let captures = Captures {
        raw: Captured::default(),
        redacted: Captured::default(),
        redacted_json: Captured::default(),
    };
    tracing_subscriber::registry()
        .with(LevelFilter::TRACE)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(captures.raw.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(redacting(captures.redacted.clone())),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(redacting(captures.redacted_json.clone())),
        )
        .try_init()
        .expect("the only subscriber of this test process");
    captures
}

// ----- the servers -----------------------------------------------------------

/// Resolves `gh/fresh` to a new [`SecretValue`] at every call and keeps none.
struct FreshSource;

#[async_trait]
impl SecretSource for FreshSource {
    async fn resolve(&self, _reference: &SecretRef) -> mcp_lifecycle::Result<SecretValue> {
        Ok(SecretValue::new(FRESH))
    }
}

fn config(manager: &str) -> LifecycleConfig {
    LifecycleConfig {
        manager_name: manager.to_owned(),
        backoff: BackoffPolicy::stepped(&[(Duration::from_secs(1), 3)], Duration::from_secs(2)),
        startup_probe_interval: Duration::from_millis(200),
        ..LifecycleConfig::default()
    }
}

fn server_spec(name: &str, image: &str, env: &[(&str, &str)]) -> ServerSpec {
    let mut spec = ServerSpec::new(name, Source::Image(image.to_owned()));
    spec.update = UpdatePolicy {
        check: false,
        auto_reinstall: false,
    };
    spec.stop_grace_period = Duration::from_secs(5);
    spec.health.startup_timeout = Duration::from_secs(30);
    for (variable, key) in env {
        spec.env
            .push(EnvEntry::secret(*variable, SecretRef::new("gh", *key)));
    }
    spec
}

async fn lifecycle(manager: &str, secrets: Arc<dyn SecretSource>) -> Lifecycle {
    let docker = DockerOrchestrator::builder()
        .manager(manager)
        .build()
        .await
        .expect("DockerOrchestrator::build");
    Lifecycle::builder()
        .orchestrator(Arc::new(docker))
        .store(Arc::new(InMemoryStore::new()))
        .secrets(secrets)
        .config(config(manager))
        .build()
        .await
        .expect("Lifecycle::build")
}

/// The one container of `manager`, and its environment as the engine holds it.
async fn container_env(engine: &Docker, manager: &str) -> (String, Vec<String>) {
    let ids = containers_of(engine, manager).await;
    assert_eq!(ids.len(), 1, "one container for {manager}: {ids:?}");
    let inspect = engine.inspect_container(&ids[0], None).await.unwrap();
    let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
    (ids[0].clone(), env)
}

async fn whoami(lifecycle: &Lifecycle, server: &str) -> String {
    let peer = lifecycle.peer(server).await.expect("peer");
    let result = peer.call_tool("whoami", None).await.expect("whoami");
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// `value` between the quotes of its JSON string.
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

// ----- the test ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_client_logs_never_show_a_live_secret() {
    let test = "docker_client_logs_never_show_a_live_secret";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let captures = capture_everything();
    tracing::info!("log capture armed");

    // (a) Values a StaticSecretSource holds.
    let manager = unique("mcpl-canary");
    let _cleanup = Cleanup::new(&manager);
    let secrets = StaticSecretSource::new()
        .with(SecretRef::new("gh", "token"), TOKEN)
        .with(SecretRef::new("gh", "tricky"), TRICKY);
    let lc = lifecycle(&manager, Arc::new(secrets)).await;
    let name = unique("canary");
    let spec = server_spec(
        &name,
        &images.v1,
        &[("MCP_TEST_TOKEN", "token"), ("MCP_TEST_TRICKY", "tricky")],
    );
    lc.apply(spec).await.unwrap();
    let status = lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 1, "{}", status.to_table());
    // The container received both values, and the server process reads them.
    let (_, env) = container_env(&engine, &manager).await;
    assert!(env.contains(&format!("MCP_TEST_TOKEN={TOKEN}")));
    assert!(env.contains(&format!("MCP_TEST_TRICKY={TRICKY}")));
    assert_eq!(
        whoami(&lc, &name).await,
        format!("token-length:{}", TOKEN.len())
    );
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();

    // (b) A value resolved afresh at each start: only the controller holds it.
    let fresh_manager = unique("mcpl-canary-fresh");
    let _fresh_cleanup = Cleanup::new(&fresh_manager);
    let lc = lifecycle(&fresh_manager, Arc::new(FreshSource)).await;
    let name = unique("canary-fresh");
    let spec = server_spec(&name, &images.v1, &[("MCP_TEST_TOKEN", "fresh")]);
    lc.apply(spec).await.unwrap();
    let status = lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 1, "{}", status.to_table());
    let (container, env) = container_env(&engine, &fresh_manager).await;
    assert!(env.contains(&format!("MCP_TEST_TOKEN={FRESH}")));
    // Killed behind the library's back: it inspects the container, then
    // restarts it in place with a freshly resolved value.
    let kill = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    engine.kill_container(&container, Some(kill)).await.unwrap();
    eventually("the restart after the kill", READY, || async {
        lc.status(&name)
            .await
            .ok()
            .filter(|s| s.ready == 1 && s.instances.iter().all(|i| i.attempt >= 1))
    })
    .await;
    let (_, env) = container_env(&engine, &fresh_manager).await;
    assert!(env.contains(&format!("MCP_TEST_TOKEN={FRESH}")));
    assert_eq!(
        whoami(&lc, &name).await,
        format!("token-length:{}", FRESH.len())
    );
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
    tracing::info!("log capture done");

    // The raw capture shows the leak path is exercised: bollard's records,
    // forwarded from `log`, carry every value.
    let raw = captures.raw.text();
    assert!(raw.contains("log capture armed") && raw.contains("log capture done"));
    assert!(
        raw.contains("bollard::docker"),
        "no bollard records were forwarded from `log`"
    );
    for (what, form) in [
        ("the token", TOKEN.to_owned()),
        ("the tricky value, JSON-escaped", json_escaped(TRICKY)),
        ("the fresh value", FRESH.to_owned()),
    ] {
        assert!(
            raw.contains(&form),
            "the raw capture lacks {what}: the test no longer drives the leak path"
        );
    }

    // The redacted captures hold the same records, without any value.
    for (label, text) in [
        ("redacted", captures.redacted.text()),
        ("redacted JSON", captures.redacted_json.text()),
    ] {
        assert!(
            text.contains("log capture done") && text.contains("bollard::docker"),
            "the {label} capture is missing records"
        );
        let leaked: Vec<&str> = FRAGMENTS
            .iter()
            .copied()
            .filter(|f| text.contains(f))
            .collect();
        assert!(
            leaked.is_empty(),
            "the {label} capture leaks {} of the {} canary fragments",
            leaked.len(),
            FRAGMENTS.len()
        );
        assert!(!text.contains(TOKEN) && !text.contains(FRESH));
        assert!(
            text.contains(REDACTED),
            "nothing was redacted in the {label} capture"
        );
    }
}
