//! # mcp-lifecycle-postgres
//!
//! A [`mcp_lifecycle::Store`] in PostgreSQL, so host replicas on several
//! machines share records, leader election and per-server leases through
//! one database: [`PostgresStore`].
//!
//! - Versioned records with compare-and-swap in one SQL statement, and
//!   leases whose fencing token the database increments; a write under a
//!   stale token is rejected by the same statement that would write it.
//! - Every committed record write is announced by NOTIFY and offered as
//!   `Store::changes`, so the leader of several hosts acts on a host call
//!   made on any of them at once.
//! - The schema is created and migrated by the crate (migrations embedded
//!   at compile time); a schema newer than the crate is refused, never
//!   migrated down.
//! - On sqlx with its connection pool; password and TLS (rustls) from the
//!   connection URL.
//!
//! Needs PostgreSQL 11 or newer (the crate's tests run on Debian's 15).
//!
//! It passes the core's store conformance suite
//! (`mcp_lifecycle::testing::store_conformance`) against a real PostgreSQL.
//!
//! ```no_run
//! # async fn run() -> mcp_lifecycle::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mcp_lifecycle::{LeaderElection, Lifecycle, LifecycleConfig, LocalOrchestrator};
//! use mcp_lifecycle_postgres::PostgresStore;
//!
//! let store = PostgresStore::builder()
//!     .url("postgres://mcp:secret@127.0.0.1:5432/mcp")
//!     .build()
//!     .await?;
//! let lifecycle = Lifecycle::builder()
//!     .orchestrator(Arc::new(LocalOrchestrator::new()))
//!     .store(Arc::new(store))
//!     .config(LifecycleConfig {
//!         holder_id: Some("host-a".into()),
//!         leader_election: Some(LeaderElection {
//!             lease_ttl: Duration::from_secs(15),
//!             renew_every: Duration::from_secs(5),
//!         }),
//!         ..LifecycleConfig::default()
//!     })
//!     .build()
//!     .await?;
//! # let _ = lifecycle; Ok(()) }
//! ```
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

mod changes;
mod errors;
mod leases;
mod records;
mod schema;
mod store;

pub use store::{DEFAULT_SCHEMA, PostgresStore, PostgresStoreBuilder};
