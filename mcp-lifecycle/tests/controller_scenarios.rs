//! Scenario tests of the Lifecycle controller under paused tokio time: each
//! reproduces a behaviour production systems got wrong.

use std::sync::Arc;
use std::time::Duration;

use mcp_lifecycle::spec::{EnvEntry, SecretRef};
use mcp_lifecycle::state::{BackoffPolicy, ServerPhase};
use mcp_lifecycle::testing::{FakeOrchestrator, FakeProber, ImageCatalog, fake_digest};
use mcp_lifecycle::{
    Clock, ErrorKind, HealthSummary, InMemoryStore, Lifecycle, LifecycleConfig, LifecycleEventKind,
    ServerSpec, ServerStatus, Source, StopMode, Store, TokioClock, Wait,
};

const IMAGE: &str = "registry.local/echo:1";
const CRASHING: &str = "registry.local/crashy:1";

struct Harness {
    lifecycle: Lifecycle,
    runtime: FakeOrchestrator,
    prober: FakeProber,
    store: Arc<InMemoryStore>,
    clock: Arc<TokioClock>,
}

fn config(backoff: BackoffPolicy) -> LifecycleConfig {
    LifecycleConfig {
        backoff,
        ..LifecycleConfig::default()
    }
}

async fn harness(config: LifecycleConfig) -> Harness {
    let catalog = ImageCatalog::new();
    catalog.push(IMAGE, fake_digest("echo-v1"));
    catalog.push(CRASHING, fake_digest("crashy-v1"));
    let clock = Arc::new(TokioClock::new());
    let runtime = FakeOrchestrator::builder()
        .with_catalog(catalog)
        .with_clock(clock.clone())
        .build();
    let prober = FakeProber::new();
    let store = Arc::new(InMemoryStore::new());
    let lifecycle = build(&runtime, &prober, &store, &clock, config).await;
    Harness {
        lifecycle,
        runtime,
        prober,
        store,
        clock,
    }
}

async fn build(
    runtime: &FakeOrchestrator,
    prober: &FakeProber,
    store: &Arc<InMemoryStore>,
    clock: &Arc<TokioClock>,
    config: LifecycleConfig,
) -> Lifecycle {
    Lifecycle::builder()
        .orchestrator(Arc::new(runtime.clone()))
        .prober(Arc::new(prober.clone()))
        .store(store.clone() as Arc<dyn Store>)
        .clock(clock.clone())
        .config(config)
        .build()
        .await
        .unwrap()
}

fn spec(name: &str, image: &str) -> ServerSpec {
    ServerSpec::new(name, Source::Image(image.into()))
}

/// Lets the controller run until nothing is runnable, advancing paused time by `d`.
async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

async fn status(h: &Harness, name: &str) -> ServerStatus {
    h.lifecycle.status(name).await.unwrap()
}

/// Applies server "echo" with 2 replicas and waits until both are ready.
async fn two_ready(h: &Harness) -> ServerSpec {
    let mut s = spec("echo", IMAGE);
    s.replicas = 2;
    h.lifecycle.apply(s.clone()).await.unwrap();
    h.lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    s
}

