//! # mcp-lifecycle-docker
//!
//! The Docker and Podman backend of [`mcp_lifecycle`]: an implementation of
//! the [`mcp_lifecycle::Orchestrator`] port on bollard (one container per
//! instance, labelled for adoption, attached for stdio servers) and an
//! [`mcp_lifecycle::ImageResolver`] that asks the daemon's distribution
//! endpoint.
//!
//! **Status: not implemented yet.** This crate holds its place in the
//! workspace so that the layout and the dependency graph are settled. Until
//! it lands, hosts can run servers through any other `Orchestrator`, and every
//! backend will have to pass
//! `mcp_lifecycle::testing::orchestrator_conformance` before it is released.
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
