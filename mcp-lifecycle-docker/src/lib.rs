//! # mcp-lifecycle-docker
//!
//! The Docker and Podman backend of [`mcp_lifecycle`]:
//!
//! - [`DockerOrchestrator`] implements [`mcp_lifecycle::Orchestrator`] on
//!   bollard: one container per instance, labelled for adoption, on a
//!   dedicated network, locked down by default, attached for stdio servers,
//!   with crashes pushed from the engine's event stream.
//! - [`DockerDistributionResolver`] implements [`mcp_lifecycle::ImageResolver`]
//!   through the engine's distribution endpoint, so digest lookups use the
//!   engine's registry mirrors and network settings.
//!
//! The orchestrator passes `mcp_lifecycle::testing::orchestrator_conformance`
//! against a real engine in this crate's tests.
//!
//! ```no_run
//! # async fn example() -> mcp_lifecycle::Result<()> {
//! use std::sync::Arc;
//! use mcp_lifecycle::{Lifecycle, LifecycleConfig};
//! use mcp_lifecycle_docker::DockerOrchestrator;
//!
//! let config = LifecycleConfig::default();
//! let docker = DockerOrchestrator::builder()
//!     .manager(config.manager_name.clone())
//!     .build()
//!     .await?;
//! let lifecycle = Lifecycle::builder()
//!     .orchestrator(Arc::new(docker))
//!     .config(config)
//!     .build()
//!     .await?;
//! # drop(lifecycle);
//! # Ok(())
//! # }
//! ```
//!
//! ## Logs
//!
//! bollard logs through the `log` crate: at `debug` every request body (a
//! container's environment, secrets included) and every response it decodes
//! (an inspect shows the environment again). A host that forwards `log` into
//! `tracing` and may turn those levels on writes its logs through
//! `mcp_lifecycle::secret::redacting`, which replaces every secret value the
//! library holds; this crate's `secret_canary` test checks that against a
//! real engine.
//!
//! ## Podman
//!
//! Podman serves the Docker-compatible API on a socket. Start it
//! (`systemctl --user start podman.socket`, or `podman system service
//! --time=0 &`) and point bollard's defaults at it:
//!
//! ```text
//! DOCKER_HOST=unix:///run/user/$UID/podman/podman.sock
//! ```
//!
//! (rootful Podman: `unix:///run/podman/podman.sock`). Or hand the builder a
//! client from `bollard::Docker::connect_with_podman_defaults()` through
//! [`DockerOrchestratorBuilder::docker`]. Registry credentials are read from
//! the Docker config first, then Podman's `auth.json`. Notes for Podman:
//!
//! - Rootless Podman puts containers in a user network namespace the host
//!   cannot route to: keep the default [`HttpAccess::PublishedLoopback`].
//! - Memory, CPU and pids limits need the cgroup v2 controllers delegated to
//!   the user (the default on current systemd distributions); without them
//!   container creation fails, and the error says which controller is missing.
//! - The init process is Podman's `catatonit` (packaged with Podman); if it is
//!   missing, turn it off with [`DockerOrchestratorBuilder::init`].
//! - Podman's events carry the container's labels like Docker's; if an
//!   engine's do not, events are matched to instances by container id. The
//!   backend asks for container events with a `key=value` label filter only
//!   and picks the actions itself, since Podman filters on its own action
//!   names (`died`, `remove`) and matches nothing on a key alone.
//! - Podman reports `"Status": "stopped"` for a moment after a container
//!   exits; inspect asks again until the container has settled.
//! - Podman sometimes leaves a container that started and exited at once as
//!   `"created"` with exit code 0, whatever the process returned. A container
//!   that has run is never read as created: it is exited, with the code its
//!   `die` event announced.
//! - Podman delivers events a few hundred milliseconds after they happen
//!   (the crash-detection benchmark's median is about 270 ms there, against
//!   about 75 ms on Docker; the event itself is stamped within 30 ms of the
//!   kill), so crashes are seen later there.
//! - Podman lists every name of an image crossed with every digest it has
//!   seen, so its repo digests do not say which digest a tag was pulled by
//!   (a locally tagged image even lists, under the registry's name, digests
//!   it was never pulled by). On Podman a container started from a tag
//!   therefore reports no running digest (unknown, never a guess); one
//!   started from `repo@sha256:…` reports that digest on both engines. With
//!   update checks and a resolver configured, the controller pins each tag
//!   to its digest before the first start, so checked servers report their
//!   digest on Podman too.
//! - Podman has no distribution endpoint: [`DockerDistributionResolver`]
//!   fails there as `ResolveFailure::Unsupported` (a `CheckFailed` category
//!   of its own) and says to use `mcp_lifecycle::RegistryResolver`.
//!
//! This crate's tests, conformance suite included, run in CI against Docker
//! 20.10 (API 1.41) and against Debian 12's Podman 4.3.1 (rootful;
//! `scripts/podman.sh` installs and configures it, serves its API on a socket
//! of its own and prints its `DOCKER_HOST`), as are the crash-detection
//! benchmark's figures. Where the engines answer differently by design (the
//! two Podman notes above), the tests assert each engine's documented answer.
//!
//! ## Features of the engine used
//!
//! API 1.41 (Docker 20.10) or later: container create / start / stop / kill /
//! wait / remove / inspect / list / logs / attach, image inspect / create
//! (pull), network list / create, events, and distribution inspect.
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

mod attach;
mod client;
mod container;
mod credentials;
mod digest;
mod events;
mod image;
mod logs;
mod network;
mod observe;
mod options;
mod orchestrator;
mod reference;
mod resolver;

pub use observe::TRANSPORT_LABEL;
pub use options::{DEFAULT_NETWORK, DEFAULT_NON_ROOT_USER, DefaultLimits, HttpAccess};
pub use orchestrator::{DockerOrchestrator, DockerOrchestratorBuilder};
pub use resolver::DockerDistributionResolver;

/// Re-exported so hosts can build a client (TLS, Podman defaults) without
/// naming bollard's version themselves.
pub use bollard;
