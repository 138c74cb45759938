//! [`KubernetesOrchestrator`]: the [`Orchestrator`] port and its
//! [`ReplicaOwner`] capability on the Kubernetes API. Writes are server-side
//! applies (Deployment, Service, env Secret), the scale subresource, pod
//! deletions and pod-status patches (the readiness gate); every read is
//! served from the pod watch's cache. HTTP and SSE pods are reached at
//! their IP or through the port-forwards of `port_forward.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use mcp_lifecycle::ports::{
    Connection, Endpoint, EventStream, InstanceId, InstanceObservation, InstanceSpec, Orchestrator,
    ReplicaOwner, RuntimeEvent, StdioStream, StopMode, WorkloadSpec, labels,
};
use mcp_lifecycle::spec::{ServerSpec, Source};
use mcp_lifecycle::{Error, Result};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::adopt::{self, Adopted, Adoptions};
use crate::config::{KubernetesConfig, PodAccess};
use crate::endpoints;
use crate::errors::{self, Call};
use crate::observe::observe;
use crate::port_forward::PortForwards;
use crate::watch;
use crate::workload::{self, CONTAINER, ENDPOINT_ANNOTATION, READY_GATE};

/// The RBAC verbs a server-side apply needs (`create` for a new object).
const APPLY: &str = "create` and `patch";

/// How long a read waits for the pod watch's first listing.
const CACHE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kubernetes backend: a Deployment per server (and a Service for HTTP
/// and SSE servers), pods observed by watch, MCP readiness handed to the
/// cluster through the `mcp-lifecycle.dev/mcp-ready` readiness gate.
///
/// Built with [`KubernetesOrchestrator::builder`]; cheap to clone. Dropping
/// the last clone ends the watch.
#[derive(Clone)]
pub struct KubernetesOrchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The cluster's version, as the API server said it at connect.
    version: Option<String>,
    client: Client,
    config: KubernetesConfig,
    pods: Store<Pod>,
    /// Pods of adopted Deployments (when adoption is on).
    adopted_pods: Option<Store<Pod>>,
    adoptions: Arc<Adoptions>,
    services: Store<Service>,
    events: broadcast::Sender<RuntimeEvent>,
    /// The loopback listeners, with [`PodAccess::PortForward`].
    forwards: Option<PortForwards>,
    _watch: DropGuard,
}

