//! # mcp-lifecycle
//!
//! Run MCP (Model Context Protocol) servers for a host application and keep
//! them honest: started, healthy, at the desired replica count, on the newest
//! image, and reported truthfully.
//!
//! The crate is built from parts that are each usable alone:
//!
//! - [`spec`]: the [`ServerSpec`] a host asks for, and its validation.
//! - [`state`]: pure state machines (instance lifecycle with restart backoff,
//!   image freshness, server phase). No I/O, no clock reads: `now` is an argument.
//! - [`ports`]: the traits the library reaches the world through —
//!   [`Orchestrator`], [`Store`], [`ImageResolver`], [`SecretSource`].
//! - [`store`]: [`InMemoryStore`] and, with feature `redb`, the durable `RedbStore`.
//! - `testing` (feature `testing`): fakes with fault injection and the
//!   conformance suites every store and backend must pass.
//! - [`Lifecycle`]: the front door. A host builds one with an orchestrator,
//!   a prober and a store, then calls `apply`, `start`, `status`, `scale`,
//!   `stop` and `delete`; see its documentation for a complete example, and
//!   `examples/quickstart.rs` for a program that runs.
//!
//! ## Layers
//!
//! Each module uses only those below it:
//!
//! 1. [`spec`], [`time`], [`secret`], [`error`]: what a host asks for, and the
//!    vocabulary everything else speaks.
//! 2. [`state`] (pure decisions), [`ports`] and [`probe`] (the traits).
//! 3. [`records`], [`status`], [`config`]: data that the controller writes and
//!    the facade reads.
//! 4. [`store`], [`mcp`], the backends (`local`), `registry`: adapters behind
//!    the ports.
//! 5. The controller (private): the tasks that carry out what `state`
//!    decides — reconcile passes, probes, freshness cycles, leadership — and
//!    the intents and reads the facade reaches it by.
//! 6. [`lifecycle`]: the facade. It validates, sends intents and reads snapshots.
//!
//! ## Features
//!
//! - `redb` (default): the durable [`RedbStore`].
//! - `local` (default): [`LocalOrchestrator`], which runs servers as local
//!   processes, one process group per instance.
//! - `registry`: `RegistryResolver`, an [`ImageResolver`] that asks OCI
//!   registries directly (oci-client, with credentials from the Docker config).
//! - `tracing-subscriber` (default): [`secret::redacting`], the redacting
//!   `MakeWriter` for `tracing_subscriber::fmt` (below).
//! - `testing`: [`testing`] fakes and conformance suites.
//! - `openapi`: `utoipa::ToSchema` on the types a host's HTTP API exposes
//!   ([`ServerSpec`] and its parts, [`ServerStatus`], [`InstanceStatus`],
//!   [`UpdateStatus`], [`LifecycleEvent`], [`ports::Endpoint`]), each schema
//!   matching the type's serde form: durations are humantime strings
//!   (`30s`), timestamps milliseconds since the epoch.
//!
//! ## Logging safely
//!
//! The library never logs a secret value, but the clients it drives do when a
//! host turns their logs up: at `debug` and `trace` the Docker client logs
//! the container-create body (the environment, secrets included) and every
//! inspect it decodes, and `tracing-log` forwards those into the host's
//! subscriber, inside the library's spans. Every [`SecretValue`] the library
//! resolves is registered while it is in use, so a host that writes its logs
//! through [`secret::redacting`] (or wraps any `io::Write` in
//! [`RedactingWriter`], or passes text through [`secret::redact`]) gets each
//! live value — raw, JSON-escaped, `Debug`-escaped, or both — replaced by
//! `[redacted]`, whatever its log filter:
//!
//! ```
//! use mcp_lifecycle::SecretValue;
//! use mcp_lifecycle::secret::{REDACTED, redacting};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A host's usual set-up, with the writer wrapped.
//! tracing_subscriber::fmt()
//!     .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
//!     .with_writer(redacting(std::io::stderr))
//!     .try_init()?;
//!
//! // What a subscriber writes through it, once a value is live:
//! let token = SecretValue::new("ghp_example-token-value");
//! let line = r#"{"Env":["GITHUB_TOKEN=ghp_example-token-value"]}"#;
//! assert_eq!(
//!     mcp_lifecycle::secret::redact(line),
//!     format!(r#"{{"Env":["GITHUB_TOKEN={REDACTED}"]}}"#)
//! );
//! # drop(token);
//! # Ok(())
//! # }
//! ```
//!
//! Only values live in this process are known: a secret held by a workload
//! this process adopted but has not started (after a host restart) is
//! registered when this process next resolves it. Values shorter than
//! [`secret::SHORT_SECRET_LEN`] bytes are redacted too, wherever they occur.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::print_stdout,
        clippy::print_stderr
    )
)]

pub mod config;
mod controller;
pub mod error;
pub mod lifecycle;
#[cfg(feature = "local")]
pub mod local;
pub mod mcp;
pub mod ports;
pub mod probe;
pub mod records;
#[cfg(feature = "registry")]
pub mod registry;
pub mod secret;
pub mod spec;
pub mod state;
pub mod status;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

pub use config::{LeaderElection, LifecycleConfig};
pub use error::{Error, ErrorKind, Result};
pub use lifecycle::{Lifecycle, LifecycleBuilder, Wait};
#[cfg(feature = "local")]
pub use local::LocalOrchestrator;
pub use mcp::{McpPeer, McpProber, SessionPool};
pub use ports::{
    ImageResolver, InstanceId, InstanceObservation, InstanceSpec, Orchestrator, SecretSource,
    StopMode, Store,
};
pub use probe::{ProbeOutcome, ProbeTarget, Prober};
#[cfg(feature = "registry")]
pub use registry::RegistryResolver;
pub use secret::{RedactingWriter, SecretValue};
pub use spec::{Limits, ServerSpec, Source, Transport, ValidationError};
pub use status::{
    ApplyOutcome, CycleReport, HealthSummary, InstanceStatus, LifecycleEvent, LifecycleEventKind,
    ResyncReport, RuntimeInfo, ServerCounters, ServerStatus, UpdateStatus,
};
pub use store::InMemoryStore;
#[cfg(feature = "redb")]
pub use store::RedbStore;
pub use time::{Clock, SystemClock, Timestamp, TokioClock};

/// The README's example, compiled as a doctest so it cannot rot.
#[cfg(all(
    doctest,
    feature = "local",
    feature = "redb",
    feature = "tracing-subscriber"
))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
