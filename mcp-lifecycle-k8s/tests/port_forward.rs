//! `PodAccess::PortForward` against a real cluster: an HTTP server reaches
//! Ready with its probes going through a loopback port-forward, and a tool
//! call through `Lifecycle::peer` works; two replicas get two forwards,
//! each reaching its own pod; a deleted pod's listener is closed; a role
//! without `pods/portforward` fails `connect` with an error naming what to
//! grant, and the documented rule is enough.
//!
//! Each test runs in a namespace of its own, deleted at the end. Tests skip
//! (printing why) when no cluster answers, and fail instead under
//! `MCP_LIFECYCLE_REQUIRE_K8S=1`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    READY, TestNamespace, echo, eventually, http, limited_client, server_spec, skip, test_image,
    unique,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use mcp_lifecycle::mcp::McpSession;
use mcp_lifecycle::ports::{Connection, InstanceId};
use mcp_lifecycle::spec::EnvEntry;
use mcp_lifecycle::{ErrorKind, InMemoryStore, Lifecycle, Orchestrator, Wait};
use mcp_lifecycle_k8s::{Forbidden, KubernetesConfig, KubernetesOrchestrator, PodAccess};
use rmcp::model::CallToolRequestParams;

fn forwarded() -> KubernetesConfig {
    KubernetesConfig {
        pod_access: PodAccess::PortForward,
        ..KubernetesConfig::default()
    }
}

async fn lifecycle_on(backend: &KubernetesOrchestrator) -> Lifecycle {
    Lifecycle::builder()
        .orchestrator(Arc::new(backend.clone()))
        .store(Arc::new(InMemoryStore::new()))
        .config(common::config(&unique("mcpl")))
        .build()
        .await
        .expect("Lifecycle::build")
}

/// The URL `connect` hands out for `id`, which must be a loopback one.
async fn forward_url(backend: &KubernetesOrchestrator, id: &InstanceId) -> (String, SocketAddr) {
    let connection = backend.connect(id).await.expect("connect");
    let Connection::Url(url) = connection else {
        panic!("an HTTP server's connection is a URL");
    };
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("a loopback URL: {url}"));
    let port = rest.strip_suffix("/mcp").expect("the server's path");
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    (url, address)
}

async fn call_echo(session: &McpSession, text: &str) {
    let arguments = serde_json::json!({ "text": text });
    let result = session
        .peer()
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(arguments.as_object().cloned().unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("echo {text}: {e}"));
    assert!(format!("{result:?}").contains(text), "{result:?}");
}

