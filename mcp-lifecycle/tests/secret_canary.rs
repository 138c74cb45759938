//! A canary secret value must never reach Debug, Display, logs, events,
//! status, stored records or errors — while the runtime still receives it.
//!
//! One `Lifecycle` on the fake runtime runs a healthy server, a server whose
//! first start call fails, a crash-looping server, a server that turns
//! unhealthy, and a server with a missing secret. Every piece of text the
//! library produces along the way (captured TRACE-level logs from every task,
//! every event, every status, every error, the store's records, the fake's
//! snapshots) is collected and searched for the canary.
//!
//! The library's own output is checked raw. What the clients below it log
//! (request bodies with the environment) is the redacting writer's job:
//! `redacting_writer_removes_every_form_of_a_live_value` writes such records,
//! in the forms those clients use, through `secret::redacting`.
//!
//! This file owns only the secret-redaction guarantee; it must not test
//! lifecycle behaviour beyond what the scenarios need to produce output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use mcp_lifecycle::lifecycle::{INSTANCES, SERVERS};
use mcp_lifecycle::ports::{ResolvedEnv, StaticSecretSource};
use mcp_lifecycle::secret::{REDACTED, redacting};
use mcp_lifecycle::spec::{EnvEntry, SecretRef};
use mcp_lifecycle::testing::{
    CallKind, FakeOrchestrator, FakeProber, ImageCatalog, LogCapture, fake_digest,
};
use mcp_lifecycle::{
    ErrorKind, InMemoryStore, InstanceSpec, Lifecycle, LifecycleEvent, LifecycleEventKind,
    Orchestrator, SecretSource, SecretValue, ServerSpec, Source, Store, TokioClock, Wait,
};
use tokio::sync::broadcast;
use tracing_subscriber::fmt::format::FmtSpan;

/// The secret value. Distinctive, so a match cannot be a coincidence.
const CANARY: &str = "canary-7f3a9c-SECRET-do-not-leak";
/// A fragment of it, to catch a partial leak (a truncated or split value).
const CANARY_FRAGMENT: &str = "7f3a9c-SECRET";

const ENV_NAME: &str = "GITHUB_TOKEN";

fn image_of(server: &str) -> String {
    format!("registry.local/{server}:1")
}

/// A spec whose env holds a plain variable and the canary secret (gh/token),
/// then `extra` secret references.
fn spec(server: &str, extra: &[(&str, &str)]) -> ServerSpec {
    let mut spec = ServerSpec::new(server, Source::Image(image_of(server)));
    spec.env.push(EnvEntry::plain("LOG_LEVEL", "debug"));
    spec.env
        .push(EnvEntry::secret(ENV_NAME, SecretRef::new("gh", "token")));
    for (env, key) in extra {
        spec.env
            .push(EnvEntry::secret(*env, SecretRef::new("gh", *key)));
    }
    spec
}

// ----- log capture -----------------------------------------------------------

/// Everything the subscriber writes, shared with the test.
type Captured = LogCapture;

/// A subscriber that writes every event and every span open/close, with all
/// fields, at TRACE level, into `captured`.
fn capturing_subscriber(captured: &Captured) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_target(true)
        .with_span_events(FmtSpan::FULL)
        .finish()
}

// ----- evidence --------------------------------------------------------------

/// Every text the library produced, labelled by where it came from.
#[derive(Default)]
struct Evidence {
    texts: Vec<(String, String)>,
}

impl Evidence {
    fn text(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.texts.push((label.into(), text.into()));
    }

    /// `{:?}` and `{:#?}`.
    fn debug(&mut self, label: &str, value: &impl Debug) {
        self.text(format!("{label} (Debug)"), format!("{value:?}"));
        self.text(format!("{label} (pretty Debug)"), format!("{value:#?}"));
    }

