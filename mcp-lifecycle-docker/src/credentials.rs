//! Registry credentials for pulls and distribution lookups, read from the
//! Docker config (`$DOCKER_CONFIG/config.json`, credential helpers and
//! stores included) and, failing that, Podman's `auth.json`.
//!
//! This module owns the lookup and its conversion to bollard's
//! [`DockerCredentials`]. It must never log, format or return a credential
//! in an error; it logs only which registry had none.

use bollard::auth::DockerCredentials;
use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::reference::ImageRef;

/// Credentials for the registry of `reference`, or `None` to pull
/// anonymously (no config, no entry, or a helper that failed). Runs the
/// lookup (which may start a credential helper process) off the async runtime.
pub(crate) async fn for_image(reference: &str) -> Option<DockerCredentials> {
    let parsed = ImageRef::parse(reference);
    let key = parsed.credential_key();
    let domain = parsed.domain.clone();
    let lookup_key = key.clone();
    let found = tokio::task::spawn_blocking(move || lookup(&lookup_key))
        .await
        .ok()
        .flatten()?;
    let credentials = convert(found, key);
    tracing::debug!(registry = %domain, "using registry credentials from the local config");
    Some(credentials)
}

/// bollard's form of a credential for the registry stored under `key`.
fn convert(found: DockerCredential, key: String) -> DockerCredentials {
    match found {
        DockerCredential::IdentityToken(token) => DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(key),
            ..DockerCredentials::default()
        },
        DockerCredential::UsernamePassword(username, password) => DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(key),
            ..DockerCredentials::default()
        },
    }
}

/// Docker's config first, then Podman's auth file.
fn lookup(key: &str) -> Option<DockerCredential> {
    match docker_credential::get_credential(key) {
        Ok(found) => return Some(found),
        Err(e) => note(key, "docker config", &e),
    }
    match docker_credential::get_podman_credential(key) {
        Ok(found) => Some(found),
        Err(e) => {
            note(key, "podman auth file", &e);
            None
        }
    }
}

fn note(key: &str, source: &str, e: &CredentialRetrievalError) {
    match e {
        CredentialRetrievalError::NoCredentialConfigured
        | CredentialRetrievalError::ConfigNotFound
        | CredentialRetrievalError::ConfigReadError => {
            tracing::trace!(registry = key, source, "no registry credentials configured");
        }
        // A helper's output may hold a secret: log only the kind of failure.
        CredentialRetrievalError::HelperFailure { helper, .. } => {
            tracing::warn!(registry = key, source, helper = %helper,
                "credential helper failed; pulling anonymously");
        }
        _ => {
            tracing::warn!(registry = key, source, error = %kind_of(e),
                "reading registry credentials failed; pulling anonymously");
        }
    }
}

fn kind_of(e: &CredentialRetrievalError) -> &'static str {
    match e {
        CredentialRetrievalError::HelperCommunicationError => "helper communication error",
        CredentialRetrievalError::MalformedHelperResponse => "malformed helper response",
        CredentialRetrievalError::CredentialDecodingError => "credential decoding error",
        CredentialRetrievalError::CredentialMismatchError => "credential mismatch",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_entries_become_bollard_credentials_for_the_image_registry() {
        // "user:secret" in base64.
        let config = r#"{"auths": {
            "127.0.0.1:5000": {"auth": "dXNlcjpzZWNyZXQ="},
            "https://index.docker.io/v1/": {"identitytoken": "tok"}
        }}"#;
        let key = ImageRef::parse("127.0.0.1:5000/app:1").credential_key();
        let found = docker_credential::get_credential_from_reader(config.as_bytes(), &key).unwrap();
        let converted = convert(found, key);
        assert_eq!(converted.username.as_deref(), Some("user"));
        assert_eq!(converted.password.as_deref(), Some("secret"));
        assert_eq!(converted.serveraddress.as_deref(), Some("127.0.0.1:5000"));

        let key = ImageRef::parse("library/nginx").credential_key();
        let found = docker_credential::get_credential_from_reader(config.as_bytes(), &key).unwrap();
        let converted = convert(found, key);
        assert_eq!(converted.identitytoken.as_deref(), Some("tok"));
        assert_eq!(
            converted.serveraddress.as_deref(),
            Some("https://index.docker.io/v1/")
        );
    }
}
