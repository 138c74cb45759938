//! [`RegistryResolver`]: the [`ImageResolver`] that asks an OCI registry
//! (feature `registry`).
//!
//! A resolution is what `docker pull` would do before fetching anything: a
//! `HEAD` on the manifest, accepting OCI and Docker image manifests and
//! indexes (manifest lists), answered with the `Docker-Content-Digest` the
//! registry serves for the tag now. It is built on
//! [oci-client](https://docs.rs/oci-client), which does the distribution
//! protocol: the `/v2/` challenge, anonymous, basic and bearer-token
//! authentication, and Docker Hub's naming (`nginx` is
//! `index.docker.io/library/nginx:latest`).
//!
//! - A reference pinned by digest (`repo@sha256:…`) resolves to that digest
//!   with no network call.
//! - Credentials: an explicit [`RegistryResolverBuilder::credentials`] for
//!   the registry, else the user's Docker config through `docker_credential`
//!   (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, including
//!   credential helpers), else anonymous.
//! - TLS is rustls (reqwest's, with the aws-lc-rs provider unless the host
//!   installed a process default) and the platform's trust store. Plain HTTP is used only for the
//!   registries named with [`RegistryResolverBuilder::insecure_registry`]
//!   (a loopback test registry, say); any other registry is reached over
//!   HTTPS or not at all.
//! - Every resolution, and every HTTP request in it, is bounded by
//!   [`RegistryResolverBuilder::timeout`].
//! - Errors follow the port's contract (missing repository or tag →
//!   `NotFound`, unreachable → `Unavailable`, slow → `Timeout`, refused
//!   credentials → `Invalid`, which [`ImageResolver::classify`] reports as
//!   [`ResolveFailure::Unauthorized`]), and never contain a credential or
//!   token.
//!
//! The resolver keeps no state between calls: each resolution reads the
//! credentials afresh and opens its own connection, so rotated credentials
//! are picked up at the next check. Deduplication and concurrency bounds
//! belong to the caller (the freshness controller resolves each distinct
//! reference once per cycle).

mod auth;
mod failure;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use secrecy::SecretString;
use tracing::Instrument as _;

use crate::error::{Error, Result};
use crate::ports::{ImageResolver, ResolveFailure};
use crate::records::freshness::scrub_message;
use crate::state::pinned_digest;

use auth::{Credential, normalize_registry};
use failure::{Context, INVALID_REFERENCE};

/// The default bound on one resolution and on each HTTP request in it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` of registry requests.
const USER_AGENT: &str = concat!("mcp-lifecycle/", env!("CARGO_PKG_VERSION"));

/// An [`ImageResolver`] that asks OCI registries (Docker Hub, GHCR, Quay,
/// Harbor, a CNCF Distribution registry, …) what a tag points to now.
///
/// Build one with [`RegistryResolver::builder`]:
///
/// ```no_run
/// # async fn demo() -> mcp_lifecycle::Result<()> {
/// use std::time::Duration;
/// use mcp_lifecycle::{ImageResolver, RegistryResolver};
///
/// let resolver = RegistryResolver::builder()
///     .insecure_registry("127.0.0.1:5000") // plain HTTP, for a loopback test registry
///     .timeout(Duration::from_secs(5))
///     .build();
/// let digest = resolver.resolve("127.0.0.1:5000/mcp-test-server:v1").await?;
/// assert!(digest.starts_with("sha256:"));
/// # Ok(())
/// # }
/// ```
///
/// Cheap to clone; clones share their configuration. See the
/// [module documentation](self) for the protocol, credentials and errors.
#[derive(Clone)]
pub struct RegistryResolver {
    insecure: Vec<String>,
    timeout: Duration,
    credentials: Arc<BTreeMap<String, Credential>>,
    docker_config: bool,
}

impl fmt::Debug for RegistryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryResolver")
            .field("insecure_registries", &self.insecure)
            .field("timeout", &self.timeout)
            .field(
                "credentials_for",
                &self.credentials.keys().collect::<Vec<_>>(),
            )
            .field("docker_config", &self.docker_config)
            .finish()
    }
}

