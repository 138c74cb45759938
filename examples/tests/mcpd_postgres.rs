//! Two mcpd processes on one PostgreSQL store (`store.url_env`), the local
//! backend: they elect a leader, so a server applied through the standby
//! runs once, on the leader, and both report it; when the leader exits,
//! the standby takes over and runs it. Needs the PostgreSQL server of
//! `scripts/postgres.sh` (`MCP_LIFECYCLE_POSTGRES_URL`); skips with the
//! reason otherwise, and fails instead under `MCP_LIFECYCLE_REQUIRE_POSTGRES=1`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{MCPD, Mcpd, mcpd_command_with, spawn_mcpd, terminate};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const URL_ENV: &str = "MCP_LIFECYCLE_POSTGRES_URL";

/// Drops the test's schema (with `psql`, which ships with the server) when
/// the test ends, however it ends.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.url, "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .output();
    }
}

fn start(dir: &std::path::Path, schema: &str, url: &str) -> Mcpd {
    let settings = format!("store: {{ url_env: MCPD_TEST_PG_URL, schema: {schema} }}\n");
    let mut command = mcpd_command_with(dir, &settings, &["--stop-servers-on-exit"]);
    command.env("MCPD_TEST_PG_URL", url);
    spawn_mcpd(command)
}

/// `GET /api/v1/servers/{name}` until `done` holds for its status, which
/// it returns (or panics after `secs`).
async fn until(
    d: &Mcpd,
    name: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = d
            .call(
                Method::GET,
                &format!("/api/v1/servers/{name}"),
                Some(common::READER),
                None,
            )
            .await;
        if status == StatusCode::OK && done(&body["status"]) {
            return body["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {status} {body}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `/readyz` says of this mcpd's leadership.
async fn readyz_leader(d: &Mcpd) -> Option<bool> {
    let (status, body) = d.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["leader"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mcpd_share_a_postgres_store_and_the_standby_takes_over() {
    let test = "two_mcpd_share_a_postgres_store_and_the_standby_takes_over";
    let url = match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let reason =
                format!("{URL_ENV} is not set (bash scripts/postgres.sh start, then its env)");
            assert!(
                !std::env::var("MCP_LIFECYCLE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1"),
                "{test}: {reason} (MCP_LIFECYCLE_REQUIRE_POSTGRES=1)"
            );
            println!("SKIPPED {test}: {reason}");
            return;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = Schema {
        url: url.clone(),
        name: format!("mcpd_{}_{nanos}", std::process::id()),
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start(dir_a.path(), &schema.name, &url);
    let b = start(dir_b.path(), &schema.name, &url);
    // Applied and started through the standby: the leader runs it, once.
    let spec = common::spec_yaml("echo", MCPD);
    let (status, body) = b
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(common::ADMIN),
            Some(("application/yaml", spec)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = b
        .admin(Method::POST, "/api/v1/servers/echo/start", None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let ready =
        |s: &Value| s["ready"] == 1 && s["instances"].as_array().is_some_and(|i| i.len() == 1);
    let on_a = until(&a, "echo", 60, "ready on the leader", ready).await;
    let on_b = until(&b, "echo", 30, "ready as the standby reports it", ready).await;
    assert_eq!(on_a["instances"][0]["id"], on_b["instances"][0]["id"]);
    // The store is named without the password, which reaches no log.
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .unwrap_or_default();
    for d in [&a, &b] {
        assert!(
            d.log().contains(&format!("schema {}", schema.name)),
            "{}",
            d.log()
        );
        if !password.is_empty() {
            assert!(!d.log().contains(&password), "the password reached the log");
        }
    }

    // One leader, and it is the one that runs the server; `/readyz` says
    // which it is.
    let leads = |d: &Mcpd| d.log().contains("became the leader");
    assert!(leads(&a) && !leads(&b), "a:\n{}\nb:\n{}", a.log(), b.log());
    assert_eq!(readyz_leader(&a).await, Some(true));
    assert_eq!(readyz_leader(&b).await, Some(false));

    // The leader exits (stopping what it ran): the standby takes over.
    terminate(&mut a).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leads(&b) {
        assert!(Instant::now() < deadline, "b never led:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = until(&b, "echo", 60, "ready after the take-over", ready).await;
    assert_eq!(readyz_leader(&b).await, Some(true));
    assert_eq!(taken["phase"], "running", "{taken}");
    let answer = common::call_tool(&b, "/mcp/echo", "echo", "after the take-over").await;
    assert!(answer.contains("after the take-over"), "{answer}");
    drop(b);
}
