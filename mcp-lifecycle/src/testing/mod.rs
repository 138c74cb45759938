//! Test fakes and conformance suites, for this crate's tests, for host
//! applications' tests, and for backend authors (feature `testing`).

pub mod fake_orchestrator;
pub mod fake_resolver;
pub mod orchestrator_conformance;
pub mod store_conformance;
