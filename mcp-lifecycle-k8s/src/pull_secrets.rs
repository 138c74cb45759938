//! [`PullSecretResolver`]: an [`ImageResolver`] that asks the registry
//! itself (the core's [`RegistryResolver`]) with the credentials the
//! servers' pods pull with, read from the cluster's image pull Secrets.
//!
//! Which Secrets: `KubernetesConfig::image_pull_secrets`, as every pod
//! names them; when that list is empty, the `imagePullSecrets` of the pods'
//! service account (`KubernetesConfig::service_account`, else `default`),
//! which the ServiceAccount admission plugin copies into pods that name
//! none. They are read at every resolution, so a rotated Secret counts from
//! the next check on. Credentials are matched to the image's registry as the
//! kubelet matches them (see `docker_config_json`) and tried in the
//! kubelet's order until one is accepted; with none matching, the
//! resolution is anonymous, as the kubelet's pull would be.
//!
//! What this does not see, unlike [`crate::ProbePodResolver`]: the nodes'
//! own credentials (a kubelet `config.json`, credential provider plugins)
//! and the container runtime's registry mirrors.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, Client};
use mcp_lifecycle::ports::{ImageResolver, ResolveFailure};
use mcp_lifecycle::registry::DEFAULT_TIMEOUT;
use mcp_lifecycle::state::pinned_digest;
use mcp_lifecycle::{Error, ErrorKind, RegistryResolver, Result};
use oci_spec::distribution::Reference;
use secrecy::ExposeSecret as _;
use tracing::Instrument as _;
use zeroize::Zeroize as _;

use crate::config::KubernetesConfig;
use crate::docker_config_json::{Candidate, Keyring, parse_secret};
use crate::errors::{self, Call};

/// Resolves image references at their registry with the credentials of the
/// cluster's image pull Secrets. See the module documentation.
///
/// ```no_run
/// # async fn demo() -> mcp_lifecycle::Result<()> {
/// use std::time::Duration;
/// use mcp_lifecycle::ImageResolver;
/// use mcp_lifecycle_k8s::{KubernetesConfig, PullSecretResolver};
///
/// let client = kube::Client::try_default().await.expect("a kubeconfig");
/// let config = KubernetesConfig {
///     namespace: "mcp".into(),
///     image_pull_secrets: vec!["regcred".into()],
///     ..Default::default()
/// };
/// let resolver = PullSecretResolver::builder(client, &config)
///     .insecure_registry("127.0.0.1:5000") // plain HTTP, for a loopback test registry
///     .timeout(Duration::from_secs(5))
///     .build();
/// let digest = resolver.resolve("127.0.0.1:5000/mcp-test-server:v1").await?;
/// assert!(digest.starts_with("sha256:"));
/// # Ok(())
/// # }
/// ```
///
/// Errors follow the [`ImageResolver`] contract, as the core's
/// [`RegistryResolver`] reports them; a named pull Secret that is missing,
/// of another type than `kubernetes.io/dockerconfigjson` or
/// `kubernetes.io/dockercfg`, or unparsable is `Invalid` (classified
/// [`ResolveFailure::Unauthorized`]), naming the Secret and never its
/// contents. Reading the Secrets needs `get` on `secrets`, and on
/// `serviceaccounts` when the service account's are used
/// (`docs/kubernetes-rbac.yaml`).
#[derive(Clone)]
pub struct PullSecretResolver {
    client: Client,
    namespace: String,
    pull_secrets: Vec<String>,
    service_account: Option<String>,
    service_account_secrets: bool,
    insecure: Vec<String>,
    timeout: Duration,
}

impl fmt::Debug for PullSecretResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecretResolver")
            .field("namespace", &self.namespace)
            .field("pull_secrets", &self.pull_secrets)
            .field("service_account", &self.service_account)
            .field("service_account_secrets", &self.service_account_secrets)
            .field("insecure_registries", &self.insecure)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`PullSecretResolver`]; from [`PullSecretResolver::builder`].
#[derive(Clone)]
pub struct PullSecretResolverBuilder {
    resolver: PullSecretResolver,
}

impl fmt::Debug for PullSecretResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PullSecretResolverBuilder")
            .field(&self.resolver)
            .finish()
    }
}

impl PullSecretResolverBuilder {
    /// Reaches `registry` (`host` or `host:port`) over plain HTTP instead of
    /// HTTPS, as [`mcp_lifecycle::registry::RegistryResolverBuilder::insecure_registry`].
    /// Meant for loopback test registries.
    pub fn insecure_registry(mut self, registry: impl Into<String>) -> Self {
        self.resolver.insecure.push(registry.into());
        self
    }

