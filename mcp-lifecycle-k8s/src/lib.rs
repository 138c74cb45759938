//! # mcp-lifecycle-k8s
//!
//! The Kubernetes backend of [`mcp_lifecycle`]: an implementation of the
//! [`mcp_lifecycle::Orchestrator`] port on kube and k8s-openapi, a
//! Lease-backed [`mcp_lifecycle::Store`] for leases, and a probe-pod
//! [`mcp_lifecycle::ImageResolver`] that uses the cluster's own pull secrets.
//!
//! **Status: not implemented yet.** This crate holds its place in the
//! workspace so that the layout and the dependency graph are settled.
//! k8s-openapi will be a dependency without a version feature here (the
//! version is chosen by binaries and dev-dependencies only).
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
