//! Tests of the test fakes: the orchestrator conformance suite run against
//! [`FakeOrchestrator`], every fault knob, the image catalog shared by the fake
//! orchestrator and the [`FakeResolver`], and the resolver's failure categories.
//!
//! This file owns only tests of `testing::fake_*`; it must not test the
//! controller or real backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mcp_lifecycle::ports::{
    Connection, ImageResolver, ResolveFailure, RuntimeEventKind, RuntimeStatus, labels,
};
use mcp_lifecycle::spec::Command;
use mcp_lifecycle::testing::fake_orchestrator::{
    CallCounts, CallKind, FakeOrchestrator, ImageCatalog, fake_digest,
};
use mcp_lifecycle::testing::fake_resolver::FakeResolver;
use mcp_lifecycle::testing::orchestrator_conformance::{
    ConformanceFixture, conformance_spec, run_all,
};
use mcp_lifecycle::{
    ErrorKind, InstanceId, InstanceObservation, InstanceSpec, Orchestrator, Source, StopMode,
    Timestamp, TokioClock,
};

const IMAGE: &str = "ghcr.io/example/echo:1";

fn image_spec(server: &str, ordinal: u64, image: &str) -> InstanceSpec {
    conformance_spec(server, ordinal, Source::Image(image.to_owned()))
}

fn command_spec(server: &str, ordinal: u64, program: &str) -> InstanceSpec {
    conformance_spec(
        server,
        ordinal,
        Source::Command(Command {
            program: program.to_owned(),
            args: Vec::new(),
            working_dir: None,
        }),
    )
}

/// A fake whose catalog knows [`IMAGE`].
fn fake() -> FakeOrchestrator {
    let fake = FakeOrchestrator::new();
    fake.catalog().push(IMAGE, fake_digest("echo-1"));
    fake
}

fn all() -> BTreeMap<String, String> {
    BTreeMap::new()
}

// ----- conformance ----------------------------------------------------------