    /// Bounds reading the Secrets, and each registry attempt (and each HTTP
    /// request in it), to `timeout`. Default
    /// [`mcp_lifecycle::registry::DEFAULT_TIMEOUT`] (10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.resolver.timeout = timeout;
        self
    }

    /// Whether, when `KubernetesConfig::image_pull_secrets` is empty, the
    /// service account's `imagePullSecrets` are used (as the cluster gives
    /// them to the pods). Default `true`; with `false` no `serviceaccounts`
    /// permission is needed and such a resolver is anonymous.
    pub fn service_account_secrets(mut self, enabled: bool) -> Self {
        self.resolver.service_account_secrets = enabled;
        self
    }

    /// The resolver.
    pub fn build(self) -> PullSecretResolver {
        self.resolver
    }
}

impl PullSecretResolver {
    /// A builder for a resolver that reads the pull Secrets and service
    /// account of `config` (its namespace, `image_pull_secrets`,
    /// `service_account`) through `client`. Defaults: HTTPS only, a 10 s
    /// timeout, the service account's Secrets when the config names none.
    pub fn builder(client: Client, config: &KubernetesConfig) -> PullSecretResolverBuilder {
        PullSecretResolverBuilder {
            resolver: PullSecretResolver {
                client,
                namespace: config.namespace.clone(),
                pull_secrets: config.image_pull_secrets.clone(),
                service_account: config.service_account.clone(),
                service_account_secrets: true,
                insecure: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
            },
        }
    }

    /// The core resolver for one attempt: `candidate`'s credentials for
    /// `registry`, or none; never the host's Docker config.
    fn registry_resolver(&self, registry: &str, candidate: Option<&Candidate>) -> RegistryResolver {
        let mut builder = RegistryResolver::builder()
            .docker_config(false)
            .timeout(self.timeout);
        for insecure in &self.insecure {
            builder = builder.insecure_registry(insecure.as_str());
        }
        if let Some(credential) = candidate.and_then(|c| c.credential.as_ref()) {
            builder = builder.credentials(
                registry,
                credential.username.as_str(),
                credential.password.expose_secret(),
            );
        }
        builder.build()
    }

    fn secret_what(&self, name: &str) -> String {
        format!(
            "image pull secret `{name}` in namespace `{}`",
            self.namespace
        )
    }

    /// The names of the Secrets the pods pull with, and whether they came
    /// from the service account (a missing one is then skipped, as the
    /// kubelet skips it, rather than an error).
    async fn secret_names(&self) -> Result<(Vec<String>, bool)> {
        if !self.pull_secrets.is_empty() {
            return Ok((self.pull_secrets.clone(), false));
        }
        if !self.service_account_secrets {
            return Ok((Vec::new(), false));
        }
        let name = self.service_account.as_deref().unwrap_or("default");
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let account = accounts.get_opt(name).await.map_err(|e| {
            errors::map(
                Call {
                    verb: "get",
                    resource: "serviceaccounts",
                    name,
                    namespace: &self.namespace,
                },
                e,
            )
        })?;
        let Some(account) = account else {
            if self.service_account.is_some() {
                return Err(Error::invalid(
                    format!("service account `{name}` in namespace `{}`", self.namespace),
                    "it does not exist (KubernetesConfig::service_account names it; the pods could not be created either)",
                ));
            }
            tracing::debug!(namespace = %self.namespace, "the namespace has no default service account yet; no pull secrets");
            return Ok((Vec::new(), true));
        };
        let names = account
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .collect();
        Ok((names, true))
    }

    /// Reads the pull Secrets into a keyring.
    async fn keyring(&self) -> Result<Keyring> {
        let (names, from_service_account) = self.secret_names().await?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut keyring = Keyring::default();
        for name in &names {
            let secret = secrets.get_opt(name).await.map_err(|e| {
                errors::map(
                    Call {
                        verb: "get",
                        resource: "secrets",
                        name,
                        namespace: &self.namespace,
                    },
                    e,
                )
            })?;
            let Some(mut secret) = secret else {
                if from_service_account {
                    tracing::warn!(
                        secret = %name,
                        namespace = %self.namespace,
                        "the service account names an image pull secret that does not exist; skipped, as the kubelet skips it"
                    );
                    continue;
                }
                return Err(Error::invalid(
                    self.secret_what(name),
                    "no such Secret; create it (`kubectl create secret docker-registry`) or remove it from KubernetesConfig::image_pull_secrets",
                ));
            };
            let mut data = secret.data.take().unwrap_or_default();
            let parsed = parse_secret(secret.type_.as_deref(), &data);
            for value in data.values_mut() {
                value.0.zeroize();
            }
            let entries =
                parsed.map_err(|e| Error::invalid(self.secret_what(name), e.to_string()))?;
            keyring.add(name, entries);
        }
        tracing::trace!(
            secrets = names.len(),
            from_service_account,
            "read the image pull secrets"
        );
        Ok(keyring)
    }

