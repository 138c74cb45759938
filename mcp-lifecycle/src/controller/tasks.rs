//! The controller's long-running tasks and the passes they start: one task
//! per server, the runtime event pump, the periodic resync, and passes run
//! from a host call's own task.
//!
//! Layer: controller.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::Instrument;

use crate::error::Result;
use crate::ports::{EventStream, InstanceObservation, RuntimeEventKind};
use crate::status::ResyncReport;

use super::reconcile::{self, PassOutcome};
use super::runtime_view::ListingInFlight;
use super::server::ServerSlot;
use super::shared::Shared;

/// A server's task: waits for a kick or its next wake-up, then runs a pass.
pub(super) async fn run_server(shared: Arc<Shared>, slot: Arc<ServerSlot>) {
    loop {
        let wake = *slot.wake.lock().unwrap_or_else(|e| e.into_inner());
        let run = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            () = slot.kick.notified() => true,
            () = slot.rescheduled.notified() => false,
            () = shared.sleep_until(wake) => true,
        };
        if !run {
            continue;
        }
        // A host that goes away mid-pass stops at the next await, like a
        // crash: the store and the runtime must make that safe.
        let outcome = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            // Boxed: a pass's future is large, and an idle server's task
            // would otherwise carry its space while it sleeps.
            outcome = Box::pin(async {
                let _permit = shared.permits.acquire().await.ok()?;
                Some(reconcile::pass(&shared, &slot).await)
            }) => match outcome {
                Some(outcome) => outcome,
                None => return,
            },
        };
        if let PassOutcome::Deleted = outcome {
            shared.remove_slot(&slot);
            return;
        }
    }
}

/// Reads the runtime's event stream: marks the instance for inspection and
/// kicks its server. Resubscribes if the stream ends.
pub(super) async fn pump_runtime_events(shared: Arc<Shared>, first: EventStream) {
    let mut first = Some(first);
    let owns_replicas = shared.orchestrator.replica_owner().is_some();
    loop {
        let mut stream = first.take().unwrap_or_else(|| shared.orchestrator.events());
        loop {
            let next = tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return,
                next = stream.next() => next,
            };
            let Some(event) = next else { break };
            // On instance-granular runtimes starts are the controller's own
            // doing, and their result is already recorded; exits and removals
            // are news. A runtime that owns replicas starts them itself.
            if event.kind == RuntimeEventKind::Started && !owns_replicas {
                continue;
            }
            shared.runtime.mark_dirty(&event.server, &event.instance);
            if let Some(slot) = shared.slot(&event.server) {
                slot.kick.notify_one();
            }
        }
        tracing::warn!("runtime event stream ended; resubscribing");
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Lists every managed workload periodically and reconciles everything.
pub(super) async fn run_resync_loop(shared: Arc<Shared>) {
    run_resync(shared).await;
}

async fn run_resync(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(shared.config.resync_interval) => {}
        }
        if let Err(error) = resync(&shared).await {
            tracing::warn!(%error, "periodic resync failed; will retry at the next interval");
        }
    }
}

/// Replaces the runtime view with a listing and removes the workloads whose
/// server is not `known` (no spec owns them). Returns how many were removed;
/// a failed removal is retried at the next resync.
pub(super) async fn take_listing(
    shared: &Shared,
    listing: ListingInFlight<'_>,
    mut listed: Vec<InstanceObservation>,
    known: impl Fn(&str) -> bool,
) -> usize {
    let orphans: Vec<_> = listed.extract_if(.., |o| !known(&o.server)).collect();
    shared.runtime.replace_all(listing, listed);
    let mut removed = 0;
    if let Some(owner) = shared.orchestrator.replica_owner() {
        // The runtime keeps replicas of a workload alive: remove the workload.
        let servers: std::collections::BTreeSet<&str> =
            orphans.iter().map(|o| o.server.as_str()).collect();
        for server in servers {
            match owner.delete_workload(server).await {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(%server, "removed a workload no spec owns");
                }
                Err(error) => {
                    tracing::warn!(%server, %error,
                        "could not remove a workload no spec owns; the next resync retries");
                }
            }
        }
        return removed;
    }
    for orphan in orphans {
        match shared.orchestrator.remove(&orphan.id).await {
            Ok(()) => {
                removed += 1;
                tracing::info!(server = %orphan.server, instance = %orphan.id, "removed a workload no spec owns");
            }
            Err(error) => {
                tracing::warn!(server = %orphan.server, instance = %orphan.id, %error,
                    "could not remove a workload no spec owns; the next resync retries");
            }
        }
    }
    removed
}

/// One list call, then a pass over every server, bounded in concurrency.
pub(super) async fn resync(shared: &Arc<Shared>) -> Result<ResyncReport> {
    if !shared.leadership.may_act() {
        return Ok(ResyncReport::default());
    }
    let listing = shared.runtime.begin_listing();
    let listed = shared.orchestrator.list(&shared.managed_selector()).await?;
    let workloads = listed.len();
    let orphans_removed =
        take_listing(shared, listing, listed, |server| shared.has_slot(server)).await;
    // Settle first what a pass would not change (the listing showed it
    // nothing new and nothing is due), so only the rest costs a future.
    let now = shared.clock.now();
    let (servers, unsettled) = shared.with_slots(|slots| {
        let unsettled: Vec<Arc<ServerSlot>> = slots
            .filter(|slot| {
                !slot
                    .state
                    .try_lock()
                    .is_ok_and(|st| reconcile::is_settled(shared, slot, &st, now))
            })
            .cloned()
            .collect();
        unsettled
    });
    let concurrency = shared.config.max_concurrent_reconciles.max(1);
    futures::stream::iter(unsettled)
        .for_each_concurrent(concurrency, |slot| {
            let shared = shared.clone();
            async move {
                let span = tracing::info_span!("server", server = %slot.name);
                let before = *slot.wake.lock().unwrap_or_else(|e| e.into_inner());
                match reconcile::pass(&shared, &slot).instrument(span).await {
                    PassOutcome::Deleted => shared.remove_slot(&slot),
                    // Let the server's task re-read its next wake-up if it
                    // moved earlier (a later one only costs it an early, idle
                    // pass; waking 10,000 tasks per resync costs more).
                    PassOutcome::WakeAt(after) => {
                        if before.is_none_or(|b| after.is_some_and(|a| a < b)) {
                            slot.rescheduled.notify_one();
                        }
                    }
                }
            }
        })
        .await;
    Ok(ResyncReport {
        servers,
        workloads,
        orphans_removed,
    })
}

/// Runs a pass now from the caller's task (host calls that must finish their
/// work before returning: stop, delete).
pub(super) async fn reconcile_now(shared: &Arc<Shared>, slot: &Arc<ServerSlot>) -> PassOutcome {
    let span = tracing::info_span!("server", server = %slot.name);
    let outcome = reconcile::pass(shared, slot).instrument(span).await;
    match outcome {
        PassOutcome::Deleted => shared.remove_slot(slot),
        PassOutcome::WakeAt(_) => slot.rescheduled.notify_one(),
    }
    outcome
}
