//! The crate's error type and the [`ErrorKind`] a caller matches on.
//!
//! Every fallible public function returns [`Error`]. Messages say what failed,
//! on which server or key, and what to do next; they never contain a secret
//! value (secrets are [`crate::SecretValue`], which cannot be formatted).

use std::time::Duration;

use crate::spec::ValidationError;

/// What kind of failure an [`Error`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named thing (server, instance, record, secret) does not exist.
    NotFound,
    /// The input was rejected; fix it and try again.
    Invalid,
    /// A concurrent writer won (version mismatch, stale lease token, name taken).
    Conflict,
    /// A dependency (runtime, registry, store, secret source) could not be reached
    /// or refused the operation for now; retrying later may succeed.
    Unavailable,
    /// The operation did not finish within its deadline.
    Timeout,
    /// The backend failed in a way that fits none of the other kinds.
    Backend,
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend library (bollard, kube, redb, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from mcp-lifecycle. Match on [`Error::kind`] rather than variants
/// when only the category matters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. `server "github"` or `instance github-3`.
        what: String,
    },
    /// A server spec failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An argument other than a spec was rejected.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A compare-and-swap write found a different version than expected.
    #[error("write to {key} conflicted: expected {expected}, found {found}; re-read and retry")]
    VersionConflict {
        /// The record key (`collection/key`).
        key: String,
        /// What the writer expected.
        expected: String,
        /// What the store held.
        found: String,
    },
    /// A write carried a lease token older than the newest one granted for its lease.
    #[error(
        "write under lease {lease} with token {token} rejected: token {current} has been granted since"
    )]
    Fenced {
        /// The lease key.
        lease: String,
        /// The token the writer held.
        token: u64,
        /// The newest token granted.
        current: u64,
    },
    /// The lease is held by another holder, or was lost.
    #[error("lease {lease} is held by {holder}")]
    LeaseHeld {
        /// The lease key.
        lease: String,
        /// The current holder.
        holder: String,
    },
    /// A dependency could not be reached or refused for now.
    #[error("{what} unavailable: {reason}")]
    Unavailable {
        /// What was unavailable (`docker engine`, `registry 127.0.0.1:5000`, `secret github/token`).
        what: String,
        /// Why, as the dependency said it (scrubbed of credentials).
        reason: String,
    },
    /// An operation ran past its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// A backend library failed.
    #[error("{backend} failed while {doing}: {source}")]
    Backend {
        /// Which backend (`docker`, `redb`, `kubernetes`, `fake`).
        backend: &'static str,
        /// What it was doing, including the server or instance.
        doing: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The [`crate::Lifecycle`] was shut down.
    #[error("the lifecycle manager has shut down")]
    ShutDown,
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Invalid(_) | Error::InvalidArgument { .. } => ErrorKind::Invalid,
            Error::VersionConflict { .. } | Error::Fenced { .. } | Error::LeaseHeld { .. } => {
                ErrorKind::Conflict
            }
            Error::Unavailable { .. } | Error::ShutDown => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Builds [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// Builds [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Unavailable`].
    pub fn unavailable(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unavailable {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Backend`].
    pub fn backend(
        backend: &'static str,
        doing: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            doing: doing.into(),
            source: source.into(),
        }
    }
}