    /// Resolves `reference` (parsed as `parsed`) with each candidate in turn.
    async fn resolve_with(&self, reference: &str, parsed: &Reference) -> Result<String> {
        let keyring = match tokio::time::timeout(self.timeout, self.keyring()).await {
            Ok(keyring) => keyring?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("the image pull secrets of namespace {}", self.namespace),
                    after: self.timeout,
                });
            }
        };
        // The kubelet's name for the repository: Docker Hub's as docker.io/library/NAME.
        let image = format!("{}/{}", parsed.registry(), parsed.repository());
        let candidates = keyring.lookup(&image);
        if candidates.is_empty() {
            tracing::debug!(
                "no image pull secret has credentials for this registry; resolving anonymously"
            );
        }
        let Some((last, earlier)) = candidates.split_last() else {
            return self
                .registry_resolver(parsed.registry(), None)
                .resolve(reference)
                .await;
        };
        for candidate in earlier {
            match self.attempt(reference, parsed, candidate).await {
                Ok(digest) => return Ok(digest),
                // Refused (or hidden: registries answer 404 to the
                // unauthorized too): the kubelet would try the next one.
                Err(e) if matches!(e.kind(), ErrorKind::Invalid | ErrorKind::NotFound) => {
                    tracing::debug!(secret = %candidate.secret, error = %e, "the registry refused; trying the next credentials");
                }
                Err(e) => return Err(e),
            }
        }
        self.attempt(reference, parsed, last).await
    }

    /// One resolution with `candidate`'s credentials; a refusal names the
    /// Secret they came from.
    async fn attempt(
        &self,
        reference: &str,
        parsed: &Reference,
        candidate: &Candidate,
    ) -> Result<String> {
        tracing::debug!(secret = %candidate.secret, anonymous = candidate.credential.is_none(), "resolving with an image pull secret's credentials");
        match self
            .registry_resolver(parsed.registry(), Some(candidate))
            .resolve(reference)
            .await
        {
            Err(Error::InvalidArgument { what, reason }) => Err(Error::invalid(
                what,
                format!(
                    "{reason} (the credentials of image pull secret `{}`)",
                    candidate.secret
                ),
            )),
            other => other,
        }
    }
}

#[async_trait]
impl ImageResolver for PullSecretResolver {
    async fn resolve(&self, reference: &str) -> Result<String> {
        if let Some(digest) = pinned_digest(reference) {
            return Ok(digest.to_owned());
        }
        let Ok(parsed) = reference.parse::<Reference>() else {
            // The core's error for a malformed reference (no request is made).
            return self.registry_resolver("", None).resolve(reference).await;
        };
        let span = tracing::debug_span!(
            "pull_secret_resolve",
            image = %reference,
            namespace = %self.namespace
        );
        self.resolve_with(reference, &parsed).instrument(span).await
    }

    fn classify(&self, error: &Error) -> ResolveFailure {
        self.registry_resolver("", None).classify(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver whose API server is a closed port: any cluster read fails.
    fn offline() -> PullSecretResolver {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let config = KubernetesConfig {
            image_pull_secrets: vec!["regcred".into()],
            ..KubernetesConfig::default()
        };
        PullSecretResolver::builder(client, &config)
            .timeout(Duration::from_secs(2))
            .build()
    }

    #[tokio::test]
    async fn pinned_references_need_neither_cluster_nor_registry() {
        let digest = format!("sha256:{}", "c".repeat(64));
        let got = offline()
            .resolve(&format!("127.0.0.1:1/app:v1@{digest}"))
            .await
            .unwrap();
        assert_eq!(got, digest);
    }

    #[tokio::test]
    async fn malformed_references_fail_as_the_core_resolver_fails_them() {
        let resolver = offline();
        let error = resolver.resolve("Not A Reference!").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
        assert_eq!(resolver.classify(&error), ResolveFailure::NotFound);
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_unavailable_and_named() {
        let resolver = offline();
        let error = resolver.resolve("127.0.0.1:1/app:v1").await.unwrap_err();
        // A refused connection on loopback: at once, not a timeout.
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        assert!(
            error.to_string().contains("Kubernetes API server"),
            "{error}"
        );
        assert_eq!(
            resolver.classify(&error),
            ResolveFailure::Unreachable,
            "{error}"
        );
        assert!(format!("{resolver:?}").contains("regcred"));
    }

    #[test]
    fn reference_names_are_the_kubelets() {
        let r: Reference = "nginx".parse().unwrap();
        assert_eq!(
            format!("{}/{}", r.registry(), r.repository()),
            "docker.io/library/nginx"
        );
        let r: Reference = "index.docker.io/acme/app:v1".parse().unwrap();
        assert_eq!(
            format!("{}/{}", r.registry(), r.repository()),
            "docker.io/acme/app"
        );
        let r: Reference = "127.0.0.1:5000/mcp-test-server:v1".parse().unwrap();
        assert_eq!(
            format!("{}/{}", r.registry(), r.repository()),
            "127.0.0.1:5000/mcp-test-server"
        );
    }
}
