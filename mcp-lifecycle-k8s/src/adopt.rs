//! Adopting Deployments the library did not create: the ones the adoption
//! selector ([`KubernetesConfig::adopt_selector`]) matches, as
//! cortex-resource-manager finds MCP servers. This file owns which adopted
//! Deployment belongs to which server, the watch of their pods, and the
//! specs [`crate::KubernetesOrchestrator::adoptable`] suggests for them.
//!
//! An adopted Deployment is listed, probed, started, stopped and scaled
//! (through the scale subresource) and never has its template changed: no
//! readiness gate, no labels, no Service of ours. Its pods are observed like
//! managed ones; the server they belong to is found through their
//! ReplicaSet (owner reference, less the `pod-template-hash` suffix).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use mcp_lifecycle::ports::{InstanceObservation, RuntimeEvent, labels};
use mcp_lifecycle::spec::{ServerSpec, Source, Transport};
use mcp_lifecycle::{Error, Result};
use tokio::sync::broadcast;

use crate::config::KubernetesConfig;
use crate::observe::observe_as;
use crate::watch::{self, Observer};

/// The annotation an adopted Deployment may carry to say how MCP is spoken
/// to its pods, in the form `http PORT PATH`, `sse PORT PATH` or `stdio`.
/// Without it, [`crate::KubernetesOrchestrator::adoptable`] suggests
/// streamable HTTP at `/mcp` on the first container port, or stdio when
/// there is none.
pub const TRANSPORT_ANNOTATION: &str = "mcp-lifecycle.dev/transport";

/// One adopted Deployment: the server it is, and how to reach its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Adopted {
    /// The server's name.
    pub(crate) server: String,
    /// The host's manager label value (what the controller lists by).
    pub(crate) manager: String,
    /// How MCP is spoken to its pods (`workload::endpoint`'s form).
    pub(crate) endpoint: String,
}

/// Which adopted Deployment is which server, shared with the pod watch.
#[derive(Debug, Default)]
pub(crate) struct Adoptions {
    by_deployment: RwLock<BTreeMap<String, Adopted>>,
}

impl Adoptions {
    /// The adoption of `deployment`, if any.
    pub(crate) fn get(&self, deployment: &str) -> Option<Adopted> {
        self.read().get(deployment).cloned()
    }

    /// The Deployment `server` adopted, if any.
    pub(crate) fn deployment_of_server(&self, server: &str) -> Option<String> {
        self.read()
            .iter()
            .find(|(_, a)| a.server == server)
            .map(|(d, _)| d.clone())
    }

    /// Records that `server` adopts `deployment`. Another server's adoption
    /// of the same Deployment is a conflict.
    pub(crate) fn insert(&self, deployment: &str, adopted: Adopted) -> Result<()> {
        let mut map = self
            .by_deployment
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(other) = map.get(deployment)
            && other.server != adopted.server
        {
            return Err(Error::invalid(
                "source.existing",
                format!(
                    "deployment {deployment} is already adopted by server {}",
                    other.server
                ),
            ));
        }
        map.retain(|_, a| a.server != adopted.server);
        map.insert(deployment.to_owned(), adopted);
        Ok(())
    }

