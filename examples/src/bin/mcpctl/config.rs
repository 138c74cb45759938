//! Where mcpd is and which token to send: flags, then environment variables
//! (both read by clap), then the config file, in that order. Owns the config
//! file's format and default path; prints nothing and never logs the token.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cli::ConnectionFlags;

/// The address used when nothing names one: mcpd's default listen address.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The config file: `server: URL`, `token: TOKEN`, both optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// mcpd's address.
    #[serde(default)]
    pub(crate) server: Option<String>,
    /// The bearer token.
    #[serde(default)]
    pub(crate) token: Option<String>,
}

/// The resolved connection settings.
#[derive(Clone)]
pub(crate) struct Connection {
    /// mcpd's base URL, with a scheme and without a trailing slash.
    pub(crate) server: String,
    /// The bearer token, if any (mcpd answers 401 without one).
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The default config file path, if a home or config directory is known.
fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("mcpctl").join("config.yaml"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
    Some(
        PathBuf::from(home)
            .join(".config")
            .join("mcpctl")
            .join("config.yaml"),
    )
}

/// Reads a config file. A named file must exist; the default one may not.
fn read_file(path: &Path, must_exist: bool) -> anyhow::Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(ConfigFile::default());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `host:port` becomes `http://host:port`; a trailing slash goes.
fn normalize(server: &str) -> anyhow::Result<String> {
    let server = server.trim().trim_end_matches('/');
    if server.is_empty() {
        bail!("the server address is empty");
    }
    if server.starts_with("http://") || server.starts_with("https://") {
        Ok(server.to_owned())
    } else if server.contains("://") {
        bail!("the server address {server:?} is not http:// or https://");
    } else {
        Ok(format!("http://{server}"))
    }
}

impl Connection {
    /// Flags and environment (already merged by clap) over the config file.
    pub(crate) fn resolve(flags: &ConnectionFlags) -> anyhow::Result<Connection> {
        let file = match &flags.config {
            Some(path) => read_file(path, true)?,
            None => match default_path() {
                Some(path) => read_file(&path, false)?,
                None => ConfigFile::default(),
            },
        };
        let server = flags
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = flags.token.clone().or(file.token).filter(|t| !t.is_empty());
        Ok(Connection {
            server: normalize(&server)?,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_means_http_and_a_trailing_slash_goes() {
        assert_eq!(normalize("127.0.0.1:9").unwrap(), "http://127.0.0.1:9");
        assert_eq!(normalize("http://h:1/").unwrap(), "http://h:1");
        assert!(normalize("ftp://h").is_err());
        assert!(normalize(" ").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server: file:1\ntoken: from-file\n").unwrap();
        let flags = ConnectionFlags {
            server: None,
            token: Some("from-flag".into()),
            config: Some(path.clone()),
        };
        let c = Connection::resolve(&flags).unwrap();
        assert_eq!(c.server, "http://file:1");
        assert_eq!(c.token.as_deref(), Some("from-flag"));
        assert!(!format!("{c:?}").contains("from-flag"));

        std::fs::write(&path, "sever: typo\n").unwrap();
        assert!(Connection::resolve(&flags).is_err());
        let missing = ConnectionFlags {
            config: Some(dir.path().join("absent.yaml")),
            ..flags
        };
        assert!(Connection::resolve(&missing).is_err());
    }
}