impl std::fmt::Debug for KubernetesOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesOrchestrator")
            .field("namespace", &self.inner.config.namespace)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KubernetesOrchestrator`].
#[derive(Default)]
pub struct KubernetesOrchestratorBuilder {
    config: KubernetesConfig,
    client: Option<Client>,
    context: Option<String>,
}

impl std::fmt::Debug for KubernetesOrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesOrchestratorBuilder")
            .field("config", &self.config)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl KubernetesOrchestratorBuilder {
    /// The backend's settings (namespace, scheduling, security, exposure).
    pub fn config(mut self, config: KubernetesConfig) -> Self {
        self.config = config;
        self
    }

    /// A client the host built itself. Without one, the client comes from
    /// the environment: `KUBECONFIG` or `~/.kube/config`, or the pod's
    /// service account inside a cluster.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The kubeconfig context to use instead of the current one.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Connects, checks the namespace, and starts the pod watch. A missing
    /// or broken kubeconfig, an unknown context or namespace, or an
    /// unreachable API server fails here with an error that says which.
    pub async fn build(self) -> Result<KubernetesOrchestrator> {
        let client = match self.client {
            Some(client) => client,
            None => {
                let options = kube::config::KubeConfigOptions {
                    context: self.context.clone(),
                    ..Default::default()
                };
                let config = match &self.context {
                    Some(_) => kube::Config::from_kubeconfig(&options)
                        .await
                        .map_err(|e| Error::invalid("kubeconfig", e.to_string()))?,
                    None => kube::Config::infer()
                        .await
                        .map_err(|e| Error::invalid("kubeconfig", e.to_string()))?,
                };
                Client::try_from(config).map_err(|e| Error::invalid("kubeconfig", e.to_string()))?
            }
        };
        let namespace = self.config.namespace.clone();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        match namespaces.get(&namespace).await {
            Ok(_) => {}
            Err(e) if errors::is_not_found(&e) => {
                return Err(Error::invalid(
                    "namespace",
                    format!("namespace `{namespace}` does not exist"),
                ));
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                // A role without `get namespaces` is fine: the namespace shows
                // itself at the first call.
                tracing::debug!(%namespace, "may not read the namespace; not checked");
            }
            Err(e) => {
                return Err(errors::map(
                    Call {
                        verb: "get",
                        resource: "namespaces",
                        name: &namespace,
                        namespace: &namespace,
                    },
                    e,
                ));
            }
        }
        // `/version` is open to every authenticated client; a cluster that
        // will not say is reported without one.
        let version = match client.apiserver_version().await {
            Ok(info) => Some(format!("Kubernetes {}", info.git_version)),
            Err(error) => {
                tracing::debug!(%error, "the API server did not say its version");
                None
            }
        };
        tracing::info!(version = version.as_deref().unwrap_or("unknown"), %namespace,
            "connected to the cluster");
        let (events, _) = broadcast::channel(4096);
        let cancel = CancellationToken::new();
        let pods = watch::start(
            Api::namespaced(client.clone(), &namespace),
            labels::MANAGED_BY,
            Arc::new(observe),
            events.clone(),
            cancel.clone(),
        );
        let adoptions = Arc::new(Adoptions::default());
        let adopted_pods = self.config.adopt_selector.as_ref().map(|selector| {
            adopt::start_watch(
                Api::namespaced(client.clone(), &namespace),
                selector,
                adoptions.clone(),
                events.clone(),
                cancel.clone(),
            )
        });
        let services =
            watch::start_services(Api::namespaced(client.clone(), &namespace), cancel.clone());
        let forwards = (self.config.pod_access == PodAccess::PortForward).then(|| {
            PortForwards::start(
                Api::namespaced(client.clone(), &namespace),
                namespace.clone(),
                std::iter::once(pods.clone())
                    .chain(adopted_pods.clone())
                    .collect(),
                events.subscribe(),
                cancel.clone(),
            )
        });
        Ok(KubernetesOrchestrator {
            inner: Arc::new(Inner {
                version,
                client,
                config: self.config,
                pods,
                adopted_pods,
                adoptions,
                services,
                events,
                forwards,
                _watch: cancel.drop_guard(),
            }),
        })
    }
}

impl KubernetesOrchestrator {
    /// A builder with the default configuration.
    pub fn builder() -> KubernetesOrchestratorBuilder {
        KubernetesOrchestratorBuilder::default()
    }

    /// The namespace servers run in.
    pub fn namespace(&self) -> &str {
        &self.inner.config.namespace
    }

    /// The client this backend uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.inner.client.clone(), &self.inner.config.namespace)
    }

    fn call<'a>(&'a self, verb: &'a str, resource: &'a str, name: &'a str) -> Call<'a> {
        Call {
            verb,
            resource,
            name,
            namespace: &self.inner.config.namespace,
        }
    }

    async fn cache_ready(&self) -> Result<()> {
        match tokio::time::timeout(CACHE_READY_TIMEOUT, self.inner.pods.wait_until_ready()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::unavailable(
                "the Kubernetes API server",
                "the pod watch has not listed pods yet",
            )),
        }
    }

    fn cached(&self, id: &InstanceId) -> Option<Arc<Pod>> {
        self.inner
            .pods
            .get(&ObjectRef::new(id.as_str()).within(&self.inner.config.namespace))
    }

    /// A pod from either watch's cache, with its observation.
    fn cached_pod(&self, id: &InstanceId) -> Option<(Arc<Pod>, InstanceObservation)> {
        if let Some(pod) = self.cached(id) {
            let obs = observe(&pod)?;
            return Some((pod, obs));
        }
        let pod = self
            .inner
            .adopted_pods
            .as_ref()?
            .get(&ObjectRef::new(id.as_str()).within(&self.inner.config.namespace))?;
        let obs = self.inner.adoptions.observe(&pod)?;
        Some((pod, obs))
    }

    /// The container MCP is spoken to in `pod`: ours, or an adopted pod's first.
    fn container_of(pod: &Pod) -> String {
        let containers = pod.spec.as_ref().map(|s| s.containers.as_slice());
        match containers {
            Some(all) if !all.iter().any(|c| c.name == CONTAINER) => all
                .first()
                .map_or_else(|| CONTAINER.to_owned(), |c| c.name.clone()),
            _ => CONTAINER.to_owned(),
        }
    }

    /// The Deployments the adoption selector matches that the library does
    /// not manage, each as the spec a host would apply to adopt it (see
    /// [`Source::Existing`]): named after the Deployment, at its replica
    /// count, speaking MCP as its [`adopt::TRANSPORT_ANNOTATION`] says
    /// (else streamable HTTP at `/mcp` on its first container port, else
    /// stdio). Empty when adoption is off. One list call.
    pub async fn adoptable(&self) -> Result<Vec<ServerSpec>> {
        let Some(selector) = &self.inner.config.adopt_selector else {
            return Ok(Vec::new());
        };
        let params = ListParams::default().labels(&adopt::selector_string(selector));
        let listed = self
            .api::<Deployment>()
            .list(&params)
            .await
            .map_err(|e| errors::map(self.call("list", "deployments", ""), e))?;
        Ok(listed
            .items
            .iter()
            .filter(|d| adopt::check_adoptable(d, &self.inner.config).is_ok())
            .filter_map(adopt::suggested_spec)
            .collect())
    }

    /// Adopts `deployment` as `workload`'s server: checks it may be
    /// adopted, scales it to the workload's replicas, and reports the pods
    /// the watch saw before. Its template is left as it is.
    async fn adopt(&self, workload: &WorkloadSpec, deployment: &str) -> Result<()> {
        let t = &workload.template;
        let found = self
            .api::<Deployment>()
            .get_opt(deployment)
            .await
            .map_err(|e| errors::map(self.call("get", "deployments", deployment), e))?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "deployment {deployment} (source.existing of server {})",
                    t.server
                ))
            })?;
        adopt::check_adoptable(&found, &self.inner.config)?;
        let manager = t
            .labels
            .get(labels::MANAGED_BY)
            .cloned()
            .unwrap_or_else(|| self.inner.config.field_manager.clone());
        self.inner.adoptions.insert(
            deployment,
            Adopted {
                server: t.server.clone(),
                manager,
                endpoint: workload::endpoint(&t.transport),
            },
        )?;
        let current = found.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if i64::from(current) != i64::from(workload.replicas) {
            self.scale(&t.server, workload.replicas).await?;
        }
        if let Some(pods) = &self.inner.adopted_pods {
            for pod in pods.state() {
                if let Some(obs) = self.inner.adoptions.observe(&pod)
                    && obs.server == t.server
                {
                    watch::send(&self.inner.events, obs, false);
                }
            }
        }
        tracing::debug!(server = %t.server, deployment, replicas = workload.replicas, "deployment adopted");
        Ok(())
    }

    /// Whether a Deployment named `name` exists that the library did not
    /// create (it lacks the managed-by label): never applied over, scaled
    /// as a managed one, or deleted.
    async fn is_foreign(&self, name: &str) -> Result<bool> {
        let found = self
            .api::<Deployment>()
            .get_metadata_opt(name)
            .await
            .map_err(|e| errors::map(self.call("get", "deployments", name), e))?;
        Ok(found.is_some_and(|d| {
            !d.metadata
                .labels
                .is_some_and(|l| l.contains_key(labels::MANAGED_BY))
        }))
    }

    fn cached_service(&self, server: &str) -> Option<Arc<Service>> {
        self.inner.services.get(
            &ObjectRef::new(&workload::service_name(server)).within(&self.inner.config.namespace),
        )
    }

    fn apply_params(&self) -> PatchParams {
        PatchParams::apply(&self.inner.config.field_manager).force()
    }

    async fn delete_pod(&self, id: &InstanceId, grace: u32) -> Result<()> {
        let params = DeleteParams {
            grace_period_seconds: Some(grace),
            ..DeleteParams::default()
        };
        self.api::<Pod>()
            .delete(id.as_str(), &params)
            .await
            .map(|_| ())
            .map_err(|e| errors::map(self.call("delete", "pods", id.as_str()), e))
    }
}

#[async_trait]
impl Orchestrator for KubernetesOrchestrator {
    fn backend(&self) -> &'static str {
        "kubernetes"
    }

    fn runtime_version(&self) -> Option<String> {
        self.inner.version.clone()
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceObservation> {
        Err(Error::invalid(
            format!("instance {}", spec.id),
            "the Kubernetes backend owns replicas: apply the server's workload instead",
        ))
    }

    async fn stop(&self, id: &InstanceId, mode: StopMode, grace: Duration) -> Result<()> {
        let grace = match mode {
            StopMode::Force => 0,
            StopMode::Graceful => u32::try_from(grace.as_secs()).unwrap_or(u32::MAX),
        };
        self.delete_pod(id, grace).await
    }

    async fn remove(&self, id: &InstanceId) -> Result<()> {
        match self.delete_pod(id, 0).await {
            Err(e) if e.kind() == mcp_lifecycle::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<InstanceObservation>> {
        self.cache_ready().await?;
        let managed = self
            .inner
            .pods
            .state()
            .into_iter()
            .filter_map(|pod| observe(&pod));
        let adopted = self
            .inner
            .adopted_pods
            .iter()
            .flat_map(Store::state)
            .filter_map(|pod| self.inner.adoptions.observe(&pod));
        Ok(managed
            .chain(adopted)
            .filter(|obs| labels::matches(&obs.labels, selector))
            .collect())
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceObservation> {
        self.cache_ready().await?;
        self.cached_pod(id)
            .map(|(_, obs)| obs)
            .ok_or_else(|| Error::not_found(format!("pod {id}")))
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<String>> {
        let container = self
            .cached_pod(id)
            .map_or_else(|| CONTAINER.to_owned(), |(pod, _)| Self::container_of(&pod));
        let params = LogParams {
            container: Some(container),
            tail_lines: Some(i64::try_from(tail).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let text = self
            .api::<Pod>()
            .logs(id.as_str(), &params)
            .await
            .map_err(|e| errors::map(self.call("get", "pods/log", id.as_str()), e))?;
        Ok(text.lines().map(str::to_owned).collect())
    }

    async fn connect(&self, id: &InstanceId) -> Result<Connection> {
        self.cache_ready().await?;
        let (pod, _) = self
            .cached_pod(id)
            .ok_or_else(|| Error::not_found(format!("pod {id}")))?;
        let endpoint = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ENDPOINT_ANNOTATION))
            .cloned()
            .or_else(|| self.inner.adoptions.endpoint_of(&pod))
            .unwrap_or_else(|| "stdio".to_owned());
        let mut words = endpoint.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("http" | "sse"), Some(port), Some(path)) => {
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .ok_or_else(|| {
                        Error::unavailable(format!("pod {id}"), "the pod has no IP yet")
                    })?;
                match &self.inner.forwards {
                    None => Ok(Connection::Url(format!("http://{ip}:{port}{path}"))),
                    Some(forwards) => {
                        let port = port.parse::<u16>().map_err(|_| {
                            Error::invalid(
                                format!("pod {id}"),
                                format!("endpoint annotation `{endpoint}` has no valid port"),
                            )
                        })?;
                        let address = forwards.address(&pod, port).await?;
                        Ok(Connection::Url(format!("http://{address}{path}")))
                    }
                }
            }
            _ => {
                let params = AttachParams::default()
                    .container(Self::container_of(&pod))
                    .stdin(true)
                    .stdout(true)
                    .stderr(false);
                let mut attached = self
                    .api::<Pod>()
                    .attach(id.as_str(), &params)
                    .await
                    .map_err(|e| errors::map(self.call("create", "pods/attach", id.as_str()), e))?;
                let (Some(writer), Some(reader)) = (attached.stdin(), attached.stdout()) else {
                    return Err(Error::unavailable(
                        format!("pod {id}"),
                        "the attach session has no stdin or stdout",
                    ));
                };
                let server = id.clone();
                tokio::spawn(async move {
                    if let Err(error) = attached.join().await {
                        tracing::debug!(instance = %server, %error, "attach session ended");
                    }
                });
                Ok(Connection::Stdio(StdioStream {
                    reader: Box::pin(reader),
                    writer: Box::pin(writer),
                }))
            }
        }
    }

    async fn endpoints(&self, server: &str) -> Result<Vec<Endpoint>> {
        self.cache_ready().await?;
        if tokio::time::timeout(CACHE_READY_TIMEOUT, self.inner.services.wait_until_ready())
            .await
            .is_err()
        {
            return Err(Error::unavailable(
                "the Kubernetes API server",
                "the service watch has not listed services yet",
            ));
        }
        let namespace = &self.inner.config.namespace;
        let name = workload::service_name(server);
        let Some(service) = self
            .inner
            .services
            .get(&ObjectRef::new(&name).within(namespace))
        else {
            return Ok(Vec::new());
        };
        let pods = self.inner.pods.state();
        let of_server: Vec<&Pod> = pods
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::SERVER))
                    .is_some_and(|s| s == server)
            })
            .collect();
        Ok(endpoints::endpoints(&service, namespace, &of_server))
    }

    fn events(&self) -> EventStream {
        BroadcastStream::new(self.inner.events.subscribe())
            .filter_map(|event| async move { event.ok() })
            .boxed()
    }

    fn replica_owner(&self) -> Option<&dyn ReplicaOwner> {
        Some(self)
    }
}

#[async_trait]
impl ReplicaOwner for KubernetesOrchestrator {
    async fn apply_workload(&self, workload: &WorkloadSpec) -> Result<()> {
        let t = &workload.template;
        if let Source::Existing(deployment) = &t.source {
            return self.adopt(workload, deployment).await;
        }
        let server = t.server.as_str();
        if self.is_foreign(server).await? {
            return Err(Error::invalid(
                "name",
                format!(
                    "a Deployment named {server} that mcp-lifecycle did not create exists in \
                     namespace {}; adopt it with `source: {{ existing: {server} }}` or choose \
                     another name",
                    self.inner.config.namespace
                ),
            ));
        }
        let manager = t
            .labels
            .get(labels::MANAGED_BY)
            .cloned()
            .unwrap_or_else(|| self.inner.config.field_manager.clone());
        let deployment = workload::deployment(workload, &self.inner.config, &manager)?;
        let secret = workload::env_secret(workload, &self.inner.config, &manager);
        let params = self.apply_params();
        let secrets = self.api::<Secret>();
        let secret_name = workload::env_secret_name(server);
        // The values exist before the pods that read them.
        if let Some(secret) = &secret {
            secrets
                .patch(&secret_name, &params, &Patch::Apply(secret))
                .await
                .map_err(|e| errors::map(self.call(APPLY, "secrets", &secret_name), e))?;
        }
        let applied = self
            .api::<Deployment>()
            .patch(server, &params, &Patch::Apply(&deployment))
            .await
            .map_err(|e| errors::map(self.call(APPLY, "deployments", server), e))?;
        let owner = applied.metadata.uid.clone().map(|uid| OwnerReference {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            name: server.to_owned(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
        if let Some(mut secret) = secret {
            secret.metadata.owner_references = owner.clone().map(|o| vec![o]);
            secrets
                .patch(&secret_name, &params, &Patch::Apply(&secret))
                .await
                .map_err(|e| errors::map(self.call(APPLY, "secrets", &secret_name), e))?;
        }
        let services = self.api::<Service>();
        let service_name = workload::service_name(server);
        match workload::service(workload, &self.inner.config, &manager) {
            Some(mut service) => {
                service.metadata.owner_references = owner.map(|o| vec![o]);
                services
                    .patch(&service_name, &params, &Patch::Apply(&service))
                    .await
                    .map_err(|e| errors::map(self.call(APPLY, "services", &service_name), e))?;
            }
            // A server that became stdio loses its Service (known from the watch).
            None if self.cached_service(server).is_some() => {
                match services
                    .delete(&service_name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if errors::is_not_found(&e) => {}
                    Err(e) => {
                        return Err(errors::map(
                            self.call("delete", "services", &service_name),
                            e,
                        ));
                    }
                }
            }
            None => {}
        }
        tracing::debug!(server, replicas = workload.replicas, "workload applied");
        Ok(())
    }

    async fn scale(&self, server: &str, replicas: u32) -> Result<()> {
        let patch = json!({ "spec": { "replicas": replicas } });
        let deployment = self
            .inner
            .adoptions
            .deployment_of_server(server)
            .unwrap_or_else(|| server.to_owned());
        self.api::<Deployment>()
            .patch_scale(&deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| errors::map(self.call("patch", "deployments/scale", &deployment), e))
    }

    async fn delete_workload(&self, server: &str) -> Result<()> {
        if self.inner.adoptions.deployment_of_server(server).is_some() {
            // Forgotten, not deleted: the Deployment stays as it is, and its
            // pods stop being this server's replicas.
            let theirs: Vec<InstanceObservation> = self
                .inner
                .adopted_pods
                .iter()
                .flat_map(Store::state)
                .filter_map(|pod| self.inner.adoptions.observe(&pod))
                .filter(|obs| obs.server == server)
                .collect();
            self.inner.adoptions.remove_server(server);
            for obs in theirs {
                watch::send(&self.inner.events, obs, true);
            }
            return Ok(());
        }
        if self.is_foreign(server).await? {
            // Never ours to delete (an adopted Deployment this host already
            // forgot, or one that merely shares the name).
            tracing::debug!(
                server,
                "the Deployment of this name is not ours; left as it is"
            );
            return Ok(());
        }
        let params = DeleteParams::background();
        let ignore_missing = |result: std::result::Result<(), kube::Error>,
                              resource: &str,
                              name: &str|
         -> Result<()> {
            match result {
                Ok(()) => Ok(()),
                Err(e) if errors::is_not_found(&e) => Ok(()),
                Err(e) => Err(errors::map(self.call("delete", resource, name), e)),
            }
        };
        let service = workload::service_name(server);
        let secret = workload::env_secret_name(server);
        // Scaled to 0 first: the ReplicaSet controller then removes the pods
        // at once, while the garbage collector (which removes them after the
        // Deployment is gone) can lag, right after an API server restart say.
        match self.scale(server, 0).await {
            Ok(()) => {}
            Err(e) if e.kind() == mcp_lifecycle::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        ignore_missing(
            self.api::<Deployment>()
                .delete(server, &params)
                .await
                .map(|_| ()),
            "deployments",
            server,
        )?;
        ignore_missing(
            self.api::<Service>()
                .delete(&service, &params)
                .await
                .map(|_| ()),
            "services",
            &service,
        )?;
        ignore_missing(
            self.api::<Secret>()
                .delete(&secret, &params)
                .await
                .map(|_| ()),
            "secrets",
            &secret,
        )?;
        Ok(())
    }

    async fn set_ready(&self, replica: &InstanceId, ready: bool) -> Result<()> {
        if self.cached(replica).is_none() && self.cached_pod(replica).is_some() {
            // An adopted pod has no readiness gate of ours to set.
            return Ok(());
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let patch = json!({
            "status": {
                "conditions": [{
                    "type": READY_GATE,
                    "status": if ready { "True" } else { "False" },
                    "lastTransitionTime": now,
                    "reason": if ready { "McpProbePassed" } else { "McpProbeNotPassed" },
                }]
            }
        });
        self.api::<Pod>()
            .patch_status(
                replica.as_str(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| errors::map(self.call("patch", "pods/status", replica.as_str()), e))
    }
}
