//! `DockerOrchestrator` and `DockerDistributionResolver` against the real
//! engine: the Orchestrator conformance suite (crash = `docker kill`), the
//! stdio attach (MCP frames over stdout only, a second connect replacing the
//! first), the container's safe defaults, logs, running digests, and digest
//! resolution through the engine's distribution endpoint.
//!
//! Tests skip (printing why) without an engine or the images of
//! `scripts/test-images.sh`, and fail instead under
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1`. Each uses its own manager name and
//! removes its containers even when it fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cleanup, eventually, is_podman, orchestrator, registry, setup, unique};
use mcp_lifecycle::ports::{Connection, ImageResolver, ResolveFailure, RuntimeStatus, labels};
use mcp_lifecycle::spec::{Source, Transport};
use mcp_lifecycle::testing::orchestrator_conformance::{
    ConformanceFixture, conformance_spec, run_all,
};
use mcp_lifecycle::{ErrorKind, InstanceId, InstanceSpec, Orchestrator, StopMode};
use mcp_lifecycle_docker::bollard::Docker;
use mcp_lifecycle_docker::bollard::query_parameters::KillContainerOptionsBuilder;
use mcp_lifecycle_docker::{DockerDistributionResolver, DockerOrchestrator, HttpAccess};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A stdio spec of `manager` running `image`.
fn spec(manager: &str, server: &str, ordinal: u64, image: &str) -> InstanceSpec {
    let mut spec = conformance_spec(server, ordinal, Source::Image(image.to_owned()));
    spec.labels
        .insert(labels::MANAGED_BY.to_owned(), manager.to_owned());
    spec.stop_grace_period = Duration::from_secs(2);
    spec
}

async fn docker_kill(docker: &Docker, container: &str) {
    let options = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker
        .kill_container(container, Some(options))
        .await
        .unwrap_or_else(|e| panic!("docker kill {container}: {e}"));
}

/// The conformance fixture: specs of `manager` running `image`, crashed with
/// `docker kill` behind the orchestrator's back.
fn fixture(orch: &DockerOrchestrator, manager: &str, image: &str) -> ConformanceFixture {
    let image = image.to_owned();
    let manager = manager.to_owned();
    let crasher = orch.clone();
    ConformanceFixture::new(
        Arc::new(move |server: &str, ordinal: u64| {
            let mut spec = conformance_spec(server, ordinal, Source::Image(image.clone()));
            spec.labels
                .insert(labels::MANAGED_BY.to_owned(), manager.clone());
            spec
        }),
        Arc::new(move |id: InstanceId| {
            let orch = crasher.clone();
            Box::pin(async move {
                let container = orch
                    .container_id(&id)
                    .await
                    .unwrap_or_else(|e| panic!("finding the container of {id}: {e}"))
                    .unwrap_or_else(|| panic!("{id} has no container to crash"));
                docker_kill(orch.docker(), &container).await;
            })
        }),
    )
    .with_timeout(Duration::from_secs(15))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_orchestrator_conformance_suite() {
    let Some((_, images)) = setup("passes_the_orchestrator_conformance_suite").await else {
        return;
    };
    let manager = unique("mcpl-conformance");
    let _cleanup = Cleanup::new(&manager);
    // Unscoped: instances are found by label, as a host without a manager name would.
    let orch = DockerOrchestrator::connect().await.unwrap();
    run_all(&orch, &fixture(&orch, &manager, &images.v1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoped_orchestrator_passes_the_conformance_suite_by_name() {
    let Some((_, images)) = setup("scoped_orchestrator_passes_the_conformance_suite_by_name").await
    else {
        return;
    };
    let manager = unique("mcpl-conformance-scoped");
    let _cleanup = Cleanup::new(&manager);
    let orch = orchestrator(&manager).await;
    run_all(&orch, &fixture(&orch, &manager, &images.v1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_attach_carries_mcp_frames_and_a_new_connect_replaces_the_old() {
    let test = "stdio_attach_carries_mcp_frames_and_a_new_connect_replaces_the_old";
    let Some((_, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-attach");
    let _cleanup = Cleanup::new(&manager);
    let orch = orchestrator(&manager).await;
    let spec = spec(&manager, &unique("attach"), 0, &images.v1);
    orch.start(&spec).await.unwrap();

    let initialize = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","#,
        r#""capabilities":{},"clientInfo":{"name":"docker-test","version":"0"}}}"#,
        "\n"
    );
    let Connection::Stdio(first) = orch.connect(&spec.id).await.unwrap() else {
        panic!("a stdio server must connect over stdio");
    };
    let mut writer = first.writer;
    let mut reader = BufReader::new(first.reader);
    writer.write_all(initialize.as_bytes()).await.unwrap();
    writer.flush().await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .expect("an initialize answer within 10 s")
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("stdout must carry JSON-RPC only, got {line:?}: {e}"));
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(answer["result"]["serverInfo"].is_object(), "{answer}");

    // A second connect ends the first stream and works on its own.
    let Connection::Stdio(second) = orch.connect(&spec.id).await.unwrap() else {
        panic!("stdio expected");
    };
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest))
        .await
        .expect("the first stream ends when it is replaced")
        .unwrap();
    let mut writer = second.writer;
    let mut reader = BufReader::new(second.reader);
    writer
        .write_all(initialize.replace("\"id\":1", "\"id\":2").as_bytes())
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .expect("an answer on the second stream")
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["id"], 2, "{answer}");

    // Logs hold stderr only for a stdio server, never the JSON-RPC traffic.
    let logs = orch.logs(&spec.id, 100).await.unwrap();
    assert!(
        logs.iter().all(|l| !l.contains("\"jsonrpc\"")),
        "stdout leaked into logs: {logs:?}"
    );

    orch.remove(&spec.id).await.unwrap();
    assert!(orch.connect(&spec.id).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_the_safe_defaults() {
    let test = "containers_get_the_safe_defaults";
    let Some((docker, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-safe");
    let _cleanup = Cleanup::new(&manager);
    let orch = orchestrator(&manager).await;
    let spec = spec(&manager, &unique("safe"), 0, &images.v1);
    let started = orch.start(&spec).await.unwrap();
    assert_eq!(started.status, RuntimeStatus::Running);

    let container = orch.container_id(&spec.id).await.unwrap().unwrap();
    let inspect = docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(
        inspect.name.as_deref(),
        Some(format!("/{manager}-{}", spec.id).as_str()),
        "containers are named {{manager}}-{{instance}}"
    );
    let config = inspect.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(config.open_stdin, Some(true));
    assert_eq!(config.stdin_once, Some(false));
    assert_eq!(config.tty, Some(false));
    let labels_seen = config.labels.unwrap();
    assert_eq!(labels_seen[labels::INSTANCE], spec.id.as_str());
    assert_eq!(labels_seen[labels::SERVER], spec.server);
    assert_eq!(labels_seen[labels::SPEC_HASH], spec.spec_hash);
    assert_eq!(labels_seen[labels::MANAGED_BY], manager);
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(512 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.readonly_rootfs, Some(true));
    // The effect, not one engine's words for it (Docker echoes `CapDrop:
    // ["ALL"]`, Podman lists the capabilities it dropped): the container's
    // first process has no capability at all and cannot gain privileges.
    let pid = inspect.state.and_then(|s| s.pid).unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .to_owned()
    };
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(
            u64::from_str_radix(&field(set), 16).unwrap(),
            0,
            "{set} of the container's process"
        );
    }
    assert_eq!(field("NoNewPrivs:"), "1", "no-new-privileges must be set");
    let networks = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    assert!(
        networks.contains_key(orch.network_name()),
        "the container joins {}: {networks:?}",
        orch.network_name()
    );

    assert_eq!(host.init, Some(true));

    // A graceful stop keeps the container with its exit state. SIGTERM ends
    // the server well inside the grace period, even right after its start
    // (before it installed its handler: the init forwards the signal).
    let began = tokio::time::Instant::now();
    orch.stop(&spec.id, StopMode::Graceful, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "SIGTERM was not honoured: the stop took {:?}",
        began.elapsed()
    );
    match orch.inspect(&spec.id).await.unwrap().status {
        RuntimeStatus::Exited { code, .. } => {
            assert!(matches!(code, Some(0 | 143)), "SIGTERM exit, got {code:?}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    orch.remove(&spec.id).await.unwrap();
    assert_eq!(
        orch.inspect(&spec.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_exits_at_once_reports_its_exit_code() {
    let test = "an_image_that_exits_at_once_reports_its_exit_code";
    let Some((_, images)) = setup(test).await else {
        return;
    };
    let manager = unique("mcpl-exit");
    let _cleanup = Cleanup::new(&manager);
    let orch = orchestrator(&manager).await;
    let spec = spec(&manager, &unique("exit"), 0, &images.v3);
    orch.start(&spec).await.unwrap();
    let status = eventually("v3 to exit", Duration::from_secs(10), || async {
        match orch.inspect(&spec.id).await.unwrap().status {
            s @ RuntimeStatus::Exited { .. } => Some(s),
            _ => None,
        }
    })
    .await;
    assert!(
        matches!(
            status,
            RuntimeStatus::Exited {
                code: Some(3),
                oom_killed: false,
                ..
            }
        ),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_images_are_pulled_when_missing_and_report_their_digest() {
    let test = "registry_images_are_pulled_when_missing_and_report_their_digest";
    let Some((docker, images)) = setup(test).await else {
        return;
    };
    let Some((registry_image, digest_v1)) = registry(test, &images).await else {
        return;
    };
    // A tag of our own, pushed now and removed locally, so the start must pull it.
    let tag = "docker-backend-pull-test";
    let reference = format!("{registry_image}:{tag}");
    docker
        .tag_image(
            &images.v1,
            Some(
                mcp_lifecycle_docker::bollard::query_parameters::TagImageOptionsBuilder::default()
                    .repo(&registry_image)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .unwrap();
    {
        use futures::StreamExt;
        let options =
            mcp_lifecycle_docker::bollard::query_parameters::PushImageOptionsBuilder::default()
                .tag(tag)
                .build();
        let anonymous = mcp_lifecycle_docker::bollard::auth::DockerCredentials::default();
        let mut push = docker.push_image(&registry_image, Some(options), Some(anonymous));
        while let Some(step) = push.next().await {
            step.unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
        }
    }
    docker
        .remove_image(
            &reference,
            None::<mcp_lifecycle_docker::bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();

    let manager = unique("mcpl-pull");
    let _cleanup = Cleanup::new(&manager);
    let orch = orchestrator(&manager).await;
    let tagged_spec = spec(&manager, &unique("pull"), 0, &reference);
    let podman = is_podman(&docker).await;
    let started = orch.start(&tagged_spec).await.unwrap();
    assert_eq!(orch.pull_count(), 1, "one pull for a missing image");
    if podman {
        // Podman's repo digests cross every name with every digest, so they
        // do not say what the tag was pulled by: unknown, never a guess.
        assert_eq!(
            started.image_digest, None,
            "a tag-started container on Podman"
        );
    } else {
        assert_eq!(
            started.image_digest.as_deref(),
            Some(digest_v1.as_str()),
            "the running digest is the registry's manifest digest of v1"
        );
    }
    // Starting again in place pulls nothing.
    orch.stop(&tagged_spec.id, StopMode::Force, Duration::ZERO)
        .await
        .unwrap();
    orch.start(&tagged_spec).await.unwrap();
    assert_eq!(orch.pull_count(), 1);

    // Started by digest (as the controller pins tags), on either engine the
    // running digest is the one asked for, pulled from the registry.
    let pinned = format!("{registry_image}@{digest_v1}");
    let pinned_spec = spec(&manager, &unique("pinned"), 0, &pinned);
    let started = orch.start(&pinned_spec).await.unwrap();
    assert_eq!(started.image_digest.as_deref(), Some(digest_v1.as_str()));
    let container = orch
        .container_id(&pinned_spec.id)
        .await
        .unwrap()
        .expect("the pinned instance has a container");
    let inspected = docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(
        inspected.config.and_then(|c| c.image).as_deref(),
        Some(pinned.as_str()),
        "the container was created from the pinned reference"
    );

    if !podman {
        // The resolver agrees, through the engine's distribution endpoint
        // (Podman has none; `the_resolver_classifies_failures` covers it).
        let resolver = DockerDistributionResolver::new(docker.clone());
        assert_eq!(resolver.resolve(&reference).await.unwrap(), digest_v1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_classifies_failures() {
    let test = "the_resolver_classifies_failures";
    let Some((docker, images)) = setup(test).await else {
        return;
    };
    let resolver = DockerDistributionResolver::new(docker.clone());
    let pinned = format!("nowhere.invalid/x@sha256:{}", "a".repeat(64));
    assert_eq!(
        resolver.resolve(&pinned).await.unwrap(),
        format!("sha256:{}", "a".repeat(64)),
        "a pinned reference resolves without a call"
    );

    let unreachable = resolver
        .resolve("127.0.0.1:1/mcp-lifecycle/none:v1")
        .await
        .unwrap_err();
    if is_podman(&docker).await {
        // Podman has no distribution endpoint: every resolution says so,
        // naming the resolver to use instead, rather than "not found".
        assert_eq!(
            resolver.classify(&unreachable),
            ResolveFailure::Unsupported,
            "{unreachable}"
        );
        assert!(
            unreachable.to_string().contains("RegistryResolver"),
            "{unreachable}"
        );
        let Some((registry_image, _)) = registry(test, &images).await else {
            return;
        };
        let tagged = resolver
            .resolve(&format!("{registry_image}:v1"))
            .await
            .unwrap_err();
        assert_eq!(resolver.classify(&tagged), ResolveFailure::Unsupported);
        return;
    }
    assert_eq!(
        resolver.classify(&unreachable),
        ResolveFailure::Unreachable,
        "{unreachable}"
    );

    let Some((registry_image, digest_v1)) = registry(test, &images).await else {
        return;
    };
    assert_eq!(
        resolver
            .resolve(&format!("{registry_image}:v1"))
            .await
            .unwrap(),
        digest_v1
    );
    let missing_tag = resolver
        .resolve(&format!("{registry_image}:no-such-tag"))
        .await
        .unwrap_err();
    assert_eq!(
        resolver.classify(&missing_tag),
        ResolveFailure::NotFound,
        "{missing_tag}"
    );
    let missing_repo = resolver
        .resolve(&format!(
            "{}/mcp-lifecycle-no-such-repo:v1",
            images.registry.clone().unwrap()
        ))
        .await
        .unwrap_err();
    assert_eq!(
        resolver.classify(&missing_repo),
        ResolveFailure::NotFound,
        "{missing_repo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_servers_are_reached_per_the_access_option() {
    let test = "http_servers_are_reached_per_the_access_option";
    let Some((docker, images)) = setup(test).await else {
        return;
    };
    for access in [HttpAccess::PublishedLoopback, HttpAccess::ContainerAddress] {
        let manager = unique("mcpl-access");
        let _cleanup = Cleanup::new(&manager);
        let orch = DockerOrchestrator::builder()
            .manager(&manager)
            .http_access(access)
            .build()
            .await
            .unwrap();
        let mut spec = spec(&manager, &unique("access"), 0, &images.v1);
        spec.transport = Transport::Http {
            port: 8080,
            path: "/mcp".into(),
        };
        spec.env = vec![(
            "MCP_TEST_TRANSPORT".into(),
            mcp_lifecycle::ports::ResolvedEnv::Plain("http".into()),
        )];
        orch.start(&spec).await.unwrap();
        let Connection::Url(url) = orch.connect(&spec.id).await.unwrap() else {
            panic!("an HTTP server connects by URL");
        };
        let container = orch.container_id(&spec.id).await.unwrap().unwrap();
        let inspect = docker.inspect_container(&container, None).await.unwrap();
        // A port with a host binding, not merely a key: Podman lists the
        // exposed port with no binding where Docker lists nothing.
        let published = inspect
            .host_config
            .and_then(|h| h.port_bindings)
            .is_some_and(|b| {
                b.values()
                    .any(|bindings| bindings.as_ref().is_some_and(|v| !v.is_empty()))
            });
        match access {
            HttpAccess::PublishedLoopback => {
                assert!(url.starts_with("http://127.0.0.1:"), "{url}");
                assert!(
                    !url.starts_with("http://127.0.0.1:8080/"),
                    "an ephemeral port: {url}"
                );
                assert!(published);
            }
            HttpAccess::ContainerAddress => {
                assert!(url.ends_with(":8080/mcp"), "{url}");
                assert!(!url.contains("127.0.0.1"), "{url}");
                assert!(!published, "nothing is published");
            }
        }
        assert!(url.ends_with("/mcp"), "{url}");
        // The server answers there (this Linux host routes to the bridge too).
        let authority = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        eventually(&format!("{url} to accept"), Duration::from_secs(10), || {
            let authority = authority.clone();
            async move {
                tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        orch.remove(&spec.id).await.unwrap();
    }
}