/// Configures a [`RegistryResolver`]; from [`RegistryResolver::builder`].
#[derive(Debug, Clone)]
pub struct RegistryResolverBuilder {
    insecure: BTreeSet<String>,
    timeout: Duration,
    credentials: BTreeMap<String, Credential>,
    docker_config: bool,
}

impl Default for RegistryResolverBuilder {
    fn default() -> Self {
        RegistryResolverBuilder {
            insecure: BTreeSet::new(),
            timeout: DEFAULT_TIMEOUT,
            credentials: BTreeMap::new(),
            docker_config: true,
        }
    }
}

impl RegistryResolverBuilder {
    /// Reaches `registry` (`host` or `host:port`, as it appears in image
    /// references) over plain HTTP instead of HTTPS. Meant for loopback test
    /// registries; every registry not named here is reached over HTTPS only.
    pub fn insecure_registry(mut self, registry: impl Into<String>) -> Self {
        self.insecure.insert(normalize_registry(&registry.into()));
        self
    }

    /// Bounds each resolution, and each HTTP request in it (connect and
    /// reads), to `timeout`. Default [`DEFAULT_TIMEOUT`] (10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses `username` and `password` for `registry` (`host` or `host:port`;
    /// `docker.io` names Docker Hub) instead of the Docker config. The
    /// registry decides whether they are sent as HTTP basic authentication or
    /// exchanged for a bearer token.
    pub fn credentials(
        mut self,
        registry: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials.insert(
            normalize_registry(&registry.into()),
            Credential::new(username.into(), SecretString::from(password.into())),
        );
        self
    }

    /// Whether to read credentials from the user's Docker config for
    /// registries without explicit [`credentials`](Self::credentials).
    /// Default `true`; with `false`, such registries are accessed anonymously.
    pub fn docker_config(mut self, enabled: bool) -> Self {
        self.docker_config = enabled;
        self
    }

    /// The resolver.
    pub fn build(self) -> RegistryResolver {
        RegistryResolver {
            insecure: self.insecure.into_iter().collect(),
            timeout: self.timeout,
            credentials: Arc::new(self.credentials),
            docker_config: self.docker_config,
        }
    }
}

impl RegistryResolver {
    /// A builder with the defaults: HTTPS only, a 10 s timeout, credentials
    /// from the Docker config.
    pub fn builder() -> RegistryResolverBuilder {
        RegistryResolverBuilder::default()
    }

    /// The bound on one resolution and on each HTTP request in it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn client_config(&self) -> ClientConfig {
        let protocol = if self.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.insecure.clone())
        };
        ClientConfig {
            protocol,
            // Only manifests' digests are read; nothing is pulled.
            platform_resolver: None,
            read_timeout: Some(self.timeout),
            connect_timeout: Some(self.timeout),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        }
    }

    /// One resolution against the registry, without the overall deadline.
    async fn resolve_at_registry(&self, reference: &Reference, written: &str) -> Result<String> {
        let registry = reference.resolve_registry();
        let auth = auth::credentials_for(reference, &self.credentials, self.docker_config).await;
        let secrets = auth.secrets();
        let ctx = Context {
            reference: written,
            registry,
            with_credentials: !auth.is_anonymous(),
            insecure: self.insecure.iter().any(|r| r == registry),
            secrets: &secrets,
            timeout: self.timeout,
        };
        tracing::debug!(auth = ?auth.source, "resolving at the registry");
        let client = Client::try_from(self.client_config()).map_err(|e| ctx.client_setup(&e))?;
        let digest = client
            .fetch_manifest_digest(reference, &auth.registry_auth)
            .await
            .map_err(|e| ctx.map(e))?;
        match normalize_digest(&digest) {
            Some(digest) => {
                tracing::debug!(%digest, "resolved");
                Ok(digest)
            }
            None => Err(ctx.protocol(&format!(
                "the registry returned a malformed digest {:?}",
                digest.chars().take(140).collect::<String>()
            ))),
        }
    }
}

