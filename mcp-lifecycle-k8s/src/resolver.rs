//! [`ProbePodResolver`]: an [`ImageResolver`] that asks the cluster itself
//! (archestra's approach). It runs a short-lived pod of the image with
//! `imagePullPolicy: Always` in the servers' namespace, with their pull
//! secrets, node selector, tolerations and service account, so the digest
//! is the one the cluster's own pull gets (its mirrors and credentials
//! included). The pod's command is a path no image has, so nothing from the
//! image ever runs (an image without a shell works the same); the kubelet
//! reports the pulled digest as soon as it creates the container. The pod is
//! deleted whatever happens.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, LocalObjectReference, Pod, PodSpec, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use mcp_lifecycle::ports::ImageResolver;
use mcp_lifecycle::{Error, Result};

use crate::config::KubernetesConfig;
use crate::errors::{self, Call};

/// The label every probe pod carries (value `resolver`), so leftovers are
/// easy to find: `kubectl get pods -l mcp-lifecycle.dev/role=resolver`.
pub const ROLE_LABEL: &str = "mcp-lifecycle.dev/role";

/// A command no image has: the container is created (and its image pulled)
/// but never runs anything.
const NO_SUCH_COMMAND: &str = "/mcp-lifecycle-resolve-only/does-not-exist";

/// Resolves image references by pulling them in a probe pod. See the module
/// documentation.
#[derive(Clone)]
pub struct ProbePodResolver {
    client: Client,
    config: KubernetesConfig,
    timeout: Duration,
}

impl std::fmt::Debug for ProbePodResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbePodResolver")
            .field("namespace", &self.config.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ProbePodResolver {
    /// A resolver whose probe pods run like the servers of `config` and give
    /// up after `timeout` (the pod is deleted then too).
    pub fn new(client: Client, config: KubernetesConfig, timeout: Duration) -> Self {
        ProbePodResolver {
            client,
            config,
            timeout,
        }
    }

    fn probe_pod(&self, name: &str, reference: &str) -> Pod {
        let c = &self.config;
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(c.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    ROLE_LABEL.to_owned(),
                    "resolver".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "resolve".to_owned(),
                    image: Some(reference.to_owned()),
                    image_pull_policy: Some("Always".to_owned()),
                    command: Some(vec![NO_SUCH_COMMAND.to_owned()]),
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".to_owned()]),
                            add: None,
                        }),
                        run_as_non_root: Some(true),
                        run_as_user: Some(c.run_as_user.unwrap_or(65534)),
                        read_only_root_filesystem: Some(true),
                        ..SecurityContext::default()
                    }),
                    ..Container::default()
                }],
                restart_policy: Some("Never".to_owned()),
                active_deadline_seconds: Some(
                    i64::try_from(self.timeout.as_secs())
                        .unwrap_or(i64::MAX)
                        .max(1),
                ),
                termination_grace_period_seconds: Some(0),
                automount_service_account_token: Some(false),
                service_account_name: c.service_account.clone(),
                image_pull_secrets: (!c.image_pull_secrets.is_empty()).then(|| {
                    c.image_pull_secrets
                        .iter()
                        .map(|name| LocalObjectReference { name: name.clone() })
                        .collect()
                }),
                node_selector: (!c.node_selector.is_empty()).then(|| c.node_selector.clone()),
                tolerations: (!c.tolerations.is_empty()).then(|| c.tolerations.clone()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }
}

/// What a probe pod has to say so far.
enum Verdict {
    /// The digest the kubelet pulled, from `imageID` (`REPO@sha256:…`).
    Pulled(String),
    /// The pull failed, in the kubelet's words.
    PullFailed(String),
}

fn verdict(pod: &Pod) -> Option<Verdict> {
    let c = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    if let Some((_, digest)) = c.image_id.split_once('@') {
        return Some(Verdict::Pulled(format!(
            "{}@{digest}",
            c.image_id
                .trim_start_matches("docker-pullable://")
                .split('@')
                .next()
                .unwrap_or("")
        )));
    }
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    match waiting.reason.as_deref() {
        Some(reason @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName")) => {
            Some(Verdict::PullFailed(format!(
                "{reason}: {}",
                waiting.message.clone().unwrap_or_default()
            )))
        }
        _ => None,
    }
}

/// The repository of a reference, as Docker names it in repo digests
/// (`docker.io/library/` dropped).
fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    // A tag is after the last ':' that follows the last '/'.
    let slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match without_digest[slash..].rfind(':') {
        Some(colon) => &without_digest[..slash + colon],
        None => without_digest,
    };
    repo.trim_start_matches("docker.io/")
        .trim_start_matches("library/")
}

#[async_trait]
impl ImageResolver for ProbePodResolver {
    async fn resolve(&self, reference: &str) -> Result<String> {
        if let Some((_, digest)) = reference.split_once('@') {
            return Ok(digest.to_owned());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("mcp-resolve-{:x}", nanos % (1 << 40));
        let call = |verb| Call {
            verb,
            resource: "pods",
            name: &name,
            namespace: &self.config.namespace,
        };
        pods.create(&PostParams::default(), &self.probe_pod(&name, reference))
            .await
            .map_err(|e| errors::map(call("create"), e))?;
        let decided = tokio::time::timeout(
            self.timeout,
            await_condition(pods.clone(), &name, |pod: Option<&Pod>| {
                pod.and_then(verdict).is_some()
            }),
        )
        .await;
        // Deleted whatever happened (grace 0: nothing runs in it).
        let deleted = pods
            .delete(
                &name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
            )
            .await;
        if let Err(e) = &deleted
            && !errors::is_not_found(e)
        {
            tracing::warn!(pod = %name, error = %e, "could not delete the image probe pod");
        }
        let pod = match decided {
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("resolving {reference} in a probe pod"),
                    after: self.timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(Error::unavailable(
                    "the Kubernetes API server",
                    format!("watching the image probe pod: {e}"),
                ));
            }
            Ok(Ok(pod)) => pod,
        };
        match pod.as_ref().and_then(verdict) {
            Some(Verdict::Pulled(image_id)) => {
                let (repo, digest) = image_id.split_once('@').unwrap_or(("", ""));
                if repository(repo) != repository(reference) {
                    // Docker names one of the image's repo digests; it is
                    // not this repository's, so the digest would be a guess.
                    return Err(Error::backend(
                        "kubernetes",
                        format!("resolving {reference}"),
                        format!("the runtime reported a digest of {repo}, not of this repository"),
                    ));
                }
                Ok(digest.to_owned())
            }
            Some(Verdict::PullFailed(words)) => {
                let lower = words.to_lowercase();
                if lower.contains("not found") || lower.contains("manifest unknown") {
                    Err(Error::not_found(format!("image {reference} ({words})")))
                } else {
                    Err(Error::unavailable(format!("image {reference}"), words))
                }
            }
            None => Err(Error::not_found(format!(
                "image probe pod for {reference} (deleted before it decided)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_compare_as_docker_names_them() {
        assert_eq!(repository("127.0.0.1:5000/mcp:v1"), "127.0.0.1:5000/mcp");
        assert_eq!(repository("127.0.0.1:5000/mcp"), "127.0.0.1:5000/mcp");
        assert_eq!(repository("docker.io/library/redis:7"), "redis");
        assert_eq!(repository("redis@sha256:abc"), "redis");
        assert_eq!(repository("ghcr.io/o/r:tag"), "ghcr.io/o/r");
    }
}
