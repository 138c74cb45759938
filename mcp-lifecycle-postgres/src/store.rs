//! [`PostgresStore`]: the handle, its builder, and the [`Store`] port on it.
//!
//! This file owns what `build()` does (parse the URL, connect once to check
//! the database answers, create and migrate the schema, open the pool, then
//! start listening for change announcements)
//! and how the port's methods reach the statements in `records` and
//! `leases`. It holds no SQL of its own beyond the connection settings, and
//! never formats the URL or the connection options (they hold the password).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use mcp_lifecycle::ports::{Fence, Lease, Precondition, Record, Store, StoreChange, Version};
use mcp_lifecycle::{Error, Result, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::changes::Changes;
use crate::leases::Leases;
use crate::records::Records;
use crate::schema;

/// The schema a store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "mcp_lifecycle";

/// A [`Store`] in a PostgreSQL database, shared by host replicas on any
/// number of machines.
///
/// - **Records** are rows of `mcp_records` (collection, key, version, value
///   as `bytea`). A [`Version`] is a value of the schema's sequence
///   `mcp_revision`, taken by the statement that writes, so versions are
///   store-wide and never reused.
/// - **Compare-and-swap is one statement**: `Precondition::At(v)` is an
///   `UPDATE … WHERE version = v RETURNING version`, `Absent` an `INSERT … ON
///   CONFLICT DO NOTHING`, `Any` an upsert. PostgreSQL's row locks make each
///   atomic: of two writers at the same version exactly one succeeds.
/// - **Leases** are rows of `mcp_leases` holding the holder, the expiry (the
///   caller's `now` plus the TTL; the database's clock is never read) and the
///   newest token ever granted. Acquire is one `INSERT … ON CONFLICT DO
///   UPDATE … WHERE` that grants only a free, expired or own lease and
///   increments the token in the database; renew and release are one
///   `UPDATE` each, matching holder and token. Rows are never deleted.
/// - **Fencing is in the write's own statement**: the write reads the
///   lease's row `FOR SHARE` and writes only if its token is not older. A
///   grant of a newer token must lock that row exclusively, so it waits for
///   a fenced write in flight to commit, and a write that starts after the
///   grant sees the newer token: a deposed holder's write never lands after
///   its successor was granted the lease.
/// - **Schema**: everything lives in one PostgreSQL schema (default
///   [`DEFAULT_SCHEMA`]), which `build()` creates and migrates with the
///   migrations embedded in this crate. Several stores can share a database
///   under different schemas. A schema migrated by a newer release of this
///   crate is refused ([`mcp_lifecycle::ErrorKind::Invalid`]), never migrated
///   down; hosts that start at once migrate one after another under an
///   advisory lock.
/// - **Change announcements**: every committed record write fires a trigger
///   that NOTIFYs channel `mcp_lifecycle_changes`; the store LISTENs on one
///   connection of its pool (opened by `build()`, so nothing written after
///   a subscription is missed) and offers the announcements as
///   [`Store::changes`]. The leader of hosts sharing the store thereby acts
///   on a host call made on any standby at once, not at its next lease
///   renewal. A lost listening connection is reopened with backoff and
///   announced as `StoreChange::Missed`.
///   [`PostgresStoreBuilder::announce_changes`] turns this off.
/// - **Connection**: a sqlx pool from a `postgres://` URL; the password and
///   TLS (`sslmode=require`, `verify-ca`, `verify-full` with `sslrootcert`)
///   come from the URL, and TLS is rustls. Errors never contain the URL.
///
/// ```no_run
/// # async fn run() -> mcp_lifecycle::Result<()> {
/// use std::sync::Arc;
/// use mcp_lifecycle_postgres::PostgresStore;
///
/// let store = PostgresStore::builder()
///     .url("postgres://mcp:secret@db.internal:5432/mcp?sslmode=verify-full")
///     .schema("gateway")
///     .build()
///     .await?;
/// // …and hand it to every host's Lifecycle, with leader election on.
/// let builder = mcp_lifecycle::Lifecycle::builder().store(Arc::new(store));
/// # let _ = builder; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Arc<str>,
    /// `host:port`, for errors and `Debug`.
    server: Arc<str>,
    /// The change listener, unless turned off.
    changes: Option<Arc<Changes>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.server)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A builder; give it a URL or connection options.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    /// The schema this store keeps its tables in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The server as `host:port` (no credentials).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The connection pool (every connection's `search_path` is the
    /// store's schema), for a host that wants to close it or read its size.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn records(&self) -> Records<'_> {
        Records {
            pool: &self.pool,
            server: &self.server,
        }
    }

    fn leases(&self) -> Leases<'_> {
        Leases {
            pool: &self.pool,
            server: &self.server,
        }
    }
}

