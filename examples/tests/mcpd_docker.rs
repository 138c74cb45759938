//! mcpd on the Docker backend, as a real process: a server applied over the
//! API runs as a container, `mcpctl` shows it ready, its `echo` tool answers
//! through `/mcp/{server}` and the aggregated `/mcp`, it survives mcpd's exit
//! (detach), and the next mcpd on the same redb file adopts it (same
//! instance, still ready) and reports the same servers; deleting removes the
//! container. Needs a Docker engine
//! and the test image of `scripts/test-images.sh`; skips with the reason
//! otherwise, and fails instead under `MCP_LIFECYCLE_REQUIRE_DOCKER=1`.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{MCPD, start_mcpd_in, terminate};
use reqwest::{Method, StatusCode};

fn skip(test: &str, reason: &str) {
    if std::env::var("MCP_LIFECYCLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("{test}: {reason} (MCP_LIFECYCLE_REQUIRE_DOCKER=1, so this is a failure)");
    }
    println!("SKIPPED {test}: {reason}");
}

fn image() -> String {
    std::env::var("MCP_TEST_IMAGE_V1").unwrap_or_else(|_| "mcp-lifecycle/test-server:v1".into())
}

fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ids of running containers this manager labelled.
fn containers(manager: &str) -> Vec<String> {
    let filter = format!("label=mcp-lifecycle.dev/managed-by={manager}");
    docker(&["ps", "-q", "--filter", &filter])
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes the manager's containers, also when the test fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=mcp-lifecycle.dev/managed-by={}", self.0);
        if let Some(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mcpd_adopts_the_containers_it_left_running() {
    let test = "a_restarted_mcpd_adopts_the_containers_it_left_running";
    if docker(&["info", "--format", "{{.ServerVersion}}"]).is_none() {
        return skip(test, "no Docker engine answers `docker info`");
    }
    let image = image();
    if docker(&["image", "inspect", &image]).is_none() {
        return skip(
            test,
            &format!("test image {image} is missing; run scripts/test-images.sh"),
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let manager = format!("mcpd-test-{}-{nanos}", std::process::id());
    let _cleanup = Cleanup(manager.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.redb");
    let args = [
        "--backend",
        "docker",
        "--manager",
        &manager,
        "--store",
        store.to_str().unwrap(),
    ];

    let mut d = start_mcpd_in(dir.path(), &args);
    let yaml = format!("name: dock\nsource: {{ image: \"{image}\" }}\n");
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(common::ADMIN),
            Some(("application/yaml", yaml)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A program is not an image: refused on this backend, naming the field.
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(common::ADMIN),
            Some(("application/yaml", common::spec_yaml("cmd", MCPD))),
        )
        .await;
    common::assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "source.command", "{body}");
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/dock/start?wait=true&timeout=60s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["ready"], 1, "{body}");
    let instance = body["status"]["instances"][0]["id"].clone();
    let running = containers(&manager);
    assert_eq!(running.len(), 1, "{running:?}");
    // readyz names the engine and the version it reports.
    let (status, body) = d.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runtime"]["backend"], "docker", "{body}");
    let engine_version = docker(&["version", "--format", "{{.Server.Version}}"]).unwrap();
    let reported = body["runtime"]["version"].as_str().unwrap_or_default();
    assert!(
        reported.ends_with(engine_version.trim()),
        "{reported:?} vs {engine_version:?}"
    );

    // mcpctl sees it ready; its tools answer through both MCP endpoints.
    let out = Command::new(env!("CARGO_BIN_EXE_mcpctl"))
        .args(["--server", &d.base, "--token", common::READER])
        .args(["get", "servers", "-o", "json"])
        .env_remove("MCPCTL_CONFIG")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dock = listed["servers"]
        .as_array()
        .and_then(|servers| servers.iter().find(|s| s["name"] == "dock"))
        .unwrap_or_else(|| panic!("mcpctl does not list dock: {listed}"));
    assert_eq!(dock["ready"], 1, "{dock}");
    for (path, tool) in [("/mcp/dock", "echo"), ("/mcp", "dock__echo")] {
        let answer = common::call_tool(&d, path, tool, "hello from docker").await;
        assert!(answer.contains("hello from docker"), "{path}: {answer}");
    }

    terminate(&mut d).await;
    assert_eq!(
        containers(&manager),
        running,
        "detach must leave the container running"
    );

    let d = start_mcpd_in(dir.path(), &args);
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/dock/start?wait=true&timeout=60s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["ready"], 1, "{body}");
    assert_eq!(body["status"]["instances"][0]["id"], instance, "{body}");
    assert_eq!(
        containers(&manager),
        running,
        "the container was replaced, not adopted"
    );
    let (_, body) = d.admin(Method::GET, "/api/v1/servers", None).await;
    assert_eq!(body["servers"].as_array().unwrap().len(), 1, "{body}");

    let (status, _) = d.admin(Method::DELETE, "/api/v1/servers/dock", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(containers(&manager).is_empty());
}