/// `raw` as `algorithm:hex` in lowercase, if it is a sha256 or sha512 digest.
fn normalize_digest(raw: &str) -> Option<String> {
    let digest = raw.trim().to_ascii_lowercase();
    // The one definition of a well-formed digest is `pinned_digest`'s.
    pinned_digest(&format!("image@{digest}"))?;
    Some(digest)
}

#[async_trait]
impl ImageResolver for RegistryResolver {
    async fn resolve(&self, reference: &str) -> Result<String> {
        if let Some(digest) = pinned_digest(reference) {
            tracing::trace!(image = %reference, "pinned by digest; no registry request");
            return Ok(digest.to_owned());
        }
        let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            Error::invalid(
                format!("{INVALID_REFERENCE} {:?}", scrub_message(reference)),
                e.to_string(),
            )
        })?;
        let registry = parsed.resolve_registry().to_owned();
        let span = tracing::debug_span!("registry_resolve", image = %reference, %registry);
        match tokio::time::timeout(
            self.timeout,
            self.resolve_at_registry(&parsed, reference)
                .instrument(span),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                what: format!("registry {registry} to resolve {reference}"),
                after: self.timeout,
            }),
        }
    }

    fn classify(&self, error: &Error) -> ResolveFailure {
        failure::classify(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_and_lowercased() {
        let hex = "A".repeat(64);
        assert_eq!(
            normalize_digest(&format!("sha256:{hex}")),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(normalize_digest("sha256:abc"), None);
        assert_eq!(normalize_digest("md5:0123"), None);
        assert_eq!(normalize_digest(""), None);
    }

    #[test]
    fn docker_hub_references_are_normalized_as_oci_client_does() {
        let r: Reference = "nginx".parse().unwrap();
        assert_eq!(r.resolve_registry(), "index.docker.io");
        assert_eq!(r.repository(), "library/nginx");
        assert_eq!(r.tag(), Some("latest"));
        let r: Reference = "docker.io/acme/tool:1.2".parse().unwrap();
        assert_eq!(r.resolve_registry(), "index.docker.io");
        assert_eq!(r.repository(), "acme/tool");
        let r: Reference = "127.0.0.1:5000/mcp-test-server:v1".parse().unwrap();
        assert_eq!(r.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "mcp-test-server");
    }

    #[test]
    fn insecure_registries_get_http_and_others_https() {
        let resolver = RegistryResolver::builder()
            .insecure_registry("127.0.0.1:5000")
            .insecure_registry("http://LocalHost:5001/")
            .build();
        let ClientProtocol::HttpsExcept(except) = resolver.client_config().protocol else {
            panic!("expected HttpsExcept");
        };
        assert_eq!(except, vec!["127.0.0.1:5000", "localhost:5001"]);
        let plain = RegistryResolver::builder().build();
        assert_eq!(plain.client_config().protocol, ClientProtocol::Https);
    }

    #[test]
    fn debug_shows_no_password() {
        let resolver = RegistryResolver::builder()
            .credentials("registry.example", "alice", "canary-pass-123")
            .build();
        let shown = format!("{resolver:?}");
        assert!(shown.contains("registry.example"));
        assert!(!shown.contains("canary-pass-123"));
    }

    #[tokio::test]
    async fn pinned_references_need_no_registry() {
        let digest = format!("sha256:{}", "b".repeat(64));
        // Port 1 on loopback: any request would fail.
        let resolver = RegistryResolver::builder().build();
        let got = resolver
            .resolve(&format!("127.0.0.1:1/app:v1@{digest}"))
            .await
            .unwrap();
        assert_eq!(got, digest);
    }

    #[tokio::test]
    async fn malformed_references_are_invalid_and_classified_not_found() {
        let resolver = RegistryResolver::builder().docker_config(false).build();
        let error = resolver.resolve("Not A Reference!").await.unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Invalid);
        assert_eq!(resolver.classify(&error), ResolveFailure::NotFound);
    }
}
