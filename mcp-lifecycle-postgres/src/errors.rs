//! How sqlx's errors become the core's [`Error`] kinds.
//!
//! This file owns the one mapping every statement of the store goes through:
//! a database that cannot be reached, refuses connections for now or dropped
//! the connection is [`Error::Unavailable`] naming `host:port` (retrying later
//! may succeed); anything else the database said is [`Error::Backend`]. It
//! never formats the connection URL or options, so no password can reach a
//! message.

use mcp_lifecycle::Error;

/// Which backend errors name.
pub(crate) const BACKEND: &str = "postgres";

/// SQLSTATE classes and codes that mean "not now" rather than "never":
/// connection exceptions (08), operator intervention (57P01-57P05: shutdown,
/// crash, cannot connect now), too many connections, serialization failures
/// and deadlocks (a retry of the same statement may succeed).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || matches!(code, "53300" | "40001" | "40P01")
}

/// Whether `error` says the database could not be reached or used for now.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// Maps a failed statement: `Unavailable` naming `server` (`host:port`), or
/// `Backend` saying what the store was `doing`.
pub(crate) fn map_sqlx(server: &str, doing: impl Into<String>, error: sqlx::Error) -> Error {
    if is_unavailable(&error) {
        let doing = doing.into();
        return Error::unavailable(
            format!("PostgreSQL store at {server}"),
            format!("{error} (while {doing})"),
        );
    }
    Error::backend(BACKEND, doing, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_lifecycle::ErrorKind;

    #[test]
    fn io_and_pool_errors_are_unavailable_and_name_the_server() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error = map_sqlx("db.example:5432", "reading servers/a", refused);
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        assert!(error.to_string().contains("db.example:5432"), "{error}");
        let error = map_sqlx("db.example:5432", "listing", sqlx::Error::PoolTimedOut);
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        let error = map_sqlx("db.example:5432", "decoding", sqlx::Error::RowNotFound);
        assert_eq!(error.kind(), ErrorKind::Backend, "{error}");
    }

    #[test]
    fn transient_sqlstates() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "40P01",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "28P01", "22021"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }
}
