//! mcpd's configuration: a YAML file and the command-line flags that
//! override it, merged into one validated [`Config`]. Owns the file's shape,
//! the flags, their defaults and precedence (flag over file over default).
//! Token values never reach `Debug` output or logs: they are hashed on load
//! (see [`crate::auth`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::auth::{Role, TokenSet};
use crate::store_url::PostgresUrl;

/// Command-line flags. Each overrides the configuration file's setting.
#[derive(Debug, Parser)]
#[command(
    name = "mcpd",
    version,
    about = "A gateway daemon that runs MCP servers with mcp-lifecycle"
)]
pub(crate) struct Flags {
    /// The YAML configuration file.
    #[arg(long, short = 'c', env = "MCPD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The address to listen on (`127.0.0.1:8080`; port 0 picks a free one).
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// The runtime backend.
    #[arg(long, value_enum)]
    pub(crate) backend: Option<Backend>,
    /// The redb file state is kept in, or a `postgres://` URL: a PostgreSQL
    /// database several mcpd share (they elect a leader). Prefer the
    /// environment variable for a URL with a password.
    #[arg(long, env = "MCPD_STORE", value_name = "PATH|URL")]
    pub(crate) store: Option<String>,
    /// Keep state in memory only (nothing survives a restart).
    #[arg(long)]
    pub(crate) in_memory: bool,
    /// A server spec file, or a directory of `*.yaml`/`*.yml`/`*.json` specs,
    /// applied at start (again at every start; unchanged specs are no-ops).
    #[arg(long)]
    pub(crate) specs: Option<PathBuf>,
    /// A program the local backend may run (repeatable; added to the file's list).
    #[arg(long = "allow-program", value_name = "PROGRAM")]
    pub(crate) allow_programs: Vec<String>,
    /// An admin token (added to the file's tokens). Prefer the environment
    /// variable: a flag's value shows in the process list.
    #[arg(long, env = "MCPD_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,
    /// A read-only token (added to the file's tokens).
    #[arg(long, env = "MCPD_READ_ONLY_TOKEN", hide_env_values = true)]
    pub(crate) read_only_token: Option<String>,
    /// The name mcpd labels its workloads with; two daemons (or other hosts
    /// of the library) sharing a runtime need two names. Default: `mcpd`.
    #[arg(long)]
    pub(crate) manager: Option<String>,
    /// On SIGTERM/SIGINT, stop every server instead of detaching from them.
    #[arg(long)]
    pub(crate) stop_servers_on_exit: bool,
    /// The Kubernetes namespace servers run in (kubernetes backend).
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// The kubeconfig context to use instead of the current one.
    #[arg(long)]
    pub(crate) kube_context: Option<String>,
    /// A registry reached over plain HTTP for update checks (repeatable;
    /// added to the file's `registry.insecure_registries`).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub(crate) insecure_registries: Vec<String>,
}

/// Which runtime runs the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Backend {
    /// Local processes, children of mcpd (they end with it).
    #[default]
    Local,
    /// Docker or Podman containers (they outlive mcpd and are adopted again).
    Docker,
    /// One Deployment per server on a Kubernetes cluster (they outlive
    /// mcpd and are adopted again).
    Kubernetes,
}

/// What to do with the servers when mcpd is told to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnExit {
    /// Leave the servers running for the next mcpd on the same store to adopt.
    #[default]
    Detach,
    /// Stop every server (its spec is kept).
    Stop,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// The address to listen on.
    #[serde(default)]
    pub(crate) listen: Option<SocketAddr>,
    /// The runtime backend.
    #[serde(default)]
    pub(crate) backend: Option<Backend>,
    /// Where state lives.
    #[serde(default)]
    pub(crate) store: StoreConfig,
    /// Specs applied at start: a file or a directory.
    #[serde(default)]
    pub(crate) specs: Option<PathBuf>,
    /// The bearer tokens the API accepts.
    #[serde(default)]
    pub(crate) tokens: Vec<TokenConfig>,
    /// The local backend's settings.
    #[serde(default)]
    pub(crate) local: LocalConfig,
    /// What happens to the servers on exit.
    #[serde(default)]
    pub(crate) on_exit: OnExit,
    /// The name mcpd labels its workloads with.
    #[serde(default)]
    pub(crate) manager: Option<String>,
    /// The Kubernetes backend's settings.
    #[serde(default)]
    pub(crate) kubernetes: KubernetesSettings,
    /// Image update checks: how registries are reached and how often.
    #[serde(default)]
    pub(crate) registry: RegistrySettings,
}

