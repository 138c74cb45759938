//! Store operations per second on a real PostgreSQL
//! (`MCP_LIFECYCLE_POSTGRES_URL`): compare-and-swap writes and lease
//! renewals, from 1 and from 16 concurrent clients (each on its own key, so
//! the figure is the statements' cost, not contention). Runs in a schema of
//! its own, dropped at the end. `STORE_BENCH_SECS` sets each window
//! (default 3 s).
//!
//! `cargo bench -p mcp-lifecycle-postgres --bench store_ops`

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_lifecycle::Timestamp;
use mcp_lifecycle::ports::{Precondition, Store};
use mcp_lifecycle_postgres::PostgresStore;
use sqlx::Connection;

const TTL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Op {
    CasWrite,
    LeaseRenewal,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::CasWrite => "CAS writes",
            Op::LeaseRenewal => "lease renewals",
        }
    }
}

/// One client's loop until `until`; returns how many operations it did.
async fn client(store: Arc<PostgresStore>, op: Op, id: usize, until: Instant) -> u64 {
    let key = format!("client-{id}");
    let mut done = 0;
    match op {
        Op::CasWrite => {
            let mut version = store
                .put("bench", &key, b"0".to_vec(), Precondition::Any, None)
                .await
                .unwrap();
            while Instant::now() < until {
                version = store
                    .put(
                        "bench",
                        &key,
                        done.to_string().into_bytes(),
                        Precondition::At(version),
                        None,
                    )
                    .await
                    .unwrap();
                done += 1;
            }
        }
        Op::LeaseRenewal => {
            let mut lease = store
                .acquire_lease(&key, &key, TTL, Timestamp::now_system())
                .await
                .unwrap()
                .unwrap();
            while Instant::now() < until {
                lease = store
                    .renew_lease(&lease, TTL, Timestamp::now_system())
                    .await
                    .unwrap();
                done += 1;
            }
        }
    }
    done
}

fn main() {
    let Ok(url) = std::env::var("MCP_LIFECYCLE_POSTGRES_URL") else {
        assert!(
            std::env::var("MCP_LIFECYCLE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "MCP_LIFECYCLE_POSTGRES_URL is not set (MCP_LIFECYCLE_REQUIRE_POSTGRES=1)"
        );
        println!("SKIPPED store_ops: MCP_LIFECYCLE_POSTGRES_URL is not set");
        return;
    };
    let secs: u64 = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let schema = format!("bench_{}", std::process::id());
        let store = Arc::new(
            PostgresStore::builder()
                .url(&url)
                .schema(&schema)
                .max_connections(16)
                .build()
                .await
                .unwrap(),
        );
        for op in [Op::CasWrite, Op::LeaseRenewal] {
            for clients in [1usize, 16] {
                let started = Instant::now();
                let until = started + Duration::from_secs(secs);
                let tasks: Vec<_> = (0..clients)
                    .map(|id| tokio::spawn(client(Arc::clone(&store), op, id, until)))
                    .collect();
                let mut total = 0;
                for task in tasks {
                    total += task.await.unwrap();
                }
                let rate = total as f64 / started.elapsed().as_secs_f64();
                println!(
                    "{:<15} {clients:>2} client(s): {rate:>8.0} ops/s ({total} in {:.1} s)",
                    op.name(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        store.pool().close().await;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
}
