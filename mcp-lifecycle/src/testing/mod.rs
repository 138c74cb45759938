//! Test fakes and conformance suites, for this crate's tests, for host
//! applications' tests, and for backend authors (feature `testing`).
//!
//! - [`FakeOrchestrator`]: an in-memory runtime with scripted faults.
//! - [`FakeResolver`]: an in-memory registry sharing an [`ImageCatalog`].
//! - [`FakeProber`]: scripted probe results.
//! - [`store_conformance`] and [`orchestrator_conformance`]: the suites every
//!   store and every backend must pass; [`replica_owner_conformance`] for
//!   backends whose runtime owns replicas (Kubernetes).

pub mod fake_orchestrator;
pub mod fake_prober;
pub mod fake_resolver;
#[cfg(feature = "tracing-subscriber")]
pub mod log_capture;
pub mod orchestrator_conformance;
pub mod replica_owner_conformance;
pub mod store_conformance;

pub use fake_orchestrator::{CallCounts, CallKind, FakeOrchestrator, ImageCatalog};
pub use fake_prober::FakeProber;
pub use fake_resolver::{FakeResolver, fake_digest};
#[cfg(feature = "tracing-subscriber")]
pub use log_capture::LogCapture;
pub use orchestrator_conformance::ConformanceFixture;
pub use replica_owner_conformance::ReplicaFixture;
