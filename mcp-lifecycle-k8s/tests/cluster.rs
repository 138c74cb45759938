//! `Lifecycle` on `KubernetesOrchestrator` against a real cluster (the one
//! `KUBECONFIG` names; CI starts one with `scripts/k8s-cluster.sh`): Ready
//! only after the MCP probe, with the readiness gate True and the Service's
//! endpoints listing the pod only then; a crash loop with its restart count
//! and reason; a missing image; a pod no node can take, with the
//! scheduler's message; scaling; graceful and forced stops and a
//! start again; a stdio server through pod attach; a host restart that
//! adopts without duplicates; delete leaving nothing behind.
//!
//! Each test runs in a namespace of its own, deleted at the end. Tests skip
//! (printing why) when no cluster answers, and fail instead under
//! `MCP_LIFECYCLE_REQUIRE_K8S=1`. Pods run the test images of
//! `scripts/test-images.sh` from the local Docker engine.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    CANARY, READY, TestNamespace, echo, eventually, http, lifecycle, server_spec, test_image,
    unique,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Secret, Service};
use kube::api::ListParams;
use mcp_lifecycle::lifecycle::InstanceStatus;
use mcp_lifecycle::mcp::McpSession;
use mcp_lifecycle::ports::{Connection, EndpointKind, InstanceId};
use mcp_lifecycle::spec::{EnvEntry, SecretRef, Transport};
use mcp_lifecycle::state::ServerPhase;
use mcp_lifecycle::{InMemoryStore, Lifecycle, StopMode, Store, Wait};
use mcp_lifecycle_k8s::{KubernetesConfig, READY_GATE, ServiceExposure};
use rmcp::model::CallToolRequestParams;

fn gate_of(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == READY_GATE)
        .map(|c| c.status.clone())
}

fn ready_endpoint_ips(endpoints: &Endpoints) -> Vec<String> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