/// The Kubernetes backend's settings (the cluster is the one the
/// kubeconfig names: `KUBECONFIG`, `~/.kube/config`, or the pod's service
/// account when mcpd runs in the cluster).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubernetesSettings {
    /// The namespace servers run in. Default: `default`.
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    /// The kubeconfig context (default: the current one).
    #[serde(default)]
    pub(crate) context: Option<String>,
    /// How probes and MCP calls reach pods: `pod_ip` (mcpd runs inside the
    /// cluster network, the default) or `port_forward` (through the API
    /// server, for an mcpd outside the cluster).
    #[serde(default)]
    pub(crate) pod_access: PodAccessSetting,
    /// How a server's Service is exposed.
    #[serde(default)]
    pub(crate) exposure: ExposureSetting,
    /// Image pull secrets in the namespace, given to every pod and used for
    /// update checks.
    #[serde(default)]
    pub(crate) image_pull_secrets: Vec<String>,
    /// The service account pods run as (default: the namespace's).
    #[serde(default)]
    pub(crate) service_account: Option<String>,
}

/// How mcpd reaches pods (see [`mcp_lifecycle_k8s::PodAccess`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PodAccessSetting {
    /// At the pod IP.
    #[default]
    PodIp,
    /// Through the API server's port-forward.
    PortForward,
}

/// How Services are exposed (see [`mcp_lifecycle_k8s::ServiceExposure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExposureSetting {
    /// `ClusterIP`.
    #[default]
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
}

/// Image update checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistrySettings {
    /// Who asks the registry, with the docker backend: `engine` (the
    /// default: the Docker engine, with its mirrors, insecure registries
    /// and credentials) or `direct` (mcpd itself, with the Docker config's
    /// credentials and `insecure_registries`). The kubernetes backend always
    /// asks directly, with the namespace's image pull secrets.
    #[serde(default)]
    pub(crate) resolver: ResolverSetting,
    /// Registries (`host[:port]`) reached over plain HTTP.
    #[serde(default)]
    pub(crate) insecure_registries: Vec<String>,
    /// How long one resolution may take. Default: 10 s.
    #[serde(default, with = "humantime_serde")]
    pub(crate) timeout: Option<Duration>,
    /// Time between a server's update checks. Default: 15 min; at least
    /// 5 min (the floor keeps registries' rate limits).
    #[serde(default, with = "humantime_serde")]
    pub(crate) check_interval: Option<Duration>,
}

/// Who resolves image tags to digests with the docker backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResolverSetting {
    /// The Docker engine.
    #[default]
    Engine,
    /// mcpd, over HTTPS (HTTP for `insecure_registries`).
    Direct,
}

/// Where state lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// The redb file. Default: `mcpd.redb` in the working directory.
    #[serde(default)]
    pub(crate) path: Option<PathBuf>,
    /// Keep state in memory only.
    #[serde(default)]
    pub(crate) in_memory: bool,
    /// Keep state in the cluster (ConfigMaps and Leases in the backend's
    /// namespace), so mcpd needs no disk and several mcpd share it. Only
    /// with the kubernetes backend.
    #[serde(default)]
    pub(crate) kubernetes: bool,
    /// Keep state in PostgreSQL: a `postgres://` URL.
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// The environment variable that holds the `postgres://` URL (keeps
    /// the password out of the file).
    #[serde(default)]
    pub(crate) url_env: Option<String>,
    /// The PostgreSQL schema the tables live in (the store's default if
    /// unset); the mcpd that share state share it.
    #[serde(default)]
    pub(crate) schema: Option<String>,
}

/// One bearer token: its value (inline or from an environment variable) and role.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    /// A name for logs (`ops`, `dashboards`); never the token.
    pub(crate) name: String,
    /// What the token may do.
    pub(crate) role: Role,
    /// The token itself.
    #[serde(default)]
    pub(crate) token: Option<String>,
    /// The environment variable holding the token.
    #[serde(default)]
    pub(crate) token_env: Option<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_env", &self.token_env)
            .finish_non_exhaustive()
    }
}

/// The local backend's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalConfig {
    /// The programs a spec may run, exactly as specs name them in
    /// `source.command.program`. Empty: none.
    #[serde(default)]
    pub(crate) allowed_programs: Vec<String>,
}