    /// Debug and Display of an error, and of its source chain.
    fn error(&mut self, label: &str, error: &mcp_lifecycle::Error) {
        self.debug(label, error);
        self.text(format!("{label} (Display)"), error.to_string());
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            self.text(format!("{label} (source)"), s.to_string());
            source = s.source();
        }
    }

    fn event(&mut self, event: &LifecycleEvent) {
        let label = format!("event {:?} of {}", event.kind, event.server);
        self.debug(&label, event);
        self.text(format!("{label} (Display)"), event.to_string());
        self.text(
            format!("{label} (JSON)"),
            serde_json::to_string(event).unwrap(),
        );
    }

    /// Panics naming every source that contains the canary (without printing it).
    fn assert_clean(&self) {
        let leaks: Vec<&str> = self
            .texts
            .iter()
            .filter(|(_, text)| text.contains(CANARY) || text.contains(CANARY_FRAGMENT))
            .map(|(label, _)| label.as_str())
            .collect();
        assert!(
            leaks.is_empty(),
            "the secret value leaked into: {}",
            leaks.join(", ")
        );
    }
}

/// Records every event received so far. Lagging is a failure: a lost event
/// would be an unchecked one.
fn drain(events: &mut broadcast::Receiver<LifecycleEvent>, all: &mut Vec<LifecycleEvent>) {
    loop {
        match events.try_recv() {
            Ok(event) => all.push(event),
            // Closed: the lifecycle shut down and every event was received.
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                return;
            }
            Err(e) => panic!("event stream: {e}"),
        }
    }
}

