//! The settings a host chooses when it builds a
//! [`DockerOrchestrator`](crate::DockerOrchestrator): how HTTP servers are
//! reached, which user containers run as, the root filesystem, default limits
//! and the network.
//!
//! This module owns the option types and their defaults only. It must not
//! talk to the engine.

/// The network every container joins unless the builder names another.
pub const DEFAULT_NETWORK: &str = "mcp-lifecycle";

/// The user containers run as when their image would run as root.
pub const DEFAULT_NON_ROOT_USER: &str = "65534:65534";

/// How the host reaches an HTTP or SSE server's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpAccess {
    /// Publish the container port on an ephemeral port of `127.0.0.1` and
    /// connect to `http://127.0.0.1:<published>`. Works wherever the host
    /// runs (a laptop, a VM, a container with the engine's socket mounted but
    /// not on its network); the port is reachable from the host machine only.
    /// The default.
    #[default]
    PublishedLoopback,
    /// Connect to the container's own address on the library's network,
    /// `http://<container ip>:<port>`. Needs a host that is itself on that
    /// network (or routes to it, like a Linux host talking to a local bridge);
    /// nothing is published.
    ContainerAddress,
}

/// Limits applied when a spec leaves them out, and the pids limit (which specs
/// cannot set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultLimits {
    /// Memory limit in bytes when the spec has none. Default: 512 MiB.
    pub memory_bytes: u64,
    /// CPU limit in millicores when the spec has none. Default: 1000 (1 CPU).
    pub cpu_millis: u64,
    /// Maximum number of processes (and threads) in a container. Default: 256.
    pub pids: u32,
}

impl Default for DefaultLimits {
    fn default() -> Self {
        DefaultLimits {
            memory_bytes: 512 * 1024 * 1024,
            cpu_millis: 1000,
            pids: 256,
        }
    }
}

/// Everything the builder collects; read by the container and network code.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Only containers labelled `managed-by=<this>` are seen, if set.
    pub(crate) manager: Option<String>,
    /// The network containers join.
    pub(crate) network: String,
    /// How HTTP servers are reached.
    pub(crate) http_access: HttpAccess,
    /// Mount the root filesystem read-only (with a tmpfs on `/tmp`).
    pub(crate) read_only_root_fs: bool,
    /// The user to run as when the image would run as root; `None` keeps the image's user.
    pub(crate) non_root_user: Option<String>,
    /// Defaults for limits.
    pub(crate) limits: DefaultLimits,
    /// Look up registry credentials in the Docker (or Podman) config for pulls.
    pub(crate) pull_credentials: bool,
    /// Size of the `/tmp` tmpfs on read-only containers.
    pub(crate) tmpfs_size: String,
    /// Run the engine's init process as PID 1.
    pub(crate) init: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            manager: None,
            network: DEFAULT_NETWORK.to_owned(),
            http_access: HttpAccess::default(),
            read_only_root_fs: true,
            non_root_user: Some(DEFAULT_NON_ROOT_USER.to_owned()),
            limits: DefaultLimits::default(),
            pull_credentials: true,
            tmpfs_size: "64m".to_owned(),
            init: true,
        }
    }
}
