//! The [`ServerSpec`] type and its parts, with their serde shapes and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::de;
use super::load::{from_json_str, from_yaml_str};
use crate::error::{Error, Result};

/// The desired state of one MCP server.
///
/// ```
/// use mcp_lifecycle::ServerSpec;
///
/// let spec = ServerSpec::from_yaml(r#"
/// name: github
/// source:
///   image: ghcr.io/example/github-mcp:1.4
/// transport:
///   http: { port: 8080, path: /mcp }
/// env:
///   - name: LOG_LEVEL
///     value: info
///   - name: GITHUB_TOKEN
///     secret: { name: github, key: token }
/// replicas: 2
/// health:
///   interval: 30s
///   readiness: { tool: ping, arguments: {} }
/// "#).unwrap();
/// assert_eq!(spec.replicas, 2);
/// spec.validate(&Default::default()).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// The server's name: an RFC 1123 label (lowercase letters, digits and
    /// `-`, at most 63 characters, starting and ending with a letter or digit).
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    /// What to run.
    pub source: Source,
    /// How MCP is spoken to it. Default: stdio.
    #[serde(default)]
    pub transport: Transport,
    /// Environment variables, plain or from a secret. Each `NAME=value`
    /// within [`Limits::max_arg_bytes`](crate::Limits::max_arg_bytes), all
    /// together (with the program and arguments) within
    /// [`Limits::max_command_bytes`](crate::Limits::max_command_bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvEntry>,
    /// How many instances should be ready. Default: 1.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Memory and CPU limits.
    #[serde(default)]
    pub resources: Resources,
    /// How health is checked.
    #[serde(default)]
    pub health: HealthSpec,
    /// Whether image updates are checked and rolled out. Default: both on.
    #[serde(default)]
    pub update: UpdatePolicy,
    /// Labels copied onto every workload of this server.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de::string_map"
    )]
    pub labels: BTreeMap<String, String>,
    /// How long a graceful stop waits before killing. Default: 10 s.
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10s"))]
    pub stop_grace_period: Duration,
}

fn default_replicas() -> u32 {
    1
}

fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}

impl ServerSpec {
    /// A spec with defaults for everything but the name and source.
    pub fn new(name: impl Into<String>, source: Source) -> Self {
        ServerSpec {
            name: name.into(),
            source,
            transport: Transport::default(),
            env: Vec::new(),
            replicas: default_replicas(),
            resources: Resources::default(),
            health: HealthSpec::default(),
            update: UpdatePolicy::default(),
            labels: BTreeMap::new(),
            stop_grace_period: default_stop_grace(),
        }
    }

    /// Parses a spec from YAML. Unknown fields are rejected, and so is a
    /// non-string scalar where a string is wanted (`name: null`, `value: 42`:
    /// quote it). An error starts with the path of the field it is about
    /// (`env[0].value: …`). A leading byte-order mark is ignored. The result is
    /// not yet validated: call [`ServerSpec::validate`].
    pub fn from_yaml(text: &str) -> Result<Self> {
        from_yaml_str(text).map_err(|e| Error::invalid("server spec YAML", e))
    }

    /// Writes the spec as YAML that [`ServerSpec::from_yaml`] reads back.
    pub fn to_yaml(&self) -> Result<String> {
        to_yaml_string(self).map_err(|e| Error::invalid("server spec", e))
    }

    /// Parses a spec from JSON. Unknown fields are rejected. An error starts
    /// with the path of the field it is about (`env[0].value: …`). A leading
    /// byte-order mark is ignored. The result is not yet validated: call
    /// [`ServerSpec::validate`].
    pub fn from_json(text: &str) -> Result<Self> {
        from_json_str(text).map_err(|e| Error::invalid("server spec JSON", e))
    }

    /// A stable hash of everything that shapes a workload (all but `replicas`,
    /// `update` and `health`), as 16 hex characters. A workload labelled with a
    /// different hash is out of date and is replaced.
    pub fn workload_hash(&self) -> String {
        let shape = WorkloadShape {
            source: &self.source,
            transport: &self.transport,
            env: &self.env,
            resources: &self.resources,
            labels: &self.labels,
        };
        // Serializing plain data to JSON cannot fail; fall back to Debug to stay total.
        let bytes =
            serde_json::to_vec(&shape).unwrap_or_else(|_| format!("{shape:?}").into_bytes());
        let digest = Sha256::digest(&bytes);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Writes YAML in the shape [`ServerSpec::from_yaml`] reads.
pub(crate) fn to_yaml_string<T: Serialize>(value: &T) -> Result<String, String> {
    let mut out = Vec::new();
    let mut ser = serde_norway::Serializer::new(&mut out);
    serde_norway::with::singleton_map_recursive::serialize(value, &mut ser)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

#[derive(Debug, Serialize)]
struct WorkloadShape<'a> {
    source: &'a Source,
    transport: &'a Transport,
    env: &'a [EnvEntry],
    resources: &'a Resources,
    labels: &'a BTreeMap<String, String>,
}

/// What runs: a container image, a local command, or a workload the runtime
/// already runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A container image reference (`registry/repo:tag` or `repo@sha256:…`).
    #[serde(deserialize_with = "de::string")]
    Image(String),
    /// A program on the host, run by the local-process backend.
    Command(Command),
    /// A workload the runtime already runs and the library adopts, by name
    /// (on Kubernetes, a Deployment matched by the backend's adoption
    /// selector). The library probes it, reports its replicas and scales
    /// it (start, stop, scale), and never changes its template: image,
    /// command, environment, resources and security stay the workload
    /// owner's, so `env` must be empty and image freshness does not apply.
    /// Deleting the server forgets the workload and leaves it as it is.
    /// Only runtimes that own replicas
    /// ([`ReplicaOwner`](crate::ports::ReplicaOwner)) can adopt.
    #[serde(deserialize_with = "de::string")]
    Existing(String),
}

/// A local program to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The program: a path, or a name looked up on `PATH`. At most 4095
    /// bytes (Linux's `PATH_MAX` with the NUL), and within
    /// [`Limits::max_arg_bytes`](crate::Limits::max_arg_bytes).
    #[serde(deserialize_with = "de::string")]
    pub program: String,
    /// Its arguments, each within
    /// [`Limits::max_arg_bytes`](crate::Limits::max_arg_bytes), all together
    /// (with the program and environment) within
    /// [`Limits::max_command_bytes`](crate::Limits::max_command_bytes).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de::strings"
    )]
    pub args: Vec<String>,
    /// Its working directory, at most 4095 bytes. Default: the host's.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_string"
    )]
    pub working_dir: Option<String>,
}

