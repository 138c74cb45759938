//! Unit tests and properties of the freshness machine.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const V1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const V2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn t(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

fn resolved(available: &str, running: &[&str], auto: bool) -> FreshnessEvent {
    FreshnessEvent::Resolved {
        available: available.into(),
        running: running.iter().map(|s| s.to_string()).collect(),
        auto_reinstall: auto,
    }
}

#[test]
fn pinned_image_is_up_to_date_without_resolving() {
    let p = FreshnessPolicy::default();
    let image = format!("registry.local/x@{V1}");
    let (s, a) = Freshness::Unknown.step(
        &FreshnessEvent::CheckStarted {
            image,
            running: vec![],
            auto_reinstall: true,
        },
        t(0),
        &p,
    );
    assert_eq!(s, Freshness::UpToDate { digest: V1.into() });
    assert!(a.is_empty(), "no registry call for a pinned image: {a:?}");
}

#[test]
fn tagged_image_is_resolved() {
    let p = FreshnessPolicy::default();
    let (s, a) = Freshness::Unknown.step(
        &FreshnessEvent::CheckStarted {
            image: "registry.local/x:1".into(),
            running: vec![V1.into()],
            auto_reinstall: true,
        },
        t(0),
        &p,
    );
    assert_eq!(s, Freshness::Unknown);
    assert_eq!(
        a,
        vec![FreshnessAction::Resolve {
            image: "registry.local/x:1".into()
        }]
    );
}

#[test]
fn equal_different_and_auto() {
    let p = FreshnessPolicy::default();
    let (s, _) = Freshness::Unknown.step(&resolved(V1, &[V1, V1], true), t(0), &p);
    assert_eq!(s, Freshness::UpToDate { digest: V1.into() });
    let (s, a) = Freshness::Unknown.step(&resolved(V2, &[V1], false), t(0), &p);
    assert_eq!(
        s,
        Freshness::UpdateAvailable {
            running: V1.into(),
            available: V2.into()
        }
    );
    assert!(a.is_empty());
    let (s, a) = s.step(&resolved(V2, &[V1], true), t(100), &p);
    assert!(
        matches!(&s, Freshness::Reinstalling { target, previous, next_verify_at, .. } if target == V2 && previous == V1 && *next_verify_at == t(110))
    );
    assert_eq!(
        a,
        vec![
            FreshnessAction::StartRollout { digest: V2.into() },
            FreshnessAction::VerifyAt(t(110))
        ]
    );
}

