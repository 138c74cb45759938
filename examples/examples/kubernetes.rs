//! The quickstart's flow on Kubernetes: a server becomes a Deployment whose
//! pods are Ready only once they answer MCP (the readiness gate), its tools
//! are listed and one is called through `peer` (pod attach, for a stdio
//! server), it is scaled to 2 and back, a pod deleted behind the library's
//! back is replaced by the cluster and probed again, and it is stopped and
//! deleted — printing status at each step.
//!
//! Uses the cluster the kubeconfig names (`KUBECONFIG` or `~/.kube/config`).
//! `MCP_K8S_NAMESPACE` picks the namespace (default `default`) and
//! `MCP_K8S_IMAGE` the server image (default the project's test server,
//! `mcp-lifecycle/test-server:v1`, which `scripts/test-images.sh` builds into
//! the local Docker engine that `scripts/k8s-cluster.sh` runs pods on).
//!
//! ```text
//! bash scripts/test-images.sh && bash scripts/k8s-cluster.sh build && bash scripts/k8s-cluster.sh start
//! export KUBECONFIG=/var/tmp/mcp-lifecycle-k8s/run/kubeconfig
//! cargo run --example kubernetes
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use mcp_lifecycle::{Lifecycle, ServerSpec, Source, StopMode, Wait};
use mcp_lifecycle_k8s::{KubernetesConfig, KubernetesOrchestrator};

const READY: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(mcp_lifecycle::secret::redacting(std::io::stderr))
        .init();
    let namespace = std::env::var("MCP_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
    let image =
        std::env::var("MCP_K8S_IMAGE").unwrap_or_else(|_| "mcp-lifecycle/test-server:v1".into());

    say(&format!(
        "connecting to the cluster (namespace {namespace})"
    ));
    let backend = KubernetesOrchestrator::builder()
        .config(KubernetesConfig {
            namespace: namespace.clone(),
            ..KubernetesConfig::default()
        })
        .build()
        .await
        .context("building the Kubernetes backend")?;
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(backend.clone()))
        .build()
        .await?;

    let name = "echo-k8s";
    let mut spec = ServerSpec::new(name, Source::Image(image));
    spec.resources.memory = Some("64Mi".into());
    spec.resources.cpu = Some("100m".into());
    spec.stop_grace_period = Duration::from_secs(5);
    say("applying this spec and waiting until every pod passes its MCP readiness probe:");
    print!("{}", spec.to_yaml()?);
    lifecycle.apply(spec).await?;
    show(&lifecycle.start(name, Wait::UntilReady(READY)).await?);

    say("listing its tools and calling echo through peer (pod attach)");
    let tools = lifecycle.list_tools(name).await?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    println!("tools: {}", names.join(", "));
    let peer = lifecycle.peer(name).await?;
    let mut arguments = serde_json::Map::new();
    arguments.insert("text".into(), "hello from Kubernetes".into());
    let result = peer.call_tool("echo", Some(arguments)).await?;
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    println!("{} answered: {text}", peer.instance());

    say("scaling to 2 (the Deployment's scale subresource)");
    lifecycle.scale(name, 2).await?;
    let status = lifecycle.wait_ready(name, READY).await?;
    show(&status);

    say("deleting one pod behind the library's back: the Deployment replaces it");
    let victim = status.instances[0].id.clone();
    let pods: kube::Api<Pod> = kube::Api::namespaced(backend.client().clone(), &namespace);
    pods.delete(victim.as_str(), &DeleteParams::default())
        .await
        .context("deleting a pod")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    show(&lifecycle.status(name).await?);
    say("waiting until the replacement passes its readiness probe");
    show(&lifecycle.wait_ready(name, READY).await?);

    say("scaling back to 1, then stopping (scale to 0, pods get their grace period)");
    lifecycle.scale(name, 1).await?;
    show(&lifecycle.wait_ready(name, READY).await?);
    show(&lifecycle.stop(name, StopMode::Graceful).await?);

    say("deleting: the Deployment and everything created with it go");
    lifecycle.delete(name).await?;
    lifecycle.shutdown().await?;
    say("done");
    Ok(())
}

fn say(what: &str) {
    println!("==> {what}");
}

fn show(status: &mcp_lifecycle::ServerStatus) {
    println!("{}", status.to_table());
}
