//! The freshness cycle: on an interval, resolve what each server's
//! configured tag points to now, compare it with the digests its ready
//! instances run, mark an update available or roll the new digest out, and
//! verify the rollout until it is up to date or has failed.
//!
//! Decisions are the freshness state machine's (`state::freshness`); this
//! module gathers inputs, resolves each distinct reference once per cycle,
//! and writes results under a per-server lease with fenced writes, so several
//! hosts sharing a store never check or roll out the same server twice. A
//! rollout is a change of the server record's `rollout_image` to
//! `repo@sha256:…`; the replica planner replaces instances one at a time.
//!
//! Layer: controller (one of its tasks).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::server::ServerSlot;
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::ports::{Lease, RuntimeStatus};
use crate::records::{self, SERVERS, Versioned};
use crate::spec::Source;
use crate::state::{
    CheckFailure, Freshness, FreshnessAction, FreshnessEvent, InstancePhase, ServerPhase,
    derive_phase, pinned_digest,
};
use crate::status::LifecycleEventKind;
use crate::time::Timestamp;

use crate::records::freshness::{CheckFailureRecord, FRESHNESS, FreshnessRecord, scrub_message};
use crate::status::CycleReport;

enum Work {
    Check { image: String },
    Verify,
}

/// Runs freshness cycles until the controller stops.
pub(super) async fn run(shared: Arc<Shared>) {
    if shared.resolver.is_none() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            () = shared.freshness_kick.notified() => {}
            () = tokio::time::sleep(shared.config.freshness_tick) => {}
        }
        if let Err(error) = cycle(&shared, None).await {
            tracing::warn!(%error, "freshness cycle failed; the next tick retries");
        }
    }
}

/// The repository part of a reference, as written: `registry/repo:tag@d` → `registry/repo`.
pub(super) fn repository_of(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    match no_digest.rfind(':') {
        Some(colon)
            if no_digest[colon..].find('/').is_none()
                && no_digest.rfind('/').is_none_or(|slash| slash < colon) =>
        {
            &no_digest[..colon]
        }
        _ => no_digest,
    }
}

