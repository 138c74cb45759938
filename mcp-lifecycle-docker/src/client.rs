//! Connecting to the engine and turning bollard's errors into
//! [`mcp_lifecycle::Error`]s.
//!
//! This module owns the connection (bollard's defaults, which honour
//! `DOCKER_HOST`), API version negotiation (the engine may be older than
//! bollard's default API version) and the one place that decides which engine
//! failure is `NotFound`, `Unavailable`, `Timeout` or `Backend`. It must not
//! decide anything about containers.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use mcp_lifecycle::Error;

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "docker";

/// What `Unavailable` errors name when the engine cannot be reached.
pub(crate) const ENGINE: &str = "docker engine";

/// bollard's per-request timeout (time to the response headers), which this
/// crate keeps except for graceful stops longer than it.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Connects with bollard's defaults (`DOCKER_HOST`, else the local socket),
/// negotiates the API version down to the engine's, and checks the engine
/// answers. An unreachable engine is `Unavailable`. Returns the client and
/// the engine's name and version (see [`engine_name`]).
pub(crate) async fn connect_default() -> mcp_lifecycle::Result<(Docker, String)> {
    let docker = Docker::connect_with_defaults().map_err(|e| {
        Error::unavailable(
            ENGINE,
            format!("cannot connect with DOCKER_HOST or the default socket: {e}"),
        )
    })?;
    negotiate(docker).await
}

/// Negotiates the API version of an existing client and pings the engine.
/// Returns the client and the engine's name and version.
pub(crate) async fn negotiate(docker: Docker) -> mcp_lifecycle::Result<(Docker, String)> {
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| Error::unavailable(ENGINE, format!("API version negotiation failed: {e}")))?;
    docker
        .ping()
        .await
        .map_err(|e| Error::unavailable(ENGINE, format!("ping failed: {e}")))?;
    let version = docker.client_version();
    let engine = engine_name(&docker).await;
    tracing::info!(%engine, api_version = %version, "connected to the container engine");
    Ok((docker, engine))
}

/// The engine's name and version as it reports them: `Podman Engine 4.3.1`,
/// `Docker Engine - Community 20.10.24`, `Docker Engine 20.10.24+dfsg1` (a
/// distribution build); `unknown engine` if it won't say.
pub(crate) async fn engine_name(docker: &Docker) -> String {
    let Ok(version) = docker.version().await else {
        return "unknown engine".to_owned();
    };
    let number = version.version.clone().unwrap_or_default();
    // Podman names itself in its components; its platform is the OS.
    if let Some(podman) = version
        .components
        .iter()
        .flatten()
        .find(|c| c.name.contains("Podman"))
    {
        return format!("{} {}", podman.name, podman.version);
    }
    match version.platform.map(|p| p.name) {
        Some(name) if !name.is_empty() => format!("{name} {number}"),
        // Distribution builds (Debian's docker.io) leave the platform name
        // empty; their engine component is still Docker's.
        _ if version
            .components
            .iter()
            .flatten()
            .any(|c| c.name == "Engine") =>
        {
            format!("Docker Engine {number}")
        }
        _ => format!("engine {number}"),
    }
}

/// Whether `engine` (as [`engine_name`] reports it) is Podman, whose
/// Docker-compatible API differs where this crate must know it: no
/// distribution endpoint, and repo digests that do not record which digest
/// was pulled under which name.
pub(crate) fn is_podman(engine: &str) -> bool {
    engine.starts_with("Podman")
}

/// The HTTP status of an engine error response, if it is one.
pub(crate) fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the engine answered 404.
pub(crate) fn is_not_found(e: &BollardError) -> bool {
    status_of(e) == Some(404)
}

/// Whether the engine answered 409 (name taken, not running, removal in progress).
pub(crate) fn is_conflict(e: &BollardError) -> bool {
    status_of(e) == Some(409)
}

/// Whether the error means the engine could not be reached at all.
pub(crate) fn is_unreachable(e: &BollardError) -> bool {
    match e {
        BollardError::HyperLegacyError { err } => err.is_connect(),
        BollardError::IOError { .. } | BollardError::SocketNotFoundError(_) => true,
        BollardError::HyperResponseError { err } => {
            err.is_closed() || err.is_incomplete_message() || err.is_canceled()
        }
        _ => false,
    }
}

/// Maps an engine error: unreachable engine → `Unavailable`, request timeout
/// → `Timeout`, anything else → `Backend` with `doing` (which names the
/// instance or image).
pub(crate) fn engine_error(doing: impl Into<String>, e: BollardError) -> Error {
    let doing = doing.into();
    if is_unreachable(&e) {
        return Error::unavailable(ENGINE, format!("{doing}: {e}"));
    }
    if matches!(e, BollardError::RequestTimeoutError) {
        return Error::Timeout {
            what: format!("the docker engine while {doing}"),
            after: REQUEST_TIMEOUT,
        };
    }
    Error::backend(BACKEND, doing, e)
}
