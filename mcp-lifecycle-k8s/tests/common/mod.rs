//! Helpers shared by the cluster tests: a namespace per test (deleted at
//! the end), the Lifecycle on the Kubernetes backend, test specs, and
//! skipping (with the reason) when no cluster answers.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Config};
use mcp_lifecycle::ports::StaticSecretSource;
use mcp_lifecycle::spec::{EnvEntry, SecretRef, Source, Transport, UpdatePolicy};
use mcp_lifecycle::state::BackoffPolicy;
use mcp_lifecycle::{Lifecycle, LifecycleConfig, ServerSpec, Store};
use mcp_lifecycle_k8s::{KubernetesConfig, KubernetesOrchestrator};

pub(crate) mod registry;

pub(crate) const READY: Duration = Duration::from_secs(90);
pub(crate) const CANARY: &str = "k8s-canary-9f3a61";
pub(crate) const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";

pub(crate) fn require() -> bool {
    std::env::var("MCP_LIFECYCLE_REQUIRE_K8S").is_ok_and(|v| v == "1")
}

pub(crate) fn skip<T>(test: &str, reason: &str) -> Option<T> {
    assert!(!require(), "{test}: {reason} (MCP_LIFECYCLE_REQUIRE_K8S=1)");
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// The local test image (`mcp-lifecycle/test-server:v1` unless images.env says otherwise).
pub(crate) fn test_image() -> String {
    registry::images_env("MCP_TEST_IMAGE_V1")
        .unwrap_or_else(|| "mcp-lifecycle/test-server:v1".to_owned())
}

/// A name no other test (in this process or another) has: the process id,
/// a per-process counter, and the clock's nanoseconds.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{n:x}{:x}",
        std::process::id() % 4096,
        nanos % 4096
    )
}

/// A namespace of the test's own, deleted when the test ends.
pub(crate) struct TestNamespace {
    pub(crate) client: Client,
    pub(crate) name: String,
}

impl TestNamespace {
    pub(crate) async fn create(test: &str) -> Option<TestNamespace> {
        let client = match Client::try_default().await {
            Ok(client) => client,
            Err(e) => return skip(test, &format!("no Kubernetes client from KUBECONFIG: {e}")),
        };
        let name = unique("mcpt");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }
        }))
        .unwrap();
        if let Err(e) = namespaces.create(&PostParams::default(), &ns).await {
            return skip(
                test,
                &format!("cannot create a namespace (is a cluster up?): {e}"),
            );
        }
        // The namespace's default service account appears shortly after it.
        eventually(
            "the default service account",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let name = name.clone();
                async move {
                    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                        Api::namespaced(client, &name);
                    sa.get("default").await.ok().map(|_| ())
                }
            },
        )
        .await;
        Some(TestNamespace { client, name })
    }

    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub(crate) async fn pods_of(&self, server: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("mcp-lifecycle.dev/server={server}"));
        self.api::<Pod>().list(&lp).await.unwrap().items
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let client = self.client.clone();
        let name = self.name.clone();
        // Runs on a thread of its own: a test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let namespaces: Api<Namespace> = Api::all(client);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                let _ = namespaces.delete(&name, &params).await;
            });
        })
        .join();
    }
}

pub(crate) async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn config(manager: &str) -> LifecycleConfig {
    LifecycleConfig {
        manager_name: manager.to_owned(),
        backoff: BackoffPolicy::stepped(&[(Duration::from_secs(1), 1)], Duration::from_secs(2)),
        startup_probe_interval: Duration::from_millis(200),
        ..LifecycleConfig::default()
    }
}

pub(crate) fn server_spec(name: &str, image: &str, transport: Transport) -> ServerSpec {
    let mut spec = ServerSpec::new(name, Source::Image(image.to_owned()));
    spec.update = UpdatePolicy {
        check: false,
        auto_reinstall: false,
    };
    spec.stop_grace_period = Duration::from_secs(5);
    spec.health.startup_timeout = Duration::from_secs(60);
    spec.resources.memory = Some("64Mi".to_owned());
    spec.resources.cpu = Some("100m".to_owned());
    if let Transport::Http { .. } = transport {
        spec.env = vec![
            EnvEntry::plain("MCP_TEST_TRANSPORT", "http"),
            EnvEntry::plain("MCP_PORT", "8080"),
            EnvEntry::plain("MCP_TEST_BIND", "0.0.0.0"),
        ];
    }
    spec.transport = transport;
    spec
}

pub(crate) fn http() -> Transport {
    Transport::Http {
        port: 8080,
        path: "/mcp".into(),
    }
}

/// The backend for `ns` with `config` (its namespace set to `ns`'s), built
/// with `client`.
pub(crate) async fn backend(
    client: Client,
    ns: &TestNamespace,
    config: KubernetesConfig,
) -> KubernetesOrchestrator {
    KubernetesOrchestrator::builder()
        .client(client)
        .config(KubernetesConfig {
            namespace: ns.name.clone(),
            ..config
        })
        .build()
        .await
        .expect("KubernetesOrchestrator::build")
}

pub(crate) async fn lifecycle(
    ns: &TestNamespace,
    manager: &str,
    store: Arc<dyn Store>,
) -> Lifecycle {
    let backend = backend(ns.client.clone(), ns, KubernetesConfig::default()).await;
    let secrets = StaticSecretSource::new().with(SecretRef::new("k8s-test", "canary"), CANARY);
    Lifecycle::builder()
        .orchestrator(Arc::new(backend))
        .secrets(Arc::new(secrets))
        .store(store)
        .config(config(manager))
        .build()
        .await
        .expect("Lifecycle::build")
}

pub(crate) async fn echo(lifecycle: &Lifecycle, server: &str, text: &str) {
    let peer = lifecycle.peer(server).await.expect("peer");
    let arguments = serde_json::json!({ "text": text });
    let result = peer
        .call_tool("echo", arguments.as_object().cloned())
        .await
        .expect("echo");
    let seen = format!("{result:?}");
    assert!(seen.contains(text), "echo answered {seen}");
}

/// The documented Role (`docs/kubernetes-rbac.yaml`).
pub(crate) fn documented_role() -> Role {
    serde_norway::from_str(include_str!("../../../docs/kubernetes-rbac.yaml"))
        .expect("docs/kubernetes-rbac.yaml is a Role")
}

/// A client for the cluster's limited user, or why there is none:
/// `MCP_K8S_KUBECONFIG_LIMITED` names its kubeconfig
/// (`scripts/k8s-cluster.sh env` prints it).
pub(crate) async fn limited_client() -> Result<Client, String> {
    let path = std::env::var("MCP_K8S_KUBECONFIG_LIMITED")
        .map_err(|_| "MCP_K8S_KUBECONFIG_LIMITED is not set".to_owned())?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|e| e.to_string())?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// The limited user's name (`MCP_K8S_LIMITED_USER`, default `mcp-limited`).
pub(crate) fn limited_user() -> String {
    std::env::var("MCP_K8S_LIMITED_USER").unwrap_or_else(|_| "mcp-limited".to_owned())
}

/// Creates `role` in `ns` and binds it to the limited user.
pub(crate) async fn grant(ns: &TestNamespace, role: &Role) {
    let name = role.metadata.name.clone().expect("the Role has a name");
    ns.api::<Role>()
        .create(&PostParams::default(), role)
        .await
        .expect("create the Role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": limited_user(),
        }]
    }))
    .unwrap();
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind the Role");
}
