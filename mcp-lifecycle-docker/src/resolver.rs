//! [`DockerDistributionResolver`]: the [`ImageResolver`] port through the
//! engine's distribution endpoint (`GET /distribution/{name}/json`).
//!
//! This module owns asking the engine which manifest digest a pull would get
//! now, and classifying its failures into [`ResolveFailure`] categories. The
//! engine contacts the registry itself, so its mirrors, proxies and
//! certificates apply; credentials for the registry are read from the local
//! Docker config like pulls. It must not pull anything.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use mcp_lifecycle::ports::{ImageResolver, ResolveFailure};
use mcp_lifecycle::{Error, ErrorKind, Result};

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
#[derive(Clone)]
pub struct DockerDistributionResolver {
    docker: Docker,
    timeout: Duration,
    credentials: bool,
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
        Ok(Self::new(client::connect_default().await?))
    }

    /// A resolver on an existing client (for example
    /// [`DockerOrchestrator::docker`](crate::DockerOrchestrator::docker)).
    pub fn new(docker: Docker) -> Self {
        DockerDistributionResolver {
            docker,
            timeout: DEFAULT_TIMEOUT,
            credentials: true,
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
            Err(e) => Err(classify_error(&reference, self.timeout, e)),
        }
    }

    fn classify(&self, error: &Error) -> ResolveFailure {
        match error.kind() {
            ErrorKind::NotFound => ResolveFailure::NotFound,
            ErrorKind::Timeout => ResolveFailure::Timeout,
            ErrorKind::Invalid | ErrorKind::Conflict => ResolveFailure::Unauthorized,
            _ => ResolveFailure::Unreachable,
        }
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
