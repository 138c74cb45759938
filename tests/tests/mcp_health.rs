//! Health over the wire: the local-process backend runs the real test MCP
//! server, and the MCP prober decides readiness and health by speaking MCP.
//! Each test reproduces one failure a production server shows.

use std::sync::Arc;
use std::time::Duration;

use mcp_lifecycle::spec::{Command, EnvEntry, LivenessCheck, ReadinessCall, SecretRef};
use mcp_lifecycle::state::{BackoffPolicy, ServerPhase};
use mcp_lifecycle::{
    Lifecycle, LifecycleConfig, LocalOrchestrator, ServerSpec, ServerStatus, Source, StopMode,
    Transport, Wait,
};

const SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");

fn spec(name: &str, args: &[&str]) -> ServerSpec {
    let mut spec = ServerSpec::new(
        name,
        Source::Command(Command {
            program: SERVER.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            working_dir: None,
        }),
    );
    spec.health.interval = Duration::from_secs(1);
    spec.health.timeout = Duration::from_millis(500);
    spec.health.failure_threshold = 2;
    spec.health.startup_timeout = Duration::from_secs(5);
    spec.stop_grace_period = Duration::from_secs(2);
    spec
}

async fn lifecycle() -> Lifecycle {
    let config = LifecycleConfig {
        backoff: BackoffPolicy::stepped(&[(Duration::from_millis(500), 2)], Duration::from_secs(2)),
        startup_probe_interval: Duration::from_millis(100),
        ..LifecycleConfig::default()
    };
    Lifecycle::builder()
        .orchestrator(Arc::new(LocalOrchestrator::new()))
        .config(config)
        .build()
        .await
        .unwrap()
}

