//! Unit tests and properties of the instance machine.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn t(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

fn run(
    state: &InstanceState,
    events: &[(u64, InstanceEvent)],
    p: &InstancePolicy,
) -> InstanceState {
    let mut s = state.clone();
    for (at, e) in events {
        s = s.step(e, t(*at), p).0;
    }
    s
}

fn exited() -> InstanceEvent {
    InstanceEvent::Exited {
        code: Some(1),
        oom_killed: false,
    }
}

#[test]
fn becomes_ready_only_after_probe() {
    let p = InstancePolicy::default();
    let s = InstanceState::new();
    let (s, a) = s.step(&InstanceEvent::StartRequested, t(0), &p);
    assert_eq!(a, vec![InstanceAction::Start]);
    let (s, a) = s.step(&InstanceEvent::Started, t(1), &p);
    assert_eq!(s.phase, InstancePhase::Starting { since: t(1) });
    assert_eq!(
        a,
        vec![InstanceAction::Probe, InstanceAction::WakeAt(t(61))]
    );
    let (s, _) = s.step(
        &InstanceEvent::ProbeFailed {
            reason: "connection refused".into(),
        },
        t(2),
        &p,
    );
    assert_eq!(s.phase.name(), "starting");
    let (s, _) = s.step(&InstanceEvent::ProbePassed, t(3), &p);
    assert_eq!(s.phase, InstancePhase::Ready { since: t(3) });
}

#[test]
fn startup_timeout_fails_and_kills() {
    let p = InstancePolicy::default();
    let s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
        ],
        &p,
    );
    let (s2, a) = s.step(&InstanceEvent::Tick, t(30), &p);
    assert_eq!(s2.phase.name(), "starting");
    assert_eq!(a, vec![InstanceAction::WakeAt(t(60))]);
    let (s3, a) = s.step(&InstanceEvent::Tick, t(60), &p);
    assert_eq!(s3.attempt, 1);
    assert!(
        matches!(&s3.phase, InstancePhase::Failed { next_retry_at, reason } if *next_retry_at == t(70) && reason.contains("startup timeout"))
    );
    assert_eq!(a, vec![InstanceAction::Kill, InstanceAction::WakeAt(t(70))]);
}

#[test]
fn failed_waits_then_retries_in_place_keeping_attempt() {
    let p = InstancePolicy::default();
    let s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
            (5, exited()),
        ],
        &p,
    );
    assert_eq!(s.attempt, 1);
    assert_eq!(s.next_retry_at(), Some(t(15)));
    // A start request inside the window changes nothing.
    let (same, a) = s.step(&InstanceEvent::StartRequested, t(6), &p);
    assert_eq!(same, s);
    assert!(a.is_empty());
    let (early, a) = s.step(&InstanceEvent::Tick, t(10), &p);
    assert_eq!(early, s);
    assert_eq!(a, vec![InstanceAction::WakeAt(t(15))]);
    let (due, a) = s.step(&InstanceEvent::Tick, t(15), &p);
    assert_eq!(due.phase, InstancePhase::Pending);
    assert_eq!(due.attempt, 1);
    assert_eq!(a, vec![InstanceAction::Start]);
    // The second crash escalates.
    let s = run(&due, &[(16, InstanceEvent::Started), (17, exited())], &p);
    assert_eq!(s.attempt, 2);
    assert_eq!(s.next_retry_at(), Some(t(37)));
}

#[test]
fn unresolved_secret_fails_with_reason_and_escalates() {
    let p = InstancePolicy::default();
    let reason = "secret github/token not found".to_owned();
    let mut s = InstanceState::new();
    let mut now = 0;
    for attempt in 1..=4u32 {
        s = s.step(&InstanceEvent::StartRequested, t(now), &p).0;
        s = s
            .step(
                &InstanceEvent::StartFailed {
                    reason: reason.clone(),
                },
                t(now),
                &p,
            )
            .0;
        assert_eq!(s.attempt, attempt);
        let InstancePhase::Failed {
            next_retry_at,
            reason: r,
        } = &s.phase
        else {
            panic!("expected failed, got {:?}", s.phase)
        };
        assert!(r.contains("github/token"));
        now = next_retry_at.as_millis() / 1000;
        s = s.step(&InstanceEvent::Tick, t(now), &p).0;
        assert_eq!(s.phase, InstancePhase::Pending);
    }
}

