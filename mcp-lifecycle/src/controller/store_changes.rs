//! Prompt hand-over: every host that shares a store under leader election
//! follows the store's change announcements ([`crate::ports::Store::changes`])
//! and takes a server record another host wrote as soon as it is announced,
//! instead of at its next lease renewal. The leader thereby acts on a host
//! call made on a standby at once; a standby reports (and takes calls on) a
//! server applied through another host at once.
//!
//! Layer: controller. This task only reads: it loads the announced server
//! record and hands it to `leadership::pick_up`, which keeps it only if it is
//! newer than this host's copy. Announcements are hints; the renewal's full
//! re-read stays the guarantee, and a gap (`Missed`) triggers one at once.
//! A store without announcements leaves this task idle, and a single host
//! (no election) has no other writer to follow.

use std::sync::Arc;

use futures::StreamExt;

use crate::ports::{StoreChange, Version};
use crate::records::{self, SERVERS, ServerRecord};

use super::leadership::{pick_up, pick_up_host_writes};
use super::shared::Shared;

/// Follows the store's announcements until the controller stops.
pub(super) async fn follow(shared: Arc<Shared>) {
    if shared.leadership.election.is_none() {
        return;
    }
    let Some(mut changes) = shared.store.changes() else {
        tracing::debug!(
            "the store announces no changes; other hosts' writes are picked up at lease renewals"
        );
        return;
    };
    loop {
        let change = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            change = changes.next() => change,
        };
        let Some(change) = change else {
            tracing::warn!(
                "the store's change announcements ended; other hosts' writes are picked up at lease renewals"
            );
            return;
        };
        match change {
            StoreChange::Record {
                collection,
                key,
                version,
            } if collection == SERVERS => {
                // On a task of its own: taking the record waits for the
                // server's lock, which a pass may hold, and must not hold up
                // the announcements of other servers.
                let task_shared = shared.clone();
                shared.tasks.spawn(async move {
                    pick_up_announced(&task_shared, &key, version).await;
                });
            }
            StoreChange::Record { .. } => {}
            StoreChange::Missed => {
                if let Err(error) = pick_up_host_writes(&shared).await {
                    tracing::warn!(%error, "could not re-read server records after missed announcements");
                }
            }
        }
    }
}

/// Takes server `key`'s record as announced at `version`, unless this host
/// already holds that version (its own write coming back), which costs no
/// store read.
async fn pick_up_announced(shared: &Arc<Shared>, key: &str, version: Option<Version>) {
    if let (Some(slot), Some(announced)) = (shared.slot(key), version) {
        let st = slot.state.lock().await;
        if st
            .record()
            .and_then(|r| r.version)
            .is_some_and(|mine| mine >= announced)
        {
            return;
        }
    }
    match records::load::<ServerRecord>(shared.store.as_ref(), SERVERS, key).await {
        Ok(Some(stored)) => pick_up(shared, key, stored).await,
        // Deleted: the leader deletes a server's record itself, after
        // removing its workloads.
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(server = %key, %error, "could not read an announced server record; the next renewal re-reads it");
        }
    }
}
