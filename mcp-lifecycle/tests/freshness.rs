//! Image freshness under paused time with the fake runtime and resolver:
//! checks, digest rollouts, verification, failures and restarts.

use std::sync::Arc;
use std::time::Duration;

use mcp_lifecycle::ports::ResolveFailure;
use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::state::{CheckFailure, Freshness, RolloutFailure};
use mcp_lifecycle::testing::{
    FakeOrchestrator, FakeProber, FakeResolver, ImageCatalog, fake_digest,
};
use mcp_lifecycle::{
    Clock, InMemoryStore, Lifecycle, LifecycleConfig, ServerSpec, Source, Store, TokioClock, Wait,
};

const TAG: &str = "127.0.0.1:5000/mcp-test-server:latest";
const REPO: &str = "127.0.0.1:5000/mcp-test-server";

struct World {
    catalog: ImageCatalog,
    runtime: FakeOrchestrator,
    resolver: FakeResolver,
    store: Arc<InMemoryStore>,
    clock: Arc<TokioClock>,
}

impl World {
    fn new() -> Self {
        let catalog = ImageCatalog::new();
        catalog.push(TAG, fake_digest("v1"));
        // Pullable by digest too, as a registry serves what it was pushed.
        catalog.push(format!("{REPO}@{}", fake_digest("v1")), fake_digest("v1"));
        let clock = Arc::new(TokioClock::new());
        World {
            runtime: FakeOrchestrator::builder()
                .with_catalog(catalog.clone())
                .with_clock(clock.clone())
                .build(),
            resolver: FakeResolver::new(catalog.clone()),
            catalog,
            store: Arc::new(InMemoryStore::new()),
            clock,
        }
    }

    /// Publishes `label`'s digest under the tag, and under its pinned name
    /// (as a registry does: the digest is pullable once pushed).
    fn push(&self, label: &str) -> String {
        let digest = fake_digest(label);
        self.catalog.push(TAG, digest.clone());
        self.catalog
            .push(format!("{REPO}@{digest}"), digest.clone());
        digest
    }

    async fn lifecycle(&self) -> Lifecycle {
        Lifecycle::builder()
            .orchestrator(Arc::new(self.runtime.clone()))
            .prober(Arc::new(FakeProber::new()))
            .resolver(Arc::new(self.resolver.clone()))
            .store(self.store.clone() as Arc<dyn Store>)
            .clock(self.clock.clone())
            .config(LifecycleConfig {
                freshness_tick: Duration::from_secs(1),
                ..LifecycleConfig::default()
            })
            .build()
            .await
            .unwrap()
    }
}

fn spec(replicas: u32, auto_reinstall: bool) -> ServerSpec {
    let mut spec = ServerSpec::new("tools", Source::Image(TAG.into()));
    spec.replicas = replicas;
    spec.update = UpdatePolicy {
        check: true,
        auto_reinstall,
    };
    spec
}