#[test]
fn unhealthy_after_threshold_then_restart_after_twice() {
    let p = InstancePolicy::default();
    let fail = InstanceEvent::ProbeFailed {
        reason: "isError: true".into(),
    };
    let mut s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
            (1, InstanceEvent::ProbePassed),
        ],
        &p,
    );
    for i in 0..2 {
        s = s.step(&fail, t(10 + i), &p).0;
        assert_eq!(s.phase.name(), "ready");
    }
    s = s.step(&fail, t(12), &p).0;
    assert_eq!(s.phase, InstancePhase::Unhealthy { since: t(12) });
    // Recovers on a pass.
    let recovered = s.step(&InstanceEvent::ProbePassed, t(13), &p).0;
    assert_eq!(recovered.phase, InstancePhase::Ready { since: t(13) });
    s = s.step(&fail, t(13), &p).0;
    s = s.step(&fail, t(14), &p).0;
    let (s, a) = s.step(&fail, t(15), &p);
    assert_eq!(s.phase.name(), "failed");
    assert_eq!(a[0], InstanceAction::Kill);
}

#[test]
fn stable_run_resets_attempt() {
    let p = InstancePolicy::default();
    let s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
            (1, exited()),
            (11, InstanceEvent::Tick),
            (11, InstanceEvent::Started),
            (12, InstanceEvent::ProbePassed),
        ],
        &p,
    );
    assert_eq!(s.attempt, 1);
    let s = s.step(&InstanceEvent::Tick, t(12 + 599), &p).0;
    assert_eq!(s.attempt, 1, "not yet stable");
    let s = s.step(&InstanceEvent::Tick, t(12 + 600), &p).0;
    assert_eq!(s.attempt, 0);
    // A crash after a stable run that was not yet noticed also starts from 1.
    let s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
            (1, exited()),
            (11, InstanceEvent::Tick),
            (11, InstanceEvent::Started),
            (12, InstanceEvent::ProbePassed),
            (2000, exited()),
        ],
        &p,
    );
    assert_eq!(s.attempt, 1);
}

#[test]
fn stop_and_start_again_clears_attempt() {
    let p = InstancePolicy::default();
    let s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
            (1, exited()),
        ],
        &p,
    );
    let (s, a) = s.step(
        &InstanceEvent::StopRequested {
            mode: StopMode::Graceful,
        },
        t(2),
        &p,
    );
    assert_eq!(a, vec![InstanceAction::Stop(StopMode::Graceful)]);
    let (s, a) = s.step(
        &InstanceEvent::StopRequested {
            mode: StopMode::Force,
        },
        t(2),
        &p,
    );
    assert_eq!(
        a,
        vec![InstanceAction::Stop(StopMode::Force)],
        "force escalates a graceful stop"
    );
    let s = s.step(&InstanceEvent::StopCompleted, t(3), &p).0;
    assert_eq!(s.phase, InstancePhase::Stopped);
    let (s, a) = s.step(
        &InstanceEvent::StopRequested {
            mode: StopMode::Graceful,
        },
        t(3),
        &p,
    );
    assert!(a.is_empty(), "stop is idempotent");
    let (s, a) = s.step(&InstanceEvent::StartRequested, t(4), &p);
    assert_eq!((s.phase.clone(), s.attempt), (InstancePhase::Pending, 0));
    assert_eq!(a, vec![InstanceAction::Start]);
}

#[test]
fn oom_reason_is_named() {
    let p = InstancePolicy::default();
    let s = run(
        &InstanceState::new(),
        &[
            (0, InstanceEvent::StartRequested),
            (0, InstanceEvent::Started),
            (
                1,
                InstanceEvent::Exited {
                    code: Some(137),
                    oom_killed: true,
                },
            ),
        ],
        &p,
    );
    assert!(s.last_failure.unwrap_or_default().contains("OOM"));
}

fn arb_event() -> impl Strategy<Value = InstanceEvent> {
    prop_oneof![
        3 => Just(InstanceEvent::StartRequested),
        3 => Just(InstanceEvent::Started),
        2 => Just(InstanceEvent::StartFailed { reason: "boom".into() }),
        4 => Just(InstanceEvent::ProbePassed),
        4 => Just(InstanceEvent::ProbeFailed { reason: "timeout".into() }),
        2 => (any::<bool>(), proptest::option::of(0i32..3)).prop_map(|(oom_killed, code)| InstanceEvent::Exited { code, oom_killed }),
        4 => Just(InstanceEvent::Tick),
        1 => prop_oneof![Just(StopMode::Graceful), Just(StopMode::Force)].prop_map(|mode| InstanceEvent::StopRequested { mode }),
        1 => Just(InstanceEvent::StopCompleted),
    ]
}

