//! Which credentials a registry request carries: an explicit override from the
//! builder, else the user's Docker config (`docker_credential`), else none.
//!
//! Credentials never reach a log line, an error message or `Debug` output:
//! passwords are [`SecretString`]s here, and [`Auth::secrets`] lists the
//! values error messages are scrubbed of.

use std::collections::BTreeMap;
use std::fmt;

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use secrecy::{ExposeSecret, SecretString};

/// The Docker Hub host oci-client talks to (`Reference::resolve_registry`).
const DOCKER_HUB: &str = "index.docker.io";
/// The key `docker login` stores Docker Hub credentials under.
const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A username and password for one registry.
#[derive(Clone)]
pub(super) struct Credential {
    username: String,
    password: SecretString,
}

impl Credential {
    pub(super) fn new(username: String, password: SecretString) -> Self {
        Credential { username, password }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Where a request's credentials came from, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthSource {
    /// `RegistryResolverBuilder::credentials`.
    Explicit,
    /// The Docker config (`~/.docker/config.json`, `DOCKER_CONFIG`, helpers).
    DockerConfig,
    /// No credentials: anonymous.
    Anonymous,
}

/// The credentials for one resolution.
pub(super) struct Auth {
    /// What oci-client sends (basic, or the start of a bearer-token exchange).
    pub(super) registry_auth: RegistryAuth,
    /// Where it came from.
    pub(super) source: AuthSource,
}

impl Auth {
    fn anonymous() -> Self {
        Auth {
            registry_auth: RegistryAuth::Anonymous,
            source: AuthSource::Anonymous,
        }
    }

    /// The secret values an error message must not contain.
    pub(super) fn secrets(&self) -> Vec<String> {
        match &self.registry_auth {
            RegistryAuth::Anonymous => Vec::new(),
            RegistryAuth::Basic(_, password) => vec![password.clone()],
            RegistryAuth::Bearer(token) => vec![token.clone()],
        }
    }

    /// Whether credentials are sent.
    pub(super) fn is_anonymous(&self) -> bool {
        matches!(self.registry_auth, RegistryAuth::Anonymous)
    }
}

/// A registry name as the builder and lookups compare it: scheme and path
/// dropped, lowercase, Docker Hub's aliases folded into the host oci-client
/// uses.
pub(super) fn normalize_registry(registry: &str) -> String {
    let trimmed = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    let host = trimmed.split('/').next().unwrap_or(trimmed);
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

/// The credentials for `reference`: an explicit override for its registry,
/// else the Docker config's (if `docker_config`), else anonymous.
pub(super) async fn credentials_for(
    reference: &Reference,
    overrides: &BTreeMap<String, Credential>,
    docker_config: bool,
) -> Auth {
    let registry = normalize_registry(reference.resolve_registry());
    if let Some(credential) = overrides.get(&registry) {
        return Auth {
            registry_auth: RegistryAuth::Basic(
                credential.username.clone(),
                credential.password.expose_secret().to_owned(),
            ),
            source: AuthSource::Explicit,
        };
    }
    if !docker_config {
        return Auth::anonymous();
    }
    let lookup = registry.clone();
    // Reading the config may run a credential helper: keep it off the runtime.
    match tokio::task::spawn_blocking(move || from_docker_config(&lookup)).await {
        Ok(Some(auth)) => auth,
        Ok(None) => Auth::anonymous(),
        Err(error) => {
            tracing::warn!(%registry, %error, "Docker credential lookup did not finish; resolving anonymously");
            Auth::anonymous()
        }
    }
}

/// Looks `registry` up in the Docker config. Docker Hub is stored under its
/// legacy URL key; other registries under their host.
fn from_docker_config(registry: &str) -> Option<Auth> {
    let keys: &[&str] = if registry == DOCKER_HUB {
        &[DOCKER_HUB_CONFIG_KEY, DOCKER_HUB]
    } else {
        &[registry]
    };
    for key in keys {
        match docker_credential::get_credential(key) {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                tracing::debug!(%registry, "using credentials from the Docker config");
                return Some(Auth {
                    registry_auth: RegistryAuth::Basic(username, password),
                    source: AuthSource::DockerConfig,
                });
            }
            Ok(DockerCredential::IdentityToken(_)) => {
                // An identity token is an OAuth refresh token, which oci-client
                // cannot exchange; sending it as a bearer token would be wrong.
                tracing::debug!(
                    %registry,
                    "the Docker config holds an identity token, which is not supported; resolving anonymously"
                );
                return None;
            }
            Err(
                CredentialRetrievalError::NoCredentialConfigured
                | CredentialRetrievalError::ConfigNotFound,
            ) => continue,
            Err(error) => {
                // Not the error's Display: a failing helper's output is in it.
                tracing::warn!(
                    %registry,
                    reason = lookup_failure(&error),
                    "could not read Docker credentials; resolving anonymously"
                );
                return None;
            }
        }
    }
    tracing::trace!(%registry, "no Docker credentials configured; resolving anonymously");
    None
}

/// A description of a credential lookup failure without helper output.
fn lookup_failure(error: &CredentialRetrievalError) -> &'static str {
    match error {
        CredentialRetrievalError::HelperCommunicationError => "could not run the credential helper",
        CredentialRetrievalError::MalformedHelperResponse => {
            "the credential helper's answer was malformed"
        }
        CredentialRetrievalError::HelperFailure { .. } => "the credential helper failed",
        CredentialRetrievalError::CredentialDecodingError => {
            "the config's auth entry could not be decoded"
        }
        CredentialRetrievalError::CredentialMismatchError => {
            "the config's auth entry disagrees with its username and password"
        }
        CredentialRetrievalError::NoCredentialConfigured => "no credential configured",
        CredentialRetrievalError::ConfigNotFound => "no Docker config found",
        CredentialRetrievalError::ConfigReadError => "the Docker config could not be read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_normalized() {
        assert_eq!(normalize_registry("docker.io"), "index.docker.io");
        assert_eq!(
            normalize_registry("registry-1.docker.io"),
            "index.docker.io"
        );
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("http://Quay.IO"), "quay.io");
    }

    #[test]
    fn credential_debug_hides_the_password() {
        let c = Credential::new("alice".into(), SecretString::from("hunter2"));
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
    }
}
