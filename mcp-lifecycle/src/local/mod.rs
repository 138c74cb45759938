//! The local-process backend (feature `local`, on by default): runs servers
//! whose source is a [`Command`](crate::spec::Command) as child processes of
//! the host.
//!
//! This module owns [`LocalOrchestrator`] and its parts, one file per concern:
//! `process` spawns a run as its own process group and signals the group,
//! `logs` keeps the bounded log ring per instance, `orchestrator` implements
//! the [`Orchestrator`](crate::Orchestrator) port on top of them (instance
//! table, exit watchers, events, stop and remove, cleanup on drop). It must
//! not decide restarts, retries or readiness (the controller does, above the
//! port), run anything but local commands, or leave a process behind: every
//! instance's whole process group is killed on stop, remove, and when the
//! last handle is dropped.

mod logs;
mod orchestrator;
mod process;

pub use orchestrator::{LocalOrchestrator, LocalOrchestratorBuilder};

/// The backend name [`LocalOrchestrator`] reports and puts in its errors.
const BACKEND: &str = "local";
