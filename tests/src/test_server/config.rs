//! Command line and environment: what to serve, where, and which failure knobs are on.
//!
//! Every knob is both a `--kebab-case` flag and an `MCP_TEST_<UPPER_SNAKE>` environment
//! variable; a flag wins over its variable (clap's `env` semantics). The HTTP port also
//! comes from `MCP_PORT`, which is how the local-process backend hands one out.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

/// Tools, exit codes and examples, shown after the option list by `--help`.
const AFTER_HELP: &str = "\
Tools:
  echo           {\"text\": string} -> the same text
  whoami         \"token-length:<n>\" when MCP_TEST_TOKEN is set (never the token itself),
                 otherwise a tool result with isError: true
  jsonrpc_error  always answers JSON-RPC error -32603 (internal error)
  sleep          {\"ms\": u64} -> sleeps, then \"slept\"
  version        the value of MCP_TEST_VERSION, or \"dev\"

Logs go to stderr only (filter with RUST_LOG). In stdio mode nothing but JSON-RPC is
written to stdout. The process exits 0 on stdin EOF (stdio) and on SIGTERM/SIGINT.

Examples:
  mcp-test-server
  mcp-test-server --transport http --port 8080 --fail-tools-list-after 2
  MCP_TEST_TRANSPORT=http MCP_PORT=8080 MCP_TEST_BIND=0.0.0.0 mcp-test-server";

/// How the server talks to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// JSON-RPC over stdin/stdout.
    Stdio,
    /// Streamable HTTP.
    Http,
}

/// The parsed command line (with environment fallbacks).
#[derive(Debug, Parser)]
#[command(
    name = "mcp-test-server",
    version,
    about = "MCP server fixture for mcp-lifecycle tests: a few tools and failure knobs.",
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    /// Transport to serve.
    #[arg(long, value_enum, env = "MCP_TEST_TRANSPORT", default_value_t = Transport::Stdio)]
    transport: Transport,

    /// TCP port for --transport http (0 picks a free one; the address is logged).
    #[arg(long, env = "MCP_PORT")]
    port: Option<u16>,

    /// Address to bind for --transport http (use 0.0.0.0 inside containers).
    #[arg(long, env = "MCP_TEST_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,

    /// URL path of the MCP endpoint for --transport http.
    #[arg(long, env = "MCP_TEST_PATH", default_value = "/mcp")]
    path: String,

    /// Sleep this long before serving anything (stdio: before reading stdin; http: before binding).
    #[arg(long, env = "MCP_TEST_STARTUP_DELAY_MS", value_name = "MS")]
    startup_delay_ms: Option<u64>,

    /// Exit with code 0 after serving for this long.
    #[arg(long, env = "MCP_TEST_EXIT_AFTER_MS", value_name = "MS")]
    exit_after_ms: Option<u64>,

    /// Exit at once with this code, before serving anything.
    #[arg(long, env = "MCP_TEST_EXIT_IMMEDIATELY_CODE", value_name = "CODE")]
    exit_immediately_code: Option<i32>,

    /// Calls to this tool never answer (repeat the flag or separate names with commas).
    #[arg(
        long,
        env = "MCP_TEST_HANG_ON_CALL",
        value_name = "TOOL",
        value_delimiter = ','
    )]
    hang_on_call: Vec<String>,

    /// tools/list answers the first N times, then never answers.
    #[arg(long, env = "MCP_TEST_HANG_TOOLS_LIST_AFTER", value_name = "N")]
    hang_tools_list_after: Option<u64>,

    /// tools/list answers the first N times, then answers a JSON-RPC error.
    #[arg(long, env = "MCP_TEST_FAIL_TOOLS_LIST_AFTER", value_name = "N")]
    fail_tools_list_after: Option<u64>,

    /// Advertise this cache lifetime (ttlMs, scope public) on tools/list results.
    /// Default: ttlMs 0 on protocol 2026-07-28 and later, none before.
    #[arg(long, env = "MCP_TEST_TOOLS_LIST_TTL_MS", value_name = "MS")]
    tools_list_ttl_ms: Option<u64>,
}

/// Where the HTTP transport listens.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    /// Address to bind.
    pub(crate) bind: IpAddr,
    /// Port to bind; 0 lets the kernel choose.
    pub(crate) port: u16,
    /// Normalized endpoint path: starts with `/`, no trailing `/` unless it is the root.
    pub(crate) path: String,
}

/// The selected transport with its settings.
#[derive(Debug, Clone)]
pub(crate) enum TransportConfig {
    /// JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP.
    Http(HttpConfig),
}

