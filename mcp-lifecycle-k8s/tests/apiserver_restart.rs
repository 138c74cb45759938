//! The pod watch survives an API server restart and an expired resource
//! version: with a server ready, the API server is stopped, etcd compacted
//! to its current revision (so the resource version the watch resumes from
//! is gone: 410 Expired), and the API server started again
//! (`scripts/k8s-cluster.sh restart-apiserver --compact`, named by
//! `MCP_K8S_CLUSTER_SCRIPT`); the watch must report the expiry and list
//! again. Then a pod deleted behind the library's back is seen gone and its
//! replacement is probed to Ready, which only a live watch can show.
//!
//! A test binary of its own: cargo runs test binaries one at a time, so no
//! other cluster test sees the API server go away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    READY, TestNamespace, echo, eventually, lifecycle, server_spec, skip, test_image, unique,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use mcp_lifecycle::spec::Transport;
use mcp_lifecycle::testing::LogCapture;
use mcp_lifecycle::{InMemoryStore, Wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pod_watch_survives_an_api_server_restart() {
    let test = "the_pod_watch_survives_an_api_server_restart";
    let Ok(script) = std::env::var("MCP_K8S_CLUSTER_SCRIPT") else {
        return skip(
            test,
            "MCP_K8S_CLUSTER_SCRIPT is not set (scripts/k8s-cluster.sh env prints it)",
        )
        .unwrap_or(());
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // This binary's only test: the backend's warnings go to a capture.
    let capture = LogCapture::new();
    tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(false)
        .init();
    let manager = unique("mcpl");
    let lc = lifecycle(&ns, &manager, Arc::new(InMemoryStore::new())).await;
    let name = "survivor";
    lc.apply(server_spec(name, &test_image(), Transport::Stdio))
        .await
        .unwrap();
    let status = lc.start(name, Wait::UntilReady(READY)).await.unwrap();
    let before = status.instances[0].id.clone();

    let out = tokio::process::Command::new("bash")
        .args([script.as_str(), "restart-apiserver", "--compact"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "restart-apiserver: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Behind the library's back, after the restart.
    let pods: kube::Api<Pod> = ns.api();
    eventually(
        "the API server answers again",
        Duration::from_secs(30),
        || {
            let pods = pods.clone();
            let before = before.clone();
            async move {
                pods.delete(before.as_str(), &DeleteParams::default())
                    .await
                    .ok()
            }
        },
    )
    .await;
    let status = eventually(
        "the replacement ready and the deleted pod gone",
        READY,
        || async {
            lc.status(name).await.ok().filter(|s| {
                s.ready == 1
                    && s.instances.len() == 1
                    && s.instances[0].id != before
                    && s.instances[0].phase == "ready"
            })
        },
    )
    .await;
    assert_ne!(status.instances[0].id, before);
    let logs = capture.text();
    assert!(
        logs.contains("pod watch failed") && logs.contains("Expired"),
        "the watch resumed from a compacted resource version without a 410: {logs}"
    );
    echo(&lc, name, "after the restart").await;
    lc.shutdown().await.unwrap();
}
