//! A PostgreSQL store URL as mcpd holds it: the whole URL behind a
//! redacting type, its password registered for log redaction on its own,
//! and a form without credentials (`postgresql://host:port/db`) for logs
//! and errors.

use mcp_lifecycle::SecretValue;

/// A `postgres://` or `postgresql://` URL. `Debug` and `Display` show no
/// credentials.
#[derive(Clone)]
pub(crate) struct PostgresUrl {
    url: SecretValue,
    /// Held so the password stays registered for redaction.
    _password: Option<SecretValue>,
    shown: String,
}

impl PostgresUrl {
    /// Whether `text` names a PostgreSQL database rather than a file.
    pub(crate) fn is_postgres(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// Wraps `text`, which [`Self::is_postgres`] accepted.
    pub(crate) fn new(text: &str) -> Self {
        let (scheme, rest) = text.split_once("://").unwrap_or(("postgresql", text));
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let password = userinfo
            .and_then(|u| u.split_once(':'))
            .map(|(_, password)| password)
            .filter(|p| !p.is_empty())
            .map(SecretValue::new);
        let database = tail.split('?').next().unwrap_or_default();
        PostgresUrl {
            url: SecretValue::new(text),
            _password: password,
            shown: format!("{scheme}://{host}{database}"),
        }
    }

    /// The URL to connect with. Never log it.
    pub(crate) fn expose(&self) -> &str {
        self.url.expose()
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for PostgresUrl {}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_host_and_database_never_credentials() {
        let url = PostgresUrl::new(
            "postgres://mcpd:pa55-w0rd@db.internal:5433/state?sslmode=verify-full&sslrootcert=/ca.pem",
        );
        assert_eq!(url.to_string(), "postgres://db.internal:5433/state");
        let debug = format!("{url:?}");
        assert!(
            !debug.contains("pa55-w0rd") && !debug.contains("mcpd:"),
            "{debug}"
        );
        assert!(url.expose().contains("pa55-w0rd"));
        let bare = PostgresUrl::new("postgresql://localhost");
        assert_eq!(bare.to_string(), "postgresql://localhost");
        assert!(PostgresUrl::is_postgres("postgresql://x"));
        assert!(!PostgresUrl::is_postgres("/var/lib/mcpd/postgres.redb"));
    }
}
