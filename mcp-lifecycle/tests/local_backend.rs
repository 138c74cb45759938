//! The local-process backend against real processes: the Orchestrator
//! conformance suite, process groups (no orphans, no zombies), graceful and
//! forced stops, pushed exit events, stdio and HTTP connections, and the
//! bounded log ring.
//!
//! This file owns those checks only; it must not reach into the backend's
//! internals beyond its public API (`LocalOrchestrator::pid` to find a
//! process group) and reads the process table from `/proc`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_lifecycle::ports::{Connection, RuntimeEventKind, RuntimeStatus};
use mcp_lifecycle::spec::{Command, Source, Transport};
use mcp_lifecycle::testing::orchestrator_conformance::{
    ConformanceFixture, conformance_spec, run_all,
};
use mcp_lifecycle::{
    ErrorKind, InstanceId, InstanceSpec, LocalOrchestrator, Orchestrator, StopMode,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A shell that exits promptly on SIGTERM and otherwise runs forever. The
/// sleep runs in the background so the trap never waits for a foreground
/// `sleep` the signal missed (one forked just after SIGTERM arrived).
const POLITE: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";

fn sh(script: &str) -> Source {
    Source::Command(Command {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        working_dir: None,
    })
}

fn spec(server: &str, ordinal: u64, source: Source) -> InstanceSpec {
    let mut spec = conformance_spec(server, ordinal, source);
    spec.stop_grace_period = Duration::from_secs(2);
    spec
}

/// One process-table entry: its state letter, parent and process group.
#[derive(Debug)]
struct Proc {
    pid: u32,
    state: char,
    ppid: u32,
    pgid: u32,
}

fn proc_stat(pid: u32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        state,
        ppid,
        pgid,
    })
}

/// Every process in group `pgid`, zombies included.
fn group_members(pgid: u32) -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(p) = proc_stat(pid)
            && p.pgid == pgid
        {
            out.push(p);
        }
    }
    out
}