/// Polls until `check` holds, failing with the last status after `within`.
async fn eventually(
    l: &Lifecycle,
    name: &str,
    within: Duration,
    check: impl Fn(&ServerStatus) -> bool,
) -> ServerStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = l.status(name).await.unwrap();
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {within:?}:\n{}",
            s.to_table()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reason(s: &ServerStatus) -> String {
    s.instances
        .iter()
        .filter_map(|i| i.reason.clone())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_error_makes_a_ready_instance_unhealthy() {
    let l = lifecycle().await;
    l.apply(spec("rpcerr", &["--fail-tools-list-after", "3"]))
        .await
        .unwrap();
    let s = l
        .start("rpcerr", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(s.ready, 1);
    let s = eventually(&l, "rpcerr", Duration::from_secs(10), |s| {
        s.instances
            .iter()
            .any(|i| i.phase == "unhealthy" || i.phase == "failed")
    })
    .await;
    assert!(reason(&s).contains("tools/list"), "{}", s.to_table());
    assert_ne!(s.phase, ServerPhase::Running);
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_error_from_the_readiness_call_is_never_ready() {
    let l = lifecycle().await;
    let mut s = spec("rpcready", &[]);
    s.health.readiness = Some(ReadinessCall {
        tool: "jsonrpc_error".into(),
        arguments: serde_json::json!({}),
    });
    l.apply(s).await.unwrap();
    let s = eventually(&l, "rpcready", Duration::from_secs(15), |s| {
        s.instances.iter().any(|i| i.phase == "failed")
    })
    .await;
    assert_eq!(s.ready, 0);
    assert!(reason(&s).contains("jsonrpc_error"), "{}", s.to_table());
    assert!(
        s.recent_events
            .iter()
            .all(|e| !e.message.contains("-> ready"))
    );
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_error_true_is_a_failure() {
    let l = lifecycle().await;
    let mut s = spec("iserror", &[]);
    s.health.liveness = LivenessCheck::Tool(ReadinessCall {
        tool: "whoami".into(),
        arguments: serde_json::json!({}),
    });
    l.apply(s).await.unwrap();
    let s = eventually(&l, "iserror", Duration::from_secs(15), |s| {
        s.instances.iter().any(|i| i.phase == "failed")
    })
    .await;
    assert_eq!(s.ready, 0);
    assert!(reason(&s).contains("isError"), "{}", s.to_table());
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_is_unhealthy_after_the_timeout() {
    let l = lifecycle().await;
    l.apply(spec("hung", &["--hang-tools-list-after", "2"]))
        .await
        .unwrap();
    l.start("hung", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    let s = eventually(&l, "hung", Duration::from_secs(10), |s| {
        s.instances
            .iter()
            .any(|i| i.phase == "unhealthy" || i.phase == "failed")
    })
    .await;
    assert!(reason(&s).contains("timeout"), "{}", s.to_table());
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_exits_fails_and_is_retried_with_backoff() {
    let l = lifecycle().await;
    l.apply(spec("exits", &["--exit-after-ms", "300"]))
        .await
        .unwrap();
    let s = eventually(&l, "exits", Duration::from_secs(20), |s| {
        s.instances.first().is_some_and(|i| i.attempt >= 3)
    })
    .await;
    assert_eq!(s.instances.len(), 1, "retried in place: {}", s.to_table());
    assert!(reason(&s).contains("exited"), "{}", s.to_table());
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_loudly_and_is_never_healthy() {
    let l = lifecycle().await;
    let mut s = spec("tokenless", &[]);
    s.env.push(EnvEntry::secret(
        "MCP_TEST_TOKEN",
        SecretRef::new("github", "token"),
    ));
    s.health.readiness = Some(ReadinessCall {
        tool: "whoami".into(),
        arguments: serde_json::json!({}),
    });
    l.apply(s).await.unwrap();
    let err = l
        .start("tokenless", Wait::UntilReady(Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("github/token"), "{err}");
    let s = l.status("tokenless").await.unwrap();
    assert_eq!(s.ready, 0);
    assert!(
        reason(&s).contains("secret github/token"),
        "{}",
        s.to_table()
    );
    assert!(s.instances[0].attempt >= 2, "{}", s.to_table());
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_stays_starting_until_ready() {
    let l = lifecycle().await;
    l.apply(spec("slow", &["--startup-delay-ms", "1500"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = l.status("slow").await.unwrap();
    assert_eq!(s.ready, 0, "ready before it could answer: {}", s.to_table());
    assert_eq!(s.phase, ServerPhase::Starting, "{}", s.to_table());
    let s = l.wait_ready("slow", Duration::from_secs(10)).await.unwrap();
    assert_eq!(s.ready, 1);
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_that_binds_late_is_ready_without_a_failed_probe() {
    let l = lifecycle().await;
    // Nothing listens on its port for the first 300 ms: the readiness probe
    // keeps connecting (for up to half its timeout) instead of failing.
    let mut s = spec(
        "late",
        &["--transport", "http", "--startup-delay-ms", "300"],
    );
    s.transport = Transport::Http {
        port: 8080,
        path: "/mcp".into(),
    };
    s.health.timeout = Duration::from_secs(4);
    l.apply(s).await.unwrap();
    let s = l.wait_ready("late", Duration::from_secs(10)).await.unwrap();
    assert_eq!(s.ready, 1);
    assert_eq!(s.instances[0].reason, None, "{}", s.to_table());
    l.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_peer_calls_while_probes_run() {
    let l = Arc::new(lifecycle().await);
    let mut s = spec("echo", &[]);
    s.replicas = 2;
    l.apply(s).await.unwrap();
    l.start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    let tools = l.list_tools("echo").await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"));
    let calls = (0..50).map(|n| {
        let l = l.clone();
        tokio::spawn(async move {
            let peer = l.peer("echo").await.unwrap();
            let text = format!("message {n}");
            let mut args = serde_json::Map::new();
            args.insert("text".into(), serde_json::Value::String(text.clone()));
            let result = peer.call_tool("echo", Some(args)).await.unwrap();
            let got = result.content[0].as_text().unwrap().text.clone();
            (text, got, peer.instance().clone())
        })
    });
    let mut instances = std::collections::BTreeSet::new();
    for call in calls {
        let (sent, got, instance) = call.await.unwrap();
        assert_eq!(sent, got, "a response went to the wrong caller");
        instances.insert(instance);
    }
    assert_eq!(instances.len(), 2, "round-robin across both replicas");
    let s = l.status("echo").await.unwrap();
    assert_eq!(s.ready, 2, "probes kept passing: {}", s.to_table());
    Arc::try_unwrap(l).unwrap().shutdown().await.unwrap();
}

/// Pids of processes whose environment carries `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let needle = format!("MCP_TEST_MARKER={marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_left_running_after_stop_delete_or_drop() {
    let marker = format!("{}-{}", std::process::id(), line!());
    let l = lifecycle().await;
    let mut s = spec("tidy", &[]);
    s.replicas = 2;
    s.env.push(EnvEntry::plain("MCP_TEST_MARKER", &marker));
    l.apply(s.clone()).await.unwrap();
    l.start("tidy", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(processes_with(&marker).len(), 2);
    l.stop("tidy", StopMode::Graceful).await.unwrap();
    assert_eq!(processes_with(&marker), Vec::<u32>::new(), "after stop");
    l.start("tidy", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(processes_with(&marker).len(), 2);
    l.delete("tidy").await.unwrap();
    assert_eq!(processes_with(&marker), Vec::<u32>::new(), "after delete");
    l.apply(s).await.unwrap();
    l.start("tidy", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(processes_with(&marker).len(), 2);
    drop(l);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !processes_with(&marker).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "after dropping the Lifecycle"
    );
}