fn arb_policy() -> impl Strategy<Value = InstancePolicy> {
    prop_oneof![
        Just(BackoffPolicy::default()),
        Just(BackoffPolicy::stepped(
            &[(Duration::from_secs(30), 5)],
            Duration::from_secs(300)
        )),
    ]
    .prop_flat_map(|backoff| {
        (1u32..5, 1u64..120).prop_map(move |(failure_threshold, startup)| InstancePolicy {
            backoff: backoff.clone(),
            failure_threshold,
            startup_timeout: Duration::from_secs(startup),
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Ready is entered only on a passing probe, and invariants always hold.
    #[test]
    fn ready_only_after_probe_pass(policy in arb_policy(), steps in proptest::collection::vec((arb_event(), 0u64..400_000), 1..200)) {
        let mut s = InstanceState::new();
        let mut now = Timestamp::from_millis(1_000_000);
        for (event, gap) in steps {
            now = now + Duration::from_millis(gap);
            let (next, _) = s.step(&event, now, &policy);
            let was_ready = matches!(s.phase, InstancePhase::Ready { .. });
            if matches!(next.phase, InstancePhase::Ready { .. }) && !was_ready {
                prop_assert_eq!(&event, &InstanceEvent::ProbePassed);
            }
            prop_assert!(next.check_invariants(&policy).is_ok(), "{:?}", next.check_invariants(&policy));
            s = next;
        }
    }

    /// While an instance keeps failing (no probe passes, no stop), its attempt
    /// count never decreases and its next retry never moves earlier.
    #[test]
    fn failing_never_resets_or_moves_retry_earlier(policy in arb_policy(), steps in proptest::collection::vec((arb_event(), 0u64..400_000), 1..200)) {
        let mut s = InstanceState::new();
        let mut now = Timestamp::from_millis(1_000_000);
        let mut last_retry: Option<Timestamp> = None;
        for (event, gap) in steps {
            if matches!(event, InstanceEvent::ProbePassed | InstanceEvent::StopRequested { .. } | InstanceEvent::StopCompleted) {
                continue;
            }
            now = now + Duration::from_millis(gap);
            let (next, _) = s.step(&event, now, &policy);
            prop_assert!(next.attempt >= s.attempt, "attempt fell from {} to {} on {:?}", s.attempt, next.attempt, event);
            if let Some(r) = next.next_retry_at() {
                if let Some(prev) = last_retry {
                    prop_assert!(r >= prev, "retry moved earlier: {:?} -> {:?}", prev, r);
                }
                last_retry = Some(r);
            }
            s = next;
        }
    }

    /// A run that stays ready past `reset_after` starts counting from one again.
    #[test]
    fn stable_run_resets(policy in arb_policy(), crashes in 1u32..20, ready_for in 0u64..2_000) {
        let mut s = InstanceState::new();
        let mut now = t(0);
        for _ in 0..crashes {
            s = s.step(&InstanceEvent::StartRequested, now, &policy).0;
            s = s.step(&InstanceEvent::Started, now, &policy).0;
            s = s.step(&exited(), now, &policy).0;
            now = s.next_retry_at().unwrap_or(now);
            s = s.step(&InstanceEvent::Tick, now, &policy).0;
        }
        prop_assert_eq!(s.attempt, crashes);
        s = s.step(&InstanceEvent::Started, now, &policy).0;
        s = s.step(&InstanceEvent::ProbePassed, now, &policy).0;
        now = now + Duration::from_secs(ready_for);
        s = s.step(&exited(), now, &policy).0;
        let stable = Duration::from_secs(ready_for) >= policy.backoff.reset_after;
        prop_assert_eq!(s.attempt, if stable { 1 } else { crashes + 1 });
    }
}

/// What a restart must resume from is never "alike": a crash (attempt,
/// failure), a stop; what probing re-derives is.
#[test]
fn resumes_like_separates_durable_changes_from_observed_ones() {
    let policy = InstancePolicy::default();
    let pending = InstanceState::new();
    let starting = pending
        .step(&InstanceEvent::StartRequested, t(0), &policy)
        .0
        .step(&InstanceEvent::Started, t(0), &policy)
        .0;
    let ready = starting.step(&InstanceEvent::ProbePassed, t(1), &policy).0;
    assert!(matches!(ready.phase, InstancePhase::Ready { .. }));
    assert!(ready.resumes_like(&pending) && pending.resumes_like(&ready));
    assert!(ready.resumes_like(&starting));

    let failed = ready.step(&exited(), t(2), &policy).0;
    assert!(matches!(failed.phase, InstancePhase::Failed { .. }));
    assert!(!failed.resumes_like(&ready) && !ready.resumes_like(&failed));

    let retried = failed
        .step(
            &InstanceEvent::Tick,
            failed.next_retry_at().unwrap(),
            &policy,
        )
        .0;
    assert!(!retried.resumes_like(&failed), "leaving Failed is written");
    let restarted = retried
        .step(&InstanceEvent::Started, t(100), &policy)
        .0
        .step(&InstanceEvent::ProbePassed, t(100), &policy)
        .0;
    assert!(
        restarted.resumes_like(&retried),
        "same attempt, same failure"
    );
    assert!(!restarted.resumes_like(&ready), "the attempt count differs");

    let stopping = ready
        .step(
            &InstanceEvent::StopRequested {
                mode: crate::ports::StopMode::Graceful,
            },
            t(3),
            &policy,
        )
        .0;
    assert!(!stopping.resumes_like(&ready));
}
