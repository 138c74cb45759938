//! `mcp_lifecycle::Lifecycle` on `DockerOrchestrator` with the default MCP
//! prober, against the real engine: ready over stdio (attach) and HTTP
//! (published loopback port), scaling 1 → 3 → 0, graceful and forced stops,
//! delete, a `docker kill` behind the library's back retried in place with
//! escalating backoff, a crash-looping image, a missing image, adoption by a
//! new `Lifecycle` over the same store, and removal of containers no spec
//! owns. After delete or shutdown no container carries the test's labels.
//!
//! Tests skip (printing why) without an engine or the images of
//! `scripts/test-images.sh`, and fail instead under
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1`. Each uses its own manager name (and
//! orchestrator scoped to it) and removes its containers even when it fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Cleanup, containers_of, eventually, is_podman, orchestrator, registry, setup, unique,
};
use mcp_lifecycle::lifecycle::InstanceStatus;
use mcp_lifecycle::ports::labels;
use mcp_lifecycle::spec::{EnvEntry, Source, Transport, UpdatePolicy};
use mcp_lifecycle::state::{BackoffPolicy, ServerPhase};
use mcp_lifecycle::testing::orchestrator_conformance::conformance_spec;
use mcp_lifecycle::{
    InMemoryStore, Lifecycle, LifecycleConfig, Orchestrator, ServerSpec, StopMode, Store, Wait,
};
use mcp_lifecycle_docker::DockerOrchestrator;
use mcp_lifecycle_docker::bollard::query_parameters::KillContainerOptionsBuilder;

const READY: Duration = Duration::from_secs(60);

/// Short stepped backoff: 1 s, then 2 s, then 4 s; no reset within a test.
fn config(manager: &str) -> LifecycleConfig {
    LifecycleConfig {
        manager_name: manager.to_owned(),
        backoff: BackoffPolicy::stepped(
            &[(Duration::from_secs(1), 1), (Duration::from_secs(2), 1)],
            Duration::from_secs(4),
        )
        .with_reset_after(Duration::from_secs(600)),
        startup_probe_interval: Duration::from_millis(200),
        ..LifecycleConfig::default()
    }
}

fn server_spec(name: &str, image: &str) -> ServerSpec {
    let mut spec = ServerSpec::new(name, Source::Image(image.to_owned()));
    spec.update = UpdatePolicy {
        check: false,
        auto_reinstall: false,
    };
    spec.stop_grace_period = Duration::from_secs(5);
    spec.health.startup_timeout = Duration::from_secs(30);
    spec
}

async fn lifecycle(manager: &str, store: Arc<dyn Store>) -> (Lifecycle, DockerOrchestrator) {
    let docker = orchestrator(manager).await;
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(docker.clone()))
        .store(store)
        .config(config(manager))
        .build()
        .await
        .expect("Lifecycle::build");
    (lifecycle, docker)
}

async fn echo(lifecycle: &Lifecycle, server: &str, text: &str) {
    let peer = lifecycle.peer(server).await.expect("peer");
    let arguments = serde_json::json!({ "text": text });
    let result = peer
        .call_tool("echo", arguments.as_object().cloned())
        .await
        .expect("echo");
    let seen = format!("{result:?}");
    assert!(seen.contains(text), "echo answered {seen}");
}

async fn instance(lifecycle: &Lifecycle, server: &str) -> Option<InstanceStatus> {
    lifecycle
        .status(server)
        .await
        .ok()
        .and_then(|s| s.instances.into_iter().next())
}

async fn docker_kill(docker: &DockerOrchestrator, container: &str) {
    let options = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker
        .docker()
        .kill_container(container, Some(options))
        .await
        .unwrap_or_else(|e| panic!("docker kill {container}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdio_server_becomes_ready_and_answers_through_peer() {
    let test = "stdio_server_becomes_ready_and_answers_through_peer";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-stdio");
    let _cleanup = Cleanup::new(&manager);
    let (lc, _) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let name = unique("stdio");
    lc.apply(server_spec(&name, &images.v1)).await.unwrap();
    let status = lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.phase, ServerPhase::Running);
    assert_eq!(status.ready, 1);
    echo(&lc, &name, "over attach").await;
    // The probes and the host share the attach: a second call works too.
    echo(&lc, &name, "and again").await;
    lc.delete(&name).await.unwrap();
    assert!(containers_of(&engine, &manager).await.is_empty());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_server_is_reached_on_a_published_loopback_port() {
    let test = "http_server_is_reached_on_a_published_loopback_port";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    // From the registry when it is up, to check the running digest too.
    let from_registry = registry(test, &images).await;
    let (image, digest) = match &from_registry {
        Some((image, digest)) => (format!("{image}:v1"), Some(digest.clone())),
        None => (images.v1.clone(), None),
    };
    let manager = unique("mcpl-http");
    let _cleanup = Cleanup::new(&manager);
    let (lc, _) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let name = unique("http");
    let mut spec = server_spec(&name, &image);
    spec.transport = Transport::Http {
        port: 8080,
        path: "/mcp".into(),
    };
    spec.env = vec![
        EnvEntry::plain("MCP_TEST_TRANSPORT", "http"),
        EnvEntry::plain("MCP_TEST_BIND", "0.0.0.0"),
    ];
    lc.apply(spec).await.unwrap();
    let status = lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 1);
    echo(&lc, &name, "over http").await;
    if let Some(digest) = digest {
        let status = lc.status(&name).await.unwrap();
        // Started by its tag (no resolver, so the controller pins nothing):
        // Docker's repo digests name the digest it was pulled by; Podman's
        // do not, so there it is unknown rather than a guess.
        let expected = if is_podman(&engine).await {
            Vec::new()
        } else {
            vec![digest]
        };
        assert_eq!(status.running_digests, expected, "{}", status.to_table());
    }
    lc.shutdown().await.unwrap();
    assert!(containers_of(&engine, &manager).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scales_one_to_three_to_zero() {
    let test = "scales_one_to_three_to_zero";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-scale");
    let _cleanup = Cleanup::new(&manager);
    let (lc, _) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let name = unique("scale");
    lc.apply(server_spec(&name, &images.v1)).await.unwrap();
    lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(containers_of(&engine, &manager).await.len(), 1);

    lc.scale(&name, 3).await.unwrap();
    let status = lc.wait_ready(&name, READY).await.unwrap();
    assert_eq!(status.ready, 3);
    assert_eq!(containers_of(&engine, &manager).await.len(), 3);

    lc.scale(&name, 0).await.unwrap();
    let status = lc.wait_ready(&name, READY).await.unwrap();
    assert_eq!(status.phase, ServerPhase::Stopped);
    eventually(
        "no containers at 0 replicas",
        Duration::from_secs(20),
        || async {
            containers_of(&engine, &manager)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_and_forced_stops_then_delete() {
    let test = "graceful_and_forced_stops_then_delete";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-stop");
    let _cleanup = Cleanup::new(&manager);
    let (lc, _) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let name = unique("stop");
    let mut spec = server_spec(&name, &images.v1);
    spec.replicas = 2;
    lc.apply(spec).await.unwrap();
    lc.start(&name, Wait::UntilReady(READY)).await.unwrap();

    // The test server exits on SIGTERM, well inside the 5 s grace period.
    let began = tokio::time::Instant::now();
    let status = lc.stop(&name, StopMode::Graceful).await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "a graceful stop of a polite server took {:?}",
        began.elapsed()
    );
    assert_eq!(status.desired, 0);
    eventually("stopped", Duration::from_secs(20), || async {
        let gone = containers_of(&engine, &manager).await.is_empty();
        let stopped = lc.status(&name).await.unwrap().phase == ServerPhase::Stopped;
        (gone && stopped).then_some(())
    })
    .await;

    lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(containers_of(&engine, &manager).await.len(), 2);
    lc.stop(&name, StopMode::Force).await.unwrap();
    eventually("force-stopped", Duration::from_secs(20), || async {
        containers_of(&engine, &manager)
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    lc.delete(&name).await.unwrap();
    assert!(
        containers_of(&engine, &manager).await.is_empty(),
        "delete leaves no container with our labels"
    );
    assert!(lc.status(&name).await.is_err());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_killed_behind_our_back_is_retried_in_place_with_escalating_backoff() {
    let test = "a_container_killed_behind_our_back_is_retried_in_place_with_escalating_backoff";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-kill");
    let _cleanup = Cleanup::new(&manager);
    let (lc, docker) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let name = unique("kill");
    lc.apply(server_spec(&name, &images.v1)).await.unwrap();
    let status = lc.start(&name, Wait::UntilReady(READY)).await.unwrap();
    let id = status.instances[0].id.clone();
    let container = docker.container_id(&id).await.unwrap().unwrap();

    let mut delays = Vec::new();
    for attempt in 1..=2u32 {
        docker_kill(&docker, &container).await;
        let (failed, observed_at) = eventually(
            &format!("failed attempt {attempt}"),
            Duration::from_secs(15),
            || async {
                let status = lc.status(&name).await.ok()?;
                let i = status.instances.first()?.clone();
                (i.phase == "failed" && i.attempt == attempt).then_some((i, status.observed_at))
            },
        )
        .await;
        assert_eq!(failed.id, id, "retried in place: same instance");
        let retry_at = failed
            .next_retry_at
            .expect("a failed instance has a retry time");
        delays.push(retry_at.saturating_since(observed_at));
        let status = lc.wait_ready(&name, READY).await.unwrap();
        assert_eq!(status.instances[0].id, id);
        assert_eq!(status.instances[0].attempt, attempt, "the count escalates");
        assert_eq!(
            docker.container_id(&id).await.unwrap().as_deref(),
            Some(container.as_str()),
            "the same container is started again"
        );
        echo(&lc, &name, &format!("after kill {attempt}")).await;
    }
    assert!(
        delays[1] > delays[0],
        "backoff escalates: {delays:?} (policy 1 s, then 2 s)"
    );
    lc.delete(&name).await.unwrap();
    assert!(containers_of(&engine, &manager).await.is_empty());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_that_exits_at_once_crash_loops_and_is_never_ready() {
    let test = "an_image_that_exits_at_once_crash_loops_and_is_never_ready";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-loop");
    let _cleanup = Cleanup::new(&manager);
    let (lc, _) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let mut events = lc.subscribe();
    let name = unique("loop");
    lc.apply(server_spec(&name, &images.v3)).await.unwrap();
    lc.start(&name, Wait::No).await.unwrap();
    let last = eventually("three failed attempts", Duration::from_secs(30), || async {
        let status = lc.status(&name).await.ok()?;
        assert_eq!(status.ready, 0, "a crash-looping server is never ready");
        let i = status.instances.first()?.clone();
        (i.attempt >= 3).then_some(i)
    })
    .await;
    assert!(
        last.reason.as_deref().is_some_and(|r| r.contains('3')),
        "the reason names exit code 3: {:?}",
        last.reason
    );
    while let Ok(event) = events.try_recv() {
        if event.server == name {
            assert!(
                !event.message.ends_with("-> ready"),
                "never ready, but saw {event}"
            );
        }
    }
    lc.delete(&name).await.unwrap();
    assert!(containers_of(&engine, &manager).await.is_empty());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_image_fails_with_its_name_and_backs_off() {
    let test = "a_missing_image_fails_with_its_name_and_backs_off";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let registry = images
        .registry
        .clone()
        .unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let missing = format!("{registry}/{}:v1", unique("mcp-lifecycle-missing"));
    let manager = unique("mcpl-missing");
    let _cleanup = Cleanup::new(&manager);
    let (lc, docker) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    let name = unique("missing");
    lc.apply(server_spec(&name, &missing)).await.unwrap();
    lc.start(&name, Wait::No).await.unwrap();
    let failed = eventually("a failed start", Duration::from_secs(20), || async {
        instance(&lc, &name)
            .await
            .filter(|i| i.phase == "failed" && i.reason.is_some())
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    println!("missing image: {reason}");
    assert!(
        reason.contains(&missing),
        "the reason names the image: {reason}"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = instance(&lc, &name).await.map_or(0, |i| i.attempt);
    let pulls = docker.pull_count();
    println!("missing image: {pulls} pulls in {attempts} attempts");
    assert!(attempts >= 2, "retried with backoff: attempt {attempts}");
    assert!(
        pulls <= u64::from(attempts) + 1 && pulls <= 6,
        "one pull per attempt, no busy loop: {pulls} pulls in {attempts} attempts"
    );
    assert_eq!(lc.status(&name).await.unwrap().ready, 0);
    lc.delete(&name).await.unwrap();
    assert!(containers_of(&engine, &manager).await.is_empty());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_lifecycle_adopts_running_containers_without_duplicates() {
    let test = "a_new_lifecycle_adopts_running_containers_without_duplicates";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-adopt");
    let _cleanup = Cleanup::new(&manager);
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let name = unique("adopt");
    let (first, _) = lifecycle(&manager, store.clone()).await;
    let mut spec = server_spec(&name, &images.v1);
    spec.replicas = 2;
    first.apply(spec).await.unwrap();
    first.start(&name, Wait::UntilReady(READY)).await.unwrap();
    let mut before = containers_of(&engine, &manager).await;
    before.sort();
    assert_eq!(before.len(), 2);
    // The host goes away; its containers keep running.
    first.detach().await;

    let (second, _) = lifecycle(&manager, store.clone()).await;
    let status = second.wait_ready(&name, READY).await.unwrap();
    assert_eq!(status.ready, 2);
    echo(&second, &name, "adopted").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after = containers_of(&engine, &manager).await;
    after.sort();
    assert_eq!(after, before, "the same containers, no duplicates");

    second.shutdown().await.unwrap();
    assert!(
        containers_of(&engine, &manager).await.is_empty(),
        "shutdown leaves no container with our labels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_no_spec_owns_are_removed() {
    let test = "containers_no_spec_owns_are_removed";
    let Some((engine, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-orphan");
    let _cleanup = Cleanup::new(&manager);
    let docker = orchestrator(&manager).await;
    let mut orphan = conformance_spec(&unique("orphan"), 0, Source::Image(images.v1.clone()));
    orphan
        .labels
        .insert(labels::MANAGED_BY.to_owned(), manager.clone());
    docker.start(&orphan).await.unwrap();
    assert_eq!(containers_of(&engine, &manager).await.len(), 1);

    let (lc, _) = lifecycle(&manager, Arc::new(InMemoryStore::new())).await;
    assert!(
        containers_of(&engine, &manager).await.is_empty(),
        "building a Lifecycle removes workloads of unknown servers"
    );
    lc.shutdown().await.unwrap();
}
