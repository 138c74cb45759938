//! How a registry failure becomes this crate's [`Error`], following the
//! [`ImageResolver`](crate::ImageResolver) contract: a missing repository or
//! tag is `NotFound`, refused credentials are `Invalid` (classified
//! `Unauthorized`), an unreachable or failing registry is `Unavailable`, a
//! slow one is `Timeout`.
//!
//! Messages are built from status codes and OCI error codes, never from
//! response bodies or headers; text from the HTTP stack is scrubbed, and every
//! credential the request carried is removed from the result.

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};

use crate::error::{Error, ErrorKind};
use crate::ports::ResolveFailure;
use crate::records::freshness::scrub_message;

/// The `what` of the error for an unparsable image reference; `classify`
/// recognises it.
pub(super) const INVALID_REFERENCE: &str = "image reference";

/// What was being resolved, for messages.
pub(super) struct Context<'a> {
    /// The reference as the caller wrote it.
    pub(super) reference: &'a str,
    /// The registry host the request went to.
    pub(super) registry: &'a str,
    /// Whether the request carried credentials.
    pub(super) with_credentials: bool,
    /// Whether the registry is reached over plain HTTP.
    pub(super) insecure: bool,
    /// Values that must not appear in a message.
    pub(super) secrets: &'a [String],
    /// The per-request timeout.
    pub(super) timeout: Duration,
}

impl Context<'_> {
    /// Removes every secret value from `text`.
    fn redact(&self, text: &str) -> String {
        let mut out = scrub_message(text);
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
        out
    }

    fn registry_what(&self) -> String {
        format!("registry {}", self.registry)
    }

    /// The registry refused the credentials (or their absence).
    pub(super) fn unauthorized(&self, status: &str) -> Error {
        let advice = if self.with_credentials {
            "the credentials were refused; check them (`docker login`, or the resolver's credentials)"
        } else {
            "no credentials were sent; log in with `docker login` or configure the resolver's credentials"
        };
        Error::invalid(
            format!("credentials for registry {}", self.registry),
            self.redact(&format!(
                "the registry answered {status} resolving {}: {advice}",
                self.reference
            )),
        )
    }

    pub(super) fn not_found(&self, detail: &str) -> Error {
        Error::not_found(self.redact(&format!(
            "image {} (registry {} answered {detail})",
            self.reference, self.registry
        )))
    }

    pub(super) fn unavailable(&self, reason: &str) -> Error {
        Error::unavailable(self.registry_what(), self.redact(reason))
    }

    pub(super) fn timeout(&self) -> Error {
        Error::Timeout {
            what: self.redact(&format!(
                "registry {} to resolve {}",
                self.registry, self.reference
            )),
            after: self.timeout,
        }
    }

    /// The registry answered something that breaks the distribution protocol.
    pub(super) fn protocol(&self, what: &str) -> Error {
        Error::backend(
            "registry",
            self.redact(&format!(
                "resolving {} at {}",
                self.reference, self.registry
            )),
            self.redact(what),
        )
    }

    /// The HTTP client could not be built (TLS setup, proxy settings).
    pub(super) fn client_setup(&self, error: &OciDistributionError) -> Error {
        Error::backend(
            "registry",
            format!("building the HTTP client for registry {}", self.registry),
            self.redact(&describe(error)),
        )
    }

    /// Maps an oci-client error.
    pub(super) fn map(&self, error: OciDistributionError) -> Error {
        match error {
            OciDistributionError::RequestError(e) => {
                if e.is_timeout() {
                    self.timeout()
                } else if e.is_connect() && !self.insecure {
                    self.unavailable(&format!(
                        "could not connect over HTTPS: {} (if the registry serves plain HTTP, name it with RegistryResolverBuilder::insecure_registry)",
                        describe(&e)
                    ))
                } else if e.is_connect() {
                    self.unavailable(&format!("could not connect: {}", describe(&e)))
                } else {
                    self.unavailable(&describe(&e))
                }
            }
            OciDistributionError::UnauthorizedError { .. } => self.unauthorized("401 Unauthorized"),
            OciDistributionError::AuthenticationFailure(_) => {
                self.unauthorized("a refusal from its token service")
            }
            OciDistributionError::RegistryError { envelope, .. } => self.envelope(&envelope),
            OciDistributionError::ServerError { code, .. } => self.status(code),
            OciDistributionError::IoError(e) => {
                self.unavailable(&format!("I/O error talking to the registry: {e}"))
            }
            other => self.protocol(&other.to_string()),
        }
    }

    fn status(&self, code: u16) -> Error {
        match code {
            401 => self.unauthorized("401 Unauthorized"),
            403 => self.unauthorized("403 Forbidden"),
            404 => self.not_found("404 Not Found"),
            429 => self.unavailable("the registry is rate limiting (429 Too Many Requests)"),
            _ => self.unavailable(&format!("the registry answered HTTP {code}")),
        }
    }

    fn envelope(&self, envelope: &OciEnvelope) -> Error {
        let codes: Vec<String> = envelope.errors.iter().map(|e| code_name(&e.code)).collect();
        let codes = codes.join(", ");
        let has = |pred: fn(&OciErrorCode) -> bool| envelope.errors.iter().any(|e| pred(&e.code));
        if has(|c| matches!(c, OciErrorCode::Unauthorized)) {
            self.unauthorized(&format!("401 ({codes})"))
        } else if has(|c| matches!(c, OciErrorCode::Denied)) {
            self.unauthorized(&format!("403 ({codes})"))
        } else if has(|c| {
            matches!(
                c,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
                    | OciErrorCode::NameInvalid
                    | OciErrorCode::TagInvalid
            )
        }) {
            self.not_found(&codes)
        } else if has(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
            self.unavailable(&format!("the registry is rate limiting ({codes})"))
        } else {
            self.unavailable(&format!("the registry refused the request ({codes})"))
        }
    }
}

/// An OCI error code as the registry spells it.
fn code_name(code: &OciErrorCode) -> String {
    match code {
        OciErrorCode::Other(other) => other.chars().take(64).collect(),
        known => serde_json::to_value(known)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{known:?}")),
    }
}

/// The failure category of an error `RegistryResolver::resolve` returned.
pub(super) fn classify(error: &Error) -> ResolveFailure {
    if let Error::InvalidArgument { what, .. } = error
        && what.starts_with(INVALID_REFERENCE)
    {
        // A malformed reference names nothing that could exist.
        return ResolveFailure::NotFound;
    }
    match error.kind() {
        ErrorKind::NotFound => ResolveFailure::NotFound,
        ErrorKind::Timeout => ResolveFailure::Timeout,
        ErrorKind::Invalid | ErrorKind::Conflict => ResolveFailure::Unauthorized,
        _ => ResolveFailure::Unreachable,
    }
}

/// An error and its sources, joined with `: `, each said once.
fn describe(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
