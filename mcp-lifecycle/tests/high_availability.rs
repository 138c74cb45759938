//! Several hosts on one store and one runtime, with leader election: one
//! leader acts, standbys take over when it goes, and nothing is done twice.

use std::sync::Arc;
use std::time::Duration;

use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::state::{Freshness, ServerPhase};
use mcp_lifecycle::testing::{
    FakeOrchestrator, FakeProber, FakeResolver, ImageCatalog, fake_digest,
};
use mcp_lifecycle::{
    InMemoryStore, LeaderElection, Lifecycle, LifecycleConfig, LifecycleEventKind, ServerSpec,
    Source, Store, TokioClock,
};

const TAG: &str = "registry.local/tools:latest";
const REPO: &str = "registry.local/tools";

struct Cluster {
    catalog: ImageCatalog,
    runtime: FakeOrchestrator,
    resolver: FakeResolver,
    store: Arc<InMemoryStore>,
    clock: Arc<TokioClock>,
}

impl Cluster {
    fn new() -> Self {
        let catalog = ImageCatalog::new();
        let v1 = fake_digest("v1");
        catalog.push(TAG, v1.clone());
        catalog.push(format!("{REPO}@{v1}"), v1);
        let clock = Arc::new(TokioClock::new());
        Cluster {
            runtime: FakeOrchestrator::builder()
                .with_catalog(catalog.clone())
                .with_clock(clock.clone())
                .build(),
            resolver: FakeResolver::new(catalog.clone()),
            catalog,
            store: Arc::new(InMemoryStore::new()),
            clock,
        }
    }

    async fn host(&self, name: &str) -> Lifecycle {
        Lifecycle::builder()
            .orchestrator(Arc::new(self.runtime.clone()))
            .prober(Arc::new(FakeProber::new()))
            .resolver(Arc::new(self.resolver.clone()))
            .store(self.store.clone() as Arc<dyn Store>)
            .clock(self.clock.clone())
            .config(LifecycleConfig {
                holder_id: Some(name.to_owned()),
                leader_election: Some(LeaderElection::default()),
                freshness_tick: Duration::from_secs(1),
                ..LifecycleConfig::default()
            })
            .build()
            .await
            .unwrap()
    }

    fn running_instances(&self) -> usize {
        self.runtime.instances().len()
    }
}

async fn leader_status(hosts: &[&Lifecycle]) -> Option<mcp_lifecycle::ServerStatus> {
    for h in hosts {
        if let Ok(s) = h.status("tools").await
            && s.phase == ServerPhase::Running
        {
            return Some(s);
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn one_leader_acts_and_a_standby_takes_over_without_duplicates() {
    let c = Cluster::new();
    let a = c.host("host-a").await;
    let b = c.host("host-b").await;
    let d = c.host("host-c").await;
    let mut spec = ServerSpec::new("tools", Source::Image(TAG.into()));
    spec.replicas = 2;
    spec.update = UpdatePolicy {
        check: true,
        auto_reinstall: false,
    };
    // Applied through a standby or the leader alike: the store carries it.
    b.apply(spec).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(c.running_instances(), 2);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            c.running_instances(),
            2,
            "three hosts, still exactly the desired instances"
        );
    }
    let starts: Vec<u64> = c
        .runtime
        .instances()
        .iter()
        .map(|i| i.start_count)
        .collect();
    assert_eq!(starts, [1, 1]);
    let s = leader_status(&[&a, &b, &d])
        .await
        .expect("the leader reports Running");
    assert_eq!(s.ready, 2);

    // The first host built took the lease; drop it without a goodbye.
    drop(a);
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        c.running_instances(),
        2,
        "a standby adopted the running instances"
    );
    let starts: Vec<u64> = c
        .runtime
        .instances()
        .iter()
        .map(|i| i.start_count)
        .collect();
    assert_eq!(starts, [1, 1], "adopted, not restarted");
    let s = leader_status(&[&b, &d])
        .await
        .expect("a new leader reports Running");
    assert_eq!(s.ready, 2);
    // The new leader still acts: a scale through either host converges.
    d.scale("tools", 3).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(c.running_instances(), 3);
}

#[tokio::test(start_paused = true)]
async fn three_hosts_checking_at_once_reinstall_exactly_once() {
    let c = Cluster::new();
    let hosts = [
        c.host("host-a").await,
        c.host("host-b").await,
        c.host("host-c").await,
    ];
    let mut events: Vec<_> = hosts.iter().map(|h| h.subscribe()).collect();
    let mut spec = ServerSpec::new("tools", Source::Image(TAG.into()));
    spec.replicas = 2;
    hosts[0].apply(spec).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(c.running_instances(), 2);

    let v2 = fake_digest("v2");
    c.catalog.push(TAG, v2.clone());
    c.catalog.push(format!("{REPO}@{v2}"), v2.clone());
    let (r0, r1, r2) = tokio::join!(
        hosts[0].check_updates_now("tools"),
        hosts[1].check_updates_now("tools"),
        hosts[2].check_updates_now("tools"),
    );
    for r in [r0, r1, r2] {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    let rollouts: usize = events
        .iter_mut()
        .map(|rx| {
            let mut n = 0;
            while let Ok(e) = rx.try_recv() {
                if e.kind == LifecycleEventKind::FreshnessChanged
                    && e.message.starts_with("rolling out")
                {
                    n += 1;
                }
            }
            n
        })
        .sum();
    assert_eq!(rollouts, 1, "exactly one reinstall across three hosts");
    let instances = c.runtime.instances();
    assert_eq!(instances.len(), 2);
    for i in &instances {
        assert_eq!(i.observation.image_digest.as_deref(), Some(v2.as_str()));
    }
    let s = leader_status(&[&hosts[0], &hosts[1], &hosts[2]])
        .await
        .unwrap();
    assert_eq!(
        s.update.state,
        Freshness::UpToDate { digest: v2 },
        "{}",
        s.to_table()
    );
}

/// A host call made on a standby reaches the leader through the store's
/// change announcements, not at the leader's next renewal: with renewals a
/// minute apart, the leader starts what a standby applied, and scales what a
/// standby scaled, within a second.
#[tokio::test(start_paused = true)]
async fn a_standby_write_reaches_the_leader_at_once() {
    let c = Cluster::new();
    let election = LeaderElection {
        lease_ttl: Duration::from_secs(180),
        renew_every: Duration::from_secs(60),
    };
    let host = |name: &'static str| {
        Lifecycle::builder()
            .orchestrator(Arc::new(c.runtime.clone()))
            .prober(Arc::new(FakeProber::new()))
            .store(c.store.clone() as Arc<dyn Store>)
            .clock(c.clock.clone())
            .config(LifecycleConfig {
                holder_id: Some(name.to_owned()),
                leader_election: Some(election),
                ..LifecycleConfig::default()
            })
            .build()
    };
    let leader = host("host-a").await.unwrap();
    // Let host-a take the lease before host-b exists.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let standby = host("host-b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    standby
        .apply(ServerSpec::new("tools", Source::Image(TAG.into())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        c.running_instances(),
        1,
        "the leader started what the standby applied without waiting for its renewal"
    );
    standby.scale("tools", 3).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.running_instances(), 3, "and scaled what it scaled");
    let s = leader.status("tools").await.unwrap();
    assert_eq!(s.desired, 3, "{}", s.to_table());
    leader.shutdown().await.unwrap();
    standby.shutdown().await.unwrap();
}
