//! mcpd on the Kubernetes backend, as a real process, with its state in the
//! cluster (`store: { kubernetes: true }`): a server applied over the API
//! becomes a Deployment whose pod passes the MCP readiness probe, survives
//! mcpd's exit (detach), and the next mcpd on the same namespace adopts it
//! (same pod, still ready) and reports the same servers from the records in
//! the cluster; deleting removes the Deployment. Needs the cluster of
//! `scripts/k8s-cluster.sh` (`KUBECONFIG`) and the test image of
//! `scripts/test-images.sh`; skips with the reason otherwise, and fails
//! instead under `MCP_LIFECYCLE_REQUIRE_K8S=1`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{MCPD, mcpd_command_with, spawn_mcpd, terminate};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use reqwest::{Method, StatusCode};

const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";

fn skip(test: &str, reason: &str) {
    if std::env::var("MCP_LIFECYCLE_REQUIRE_K8S").is_ok_and(|v| v == "1") {
        panic!("{test}: {reason} (MCP_LIFECYCLE_REQUIRE_K8S=1, so this is a failure)");
    }
    println!("SKIPPED {test}: {reason}");
}

/// The test image the cluster's node has (`scripts/test-images.sh`).
fn image() -> String {
    std::fs::read_to_string(IMAGES_ENV)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MCP_TEST_IMAGE_V1=").map(str::to_owned))
        })
        .unwrap_or_else(|| "mcp-lifecycle/test-server:v1".into())
}

/// A namespace of the test's own, deleted when the test ends (also on failure).
struct TestNamespace {
    client: Client,
    name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let client = self.client.clone();
        let name = self.name.clone();
        // A thread of its own: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                let _ = Api::<Namespace>::all(client).delete(&name, &params).await;
            });
        })
        .join();
    }
}

async fn deployments(client: &Client, namespace: &str) -> Vec<String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels("mcp-lifecycle.dev/managed-by=mcpd"))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcpd_runs_servers_on_kubernetes_and_a_restarted_mcpd_adopts_them() {
    let test = "mcpd_runs_servers_on_kubernetes_and_a_restarted_mcpd_adopts_them";
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => return skip(test, &format!("no Kubernetes client from KUBECONFIG: {e}")),
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("mcpd-{:x}{:x}", std::process::id() % 4096, nanos % 65536);
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
    if let Err(e) = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        return skip(
            test,
            &format!("cannot create a namespace (is a cluster up?): {e}"),
        );
    }
    let namespace = TestNamespace {
        client: client.clone(),
        name,
    };
    // Pods need the namespace's default service account, which comes shortly after it.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while accounts.get_opt("default").await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no default service account"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let settings = "store: { kubernetes: true }\n";
    let args = ["--backend", "kubernetes", "--namespace", &namespace.name];
    let image = image();

    let mut d = spawn_mcpd(mcpd_command_with(dir.path(), settings, &args));
    let yaml = format!(
        "name: kube\nsource: {{ image: \"{image}\" }}\n\
         resources: {{ memory: 64Mi, cpu: 100m }}\nstop_grace_period: 2s\n"
    );
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(common::ADMIN),
            Some(("application/yaml", yaml)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A program is not an image: refused on this backend, naming the field.
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(common::ADMIN),
            Some(("application/yaml", common::spec_yaml("cmd", MCPD))),
        )
        .await;
    common::assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "source.command", "{body}");

    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/kube/start?wait=true&timeout=120s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", d.log());
    assert_eq!(body["status"]["ready"], 1, "{body}");
    let instance = body["status"]["instances"][0]["id"].clone();
    assert_eq!(deployments(&client, &namespace.name).await, ["kube"]);
    // The spec is a record in the cluster, not on mcpd's disk.
    let records: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace.name);
    let stored = records
        .list(&ListParams::default().labels("mcp-lifecycle.dev/store=mcpd"))
        .await
        .unwrap();
    assert!(!stored.items.is_empty(), "no records in the cluster");

    terminate(&mut d).await;
    assert_eq!(
        deployments(&client, &namespace.name).await,
        ["kube"],
        "detach must leave the Deployment running"
    );

    let d = spawn_mcpd(mcpd_command_with(dir.path(), settings, &args));
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/kube/start?wait=true&timeout=120s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", d.log());
    assert_eq!(body["status"]["ready"], 1, "{body}");
    assert_eq!(
        body["status"]["instances"][0]["id"], instance,
        "the pod was replaced, not adopted: {body}"
    );
    let (_, body) = d.admin(Method::GET, "/api/v1/servers", None).await;
    let names: Vec<&str> = body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["kube"], "{body}");

    let (status, _) = d.admin(Method::DELETE, "/api/v1/servers/kube", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(deployments(&client, &namespace.name).await.is_empty());
}
