//! [`DockerDistributionResolver`]: the [`ImageResolver`] port through the
//! engine's distribution endpoint (`GET /distribution/{name}/json`).
//!
//! This module owns asking the engine which manifest digest a pull would get
//! now, and classifying its failures into [`ResolveFailure`] categories. The
//! engine contacts the registry itself, so its mirrors, proxies and
//! certificates apply; credentials for the registry are read from the local
//! Docker config like pulls. It must not pull anything.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use mcp_lifecycle::ports::{ImageResolver, ResolveFailure, ResolverUnsupported, is_unsupported};
use mcp_lifecycle::{Error, ErrorKind, Result};
use tokio::sync::OnceCell;

use crate::client::{self, BACKEND, is_unreachable, status_of};
use crate::credentials;
use crate::reference::{ImageRef, is_sha256_digest, pinned_digest};

/// Default time one resolution may take.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves image references to digests by asking the engine, which asks the
/// registry with its own mirrors and network settings.
///
/// A digest-pinned reference resolves to its digest without any call.
/// Failures map to error kinds the way [`ImageResolver::classify`] expects:
/// a missing repository or tag is `NotFound`, refused credentials are
/// `Invalid` (classified [`ResolveFailure::Unauthorized`]), an unreachable
/// engine or registry is `Unavailable`, and a slow one is `Timeout`.
///
/// Podman's Docker-compatible API has no distribution endpoint: there every
/// resolution fails as [`ResolveFailure::Unsupported`] (a
/// [`ResolverUnsupported`] backend error saying to use
/// `mcp_lifecycle::RegistryResolver`), not as a missing image.
#[derive(Clone)]
pub struct DockerDistributionResolver {
    docker: Docker,
    timeout: Duration,
    credentials: bool,
    /// The engine's name, asked once when an answer needs it.
    engine: Arc<OnceCell<String>>,
}

impl fmt::Debug for DockerDistributionResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerDistributionResolver")
            .field("timeout", &self.timeout)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl DockerDistributionResolver {
    /// Connects with bollard's defaults (honouring `DOCKER_HOST`) and
    /// negotiates the API version.
    pub async fn connect() -> Result<Self> {
        Ok(Self::new(client::connect_default().await?.0))
    }

    /// A resolver on an existing client (for example
    /// [`DockerOrchestrator::docker`](crate::DockerOrchestrator::docker)).
    pub fn new(docker: Docker) -> Self {
        DockerDistributionResolver {
            docker,
            timeout: DEFAULT_TIMEOUT,
            credentials: true,
            engine: Arc::new(OnceCell::new()),
        }
    }

    /// How long one resolution may take before it is `Timeout`. Default: 30 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether to send registry credentials from the local Docker config.
    /// Default: `true`.
    pub fn with_credentials(mut self, enabled: bool) -> Self {
        self.credentials = enabled;
        self
    }
}

#[async_trait]
impl ImageResolver for DockerDistributionResolver {
    async fn resolve(&self, reference: &str) -> Result<String> {
        if let Some(digest) = pinned_digest(reference) {
            return Ok(digest.to_owned());
        }
        let reference = ImageRef::pull_reference(reference);
        let credentials = if self.credentials {
            credentials::for_image(&reference).await
        } else {
            None
        };
        let asked = self.docker.inspect_registry_image(&reference, credentials);
        let answer = match tokio::time::timeout(self.timeout, asked).await {
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("the registry of {reference} (through the docker engine)"),
                    after: self.timeout,
                });
            }
            Ok(answer) => answer,
        };
        match answer {
            Ok(inspect) => match inspect.descriptor.digest {
                Some(digest) if is_sha256_digest(&digest) => {
                    tracing::debug!(image = %reference, %digest, "resolved image");
                    Ok(digest)
                }
                other => Err(Error::backend(
                    BACKEND,
                    format!("resolving {reference}"),
                    format!("the engine answered an unexpected digest {other:?}"),
                )),
            },
            Err(e) if status_of(&e) == Some(404) && self.engine_lacks_distribution().await => {
                Err(Error::backend(
                    BACKEND,
                    format!("resolving {reference}"),
                    ResolverUnsupported {
                        resolver: "the docker distribution endpoint".to_owned(),
                        reason: format!(
                            "the engine ({}) does not offer GET /distribution/{{name}}/json; \
                             use mcp_lifecycle::RegistryResolver, which asks the registry itself",
                            self.engine_name().await
                        ),
                    },
                ))
            }
            Err(e) => Err(classify_error(&reference, self.timeout, e)),
        }
    }

    fn classify(&self, error: &Error) -> ResolveFailure {
        if is_unsupported(error) {
            return ResolveFailure::Unsupported;
        }
        match error.kind() {
            ErrorKind::NotFound => ResolveFailure::NotFound,
            ErrorKind::Timeout => ResolveFailure::Timeout,
            ErrorKind::Invalid | ErrorKind::Conflict => ResolveFailure::Unauthorized,
            _ => ResolveFailure::Unreachable,
        }
    }
}

