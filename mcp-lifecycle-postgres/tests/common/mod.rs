//! Helpers shared by the PostgreSQL tests: the server's URL from the
//! environment (skipping, with the reason, when there is none, unless
//! `MCP_LIFECYCLE_REQUIRE_POSTGRES=1`), and a schema of each test's own,
//! dropped when the test ends, so tests run in parallel on one database.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mcp_lifecycle_postgres::PostgresStore;

pub(crate) const URL_ENV: &str = "MCP_LIFECYCLE_POSTGRES_URL";
pub(crate) const CA_ENV: &str = "MCP_LIFECYCLE_POSTGRES_CA";

pub(crate) fn require() -> bool {
    std::env::var("MCP_LIFECYCLE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

pub(crate) fn skip<T>(test: &str, reason: &str) -> Option<T> {
    assert!(
        !require(),
        "{test}: {reason} (MCP_LIFECYCLE_REQUIRE_POSTGRES=1)"
    );
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// The test server's URL (`scripts/postgres.sh env`), or a skip.
pub(crate) fn url(test: &str) -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => skip(
            test,
            &format!("{URL_ENV} is not set (bash scripts/postgres.sh start, then its env)"),
        ),
    }
}

/// A schema name no other test (in this process or another) uses.
pub(crate) fn unique_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t_{:x}_{:x}_{n}", std::process::id(), nanos % (1 << 40))
}

/// A schema of the test's own on the test server, dropped (with
/// everything in it) when this is dropped.
pub(crate) struct TestSchema {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl TestSchema {
    pub(crate) fn new(test: &str) -> Option<TestSchema> {
        Some(TestSchema {
            url: url(test)?,
            name: unique_schema(),
        })
    }

    /// A store on this schema (each call: another pool, as another host).
    pub(crate) async fn store(&self) -> PostgresStore {
        PostgresStore::builder()
            .url(&self.url)
            .schema(&self.name)
            .build()
            .await
            .expect("PostgresStore::build")
    }

    /// A plain pool on the database (search_path unset), for checks.
    pub(crate) async fn admin(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A thread of its own: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