async fn running(l: &Lifecycle) {
    l.start("tools", Wait::UntilReady(Duration::from_secs(30)))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn up_to_date_then_update_available_then_reinstalled_by_digest() {
    let w = World::new();
    let v1 = fake_digest("v1");
    let l = w.lifecycle().await;
    l.apply(spec(2, false)).await.unwrap();
    running(&l).await;
    w.resolver.reset_requests();
    let u = l.check_updates_now("tools").await.unwrap();
    assert_eq!(u.state, Freshness::UpToDate { digest: v1.clone() });
    assert_eq!(w.resolver.requests(), 1);

    let v2 = w.push("v2");
    let u = l.check_updates_now("tools").await.unwrap();
    assert_eq!(
        u.state,
        Freshness::UpdateAvailable {
            running: v1.clone(),
            available: v2.clone()
        }
    );
    assert_eq!(u.available_digest.as_deref(), Some(v2.as_str()));

    l.set_update_policy(
        "tools",
        UpdatePolicy {
            check: true,
            auto_reinstall: true,
        },
    )
    .await
    .unwrap();
    let u = l.check_updates_now("tools").await.unwrap();
    assert!(
        matches!(&u.state, Freshness::Reinstalling { target, .. } if *target == v2),
        "{u:?}"
    );
    // Let the rolling replacement and the verification schedule run.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let s = l.status("tools").await.unwrap();
    assert_eq!(
        s.update.state,
        Freshness::UpToDate { digest: v2.clone() },
        "{}",
        s.to_table()
    );
    assert_eq!(s.ready, 2);
    let pinned = format!("{REPO}@{v2}");
    let instances = w.runtime.instances();
    assert_eq!(instances.len(), 2);
    for i in &instances {
        assert_eq!(
            i.spec.source,
            Source::Image(pinned.clone()),
            "rolled out by digest, never the tag"
        );
        assert_eq!(i.observation.image_digest.as_deref(), Some(v2.as_str()));
    }
    assert!(s.update.last_reinstall_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn pinned_images_need_no_registry_call() {
    let w = World::new();
    let v1 = fake_digest("v1");
    w.catalog.push(format!("{REPO}@{v1}"), v1.clone());
    let l = w.lifecycle().await;
    let mut s = spec(1, true);
    s.source = Source::Image(format!("{REPO}@{v1}"));
    l.apply(s).await.unwrap();
    running(&l).await;
    let u = l.check_updates_now("tools").await.unwrap();
    assert_eq!(u.state, Freshness::UpToDate { digest: v1 });
    assert_eq!(w.resolver.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn registry_failures_count_up_and_recover() {
    let w = World::new();
    let l = w.lifecycle().await;
    l.apply(spec(1, false)).await.unwrap();
    running(&l).await;
    w.resolver.fail_with(TAG, ResolveFailure::Unreachable);
    for n in 1..=3 {
        let u = l.check_updates_now("tools").await.unwrap();
        assert_eq!(
            u.state,
            Freshness::CheckFailed {
                category: CheckFailure::RegistryUnreachable,
                consecutive_failures: n
            }
        );
        let failure = u.last_failure.unwrap();
        assert_eq!(failure.category, CheckFailure::RegistryUnreachable);
        assert!(!failure.message.is_empty());
    }
    w.resolver.clear_failure(TAG);
    let u = l.check_updates_now("tools").await.unwrap();
    assert_eq!(
        u.state,
        Freshness::UpToDate {
            digest: fake_digest("v1")
        }
    );
    assert!(u.last_success.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_rollout_that_cannot_become_ready_fails_and_keeps_serving() {
    let w = World::new();
    let l = w.lifecycle().await;
    l.apply(spec(1, true)).await.unwrap();
    running(&l).await;
    let v3 = w.push("v3-exits-at-once");
    w.runtime.crash_on_start(v3.trim_start_matches("sha256:"));
    let u = l.check_updates_now("tools").await.unwrap();
    assert!(u.state.is_reinstalling(), "{u:?}");
    // 10 + 20 + 40 + 60 + 60 + 60 s of verification, then failure.
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = l.status("tools").await.unwrap();
        assert!(
            s.ready >= 1,
            "the old instance kept serving: {}",
            s.to_table()
        );
    }
    let s = l.status("tools").await.unwrap();
    assert_eq!(
        s.update.state,
        Freshness::RolloutFailed {
            target: v3,
            category: RolloutFailure::NotReady
        },
        "{}",
        s.to_table()
    );
    assert_eq!(
        s.rollout_image,
        Some(format!("{REPO}@{}", fake_digest("v1"))),
        "reverted to the digest pinned at the first start"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let s = l.status("tools").await.unwrap();
    assert_eq!((s.ready, s.instances.len()), (1, 1), "{}", s.to_table());
}

#[tokio::test(start_paused = true)]
async fn verification_resumes_after_a_host_restart() {
    let w = World::new();
    let l = w.lifecycle().await;
    l.apply(spec(1, true)).await.unwrap();
    running(&l).await;
    let v2 = w.push("v2");
    let u = l.check_updates_now("tools").await.unwrap();
    assert!(u.state.is_reinstalling());
    // The host dies before the first verification.
    drop(l);
    tokio::task::yield_now().await;
    let l = w.lifecycle().await;
    let s = l.status("tools").await.unwrap();
    assert!(
        s.update.state.is_reinstalling(),
        "the verification schedule is durable"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = l.status("tools").await.unwrap();
    assert_eq!(
        s.update.state,
        Freshness::UpToDate { digest: v2 },
        "{}",
        s.to_table()
    );
}

#[tokio::test(start_paused = true)]
async fn checks_follow_the_schedule_with_floor_and_jitter() {
    let w = World::new();
    let l = w.lifecycle().await;
    l.apply(spec(1, false)).await.unwrap();
    running(&l).await;
    let start = w.clock.now();
    // The first check is due at once; the next one 15 min ± 10 % later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = l.status("tools").await.unwrap();
    let next = s
        .update
        .next_check_at
        .expect("a check ran and scheduled the next");
    let gap = next - s.update.last_check.unwrap();
    assert!(
        gap >= Duration::from_secs(810) && gap <= Duration::from_secs(990),
        "{gap:?}"
    );
    let before = w.resolver.requests();
    tokio::time::sleep(Duration::from_secs(800)).await;
    assert_eq!(
        w.resolver.requests(),
        before,
        "no check before the interval"
    );
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(w.resolver.requests(), before + 1, "one check per interval");
    assert!(w.clock.now() - start >= Duration::from_secs(1000));
}

#[tokio::test(start_paused = true)]
async fn one_resolution_per_reference_per_cycle() {
    let w = World::new();
    let l = w.lifecycle().await;
    for n in 0..20 {
        let mut s = spec(1, false);
        s.name = format!("tools-{n}");
        l.apply(s).await.unwrap();
    }
    for n in 0..20 {
        l.wait_ready(&format!("tools-{n}"), Duration::from_secs(30))
            .await
            .unwrap();
    }
    w.resolver.reset_requests();
    let report = l.run_freshness_cycle().await.unwrap();
    assert_eq!(report.checked, 20);
    assert_eq!(report.resolved, 1);
    assert_eq!(w.resolver.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_tag_is_pinned_to_its_digest_before_the_first_start() {
    let w = World::new();
    let v1 = fake_digest("v1");
    let l = w.lifecycle().await;
    l.apply(spec(2, false)).await.unwrap();
    running(&l).await;
    let pinned = format!("{REPO}@{v1}");
    let s = l.status("tools").await.unwrap();
    assert_eq!(s.rollout_image.as_deref(), Some(pinned.as_str()));
    assert!(
        s.recent_events
            .iter()
            .any(|e| e.message.contains(&format!("pinned {TAG} to {pinned}"))),
        "{:?}",
        s.recent_events
    );
    let instances = w.runtime.instances();
    assert_eq!(instances.len(), 2);
    for i in &instances {
        assert_eq!(i.spec.source, Source::Image(pinned.clone()));
    }

    // The tag moves: the instances keep the pinned digest, which a check
    // compares with what the tag names now.
    let v2 = w.push("v2");
    let u = l.check_updates_now("tools").await.unwrap();
    assert_eq!(
        u.state,
        Freshness::UpdateAvailable {
            running: v1.clone(),
            available: v2.clone()
        }
    );
    // A scale-up runs the pinned digest too (no second resolution).
    w.resolver.reset_requests();
    l.scale("tools", 3).await.unwrap();
    l.wait_ready("tools", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(w.resolver.requests(), 0);
    for i in &w.runtime.instances() {
        assert_eq!(i.spec.source, Source::Image(pinned.clone()));
    }
}

#[tokio::test(start_paused = true)]
async fn an_unresolvable_tag_starts_by_the_tag_and_says_so() {
    let w = World::new();
    w.resolver.fail_with(TAG, ResolveFailure::Unreachable);
    let l = w.lifecycle().await;
    l.apply(spec(1, false)).await.unwrap();
    running(&l).await;
    let s = l.status("tools").await.unwrap();
    assert_eq!(s.rollout_image, None);
    assert!(
        s.recent_events
            .iter()
            .any(|e| e.message.contains(&format!("cannot pin {TAG}"))),
        "{:?}",
        s.recent_events
    );
    for i in &w.runtime.instances() {
        assert_eq!(i.spec.source, Source::Image(TAG.into()));
    }
    // Running instances are never replaced to pin them: passes and checks
    // leave them alone once the registry is back.
    w.resolver.clear_failure(TAG);
    let ids: Vec<_> = w
        .runtime
        .instances()
        .iter()
        .map(|i| i.spec.id.clone())
        .collect();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let s = l.status("tools").await.unwrap();
    assert_eq!(s.rollout_image, None);
    let now: Vec<_> = w
        .runtime
        .instances()
        .iter()
        .map(|i| i.spec.id.clone())
        .collect();
    assert_eq!(ids, now);

    // The next start pins.
    l.stop("tools", mcp_lifecycle::StopMode::Graceful)
        .await
        .unwrap();
    running(&l).await;
    let s = l.status("tools").await.unwrap();
    assert_eq!(
        s.rollout_image,
        Some(format!("{REPO}@{}", fake_digest("v1")))
    );
}

#[tokio::test(start_paused = true)]
async fn without_update_checks_the_tag_is_not_resolved() {
    let w = World::new();
    let l = w.lifecycle().await;
    let mut s = spec(1, false);
    s.update.check = false;
    l.apply(s).await.unwrap();
    running(&l).await;
    assert_eq!(w.resolver.requests(), 0);
    for i in &w.runtime.instances() {
        assert_eq!(i.spec.source, Source::Image(TAG.into()));
    }
}
