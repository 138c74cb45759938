//! The command line: global flags and one clap struct per command. Owns
//! parsing only; what a command does lives in its own module, and where the
//! server address and token finally come from lives in [`crate::config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A command-line client for the mcpd gateway, with kubectl's habits.
///
/// The server address and token come from `--server`/`--token`, else
/// `MCPCTL_SERVER`/`MCPCTL_TOKEN`, else the config file
/// (`~/.config/mcpctl/config.yaml`, or `--config`/`MCPCTL_CONFIG`), which
/// holds `server: URL` and `token: TOKEN`.
#[derive(Debug, Parser)]
#[command(name = "mcpctl", version)]
pub(crate) struct Cli {
    /// The connection settings.
    #[command(flatten)]
    pub(crate) connection: ConnectionFlags,
    /// Output format: a table (default), `json` or `yaml`.
    #[arg(short = 'o', long = "output", global = true, value_enum)]
    pub(crate) output: Option<OutputFormat>,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where mcpd is and who we are to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectionFlags {
    /// mcpd's address (`http://127.0.0.1:8080`; a bare `host:port` means http).
    #[arg(long, env = "MCPCTL_SERVER", global = true)]
    pub(crate) server: Option<String>,
    /// The bearer token.
    #[arg(long, env = "MCPCTL_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The config file (default: `$XDG_CONFIG_HOME/mcpctl/config.yaml` or
    /// `~/.config/mcpctl/config.yaml`).
    #[arg(long, env = "MCPCTL_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// JSON, as the API answers.
    Json,
    /// YAML.
    Yaml,
}

/// The commands, one per API operation.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List servers or instances.
    Get(GetArgs),
    /// Show one server in detail: instances, endpoints, updates, events.
    Describe(DescribeArgs),
    /// Create or replace servers from spec files (YAML, multi-document, or JSON).
    Apply(ApplyArgs),
    /// Delete servers (their instances are stopped and removed).
    Delete(DeleteArgs),
    /// Start a server, optionally waiting until it is ready.
    Start(StartArgs),
    /// Stop every instance of a server and keep its spec.
    Stop(StopArgs),
    /// Set a server's desired replica count.
    Scale(ScaleArgs),
    /// Print the last lines of a server's instances.
    Logs(LogsArgs),
    /// Check a server's image for updates now.
    CheckUpdates(NameArg),
    /// Turn image update checks and automatic reinstalls on or off.
    SetUpdatePolicy(UpdatePolicyArgs),
    /// Print lifecycle events (recent ones; with --follow, then new ones).
    Events(EventsArgs),
}

/// `get servers|instances [NAME]`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// What to list.
    pub(crate) resource: Resource,
    /// Only this server.
    pub(crate) name: Option<String>,
    /// Print again whenever something changes (driven by the event stream).
    #[arg(short = 'w', long)]
    pub(crate) watch: bool,
}

/// The resources `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Resource {
    /// Servers, one row each.
    #[value(alias = "server")]
    Servers,
    /// Instances of every server (or of NAME), one row each.
    #[value(alias = "instance")]
    Instances,
}

/// `describe server NAME`.
#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    /// What to describe (only `server`).
    pub(crate) resource: DescribeResource,
    /// The server's name.
    pub(crate) name: String,
}

/// What `describe` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DescribeResource {
    /// A server.
    #[value(alias = "servers")]
    Server,
}

/// `apply -f FILE|DIR|-`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// A spec file, a directory of them (`*.yaml`, `*.yml`, `*.json`), or `-`
    /// for standard input. May be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    pub(crate) files: Vec<PathBuf>,
}

/// `delete NAME...`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The servers to delete.
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

/// One server's name.
#[derive(Debug, Args)]
pub(crate) struct NameArg {
    /// The server's name.
    pub(crate) name: String,
}

/// `start NAME [--wait] [--timeout D]`.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The server's name.
    pub(crate) name: String,
    /// Wait until every desired instance is ready.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long to wait (`30s`, `2m`; at most 10m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub(crate) timeout: Duration,
}

/// `stop NAME [--force]`.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// The server's name.
    pub(crate) name: String,
    /// Kill at once instead of a graceful stop.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `scale NAME --replicas N`.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// The server's name.
    pub(crate) name: String,
    /// How many instances should be ready; 0 stops the server.
    #[arg(long)]
    pub(crate) replicas: u32,
}

/// `logs NAME [--instance ID] [--tail N]`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The server's name.
    pub(crate) name: String,
    /// Only this instance.
    #[arg(long)]
    pub(crate) instance: Option<String>,
    /// The last N lines of each instance.
    #[arg(long, default_value_t = 100)]
    pub(crate) tail: usize,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Toggle {
    /// As a boolean.
    pub(crate) fn is_on(self) -> bool {
        self == Toggle::On
    }
}

/// `set-update-policy NAME --check on|off --auto-reinstall on|off`.
#[derive(Debug, Args)]
pub(crate) struct UpdatePolicyArgs {
    /// The server's name.
    pub(crate) name: String,
    /// Check the registry for a newer digest of the configured tag.
    #[arg(long, value_enum)]
    pub(crate) check: Toggle,
    /// Roll out a newer digest automatically.
    #[arg(long, value_enum)]
    pub(crate) auto_reinstall: Toggle,
}

/// `events [NAME] [--follow]`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only this server's events.
    pub(crate) name: Option<String>,
    /// Keep printing new events as they happen.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
}
