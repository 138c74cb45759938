//! The replica-owner conformance suite
//! (`mcp_lifecycle::testing::replica_owner_conformance`) against
//! `KubernetesOrchestrator` on a real cluster: apply, scale, forced stop,
//! a crash restarted in place (the container killed through the node's
//! Docker engine, behind the cluster's back), readiness verdicts, missing
//! objects and delete.
//!
//! Skips (printing why) when no cluster answers; fails instead under
//! `MCP_LIFECYCLE_REQUIRE_K8S=1`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestNamespace, test_image};
use mcp_lifecycle::ports::{InstanceId, labels};
use mcp_lifecycle::spec::Source;
use mcp_lifecycle::testing::orchestrator_conformance::conformance_spec;
use mcp_lifecycle::testing::replica_owner_conformance::{ReplicaFixture, run_all};
use mcp_lifecycle_k8s::KubernetesConfig;

/// Kills the pod's MCP container through the node's Docker engine (the
/// kubelet runs on the local one), as a crash would.
async fn kill_container(pod: InstanceId) {
    let filter = format!("label=io.kubernetes.pod.name={pod}");
    let listed = tokio::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &filter])
        .args(["--filter", "label=io.kubernetes.container.name=mcp"])
        .output()
        .await
        .expect("docker ps");
    let ids = String::from_utf8_lossy(&listed.stdout).trim().to_owned();
    assert!(
        !ids.is_empty(),
        "no Docker container runs pod {pod}'s MCP container"
    );
    for id in ids.lines() {
        let killed = tokio::process::Command::new("docker")
            .args(["kill", id])
            .output()
            .await
            .expect("docker kill");
        assert!(killed.status.success(), "docker kill {id}: {killed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_passes_the_replica_owner_conformance_suite() {
    let test = "kubernetes_passes_the_replica_owner_conformance_suite";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let backend = common::backend(ns.client.clone(), &ns, KubernetesConfig::default()).await;
    let image = test_image();
    let fixture = ReplicaFixture::new(
        Arc::new(move |server: &str| {
            let mut spec = conformance_spec(server, 0, Source::Image(image.clone()));
            spec.labels.remove(labels::INSTANCE);
            spec.resources.memory = Some("64Mi".into());
            spec.resources.cpu = Some("50m".into());
            spec.stop_grace_period = Duration::from_secs(2);
            spec
        }),
        Arc::new(|pod: InstanceId| Box::pin(kill_container(pod))),
    );
    run_all(&backend, &fixture).await;
}
