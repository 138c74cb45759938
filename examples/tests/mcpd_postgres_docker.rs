//! Three mcpd **processes** on one PostgreSQL store and the Docker backend,
//! with the test images and the local registry (127.0.0.1:5000) of
//! `scripts/test-images.sh` and the server of `scripts/postgres.sh`:
//!
//! 1. a new digest pushed under the server's tag, with every mcpd asked to
//!    check at once, ends in exactly one reinstall: as many container
//!    creations (counted from Docker's events) as the server has replicas;
//! 2. the leader is SIGKILLed in the middle of the next rollout: another
//!    mcpd takes over and finishes it, and the engine ends with exactly the
//!    server's replicas, every one an instance the status lists;
//! 3. PostgreSQL is restarted while servers are being applied: every mcpd
//!    answers again, every apply that was acknowledged is in the store and
//!    listed by every mcpd, and the leader acts on a host call made on a
//!    standby after the restart.
//!
//! It restarts the database, so it is the only test of its binary (cargo runs
//! test binaries one at a time). Skips with the reason when Docker, the
//! images, the registry or PostgreSQL are missing, and fails instead under
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1` / `MCP_LIFECYCLE_REQUIRE_POSTGRES=1`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Mcpd, mcpd_command_with, spawn_mcpd};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const URL_ENV: &str = "MCP_LIFECYCLE_POSTGRES_URL";
const REGISTRY: &str = "127.0.0.1:5000";
const REPLICAS: usize = 2;

fn skip(test: &str, reason: &str, require: &str) {
    assert!(
        !std::env::var(require).is_ok_and(|v| v == "1"),
        "{test}: {reason} ({require}=1, so this is a failure)"
    );
    println!("SKIPPED {test}: {reason}");
}

fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tags `local` as `target` and pushes it; the digest the push reported.
fn push_as(local: &str, target: &str) -> String {
    docker_ok(&["tag", local, target]);
    let out = docker_ok(&["push", target]);
    out.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .filter(|d| d.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("docker push {target} reported no digest: {out}"))
        .to_owned()
}

/// The names of the containers this manager labelled, running or not.
fn containers(manager: &str, all: bool) -> Vec<String> {
    let filter = format!("label=mcp-lifecycle.dev/managed-by={manager}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    let mut ids: Vec<String> = docker(&args)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// The instance ids of the running containers this manager labelled.
fn running_instances(manager: &str) -> BTreeSet<String> {
    containers(manager, false)
        .iter()
        .filter_map(|id| {
            docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"mcp-lifecycle.dev/instance\"}}",
                id,
            ])
        })
        .map(|s| s.trim().to_owned())
        .collect()
}

/// Container creations for this manager since `since` (a Unix time with
/// its fraction, as Docker's `--since` takes it), from Docker's event log.
fn creations_since(manager: &str, since: &str) -> usize {
    let until = unix_now() + 1;
    let filter = format!("label=mcp-lifecycle.dev/managed-by={manager}");
    docker_ok(&[
        "events",
        "--since",
        since,
        "--until",
        &until.to_string(),
        "--filter",
        &filter,
        "--filter",
        "event=create",
        "--format",
        "{{.ID}}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Now as Docker's `--since` takes it, to the nanosecond.
fn precise_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Removes the manager's containers and the test's schema, also when the
/// test fails.
struct Cleanup {
    manager: String,
    url: String,
    schema: String,
    tag: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers(&self.manager, true) {
            let _ = docker(&["rm", "-f", &id]);
        }
        let _ = Command::new("psql")
            .args([&self.url, "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .output();
        let _ = docker(&["rmi", "--no-prune", &self.tag]);
    }
}

/// Runs `scripts/postgres.sh COMMAND`.
fn postgres_script(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");
    let out = Command::new("bash")
        .args([script, command])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/postgres.sh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts PostgreSQL again when dropped (idempotent), so a failure while it
/// is stopped does not leave the other tests without their database.
struct DatabaseBack;

impl Drop for DatabaseBack {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");
        let _ = Command::new("bash").args([script, "start"]).output();
    }
}

fn start(dir: &std::path::Path, schema: &str, url: &str, manager: &str) -> Mcpd {
    let settings = format!(
        "store: {{ url_env: MCPD_TEST_PG_URL, schema: {schema} }}\nregistry: {{ resolver: direct }}\n"
    );
    let mut command = mcpd_command_with(
        dir,
        &settings,
        &[
            "--backend",
            "docker",
            "--manager",
            manager,
            "--insecure-registry",
            REGISTRY,
        ],
    );
    command.env("MCPD_TEST_PG_URL", url);
    spawn_mcpd(command)
}

/// A GET that tolerates a refused connection (an mcpd that is gone).
async fn get(d: &Mcpd, path: &str) -> Option<(StatusCode, Value)> {
    let resp = reqwest::Client::new()
        .get(d.url(path))
        .bearer_auth(common::READER)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

async fn is_leader(d: &Mcpd) -> bool {
    matches!(get(d, "/readyz").await, Some((StatusCode::OK, body)) if body["leader"] == true)
}

/// The index of the one mcpd that leads, once exactly one of `alive` does.
async fn leader(hosts: &[Mcpd], alive: &[usize], secs: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut leading = Vec::new();
        for &i in alive {
            if is_leader(&hosts[i]).await {
                leading.push(i);
            }
        }
        if let [one] = leading.as_slice() {
            return *one;
        }
        assert!(
            Instant::now() < deadline,
            "not exactly one leader among {alive:?}: {leading:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's status on `d` once `done` holds (panics after `secs`).
async fn until(d: &Mcpd, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    loop {
        if let Some((StatusCode::OK, body)) = get(d, "/api/v1/servers/ha").await {
            if done(&body["status"]) {
                return body["status"].clone();
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last status {last}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn runs(status: &Value, digest: &str) -> bool {
    status["ready"] == REPLICAS
        && status["running_digests"] == serde_json::json!([digest])
        && status["instances"]
            .as_array()
            .is_some_and(|i| i.len() == REPLICAS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mcpd_on_postgres_reinstall_once_and_survive_the_leader_and_the_database() {
    let test = "three_mcpd_on_postgres_reinstall_once_and_survive_the_leader_and_the_database";
    let url = match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            return skip(
                test,
                &format!("{URL_ENV} is not set (bash scripts/postgres.sh start, then its env)"),
                "MCP_LIFECYCLE_REQUIRE_POSTGRES",
            );
        }
    };
    let require_docker = "MCP_LIFECYCLE_REQUIRE_DOCKER";
    if docker(&["info", "--format", "{{.ServerVersion}}"]).is_none() {
        return skip(
            test,
            "no Docker engine answers `docker info`",
            require_docker,
        );
    }
    let (v1, v2) = (
        "mcp-lifecycle/test-server:v1",
        "mcp-lifecycle/test-server:v2",
    );
    if docker(&["image", "inspect", v1, v2]).is_none() {
        return skip(
            test,
            "the test images are missing; run scripts/test-images.sh",
            require_docker,
        );
    }
    if std::net::TcpStream::connect(REGISTRY).is_err() {
        return skip(
            test,
            "the local registry does not answer; run scripts/test-images.sh",
            require_docker,
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let run = format!("{}-{nanos}", std::process::id());
    let tag = format!("{REGISTRY}/mcp-test-server:ha-{run}");
    let cleanup = Cleanup {
        manager: format!("mcpd-ha-{run}"),
        url: url.clone(),
        schema: format!("mcpd_ha_{}", run.replace('-', "_")),
        tag: tag.clone(),
    };
    let manager = cleanup.manager.as_str();
    let digest_v1 = push_as(v1, &tag);

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hosts: Vec<Mcpd> = dirs
        .iter()
        .map(|dir| start(dir.path(), &cleanup.schema, &url, manager))
        .collect();
    let mut alive = vec![0, 1, 2];
    let first = leader(&hosts, &alive, 30).await;
    let standby = alive.iter().copied().find(|&i| i != first).unwrap();

    // Applied through a standby; the leader pins the tag and runs it.
    let spec = format!(
        "name: ha\nreplicas: {REPLICAS}\nsource: {{ image: \"{tag}\" }}\n\
         update: {{ check: true, auto_reinstall: true }}\nhealth: {{ interval: 1s }}\n"
    );
    let (status, body) = hosts[standby]
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(common::ADMIN),
            Some(("application/yaml", spec)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    until(&hosts[first], 120, "v1 ready on the leader", |s| {
        runs(s, &digest_v1)
    })
    .await;
    assert_eq!(running_instances(manager).len(), REPLICAS);

    // 1. A new digest under the tag, every mcpd asked to check at once: one reinstall.
    let since = precise_now();
    let digest_v2 = push_as(v2, &tag);
    assert_ne!(digest_v1, digest_v2);
    let checks = alive.iter().map(|&i| {
        hosts[i].call(
            Method::POST,
            "/api/v1/servers/ha/check-updates",
            Some(common::ADMIN),
            None,
        )
    });
    for (status, body) in futures::future::join_all(checks).await {
        assert!(status.is_success(), "{status} {body}");
    }
    let settled = |s: &Value| runs(s, &digest_v2) && s["update"]["state"]["state"] == "up_to_date";
    let done = until(&hosts[first], 180, "v2 rolled out and verified", settled).await;
    let created = creations_since(manager, &since);
    assert_eq!(
        created, REPLICAS,
        "exactly one reinstall: {REPLICAS} containers created, not {created}; {done}"
    );
    let instances = running_instances(manager);
    assert_eq!(instances.len(), REPLICAS, "{instances:?}");

    // 2. The leader is killed in the middle of the next rollout; another finishes it.
    let digest_back = push_as(v1, &tag);
    assert_eq!(digest_back, digest_v1, "the same manifest, pushed again");
    let (status, body) = hosts[first]
        .call(
            Method::POST,
            "/api/v1/servers/ha/check-updates",
            Some(common::ADMIN),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    until(&hosts[first], 60, "the rollout under way", |s| {
        s["update"]["state"]["state"] == "reinstalling"
    })
    .await;
    hosts[first].child.kill().unwrap();
    hosts[first].child.wait().unwrap();
    alive.retain(|&i| i != first);
    let second = leader(&hosts, &alive, 60).await;
    let finished = until(
        &hosts[second],
        240,
        "the rollout finished by the new leader",
        |s| runs(s, &digest_v1) && s["update"]["state"]["state"] == "up_to_date",
    )
    .await;
    let listed: BTreeSet<String> = finished["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    // Old containers go once the new ones are ready; give the removal a moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = running_instances(manager);
        let all = containers(manager, true);
        if running == listed && all.len() == REPLICAS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no duplicates: running {running:?} (all {}) vs listed {listed:?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 3. PostgreSQL restarts while servers are being applied.
    let applier = alive.iter().copied().find(|&i| i != second).unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut restarted = false;
    let _back = DatabaseBack;
    // An apply while the database is down waits for the pool's connect
    // timeout (10 s) before it fails, so only a few fall in the gap.
    for i in 0..30 {
        if i == 10 {
            postgres_script("stop");
        }
        if i == 13 {
            postgres_script("start");
            restarted = true;
        }
        let name = format!("load-{i}");
        let spec = format!("name: {name}\nreplicas: 0\nsource: {{ image: \"{tag}\" }}\n");
        let resp = reqwest::Client::new()
            .post(hosts[applier].url("/api/v1/servers"))
            .bearer_auth(common::ADMIN)
            .header("content-type", "application/yaml")
            .body(spec)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == StatusCode::CREATED => acknowledged.push(name),
            Ok(r) => {
                assert!(
                    r.status().is_server_error(),
                    "a failed apply is 5xx while the database is away: {}",
                    r.status()
                );
                refused += 1;
            }
            Err(e) => panic!("mcpd must answer while the database is away: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(restarted);
    assert!(refused > 0, "applies failed while the database was down");
    assert!(acknowledged.len() >= 20, "{acknowledged:?}");
    // Every acknowledged record is in the store...
    let out = Command::new("psql")
        .args([&url, "-At", "-c"])
        .arg(format!(
            "SELECT key FROM {}.mcp_records WHERE collection = 'servers'",
            cleanup.schema
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stored: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    for name in &acknowledged {
        assert!(
            stored.contains(name),
            "{name} was acknowledged but is not stored"
        );
    }
    // ...and every mcpd answers again and lists them.
    for &i in &alive {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed: BTreeSet<String> = match get(&hosts[i], "/api/v1/servers").await {
                Some((StatusCode::OK, body)) => body["servers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["name"].as_str().map(str::to_owned))
                    .collect(),
                _ => BTreeSet::new(),
            };
            if acknowledged.iter().all(|n| listed.contains(n)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mcpd {i} lists {listed:?} after the restart\n{}",
                hosts[i].log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The leader still acts on a standby's host call.
    let leading = leader(&hosts, &alive, 60).await;
    let other = alive.iter().copied().find(|&i| i != leading).unwrap();
    let (status, body) = hosts[other]
        .admin(
            Method::POST,
            "/api/v1/servers/ha/scale",
            Some(serde_json::json!({ "replicas": 1 })),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_instances(manager).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the leader did not scale down after the restart\n{}",
            hosts[leading].log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(hosts);
    drop(cleanup);
}
