//! The [`SecretSource`] port, and two simple sources: the host's environment
//! and a fixed map.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::secret::SecretValue;
use crate::spec::SecretRef;

/// Resolves secret references at each start.
///
/// # Contract
///
/// A missing secret or key is `NotFound`; a source that cannot be reached is
/// `Unavailable`. Errors name the reference, never a value. A failure is fatal
/// for that start attempt only: the instance is marked failed and retried with
/// backoff.
#[async_trait]
pub trait SecretSource: Send + Sync + 'static {
    /// The value of `reference`.
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue>;
}

/// Secrets from a fixed map, for tests and for hosts that resolved them already.
#[derive(Debug, Clone, Default)]
pub struct StaticSecretSource {
    values: BTreeMap<SecretRef, SecretValue>,
}

impl StaticSecretSource {
    /// An empty source: every reference is `NotFound`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value.
    pub fn with(mut self, reference: SecretRef, value: impl Into<String>) -> Self {
        self.values.insert(reference, SecretValue::new(value));
        self
    }
}

#[async_trait]
impl SecretSource for StaticSecretSource {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue> {
        self.values
            .get(reference)
            .cloned()
            .ok_or_else(|| Error::not_found(reference.to_string()))
    }
}

/// Secrets from the host's own environment: `SecretRef { name, key }` reads
/// the variable `<PREFIX><NAME>_<KEY>`, upper-cased with `-` and `.` as `_`.
#[derive(Debug, Clone)]
pub struct EnvSecretSource {
    prefix: String,
}

impl EnvSecretSource {
    /// Reads variables that start with `prefix` (e.g. `"MCP_SECRET_"`).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        EnvSecretSource {
            prefix: prefix.into(),
        }
    }

    /// The variable name a reference maps to.
    pub fn variable_for(&self, reference: &SecretRef) -> String {
        let norm = |s: &str| s.to_ascii_uppercase().replace(['-', '.'], "_");
        format!(
            "{}{}_{}",
            self.prefix,
            norm(&reference.name),
            norm(&reference.key)
        )
    }
}

#[async_trait]
impl SecretSource for EnvSecretSource {
    async fn resolve(&self, reference: &SecretRef) -> Result<SecretValue> {
        let var = self.variable_for(reference);
        std::env::var(&var)
            .map(SecretValue::new)
            .map_err(|_| Error::not_found(format!("{reference} (environment variable {var})")))
    }
}