async fn first_instance(lc: &Lifecycle, server: &str) -> Option<InstanceStatus> {
    lc.status(server)
        .await
        .ok()
        .and_then(|s| s.instances.into_iter().next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_only_after_the_mcp_probe_with_the_gate_and_endpoints_following() {
    let test = "ready_only_after_the_mcp_probe_with_the_gate_and_endpoints_following";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let manager = unique("mcpl");
    let lc = lifecycle(&ns, &manager, Arc::new(InMemoryStore::new())).await;
    let name = "slow-http";
    let mut spec = server_spec(name, &test_image(), http());
    // The container runs at once but answers MCP only after 4 s.
    spec.env
        .push(EnvEntry::plain("MCP_TEST_STARTUP_DELAY_MS", "4000"));
    lc.apply(spec).await.unwrap();
    lc.start(name, Wait::No).await.unwrap();

    // While the container runs but MCP does not answer: starting, gate not
    // True, and no ready address behind the Service.
    let pod = eventually("a running pod", READY, || async {
        ns.pods_of(name).await.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                })
        })
    })
    .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let status = lc.status(name).await.unwrap();
    if status.ready == 0 {
        assert_ne!(gate_of(&pod).as_deref(), Some("True"));
        let endpoints = ns.api::<Endpoints>().get(name).await.unwrap();
        assert!(ready_endpoint_ips(&endpoints).is_empty(), "{endpoints:?}");
    }

    let status = lc.wait_ready(name, READY).await.unwrap();
    assert_eq!(status.ready, 1);
    assert_eq!(status.instances[0].id.as_str(), pod_name);
    let pod = eventually("the gate True", Duration::from_secs(10), || async {
        let pod = ns.api::<Pod>().get(&pod_name).await.ok()?;
        (gate_of(&pod).as_deref() == Some("True")).then_some(pod)
    })
    .await;
    let ip = pod.status.unwrap().pod_ip.unwrap();
    eventually(
        "the Service's endpoints list the pod",
        Duration::from_secs(30),
        || async {
            let endpoints = ns.api::<Endpoints>().get(name).await.ok()?;
            ready_endpoint_ips(&endpoints).contains(&ip).then_some(())
        },
    )
    .await;
    echo(&lc, name, "through the pod ip").await;

    // One Deployment, one Service, all labelled for kubectl.
    let deployments = ns
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(deployments.items.len(), 1);
    let service = ns.api::<Service>().get(name).await.unwrap();
    assert_eq!(
        service.metadata.labels.unwrap()["mcp-lifecycle.dev/server"],
        name
    );
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_loop_and_a_missing_image_are_reported_with_the_kubelets_reasons() {
    let test = "a_crash_loop_and_a_missing_image_are_reported_with_the_kubelets_reasons";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let manager = unique("mcpl");
    let lc = lifecycle(&ns, &manager, Arc::new(InMemoryStore::new())).await;
    let mut crash = server_spec("crasher", &test_image(), Transport::Stdio);
    crash
        .env
        .push(EnvEntry::plain("MCP_TEST_EXIT_IMMEDIATELY_CODE", "3"));
    lc.apply(crash).await.unwrap();
    lc.start("crasher", Wait::No).await.unwrap();
    // Loopback only: nothing listens there or the tag does not exist.
    let missing = server_spec(
        "missing",
        "127.0.0.1:5000/mcp-lifecycle-no-such-image:v1",
        Transport::Stdio,
    );
    lc.apply(missing).await.unwrap();
    lc.start("missing", Wait::No).await.unwrap();

    let failed = eventually("a crash loop with restarts", READY, || async {
        first_instance(&lc, "crasher").await.filter(|i| {
            i.phase == "failed"
                && i.attempt >= 2
                && i.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("CrashLoopBackOff"))
        })
    })
    .await;
    let reason = failed.reason.unwrap();
    assert!(reason.contains("last exit code 3"), "{reason}");
    assert!(failed.next_retry_at.is_some());
    let status = lc.status("crasher").await.unwrap();
    assert_eq!(status.ready, 0);
    assert_ne!(status.phase, ServerPhase::Running);

    let pull = eventually("an image pull failure", READY, || async {
        first_instance(&lc, "missing").await.filter(|i| {
            i.phase == "failed"
                && i.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("ErrImagePull") || r.contains("ImagePullBackOff"))
        })
    })
    .await;
    assert_eq!(pull.attempt, 0);
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_stop_start_and_delete_leave_nothing_behind() {
    let test = "scale_stop_start_and_delete_leave_nothing_behind";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let manager = unique("mcpl");
    let lc = lifecycle(&ns, &manager, Arc::new(InMemoryStore::new())).await;
    // The cluster's own account of its version.
    let info = ns.client.apiserver_version().await.unwrap();
    let runtime = lc.runtime();
    assert_eq!(runtime.backend, "kubernetes");
    assert_eq!(
        runtime.version,
        Some(format!("Kubernetes {}", info.git_version))
    );
    let name = "scaled";
    let mut spec = server_spec(name, &test_image(), http());
    spec.env.push(EnvEntry::secret(
        "CANARY",
        SecretRef::new("k8s-test", "canary"),
    ));
    lc.apply(spec)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let status = lc.start(name, Wait::UntilReady(READY)).await;
    let status = match status {
        Ok(status) => status,
        Err(e) => panic!("start: {e}; status {:?}", lc.status(name).await),
    };
    assert_eq!(status.ready, 1);
    // The secret's value is in a Secret the pod references, not in the Deployment.
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    assert!(!serde_json::to_string(&deployment).unwrap().contains(CANARY));
    let secret = ns
        .api::<Secret>()
        .get(&format!("{name}-mcp-env"))
        .await
        .unwrap();
    assert!(secret.data.unwrap().contains_key("CANARY"));

    lc.scale(name, 3).await.unwrap();
    let status = lc.wait_ready(name, READY).await.unwrap();
    assert_eq!(status.ready, 3);
    assert_eq!(ns.pods_of(name).await.len(), 3);
    lc.scale(name, 1).await.unwrap();
    eventually("one pod after scaling down", READY, || async {
        (ns.pods_of(name).await.len() == 1).then_some(())
    })
    .await;

    // Graceful: the Deployment goes to 0; stop returns once the pods are gone.
    let stopping = std::time::Instant::now();
    let status = lc.stop(name, StopMode::Graceful).await.unwrap();
    assert_eq!(
        status.phase,
        ServerPhase::Stopped,
        "after {:?}: {status:?}",
        stopping.elapsed()
    );
    assert!(status.instances.is_empty(), "{status:?}");
    assert_eq!(status.desired, 0);
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(0));
    assert!(ns.pods_of(name).await.is_empty());

    // Start again, then force: pods are deleted at once.
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 1);
    let forced = std::time::Instant::now();
    let status = lc.stop(name, StopMode::Force).await.unwrap();
    assert!(status.instances.is_empty(), "{status:?}");
    assert!(ns.pods_of(name).await.is_empty());
    // Grace 0: not the spec's 5 s grace period.
    assert!(
        forced.elapsed() < Duration::from_secs(5),
        "{:?}",
        forced.elapsed()
    );
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 1);

    // Delete returns once the runtime removed everything.
    lc.delete(name).await.unwrap();
    assert!(ns.pods_of(name).await.is_empty());
    assert!(
        ns.api::<Deployment>()
            .get_opt(name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(ns.api::<Service>().get_opt(name).await.unwrap().is_none());
    let secret = ns.api::<Secret>().get_opt(&format!("{name}-mcp-env")).await;
    assert!(secret.unwrap().is_none());
    assert!(lc.status(name).await.is_err());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stdio_server_answers_through_pod_attach_and_a_new_host_adopts_it() {
    let test = "a_stdio_server_answers_through_pod_attach_and_a_new_host_adopts_it";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let manager = unique("mcpl");
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let lc = lifecycle(&ns, &manager, store.clone()).await;
    let name = "stdio";
    lc.apply(server_spec(name, &test_image(), Transport::Stdio))
        .await
        .unwrap();
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    assert_eq!(status.ready, 1);
    let pod = status.instances[0].id.clone();
    echo(&lc, name, "over attach").await;
    echo(&lc, name, "and again").await;

    // A new host on the same store sees the same pod, creates nothing.
    lc.detach().await;
    let lc = lifecycle(&ns, &manager, store).await;
    let status = lc.wait_ready(name, READY).await.unwrap();
    assert_eq!(status.ready, 1);
    assert_eq!(status.instances.len(), 1);
    assert_eq!(status.instances[0].id, pod);
    let pods = ns.pods_of(name).await;
    assert_eq!(pods.len(), 1);
    let deployments = ns
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(deployments.items.len(), 1);
    let labels: BTreeMap<String, String> = pods[0].metadata.labels.clone().unwrap();
    assert_eq!(labels["mcp-lifecycle.dev/managed-by"], manager);
    echo(&lc, name, "after adoption").await;
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_port_service_is_handed_out_and_answers_mcp() {
    let test = "a_node_port_service_is_handed_out_and_answers_mcp";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let config = KubernetesConfig {
        exposure: ServiceExposure::NodePort,
        ..KubernetesConfig::default()
    };
    let backend = common::backend(ns.client.clone(), &ns, config).await;
    let manager = unique("mcpl");
    let lc = Lifecycle::builder()
        .orchestrator(Arc::new(backend))
        .store(Arc::new(InMemoryStore::new()))
        .config(common::config(&manager))
        .build()
        .await
        .unwrap();
    let name = "exposed";
    lc.apply(server_spec(name, &test_image(), http()))
        .await
        .unwrap();
    lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    let service = ns.api::<Service>().get(name).await.unwrap();
    let spec = service.spec.unwrap();
    let cluster_ip = spec.cluster_ip.unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap();
    let endpoints = lc.endpoints(name).await.unwrap();
    let kinds: Vec<EndpointKind> = endpoints.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EndpointKind::ClusterIp,
            EndpointKind::ClusterDns,
            EndpointKind::NodePort
        ],
        "{endpoints:?}"
    );
    assert_eq!(endpoints[0].url, format!("http://{cluster_ip}:8080/mcp"));
    assert_eq!(
        endpoints[1].url,
        format!("http://{name}.{}.svc.cluster.local:8080/mcp", ns.name)
    );
    assert!(
        endpoints[2].url.ends_with(&format!(":{node_port}/mcp")),
        "{endpoints:?}"
    );
    // The NodePort on loopback reaches the gated pod through kube-proxy.
    let url = format!("http://127.0.0.1:{node_port}/mcp");
    let session = eventually(
        "an MCP session through the NodePort",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                McpSession::open(&InstanceId::from_raw("node-port"), Connection::Url(url))
                    .await
                    .ok()
            }
        },
    )
    .await;
    let arguments = serde_json::json!({ "text": "through the node port" });
    let result = session
        .peer()
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(arguments.as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    assert!(format!("{result:?}").contains("through the node port"));
    // A stdio server has no Service and no endpoints.
    lc.apply(server_spec("piped", &test_image(), Transport::Stdio))
        .await
        .unwrap();
    assert!(lc.endpoints("piped").await.unwrap().is_empty());
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unschedulable_pod_reports_the_schedulers_message() {
    let test = "an_unschedulable_pod_reports_the_schedulers_message";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // No node carries this label: the scheduler cannot place the pod.
    let config = KubernetesConfig {
        node_selector: BTreeMap::from([(
            "mcp-lifecycle.dev/test-no-such-node".to_owned(),
            "true".to_owned(),
        )]),
        ..KubernetesConfig::default()
    };
    let backend = common::backend(ns.client.clone(), &ns, config).await;
    let manager = unique("mcpl");
    let lc = Lifecycle::builder()
        .orchestrator(Arc::new(backend))
        .store(Arc::new(InMemoryStore::new()))
        .config(common::config(&manager))
        .build()
        .await
        .unwrap();
    let name = "nowhere";
    lc.apply(server_spec(name, &test_image(), Transport::Stdio))
        .await
        .unwrap();
    lc.start(name, Wait::No).await.unwrap();
    let instance = eventually("an unschedulable instance", READY, || async {
        first_instance(&lc, name).await.filter(|i| {
            i.phase == "failed"
                && i.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("Unschedulable: "))
        })
    })
    .await;
    let reason = instance.reason.unwrap();
    assert!(reason.contains("node"), "the scheduler's words: {reason}");
    assert_eq!(lc.status(name).await.unwrap().ready, 0);
    lc.shutdown().await.unwrap();
}