#[tokio::test]
async fn fake_passes_the_orchestrator_conformance_suite() {
    let fake = FakeOrchestrator::new();
    run_all(&fake, &ConformanceFixture::for_fake(&fake)).await;
    assert!(
        fake.instances().is_empty(),
        "the suite must clean up: {:?}",
        fake.instances()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suites_can_share_one_backend_concurrently() {
    let fake = FakeOrchestrator::new();
    let fixture = ConformanceFixture::for_fake(&fake);
    let runs = (0..4).map(|_| {
        let fake = fake.clone();
        let fixture = fixture.clone();
        tokio::spawn(async move { run_all(&fake, &fixture).await })
    });
    for run in futures::future::join_all(runs).await {
        run.unwrap();
    }
    assert!(fake.instances().is_empty());
}

#[tokio::test]
#[should_panic(expected = "orchestrator conformance [fake] crash_emits_exited_event")]
async fn conformance_failures_name_the_backend_and_check() {
    let fake = FakeOrchestrator::new();
    // A crasher that does nothing: no Exited event can arrive.
    let fixture = ConformanceFixture::new(
        ConformanceFixture::for_fake(&fake).instance_spec,
        Arc::new(|_id| Box::pin(async {})),
    )
    .with_timeout(Duration::from_millis(200));
    mcp_lifecycle::testing::orchestrator_conformance::crash_emits_exited_event(&fake, &fixture)
        .await;
}

// ----- basic behaviour ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn start_restarts_in_place_with_clock_and_logs() {
    let clock = TokioClock::starting_at(Timestamp::from_millis(1_000_000));
    let fake = FakeOrchestrator::builder()
        .with_clock(Arc::new(clock))
        .build();
    fake.catalog().push(IMAGE, fake_digest("echo-1"));
    let spec = image_spec("echo", 0, IMAGE);

    let first = fake.start(&spec).await.unwrap();
    assert_eq!(first.status, RuntimeStatus::Running);
    assert_eq!(first.started_at, Some(Timestamp::from_millis(1_000_000)));
    assert_eq!(first.image_digest, Some(fake_digest("echo-1")));

    // Idempotent: no second start.
    tokio::time::advance(Duration::from_secs(1)).await;
    let again = fake.start(&spec).await.unwrap();
    assert_eq!(again.started_at, first.started_at);
    assert_eq!(fake.instance(&spec.id).unwrap().start_count, 1);

    fake.stop(&spec.id, StopMode::Graceful, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(4)).await;
    let restarted = fake.start(&spec).await.unwrap();
    assert_eq!(restarted.id, spec.id);
    assert_eq!(
        restarted.started_at,
        Some(Timestamp::from_millis(1_005_000))
    );
    assert_eq!(fake.instance(&spec.id).unwrap().start_count, 2);
    assert_eq!(fake.instances().len(), 1);

    let logs = fake.logs(&spec.id, 10).await.unwrap();
    assert_eq!(logs, vec!["started", "exited with code 0", "started"]);
    assert_eq!(fake.logs(&spec.id, 1).await.unwrap(), vec!["started"]);
}

#[tokio::test]
async fn logs_are_a_bounded_ring() {
    let fake = FakeOrchestrator::builder().with_log_capacity(3).build();
    let spec = command_spec("ring", 0, "/bin/server");
    fake.start(&spec).await.unwrap();
    for i in 0..5 {
        fake.push_log(&spec.id, format!("line {i}")).unwrap();
    }
    assert_eq!(
        fake.logs(&spec.id, 100).await.unwrap(),
        vec!["line 2", "line 3", "line 4"]
    );
    assert_eq!(fake.logs(&spec.id, 0).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn stop_modes_report_exit_codes_and_remove_emits_events() {
    let fake = fake();
    let a = image_spec("codes", 0, IMAGE);
    let b = image_spec("codes", 1, IMAGE);
    fake.start(&a).await.unwrap();
    fake.start(&b).await.unwrap();
    let mut events = fake.events();

    fake.stop(&a.id, StopMode::Graceful, Duration::ZERO)
        .await
        .unwrap();
    fake.stop(&b.id, StopMode::Force, Duration::ZERO)
        .await
        .unwrap();
    let code = |id: &InstanceId| match fake.instance(id).unwrap().observation.status {
        RuntimeStatus::Exited { code, .. } => code,
        other => panic!("{id} is {other:?}"),
    };
    assert_eq!(code(&a.id), Some(0));
    assert_eq!(code(&b.id), Some(137));

    fake.start(&a).await.unwrap();
    fake.remove(&a.id).await.unwrap();
    let mut kinds = Vec::new();
    for _ in 0..5 {
        let e = events.next().await.unwrap();
        kinds.push((e.instance, e.kind));
    }
    assert_eq!(
        kinds,
        vec![
            (
                a.id.clone(),
                RuntimeEventKind::Exited {
                    code: Some(0),
                    oom_killed: false
                }
            ),
            (
                b.id.clone(),
                RuntimeEventKind::Exited {
                    code: Some(137),
                    oom_killed: false
                }
            ),
            (a.id.clone(), RuntimeEventKind::Started),
            (
                a.id.clone(),
                RuntimeEventKind::Exited {
                    code: Some(137),
                    oom_killed: false
                }
            ),
            (a.id.clone(), RuntimeEventKind::Removed),
        ]
    );
}

#[tokio::test]
async fn list_requires_every_selector_pair() {
    let fake = fake();
    let mut a0 = image_spec("a", 0, IMAGE);
    a0.labels.insert("tier".into(), "gold".into());
    let a1 = image_spec("a", 1, IMAGE);
    let b0 = image_spec("b", 0, IMAGE);
    for s in [&a0, &a1, &b0] {
        fake.start(s).await.unwrap();
    }
    let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(fake.list(&all()).await.unwrap().len(), 3);
    assert_eq!(
        fake.list(&sel(&[(labels::SERVER, "a")]))
            .await
            .unwrap()
            .len(),
        2
    );
    let gold = fake
        .list(&sel(&[(labels::SERVER, "a"), ("tier", "gold")]))
        .await
        .unwrap();
    assert_eq!(gold.len(), 1);
    assert_eq!(gold[0].id, a0.id);
    assert!(
        fake.list(&sel(&[(labels::SERVER, "b"), ("tier", "gold")]))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn images_come_from_the_catalog_or_their_pin() {
    let fake = FakeOrchestrator::new();
    let unknown = image_spec("pull", 0, "ghcr.io/example/missing:1");
    let err = fake.start(&unknown).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("ghcr.io/example/missing:1"),
        "the error must name the image: {err}"
    );
    assert!(fake.instances().is_empty(), "a failed pull creates nothing");

    let digest = fake_digest("pinned");
    let pinned = image_spec("pull", 1, &format!("ghcr.io/example/missing@{digest}"));
    let obs = fake.start(&pinned).await.unwrap();
    assert_eq!(obs.image_digest, Some(digest));

    let command = command_spec("pull", 2, "/usr/bin/server");
    assert_eq!(fake.start(&command).await.unwrap().image_digest, None);
}

#[tokio::test]
async fn connect_needs_a_connector_and_a_running_instance() {
    let fake = fake();
    let spec = image_spec("conn", 0, IMAGE);
    let missing = fake.connect(&spec.id).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    fake.start(&spec).await.unwrap();
    let err = fake.connect(&spec.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("connector"), "{err}");

    fake.set_connector(Some(Arc::new(|spec: &InstanceSpec| {
        Ok(Connection::Url(format!("http://{}.invalid/mcp", spec.id)))
    })));
    match fake.connect(&spec.id).await.unwrap() {
        Connection::Url(url) => assert_eq!(url, "http://conn-0.invalid/mcp"),
        other => panic!("unexpected {other:?}"),
    }

    fake.stop(&spec.id, StopMode::Force, Duration::ZERO)
        .await
        .unwrap();
    let stopped = fake.connect(&spec.id).await.unwrap_err();
    assert_eq!(stopped.kind(), ErrorKind::Unavailable);

    let built = FakeOrchestrator::builder()
        .with_connector(Arc::new(|_| Ok(Connection::Url("http://x.invalid".into()))))
        .build();
    let cmd = command_spec("conn", 1, "server");
    built.start(&cmd).await.unwrap();
    assert!(matches!(
        built.connect(&cmd.id).await.unwrap(),
        Connection::Url(_)
    ));
}

#[tokio::test]
async fn clones_share_state_and_the_event_stream_ends_with_the_fake() {
    let fake = fake();
    let handle = fake.clone();
    let mut events = handle.events();
    fake.start(&image_spec("share", 0, IMAGE)).await.unwrap();
    assert_eq!(handle.instances().len(), 1);
    assert_eq!(handle.calls().start, 1);
    assert_eq!(
        events.next().await.map(|e| e.kind),
        Some(RuntimeEventKind::Started)
    );
    drop(fake);
    drop(handle);
    assert!(events.next().await.is_none());
}

// ----- counters and fault knobs ----------------------------------------------

#[tokio::test]
async fn call_counts_count_every_kind_and_reset() {
    let fake = fake();
    let spec = image_spec("count", 0, IMAGE);
    fake.start(&spec).await.unwrap();
    fake.start(&spec).await.unwrap();
    fake.inspect(&spec.id).await.unwrap();
    fake.list(&all()).await.unwrap();
    fake.logs(&spec.id, 1).await.unwrap();
    let _ = fake.connect(&spec.id).await;
    fake.stop(&spec.id, StopMode::Force, Duration::ZERO)
        .await
        .unwrap();
    fake.remove(&spec.id).await.unwrap();
    let calls = fake.calls();
    assert_eq!(
        calls,
        CallCounts {
            start: 2,
            stop: 1,
            remove: 1,
            list: 1,
            inspect: 1,
            logs: 1,
            connect: 1,
        }
    );
    assert_eq!(calls.total(), 8);
    assert_eq!(calls.get(CallKind::Start), 2);
    assert_eq!(
        calls.to_string(),
        "start=2 stop=1 remove=1 list=1 inspect=1 logs=1 connect=1"
    );
    fake.reset_calls();
    assert_eq!(fake.calls(), CallCounts::default());
}

#[tokio::test]
async fn fail_nth_fails_exactly_that_call() {
    let fake = fake();
    fake.fail_nth(CallKind::Start, 2);
    fake.fail_nth(CallKind::Inspect, 1);
    let a = image_spec("nth", 0, IMAGE);
    let b = image_spec("nth", 1, IMAGE);
    let c = image_spec("nth", 2, IMAGE);

    fake.start(&a).await.unwrap();
    let err = fake.start(&b).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(
        text.contains("fake runtime") && text.contains("injected failure"),
        "{text}"
    );
    assert!(
        fake.instance(&b.id).is_none(),
        "an injected failure has no effect"
    );
    fake.start(&b).await.unwrap();
    fake.start(&c).await.unwrap();

    // Counted from when fail_nth was called, unaffected by reset_calls.
    fake.reset_calls();
    assert!(fake.inspect(&a.id).await.is_err());
    fake.inspect(&a.id).await.unwrap();
    assert_eq!(fake.calls().inspect, 2, "failed calls count too");

    fake.fail_next(CallKind::List);
    fake.clear_faults();
    fake.list(&all()).await.unwrap();
}

fn failure_pattern(seed: u64, p: f64, calls: usize) -> Vec<bool> {
    let fake = FakeOrchestrator::builder().with_seed(seed).build();
    fake.set_failure_rate(p);
    futures::executor::block_on(async {
        let mut pattern = Vec::with_capacity(calls);
        for _ in 0..calls {
            pattern.push(fake.list(&all()).await.is_err());
        }
        pattern
    })
}

#[test]
fn seeded_failure_rate_is_deterministic_and_close_to_p() {
    let a = failure_pattern(42, 0.3, 1000);
    let b = failure_pattern(42, 0.3, 1000);
    assert_eq!(a, b, "the same seed must fail the same calls");
    let failures = a.iter().filter(|f| **f).count();
    assert!(
        (240..=360).contains(&failures),
        "{failures} of 1000 calls failed at p = 0.3"
    );
    assert_ne!(
        a,
        failure_pattern(43, 0.3, 1000),
        "another seed, another pattern"
    );
    assert!(failure_pattern(42, 0.0, 200).iter().all(|f| !f));
    assert!(failure_pattern(42, 1.0, 200).iter().all(|f| *f));
}

#[tokio::test]
async fn failure_rate_can_be_turned_off_at_runtime() {
    let fake = fake();
    fake.set_failure_rate(1.0);
    assert!(fake.list(&all()).await.is_err());
    fake.set_failure_rate(0.0);
    for _ in 0..50 {
        fake.list(&all()).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn latency_applies_to_every_call_in_paused_time() {
    let fake = fake();
    fake.set_latency(Duration::from_secs(5));
    let spec = image_spec("slow", 0, IMAGE);

    let t0 = tokio::time::Instant::now();
    fake.start(&spec).await.unwrap();
    fake.inspect(&spec.id).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(10));

    let timed_out = tokio::time::timeout(Duration::from_secs(1), fake.list(&all())).await;
    assert!(timed_out.is_err(), "a 5 s call must not finish within 1 s");

    fake.set_latency(Duration::ZERO);
    let t1 = tokio::time::Instant::now();
    fake.list(&all()).await.unwrap();
    assert_eq!(t1.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn crash_and_oom_kill_exit_the_instance_with_an_event() {
    let fake = fake();
    let spec = image_spec("crash", 0, IMAGE);
    fake.start(&spec).await.unwrap();
    let mut events = fake.events();

    fake.crash(&spec.id, 3).unwrap();
    let event = events.next().await.unwrap();
    assert_eq!(event.instance, spec.id);
    assert_eq!(event.server, "crash");
    assert_eq!(
        event.kind,
        RuntimeEventKind::Exited {
            code: Some(3),
            oom_killed: false
        }
    );
    let obs = fake.inspect(&spec.id).await.unwrap();
    assert!(matches!(
        obs.status,
        RuntimeStatus::Exited {
            code: Some(3),
            oom_killed: false,
            ..
        }
    ));
    assert_eq!(
        fake.logs(&spec.id, 1).await.unwrap(),
        vec!["exited with code 3"]
    );

    // Crashing an exited instance changes nothing; a missing one is NotFound.
    fake.crash(&spec.id, 9).unwrap();
    assert_eq!(
        fake.crash(&InstanceId::new("crash", 7), 1)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    fake.start(&spec).await.unwrap();
    assert_eq!(events.next().await.unwrap().kind, RuntimeEventKind::Started);
    fake.oom_kill(&spec.id).unwrap();
    assert_eq!(
        events.next().await.unwrap().kind,
        RuntimeEventKind::Exited {
            code: Some(137),
            oom_killed: true
        }
    );
    assert_eq!(fake.calls().start, 2, "crash is not a counted call");
}

#[tokio::test]
async fn crash_on_start_simulates_a_crash_loop() {
    let fake = fake();
    fake.catalog()
        .push("ghcr.io/example/crashy:2", fake_digest("crashy"));
    fake.crash_on_start("crashy");
    let crashy = image_spec("loop", 0, "ghcr.io/example/crashy:2");
    let fine = image_spec("fine", 0, IMAGE);
    let program = command_spec("prog", 0, "/opt/crashy-server");
    let mut events = fake.events();

    for attempt in 1..=3 {
        let obs = fake.start(&crashy).await.unwrap();
        assert!(
            matches!(obs.status, RuntimeStatus::Exited { code: Some(1), .. }),
            "attempt {attempt}: {obs:?}"
        );
        assert_eq!(events.next().await.unwrap().kind, RuntimeEventKind::Started);
        assert_eq!(
            events.next().await.unwrap().kind,
            RuntimeEventKind::Exited {
                code: Some(1),
                oom_killed: false
            }
        );
        assert_eq!(fake.instance(&crashy.id).unwrap().start_count, attempt);
    }
    assert_eq!(fake.instances().len(), 1, "restarts happen in place");

    assert_eq!(
        fake.start(&fine).await.unwrap().status,
        RuntimeStatus::Running
    );
    assert!(matches!(
        fake.start(&program).await.unwrap().status,
        RuntimeStatus::Exited { .. }
    ));

    fake.clear_crash_on_start();
    assert_eq!(
        fake.start(&crashy).await.unwrap().status,
        RuntimeStatus::Running
    );
}

// ----- catalog and resolver ------------------------------------------------

#[tokio::test]
async fn catalog_is_shared_by_resolver_and_orchestrator() {
    let catalog = ImageCatalog::new();
    let fake = FakeOrchestrator::builder()
        .with_catalog(catalog.clone())
        .build();
    let resolver = FakeResolver::new(catalog.clone());
    let (v1, v2) = (fake_digest("v1"), fake_digest("v2"));

    catalog.push(IMAGE, v1.clone());
    assert_eq!(resolver.resolve(IMAGE).await.unwrap(), v1);
    let old = image_spec("fresh", 0, IMAGE);
    assert_eq!(
        fake.start(&old).await.unwrap().image_digest,
        Some(v1.clone())
    );

    // A new push is seen by both; running instances keep what they pulled.
    resolver.catalog().push(IMAGE, v2.clone());
    assert_eq!(resolver.resolve(IMAGE).await.unwrap(), v2);
    assert_eq!(fake.inspect(&old.id).await.unwrap().image_digest, Some(v1));
    let new = image_spec("fresh", 1, IMAGE);
    assert_eq!(
        fake.start(&new).await.unwrap().image_digest,
        Some(v2.clone())
    );

    // A restart pulls again.
    fake.stop(&old.id, StopMode::Force, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        fake.start(&old).await.unwrap().image_digest,
        Some(v2.clone())
    );
    assert_eq!(catalog.entries(), vec![(IMAGE.to_owned(), v2)]);
}

#[tokio::test]
async fn resolver_failures_classify_into_their_category() {
    let catalog = ImageCatalog::new();
    catalog.push(IMAGE, fake_digest("v1"));
    let resolver = FakeResolver::new(catalog);
    for failure in [
        ResolveFailure::Unreachable,
        ResolveFailure::Unauthorized,
        ResolveFailure::NotFound,
        ResolveFailure::Timeout,
    ] {
        resolver.fail_with(IMAGE, failure);
        let err = resolver.resolve(IMAGE).await.unwrap_err();
        assert_eq!(resolver.classify(&err), failure, "{err}");
        assert!(err.to_string().contains("injected"), "{err}");
    }
    resolver.clear_failure(IMAGE);
    assert_eq!(resolver.resolve(IMAGE).await.unwrap(), fake_digest("v1"));

    let unknown = resolver
        .resolve("ghcr.io/example/nope:1")
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    assert_eq!(resolver.classify(&unknown), ResolveFailure::NotFound);

    resolver.fail_with("other:1", ResolveFailure::Unreachable);
    resolver.clear_failures();
    assert_eq!(
        resolver.resolve("other:1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn resolver_counts_registry_requests_but_not_pinned_references() {
    let catalog = ImageCatalog::new();
    catalog.push(IMAGE, fake_digest("v1"));
    let resolver = FakeResolver::new(catalog);
    let digest = fake_digest("pin");
    let pinned = format!("ghcr.io/example/echo@{digest}");

    // Injected failures and latency never touch pinned references.
    resolver.fail_with(pinned.clone(), ResolveFailure::Unreachable);
    assert_eq!(resolver.resolve(&pinned).await.unwrap(), digest);
    assert_eq!(resolver.requests(), 0);

    resolver.resolve(IMAGE).await.unwrap();
    resolver.resolve(IMAGE).await.unwrap();
    let _ = resolver.resolve("ghcr.io/example/nope:1").await;
    assert_eq!(resolver.requests(), 3);
    assert_eq!(resolver.requests_for(IMAGE), 2);
    resolver.reset_requests();
    assert_eq!(resolver.requests(), 0);
    assert_eq!(resolver.requests_for(IMAGE), 0);
}

#[tokio::test(start_paused = true)]
async fn resolver_latency_uses_tokio_time() {
    let catalog = ImageCatalog::new();
    catalog.push(IMAGE, fake_digest("v1"));
    let resolver = FakeResolver::new(catalog);
    resolver.set_latency(Duration::from_secs(3));
    let t0 = tokio::time::Instant::now();
    resolver.resolve(IMAGE).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    let pinned = format!("r@{}", fake_digest("x"));
    let t1 = tokio::time::Instant::now();
    resolver.resolve(&pinned).await.unwrap();
    assert_eq!(t1.elapsed(), Duration::ZERO);
}

// ----- the suite catches broken backends -------------------------------------

/// How [`Broken`] departs from the contract.
#[derive(Clone, Copy)]
enum Flaw {
    /// `list` ignores its selector.
    ListIgnoresSelector,
    /// `stop` of a missing instance succeeds.
    StopMissingSucceeds,
    /// `remove` of a missing instance is `NotFound`.
    RemoveMissingFails,
    /// `start` of an exited instance does nothing.
    NoRestart,
}

/// The fake with one contract violation.
struct Broken {
    fake: FakeOrchestrator,
    flaw: Flaw,
}

#[async_trait::async_trait]
impl Orchestrator for Broken {
    fn backend(&self) -> &'static str {
        "broken"
    }
    async fn start(&self, spec: &InstanceSpec) -> mcp_lifecycle::Result<InstanceObservation> {
        if matches!(self.flaw, Flaw::NoRestart)
            && let Ok(obs) = self.fake.inspect(&spec.id).await
        {
            return Ok(obs);
        }
        self.fake.start(spec).await
    }
    async fn stop(
        &self,
        id: &InstanceId,
        mode: StopMode,
        grace: Duration,
    ) -> mcp_lifecycle::Result<()> {
        match (self.flaw, self.fake.stop(id, mode, grace).await) {
            (Flaw::StopMissingSucceeds, Err(e)) if e.kind() == ErrorKind::NotFound => Ok(()),
            (_, result) => result,
        }
    }
    async fn remove(&self, id: &InstanceId) -> mcp_lifecycle::Result<()> {
        if matches!(self.flaw, Flaw::RemoveMissingFails) {
            self.fake.inspect(id).await?;
        }
        self.fake.remove(id).await
    }
    async fn list(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> mcp_lifecycle::Result<Vec<InstanceObservation>> {
        match self.flaw {
            Flaw::ListIgnoresSelector => self.fake.list(&all()).await,
            _ => self.fake.list(selector).await,
        }
    }
    async fn inspect(&self, id: &InstanceId) -> mcp_lifecycle::Result<InstanceObservation> {
        self.fake.inspect(id).await
    }
    async fn logs(&self, id: &InstanceId, tail: usize) -> mcp_lifecycle::Result<Vec<String>> {
        self.fake.logs(id, tail).await
    }
    async fn connect(&self, id: &InstanceId) -> mcp_lifecycle::Result<Connection> {
        self.fake.connect(id).await
    }
    fn events(&self) -> mcp_lifecycle::ports::EventStream {
        self.fake.events()
    }
}

async fn suite_failure(flaw: Flaw) -> String {
    let fake = FakeOrchestrator::new();
    let fixture = ConformanceFixture::for_fake(&fake);
    let broken = Broken {
        fake: fake.clone(),
        flaw,
    };
    let run = tokio::spawn(async move { run_all(&broken, &fixture).await });
    let panic = run
        .await
        .expect_err("the suite must reject a broken backend");
    let payload = panic.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "<non-string panic>".to_owned())
}

#[tokio::test]
async fn the_suite_rejects_contract_violations() {
    let cases = [
        (Flaw::ListIgnoresSelector, "list_filters_by_labels"),
        (Flaw::StopMissingSucceeds, "stop_graceful_and_force"),
        (Flaw::RemoveMissingFails, "remove_is_idempotent"),
        (Flaw::NoRestart, "start_after_exit_restarts_in_place"),
    ];
    for (flaw, check) in cases {
        let message = suite_failure(flaw).await;
        assert!(
            message.starts_with(&format!("orchestrator conformance [broken] {check}:")),
            "{message}"
        );
    }
}