/// The merged configuration mcpd runs with.
#[derive(Debug)]
pub(crate) struct Config {
    /// The address to listen on.
    pub(crate) listen: SocketAddr,
    /// The runtime backend.
    pub(crate) backend: Backend,
    /// Where state lives.
    pub(crate) store: StoreChoice,
    /// Specs applied at start.
    pub(crate) specs: Option<PathBuf>,
    /// The accepted tokens (hashed).
    pub(crate) tokens: TokenSet,
    /// Programs the local backend may run.
    pub(crate) allowed_programs: Vec<String>,
    /// What happens to the servers on exit.
    pub(crate) on_exit: OnExit,
    /// The name mcpd labels its workloads with (only its own are touched).
    pub(crate) manager: String,
    /// The Kubernetes backend's settings.
    pub(crate) kubernetes: KubernetesSettings,
    /// Image update checks.
    pub(crate) registry: RegistrySettings,
}

/// Where mcpd keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreChoice {
    /// Nothing survives a restart.
    InMemory,
    /// A redb file.
    Redb(PathBuf),
    /// ConfigMaps and Leases in the Kubernetes backend's namespace.
    Kubernetes,
    /// A PostgreSQL database, and the schema in it (the store's default if
    /// `None`).
    Postgres(PostgresUrl, Option<String>),
}

impl StoreChoice {
    /// Whether several mcpd may share the store (and so must elect a
    /// leader before they act).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, StoreChoice::Kubernetes | StoreChoice::Postgres(..))
    }

    /// A path, or a `postgres://` URL.
    fn from_flag(value: String) -> StoreChoice {
        if PostgresUrl::is_postgres(&value) {
            StoreChoice::Postgres(PostgresUrl::new(&value), None)
        } else {
            StoreChoice::Redb(PathBuf::from(value))
        }
    }

    /// The file's `store:` section.
    fn from_file(
        store: StoreConfig,
        backend: Backend,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<StoreChoice> {
        let url = match (store.url, &store.url_env) {
            (Some(url), None) => Some(url),
            (None, Some(var)) => Some(env(var).with_context(|| {
                format!("store.url_env: environment variable {var} is not set")
            })?),
            (Some(_), Some(_)) => bail!("store: give one of `url` and `url_env`"),
            (None, None) => None,
        };
        let given = [
            store.path.is_some(),
            store.in_memory,
            store.kubernetes,
            url.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            bail!("store: give one of `path`, `in_memory`, `kubernetes` and `url`/`url_env`");
        }
        if let Some(url) = url {
            if !PostgresUrl::is_postgres(&url) {
                bail!("store.url: a `postgres://` or `postgresql://` URL is expected");
            }
            return Ok(StoreChoice::Postgres(PostgresUrl::new(&url), store.schema));
        }
        if store.schema.is_some() {
            bail!("store.schema: only with a PostgreSQL `url` or `url_env`");
        }
        if store.kubernetes {
            if backend != Backend::Kubernetes {
                bail!(
                    "store.kubernetes: the store is kept in the cluster only with the kubernetes backend"
                );
            }
            return Ok(StoreChoice::Kubernetes);
        }
        if store.in_memory {
            return Ok(StoreChoice::InMemory);
        }
        Ok(StoreChoice::Redb(
            store.path.unwrap_or_else(|| PathBuf::from("mcpd.redb")),
        ))
    }
}

impl std::fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreChoice::InMemory => f.write_str("in memory"),
            StoreChoice::Redb(path) => write!(f, "{}", path.display()),
            StoreChoice::Kubernetes => f.write_str("in the cluster"),
            StoreChoice::Postgres(url, None) => write!(f, "{url}"),
            StoreChoice::Postgres(url, Some(schema)) => write!(f, "{url} (schema {schema})"),
        }
    }
}

/// The default manager name: mcpd's workloads are its own.
pub(crate) const DEFAULT_MANAGER: &str = "mcpd";