#[test]
fn verification_follows_backoff_then_fails() {
    let p = FreshnessPolicy {
        rollout_deadline: Duration::from_secs(3600),
        ..Default::default()
    };
    let (mut s, _) = Freshness::Unknown.step(&resolved(V2, &[V1], true), t(0), &p);
    let mut now = 10;
    let mut waits = vec![];
    loop {
        let (next, a) = s.step(
            &FreshnessEvent::Verified {
                ready_new: vec![],
                desired: 1,
            },
            t(now),
            &p,
        );
        s = next;
        match a.as_slice() {
            [FreshnessAction::VerifyAt(at)] => {
                waits.push(at.as_millis() / 1000 - now);
                now = at.as_millis() / 1000;
            }
            [FreshnessAction::AbandonRollout] => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(waits, [20, 40, 60, 60, 60]);
    assert_eq!(
        s,
        Freshness::RolloutFailed {
            target: V2.into(),
            category: RolloutFailure::NotReady
        }
    );
    // The same digest does not start another rollout ...
    let (again, a) = s.step(&resolved(V2, &[V1], true), t(now + 900), &p);
    assert_eq!(again, s);
    assert!(a.is_empty());
    // ... a newer one does.
    let v3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    let (again, _) = s.step(&resolved(v3, &[V1], true), t(now + 900), &p);
    assert!(again.is_reinstalling());
}

#[test]
fn verification_succeeds_only_with_all_desired_ready_on_target() {
    let p = FreshnessPolicy::default();
    let (s, _) = Freshness::Unknown.step(&resolved(V2, &[V1, V1], true), t(0), &p);
    let (s1, _) = s.step(
        &FreshnessEvent::Verified {
            ready_new: vec![V2.into()],
            desired: 2,
        },
        t(10),
        &p,
    );
    assert!(s1.is_reinstalling());
    let (s2, _) = s1.step(
        &FreshnessEvent::Verified {
            ready_new: vec![V2.into(), V2.into()],
            desired: 2,
        },
        t(30),
        &p,
    );
    assert_eq!(s2, Freshness::UpToDate { digest: V2.into() });
}

#[test]
fn stale_rollout_fails_on_tick() {
    let p = FreshnessPolicy::default();
    let (s, _) = Freshness::Unknown.step(&resolved(V2, &[V1], true), t(0), &p);
    assert!(
        s.step(&FreshnessEvent::Tick, t(599), &p)
            .0
            .is_reinstalling()
    );
    let (s, a) = s.step(&FreshnessEvent::Tick, t(600), &p);
    assert_eq!(
        s,
        Freshness::RolloutFailed {
            target: V2.into(),
            category: RolloutFailure::Stale
        }
    );
    assert_eq!(a, vec![FreshnessAction::AbandonRollout]);
}

#[test]
fn failures_count_and_reset() {
    let p = FreshnessPolicy::default();
    let fail = FreshnessEvent::ResolveFailed {
        category: CheckFailure::RegistryUnreachable,
    };
    let mut s = Freshness::UpToDate { digest: V1.into() };
    for n in 1..=3 {
        s = s.step(&fail, t(n), &p).0;
        assert_eq!(
            s,
            Freshness::CheckFailed {
                category: CheckFailure::RegistryUnreachable,
                consecutive_failures: n as u32
            }
        );
    }
    s = s.step(&resolved(V1, &[V1], true), t(10), &p).0;
    assert_eq!(s, Freshness::UpToDate { digest: V1.into() });
    let s = s.step(&resolved(V1, &[], true), t(11), &p).0;
    assert_eq!(
        s,
        Freshness::CheckFailed {
            category: CheckFailure::RunningDigestUnavailable,
            consecutive_failures: 1
        }
    );
}

#[test]
fn checks_do_not_interrupt_a_rollout() {
    let p = FreshnessPolicy::default();
    let (s, _) = Freshness::Unknown.step(&resolved(V2, &[V1], true), t(0), &p);
    let (s2, a) = s.step(
        &FreshnessEvent::ResolveFailed {
            category: CheckFailure::Timeout,
        },
        t(5),
        &p,
    );
    assert_eq!(s2, s);
    assert!(a.is_empty());
}

#[test]
fn schedule_respects_floor_and_jitter() {
    let p = FreshnessPolicy::default();
    assert_eq!(p.next_check_at(t(0), 0.5), t(900));
    assert_eq!(p.next_check_at(t(0), 0.0), t(810));
    let short = FreshnessPolicy {
        interval: Duration::from_secs(60),
        ..Default::default()
    };
    assert_eq!(
        short.next_check_at(t(0), 0.0),
        t(300),
        "never below the 5 min floor"
    );
}

fn arb_event() -> impl Strategy<Value = FreshnessEvent> {
    let digest = prop_oneof![Just(V1.to_string()), Just(V2.to_string())];
    prop_oneof![
        (
            digest.clone(),
            proptest::collection::vec(digest.clone(), 0..3),
            any::<bool>()
        )
            .prop_map(
                |(available, running, auto_reinstall)| FreshnessEvent::Resolved {
                    available,
                    running,
                    auto_reinstall
                }
            ),
        Just(FreshnessEvent::ResolveFailed {
            category: CheckFailure::Timeout
        }),
        Just(FreshnessEvent::RolloutStartFailed),
        (proptest::collection::vec(digest, 0..3), 0u32..3)
            .prop_map(|(ready_new, desired)| FreshnessEvent::Verified { ready_new, desired }),
        Just(FreshnessEvent::Tick),
    ]
}

proptest! {
    /// Consecutive failures only grow while checks keep failing; a rollout
    /// never lasts past its deadline plus one verification; UpToDate always
    /// names a digest some event supplied.
    #[test]
    fn freshness_invariants(events in proptest::collection::vec((arb_event(), 0u64..120), 1..100), sample in 0.0f64..1.0) {
        let p = FreshnessPolicy::default();
        let mut s = Freshness::Unknown;
        let mut now = t(1_000);
        for (e, gap) in events {
            now = now + Duration::from_secs(gap);
            let (next, actions) = s.step(&e, now, &p);
            if let (Freshness::CheckFailed { consecutive_failures: a, .. }, Freshness::CheckFailed { consecutive_failures: b, .. }) = (&s, &next) {
                prop_assert!(b >= a);
            }
            if let Freshness::Reinstalling { started_at, next_verify_at, .. } = &next {
                prop_assert!(*next_verify_at <= *started_at + p.rollout_deadline + Duration::from_secs(60));
            }
            if let Freshness::UpToDate { digest } = &next {
                prop_assert!(digest == V1 || digest == V2);
            }
            if actions.iter().any(|a| matches!(a, FreshnessAction::StartRollout { .. })) {
                prop_assert!(next.is_reinstalling());
            }
            s = next;
        }
        let at = p.next_check_at(now, sample);
        prop_assert!(at >= now + p.floor);
        prop_assert!(at <= now + Duration::from_secs_f64(p.interval.as_secs_f64() * 1.1 + 1.0));
    }
}