/// Knobs that change how requests are answered.
#[derive(Debug, Clone, Default)]
pub(crate) struct Knobs {
    /// Tools whose calls never answer.
    pub(crate) hang_on_call: HashSet<String>,
    /// tools/list answers this many times, then hangs.
    pub(crate) hang_tools_list_after: Option<u64>,
    /// tools/list answers this many times, then fails.
    pub(crate) fail_tools_list_after: Option<u64>,
    /// Cache lifetime advertised on tools/list results.
    pub(crate) tools_list_ttl_ms: Option<u64>,
}

/// Everything the server needs to run, validated.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Transport and its settings.
    pub(crate) transport: TransportConfig,
    /// Delay before serving.
    pub(crate) startup_delay: Option<Duration>,
    /// Serve this long, then exit 0.
    pub(crate) exit_after: Option<Duration>,
    /// Exit with this code before doing anything.
    pub(crate) exit_immediately_code: Option<i32>,
    /// Request-level failure knobs.
    pub(crate) knobs: Knobs,
}

impl Cli {
    /// Validates the parsed arguments into a [`Config`].
    pub(crate) fn into_config(self) -> anyhow::Result<Config> {
        let transport = match self.transport {
            Transport::Stdio => TransportConfig::Stdio,
            Transport::Http => {
                let port = self
                    .port
                    .context("--transport http needs --port N (or the MCP_PORT variable)")?;
                let path = normalize_path(&self.path)
                    .with_context(|| format!("invalid --path {:?}", self.path))?;
                TransportConfig::Http(HttpConfig {
                    bind: self.bind,
                    port,
                    path,
                })
            }
        };
        let hang_on_call = self
            .hang_on_call
            .into_iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect();
        Ok(Config {
            transport,
            startup_delay: self.startup_delay_ms.map(Duration::from_millis),
            exit_after: self.exit_after_ms.map(Duration::from_millis),
            exit_immediately_code: self.exit_immediately_code,
            knobs: Knobs {
                hang_on_call,
                hang_tools_list_after: self.hang_tools_list_after,
                fail_tools_list_after: self.fail_tools_list_after,
                tools_list_ttl_ms: self.tools_list_ttl_ms,
            },
        })
    }
}

/// Checks an endpoint path and drops a trailing slash.
fn normalize_path(path: &str) -> anyhow::Result<String> {
    if !path.starts_with('/') {
        bail!("the path must start with '/'");
    }
    if path.contains(['{', '}', '*', '?', '#']) {
        bail!("the path must be a plain path, without '{{', '}}', '*', '?' or '#'");
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let argv = std::iter::once("mcp-test-server").chain(args.iter().copied());
        Cli::try_parse_from(argv)?.into_config()
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path("/mcp/").ok().as_deref(), Some("/mcp"));
        assert_eq!(normalize_path("/").ok().as_deref(), Some("/"));
        assert_eq!(normalize_path("//").ok().as_deref(), Some("/"));
        assert!(normalize_path("mcp").is_err());
        assert!(normalize_path("/{id}").is_err());
    }

    #[test]
    fn flags_parse_into_knobs() -> anyhow::Result<()> {
        let config = parse(&[
            "--transport",
            "http",
            "--port",
            "9",
            "--hang-on-call",
            "echo,sleep",
            "--hang-on-call",
            "version",
            "--fail-tools-list-after",
            "2",
            "--startup-delay-ms",
            "5",
        ])?;
        let TransportConfig::Http(http) = &config.transport else {
            panic!("expected http: {config:?}");
        };
        assert_eq!(http.port, 9);
        assert_eq!(http.path, "/mcp");
        assert_eq!(http.bind.to_string(), "127.0.0.1");
        assert_eq!(config.knobs.hang_on_call.len(), 3);
        assert_eq!(config.knobs.fail_tools_list_after, Some(2));
        assert_eq!(config.startup_delay, Some(Duration::from_millis(5)));
        Ok(())
    }

    #[test]
    fn http_without_port_is_an_error() {
        // Only meaningful when the test environment does not set MCP_PORT.
        if std::env::var_os("MCP_PORT").is_none() {
            let error = parse(&["--transport", "http"]).err().map(|e| e.to_string());
            assert!(error.is_some_and(|e| e.contains("--port")));
        }
    }

    #[test]
    fn bad_numbers_are_rejected() {
        assert!(parse(&["--exit-after-ms", "soon"]).is_err());
        assert!(parse(&["--transport", "carrier-pigeon"]).is_err());
    }
}