fn error_text(error: &mcp_lifecycle::Error) -> String {
    format!(
        "{error}: {}",
        std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_server_is_probed_and_called_through_a_port_forward() {
    let test = "an_http_server_is_probed_and_called_through_a_port_forward";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let backend = common::backend(ns.client.clone(), &ns, forwarded()).await;
    let lc = lifecycle_on(&backend).await;
    let name = "forwarded";
    lc.apply(server_spec(name, &test_image(), http()))
        .await
        .unwrap();
    let status = match lc.start(name, Wait::UntilReady(READY)).await {
        Ok(status) => status,
        Err(e) => panic!("start: {e}; status {:?}", lc.status(name).await),
    };
    assert_eq!(status.ready, 1);
    let id = status.instances[0].id.clone();
    // The probes had no other way to the pod than this loopback URL, and
    // the listener is reused.
    let (url, _) = forward_url(&backend, &id).await;
    assert_eq!(forward_url(&backend, &id).await.0, url);
    echo(&lc, name, "through a port-forward").await;
    echo(&lc, name, "and again").await;
    // Each connection to the listener is a forward of its own.
    for round in 0..3 {
        let session = McpSession::open(&id, Connection::Url(url.clone()))
            .await
            .unwrap_or_else(|e| panic!("session {round}: {e}"));
        call_echo(&session, &format!("session {round}")).await;
    }
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_replica_gets_its_own_forward_closed_when_the_pod_is_gone() {
    let test = "each_replica_gets_its_own_forward_closed_when_the_pod_is_gone";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let backend = common::backend(ns.client.clone(), &ns, forwarded()).await;
    let lc = lifecycle_on(&backend).await;
    let name = "pair";
    let mut spec = server_spec(name, &test_image(), http());
    // rmcp logs each request it receives (with its arguments) at debug: a
    // pod's log shows which calls reached it.
    spec.env
        .push(EnvEntry::plain("RUST_LOG", "info,rmcp::service=debug"));
    lc.apply(spec).await.unwrap();
    lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    lc.scale(name, 2).await.unwrap();
    let status = lc.wait_ready(name, READY).await.unwrap();
    assert_eq!(status.ready, 2, "{status:?}");
    let ids: Vec<InstanceId> = status.instances.iter().map(|i| i.id.clone()).collect();
    assert_ne!(ids[0], ids[1]);

    let mut urls = Vec::new();
    let mut sessions = Vec::new();
    for id in &ids {
        let (url, address) = forward_url(&backend, id).await;
        let session = McpSession::open(id, Connection::Url(url.clone()))
            .await
            .unwrap_or_else(|e| panic!("session to {id}: {e}"));
        call_echo(&session, &format!("marker-for-{id}")).await;
        urls.push((url, address));
        sessions.push(session);
    }
    assert_ne!(urls[0].1, urls[1].1, "one listener per pod");
    // Each pod received its own marker and not the other's.
    for (i, id) in ids.iter().enumerate() {
        let own = format!("marker-for-{id}");
        let other = format!("marker-for-{}", ids[1 - i]);
        let logs = eventually(
            "the pod's log shows the call",
            Duration::from_secs(30),
            || async {
                let logs = backend.logs(id, 2000).await.ok()?.join("\n");
                logs.contains(&own).then_some(logs)
            },
        )
        .await;
        assert!(!logs.contains(&other), "{id} got {other}");
    }

    // The first pod goes: its listener closes, the other's keeps serving.
    let (gone, kept) = (&ids[0], &ids[1]);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    ns.api::<Pod>()
        .delete(gone.as_str(), &params)
        .await
        .unwrap();
    let address = urls[0].1;
    // While the listener closes, a connection may still be accepted and
    // reset; only a refused connection shows the listener is gone.
    let refused = eventually(
        "the deleted pod's listener closed",
        Duration::from_secs(60),
        || async move {
            tokio::net::TcpStream::connect(address)
                .await
                .err()
                .filter(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        },
    )
    .await;
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert!(
        eventually(
            "the pod gone from connect",
            Duration::from_secs(30),
            || async { backend.connect(gone).await.err() }
        )
        .await
        .kind()
            == ErrorKind::NotFound
    );
    call_echo(&sessions[1], "the other pod still answers").await;
    assert_eq!(forward_url(&backend, kept).await.1, urls[1].1);
    lc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_without_port_forward_is_told_what_to_grant() {
    let test = "a_role_without_port_forward_is_told_what_to_grant";
    let limited = match limited_client().await {
        Ok(client) => client,
        Err(reason) => return skip(test, &format!("no limited user: {reason}")).unwrap_or(()),
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // The server runs under the test's own rights, reached at the pod IP.
    let owner = common::backend(ns.client.clone(), &ns, KubernetesConfig::default()).await;
    let lc = lifecycle_on(&owner).await;
    let name = "guarded";
    lc.apply(server_spec(name, &test_image(), http()))
        .await
        .unwrap();
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    let id = status.instances[0].id.clone();

    // The documented Role without its port-forward rule.
    let mut role = common::documented_role();
    let (forwarding, rest): (Vec<_>, Vec<_>) =
        role.rules.take().unwrap().into_iter().partition(|rule| {
            rule.resources
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r == "pods/portforward"))
        });
    assert_eq!(
        forwarding.len(),
        1,
        "the documented Role grants port-forward"
    );
    role.rules = Some(rest);
    common::grant(&ns, &role).await;
    let backend = common::backend(limited.clone(), &ns, forwarded()).await;
    let error = backend.connect(&id).await.unwrap_err();
    let message = error_text(&error);
    assert_eq!(error.kind(), ErrorKind::Backend, "{message}");
    let forbidden = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<Forbidden>())
        .unwrap_or_else(|| panic!("a Forbidden source: {message}"));
    assert_eq!(forbidden.resource, "pods/portforward", "{message}");
    assert_eq!(forbidden.namespace, ns.name);

    // The documented rule alone makes it work.
    let mut grant = common::documented_role();
    grant.metadata.name = Some("mcp-lifecycle-port-forward".to_owned());
    grant.rules = Some(forwarding);
    common::grant(&ns, &grant).await;
    let url = eventually(
        "connect under the granted rule",
        Duration::from_secs(30),
        || async {
            match backend.connect(&id).await {
                Ok(Connection::Url(url)) => Some(url),
                _ => None,
            }
        },
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let session = McpSession::open(&id, Connection::Url(url)).await.unwrap();
    call_echo(&session, "under the documented rule").await;
    lc.shutdown().await.unwrap();
}