/// How MCP is spoken to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// JSON-RPC over the process's stdin/stdout.
    #[default]
    Stdio,
    /// Streamable HTTP on a port and path.
    Http {
        /// The port the server listens on inside its workload.
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
        port: u16,
        /// The MCP endpoint path, at most 4096 bytes. Default: `/mcp`.
        #[serde(default = "default_http_path", deserialize_with = "de::string")]
        path: String,
    },
    /// The legacy HTTP+SSE transport on a port and path.
    Sse {
        /// The port the server listens on inside its workload.
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
        port: u16,
        /// The SSE endpoint path, at most 4096 bytes. Default: `/sse`.
        #[serde(default = "default_sse_path", deserialize_with = "de::string")]
        path: String,
    },
}

fn default_http_path() -> String {
    "/mcp".to_owned()
}

fn default_sse_path() -> String {
    "/sse".to_owned()
}

/// One environment variable: `{name, value}` or `{name, secret}`.
///
/// Its `Deserialize` is written by hand (in `de.rs`) so that an unknown key, a
/// wrong type or a missing source is reported at the entry's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvEntry {
    /// The variable's name: `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    /// Where its value comes from.
    #[serde(flatten)]
    pub source: EnvSource,
}

impl EnvEntry {
    /// A plain variable.
    pub fn plain(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvEntry {
            name: name.into(),
            source: EnvSource::Value(value.into()),
        }
    }

    /// A variable whose value is resolved from a secret at start time.
    pub fn secret(name: impl Into<String>, secret: SecretRef) -> Self {
        EnvEntry {
            name: name.into(),
            source: EnvSource::Secret(secret),
        }
    }
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EnvSource {
    /// A literal value, stored in the spec.
    #[serde(deserialize_with = "de::string")]
    Value(String),
    /// A reference resolved by the [`crate::SecretSource`] at each start.
    Secret(SecretRef),
}

/// A reference to a secret: which secret, and which key in it. Only the
/// reference is ever stored or printed, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name.
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    /// The key inside the secret.
    #[serde(deserialize_with = "de::string")]
    pub key: String,
}

impl SecretRef {
    /// A reference to `key` in secret `name`.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        SecretRef {
            name: name.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "secret {}/{}", self.name, self.key)
    }
}

/// Resource limits. Values use Kubernetes quantity syntax: memory `"256Mi"`,
/// `"1Gi"`, `"500M"` or bytes; CPU `"500m"` or `"1.5"` cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit. Default: the backend's (512 MiB for containers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_string"
    )]
    pub memory: Option<String>,
    /// CPU limit in cores. Default: the backend's (1 core for containers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::opt_string"
    )]
    pub cpu: Option<String>,
}

/// How health is checked by speaking MCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// The liveness check. Default: `tools/list`.
    #[serde(default)]
    pub liveness: LivenessCheck,
    /// An optional tool call that must succeed before an instance is ready
    /// (after `initialize` and the liveness check pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessCall>,
    /// Time between liveness probes. Default: 30 s.
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    pub interval: Duration,
    /// How long one probe may take. Default: 10 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10s"))]
    pub timeout: Duration,
    /// Consecutive failures that make an instance unhealthy. Default: 3.
    #[serde(default = "default_failure_threshold")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub failure_threshold: u32,
    /// How long a started instance may take to become ready before the start
    /// counts as failed. Default: 60 s.
    #[serde(default = "default_startup_timeout", with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "60s"))]
    pub startup_timeout: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            liveness: LivenessCheck::default(),
            readiness: None,
            interval: default_interval(),
            timeout: default_timeout(),
            failure_threshold: default_failure_threshold(),
            startup_timeout: default_startup_timeout(),
        }
    }
}

/// The liveness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LivenessCheck {
    /// `tools/list` must answer without a JSON-RPC error.
    #[default]
    ToolsList,
    /// This tool call must answer without a JSON-RPC error or `isError: true`.
    Tool(ReadinessCall),
}

/// A tool call used as a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadinessCall {
    /// The tool's name: 1 to 128 characters, as MCP asks of tool names.
    #[serde(deserialize_with = "de::string")]
    pub tool: String,
    /// Its arguments: a JSON object, nested at most 32 levels deep (the
    /// object itself is the first). Default: `{}`.
    #[serde(default = "empty_object", deserialize_with = "de::arguments")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Whether image updates are checked for and rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Check the registry for a newer digest of the configured tag. Default: on.
    #[serde(default = "yes")]
    pub check: bool,
    /// Roll out a newer digest automatically. Default: on.
    #[serde(default = "yes")]
    pub auto_reinstall: bool,
}

fn yes() -> bool {
    true
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            check: true,
            auto_reinstall: true,
        }
    }
}
