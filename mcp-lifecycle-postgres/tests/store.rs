//! `PostgresStore` on a real PostgreSQL (`MCP_LIFECYCLE_POSTGRES_URL`, from
//! `scripts/postgres.sh`): the core's store conformance suite, hosts (one
//! pool each) racing for a lease, stale-token writes racing a grant, the
//! schema's migrations (concurrent, and refused when newer), TLS from the
//! URL, and what `build()` says when it cannot connect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CA_ENV, TestSchema, skip};
use mcp_lifecycle::ports::{Precondition, Store};
use mcp_lifecycle::testing::store_conformance;
use mcp_lifecycle::{Error, ErrorKind, Timestamp};
use mcp_lifecycle_postgres::PostgresStore;

const TTL: Duration = Duration::from_secs(30);

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_passes_the_conformance_suite() {
    let Some(schema) = TestSchema::new("the_store_passes_the_conformance_suite") else {
        return;
    };
    let store = schema.store().await;
    store_conformance::run_all(&store).await;
    store_conformance::concurrent_cas_increments_spawned(Arc::new(store.clone()), 8, 25).await;

    // Again on a second store (another pool) on the same, now non-empty,
    // schema: nothing is migrated twice and every check still holds.
    let again = schema.store().await;
    store_conformance::run_all(&again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemas_keep_stores_apart() {
    let (Some(a), Some(b)) = (
        TestSchema::new("schemas_keep_stores_apart"),
        TestSchema::new("schemas_keep_stores_apart"),
    ) else {
        return;
    };
    let (sa, sb) = (a.store().await, b.store().await);
    sa.put("servers", "k", b"a".to_vec(), Precondition::Absent, None)
        .await
        .unwrap();
    sb.put("servers", "k", b"b".to_vec(), Precondition::Absent, None)
        .await
        .expect("the same key in another schema is another record");
    assert_eq!(sa.list("servers").await.unwrap()[0].value, b"a".to_vec());
    assert_eq!(sb.list("servers").await.unwrap()[0].value, b"b".to_vec());
}

/// Corners the conformance suite leaves open: `delete` expecting `Absent`,
/// versions and tokens beyond what PostgreSQL's `bigint` holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_and_numbers_the_suite_does_not_cover() {
    let Some(schema) = TestSchema::new("preconditions_and_numbers_the_suite_does_not_cover") else {
        return;
    };
    let store = schema.store().await;
    store
        .delete("c", "missing", Precondition::Absent, None)
        .await
        .expect("deleting a missing record expecting Absent is a no-op");
    let v = store
        .put("c", "k", b"v".to_vec(), Precondition::Absent, None)
        .await
        .unwrap();
    let error = store
        .delete("c", "k", Precondition::Absent, None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::VersionConflict { .. }), "{error}");
    let error = store
        .put(
            "c",
            "k",
            b"x".to_vec(),
            Precondition::At(mcp_lifecycle::ports::Version(u64::MAX)),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::VersionConflict { .. }), "{error}");
    // A token above any granted one is not older than the newest: it passes.
    let lease = store
        .acquire_lease("l", "a", TTL, t(0))
        .await
        .unwrap()
        .unwrap();
    let far = mcp_lifecycle::ports::Fence {
        lease: lease.key.clone(),
        token: u64::MAX,
    };
    let v2 = store
        .put("c", "k", b"y".to_vec(), Precondition::At(v), Some(&far))
        .await
        .unwrap();
    assert!(v2 > v);
    assert_eq!(
        store.get("c", "k").await.unwrap().map(|r| r.value),
        Some(b"y".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_racing_for_a_lease_one_wins_and_stale_writes_are_fenced() {
    let test = "two_hosts_racing_for_a_lease_one_wins_and_stale_writes_are_fenced";
    let Some(schema) = TestSchema::new(test) else {
        return;
    };
    // Two hosts: two stores, two pools, one schema.
    let race = store_conformance::two_hosts_race_for_lapsed_leases(
        Arc::new(schema.store().await),
        Arc::new(schema.store().await),
        20,
    )
    .await;
    eprintln!("wins per host: {:?}", race.wins);
}

/// Stale-token writes in flight while the lease changes hands: once the new
/// holder's grant has returned, no write under the old token lands. The
/// new holder reads the record and writes it back at that version; with a
/// read-then-write fence check a deposed writer's write could land between
/// and make that compare-and-swap fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_write_lands_after_the_grant_returns() {
    let Some(schema) = TestSchema::new("no_stale_write_lands_after_the_grant_returns") else {
        return;
    };
    let old_host = schema.store().await;
    let new_host = schema.store().await;
    const WRITERS: usize = 6;
    // Bounds every wait below, so a broken store fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for round in 0..15 {
        let key = format!("lease-{round}");
        let old = old_host
            .acquire_lease(&key, "old", TTL, t(0))
            .await
            .unwrap()
            .unwrap();
        old_host
            .put("fenced", &key, b"0".to_vec(), Precondition::Any, None)
            .await
            .unwrap();
        // The deposed holder keeps writing until it is fenced out.
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, key, fence) = (old_host.clone(), key.clone(), old.fence());
                tokio::spawn(async move {
                    let mut landed = 0u64;
                    loop {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "a stale writer was never fenced out"
                        );
                        let value = format!("old-{w}-{landed}").into_bytes();
                        match store
                            .put("fenced", &key, value, Precondition::Any, Some(&fence))
                            .await
                        {
                            Ok(_) => landed += 1,
                            Err(Error::Fenced { .. }) => return landed,
                            Err(e) => panic!("unexpected error from a stale writer: {e}"),
                        }
                    }
                })
            })
            .collect();
        // Let the writers get going before the lease changes hands.
        loop {
            let rec = new_host.get("fenced", &key).await.unwrap().unwrap();
            if rec.value != b"0" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the stale writers never wrote"
            );
            tokio::task::yield_now().await;
        }
        let new = new_host
            .acquire_lease(&key, "new", TTL, old.expires_at + Duration::from_millis(1))
            .await
            .unwrap()
            .expect("the expired lease is granted");
        let seen = new_host.get("fenced", &key).await.unwrap().unwrap();
        let written = new_host
            .put(
                "fenced",
                &key,
                b"new".to_vec(),
                Precondition::At(seen.version),
                Some(&new.fence()),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: a stale write landed after the grant returned: {e}")
            });
        let mut landed = 0;
        for writer in writers {
            landed += writer.await.unwrap();
        }
        assert!(landed > 0, "round {round}: the stale writers never wrote");
        let rec = new_host.get("fenced", &key).await.unwrap().unwrap();
        assert_eq!(
            (rec.version, rec.value),
            (written, b"new".to_vec()),
            "round {round}: the new holder's write is the last"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_migrating_at_once_apply_each_migration_once() {
    let Some(schema) = TestSchema::new("hosts_migrating_at_once_apply_each_migration_once") else {
        return;
    };
    let builds: Vec<_> = (0..4)
        .map(|_| {
            let (url, name) = (schema.url.clone(), schema.name.clone());
            tokio::spawn(
                async move { PostgresStore::builder().url(url).schema(name).build().await },
            )
        })
        .collect();
    let mut stores = Vec::new();
    for build in builds {
        stores.push(build.await.unwrap().expect("every host builds"));
    }
    let admin = schema.admin().await;
    let applied: Vec<(i64, bool)> = sqlx::query_as(&format!(
        "SELECT version, success FROM {}._sqlx_migrations ORDER BY version",
        schema.name
    ))
    .fetch_all(&admin)
    .await
    .unwrap();
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied.len(), embedded, "{applied:?}");
    assert!(applied.iter().all(|(_, ok)| *ok), "{applied:?}");
    // Every host works on the result.
    for (i, store) in stores.iter().enumerate() {
        store
            .put("hosts", &i.to_string(), vec![], Precondition::Absent, None)
            .await
            .unwrap();
    }
    assert_eq!(stores[0].list("hosts").await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_crate_is_refused_and_left_alone() {
    let Some(schema) = TestSchema::new("a_schema_newer_than_the_crate_is_refused_and_left_alone")
    else {
        return;
    };
    let store = schema.store().await;
    let version = store
        .put("servers", "kept", b"v".to_vec(), Precondition::Absent, None)
        .await
        .unwrap();
    drop(store);
    // A newer release migrated this schema.
    let admin = schema.admin().await;
    let future = 99_990_001_i64;
    sqlx::query(&format!(
        "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer release', true, '\\x00', 1)",
        schema.name
    ))
    .bind(future)
    .execute(&admin)
    .await
    .unwrap();

    let error = PostgresStore::builder()
        .url(&schema.url)
        .schema(&schema.name)
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&future.to_string()) && message.contains(&schema.name),
        "{message}"
    );
    assert!(
        message.contains("never migrates a schema down"),
        "{message}"
    );
    // Nothing was touched: the future migration and the data are still there.
    let versions: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT version FROM {}._sqlx_migrations ORDER BY version",
        schema.name
    ))
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(versions.last(), Some(&future));
    let kept: i64 = sqlx::query_scalar(&format!(
        "SELECT version FROM {}.mcp_records WHERE key = 'kept'",
        schema.name
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(kept as u64, version.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_the_password_come_from_the_url() {
    let test = "tls_and_the_password_come_from_the_url";
    let Some(schema) = TestSchema::new(test) else {
        return;
    };
    let Ok(ca) = std::env::var(CA_ENV) else {
        return skip(test, &format!("{CA_ENV} is not set")).unwrap_or(());
    };
    let url = format!("{}?sslmode=verify-full&sslrootcert={ca}", schema.url);
    let store = PostgresStore::builder()
        .url(&url)
        .schema(&schema.name)
        .build()
        .await
        .unwrap();
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(tls, "sslmode=verify-full must give a TLS connection");
    store_conformance::basics(&store).await;

    // A CA that did not sign the server's certificate: verify-full refuses.
    let dir = std::env::temp_dir().join(common::unique_schema());
    std::fs::create_dir_all(&dir).unwrap();
    let other_ca = dir.join("other-ca.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let error = PostgresStore::builder()
        .url(format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            schema.url,
            other_ca.display()
        ))
        .schema(&schema.name)
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    let _ = std::fs::remove_dir_all(&dir);

    // A wrong password: Unavailable, naming the server and user, not the password.
    let wrong = "wrong-password-4c1d7e";
    let mut parsed = schema.url.clone();
    let at = parsed.rfind('@').unwrap();
    let colon = parsed[..at].rfind(':').unwrap();
    parsed.replace_range(colon + 1..at, wrong);
    let error = PostgresStore::builder()
        .url(parsed)
        .schema(&schema.name)
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    let message = format!("{error} {error:?}");
    assert!(message.contains("127.0.0.1:"), "{message}");
    assert!(!message.contains(wrong), "the password leaked: {message}");
}

/// Needs no server: nothing listens on the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_naming_the_host_not_the_password() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let password = "s3cret-not-for-logs";
    let builder = PostgresStore::builder()
        .url(format!(
            "postgres://mcp:{password}@127.0.0.1:{port}/mcp?sslmode=prefer"
        ))
        .connect_timeout(Duration::from_secs(5));
    assert!(!format!("{builder:?}").contains(password));
    let error = builder.build().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    let message = format!("{error} {error:?}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains(password),
        "the password leaked: {message}"
    );
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_invalid() {
    for (url, schema) in [
        ("postgres://u:p@127.0.0.1:notaport/db", "ok"),
        ("postgres://u:p@127.0.0.1:1/db", "Not-OK"),
        ("postgres://u:p@127.0.0.1:1/db", "a;drop schema public"),
    ] {
        let error = PostgresStore::builder()
            .url(url)
            .schema(schema)
            .build()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Invalid, "{url} {schema}: {error}");
        assert!(!error.to_string().contains("u:p@"), "{error}");
    }
}