#[tokio::test(start_paused = true)]
async fn start_waits_for_readiness_and_status_is_honest() {
    let h = harness(LifecycleConfig::default()).await;
    h.prober.ready_after("slow", Duration::from_secs(5));
    h.lifecycle.apply(spec("slow", IMAGE)).await.unwrap();
    advance(Duration::from_secs(2)).await;
    let s = status(&h, "slow").await;
    assert_eq!(s.phase, ServerPhase::Starting, "{}", s.to_table());
    assert_eq!((s.ready, s.starting), (0, 1));
    assert_eq!(s.instances[0].phase, "starting");
    // The runtime says it runs; we still do not call it ready.
    assert_eq!(h.runtime.instances().len(), 1);
    let s = h
        .lifecycle
        .start("slow", Wait::UntilReady(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(s.phase, ServerPhase::Running);
    assert_eq!(s.ready, 1);
    assert!(h.clock.now().as_millis() > 0);
}

#[tokio::test(start_paused = true)]
async fn crash_loop_drops_back_and_escalates_in_place() {
    let h = harness(LifecycleConfig::default()).await;
    h.lifecycle.apply(spec("echo", IMAGE)).await.unwrap();
    let s = h
        .lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    let id = s.instances[0].id.clone();
    // Crash it behind the library's back.
    h.runtime.crash(&id, 3).unwrap();
    advance(Duration::from_millis(100)).await;
    let s = status(&h, "echo").await;
    assert_eq!(s.phase, ServerPhase::Failed, "{}", s.to_table());
    assert_eq!(s.instances[0].attempt, 1);
    assert!(s.instances[0].reason.as_deref().unwrap().contains("code 3"));
    assert_eq!((s.counters.failures, s.counters.restarts), (1, 0));
    let retry_at = s.instances[0].next_retry_at.unwrap();
    // The retry is in the future: left alone and counted against the budget.
    advance(Duration::from_secs(5)).await;
    let s = status(&h, "echo").await;
    assert_eq!(s.instances.len(), 1, "no replacement while in backoff");
    assert_eq!(s.instances[0].phase, "failed");
    assert_eq!(h.runtime.instance(&id).unwrap().start_count, 1);
    // Once due it is retried in place: same id, attempt kept.
    advance(Duration::from_secs(6)).await;
    assert!(h.clock.now() >= retry_at);
    let s = status(&h, "echo").await;
    assert_eq!(s.instances.len(), 1);
    assert_eq!(s.instances[0].id, id);
    assert_eq!(s.instances[0].phase, "ready", "{}", s.to_table());
    assert_eq!(s.instances[0].attempt, 1, "attempt kept after a retry");
    assert_eq!(h.runtime.instance(&id).unwrap().start_count, 2);
    assert_eq!((s.counters.failures, s.counters.restarts), (1, 1));
    // A second crash escalates the backoff.
    h.runtime.crash(&id, 3).unwrap();
    advance(Duration::from_millis(100)).await;
    let s = status(&h, "echo").await;
    assert_eq!(s.instances[0].attempt, 2);
    assert_eq!((s.counters.failures, s.counters.restarts), (2, 1));
    let wait = s.instances[0].next_retry_at.unwrap() - h.clock.now();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
}

/// Collects the delays between each failure and its scheduled retry.
async fn retry_delays(h: &Harness, name: &str, count: usize) -> Vec<u64> {
    let mut delays = Vec::new();
    let mut last_attempt = 0;
    while delays.len() < count {
        advance(Duration::from_millis(250)).await;
        let s = status(h, name).await;
        let Some(i) = s.instances.first() else {
            continue;
        };
        if i.phase == "failed" && i.attempt > last_attempt {
            last_attempt = i.attempt;
            let failed_at = s
                .recent_events
                .iter()
                .rev()
                .find(|e| e.message.starts_with("failed"))
                .map(|e| e.at)
                .unwrap();
            delays.push((i.next_retry_at.unwrap() - failed_at).as_secs());
        }
        assert!(
            i.phase != "ready",
            "a crash-looping instance was reported ready"
        );
    }
    delays
}

#[tokio::test(start_paused = true)]
async fn stepped_policy_is_30s_times_5_then_5m() {
    let stepped = BackoffPolicy::stepped(&[(Duration::from_secs(30), 5)], Duration::from_secs(300));
    let h = harness(config(stepped)).await;
    h.runtime.crash_on_start("crashy");
    h.lifecycle.apply(spec("crashy", CRASHING)).await.unwrap();
    let delays = retry_delays(&h, "crashy", 8).await;
    assert_eq!(delays, [30, 30, 30, 30, 30, 300, 300, 300]);
    let s = status(&h, "crashy").await;
    assert_eq!(s.instances.len(), 1, "retried in place, never replaced");
    assert_eq!(s.phase, ServerPhase::Failed);
}

#[tokio::test(start_paused = true)]
async fn default_policy_doubles_to_cap_and_resets_after_stable_run() {
    let h = harness(LifecycleConfig::default()).await;
    h.runtime.crash_on_start("crashy");
    h.lifecycle.apply(spec("crashy", CRASHING)).await.unwrap();
    let delays = retry_delays(&h, "crashy", 8).await;
    assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    // Fix the crash: the next retry succeeds and, after 10 min ready, the count resets.
    h.runtime.clear_crash_on_start();
    advance(Duration::from_secs(301)).await;
    let s = status(&h, "crashy").await;
    assert_eq!(s.instances[0].phase, "ready", "{}", s.to_table());
    assert_eq!(s.instances[0].attempt, 8);
    advance(Duration::from_secs(601)).await;
    let s = status(&h, "crashy").await;
    assert_eq!(s.instances[0].attempt, 0, "a stable run resets the count");
}

#[tokio::test(start_paused = true)]
async fn unresolved_secret_fails_loudly_and_retries_never_ready() {
    let h = harness(LifecycleConfig::default()).await;
    let mut s = spec("github", IMAGE);
    s.env.push(EnvEntry::secret(
        "GITHUB_TOKEN",
        SecretRef::new("github", "token"),
    ));
    h.lifecycle.apply(s).await.unwrap();
    let err = h
        .lifecycle
        .start("github", Wait::UntilReady(Duration::from_secs(45)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("github/token"), "{err}");
    let s = status(&h, "github").await;
    assert_eq!(s.phase, ServerPhase::Failed);
    let i = &s.instances[0];
    assert!(i.attempt >= 2, "retried with backoff: {}", s.to_table());
    let reason = i.reason.as_deref().unwrap();
    assert!(
        reason.contains("secret github/token") && reason.contains("GITHUB_TOKEN"),
        "{reason}"
    );
    assert_eq!(s.instances.len(), 1);
    assert!(
        h.runtime.instances().is_empty(),
        "nothing was started without its secret"
    );
    assert!(
        s.recent_events
            .iter()
            .all(|e| !e.message.contains("-> ready")),
        "never reported ready"
    );
}

#[tokio::test(start_paused = true)]
async fn unhealthy_then_restarted_by_probes() {
    let h = harness(LifecycleConfig::default()).await;
    h.lifecycle.apply(spec("flaky", IMAGE)).await.unwrap();
    h.lifecycle
        .wait_ready("flaky", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status(&h, "flaky").await.health(), HealthSummary::Healthy);
    h.prober
        .fail_server("flaky", "tools/list: JSON-RPC error -32603");
    // threshold 3 at 30 s intervals → unhealthy after ~90 s.
    advance(Duration::from_secs(95)).await;
    let s = status(&h, "flaky").await;
    assert_eq!(s.instances[0].phase, "unhealthy", "{}", s.to_table());
    assert_eq!(s.phase, ServerPhase::Degraded);
    assert_eq!(s.health(), HealthSummary::Unhealthy, "nothing ready");
    // Three failed probes at 30 s intervals made it unhealthy.
    assert_eq!(s.counters.probe_failures, 3);
    assert_eq!(s.counters.failures, 0);
    // Three more failures → killed and failed, then retried in place.
    advance(Duration::from_secs(90)).await;
    let s = status(&h, "flaky").await;
    assert_eq!(s.instances[0].phase, "failed", "{}", s.to_table());
    assert!(
        s.instances[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("JSON-RPC")
    );
    assert_eq!(s.counters.probe_failures, 6, "twice the threshold kills it");
    assert_eq!((s.counters.failures, s.counters.restarts), (1, 0));
    h.prober.heal("flaky");
    advance(Duration::from_secs(15)).await;
    let s = status(&h, "flaky").await;
    assert_eq!(s.instances[0].phase, "ready", "{}", s.to_table());
    assert_eq!((s.counters.failures, s.counters.restarts), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn scale_to_zero_is_stopped_not_failed() {
    let h = harness(LifecycleConfig::default()).await;
    let mut s = spec("echo", IMAGE);
    s.replicas = 3;
    h.lifecycle.apply(s).await.unwrap();
    let s = h
        .lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.ready, 3);
    let victim = s.instances[0].id.clone();
    h.runtime.crash(&victim, 1).unwrap();
    advance(Duration::from_millis(100)).await;
    let degraded = status(&h, "echo").await;
    assert_eq!(
        degraded.health(),
        HealthSummary::Degraded,
        "{}",
        degraded.to_table()
    );
    h.lifecycle
        .wait_ready("echo", Duration::from_secs(30))
        .await
        .unwrap();
    h.lifecycle.scale("echo", 1).await.unwrap();
    let s = h
        .lifecycle
        .wait_ready("echo", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((s.ready, s.instances.len()), (1, 1));
    h.lifecycle.scale("echo", 0).await.unwrap();
    let s = h
        .lifecycle
        .wait_ready("echo", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(s.phase, ServerPhase::Stopped);
    assert!(s.instances.is_empty());
    assert!(h.runtime.instances().is_empty());
    // Scaling past the host's maximum is rejected with the field named.
    let err = h.lifecycle.scale("echo", 11).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("replicas"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn operations_are_idempotent() {
    let h = harness(LifecycleConfig::default()).await;
    use mcp_lifecycle::ApplyOutcome::*;
    assert_eq!(
        h.lifecycle.apply(spec("echo", IMAGE)).await.unwrap(),
        Created
    );
    assert_eq!(
        h.lifecycle.apply(spec("echo", IMAGE)).await.unwrap(),
        Unchanged
    );
    h.lifecycle
        .start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    h.lifecycle
        .start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(h.runtime.instances().len(), 1);
    let s = h.lifecycle.stop("echo", StopMode::Graceful).await.unwrap();
    assert_eq!(s.phase, ServerPhase::Stopped);
    let s = h.lifecycle.stop("echo", StopMode::Force).await.unwrap();
    assert_eq!(s.phase, ServerPhase::Stopped);
    assert!(h.runtime.instances().is_empty());
    let s = h
        .lifecycle
        .start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(s.ready, 1);
    h.lifecycle.delete("echo").await.unwrap();
    h.lifecycle.delete("echo").await.unwrap();
    assert!(h.runtime.instances().is_empty());
    assert!(h.lifecycle.list().await.is_empty());
    assert_eq!(
        h.lifecycle.status("echo").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        h.lifecycle
            .start("echo", Wait::No)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let bad = spec("Echo", IMAGE);
    let err = h.lifecycle.apply(bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("name"));
}

#[tokio::test(start_paused = true)]
async fn host_restart_adopts_without_duplicates_and_removes_orphans() {
    let h = harness(LifecycleConfig::default()).await;
    let mut s = spec("echo", IMAGE);
    s.replicas = 2;
    h.lifecycle.apply(s).await.unwrap();
    h.lifecycle.apply(spec("other", IMAGE)).await.unwrap();
    h.lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    h.lifecycle
        .wait_ready("other", Duration::from_secs(10))
        .await
        .unwrap();
    let before: Vec<_> = h
        .runtime
        .instances()
        .into_iter()
        .map(|i| i.observation.id)
        .collect();
    assert_eq!(before.len(), 3);
    h.lifecycle.detach().await;
    // While no host runs, a server's record disappears (deleted by another tool).
    h.store
        .delete(
            "servers",
            "other",
            mcp_lifecycle::ports::Precondition::Any,
            None,
        )
        .await
        .unwrap();
    let lifecycle = build(
        &h.runtime,
        &h.prober,
        &h.store,
        &h.clock,
        LifecycleConfig::default(),
    )
    .await;
    let s = lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.ready, 2);
    let after: Vec<_> = h
        .runtime
        .instances()
        .into_iter()
        .map(|i| i.observation.id)
        .collect();
    assert_eq!(
        after.len(),
        2,
        "orphans of the deleted server removed: {after:?}"
    );
    assert!(
        after.iter().all(|id| before.contains(id)),
        "adopted, not duplicated"
    );
    assert!(
        h.runtime.instances().iter().all(|i| i.start_count == 1),
        "nothing restarted"
    );
    // Shutdown stops everything but keeps the spec; the next host starts it again.
    lifecycle.shutdown().await.unwrap();
    assert!(h.runtime.instances().is_empty());
    let lifecycle = build(
        &h.runtime,
        &h.prober,
        &h.store,
        &h.clock,
        LifecycleConfig::default(),
    )
    .await;
    let s = lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.ready, 2);
}

#[tokio::test(start_paused = true)]
async fn spec_change_rolls_without_losing_readiness() {
    let h = harness(LifecycleConfig::default()).await;
    let mut s = two_ready(&h).await;
    let mut events = h.lifecycle.subscribe();
    s.env.push(EnvEntry::plain("LOG_LEVEL", "debug"));
    assert_eq!(
        h.lifecycle.apply(s).await.unwrap(),
        mcp_lifecycle::ApplyOutcome::Updated
    );
    // Track ready count through the rollout via events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&h, "echo").await;
        assert!(
            s.ready >= 2 || s.instances.iter().filter(|i| i.phase == "ready").count() >= 2,
            "ready count fell during a rollout: {}",
            s.to_table()
        );
        if s.phase == ServerPhase::Running && s.instances.iter().all(|i| i.current) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout did not finish: {}",
            s.to_table()
        );
        advance(Duration::from_millis(200)).await;
    }
    let mut removed = 0;
    while let Ok(e) = events.try_recv() {
        if e.kind == LifecycleEventKind::InstanceRemoved {
            removed += 1;
        }
    }
    assert_eq!(removed, 2);
    assert!(h.runtime.instances().iter().all(|i| i.spec.env.len() == 1));
}

#[tokio::test(start_paused = true)]
async fn a_bad_new_spec_never_takes_the_server_down() {
    let h = harness(LifecycleConfig::default()).await;
    h.runtime.crash_on_start("crashy");
    h.lifecycle.apply(spec("echo", IMAGE)).await.unwrap();
    h.lifecycle
        .wait_ready("echo", Duration::from_secs(10))
        .await
        .unwrap();
    h.lifecycle.apply(spec("echo", CRASHING)).await.unwrap();
    for _ in 0..20 {
        advance(Duration::from_secs(15)).await;
        let s = status(&h, "echo").await;
        assert!(
            s.ready >= 1,
            "the old instance kept serving: {}",
            s.to_table()
        );
    }
    let s = status(&h, "echo").await;
    assert!(s.instances.iter().any(|i| !i.current && i.phase == "ready"));
    assert!(s.instances.iter().any(|i| i.current && i.attempt > 1));
}

/// The stop modes the runtime received for `server`'s instances since `from`.
fn stop_modes_since(h: &Harness, from: usize) -> Vec<StopMode> {
    h.runtime.stop_requests()[from..]
        .iter()
        .map(|(_, mode)| *mode)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_forced_stop_forces_that_stop_alone() {
    let h = harness(LifecycleConfig::default()).await;
    let mut s = two_ready(&h).await;

    let before = h.runtime.stop_requests().len();
    let stopped = h.lifecycle.stop("echo", StopMode::Force).await.unwrap();
    assert_eq!(
        stopped.phase,
        ServerPhase::Stopped,
        "{}",
        stopped.to_table()
    );
    assert_eq!(
        stop_modes_since(&h, before),
        vec![StopMode::Force, StopMode::Force]
    );

    h.lifecycle
        .start("echo", Wait::UntilReady(Duration::from_secs(10)))
        .await
        .unwrap();
    // A scale-down after the forced stop is graceful again.
    let before = h.runtime.stop_requests().len();
    h.lifecycle.scale("echo", 1).await.unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(status(&h, "echo").await.instances.len(), 1);
    assert_eq!(stop_modes_since(&h, before), vec![StopMode::Graceful]);

    // So is a rolling replacement ...
    let before = h.runtime.stop_requests().len();
    s.replicas = 1;
    s.env.push(EnvEntry::plain("LOG_LEVEL", "debug"));
    h.lifecycle.apply(s).await.unwrap();
    for _ in 0..50 {
        advance(Duration::from_millis(200)).await;
        let st = status(&h, "echo").await;
        if st.phase == ServerPhase::Running && st.instances.iter().all(|i| i.current) {
            break;
        }
    }
    assert_eq!(stop_modes_since(&h, before), vec![StopMode::Graceful]);

    // ... and a delete.
    let before = h.runtime.stop_requests().len();
    h.lifecycle.delete("echo").await.unwrap();
    assert_eq!(stop_modes_since(&h, before), vec![StopMode::Graceful]);
}

#[tokio::test(start_paused = true)]
async fn a_rollout_step_follows_readiness_at_once() {
    let h = harness(LifecycleConfig::default()).await;
    let mut s = two_ready(&h).await;
    let mut events = h.lifecycle.subscribe();
    // New instances become ready on their second readiness probe, so each
    // step has a moment where a new instance turns ready inside a pass.
    h.prober.ready_after("echo", Duration::from_millis(500));
    s.env.push(EnvEntry::plain("LOG_LEVEL", "debug"));
    h.lifecycle.apply(s).await.unwrap();
    for _ in 0..300 {
        advance(Duration::from_millis(100)).await;
        let st = status(&h, "echo").await;
        if st.phase == ServerPhase::Running && st.instances.iter().all(|i| i.current) {
            break;
        }
    }
    let st = status(&h, "echo").await;
    assert!(
        st.instances.iter().all(|i| i.current),
        "rollout did not finish: {}",
        st.to_table()
    );
    // Every "-> ready" of a new instance is followed by an old instance's
    // "-> stopping" at the same instant (paused time: no timer in between).
    let mut ready_at = Vec::new();
    let mut stopping_at = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind != LifecycleEventKind::InstancePhaseChanged {
            continue;
        }
        if e.message.ends_with("-> ready") {
            ready_at.push(e.at);
        } else if e.message.ends_with("-> stopping") {
            stopping_at.push(e.at);
        }
    }
    assert_eq!(ready_at.len(), 2, "two new instances turned ready");
    assert_eq!(stopping_at.len(), 2, "two old instances were stopped");
    for (ready, stopping) in ready_at.iter().zip(&stopping_at) {
        let step = stopping.saturating_since(*ready);
        assert!(
            step < Duration::from_millis(50),
            "an old instance was removed {step:?} after its replacement turned ready"
        );
    }
}

/// A status shows the latest `event_history` events, oldest first, across
/// passes and host calls: exactly the tail of what `subscribe` streamed.
#[tokio::test(start_paused = true)]
async fn recent_events_are_the_latest_streamed() {
    let h = harness(LifecycleConfig {
        event_history: 3,
        ..LifecycleConfig::default()
    })
    .await;
    let mut events = h.lifecycle.subscribe();
    h.lifecycle.apply(spec("echo", IMAGE)).await.unwrap();
    advance(Duration::from_secs(5)).await;
    let mut streamed = Vec::new();
    let mut drain = |streamed: &mut Vec<_>| {
        while let Ok(event) = events.try_recv() {
            streamed.push(event);
        }
    };
    drain(&mut streamed);
    let first = status(&h, "echo").await;
    assert_eq!(first.phase, ServerPhase::Running);
    assert!(streamed.len() > 3, "a cold start makes more than 3 events");
    assert_eq!(first.recent_events, streamed[streamed.len() - 3..]);

    h.lifecycle.scale("echo", 2).await.unwrap();
    advance(Duration::from_secs(5)).await;
    drain(&mut streamed);
    let second = status(&h, "echo").await;
    assert_eq!(second.ready, 2);
    assert_eq!(second.recent_events, streamed[streamed.len() - 3..]);
}

/// A prober whose probes pass, except that every probe after the first
/// `fast` ones hangs for a minute (a server that stopped answering).
struct HangingProber {
    fast: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl mcp_lifecycle::Prober for HangingProber {
    async fn probe(&self, _target: mcp_lifecycle::ProbeTarget<'_>) -> mcp_lifecycle::ProbeOutcome {
        let left = self.fast.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.fast
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
        } else {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        mcp_lifecycle::ProbeOutcome::Passed
    }
}

/// Found on Kubernetes: a status read waited for a pass that was probing a
/// hung instance (up to the probe timeout). Reads take the published status
/// without the server's lock.
#[tokio::test(start_paused = true)]
async fn a_status_read_does_not_wait_for_a_hung_probe() {
    let clock = Arc::new(TokioClock::new());
    let catalog = ImageCatalog::new();
    catalog.push(IMAGE, fake_digest("echo-v1"));
    let runtime = FakeOrchestrator::builder()
        .with_catalog(catalog)
        .with_clock(clock.clone())
        .build();
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(runtime.clone()))
        .prober(Arc::new(HangingProber {
            fast: std::sync::atomic::AtomicU32::new(1),
        }))
        .store(Arc::new(InMemoryStore::new()))
        .clock(clock.clone())
        .config(LifecycleConfig::default())
        .build()
        .await
        .unwrap();
    let mut s = spec("hung", IMAGE);
    s.health.interval = Duration::from_secs(5);
    lifecycle.apply(s).await.unwrap();
    let status = lifecycle
        .start("hung", Wait::UntilReady(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(status.ready, 1);
    // The next liveness probe hangs, inside a pass that holds the server.
    advance(Duration::from_secs(6)).await;
    let before = tokio::time::Instant::now();
    let status = lifecycle.status("hung").await.unwrap();
    assert_eq!(status.ready, 1);
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "a status read waited {:?} for a probing pass",
        before.elapsed()
    );
    drop(runtime);
}

#[tokio::test(start_paused = true)]
async fn logs_read_one_instance_or_every_instance_of_a_server() {
    let h = harness(LifecycleConfig::default()).await;
    two_ready(&h).await;
    let s = status(&h, "echo").await;
    let (a, b) = (s.instances[0].id.clone(), s.instances[1].id.clone());
    h.runtime.push_log(&a, "a: one").unwrap();
    h.runtime.push_log(&a, "a: two").unwrap();
    h.runtime.push_log(&b, "b: one").unwrap();

    let all = h.lifecycle.logs("echo", None, 10).await.unwrap();
    let ids: Vec<_> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, vec![a.clone(), b.clone()]);
    assert_eq!(all[0].1.last().map(String::as_str), Some("a: two"));
    assert_eq!(all[1].1.last().map(String::as_str), Some("b: one"));

    let one = h.lifecycle.logs("echo", Some(&a), 1).await.unwrap();
    assert_eq!(one, vec![(a.clone(), vec!["a: two".to_owned()])]);

    let foreign = mcp_lifecycle::InstanceId::new("other", 1);
    let err = h
        .lifecycle
        .logs("echo", Some(&foreign), 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = h.lifecycle.logs("missing", None, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
