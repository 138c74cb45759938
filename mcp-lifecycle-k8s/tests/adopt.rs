//! Adopting Deployments the library did not create, on a real cluster: a
//! Deployment made the way a team would (cortex-resource-manager's label
//! `app.kubernetes.io/component=mcp-server`) is suggested by `adoptable`,
//! reaches Ready only after the MCP probe, is scaled, stopped and started
//! through the scale subresource with its template untouched, and is left
//! running when the server is deleted. A Deployment without the label is
//! refused, loudly.
//!
//! Skips (printing why) when no cluster answers; fails instead under
//! `MCP_LIFECYCLE_REQUIRE_K8S=1`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{READY, TestNamespace, echo, eventually, test_image, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use mcp_lifecycle::spec::{Source, Transport};
use mcp_lifecycle::state::ServerPhase;
use mcp_lifecycle::{ErrorKind, Lifecycle, LifecycleEventKind, StopMode, Wait};
use mcp_lifecycle_k8s::KubernetesConfig;

/// A Deployment of the test server over HTTP, as a team would write it.
fn team_deployment(name: &str, labelled: bool) -> Deployment {
    let mut labels = serde_json::json!({ "app": name });
    if labelled {
        labels["app.kubernetes.io/component"] = "mcp-server".into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "server",
                        "image": test_image(),
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{ "containerPort": 8080 }],
                        "env": [
                            { "name": "MCP_TEST_TRANSPORT", "value": "http" },
                            { "name": "MCP_PORT", "value": "8080" },
                            { "name": "MCP_TEST_BIND", "value": "0.0.0.0" },
                        ],
                    }],
                },
            },
        },
    }))
    .unwrap()
}