/// Builds a [`PostgresStore`].
pub struct PostgresStoreBuilder {
    url: Option<String>,
    options: Option<PgConnectOptions>,
    schema: String,
    max_connections: u32,
    connect_timeout: Duration,
    announce_changes: bool,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        PostgresStoreBuilder {
            url: None,
            options: None,
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
            announce_changes: true,
        }
    }
}

impl std::fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the URL nor the options: both may hold the password.
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("announce_changes", &self.announce_changes)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// The database, as a libpq-style URL:
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=/path/ca.pem`.
    /// Percent-encode special characters in the password.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Connection options the host built itself (instead of a URL).
    pub fn connect_options(mut self, options: PgConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The PostgreSQL schema to keep the tables in: hosts that share state
    /// use the same database and schema. A lowercase identifier. Default:
    /// [`DEFAULT_SCHEMA`].
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Whether the store listens for change announcements and offers them
    /// as [`Store::changes`] (default: yes). Listening holds one of the
    /// pool's connections for the store's lifetime; without it, hosts
    /// learn of each other's writes at their lease renewals only.
    pub fn announce_changes(mut self, on: bool) -> Self {
        self.announce_changes = on;
        self
    }

    /// The most connections the pool opens (the change listener holds one
    /// of them). Default: 8.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long `build()` waits for the first connection, and a statement
    /// waits for a free connection from the pool. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects, creates and migrates the schema, and opens the pool.
    ///
    /// A database that cannot be reached or refuses the connection (wrong
    /// password, no such database, TLS required and failing) is
    /// [`mcp_lifecycle::ErrorKind::Unavailable`] naming `host:port`; a bad URL or
    /// schema name, or a schema a newer release migrated, is
    /// [`mcp_lifecycle::ErrorKind::Invalid`].
    pub async fn build(self) -> Result<PostgresStore> {
        let options = match (self.options, self.url) {
            (Some(options), _) => options,
            (None, Some(url)) => PgConnectOptions::from_str(&url).map_err(|e| {
                // sqlx's parse errors describe the problem, not the URL.
                Error::invalid("PostgreSQL URL", e.to_string())
            })?,
            (None, None) => {
                return Err(Error::invalid(
                    "PostgreSQL store",
                    "no URL or connection options given",
                ));
            }
        };
        schema::check_schema_name(&self.schema)
            .map_err(|reason| Error::invalid("PostgreSQL schema name", reason))?;
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let options = options.options([("search_path", self.schema.as_str())]);

        let mut conn = connect_once(&options, &server, self.connect_timeout).await?;
        let prepared = schema::prepare(&mut conn, &self.schema, &server).await;
        if let Err(e) = conn.close().await {
            tracing::debug!(server, error = %e, "closing the migration connection failed");
        }
        prepared?;

        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.connect_timeout)
            .connect_lazy_with(options);
        let changes = if self.announce_changes {
            Some(Arc::new(
                Changes::start(&pool, &self.schema, &server).await?,
            ))
        } else {
            None
        };
        tracing::debug!(server, schema = self.schema, "PostgreSQL store ready");
        Ok(PostgresStore {
            pool,
            schema: self.schema.into(),
            server: server.into(),
            changes,
        })
    }
}

/// One connection attempt, so `build()` reports the real reason (refused,
/// authentication failed, no such database) rather than a pool timeout.
async fn connect_once(
    options: &PgConnectOptions,
    server: &str,
    timeout: Duration,
) -> Result<PgConnection> {
    let what = format!("PostgreSQL store at {server}");
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    match tokio::time::timeout(timeout, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Error::unavailable(
            what,
            format!("cannot connect to database `{database}` as `{user}`: {e}"),
        )),
        Err(_) => Err(Error::unavailable(
            what,
            format!("no connection to database `{database}` within {timeout:?}"),
        )),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        self.records().get(collection, key).await
    }

    async fn list(&self, collection: &str) -> Result<Vec<Record>> {
        self.records().list(collection).await
    }

    async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version> {
        self.records()
            .put(collection, key, value, expect, fence)
            .await
    }

    async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()> {
        self.records().delete(collection, key, expect, fence).await
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        self.leases().acquire(key, holder, ttl, now).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease> {
        self.leases().renew(lease, ttl, now).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.leases().release(lease).await
    }

    fn changes(&self) -> Option<BoxStream<'static, StoreChange>> {
        self.changes.as_ref().map(|changes| changes.subscribe())
    }
}