/// Members of the group that are alive, or zombies this test process should
/// have reaped (zombies re-parented to init are init's to reap).
fn leftovers(pgid: u32) -> Vec<Proc> {
    let me = std::process::id();
    group_members(pgid)
        .into_iter()
        .filter(|p| p.state != 'Z' || p.ppid == me)
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_group_gone(pgid: u32, when: &str) {
    // Signals are delivered asynchronously; give the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(pgid);
        if left.is_empty() {
            return;
        }
        let pids: Vec<u32> = left.iter().map(|p| p.pid).collect();
        assert!(
            Instant::now() < deadline,
            "{when}: processes {pids:?} of group {pgid} remain: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_reaped(pid: u32, when: &str) {
    if let Some(p) = proc_stat(pid) {
        assert!(
            p.state != 'Z',
            "{when}: process {pid} is a zombie (not reaped): {p:?}"
        );
        panic!("{when}: process {pid} still exists: {p:?}");
    }
}

async fn exited_status(orch: &LocalOrchestrator, id: &InstanceId) -> RuntimeStatus {
    let status = orch.inspect(id).await.unwrap().status;
    assert!(
        matches!(status, RuntimeStatus::Exited { .. }),
        "{id} should have exited: {status:?}"
    );
    status
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_orchestrator_conformance_suite() {
    let orch = LocalOrchestrator::new();
    let crasher = orch.clone();
    let fixture = ConformanceFixture::new(
        Arc::new(|server: &str, ordinal: u64| spec(server, ordinal, sh(POLITE))),
        Arc::new(move |id: InstanceId| {
            let orch = crasher.clone();
            Box::pin(async move {
                let Some(pid) = orch.pid(&id) else {
                    panic!("local conformance fixture: {id} has no running process to crash");
                };
                let pgid = Pid::from_raw(i32::try_from(pid).unwrap());
                if let Err(e) = killpg(pgid, Signal::SIGKILL) {
                    panic!("local conformance fixture could not SIGKILL group {pid} of {id}: {e}");
                }
            })
        }),
    );
    run_all(&orch, &fixture).await;
}

#[tokio::test]
async fn graceful_stop_kills_a_process_ignoring_sigterm_after_the_grace_period() {
    let orch = LocalOrchestrator::new();
    // An ignored signal stays ignored across exec, so `sleep` ignores it too.
    let spec = spec(
        "stubborn",
        0,
        sh("trap '' TERM; echo ready >&2; while :; do sleep 1; done"),
    );
    orch.start(&spec).await.unwrap();
    let pid = orch.pid(&spec.id).unwrap();
    // Let the shell install its trap before we signal it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while orch.logs(&spec.id, 1).await.unwrap() != ["ready"] {
        assert!(Instant::now() < deadline, "the shell never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let grace = Duration::from_millis(500);
    let began = Instant::now();
    orch.stop(&spec.id, StopMode::Graceful, grace)
        .await
        .unwrap();
    let took = began.elapsed();
    assert!(
        took >= grace,
        "stop returned after {took:?}, before the grace period"
    );
    assert!(took < grace + Duration::from_secs(5), "stop took {took:?}");

    match exited_status(&orch, &spec.id).await {
        RuntimeStatus::Exited { code, reason, .. } => {
            assert_eq!(code, None, "a killed process has no exit code");
            let reason = reason.unwrap();
            assert!(reason.contains("SIGKILL"), "reason: {reason}");
        }
        other => unreachable!("{other:?}"),
    }
    assert_reaped(pid, "after a graceful stop that had to kill");
    assert_group_gone(pid, "after a graceful stop that had to kill").await;
    orch.remove(&spec.id).await.unwrap();
}

#[tokio::test]
async fn force_stop_kills_at_once() {
    let orch = LocalOrchestrator::new();
    let spec = spec("forced", 0, sh("trap '' TERM; while :; do sleep 1; done"));
    orch.start(&spec).await.unwrap();
    let began = Instant::now();
    orch.stop(&spec.id, StopMode::Force, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(5));
    exited_status(&orch, &spec.id).await;
    orch.remove(&spec.id).await.unwrap();
}

#[tokio::test]
async fn no_orphans_after_stop_remove_or_drop() {
    let script = "sleep 300 & sleep 300 & wait";
    let orch = LocalOrchestrator::new();
    let spec = spec("forker", 0, sh(script));

    // Stop.
    orch.start(&spec).await.unwrap();
    let pgid = orch.pid(&spec.id).unwrap();
    wait_until(
        "the shell forked two sleeps",
        Duration::from_secs(5),
        || group_members(pgid).len() >= 3,
    )
    .await;
    orch.stop(&spec.id, StopMode::Graceful, Duration::from_secs(2))
        .await
        .unwrap();
    assert_reaped(pgid, "after stop");
    assert_group_gone(pgid, "after stop").await;

    // Remove (restarted in place: a new process, a new group).
    orch.start(&spec).await.unwrap();
    let pgid2 = orch.pid(&spec.id).unwrap();
    assert_ne!(pgid, pgid2, "a restart runs a new process group");
    wait_until("the restarted shell forked", Duration::from_secs(5), || {
        group_members(pgid2).len() >= 3
    })
    .await;
    orch.remove(&spec.id).await.unwrap();
    assert_reaped(pgid2, "after remove");
    assert_group_gone(pgid2, "after remove").await;

    // Drop the last handle while it runs.
    orch.start(&spec).await.unwrap();
    let pgid3 = orch.pid(&spec.id).unwrap();
    let other = spec_for_drop();
    orch.start(&other).await.unwrap();
    let pgid4 = orch.pid(&other.id).unwrap();
    wait_until("the third shell forked", Duration::from_secs(5), || {
        group_members(pgid3).len() >= 3
    })
    .await;
    let clone = orch.clone();
    drop(orch);
    assert_eq!(
        leftovers(pgid3).len(),
        3,
        "dropping one of two handles must not kill anything"
    );
    drop(clone);
    assert_group_gone(pgid3, "after dropping the orchestrator").await;
    assert_group_gone(pgid4, "after dropping the orchestrator").await;
}

fn spec_for_drop() -> InstanceSpec {
    spec("forker-polite", 0, sh(POLITE))
}

#[tokio::test]
async fn stopped_processes_are_reaped() {
    let orch = LocalOrchestrator::new();
    for (ordinal, mode) in [(0, StopMode::Graceful), (1, StopMode::Force)] {
        let spec = spec("reaped", ordinal, sh(POLITE));
        orch.start(&spec).await.unwrap();
        let pid = orch.pid(&spec.id).unwrap();
        assert!(
            proc_stat(pid).is_some(),
            "the process should exist while running"
        );
        orch.stop(&spec.id, mode, Duration::from_secs(2))
            .await
            .unwrap();
        assert_reaped(pid, &format!("after a {mode:?} stop"));
        assert_eq!(orch.pid(&spec.id), None);
        orch.remove(&spec.id).await.unwrap();
    }
}

#[tokio::test]
async fn exits_arrive_as_events() {
    let orch = LocalOrchestrator::new();
    let mut events = orch.events();
    let spec = spec("exits", 0, sh("exit 7"));
    orch.start(&spec).await.unwrap();

    let mut kinds = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            assert_eq!(event.instance, spec.id);
            assert_eq!(event.server, spec.server);
            let done = matches!(event.kind, RuntimeEventKind::Exited { .. });
            kinds.push(event.kind);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no Exited event within 10 s; saw {kinds:?}");
    assert_eq!(
        kinds,
        vec![
            RuntimeEventKind::Started,
            RuntimeEventKind::Exited {
                code: Some(7),
                oom_killed: false
            }
        ]
    );
    // The event is sent after the exit is recorded.
    match exited_status(&orch, &spec.id).await {
        RuntimeStatus::Exited { code, .. } => assert_eq!(code, Some(7)),
        other => unreachable!("{other:?}"),
    }
    orch.remove(&spec.id).await.unwrap();
    let removed = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.kind, RuntimeEventKind::Removed);
}

#[tokio::test]
async fn stdio_connect_hands_the_pipes_out_once_per_run() {
    let orch = LocalOrchestrator::new();
    let spec = spec(
        "stdio",
        0,
        Source::Command(Command {
            program: "cat".into(),
            args: Vec::new(),
            working_dir: None,
        }),
    );
    orch.start(&spec).await.unwrap();
    for round in 0..2 {
        let Connection::Stdio(stream) = orch.connect(&spec.id).await.unwrap() else {
            panic!("a stdio instance must connect through a byte stream");
        };
        let mut writer = stream.writer;
        let mut reader = BufReader::new(stream.reader);
        writer
            .write_all(format!("hello {round}\n").as_bytes())
            .await
            .unwrap();
        writer.flush().await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line, format!("hello {round}\n"));

        let again = orch.connect(&spec.id).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Unavailable, "{again}");
        assert!(again.to_string().contains("already handed out"), "{again}");

        // A restart gives a new stream.
        orch.stop(&spec.id, StopMode::Graceful, Duration::from_secs(2))
            .await
            .unwrap();
        let stopped = orch.connect(&spec.id).await.unwrap_err();
        assert_eq!(stopped.kind(), ErrorKind::Unavailable, "{stopped}");
        orch.start(&spec).await.unwrap();
    }
    orch.remove(&spec.id).await.unwrap();
}

#[tokio::test]
async fn http_instances_get_a_free_port_in_env_and_args() {
    let orch = LocalOrchestrator::new();
    let mut spec = spec(
        "http",
        0,
        sh(&format!(
            "echo \"env=$MCP_PORT port=$PORT arg={{port}}\"; {POLITE}"
        )),
    );
    spec.transport = Transport::Http {
        port: 0,
        path: "/mcp".into(),
    };
    orch.start(&spec).await.unwrap();
    let Connection::Url(url) = orch.connect(&spec.id).await.unwrap() else {
        panic!("an HTTP instance must connect through a URL");
    };
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/mcp"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected URL {url}"));
    assert_ne!(port, 0);

    let expected = format!("env={port} port={port} arg={port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = orch.logs(&spec.id, 10).await.unwrap();
        if logs.iter().any(|l| l == &expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs never showed {expected:?}: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Connecting to an HTTP instance can be repeated.
    assert!(matches!(
        orch.connect(&spec.id).await.unwrap(),
        Connection::Url(again) if again == url
    ));
    orch.remove(&spec.id).await.unwrap();
}

#[tokio::test]
async fn the_log_ring_is_bounded() {
    let orch = LocalOrchestrator::with_log_capacity(5);
    let mut events = orch.events();
    let spec = spec(
        "logs",
        0,
        sh("i=1; while [ $i -le 20 ]; do echo \"line $i\" >&2; i=$((i+1)); done"),
    );
    orch.start(&spec).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            if matches!(event.kind, RuntimeEventKind::Exited { .. }) {
                break;
            }
        }
    })
    .await
    .unwrap();
    // Output is drained into the ring before the exit is reported.
    let logs = orch.logs(&spec.id, 100).await.unwrap();
    let expected: Vec<String> = (16..=20).map(|i| format!("line {i}")).collect();
    assert_eq!(logs, expected);
    assert_eq!(
        orch.logs(&spec.id, 2).await.unwrap(),
        expected[3..].to_vec()
    );

    // Kept across a restart in place, still bounded.
    orch.start(&spec).await.unwrap();
    orch.stop(&spec.id, StopMode::Force, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(orch.logs(&spec.id, 100).await.unwrap().len(), 5);
    orch.remove(&spec.id).await.unwrap();
    let gone = orch.logs(&spec.id, 1).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn images_are_rejected_and_missing_programs_are_not_found() {
    let orch = LocalOrchestrator::new();
    let image = spec("image", 0, Source::Image("ghcr.io/example/server:1".into()));
    let err = orch.start(&image).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("image-0") && text.contains("commands only"),
        "{text}"
    );

    let missing = spec(
        "missing",
        0,
        Source::Command(Command {
            program: "/nonexistent/mcp-server".into(),
            args: Vec::new(),
            working_dir: None,
        }),
    );
    let err = orch.start(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(orch.list(&BTreeMap::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn env_and_working_dir_reach_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let orch = LocalOrchestrator::new();
    let mut spec = spec(
        "env",
        0,
        Source::Command(Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo \"$GREETING from $(pwd)\" >&2".into()],
            working_dir: Some(dir.path().to_string_lossy().into_owned()),
        }),
    );
    spec.env.push((
        "GREETING".into(),
        mcp_lifecycle::ports::ResolvedEnv::Secret(mcp_lifecycle::SecretValue::new("hi")),
    ));
    let mut events = orch.events();
    orch.start(&spec).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            if matches!(event.kind, RuntimeEventKind::Exited { .. }) {
                break;
            }
        }
    })
    .await
    .unwrap();
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        orch.logs(&spec.id, 10).await.unwrap(),
        vec![format!("hi from {}", cwd.display())]
    );
    orch.remove(&spec.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_lifecycle_leaves_no_process() {
    use mcp_lifecycle::testing::FakeProber;
    use mcp_lifecycle::{Lifecycle, ServerSpec};

    let orch = LocalOrchestrator::new();
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(orch.clone()))
        .prober(Arc::new(FakeProber::new()))
        .build()
        .await
        .unwrap();
    let mut server = ServerSpec::new("dropped", sh("sleep 300 & sleep 300 & wait"));
    server.replicas = 2;
    lifecycle.apply(server).await.unwrap();

    let mut pgids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pgids.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the lifecycle never started two local instances"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        pgids = orch
            .list(&BTreeMap::new())
            .await
            .unwrap()
            .iter()
            .filter_map(|obs| orch.pid(&obs.id))
            .collect();
    }
    for &pgid in &pgids {
        wait_until("the shells forked", Duration::from_secs(5), || {
            group_members(pgid).len() >= 3
        })
        .await;
    }
    drop(orch);
    drop(lifecycle);
    for pgid in pgids {
        assert_group_gone(pgid, "after dropping the Lifecycle").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_an_existing_workload_is_refused_naming_the_field() {
    use mcp_lifecycle::testing::FakeProber;
    use mcp_lifecycle::{ErrorKind, Lifecycle, ServerSpec};

    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(LocalOrchestrator::new()))
        .prober(Arc::new(FakeProber::new()))
        .build()
        .await
        .unwrap();
    let spec = ServerSpec::new("weather", Source::Existing("weather-mcp".into()));
    let error = lifecycle.apply(spec).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid);
    let message = error.to_string();
    assert!(
        message.contains("source.existing") && message.contains("local"),
        "{message}"
    );
    assert_eq!(
        lifecycle.status("weather").await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "nothing was recorded"
    );
}
