//! Image freshness on Kubernetes: a new digest pushed under the tag a
//! server runs is found by the `RegistryResolver`, rolled out by patching
//! the Deployment's template to `repo@sha256:…` (the cluster's rolling
//! update, gated by MCP readiness, keeps serving), and verified: the server
//! ends UpToDate with every ready pod on the new digest.
//!
//! Pushes a tag of its own (`k8s-fresh-<random>`) of the shared test images
//! to the local registry of `scripts/test-images.sh` (127.0.0.1:5000) and
//! never moves a shared tag. The `ProbePodResolver` resolves such a tag by
//! pulling it in a probe pod, and deletes the pod whatever happens.

mod common;

use common::registry::TestTag;

use std::sync::Arc;
use std::time::Duration;

use common::{READY, TestNamespace, eventually, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use mcp_lifecycle::ports::{ImageResolver, ResolveFailure};
use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::state::{Freshness, FreshnessPolicy};
use mcp_lifecycle::{
    InMemoryStore, Lifecycle, LifecycleConfig, RegistryResolver, ServerSpec, Source, Wait,
};
use mcp_lifecycle_k8s::{KubernetesConfig, ProbePodResolver, ROLE_LABEL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_digest_is_rolled_out_through_the_deployment_and_verified() {
    let test = "a_new_digest_is_rolled_out_through_the_deployment_and_verified";
    let Some(pushed) = TestTag::push_v1(test, "k8s-fresh") else {
        return;
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let (repo, tag, v1) = (&pushed.repo, pushed.tag.clone(), pushed.v1.clone());

    let backend = common::backend(ns.client.clone(), &ns, KubernetesConfig::default()).await;
    let manager = unique("mcpl");
    let config = LifecycleConfig {
        freshness: FreshnessPolicy {
            verify_backoff: [1, 2, 2, 2, 3, 5, 5, 10, 10, 10]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            rollout_deadline: Duration::from_secs(90),
            ..FreshnessPolicy::default()
        },
        freshness_tick: Duration::from_millis(500),
        resolve_timeout: Duration::from_secs(5),
        ..common::config(&manager)
    };
    let resolver = RegistryResolver::builder()
        .insecure_registry("127.0.0.1:5000")
        .timeout(Duration::from_secs(5))
        .build();
    let lc = Lifecycle::builder()
        .orchestrator(Arc::new(backend))
        .store(Arc::new(InMemoryStore::new()))
        .resolver(Arc::new(resolver))
        .config(config)
        .build()
        .await
        .unwrap();

    let name = "fresh";
    let mut spec = ServerSpec::new(name, Source::Image(tag.clone()));
    spec.replicas = 2;
    spec.update = UpdatePolicy {
        check: true,
        auto_reinstall: true,
    };
    spec.stop_grace_period = Duration::from_secs(5);
    spec.resources.memory = Some("64Mi".into());
    spec.resources.cpu = Some("100m".into());
    lc.apply(spec).await.unwrap();
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 2);
    assert_eq!(
        status.running_digests,
        vec![v1.clone()],
        "{}",
        status.to_table()
    );
    let u = lc.check_updates_now(name).await.unwrap();
    assert_eq!(u.state, Freshness::UpToDate { digest: v1.clone() });

    let v2 = pushed.push_v2();
    assert_ne!(v1, v2);
    let u = lc.check_updates_now(name).await.unwrap();
    assert!(
        matches!(&u.state, Freshness::Reinstalling { target, previous, .. }
            if *target == v2 && *previous == v1),
        "{u:?}"
    );
    let pinned = format!("{repo}@{v2}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let end = loop {
        let s = lc.status(name).await.unwrap();
        if !s.update.state.is_reinstalling() {
            break s;
        }
        // maxUnavailable 0 and the readiness gate: it keeps serving.
        assert!(
            s.ready >= 1,
            "kept serving while rolling:\n{}",
            s.to_table()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not end:\n{}",
            s.to_table()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        end.update.state,
        Freshness::UpToDate { digest: v2.clone() },
        "{}",
        end.to_table()
    );
    assert_eq!(end.rollout_image.as_deref(), Some(pinned.as_str()));
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some(pinned.as_str()));
    let s = eventually("two ready pods, all on the new digest", READY, || async {
        lc.status(name)
            .await
            .ok()
            .filter(|s| s.ready == 2 && s.instances.len() == 2)
    })
    .await;
    assert_eq!(s.running_digests, vec![v2.clone()], "{}", s.to_table());
    // Delete may return Unavailable while the cluster is still terminating
    // pods (slow right after the API server restart test); the controller
    // finishes it.
    if let Err(e) = lc.delete(name).await {
        assert_eq!(e.kind(), mcp_lifecycle::ErrorKind::Unavailable, "{e}");
        eventually("the server deleted", READY, || async {
            lc.status(name).await.is_err().then_some(())
        })
        .await;
    }
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_probe_pod_resolver_asks_the_cluster_and_always_deletes_its_pod() {
    let test = "the_probe_pod_resolver_asks_the_cluster_and_always_deletes_its_pod";
    let Some(pushed) = TestTag::push_v1(test, "k8s-resolve") else {
        return;
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // A tag of this test's own: its digest is what the registry said at push.
    let (repo, tag, v1) = (&pushed.repo, pushed.tag.clone(), pushed.v1.clone());
    let resolver = ProbePodResolver::new(
        ns.client.clone(),
        KubernetesConfig {
            namespace: ns.name.clone(),
            ..KubernetesConfig::default()
        },
        Duration::from_secs(60),
    );
    let probes = || async {
        let lp = kube::api::ListParams::default().labels(&format!("{ROLE_LABEL}=resolver"));
        ns.api::<Pod>().list(&lp).await.unwrap().items.len()
    };

    // The test image has no shell (FROM scratch): nothing in it runs.
    assert_eq!(resolver.resolve(&tag).await.unwrap(), v1);
    assert_eq!(probes().await, 0, "the probe pod is deleted");

    let missing = format!("{repo}:{}", unique("no-such-tag"));
    let error = resolver.resolve(&missing).await.unwrap_err();
    assert_eq!(
        resolver.classify(&error),
        ResolveFailure::NotFound,
        "{error}"
    );
    assert_eq!(probes().await, 0, "deleted after a failed pull too");

    // A pinned reference needs no pod.
    let pinned = format!("{repo}@{v1}");
    assert_eq!(resolver.resolve(&pinned).await.unwrap(), v1);
}
