//! The `KubernetesStore` on the real cluster: the core's store conformance
//! suite, the objects it writes (readable with kubectl), hosts racing for
//! an expired lease, fencing that holds inside the record's own
//! compare-and-swap, the checks `build()` makes, and two hosts on one
//! namespace that roll a new digest out exactly once.

mod common;

use common::registry::TestTag;

use std::sync::Arc;
use std::time::Duration;

use common::{READY, TestNamespace, eventually, skip, unique};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease as KubeLease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{DeleteParams, ListParams};
use mcp_lifecycle::ports::{Precondition, Store};
use mcp_lifecycle::spec::UpdatePolicy;
use mcp_lifecycle::state::{Freshness, FreshnessPolicy, ServerPhase};
use mcp_lifecycle::testing::store_conformance;
use mcp_lifecycle::{
    Error, ErrorKind, LeaderElection, Lifecycle, LifecycleConfig, LifecycleEventKind,
    RegistryResolver, ServerSpec, Source, Timestamp,
};
use mcp_lifecycle_k8s::{KubernetesConfig, KubernetesStore, STORE_LABEL};

const TTL: Duration = Duration::from_secs(30);

async fn store(client: Client, ns: &TestNamespace, name: &str) -> KubernetesStore {
    KubernetesStore::builder()
        .client(client)
        .namespace(&ns.name)
        .name(name)
        .build()
        .await
        .expect("KubernetesStore::build")
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_passes_the_conformance_suite() {
    let test = "the_store_passes_the_conformance_suite";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let store = store(ns.client.clone(), &ns, "conformance").await;
    let started = std::time::Instant::now();
    store_conformance::run_all(&store).await;
    eprintln!("run_all took {:?}", started.elapsed());
    let started = std::time::Instant::now();
    store_conformance::concurrent_cas_increments_spawned(Arc::new(store.clone()), 8, 10).await;
    eprintln!("spawned CAS increments took {:?}", started.elapsed());

    // A second store in the namespace sees none of the first one's records.
    let other = KubernetesStore::builder()
        .client(ns.client.clone())
        .namespace(&ns.name)
        .name("other")
        .build()
        .await
        .unwrap();
    other
        .put(
            "shared-name",
            "k",
            b"other".to_vec(),
            Precondition::Absent,
            None,
        )
        .await
        .unwrap();
    store
        .put(
            "shared-name",
            "k",
            b"first".to_vec(),
            Precondition::Absent,
            None,
        )
        .await
        .expect("same collection and key under another store name is another record");
    assert_eq!(
        other.list("shared-name").await.unwrap()[0].value,
        b"other".to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_and_leases_are_plain_kubernetes_objects() {
    let test = "records_and_leases_are_plain_kubernetes_objects";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let store = store(ns.client.clone(), &ns, "objects").await;
    let value = vec![0u8, 255, b'{', b'"'];
    let version = store
        .put(
            "servers",
            "git/hub",
            value.clone(),
            Precondition::Absent,
            None,
        )
        .await
        .unwrap();
    let lp = ListParams::default().labels(&format!("{STORE_LABEL}=objects"));
    let maps = ns.api::<ConfigMap>().list(&lp).await.unwrap().items;
    assert_eq!(maps.len(), 1);
    let map = &maps[0];
    let name = map.metadata.name.clone().unwrap();
    assert!(name.starts_with("mcp-servers-git-hub-"), "{name}");
    assert_eq!(
        map.metadata.resource_version.as_deref(),
        Some(version.0.to_string().as_str()),
        "the version is the resourceVersion"
    );
    let annotations = map.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["mcp-lifecycle.dev/collection"], "servers");
    assert_eq!(annotations["mcp-lifecycle.dev/key"], "git/hub");
    assert_eq!(map.binary_data.as_ref().unwrap()["value"].0, value);

    let lease = store
        .acquire_lease("freshness/github", "host-a", TTL, t(0))
        .await
        .unwrap()
        .unwrap();
    store
        .put(
            "servers",
            "git/hub",
            b"fenced".to_vec(),
            Precondition::At(version),
            Some(&lease.fence()),
        )
        .await
        .unwrap();
    let map = ns.api::<ConfigMap>().get(&name).await.unwrap();
    assert_eq!(
        map.metadata.annotations.unwrap()["mcp-lifecycle.dev/fences"],
        format!("{{\"freshness/github\":{}}}", lease.token),
        "a fenced write records its token on the record"
    );
    let leases = ns.api::<KubeLease>().list(&lp).await.unwrap().items;
    assert_eq!(leases.len(), 1);
    let object = &leases[0];
    let spec = object.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("host-a"));
    assert_eq!(spec.lease_duration_seconds, Some(30));
    assert_eq!(
        spec.renew_time.map(|m| m.0.as_millisecond()),
        Some(t(0).as_millis() as i64),
        "renewTime is the caller's now"
    );
    assert!(spec.acquire_time.is_some());
    let annotations = object.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["mcp-lifecycle.dev/lease"], "freshness/github");
    assert_eq!(
        annotations["mcp-lifecycle.dev/token"],
        lease.token.to_string()
    );
    assert_eq!(
        annotations["mcp-lifecycle.dev/expires-at-ms"],
        (t(0) + TTL).as_millis().to_string()
    );

    // A release keeps the Lease (and its token) and clears the holder.
    store.release_lease(&lease).await.unwrap();
    let object = ns
        .api::<KubeLease>()
        .get(&object.metadata.name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(object.spec.unwrap().holder_identity, None);
    assert_eq!(
        object.metadata.annotations.unwrap()["mcp-lifecycle.dev/token"],
        lease.token.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_racing_for_an_expired_lease_one_wins_and_stale_writes_are_fenced() {
    let test = "two_hosts_racing_for_an_expired_lease_one_wins_and_stale_writes_are_fenced";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // Two hosts: two stores (two clients) on one namespace and store name.
    let host_a = Arc::new(store(Client::try_default().await.unwrap(), &ns, "race").await);
    let host_b = Arc::new(store(Client::try_default().await.unwrap(), &ns, "race").await);
    let race =
        store_conformance::two_hosts_race_for_lapsed_leases(host_a.clone(), host_b.clone(), 12)
            .await;
    eprintln!("wins per host: {:?}", race.wins);

    // The record remembers the newer token: even with the Lease gone (deleted
    // by hand), the older holder's write fails inside the record's own CAS.
    let (collection, key) = (race.collection.as_str(), race.keys[0].as_str());
    let old_fence = mcp_lifecycle::ports::Fence {
        lease: key.to_owned(),
        token: 1,
    };
    let leases = ns
        .api::<KubeLease>()
        .list(&ListParams::default().labels(&format!("{STORE_LABEL}=race")))
        .await
        .unwrap()
        .items;
    for lease in leases {
        ns.api::<KubeLease>()
            .delete(&lease.metadata.name.unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    match host_b
        .put(
            collection,
            key,
            b"stale".to_vec(),
            Precondition::Any,
            Some(&old_fence),
        )
        .await
    {
        Err(Error::Fenced {
            token: 1,
            current: 2,
            ..
        }) => {}
        other => panic!("the record's own fence must reject token 1, got {other:?}"),
    }
    match host_b
        .delete(collection, key, Precondition::Any, Some(&old_fence))
        .await
    {
        Err(Error::Fenced { .. }) => {}
        other => panic!("the record's own fence must reject a stale delete, got {other:?}"),
    }
    assert_eq!(
        host_a.get(collection, key).await.unwrap().map(|r| r.value),
        Some(b"new".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn build_checks_the_name_and_the_namespace() {
    let test = "build_checks_the_name_and_the_namespace";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let missing = format!("{}-missing", ns.name);
    let error = KubernetesStore::builder()
        .client(ns.client.clone())
        .namespace(&missing)
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains(&missing), "{error}");
    let error = KubernetesStore::builder()
        .client(ns.client.clone())
        .namespace(&ns.name)
        .name("not a label value")
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
}

/// A client for the cluster's limited user, or why there is none.
async fn limited_client() -> Result<Client, String> {
    let path = std::env::var("MCP_K8S_KUBECONFIG_LIMITED")
        .map_err(|_| "MCP_K8S_KUBECONFIG_LIMITED is not set".to_owned())?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_needs_exactly_the_documented_role() {
    let test = "the_store_needs_exactly_the_documented_role";
    let client = match limited_client().await {
        Ok(client) => client,
        Err(reason) => return skip(test, &format!("no limited user: {reason}")).unwrap_or(()),
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    // No Role bound: build names what to grant.
    let error = KubernetesStore::builder()
        .client(client.clone())
        .namespace(&ns.name)
        .build()
        .await
        .unwrap_err();
    let message = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        message.contains("verb `list` on `configmaps`") && message.contains(&ns.name),
        "{message}"
    );

    // Under the documented Role the store works.
    let role: k8s_openapi::api::rbac::v1::Role =
        serde_norway::from_str(include_str!("../../docs/kubernetes-rbac.yaml")).unwrap();
    ns.api::<k8s_openapi::api::rbac::v1::Role>()
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let user = std::env::var("MCP_K8S_LIMITED_USER").unwrap_or_else(|_| "mcp-limited".to_owned());
    let binding: k8s_openapi::api::rbac::v1::RoleBinding =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "mcp-lifecycle" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name.clone().unwrap() },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
        }))
        .unwrap();
    ns.api::<k8s_openapi::api::rbac::v1::RoleBinding>()
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let store = eventually("the Role to take effect", Duration::from_secs(30), || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            KubernetesStore::builder()
                .client(client)
                .namespace(ns)
                .build()
                .await
                .ok()
        }
    })
    .await;
    store_conformance::basics(&store).await;
    store_conformance::compare_and_swap(&store).await;
    store_conformance::delete_with_precondition(&store).await;
    store_conformance::lease_takeover_after_expiry(&store).await;
    store_conformance::lease_release(&store).await;
    store_conformance::fencing(&store).await;
}

// ------------------------------------------------- two hosts, one rollout

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_on_the_kubernetes_store_roll_a_new_digest_out_exactly_once() {
    let test = "two_hosts_on_the_kubernetes_store_roll_a_new_digest_out_exactly_once";
    let Some(pushed) = TestTag::push_v1(test, "k8s-2hosts") else {
        return;
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let (repo, tag, v1) = (&pushed.repo, pushed.tag.clone(), pushed.v1.clone());

    let manager = unique("mcpl");
    let mut hosts = Vec::new();
    for host in ["host-a", "host-b"] {
        // Each host has its own client, backend and store, as on two machines.
        let client = Client::try_default().await.unwrap();
        let backend = common::backend(client.clone(), &ns, KubernetesConfig::default()).await;
        let store = store(client, &ns, "hosts").await;
        let config = LifecycleConfig {
            holder_id: Some(format!("{manager}-{host}")),
            leader_election: Some(LeaderElection {
                lease_ttl: Duration::from_secs(10),
                renew_every: Duration::from_secs(2),
            }),
            freshness: FreshnessPolicy {
                verify_backoff: [1, 2, 2, 2, 3, 5, 5, 10, 10, 10]
                    .into_iter()
                    .map(Duration::from_secs)
                    .collect(),
                rollout_deadline: Duration::from_secs(90),
                ..FreshnessPolicy::default()
            },
            freshness_tick: Duration::from_millis(500),
            resolve_timeout: Duration::from_secs(5),
            ..common::config(&manager)
        };
        let resolver = RegistryResolver::builder()
            .insecure_registry("127.0.0.1:5000")
            .timeout(Duration::from_secs(5))
            .build();
        hosts.push(
            Lifecycle::builder()
                .orchestrator(Arc::new(backend))
                .store(Arc::new(store))
                .resolver(Arc::new(resolver))
                .config(config)
                .build()
                .await
                .unwrap(),
        );
    }
    let mut events: Vec<_> = hosts.iter().map(Lifecycle::subscribe).collect();

    let name = "fresh";
    let mut spec = ServerSpec::new(name, Source::Image(tag.clone()));
    spec.replicas = 2;
    spec.update = UpdatePolicy {
        check: true,
        auto_reinstall: true,
    };
    spec.stop_grace_period = Duration::from_secs(5);
    spec.resources.memory = Some("64Mi".into());
    spec.resources.cpu = Some("100m".into());
    // Applied through the second host: the store carries it to the leader.
    hosts[1].apply(spec).await.unwrap();
    let leader = eventually("a leader running the server", READY, || async {
        for (i, h) in hosts.iter().enumerate() {
            if let Ok(s) = h.status(name).await
                && s.phase == ServerPhase::Running
                && s.ready == 2
                && s.running_digests == vec![v1.clone()]
            {
                return Some(i);
            }
        }
        None
    })
    .await;
    eventually("both hosts to know the server", READY, || async {
        for h in &hosts {
            h.status(name).await.ok()?;
        }
        Some(())
    })
    .await;

    let v2 = pushed.push_v2();
    assert_ne!(v1, v2);
    let (ra, rb) = tokio::join!(
        hosts[0].check_updates_now(name),
        hosts[1].check_updates_now(name)
    );
    ra.unwrap();
    rb.unwrap();
    let pinned = format!("{repo}@{v2}");
    let end = eventually("the rollout to end", Duration::from_secs(150), || async {
        hosts[leader]
            .status(name)
            .await
            .ok()
            .filter(|s| !s.update.state.is_reinstalling() && s.update.last_check.is_some())
            .filter(|s| s.update.state != Freshness::UpToDate { digest: v1.clone() })
    })
    .await;
    assert_eq!(
        end.update.state,
        Freshness::UpToDate { digest: v2.clone() },
        "{}",
        end.to_table()
    );
    eventually("two ready pods on the new digest", READY, || async {
        hosts[leader].status(name).await.ok().filter(|s| {
            s.ready == 2 && s.instances.len() == 2 && s.running_digests == vec![v2.clone()]
        })
    })
    .await;
    // A while longer: no second rollout from the other host.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let rollouts: Vec<String> = events
        .iter_mut()
        .flat_map(|rx| {
            let mut seen = Vec::new();
            while let Ok(e) = rx.try_recv() {
                if e.kind == LifecycleEventKind::FreshnessChanged
                    && e.message.starts_with("rolling out")
                {
                    seen.push(e.message);
                }
            }
            seen
        })
        .collect();
    assert_eq!(
        rollouts,
        vec![format!("rolling out {pinned}")],
        "exactly one reinstall across two hosts"
    );
    // The cluster agrees: the Deployment's template changed once (revision
    // 2), so there are exactly two ReplicaSets, the newest on the digest.
    let deployment = ns.api::<Deployment>().get(name).await.unwrap();
    let revision = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
    assert_eq!(revision.as_deref(), Some("2"));
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some(pinned.as_str()));
    let replica_sets = ns
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(&format!("mcp-lifecycle.dev/server={name}")))
        .await
        .unwrap()
        .items;
    assert_eq!(replica_sets.len(), 2, "one ReplicaSet per template");
    for h in hosts {
        h.detach().await;
    }
}
