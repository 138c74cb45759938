//! Store operations per second on a real PostgreSQL
//! (`MCP_LIFECYCLE_POSTGRES_URL`): compare-and-swap writes and lease
//! renewals, from 1 and from 16 concurrent clients (each on its own key, so
//! the figure is the statements' cost, not contention). Then the hand-over
//! latency: two hosts (`Lifecycle`s, each on its own `PostgresStore` pool,
//! leader election with renewals 30 s apart) on the fake runtime; a scale
//! made on the standby, until the leader has started the new instance,
//! median and p99 against the goal (p99 under 100 ms). Runs in schemas of its
//! own, dropped at the end. `STORE_BENCH_SECS` sets each window (default
//! 3 s), `STORE_BENCH_HANDOVERS` the hand-over samples (default 100).
//!
//! `cargo bench -p mcp-lifecycle-postgres --bench store_ops`

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_lifecycle::ports::{Precondition, Store};
use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, fake_digest};
use mcp_lifecycle::{
    LeaderElection, Lifecycle, LifecycleConfig, Limits, ServerSpec, Source, Timestamp,
};
use mcp_lifecycle_postgres::PostgresStore;
use sqlx::Connection;

const TTL: Duration = Duration::from_secs(30);

/// The hand-over goal: p99 of change written on a standby → leader acts.
const HANDOVER_GOAL: Duration = Duration::from_millis(100);

/// Renewals this far apart cannot be what picks a change up in the window
/// of one sample: only the store's change announcements can.
const RENEW_EVERY: Duration = Duration::from_secs(30);

/// The hand-over server's image, in the fake runtime's catalog.
const IMAGE: &str = "bench.local/tools:1";

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

/// A host on its own pool in `schema`, with leader election.
async fn host(
    url: &str,
    schema: &str,
    name: &str,
    runtime: &FakeOrchestrator,
    max_replicas: u32,
) -> Lifecycle {
    let store = PostgresStore::builder()
        .url(url)
        .schema(schema)
        .build()
        .await
        .unwrap();
    Lifecycle::builder()
        .orchestrator(Arc::new(runtime.clone()))
        .prober(Arc::new(FakeProber::new()))
        .store(Arc::new(store))
        .config(LifecycleConfig {
            holder_id: Some(name.to_owned()),
            leader_election: Some(LeaderElection {
                lease_ttl: RENEW_EVERY * 3,
                renew_every: RENEW_EVERY,
            }),
            limits: Limits {
                max_replicas,
                ..Limits::default()
            },
            ..LifecycleConfig::default()
        })
        .build()
        .await
        .unwrap()
}

/// Waits until the fake runtime runs `count` instances; the time it took.
async fn until_running(runtime: &FakeOrchestrator, count: usize, began: Instant) -> Duration {
    loop {
        if runtime.instances().len() >= count {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < RENEW_EVERY / 2,
            "the leader did not start instance {count} within {:?}",
            RENEW_EVERY / 2
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Scale on the standby → the leader starts the instance, `samples` times.
async fn hand_over(url: &str, schema: &str, samples: usize) {
    let runtime = FakeOrchestrator::new();
    runtime.catalog().push(IMAGE, fake_digest("bench"));
    // Each sample scales up by one, so no scale-down is measured.
    let max = u32::try_from(samples + 1).unwrap_or(u32::MAX);
    let leader = host(url, schema, "bench-leader", &runtime, max).await;
    // The first host built takes the lease at once; the second stands by.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let standby = host(url, schema, "bench-standby", &runtime, max).await;
    standby
        .apply(ServerSpec::new("handover", Source::Image(IMAGE.into())))
        .await
        .unwrap();
    until_running(&runtime, 1, Instant::now()).await;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let want = i + 2;
        let began = Instant::now();
        standby.scale("handover", want as u32).await.unwrap();
        latencies.push(until_running(&runtime, want, began).await);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    println!(
        "hand-over       scale on a standby -> leader starts the instance ({samples} samples, renewals every {}s): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        RENEW_EVERY.as_secs(),
        ms(median),
        ms(p99),
        ms(latencies[latencies.len() - 1])
    );
    let verdict = if p99 < HANDOVER_GOAL { "PASS" } else { "FAIL" };
    println!(
        "hand-over       {verdict} (goal: p99 under {} ms)",
        HANDOVER_GOAL.as_millis()
    );
    standby.shutdown().await.unwrap();
    leader.shutdown().await.unwrap();
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
                // 16 clients, and the change listener.
                .max_connections(17)
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
        let handover_schema = format!("{schema}_handover");
        let samples = std::env::var("STORE_BENCH_HANDOVERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100usize)
            .max(1);
        hand_over(&url, &handover_schema, samples).await;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for schema in [schema, handover_schema] {
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    });
}
