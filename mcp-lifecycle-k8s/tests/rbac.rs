//! The backend under exactly the Role documented in
//! `docs/kubernetes-rbac.yaml`, as a user with no other permission: the
//! whole flow works (apply, ready over HTTP and over stdio attach, logs,
//! scale, forced stop, delete); without the Role, a call fails with an
//! error that names the verb and resource to grant.
//!
//! Needs the cluster's second user: `MCP_K8S_KUBECONFIG_LIMITED` names its
//! kubeconfig (`scripts/k8s-cluster.sh env` prints it); its user is
//! `MCP_K8S_LIMITED_USER` (default `mcp-limited`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    READY, TestNamespace, echo, eventually, http, limited_client, server_spec, skip, test_image,
    unique,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use mcp_lifecycle::ports::{InstanceId, InstanceSpec, ReplicaOwner, WorkloadSpec, labels};
use mcp_lifecycle::spec::{EnvEntry, Resources, Source, Transport};
use mcp_lifecycle::{InMemoryStore, Lifecycle, Orchestrator, StopMode, Wait};
use mcp_lifecycle_k8s::KubernetesConfig;

async fn grant_documented_role(ns: &TestNamespace) {
    common::grant(ns, &common::documented_role()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_backend_runs_under_exactly_the_documented_role() {
    let test = "the_backend_runs_under_exactly_the_documented_role";
    let client = match limited_client().await {
        Ok(client) => client,
        Err(reason) => return skip(test, &format!("no limited user: {reason}")).unwrap_or(()),
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    grant_documented_role(&ns).await;
    let backend = common::backend(client, &ns, KubernetesConfig::default()).await;
    let manager = unique("mcpl");
    let lc = Lifecycle::builder()
        .orchestrator(Arc::new(backend.clone()))
        .store(Arc::new(InMemoryStore::new()))
        .config(common::config(&manager))
        .build()
        .await
        .unwrap();

    let mut web = server_spec("web", &test_image(), http());
    web.env.push(EnvEntry::plain("RUST_LOG", "info"));
    lc.apply(web).await.unwrap();
    lc.apply(server_spec("pipe", &test_image(), Transport::Stdio))
        .await
        .unwrap();
    for name in ["web", "pipe"] {
        let status = match lc.start(name, Wait::UntilReady(READY)).await {
            Ok(status) => status,
            Err(e) => panic!("{name}: {e}; {:?}", lc.status(name).await),
        };
        assert_eq!(status.ready, 1, "{name}");
        echo(&lc, name, "under the role").await;
    }
    let pod = lc.status("web").await.unwrap().instances[0].id.clone();
    let logs = backend.logs(&pod, 50).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.contains("serving MCP over streamable HTTP")),
        "{logs:?}"
    );

    let endpoints = lc.endpoints("web").await.unwrap();
    assert!(
        !endpoints.is_empty(),
        "the service watch works under the role"
    );

    lc.scale("web", 2).await.unwrap();
    assert_eq!(lc.wait_ready("web", READY).await.unwrap().ready, 2);
    lc.stop("web", StopMode::Force).await.unwrap();
    eventually("no web pods", Duration::from_secs(30), || async {
        ns.pods_of("web").await.is_empty().then_some(())
    })
    .await;
    lc.delete("web").await.unwrap();
    lc.delete("pipe").await.unwrap();
    eventually("nothing left", READY, || async {
        let deployments = ns.api::<Deployment>().get_opt("web").await.unwrap();
        let services = ns.api::<Service>().get_opt("web").await.unwrap();
        (deployments.is_none() && services.is_none() && ns.pods_of("pipe").await.is_empty())
            .then_some(())
    })
    .await;
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_permission_names_the_verb_and_the_resource() {
    let test = "a_missing_permission_names_the_verb_and_the_resource";
    let client = match limited_client().await {
        Ok(client) => client,
        Err(reason) => return skip(test, &format!("no limited user: {reason}")).unwrap_or(()),
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // No Role bound: the user may do nothing in this namespace.
    // Building needs no permission in the namespace.
    let backend = common::backend(client, &ns, KubernetesConfig::default()).await;
    let workload = WorkloadSpec {
        template: InstanceSpec {
            id: InstanceId::from_raw("denied"),
            server: "denied".into(),
            spec_hash: "h".into(),
            source: Source::Image(test_image()),
            transport: Transport::Stdio,
            env: vec![],
            resources: Resources::default(),
            labels: BTreeMap::from([
                (labels::SERVER.to_owned(), "denied".to_owned()),
                (labels::MANAGED_BY.to_owned(), "m".to_owned()),
            ]),
            stop_grace_period: Duration::from_secs(1),
        },
        replicas: 1,
    };
    let error = backend.apply_workload(&workload).await.unwrap_err();
    let message = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        // The first call an apply makes: is a Deployment of that name
        // somebody else's?
        message.contains("verb `get` on `deployments`"),
        "the error names what to grant: {message}"
    );
    assert!(message.contains(&ns.name), "{message}");
    let error = backend.scale("denied", 2).await.unwrap_err();
    let message = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(message.contains("`deployments/scale`"), "{message}");
    // Reads need the watch, which the user may not list either.
    let listed = backend.list(&BTreeMap::new()).await;
    assert!(listed.is_err(), "{listed:?}");
}