/// The default listen address: loopback only.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Config {
    /// Reads the file the flags name (if any) and applies the flags over it.
    pub(crate) fn load(flags: Flags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(file, flags, &|name| std::env::var(name).ok())
    }

    /// Flags over file over defaults; `env` reads `token_env` variables.
    pub(crate) fn merge(
        file: FileConfig,
        flags: Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let listen = match flags.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN
                .parse()
                .context("the default listen address")?,
        };
        let backend = flags.backend.or(file.backend).unwrap_or_default();
        // A --store or --in-memory flag overrides the file's choice, as
        // every flag does.
        let store = if flags.in_memory {
            StoreChoice::InMemory
        } else if let Some(value) = flags.store {
            StoreChoice::from_flag(value)
        } else {
            StoreChoice::from_file(file.store, backend, env)?
        };
        let mut kubernetes = file.kubernetes;
        if let Some(namespace) = flags.namespace {
            kubernetes.namespace = Some(namespace);
        }
        if let Some(context) = flags.kube_context {
            kubernetes.context = Some(context);
        }
        let mut registry = file.registry;
        registry
            .insecure_registries
            .extend(flags.insecure_registries);
        let mut tokens = TokenSet::default();
        for t in &file.tokens {
            let value = match (&t.token, &t.token_env) {
                (Some(v), None) => v.clone(),
                (None, Some(var)) => env(var).with_context(|| {
                    format!("token {:?}: environment variable {var} is not set", t.name)
                })?,
                _ => bail!(
                    "token {:?}: give exactly one of `token` and `token_env`",
                    t.name
                ),
            };
            tokens.add(&t.name, &value, t.role)?;
        }
        if let Some(v) = &flags.admin_token {
            tokens.add("admin (flag)", v, Role::Admin)?;
        }
        if let Some(v) = &flags.read_only_token {
            tokens.add("read-only (flag)", v, Role::ReadOnly)?;
        }
        if tokens.is_empty() {
            bail!(
                "no API token is configured: add `tokens` to the configuration file or set \
                 MCPD_ADMIN_TOKEN"
            );
        }
        let mut allowed_programs = file.local.allowed_programs;
        allowed_programs.extend(flags.allow_programs);
        Ok(Config {
            listen,
            backend,
            store,
            specs: flags.specs.or(file.specs),
            tokens,
            allowed_programs,
            manager: flags
                .manager
                .or(file.manager)
                .unwrap_or_else(|| DEFAULT_MANAGER.to_owned()),
            on_exit: if flags.stop_servers_on_exit {
                OnExit::Stop
            } else {
                file.on_exit
            },
            kubernetes,
            registry,
        })
    }
}

/// Parses the configuration file, naming the field a mistake is in.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("in the configuration file {}", path.display()))
}

/// Parses configuration YAML; errors start with the field's path.
pub(crate) fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{path}: {}", e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("mcpd").chain(args.iter().copied()))
    }

    const FILE: &str = r#"
listen: 127.0.0.1:9000
backend: docker
store: { path: /var/lib/mcpd/state.redb }
specs: /etc/mcpd/servers
tokens:
  - { name: ops, role: admin, token: s3cret-admin }
  - { name: dash, role: read-only, token_env: DASH_TOKEN }