/// A uniform sample in [0, 1) from the server name and time: spreads checks
/// without a random number generator, and is reproducible in tests.
fn jitter_sample(server: &str, now: Timestamp) -> f64 {
    let digest = Sha256::digest(format!("{server}@{}", now.as_millis()).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// One cycle over every server (or just `only`, checked even if not due).
pub(super) async fn cycle(shared: &Arc<Shared>, only: Option<&str>) -> Result<CycleReport> {
    let Some(resolver) = shared.resolver.clone() else {
        return Err(Error::invalid(
            "freshness check",
            "no image resolver is configured (LifecycleBuilder::resolver)",
        ));
    };
    if !shared.leadership.may_act() {
        // Only the leader checks (and each server under its own lease too).
        return Ok(CycleReport::default());
    }
    let now = shared.clock.now();
    let mut report = CycleReport::default();
    let slots: Vec<Arc<ServerSlot>> = match only {
        Some(name) => shared.slot(name).into_iter().collect(),
        None => shared.slots(),
    };

    // 1. What is due, by what is in memory.
    let mut due: Vec<Arc<ServerSlot>> = Vec::new();
    for slot in slots {
        let st = slot.state.lock().await;
        let Some(record) = st.record().filter(|r| !r.value.deleting) else {
            continue;
        };
        let update = &st.update.value;
        let is_due = match &update.state {
            Freshness::Reinstalling {
                next_verify_at,
                started_at,
                ..
            } => {
                *next_verify_at <= now
                    || now.saturating_since(*started_at) >= shared.config.freshness.rollout_deadline
            }
            _ => {
                matches!(record.value.spec.source, Source::Image(_))
                    && (only.is_some() || update.next_check_at.is_none_or(|t| t <= now))
            }
        };
        if is_due {
            due.push(slot.clone());
        }
    }

    // 2. Leases, then the stored record (another host may have moved it on).
    let mut leased: Vec<(Arc<ServerSlot>, Lease, Work)> = Vec::new();
    for slot in due {
        let key = format!("freshness/{}", slot.name);
        let lease = match shared
            .store
            .acquire_lease(
                &key,
                &shared.holder_id,
                shared.config.freshness_lease_ttl,
                now,
            )
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                report.leased_elsewhere += 1;
                continue;
            }
            Err(error) => {
                tracing::warn!(server = %slot.name, %error, "could not take the freshness lease");
                continue;
            }
        };
        let mut st = slot.state.lock().await;
        if let Ok(Some(stored)) =
            records::load::<FreshnessRecord>(shared.store.as_ref(), FRESHNESS, &slot.name).await
        {
            st.update = stored;
        }
        let Some(record) = st.record().filter(|r| !r.value.deleting) else {
            drop(st);
            let _ = shared.store.release_lease(&lease).await;
            continue;
        };
        let phase = derive_phase(
            record.value.desired(),
            st.instances.values().map(|t| &t.record.value.state.phase),
        );
        let work = match (&st.update.value.state, &record.value.spec.source) {
            (Freshness::Reinstalling { .. }, _) => Some(Work::Verify),
            (_, Source::Image(image))
                if record.value.spec.update.check
                    && matches!(phase, ServerPhase::Running | ServerPhase::Degraded)
                    && (only.is_some()
                        || st.update.value.next_check_at.is_none_or(|t| t <= now)) =>
            {
                Some(Work::Check {
                    image: image.clone(),
                })
            }
            _ => None,
        };
        drop(st);
        match work {
            Some(work) => leased.push((slot, lease, work)),
            None => {
                let _ = shared.store.release_lease(&lease).await;
            }
        }
    }

    // 3. Each distinct reference once, with a timeout and bounded concurrency.
    let images: BTreeSet<String> = leased
        .iter()
        .filter_map(|(_, _, w)| match w {
            Work::Check { image } if pinned_digest(image).is_none() => Some(image.clone()),
            _ => None,
        })
        .collect();
    report.resolved = images.len();
    let timeout = shared.config.resolve_timeout;
    let resolved: BTreeMap<String, std::result::Result<String, (CheckFailure, String)>> =
        futures::stream::iter(images)
            .map(|image| {
                let resolver = resolver.clone();
                async move {
                    let result = match tokio::time::timeout(timeout, resolver.resolve(&image)).await
                    {
                        Ok(Ok(digest)) => Ok(digest),
                        Ok(Err(e)) => {
                            Err((CheckFailure::from(resolver.classify(&e)), e.to_string()))
                        }
                        Err(_) => Err((
                            CheckFailure::Timeout,
                            format!("the registry did not answer within {timeout:?}"),
                        )),
                    };
                    (image, result)
                }
            })
            .buffer_unordered(shared.config.resolve_concurrency.max(1))
            .collect()
            .await;

    // 4. Step each server's machine and write under its lease.
    for (slot, lease, work) in leased {
        let outcome = match work {
            Work::Check { image } => {
                report.checked += 1;
                let result = resolved.get(&image).cloned();
                step_server(shared, &slot, &lease, Some((image, result))).await
            }
            Work::Verify => {
                report.verified += 1;
                step_server(shared, &slot, &lease, None).await
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(server = %slot.name, %error, "freshness step failed; the next cycle retries");
        }
        let _ = shared.store.release_lease(&lease).await;
        slot.kick.notify_one();
    }
    Ok(report)
}

type Resolved = Option<std::result::Result<String, (CheckFailure, String)>>;

/// Feeds one check (with its resolution) or one verification to a server's
/// freshness machine and carries out what it asks, fenced by `lease`.
async fn step_server(
    shared: &Arc<Shared>,
    slot: &ServerSlot,
    lease: &Lease,
    check: Option<(String, Resolved)>,
) -> Result<()> {
    let now = shared.clock.now();
    let policy = &shared.config.freshness;
    let fence = lease.fence();
    let mut st = slot.state.lock().await;
    let Some(server) = st.record().cloned() else {
        return Ok(());
    };
    let hash = server.value.effective_hash();
    let (observed, _) = shared.runtime.snapshot(&slot.name);
    let ready_digests = |current_only: bool| -> Vec<String> {
        st.instances
            .values()
            .filter(|t| matches!(t.record.value.state.phase, InstancePhase::Ready { .. }))
            .filter(|t| !current_only || t.record.value.spec_hash == hash)
            .filter_map(|t| observed.get(&t.record.value.id))
            .filter(|o| o.status == RuntimeStatus::Running)
            .filter_map(|o| o.image_digest.clone())
            .collect()
    };
    let mut update = st.update.value.clone();
    let before = update.state.clone();
    let mut actions = Vec::new();
    match check {
        Some((image, result)) => {
            let running = ready_digests(false);
            let auto_reinstall = server.value.spec.update.auto_reinstall;
            let (state, mut a) = update.state.step(
                &FreshnessEvent::CheckStarted {
                    image: image.clone(),
                    running: running.clone(),
                    auto_reinstall,
                },
                now,
                policy,
            );
            update.state = state;
            if a.iter()
                .any(|x| matches!(x, FreshnessAction::Resolve { .. }))
            {
                a.retain(|x| !matches!(x, FreshnessAction::Resolve { .. }));
                let event = match result {
                    Some(Ok(available)) => {
                        update.available_digest = Some(available.clone());
                        FreshnessEvent::Resolved {
                            available,
                            running,
                            auto_reinstall,
                        }
                    }
                    Some(Err((category, message))) => {
                        update.last_failure = Some(CheckFailureRecord {
                            at: now,
                            category,
                            message: scrub_message(&message),
                        });
                        FreshnessEvent::ResolveFailed { category }
                    }
                    None => FreshnessEvent::ResolveFailed {
                        category: CheckFailure::RegistryUnreachable,
                    },
                };
                let (state, more) = update.state.step(&event, now, policy);
                update.state = state;
                a.extend(more);
            }
            actions.extend(a);
            update.last_check = Some(now);
            match &update.state {
                Freshness::CheckFailed { category, .. } => {
                    if *category == CheckFailure::RunningDigestUnavailable {
                        update.last_failure = Some(CheckFailureRecord {
                            at: now,
                            category: *category,
                            message: "no ready instance reports the image digest it runs".into(),
                        });
                    }
                }
                _ => update.last_success = Some(now),
            }
            update.next_check_at = Some(policy.next_check_at(now, jitter_sample(&slot.name, now)));
        }
        None => {
            let (state, a) = update.state.step(&FreshnessEvent::Tick, now, policy);
            update.state = state;
            actions.extend(a);
            if update.state.is_reinstalling() {
                let event = FreshnessEvent::Verified {
                    ready_new: ready_digests(true),
                    desired: server.value.desired(),
                };
                let (state, a) = update.state.step(&event, now, policy);
                update.state = state;
                actions.extend(a);
            }
        }
    }

    // Carry out what the machine asked, writing the server record under the fence.
    for action in actions {
        match action {
            FreshnessAction::StartRollout { digest } => {
                let Source::Image(image) = &server.value.spec.source else {
                    continue;
                };
                let pinned = format!("{}@{digest}", repository_of(image));
                let mut changed = server.clone();
                update.previous_rollout_image = changed.value.rollout_image.clone();
                Arc::make_mut(&mut changed.value).rollout_image = Some(pinned.clone());
                match records::save(
                    shared.store.as_ref(),
                    SERVERS,
                    &slot.name,
                    &mut changed,
                    Some(&fence),
                )
                .await
                {
                    Ok(()) => {
                        st.set_shared_record(Some(changed));
                        update.last_reinstall_at = Some(now);
                        st.push_event(
                            shared,
                            &slot.name,
                            None,
                            LifecycleEventKind::FreshnessChanged,
                            format!("rolling out {pinned}"),
                        );
                    }
                    Err(error) => {
                        let (state, _) =
                            update
                                .state
                                .step(&FreshnessEvent::RolloutStartFailed, now, policy);
                        update.state = state;
                        update.last_failure = Some(CheckFailureRecord {
                            at: now,
                            category: CheckFailure::ReinstallFailed,
                            message: scrub_message(&error.to_string()),
                        });
                    }
                }
            }
            FreshnessAction::AbandonRollout => {
                let Some(current) = st.record().cloned() else {
                    continue;
                };
                let mut changed = current;
                Arc::make_mut(&mut changed.value).rollout_image =
                    update.previous_rollout_image.take();
                records::save(
                    shared.store.as_ref(),
                    SERVERS,
                    &slot.name,
                    &mut changed,
                    Some(&fence),
                )
                .await?;
                st.set_shared_record(Some(changed));
                st.push_event(
                    shared,
                    &slot.name,
                    None,
                    LifecycleEventKind::FreshnessChanged,
                    "rollout abandoned; serving on what ran before".into(),
                );
            }
            FreshnessAction::Resolve { .. } | FreshnessAction::VerifyAt(_) => {}
        }
    }
    if update.state != before {
        let message = format!(
            "image freshness: {} -> {}",
            before.name(),
            update.state.name()
        );
        st.push_event(
            shared,
            &slot.name,
            None,
            LifecycleEventKind::FreshnessChanged,
            message,
        );
    }
    let mut stored = Versioned {
        value: update,
        version: st.update.version,
    };
    records::save(
        shared.store.as_ref(),
        FRESHNESS,
        &slot.name,
        &mut stored,
        Some(&fence),
    )
    .await?;
    st.update = stored;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_keeps_the_registry_and_drops_tag_and_digest() {
        assert_eq!(
            repository_of("127.0.0.1:5000/mcp-test-server:v1"),
            "127.0.0.1:5000/mcp-test-server"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/mcp-test-server"),
            "127.0.0.1:5000/mcp-test-server"
        );
        assert_eq!(repository_of("ghcr.io/a/b:1.4@sha256:abc"), "ghcr.io/a/b");
        assert_eq!(repository_of("echo"), "echo");
        assert_eq!(repository_of("echo:1"), "echo");
    }

    #[test]
    fn jitter_is_uniform_enough_and_in_range() {
        let samples: Vec<f64> = (0..1000)
            .map(|i| jitter_sample("s", Timestamp::from_millis(i)))
            .collect();
        assert!(samples.iter().all(|s| (0.0..1.0).contains(s)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
