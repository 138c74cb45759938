//! The [`ImageResolver`] port: an image reference to the digest a pull would
//! get now.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Why a resolution failed, for freshness bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveFailure {
    /// The registry could not be reached.
    Unreachable,
    /// The registry refused our credentials.
    Unauthorized,
    /// The repository or tag does not exist.
    NotFound,
    /// The registry did not answer in time.
    Timeout,
    /// This resolver cannot resolve where it runs (for example the engine
    /// does not offer the endpoint it asks); configure another resolver.
    Unsupported,
}

/// The source of an [`crate::Error::Backend`] a resolver returns when it
/// cannot resolve on this runtime at all (not a failure of one reference):
/// [`ImageResolver::classify`] maps it to [`ResolveFailure::Unsupported`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{resolver} cannot resolve image digests here: {reason}")]
pub struct ResolverUnsupported {
    /// Which resolver (`docker distribution endpoint`).
    pub resolver: String,
    /// Why, and what to use instead.
    pub reason: String,
}

/// Resolves image references to digests.
///
/// # Contract
///
/// `resolve` returns the manifest (or index) digest, `sha256:<64 hex>`, that a
/// pull of `reference` would fetch now. A reference already pinned by digest
/// resolves to that digest without a network call. A missing repository or
/// tag is `NotFound`; an unreachable registry is `Unavailable`; a slow one is
/// `Timeout`. [`ImageResolver::classify`] maps an error to a
/// [`ResolveFailure`].
#[async_trait]
pub trait ImageResolver: Send + Sync + 'static {
    /// The digest a pull of `reference` would get now.
    async fn resolve(&self, reference: &str) -> Result<String>;

    /// The failure category of an error returned by `resolve`.
    fn classify(&self, error: &crate::Error) -> ResolveFailure {
        if is_unsupported(error) {
            return ResolveFailure::Unsupported;
        }
        match error.kind() {
            crate::ErrorKind::NotFound => ResolveFailure::NotFound,
            crate::ErrorKind::Timeout => ResolveFailure::Timeout,
            crate::ErrorKind::Conflict | crate::ErrorKind::Invalid => ResolveFailure::Unauthorized,
            _ => ResolveFailure::Unreachable,
        }
    }
}

/// Whether `error` is a resolver saying it cannot work here
/// ([`ResolverUnsupported`] as a backend error's source).
pub fn is_unsupported(error: &crate::Error) -> bool {
    matches!(error, crate::Error::Backend { source, .. }
        if source.downcast_ref::<ResolverUnsupported>().is_some())
}
