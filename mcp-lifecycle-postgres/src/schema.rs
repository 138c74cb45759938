//! The store's schema: created and migrated by the crate, never migrated
//! down.
//!
//! This file owns the embedded migrations (`migrations/*.sql`, through
//! `sqlx::migrate!`) and the steps `build()` runs on its first connection,
//! under a PostgreSQL advisory lock for the store's schema:
//!
//! 1. create the schema if it is missing;
//! 2. refuse a schema that a newer release of this crate migrated (its
//!    `_sqlx_migrations` table lists a version this crate does not have):
//!    running against it could undo or misread what the newer release
//!    relies on, so the host must be upgraded instead;
//! 3. apply the missing migrations with sqlx's migrator, which takes its own
//!    advisory lock on the database and applies each migration in a
//!    transaction.
//!
//! Hosts that start at once therefore migrate one after another: the first
//! creates and migrates, the others wait on the lock and then find nothing
//! left to do. A failure leaves the locks to die with the connection, which
//! the caller closes.

use mcp_lifecycle::{Error, Result};
use sqlx::PgConnection;
use sqlx::migrate::{MigrateError, Migrator};

use crate::errors::map_sqlx;

/// The embedded migrations.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!();

/// The newest schema version this crate knows.
pub(crate) fn newest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Whether `name` is a schema name the store accepts: a lowercase SQL
/// identifier that needs no quoting (it is also written into the
/// connection's `search_path`).
pub(crate) fn check_schema_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "`{name}` is not a lowercase SQL identifier (a-z, 0-9 and _, not starting with a digit, at most 63 bytes)"
        ));
    }
    if name.starts_with("pg_") {
        return Err(format!(
            "`{name}`: names starting with pg_ are reserved by PostgreSQL"
        ));
    }
    Ok(())
}

/// Creates and migrates `schema` on `conn` (whose `search_path` is `schema`).
pub(crate) async fn prepare(conn: &mut PgConnection, schema: &str, server: &str) -> Result<()> {
    let lock_key = format!("mcp-lifecycle-postgres/{schema}");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_sqlx(server, format!("locking schema {schema} for migration"), e))?;
    let result = prepare_locked(conn, schema, server).await;
    // On failure the lock goes with the connection, which the caller closes.
    if result.is_ok() {
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&lock_key)
            .execute(&mut *conn)
            .await
            .map_err(|e| map_sqlx(server, format!("unlocking schema {schema}"), e))?;
    }
    result
}

async fn prepare_locked(conn: &mut PgConnection, schema: &str, server: &str) -> Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| map_sqlx(server, format!("looking for schema {schema}"), e))?;
    if !exists {
        // The name was checked to be a plain identifier.
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| map_sqlx(server, format!("creating schema {schema}"), e))?;
    }
    refuse_newer(conn, schema, server).await?;
    // `run_direct` is `run` on a connection we already hold (the one with our
    // lock): `run(&mut conn)` goes through `Acquire`, whose future is not
    // `Send` for every lifetime, so `build()` could not be spawned.
    MIGRATOR
        .run_direct(&mut *conn)
        .await
        .map_err(|e| migrate_error(e, schema, server))
}

/// Fails if the schema was migrated past what this crate knows.
async fn refuse_newer(conn: &mut PgConnection, schema: &str, server: &str) -> Result<()> {
    let doing = || format!("reading the migrations applied to schema {schema}");
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| map_sqlx(server, doing(), e))?;
    if !has_table {
        return Ok(());
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| map_sqlx(server, doing(), e))?;
    let unknown: Vec<i64> = applied
        .into_iter()
        .filter(|v| MIGRATOR.iter().all(|m| m.version != *v))
        .collect();
    match unknown.as_slice() {
        [] => Ok(()),
        versions => Err(newer_schema(schema, server, versions)),
    }
}

fn newer_schema(schema: &str, server: &str, versions: &[i64]) -> Error {
    let list = versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Error::invalid(
        format!("PostgreSQL schema `{schema}` at {server}"),
        format!(
            "it has migration(s) {list} applied, newer than this mcp-lifecycle-postgres knows \
             (up to {}); it never migrates a schema down: upgrade this host to the release \
             the other hosts run",
            newest_known()
        ),
    )
}

fn migrate_error(error: MigrateError, schema: &str, server: &str) -> Error {
    match error {
        // Another migrator raced past the check above (without our lock).
        MigrateError::VersionMissing(version) => newer_schema(schema, server, &[version]),
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
            map_sqlx(server, format!("migrating schema {schema}"), e)
        }
        other => Error::backend(
            crate::errors::BACKEND,
            format!("migrating schema {schema}"),
            other,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["mcp_lifecycle", "_x", "a1", "t_0123456789abcdef"] {
            assert!(check_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Mcp",
            "a-b",
            "a b",
            "a;drop",
            "pg_x",
            &"a".repeat(64),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(!versions.is_empty());
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(newest_known(), *versions.last().unwrap_or(&0));
    }
}