local: { allowed_programs: [/usr/bin/a] }
on_exit: stop
manager: gateway-a
"#;

    fn env(name: &str) -> Option<String> {
        (name == "DASH_TOKEN").then(|| "s3cret-read".to_owned())
    }

    #[test]
    fn the_file_is_read_and_flags_override_it() {
        let file = parse_file(FILE).unwrap();
        let c = Config::merge(file, flags(&[]), &env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.backend, Backend::Docker);
        assert_eq!(
            c.store,
            StoreChoice::Redb(PathBuf::from("/var/lib/mcpd/state.redb"))
        );
        assert_eq!(c.on_exit, OnExit::Stop);
        assert_eq!(c.manager, "gateway-a");
        assert_eq!(c.tokens.role_of("s3cret-read"), Some(Role::ReadOnly));
        assert_eq!(c.tokens.role_of("s3cret-admin"), Some(Role::Admin));

        let file = parse_file(FILE).unwrap();
        let f = flags(&[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "local",
            "--in-memory",
            "--allow-program",
            "/usr/bin/b",
        ]);
        let c = Config::merge(file, f, &env).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.backend, Backend::Local);
        assert_eq!(c.store, StoreChoice::InMemory);
        assert_eq!(c.allowed_programs, ["/usr/bin/a", "/usr/bin/b"]);
    }

    #[test]
    fn defaults_need_a_token_and_keep_state_in_a_redb_file() {
        let err = Config::merge(FileConfig::default(), flags(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("no API token"), "{err}");
        let c = Config::merge(
            FileConfig::default(),
            flags(&["--admin-token", "a-long-token"]),
            &env,
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, StoreChoice::Redb(PathBuf::from("mcpd.redb")));
        assert_eq!(c.on_exit, OnExit::Detach);
        assert_eq!(c.manager, DEFAULT_MANAGER);
    }

    #[test]
    fn the_kubernetes_backend_and_registry_settings_are_read() {
        let file = parse_file(
            "backend: kubernetes\nstore: { kubernetes: true }\n\
             kubernetes: { namespace: mcp, pod_access: port_forward, exposure: node_port }\n\
             registry: { insecure_registries: [reg.local:5000], timeout: 3s, check_interval: 10m }\n\
             tokens: [{ name: a, role: admin, token: a-long-token }]\n",
        )
        .unwrap();
        let c = Config::merge(
            file,
            flags(&[
                "--namespace",
                "other",
                "--insecure-registry",
                "127.0.0.1:5000",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Kubernetes);
        assert_eq!(c.store, StoreChoice::Kubernetes);
        assert_eq!(c.kubernetes.namespace.as_deref(), Some("other"));
        assert_eq!(c.kubernetes.pod_access, PodAccessSetting::PortForward);
        assert_eq!(c.kubernetes.exposure, ExposureSetting::NodePort);
        assert_eq!(
            c.registry.insecure_registries,
            ["reg.local:5000", "127.0.0.1:5000"]
        );
        assert_eq!(c.registry.timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.registry.check_interval, Some(Duration::from_secs(600)));

        // The cluster store needs the cluster backend.
        let file = parse_file(
            "store: { kubernetes: true }\ntokens: [{ name: a, role: admin, token: a-long-token }]\n",
        )
        .unwrap();
        let err = Config::merge(file, flags(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("store.kubernetes"), "{err}");
    }

    #[test]
    fn a_postgres_url_comes_from_a_flag_or_the_files_environment_variable() {
        let url = "postgres://mcpd:pg-s3cret@127.0.0.1:55432/mcp";
        let c = Config::merge(
            FileConfig::default(),
            flags(&["--admin-token", "a-long-token", "--store", url]),
            &env,
        )
        .unwrap();
        assert_eq!(c.store, StoreChoice::Postgres(PostgresUrl::new(url), None));
        assert!(c.store.is_shared());
        assert_eq!(c.store.to_string(), "postgres://127.0.0.1:55432/mcp");

        let tokens = "tokens: [{ name: a, role: admin, token: a-long-token }]\n";
        let file = parse_file(&format!(
            "store: {{ url_env: PG_URL, schema: fleet_a }}\n{tokens}"
        ))
        .unwrap();
        let from_env = |name: &str| (name == "PG_URL").then(|| url.to_owned());
        let c = Config::merge(file, flags(&[]), &from_env).unwrap();
        assert_eq!(
            c.store,
            StoreChoice::Postgres(PostgresUrl::new(url), Some("fleet_a".into()))
        );
        assert!(!format!("{c:?}").contains("pg-s3cret"));

        let file = parse_file(&format!("store: {{ url_env: PG_URL }}\n{tokens}")).unwrap();
        let err = Config::merge(file, flags(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("PG_URL is not set"), "{err}");
        let file = parse_file(&format!("store: {{ url: \"mysql://x\" }}\n{tokens}")).unwrap();
        let err = Config::merge(file, flags(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("store.url"), "{err}");
        let file = parse_file(&format!(
            "store: {{ in_memory: true, url: \"{url}\" }}\n{tokens}"
        ))
        .unwrap();
        let err = Config::merge(file, flags(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("give one of"), "{err}");
        assert!(!err.to_string().contains("pg-s3cret"), "{err}");
    }

    #[test]
    fn mistakes_name_their_field_and_never_show_a_token() {
        let err = parse_file("tokens: [{ name: a, role: root, token: hunter2 }]").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("tokens[0].role"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = parse_file("listen: 1.2.3.4:80\nbogus: 1").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let file = parse_file(FILE).unwrap();
        assert!(!format!("{file:?}").contains("s3cret"));
        let missing = parse_file("tokens: [{ name: a, role: admin, token_env: NOPE }]").unwrap();
        let err = Config::merge(missing, flags(&[]), &env).unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
    }
}