async fn pods_of(ns: &TestNamespace, app: &str) -> Vec<Pod> {
    let params = ListParams::default().labels(&format!("app={app}"));
    ns.api::<Pod>()
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The first runtime error the server's status reports (waited for).
async fn runtime_error(lc: &Lifecycle, server: &str) -> String {
    eventually("a runtime error in the server's events", READY, || async {
        let status = lc.status(server).await.ok()?;
        status
            .recent_events
            .iter()
            .find(|e| e.kind == LifecycleEventKind::RuntimeError)
            .map(|e| e.message.clone())
    })
    .await
}

async fn replicas_of(ns: &TestNamespace, name: &str) -> i32 {
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    deployment.spec.unwrap().replicas.unwrap_or(1)
}

/// Everything of the Deployment a team owns: its labels, annotations and
/// pod template.
async fn owned_by_the_team(ns: &TestNamespace, name: &str) -> serde_json::Value {
    let d = ns.api::<Deployment>().get(name).await.unwrap();
    serde_json::json!({
        "labels": d.metadata.labels,
        "annotations": d.metadata.annotations
            .map(|mut a| { a.remove("deployment.kubernetes.io/revision"); a }),
        "template": d.spec.unwrap().template,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_deployment_is_adopted_scaled_and_left_as_it_was() {
    let test = "an_existing_deployment_is_adopted_scaled_and_left_as_it_was";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let deployments = ns.api::<Deployment>();
    let name = "weather-mcp";
    deployments
        .create(&PostParams::default(), &team_deployment(name, true))
        .await
        .unwrap();
    deployments
        .create(&PostParams::default(), &team_deployment("not-mcp", false))
        .await
        .unwrap();
    eventually("the team's pod", READY, || async {
        (pods_of(&ns, name).await.len() == 1).then_some(())
    })
    .await;
    let before = owned_by_the_team(&ns, name).await;

    let backend = common::backend(ns.client.clone(), &ns, KubernetesConfig::default()).await;
    let suggested = backend.adoptable().await.unwrap();
    assert_eq!(suggested.len(), 1, "only the labelled one: {suggested:?}");
    let mut spec = suggested[0].clone();
    assert_eq!(spec.name, name);
    assert_eq!(spec.source, Source::Existing(name.to_owned()));
    assert_eq!(
        spec.transport,
        Transport::Http {
            port: 8080,
            path: "/mcp".into()
        }
    );
    assert_eq!(spec.replicas, 1);

    let lc = Lifecycle::builder()
        .orchestrator(Arc::new(backend))
        .config(common::config(&unique("adopt")))
        .build()
        .await
        .unwrap();
    spec.health.startup_timeout = Duration::from_secs(60);
    lc.apply(spec).await.unwrap();
    let status = lc.wait_ready(name, READY).await.unwrap();
    assert_eq!(status.ready, 1);
    let team_pod = pods_of(&ns, name).await[0].metadata.name.clone().unwrap();
    assert_eq!(
        status.instances[0].id.as_str(),
        team_pod,
        "the team's own pod is the replica"
    );
    echo(&lc, name, "through an adopted pod").await;

    // Scaled through the scale subresource.
    lc.scale(name, 2).await.unwrap();
    let status = lc.wait_ready(name, READY).await.unwrap();
    assert_eq!(status.ready, 2);
    assert_eq!(replicas_of(&ns, name).await, 2);

    // Stopped: the Deployment at 0, its pods gone.
    lc.stop(name, StopMode::Graceful).await.unwrap();
    assert_eq!(replicas_of(&ns, name).await, 0);
    eventually("no pods", READY, || async {
        pods_of(&ns, name).await.is_empty().then_some(())
    })
    .await;
    eventually("Stopped", READY, || async {
        let status = lc.status(name).await.ok()?;
        (status.phase == ServerPhase::Stopped && status.instances.is_empty()).then_some(())
    })
    .await;

    // Started again: the two replicas it had, Ready after the probe.
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 2);
    assert_eq!(replicas_of(&ns, name).await, 2);

    // The team's template, labels and annotations never changed.
    assert_eq!(owned_by_the_team(&ns, name).await, before);

    // Deleting the server forgets the Deployment and leaves it running.
    lc.delete(name).await.unwrap();
    assert_eq!(
        lc.status(name).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(replicas_of(&ns, name).await, 2);
    assert_eq!(pods_of(&ns, name).await.len(), 2);
    assert_eq!(owned_by_the_team(&ns, name).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_without_the_adoption_label_is_refused_loudly() {
    let test = "a_deployment_without_the_adoption_label_is_refused_loudly";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let name = "not-mcp";
    ns.api::<Deployment>()
        .create(&PostParams::default(), &team_deployment(name, false))
        .await
        .unwrap();
    let backend = common::backend(ns.client.clone(), &ns, KubernetesConfig::default()).await;
    assert!(backend.adoptable().await.unwrap().is_empty());
    let lc = Lifecycle::builder()
        .orchestrator(Arc::new(backend))
        .config(common::config(&unique("adopt")))
        .build()
        .await
        .unwrap();
    let mut spec = mcp_lifecycle::ServerSpec::new(name, Source::Existing(name.to_owned()));
    spec.transport = common::http();
    lc.apply(spec).await.unwrap();
    let refusal = runtime_error(&lc, name).await;
    assert!(
        refusal.contains("app.kubernetes.io/component=mcp-server"),
        "{refusal}"
    );
    // Nothing was scaled or changed.
    assert_eq!(replicas_of(&ns, name).await, 1);
    let before = owned_by_the_team(&ns, name).await;

    // A server of the library's own that takes the team's Deployment's name
    // is refused rather than applied over it; deleting it leaves the team's
    // Deployment alone.
    lc.delete(name).await.unwrap();
    let clash = common::server_spec(name, &test_image(), common::http());
    lc.apply(clash).await.unwrap();
    let refusal = runtime_error(&lc, name).await;
    assert!(refusal.contains("did not create"), "{refusal}");
    lc.delete(name).await.unwrap();
    assert_eq!(owned_by_the_team(&ns, name).await, before);
    assert_eq!(replicas_of(&ns, name).await, 1);

    let missing = mcp_lifecycle::ServerSpec::new("ghost", Source::Existing("ghost".into()));
    lc.apply(missing).await.unwrap();
    let missing = runtime_error(&lc, "ghost").await;
    assert!(missing.contains("deployment ghost"), "{missing}");
}
