//! Image freshness end to end: `Lifecycle` on `DockerOrchestrator` against
//! the real engine and the local registry of `scripts/test-images.sh`
//! (127.0.0.1:5000), with `RegistryResolver` (and once with
//! `DockerDistributionResolver`). The same scenarios as
//! `mcp-lifecycle/tests/freshness.rs` and `high_availability.rs`, which run
//! them on fakes under paused time:
//!
//! - a tag is pinned to its digest at the first start (containers run
//!   `repo@sha256:…`), and a check finds that digest up to date;
//! - a new digest under the tag is an available update, and with
//!   auto-reinstall on it is rolled out by digest and verified;
//! - a stopped registry makes checks fail (counting up) until it is back;
//! - a rollout that cannot become ready fails and the server keeps serving;
//! - a rollout's verification survives a host restart on a `RedbStore`;
//! - three hosts with leader election checking at once reinstall once.
//!
//! Each test pushes its own tag (`fresh-<test>-<random>`) of the shared
//! images and never moves or deletes a shared tag. Tests skip (printing why)
//! without an engine, images or registry, and fail instead under
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1`. The test that stops the registry holds
//! `REGISTRY` exclusively (the others share it) and restarts the registry
//! even when it fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Cleanup, Untag, containers_of, eventually, images_script, is_podman, orchestrator, push_as,
    registry, registry_digest, running_images, setup, unique,
};
use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::state::{
    BackoffPolicy, CheckFailure, Freshness, FreshnessPolicy, RolloutFailure, ServerPhase,
};
use mcp_lifecycle::{
    ImageResolver, InMemoryStore, LeaderElection, Lifecycle, LifecycleConfig, LifecycleEventKind,
    RedbStore, RegistryResolver, ServerSpec, ServerStatus, Source, Store, Wait,
};
use mcp_lifecycle_docker::DockerDistributionResolver;
use mcp_lifecycle_docker::bollard::Docker;
use tokio::sync::RwLock;

/// Shared by every test that needs the registry up; held exclusively by the
/// one that stops it.
static REGISTRY: RwLock<()> = RwLock::const_new(());

const READY: Duration = Duration::from_secs(60);
const REGISTRY_HOST: &str = "127.0.0.1:5000";

/// What a test needs: the engine, the registry repository and the local
/// test images. Digests are what this test's own pushes report (images.env
/// can be rewritten by a concurrent `scripts/test-images.sh` run, which
/// rebuilds the images; a test's own tags never move under it).
struct Env {
    engine: Docker,
    repo: String,
    local_v1: String,
    local_v2: String,
    local_v3: String,
}

async fn env(test: &str) -> Option<Env> {
    let (engine, images) = setup(test).await?;
    let (repo, _) = registry(test, &images).await?;
    Some(Env {
        engine,
        repo,
        local_v1: images.v1,
        local_v2: images.v2,
        local_v3: images.v3,
    })
}

impl Env {
    /// A fresh tag of this test in the registry, pointing at `local`'s
    /// content, and the digest the registry serves for it; untagged locally
    /// (never in the registry) when the guard drops.
    async fn own_tag(&self, test: &str, local: &str) -> (String, String, Untag) {
        let tag = format!("{}:{}", self.repo, unique(&format!("fresh-{test}")));
        let guard = Untag(tag.clone());
        let digest = push_as(local, &tag).await;
        (tag, digest, guard)
    }

    fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repo)
    }
}

fn resolver() -> Arc<dyn ImageResolver> {
    Arc::new(
        RegistryResolver::builder()
            .insecure_registry(REGISTRY_HOST)
            .timeout(Duration::from_secs(5))
            .build(),
    )
}

/// Short schedules: stepped restart backoff (1 s, 2 s, then 4 s), frequent
/// freshness ticks, and rollout verification after `verify` seconds.
fn config(manager: &str, verify: &[u64]) -> LifecycleConfig {
    LifecycleConfig {
        manager_name: manager.to_owned(),
        backoff: BackoffPolicy::stepped(
            &[(Duration::from_secs(1), 1), (Duration::from_secs(2), 1)],
            Duration::from_secs(4),
        )
        .with_reset_after(Duration::from_secs(600)),
        startup_probe_interval: Duration::from_millis(200),
        freshness: FreshnessPolicy {
            verify_backoff: verify.iter().copied().map(Duration::from_secs).collect(),
            rollout_deadline: Duration::from_secs(60),
            ..FreshnessPolicy::default()
        },
        freshness_tick: Duration::from_millis(500),
        resolve_timeout: Duration::from_secs(5),
        ..LifecycleConfig::default()
    }
}

/// Enough verifications for a real rolling replacement to finish.
const VERIFY_OK: &[u64] = &[1, 2, 2, 2, 3, 5, 5, 10, 10, 10];
/// The short schedule of a rollout meant to fail: 1 + 2 + 2 + 2 s.
const VERIFY_SHORT: &[u64] = &[1, 2, 2, 2];

fn server_spec(name: &str, image: &str, replicas: u32, auto_reinstall: bool) -> ServerSpec {
    let mut spec = ServerSpec::new(name, Source::Image(image.to_owned()));
    spec.replicas = replicas;
    spec.update = UpdatePolicy {
        check: true,
        auto_reinstall,
    };
    spec.stop_grace_period = Duration::from_secs(5);
    spec.health.startup_timeout = Duration::from_secs(30);
    spec
}

async fn lifecycle(
    manager: &str,
    store: Arc<dyn Store>,
    resolver: Arc<dyn ImageResolver>,
    config: LifecycleConfig,
) -> Lifecycle {
    Lifecycle::builder()
        .orchestrator(Arc::new(orchestrator(manager).await))
        .store(store)
        .resolver(resolver)
        .config(config)
        .build()
        .await
        .expect("Lifecycle::build")
}

/// Starts `name` and waits until the controller's own first check (due at
/// once on a fresh host) has run, so the test's checks follow it.
async fn running(lc: &Lifecycle, name: &str) -> ServerStatus {
    lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    eventually("the first scheduled check", READY, || async {
        lc.status(name)
            .await
            .ok()
            .filter(|s| s.update.last_check.is_some())
    })
    .await
}

/// Waits for `name`'s freshness to leave `Reinstalling`, checking `during`
/// on every status seen meanwhile.
async fn rollout_end(
    lc: &Lifecycle,
    name: &str,
    timeout: Duration,
    mut during: impl FnMut(&ServerStatus),
) -> ServerStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = lc.status(name).await.unwrap();
        if !s.update.state.is_reinstalling() {
            return s;
        }
        during(&s);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not end within {timeout:?}:\n{}",
            s.to_table()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until exactly `n` containers of `manager` exist and all run `image`.
async fn containers_settle(engine: &Docker, manager: &str, n: usize, image: &str) {
    let want = vec![image.to_owned(); n];
    eventually(
        &format!("exactly {n} running containers on {image}"),
        READY,
        || async {
            let all = containers_of(engine, manager).await.len();
            let running = running_images(engine, manager).await;
            (all == n && running == want).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------- 1. up to date

/// A server started by a fresh tag with `resolver` is pinned to the tag's
/// digest and found up to date. Where the engine cannot offer the resolver
/// (`engine_resolves` false: the distribution resolver on Podman), the tag
/// cannot be pinned: the container runs the tag, its digest is unknown, and
/// every check fails as `ResolverUnsupported` naming the resolver to use.
async fn up_to_date(
    test: &str,
    resolver: impl FnOnce(&Docker) -> Arc<dyn ImageResolver>,
    engine_resolves: impl FnOnce(bool) -> bool,
) {
    let Some(env) = env(test).await else {
        return;
    };
    let resolves = engine_resolves(is_podman(&env.engine).await);
    let _registry = REGISTRY.read().await;
    let (tag, v1, _untag) = env.own_tag(test, &env.local_v1).await;
    let manager = unique("mcpl-fresh");
    let _cleanup = Cleanup::new(&manager);
    let resolver = resolver(&env.engine);
    let lc = lifecycle(
        &manager,
        Arc::new(InMemoryStore::new()),
        resolver,
        config(&manager, VERIFY_OK),
    )
    .await;
    let name = unique("fresh");
    lc.apply(server_spec(&name, &tag, 1, false)).await.unwrap();
    let s = running(&lc, &name).await;
    if !resolves {
        assert!(s.running_digests.is_empty(), "{}", s.to_table());
        assert_eq!(
            running_images(&env.engine, &manager).await,
            vec![tag.clone()]
        );
        let u = lc.check_updates_now(&name).await.unwrap();
        assert!(
            matches!(
                u.state,
                Freshness::CheckFailed {
                    category: CheckFailure::ResolverUnsupported,
                    ..
                }
            ),
            "{u:?}"
        );
        let failure = u.last_failure.expect("the failure is recorded");
        assert!(
            failure.message.contains("RegistryResolver"),
            "the failure names the resolver to use: {}",
            failure.message
        );
        lc.delete(&name).await.unwrap();
        lc.shutdown().await.unwrap();
        assert!(containers_of(&env.engine, &manager).await.is_empty());
        return;
    }
    assert_eq!(s.running_digests, vec![v1.clone()], "{}", s.to_table());

    let u = lc.check_updates_now(&name).await.unwrap();
    assert_eq!(u.state, Freshness::UpToDate { digest: v1.clone() });
    assert_eq!(u.available_digest.as_deref(), Some(v1.as_str()));
    assert!(u.last_success.is_some() && u.next_check_at.is_some());
    // What the registry serves, and what docker recorded for the image.
    if let Some(recorded) = registry_digest("v1")
        && recorded != v1
    {
        println!("note: images.env records v1 as {recorded}; the images were rebuilt since");
    }
    let repo_digests = common::docker_cli(&[
        "image",
        "inspect",
        "--format",
        "{{range .RepoDigests}}{{println .}}{{end}}",
        &tag,
    ])
    .await;
    assert!(
        repo_digests.lines().any(|l| l == env.pinned(&v1)),
        "{repo_digests}"
    );
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
    assert!(containers_of(&env.engine, &manager).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_resolver_finds_the_running_digest_up_to_date() {
    up_to_date("uptodate-oci", |_| resolver(), |_podman| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distribution_resolver_finds_the_running_digest_up_to_date() {
    // Podman has no distribution endpoint: there the check must fail clearly.
    up_to_date(
        "uptodate-engine",
        |engine| {
            Arc::new(
                DockerDistributionResolver::new(engine.clone())
                    .with_timeout(Duration::from_secs(10)),
            )
        },
        |podman| !podman,
    )
    .await;
}

// ---------------------------------------------------------------- 2. update, reinstall

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_available_then_reinstalled_by_digest() {
    let test = "reinstall";
    let Some(env) = env(test).await else {
        return;
    };
    let _registry = REGISTRY.read().await;
    let (tag, v1, _untag) = env.own_tag(test, &env.local_v1).await;
    let manager = unique("mcpl-fresh");
    let _cleanup = Cleanup::new(&manager);
    let lc = lifecycle(
        &manager,
        Arc::new(InMemoryStore::new()),
        resolver(),
        config(&manager, VERIFY_OK),
    )
    .await;
    let mut events = lc.subscribe();
    let name = unique("fresh");
    lc.apply(server_spec(&name, &tag, 2, false)).await.unwrap();
    running(&lc, &name).await;
    let u = lc.check_updates_now(&name).await.unwrap();
    assert_eq!(u.state, Freshness::UpToDate { digest: v1.clone() });

    let v2 = push_as(&env.local_v2, &tag).await;
    assert_ne!(v2, v1, "v2 is another digest");
    let u = lc.check_updates_now(&name).await.unwrap();
    assert_eq!(
        u.state,
        Freshness::UpdateAvailable {
            running: v1.clone(),
            available: v2.clone()
        }
    );
    assert_eq!(u.available_digest.as_deref(), Some(v2.as_str()));
    assert_eq!(
        running_images(&env.engine, &manager).await,
        vec![env.pinned(&v1); 2],
        "nothing rolled out with auto-reinstall off: the digest pinned at the first start"
    );

    lc.set_update_policy(
        &name,
        UpdatePolicy {
            check: true,
            auto_reinstall: true,
        },
    )
    .await
    .unwrap();
    let u = lc.check_updates_now(&name).await.unwrap();
    assert!(
        matches!(&u.state, Freshness::Reinstalling { target, previous, .. }
            if *target == v2 && *previous == v1),
        "{u:?}"
    );
    assert_eq!(u.target_digest.as_deref(), Some(v2.as_str()));
    let pinned = env.pinned(&v2);
    let s = rollout_end(&lc, &name, Duration::from_secs(90), |s| {
        assert!(
            s.ready >= 1,
            "kept serving while rolling:\n{}",
            s.to_table()
        );
    })
    .await;
    assert_eq!(
        s.update.state,
        Freshness::UpToDate { digest: v2.clone() },
        "{}",
        s.to_table()
    );
    assert_eq!(s.rollout_image.as_deref(), Some(pinned.as_str()));
    assert!(s.update.last_reinstall_at.is_some());
    containers_settle(&env.engine, &manager, 2, &pinned).await;
    let s = lc.wait_ready(&name, READY).await.unwrap();
    assert_eq!(s.ready, 2);
    assert_eq!(s.running_digests, vec![v2.clone()]);
    let mut rollouts = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == LifecycleEventKind::FreshnessChanged && e.message.starts_with("rolling out") {
            rollouts.push(e.message);
        }
    }
    assert_eq!(rollouts, vec![format!("rolling out {pinned}")]);
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
    assert!(containers_of(&env.engine, &manager).await.is_empty());
}

// ---------------------------------------------------------------- 3. registry down

/// Runs `scripts/test-images.sh start-registry` when dropped, so the
/// registry is back even if the test fails.
struct RestartRegistry;

fn run_script(command: &str) -> Result<(), String> {
    let out = std::process::Command::new(images_script())
        .arg(command)
        .output()
        .map_err(|e| format!("test-images.sh {command}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "test-images.sh {command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn registry_script(command: &str) {
    if let Err(e) = run_script(command) {
        panic!("{e}");
    }
}

impl Drop for RestartRegistry {
    fn drop(&mut self) {
        // No panic here: this may run while unwinding.
        if let Err(e) = run_script("start-registry") {
            eprintln!("{e}; run scripts/test-images.sh start-registry");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_outage_counts_failures_and_recovers() {
    let test = "outage";
    let Some(env) = env(test).await else {
        return;
    };
    // Exclusive: no other test of this binary uses the registry meanwhile.
    let _registry = REGISTRY.write().await;
    let (tag, v1, _untag) = env.own_tag(test, &env.local_v1).await;
    let manager = unique("mcpl-fresh");
    let _cleanup = Cleanup::new(&manager);
    let lc = lifecycle(
        &manager,
        Arc::new(InMemoryStore::new()),
        resolver(),
        config(&manager, VERIFY_OK),
    )
    .await;
    let name = unique("fresh");
    lc.apply(server_spec(&name, &tag, 1, true)).await.unwrap();
    running(&lc, &name).await;

    let _restart = RestartRegistry;
    tokio::task::spawn_blocking(|| registry_script("stop-registry"))
        .await
        .unwrap();
    for n in 1..=3 {
        let u = lc.check_updates_now(&name).await.unwrap();
        assert_eq!(
            u.state,
            Freshness::CheckFailed {
                category: CheckFailure::RegistryUnreachable,
                consecutive_failures: n
            },
            "{u:?}"
        );
        let failure = u.last_failure.expect("the failure is recorded");
        assert_eq!(failure.category, CheckFailure::RegistryUnreachable);
        assert!(!failure.message.is_empty());
        // The server itself is unaffected.
        assert_eq!(lc.status(&name).await.unwrap().ready, 1);
    }
    tokio::task::spawn_blocking(|| registry_script("start-registry"))
        .await
        .unwrap();
    let u = lc.check_updates_now(&name).await.unwrap();
    assert_eq!(u.state, Freshness::UpToDate { digest: v1.clone() }, "{u:?}");
    assert!(u.last_success.is_some());
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
    assert!(containers_of(&env.engine, &manager).await.is_empty());
}

// ---------------------------------------------------------------- 4. failed rollout

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_that_cannot_become_ready_fails_and_keeps_serving() {
    let test = "badrollout";
    let Some(env) = env(test).await else {
        return;
    };
    let _registry = REGISTRY.read().await;
    let (tag, v1, _untag) = env.own_tag(test, &env.local_v1).await;
    let manager = unique("mcpl-fresh");
    let _cleanup = Cleanup::new(&manager);
    let lc = lifecycle(
        &manager,
        Arc::new(InMemoryStore::new()),
        resolver(),
        config(&manager, VERIFY_SHORT),
    )
    .await;
    let name = unique("fresh");
    lc.apply(server_spec(&name, &tag, 1, true)).await.unwrap();
    running(&lc, &name).await;
    assert_eq!(
        running_images(&env.engine, &manager).await,
        vec![env.pinned(&v1)],
        "the tag pinned to its digest at the first start"
    );

    let v3 = push_as(&env.local_v3, &tag).await;
    assert_ne!(v3, v1);
    let u = lc.check_updates_now(&name).await.unwrap();
    assert!(
        matches!(&u.state, Freshness::Reinstalling { target, .. } if *target == v3),
        "{u:?}"
    );
    let v1 = v1.clone();
    let mut saw_rollout = false;
    let s = rollout_end(&lc, &name, Duration::from_secs(60), |s| {
        saw_rollout |= s.rollout_image.is_some();
        assert!(
            s.ready >= 1,
            "the old instance kept serving:\n{}",
            s.to_table()
        );
        assert!(
            s.running_digests.contains(&v1),
            "a ready instance runs v1:\n{}",
            s.to_table()
        );
    })
    .await;
    assert!(saw_rollout, "rollout_image was set during the rollout");
    assert_eq!(
        s.update.state,
        Freshness::RolloutFailed {
            target: v3.clone(),
            category: RolloutFailure::NotReady
        },
        "{}",
        s.to_table()
    );
    assert_eq!(
        s.rollout_image,
        Some(env.pinned(&v1)),
        "reverted to the digest pinned at the first start"
    );
    assert!(s.ready >= 1, "{}", s.to_table());
    // The failed instance goes; the v1 one stays, ready, on what it ran.
    containers_settle(&env.engine, &manager, 1, &env.pinned(&v1)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = lc.status(&name).await.unwrap();
    assert_eq!((s.ready, s.instances.len()), (1, 1), "{}", s.to_table());
    assert_eq!(s.running_digests, vec![v1.clone()]);
    assert!(matches!(s.update.state, Freshness::RolloutFailed { .. }));
    assert_eq!(
        running_images(&env.engine, &manager).await,
        vec![env.pinned(&v1)],
        "the tag pinned to its digest at the first start"
    );
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
    assert!(containers_of(&env.engine, &manager).await.is_empty());
}

// ---------------------------------------------------------------- 5. host restart

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verification_resumes_after_a_host_restart_on_redb() {
    let test = "restart";
    let Some(env) = env(test).await else {
        return;
    };
    let _registry = REGISTRY.read().await;
    let (tag, v1, _untag) = env.own_tag(test, &env.local_v1).await;
    let manager = unique("mcpl-fresh");
    let _cleanup = Cleanup::new(&manager);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    // The first verification only after 4 s: the host is gone by then.
    let verify = &[4, 2, 2, 2, 3, 5, 5, 10, 10, 10];
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let weak = Arc::downgrade(&store);
    let lc = lifecycle(
        &manager,
        store as Arc<dyn Store>,
        resolver(),
        config(&manager, verify),
    )
    .await;
    let name = unique("fresh");
    lc.apply(server_spec(&name, &tag, 1, true)).await.unwrap();
    running(&lc, &name).await;
    let v2 = push_as(&env.local_v2, &tag).await;
    assert_ne!(v2, v1);
    let u = lc.check_updates_now(&name).await.unwrap();
    assert!(
        matches!(&u.state, Freshness::Reinstalling { target, verifications: 0, .. } if *target == v2),
        "{u:?}"
    );
    // The host dies mid-verification; its containers stay.
    drop(lc);
    eventually("the first store to close", Duration::from_secs(20), || {
        let gone = weak.upgrade().is_none();
        async move { gone.then_some(()) }
    })
    .await;
    assert!(!containers_of(&env.engine, &manager).await.is_empty());

    let store = Arc::new(RedbStore::open(&path).unwrap());
    let lc = lifecycle(
        &manager,
        store as Arc<dyn Store>,
        resolver(),
        config(&manager, verify),
    )
    .await;
    let s = lc.status(&name).await.unwrap();
    assert!(
        s.update.state.is_reinstalling(),
        "the verification schedule is durable:\n{}",
        s.to_table()
    );
    assert_eq!(s.rollout_image.as_deref(), Some(env.pinned(&v2).as_str()));
    let s = rollout_end(&lc, &name, Duration::from_secs(90), |_| {}).await;
    assert_eq!(
        s.update.state,
        Freshness::UpToDate { digest: v2.clone() },
        "{}",
        s.to_table()
    );
    containers_settle(&env.engine, &manager, 1, &env.pinned(&v2)).await;
    lc.delete(&name).await.unwrap();
    lc.shutdown().await.unwrap();
    assert!(containers_of(&env.engine, &manager).await.is_empty());
}

// ---------------------------------------------------------------- 6. three hosts

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_checking_at_once_reinstall_exactly_once() {
    let test = "threehosts";
    let Some(env) = env(test).await else {
        return;
    };
    let _registry = REGISTRY.read().await;
    let (tag, v1, _untag) = env.own_tag(test, &env.local_v1).await;
    let manager = unique("mcpl-fresh");
    let _cleanup = Cleanup::new(&manager);
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let mut hosts = Vec::new();
    for host in ["host-a", "host-b", "host-c"] {
        let config = LifecycleConfig {
            holder_id: Some(format!("{manager}-{host}")),
            leader_election: Some(LeaderElection::default()),
            ..config(&manager, VERIFY_OK)
        };
        hosts.push(lifecycle(&manager, store.clone(), resolver(), config).await);
    }
    let mut events: Vec<_> = hosts.iter().map(Lifecycle::subscribe).collect();
    let name = unique("fresh");
    const REPLICAS: u32 = 2;
    hosts[0]
        .apply(server_spec(&name, &tag, REPLICAS, true))
        .await
        .unwrap();
    // Every host knows the server (standbys reload the store on renewal),
    // and the leader has it running and checked once.
    let leader = eventually("a leader running the server", READY, || async {
        for (i, h) in hosts.iter().enumerate() {
            if let Ok(s) = h.status(&name).await
                && s.phase == ServerPhase::Running
                && s.ready == REPLICAS
                && s.update.last_check.is_some()
            {
                return Some(i);
            }
        }
        None
    })
    .await;
    eventually("every host to know the server", READY, || async {
        for h in &hosts {
            h.status(&name).await.ok()?;
        }
        Some(())
    })
    .await;
    assert_eq!(
        running_images(&env.engine, &manager).await,
        vec![env.pinned(&v1); REPLICAS as usize],
        "three hosts, exactly the desired containers (on the digest pinned at the first start)"
    );

    let v2 = push_as(&env.local_v2, &tag).await;
    assert_ne!(v2, v1);
    let (r0, r1, r2) = tokio::join!(
        hosts[0].check_updates_now(&name),
        hosts[1].check_updates_now(&name),
        hosts[2].check_updates_now(&name),
    );
    for r in [r0, r1, r2] {
        r.unwrap();
    }
    let s = rollout_end(&hosts[leader], &name, Duration::from_secs(120), |_| {}).await;
    assert_eq!(
        s.update.state,
        Freshness::UpToDate { digest: v2.clone() },
        "{}",
        s.to_table()
    );
    let pinned = env.pinned(&v2);
    containers_settle(&env.engine, &manager, REPLICAS as usize, &pinned).await;
    // A while longer: still exactly the desired containers, on v2.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        running_images(&env.engine, &manager).await,
        vec![pinned.clone(); REPLICAS as usize]
    );
    assert_eq!(
        containers_of(&env.engine, &manager).await.len(),
        REPLICAS as usize
    );
    let rollouts: Vec<String> = events
        .iter_mut()
        .flat_map(|rx| {
            let mut seen = Vec::new();
            while let Ok(e) = rx.try_recv() {
                if e.kind == LifecycleEventKind::FreshnessChanged
                    && e.message.starts_with("rolling out")
                {
                    seen.push(e.message);
                }
            }
            seen
        })
        .collect();
    assert_eq!(
        rollouts,
        vec![format!("rolling out {pinned}")],
        "exactly one reinstall across three hosts"
    );
    hosts[leader].delete(&name).await.unwrap();
    eventually("no containers after delete", READY, || async {
        containers_of(&env.engine, &manager)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    for h in hosts {
        h.detach().await;
    }
}