/// The canary as the fake runtime received it for `server`'s instances.
fn received_secret(fake: &FakeOrchestrator, server: &str) -> Vec<String> {
    fake.instances()
        .iter()
        .filter(|i| i.spec.server == server)
        .flat_map(|i| i.spec.env.clone())
        .filter(|(name, value)| name == ENV_NAME && matches!(value, ResolvedEnv::Secret(_)))
        .map(|(_, value)| value.expose().to_owned())
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn canary_secret_never_leaks() {
    // Installed for this thread; a current-thread runtime polls every
    // spawned controller task on it, so their logs are captured too.
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(capturing_subscriber(&captured));
    tracing::trace!("log capture armed");

    let clock = Arc::new(TokioClock::new());
    let catalog = ImageCatalog::new();
    for server in ["healthy", "flaky", "crashy", "missing"] {
        catalog.push(image_of(server), fake_digest(server));
    }
    let fake = FakeOrchestrator::builder()
        .with_clock(clock.clone())
        .with_catalog(catalog)
        .build();
    let prober = FakeProber::new();
    let secrets = StaticSecretSource::new().with(SecretRef::new("gh", "token"), CANARY);
    let store = Arc::new(InMemoryStore::new());
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(fake.clone()))
        .prober(Arc::new(prober.clone()))
        .secrets(Arc::new(secrets.clone()))
        .store(store.clone())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let mut events = lifecycle.subscribe();
    let mut all_events = Vec::new();
    let mut ev = Evidence::default();

    // (a) A healthy start.
    lifecycle.apply(spec("healthy", &[])).await.unwrap();
    let status = lifecycle
        .start("healthy", Wait::UntilReady(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(status.ready, 1, "{}", status.to_table());
    ev.debug("start(healthy)", &status);
    drain(&mut events, &mut all_events);

    // (b1) The runtime refuses the first start call; the retry succeeds.
    fake.fail_nth(CallKind::Start, 1);
    lifecycle.apply(spec("flaky", &[])).await.unwrap();
    let status = lifecycle
        .start("flaky", Wait::UntilReady(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(status.ready, 1, "{}", status.to_table());
    ev.debug("start(flaky)", &status);
    drain(&mut events, &mut all_events);
    assert!(
        all_events
            .iter()
            .any(|e| e.server == "flaky" && e.kind == LifecycleEventKind::RuntimeError),
        "the injected start failure produced no runtime-error event: {all_events:#?}"
    );

    // (b2) Every start crashes at once: a crash loop with failure reasons.
    fake.crash_on_start("crashy");
    lifecycle.apply(spec("crashy", &[])).await.unwrap();
    let error = lifecycle
        .start("crashy", Wait::UntilReady(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    ev.error("start(crashy)", &error);
    drain(&mut events, &mut all_events);

    // (b3) A ready server turns unhealthy: probe-failure reasons.
    prober.fail_server("healthy", "tools/list failed: connection reset");
    tokio::time::sleep(Duration::from_secs(180)).await;
    let status = lifecycle.status("healthy").await.unwrap();
    assert!(
        status.ready == 0,
        "healthy should have gone unhealthy: {}",
        status.to_table()
    );
    prober.heal("healthy");
    lifecycle
        .wait_ready("healthy", Duration::from_secs(600))
        .await
        .unwrap();
    drain(&mut events, &mut all_events);

    // (c) A missing secret, after the canary was resolved for the same start.
    lifecycle
        .apply(spec("missing", &[("OTHER_TOKEN", "missing")]))
        .await
        .unwrap();
    let error = lifecycle
        .start("missing", Wait::UntilReady(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(error.to_string().contains("gh/missing"), "{error}");
    ev.error("start(missing)", &error);
    let status = lifecycle.status("missing").await.unwrap();
    assert!(
        status.instances.iter().any(|i| i
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("gh/missing"))),
        "the failure reason should name the reference: {}",
        status.to_table()
    );
    assert!(received_secret(&fake, "missing").is_empty());
    drain(&mut events, &mut all_events);

    // The secret source's own errors and Debug.
    let error = secrets
        .resolve(&SecretRef::new("gh", "missing"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    ev.error("StaticSecretSource::resolve(gh/missing)", &error);
    ev.debug("StaticSecretSource", &secrets);
    let error = lifecycle.status("nope").await.unwrap_err();
    ev.error("status(nope)", &error);

    // (d) What the fake runtime received: it holds the value, redacted in Debug.
    for server in ["healthy", "flaky", "crashy"] {
        let received = received_secret(&fake, server);
        assert!(
            !received.is_empty() && received.iter().all(|v| v == CANARY),
            "the runtime did not receive the resolved secret for {server}"
        );
    }
    let instances = fake.instances();
    assert!(instances.len() >= 3);
    for instance in &instances {
        let id = instance.observation.id.clone();
        ev.debug(&format!("FakeInstance {id}"), instance);
        let spec: &InstanceSpec = &instance.spec;
        ev.debug(&format!("InstanceSpec {id}"), spec);
        for (name, value) in &spec.env {
            ev.debug(&format!("ResolvedEnv {id} {name}"), value);
        }
        let logs = fake.logs(&id, 1000).await.unwrap();
        ev.text(format!("runtime logs of {id}"), logs.join("\n"));
    }
    let value = SecretValue::new(CANARY);
    assert_eq!(value.expose(), CANARY);
    ev.debug("SecretValue", &value);
    ev.debug("ResolvedEnv::Secret", &ResolvedEnv::Secret(value.clone()));
    ev.debug("Some(SecretValue) in a Vec", &vec![Some(value)]);
    ev.debug("FakeOrchestrator", &fake);

    // Status of every server, in every form a host reads it.
    let statuses = lifecycle.list().await;
    assert_eq!(statuses.len(), 4);
    for status in &statuses {
        let label = format!("status({})", status.name);
        ev.debug(&label, status);
        ev.text(
            format!("{label} (JSON)"),
            serde_json::to_string(status).unwrap(),
        );
        ev.text(format!("{label} (table)"), status.to_table());
        for event in &status.recent_events {
            ev.event(event);
        }
    }
    ev.debug("list()", &statuses);
    ev.debug("Lifecycle", &lifecycle);

    // What the store holds.
    for collection in [SERVERS, INSTANCES] {
        let records = store.list(collection).await.unwrap();
        assert!(!records.is_empty());
        for record in records {
            ev.text(
                format!("store {collection}/{}", record.key),
                String::from_utf8_lossy(&record.value).into_owned(),
            );
        }
    }

    // Shutting down logs and emits too.
    drain(&mut events, &mut all_events);
    let shutdown = lifecycle.shutdown().await;
    if let Err(error) = &shutdown {
        ev.error("shutdown", error);
    }
    drain(&mut events, &mut all_events);
    for event in &all_events {
        ev.event(event);
    }

    // The scenarios produced what they were meant to: events for every
    // server, failure reasons naming the missing reference, probe failures.
    for server in ["healthy", "flaky", "crashy", "missing"] {
        assert!(
            all_events.iter().any(|e| e.server == server),
            "no events for {server}"
        );
    }
    assert!(
        all_events.iter().any(|e| e.message.contains("gh/missing")),
        "no event names the missing reference"
    );

    tracing::trace!("log capture done");
    let logs = captured.text();
    assert!(logs.contains("log capture armed") && logs.contains("log capture done"));
    assert!(
        logs.contains("TRACE"),
        "the subscriber is not at TRACE level"
    );
    // Controller tasks (spawned, inside the per-server span) logged into the buffer.
    assert!(
        logs.contains("server{server=crashy}") && logs.contains("server{server=missing}"),
        "spawned controller tasks did not log into the capture"
    );
    assert!(
        logs.contains("gh/missing"),
        "the missing-secret failure was not logged"
    );
    ev.text("captured logs", logs);

    ev.assert_clean();
}

/// The redacting types on their own, outside any lifecycle.
#[test]
fn redacting_types_never_format_the_value() {
    let value = SecretValue::new(CANARY);
    let env = ResolvedEnv::Secret(value.clone());
    let plain = ResolvedEnv::Plain("visible".into());
    let mut ev = Evidence::default();
    ev.debug("SecretValue", &value);
    ev.debug("ResolvedEnv::Secret", &env);
    ev.debug(
        "env list",
        &vec![
            ("A".to_owned(), env.clone()),
            ("B".to_owned(), plain.clone()),
        ],
    );
    ev.debug(
        "StaticSecretSource",
        &StaticSecretSource::new().with(SecretRef::new("gh", "token"), CANARY),
    );
    ev.assert_clean();
    // Only expose() gives the value; plain values are not secret.
    assert_eq!(env.expose(), CANARY);
    assert!(format!("{plain:?}").contains("visible"));
    assert!(format!("{value:?}").contains("redacted"));
}

/// The checker itself: a leaked value, whole or in part, is caught.
#[test]
fn evidence_catches_a_leak() {
    for leaked in [
        format!("token={CANARY}"),
        CANARY.replace("-do-not-leak", ""),
    ] {
        let mut ev = Evidence::default();
        ev.text("clean", "[redacted]");
        ev.text("leaky", leaked);
        let caught = std::panic::catch_unwind(|| ev.assert_clean()).unwrap_err();
        let message = caught.downcast_ref::<String>().unwrap();
        assert!(message.contains("leaky") && !message.contains("clean"));
        assert!(
            !message.contains(CANARY_FRAGMENT),
            "the report must not print the value"
        );
    }
}

/// What a client library logs about a request that carries a live value —
/// the JSON body as text, as byte-string `Debug`, the value as a `Debug`
/// field — is written without it through `secret::redacting`, by the text
/// and the JSON formatter, and with it through the raw writer.
#[test]
fn redacting_writer_removes_every_form_of_a_live_value() {
    // Every character some log escaping writes differently.
    const TRICKY: &str = "canary-7f3a9c-SECRET\"q\\b<&>'\nline\ttab";
    let value = SecretValue::new(TRICKY);
    let body = serde_json::json!({ "Env": [format!("{ENV_NAME}={}", value.expose())] }).to_string();
    let log_records = || {
        tracing::debug!(target: "bollard::docker", "{body}");
        tracing::trace!(target: "bollard::docker", "request: b\"{}\"", body.as_bytes().escape_ascii());
        tracing::debug!(env = ?value.expose(), "resolved");
        tracing::info!("done");
    };
    let raw = Captured::default();
    let text = Captured::default();
    let json = Captured::default();
    let fmt = || {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
    };
    let subscriber = fmt().with_writer(raw.clone()).finish();
    tracing::subscriber::with_default(subscriber, log_records);
    let subscriber = fmt().with_writer(redacting(text.clone())).finish();
    tracing::subscriber::with_default(subscriber, log_records);
    let subscriber = fmt().json().with_writer(redacting(json.clone())).finish();
    tracing::subscriber::with_default(subscriber, log_records);

    let raw = raw.text();
    assert!(
        raw.contains(CANARY_FRAGMENT),
        "the records do not carry the value"
    );
    for (label, captured) in [("text", text.text()), ("JSON", json.text())] {
        assert!(captured.contains("done"), "{label}: records are missing");
        assert_eq!(
            captured.matches(REDACTED).count(),
            3,
            "{label}: one redaction per record that carried the value"
        );
        let mut ev = Evidence::default();
        ev.text(format!("{label} through the redacting writer"), captured);
        ev.assert_clean();
    }
}
