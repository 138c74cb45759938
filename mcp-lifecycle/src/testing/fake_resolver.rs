//! [`FakeResolver`]: an in-memory [`ImageResolver`] over the shared
//! [`ImageCatalog`], with per-reference failure injection, a registry request
//! counter and added latency.
//!
//! This module owns the fake registry's answers only. It must not reach a
//! real registry or the network, nor hold its lock across an `.await`. The
//! catalog is the one the [`FakeOrchestrator`](super::fake_orchestrator::FakeOrchestrator)
//! pulls from, so a test that pushes a new digest changes what both see.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::ports::{ImageResolver, ResolveFailure};

#[doc(no_inline)]
pub use super::fake_orchestrator::{ImageCatalog, fake_digest, pinned_digest};

/// How long an injected [`ResolveFailure::Timeout`] claims to have waited.
const INJECTED_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    failures: BTreeMap<String, ResolveFailure>,
    requests: BTreeMap<String, u64>,
    total_requests: u64,
    latency: Duration,
}

/// An [`ImageResolver`] answering from an [`ImageCatalog`].
///
/// Cheap to clone; clones share state. Behaviour:
/// - A reference pinned by digest resolves to its digest at once: no registry
///   request is counted, and neither latency nor injected failures apply.
/// - Any other reference is a registry request: it is counted, delayed by the
///   latency (`tokio::time::sleep`), fails as injected with
///   [`fail_with`](Self::fail_with) if so, and otherwise answers the
///   catalog's digest, or `NotFound` if the catalog has no such reference.
///
/// Injected failures produce errors that the default
/// [`ImageResolver::classify`] maps back to the injected category:
/// `Unreachable` → `Unavailable`, `Unauthorized` → `Invalid`, `NotFound` →
/// `NotFound`, `Timeout` → `Timeout`.
#[derive(Clone)]
pub struct FakeResolver {
    catalog: ImageCatalog,
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeResolver {
    /// A resolver answering from `catalog` (share it with the fake orchestrator).
    pub fn new(catalog: ImageCatalog) -> Self {
        FakeResolver {
            catalog,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The catalog this resolver answers from (a shared handle).
    pub fn catalog(&self) -> ImageCatalog {
        self.catalog.clone()
    }

    /// Makes every registry request for exactly `reference` fail as `failure`
    /// until [`clear_failure`](Self::clear_failure). Has no effect on pinned
    /// references, which never reach the registry.
    pub fn fail_with(&self, reference: impl Into<String>, failure: ResolveFailure) {
        lock(&self.state).failures.insert(reference.into(), failure);
    }

    /// Stops failing requests for `reference`.
    pub fn clear_failure(&self, reference: &str) {
        lock(&self.state).failures.remove(reference);
    }

    /// Stops every injected failure.
    pub fn clear_failures(&self) {
        lock(&self.state).failures.clear();
    }

    /// Delays every registry request by `latency`; `Duration::ZERO` turns it off.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Registry requests made so far (failed ones included, pinned references excluded).
    pub fn requests(&self) -> u64 {
        lock(&self.state).total_requests
    }

    /// Registry requests made so far for exactly `reference`.
    pub fn requests_for(&self, reference: &str) -> u64 {
        lock(&self.state)
            .requests
            .get(reference)
            .copied()
            .unwrap_or(0)
    }

    /// Sets the request counters to zero.
    pub fn reset_requests(&self) {
        let mut state = lock(&self.state);
        state.requests.clear();
        state.total_requests = 0;
    }
}

impl fmt::Debug for FakeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("FakeResolver")
            .field("catalog", &self.catalog)
            .field("failures", &state.failures)
            .field("requests", &state.total_requests)
            .field("latency", &state.latency)
            .finish()
    }
}

fn injected(reference: &str, failure: ResolveFailure) -> Error {
    let registry = format!("registry for {reference}");
    match failure {
        ResolveFailure::Unreachable => {
            Error::unavailable(registry, "injected failure: connection refused")
        }
        ResolveFailure::Unauthorized => Error::invalid(
            format!("credentials for {registry}"),
            "injected failure: 401 Unauthorized",
        ),
        ResolveFailure::NotFound => Error::not_found(format!(
            "image {reference:?} (injected failure: manifest unknown)"
        )),
        ResolveFailure::Timeout => Error::Timeout {
            what: format!("{registry} (injected failure)"),
            after: INJECTED_TIMEOUT,
        },
        ResolveFailure::Unsupported => Error::backend(
            "fake",
            format!("resolving {reference}"),
            crate::ports::ResolverUnsupported {
                resolver: "fake resolver".into(),
                reason: "injected failure".into(),
            },
        ),
    }
}

#[async_trait]
impl ImageResolver for FakeResolver {
    async fn resolve(&self, reference: &str) -> Result<String> {
        if let Some(digest) = pinned_digest(reference) {
            return Ok(digest.to_owned());
        }
        let (failure, latency) = {
            let mut state = lock(&self.state);
            state.total_requests = state.total_requests.saturating_add(1);
            let n = state.requests.entry(reference.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            (state.failures.get(reference).copied(), state.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(failure) = failure {
            return Err(injected(reference, failure));
        }
        self.catalog.get(reference).ok_or_else(|| {
            Error::not_found(format!(
                "image {reference:?} (not in the fake image catalog; push it with ImageCatalog::push)"
            ))
        })
    }
}