    /// Forgets `server`'s adoption; returns the Deployment it had.
    pub(crate) fn remove_server(&self, server: &str) -> Option<String> {
        let mut map = self
            .by_deployment
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let deployment = map
            .iter()
            .find(|(_, a)| a.server == server)
            .map(|(d, _)| d.clone())?;
        map.remove(&deployment);
        Some(deployment)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Adopted>> {
        self.by_deployment.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The observation of an adopted pod as its server's replica, with the
    /// host's labels added so the controller's selector finds it; `None`
    /// for pods of Deployments no server adopted, and for managed pods.
    pub(crate) fn observe(&self, pod: &Pod) -> Option<InstanceObservation> {
        let pod_labels = pod.metadata.labels.as_ref();
        if pod_labels.is_some_and(|l| l.contains_key(labels::MANAGED_BY)) {
            return None;
        }
        let adopted = self.get(&deployment_of(pod)?)?;
        let mut obs = observe_as(pod, adopted.server.clone())?;
        obs.labels
            .insert(labels::MANAGED_BY.to_owned(), adopted.manager.clone());
        obs.labels
            .insert(labels::SERVER.to_owned(), adopted.server.clone());
        Some(obs)
    }

    /// The endpoint of the adopted Deployment `pod` belongs to.
    pub(crate) fn endpoint_of(&self, pod: &Pod) -> Option<String> {
        Some(self.get(&deployment_of(pod)?)?.endpoint)
    }
}

/// The adoption selector as a label-selector string (`k=v,k2=v2`).
pub(crate) fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts the watch of the pods the adoption selector matches; returns its
/// cache.
pub(crate) fn start_watch(
    api: kube::Api<Pod>,
    selector: &BTreeMap<String, String>,
    adoptions: Arc<Adoptions>,
    events: broadcast::Sender<RuntimeEvent>,
    cancel: tokio_util::sync::CancellationToken,
) -> Store<Pod> {
    let observer: Observer = Arc::new(move |pod: &Pod| adoptions.observe(pod));
    watch::start(api, &selector_string(selector), observer, events, cancel)
}

/// The Deployment a pod belongs to: its ReplicaSet owner's name without the
/// `-<pod-template-hash>` the Deployment controller appends.
pub(crate) fn deployment_of(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "ReplicaSet" && o.controller == Some(true))?;
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
    owner
        .name
        .strip_suffix(hash.as_str())?
        .strip_suffix('-')
        .map(str::to_owned)
}

/// Whether a Deployment may be adopted under `config`: it matches the
/// selector on its own labels and on its pod template's (the pod watch
/// selects by the latter), and is not one the library manages.
pub(crate) fn check_adoptable(deployment: &Deployment, config: &KubernetesConfig) -> Result<()> {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let Some(selector) = config.adopt_selector.as_ref() else {
        return Err(Error::invalid(
            "source.existing",
            "adoption is off (KubernetesConfig::adopt_selector is None)",
        ));
    };
    let own = deployment.metadata.labels.clone().unwrap_or_default();
    if own.contains_key(labels::MANAGED_BY) {
        return Err(Error::invalid(
            "source.existing",
            format!("deployment {name} is managed by mcp-lifecycle; apply its spec instead"),
        ));
    }
    let template = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !labels::matches(&own, selector) || !labels::matches(&template, selector) {
        return Err(Error::invalid(
            "source.existing",
            format!(
                "deployment {name} and its pod template must carry the adoption selector's \
                 labels ({})",
                selector_string(selector)
            ),
        ));
    }
    Ok(())
}

/// The spec a host would apply to adopt `deployment`: named after it (dots
/// become dashes), at its current replica count, speaking MCP as its
/// [`TRANSPORT_ANNOTATION`] says, else over streamable HTTP at `/mcp` on its
/// first container port, else over stdio. `None` for a name no server can
/// carry.
pub(crate) fn suggested_spec(deployment: &Deployment) -> Option<ServerSpec> {
    let name = deployment.metadata.name.clone()?;
    let server: String = name.replace('.', "-").chars().take(63).collect();
    let server = server.trim_end_matches('-').to_owned();
    let mut spec = ServerSpec::new(server, Source::Existing(name));
    let annotated = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRANSPORT_ANNOTATION))
        .and_then(|text| parse_transport(text));
    let first_port = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.first())
        .and_then(|p| u16::try_from(p.container_port).ok());
    spec.transport = match (annotated, first_port) {
        (Some(transport), _) => transport,
        (None, Some(port)) => Transport::Http {
            port,
            path: "/mcp".to_owned(),
        },
        (None, None) => Transport::Stdio,
    };
    spec.replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(1);
    spec.validate(&mcp_lifecycle::Limits::default())
        .ok()
        .map(|()| spec)
}

/// Parses [`TRANSPORT_ANNOTATION`]'s value.
fn parse_transport(text: &str) -> Option<Transport> {
    let mut words = text.split_whitespace();
    match (words.next()?, words.next(), words.next(), words.next()) {
        ("stdio", None, None, None) => Some(Transport::Stdio),
        (kind @ ("http" | "sse"), Some(port), Some(path), None) => {
            let port = port.parse().ok()?;
            let path = path.to_owned();
            Some(if kind == "http" {
                Transport::Http { port, path }
            } else {
                Transport::Sse { port, path }
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(owner: &str, hash: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{owner}-abcde")),
                labels: Some(BTreeMap::from([(
                    "pod-template-hash".to_owned(),
                    hash.to_owned(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: owner.into(),
                    uid: "u".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_pod_belongs_to_its_replica_sets_deployment() {
        assert_eq!(
            deployment_of(&pod("github-mcp-7d9f8b6c4", "7d9f8b6c4")).as_deref(),
            Some("github-mcp")
        );
        // A ReplicaSet not made by a Deployment (no hash suffix) is not adopted.
        assert_eq!(deployment_of(&pod("standalone", "7d9f8b6c4")), None);
    }

    #[test]
    fn transport_annotation_forms() {
        assert_eq!(parse_transport("stdio"), Some(Transport::Stdio));
        assert_eq!(
            parse_transport("sse 9000 /sse"),
            Some(Transport::Sse {
                port: 9000,
                path: "/sse".into()
            })
        );
        assert_eq!(parse_transport("http x /mcp"), None);
        assert_eq!(parse_transport("http 80 /mcp extra"), None);
    }

    #[test]
    fn one_deployment_is_one_server() {
        let adoptions = Adoptions::default();
        let a = |server: &str| Adopted {
            server: server.into(),
            manager: "m".into(),
            endpoint: "stdio".into(),
        };
        adoptions.insert("d", a("one")).unwrap();
        assert!(adoptions.insert("d", a("two")).is_err());
        adoptions.insert("e", a("one")).unwrap();
        assert_eq!(adoptions.deployment_of_server("one").as_deref(), Some("e"));
        assert_eq!(adoptions.get("d"), None);
        assert_eq!(adoptions.remove_server("one").as_deref(), Some("e"));
    }
}