impl DockerDistributionResolver {
    /// The engine's name and version (`Docker Engine - Community 20.10.24`,
    /// `Podman Engine 4.3.1`), asked once; `unknown engine` if it won't say.
    async fn engine_name(&self) -> String {
        self.engine
            .get_or_init(|| async { client::engine_name(&self.docker).await })
            .await
            .clone()
    }

    /// Whether the engine is one without the distribution endpoint (Podman).
    async fn engine_lacks_distribution(&self) -> bool {
        client::is_podman(&self.engine_name().await)
    }
}

/// The category of a distribution-inspect failure, from the engine's status
/// code and the registry's words it passes on.
fn classify_error(reference: &str, timeout: Duration, e: BollardError) -> Error {
    let registry = ImageRef::parse(reference).domain;
    if is_unreachable(&e) {
        return Error::unavailable(client::ENGINE, format!("resolving {reference}: {e}"));
    }
    if matches!(e, BollardError::RequestTimeoutError) {
        return Error::Timeout {
            what: format!("the docker engine while resolving {reference}"),
            after: client::REQUEST_TIMEOUT,
        };
    }
    let message = e.to_string();
    let lower = message.to_lowercase();
    let status = status_of(&e);
    let says = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if matches!(status, Some(401 | 403))
        || says(&[
            "unauthorized",
            "authentication required",
            "denied",
            "forbidden",
            "incorrect username or password",
        ])
    {
        return Error::invalid(
            format!("credentials for registry {registry}"),
            format!("resolving {reference} was refused: {message}"),
        );
    }
    if says(&["timeout", "timed out", "deadline exceeded", "i/o timeout"]) {
        return Error::Timeout {
            what: format!("registry {registry} while resolving {reference} ({message})"),
            after: timeout,
        };
    }
    if says(&[
        "no such host",
        "connection refused",
        "dial tcp",
        "network is unreachable",
        "server misbehaving",
        "tls:",
        "x509",
        "http: server gave http response",
    ]) {
        return Error::unavailable(
            format!("registry {registry}"),
            format!("resolving {reference}: {message}"),
        );
    }
    if status == Some(404) || says(&["manifest unknown", "not found", "name unknown", "no such"]) {
        return Error::not_found(format!("image {reference} ({message})"));
    }
    Error::backend(BACKEND, format!("resolving {reference}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    fn server_error(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn classifies_registry_answers() {
        let r = "127.0.0.1:5000/x:v1";
        let not_found = classify_error(r, T, server_error(404, "manifest unknown"));
        assert_eq!(not_found.kind(), ErrorKind::NotFound);
        let refused = classify_error(
            r,
            T,
            server_error(
                500,
                "errors: denied: requested access to the resource is denied",
            ),
        );
        assert_eq!(refused.kind(), ErrorKind::Invalid);
        let unreachable = classify_error(
            r,
            T,
            server_error(
                500,
                "Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            ),
        );
        assert_eq!(unreachable.kind(), ErrorKind::Unavailable);
        let slow = classify_error(r, T, server_error(500, "context deadline exceeded"));
        assert_eq!(slow.kind(), ErrorKind::Timeout);
    }
}
