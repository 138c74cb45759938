//! Pinning a tag to its digest before a server's first instance starts.
//!
//! A server whose image is a tag (`repo:tag`), with update checks on and a
//! resolver configured, has the tag resolved once before its first
//! instance is created, and runs `repo@sha256:…` from then on (the record's
//! `rollout_image`, which rollouts move later). So the digest an instance
//! runs is the one the library asked for, read back from its reference;
//! never a guess from an engine's image list, which may name several
//! digests for one repository (Podman does).
//!
//! The same holds whenever the spec changes the image (a rollout replaces
//! every instance then anyway). A server with instances of its current spec
//! is never pinned in place (that would replace them all); one whose tag
//! cannot be resolved (registry away, image only local) starts by the tag,
//! says so in an event, and is not tried again until it is stopped or its
//! spec changes.
//!
//! Layer: controller.

use crate::records::{self, SERVERS};
use crate::spec::Source;
use crate::state::pinned_digest;
use crate::status::LifecycleEventKind;

use super::freshness::repository_of;
use super::reconcile::Pass;
use super::server::ServerState;

impl Pass<'_> {
    /// Pins the server's tag to its digest if its first instance is about
    /// to be created (see the module docs). Waits at most the configured
    /// resolve timeout; never fails the pass.
    pub(super) async fn pin_before_first_start(&mut self, st: &mut ServerState) {
        let Some(resolver) = self.shared.resolver.clone() else {
            return;
        };
        let Some(record) = st.record().cloned() else {
            return;
        };
        let server = &record.value;
        let Source::Image(image) = &server.spec.source else {
            return;
        };
        if server.desired() == 0 {
            // The next start may try again.
            st.pin_failed_for = None;
            return;
        }
        let hash = self.hash.clone();
        let wanted = !server.deleting
            && server.rollout_image.is_none()
            && server.spec.update.check
            && pinned_digest(image).is_none()
            && st.pin_failed_for.as_deref() != Some(&*hash);
        if !wanted {
            // The common case on every pass: decided without a look at the
            // instances.
            return;
        }
        // No instance runs what is about to be created: pinning replaces
        // nothing that would not be replaced anyway.
        let none_current = st
            .instances
            .values()
            .all(|t| *t.record.value.spec_hash != *hash)
            && self
                .shared
                .runtime
                .snapshot(self.name)
                .0
                .values()
                .all(|o| *o.spec_hash != *hash);
        if !none_current {
            return;
        }
        let timeout = self.shared.config.resolve_timeout;
        let resolved = match tokio::time::timeout(timeout, resolver.resolve(image)).await {
            Ok(Ok(digest)) => Ok(digest),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("the registry did not answer within {timeout:?}")),
        };
        let digest = match resolved {
            Ok(digest) => digest,
            Err(reason) => {
                st.pin_failed_for = Some(hash);
                tracing::warn!(%image, %reason,
                    "cannot pin the tag to a digest; starting by the tag (its running digest may be unknown)");
                st.push_event(
                    self.shared,
                    self.name,
                    None,
                    LifecycleEventKind::FreshnessChanged,
                    format!(
                        "cannot pin {image} to a digest ({reason}); starting by the tag, so the digest it runs may be unknown"
                    ),
                );
                return;
            }
        };
        let pinned = format!("{}@{digest}", repository_of(image));
        let mut changed = record.clone();
        std::sync::Arc::make_mut(&mut changed.value).rollout_image = Some(pinned.clone());
        let fence = self.shared.leadership.fence();
        match records::save(
            self.shared.store.as_ref(),
            SERVERS,
            self.name,
            &mut changed,
            fence.as_ref(),
        )
        .await
        {
            Ok(()) => {
                st.set_shared_record(Some(changed));
                self.hash = st.hash().clone();
                st.push_event(
                    self.shared,
                    self.name,
                    None,
                    LifecycleEventKind::FreshnessChanged,
                    format!("pinned {image} to {pinned} for the first start"),
                );
            }
            Err(error) => {
                // Another writer moved the record (or the store is away):
                // the next pass reads it back and decides again.
                self.store_error(st, "pinning the image", &error);
            }
        }
    }
}
