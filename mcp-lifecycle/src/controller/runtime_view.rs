//! The controller's cached view of what the runtime runs, by server.
//!
//! Layer: controller.
//!
//! Filled by one `list` at start and at each resync, corrected by the results
//! of the controller's own calls, and marked dirty by runtime events so the
//! next pass inspects exactly the instances that changed. A steady-state pass
//! therefore makes no runtime call at all.
//!
//! Each server's observations sit behind an `Arc`, so a pass takes a
//! snapshot without copying them (a write while a snapshot is held copies
//! that server's map once). Each server also has a generation, bumped only
//! when what is observed actually changes, so a pass can tell without
//! comparing anything whether its published status is still current. A
//! listing is compared with each server's map as it arrives: a server it
//! shows unchanged keeps its map, so a steady resync allocates nothing here.
//!
//! A listing is a snapshot from when it was asked for. While one is in
//! flight, the view notes which instances the controller's own calls change
//! (a start that returns, a removal), and the listing does not overwrite
//! those: an instance started after the list call began is not dropped, and
//! one removed meanwhile is not brought back. Nothing is noted while no
//! listing is in flight.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use litemap::LiteMap;

use crate::ports::{InstanceId, InstanceObservation, RuntimeStatus};

/// What one server's instances look like to the runtime, by id. A flat
/// sorted map: a server has few instances, and a B-tree node would cost
/// kilobytes for each server.
pub(crate) type ObservedMap = LiteMap<InstanceId, InstanceObservation>;

/// A shared snapshot of one server's [`ObservedMap`].
pub(crate) type Observed = Arc<ObservedMap>;

#[derive(Default)]
struct ServerView {
    observed: Observed,
    dirty: BTreeSet<InstanceId>,
    generation: u64,
    /// What a listing in progress found (only inside `replace_all`).
    listing: Listing,
}

/// A listing of one server compared with its observations as it arrives,
/// so a server the listing shows unchanged keeps its map (a steady resync
/// allocates nothing per server).
#[derive(Default)]
struct Listing {
    /// Bit `i`: the listing showed the `i`-th observed instance unchanged.
    unchanged: u64,
    /// What the listing showed new or different (instances past the 64th
    /// always land here).
    changed: Option<ObservedMap>,
}

impl Listing {
    /// Takes one listed observation of a server whose map is `observed`.
    fn take(&mut self, observed: &ObservedMap, obs: InstanceObservation) {
        if let Ok(i) = observed.find_index(&obs.id)
            && i < 64
            && observed.get_indexed(i).is_some_and(|(_, o)| *o == obs)
        {
            self.unchanged |= 1 << i;
            return;
        }
        self.changed
            .get_or_insert_with(|| LiteMap::with_capacity(1))
            .insert(obs.id.clone(), obs);
    }

    /// The server's next map, or `None` if the listing showed exactly what
    /// is observed.
    fn finish(self, observed: &ObservedMap) -> Option<ObservedMap> {
        let kept = self.unchanged.count_ones() as usize;
        let mut fresh = match self.changed {
            None if kept == observed.len() => return None,
            Some(changed) => changed,
            None => LiteMap::with_capacity(kept),
        };
        for (i, (id, obs)) in observed.iter().enumerate() {
            if i < 64 && self.unchanged & (1 << i) != 0 && !fresh.contains_key(id) {
                fresh.insert(id.clone(), obs.clone());
            }
        }
        Some(fresh)
    }
}

/// Whether two listings of a server show a status the same things: the same
/// instances, each in the same state with the same image digest.
fn shows_the_same(old: &ObservedMap, new: &ObservedMap) -> bool {
    old.len() == new.len()
        && old.iter().zip(new.iter()).all(|((id_a, a), (id_b, b))| {
            id_a == id_b && a.status == b.status && a.image_digest == b.image_digest
        })
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct RuntimeView {
    servers: Mutex<HashMap<String, ServerView, foldhash::fast::RandomState>>,
    /// What changed while listings were in flight. Locked after `servers`.
    in_flight: Mutex<InFlight>,
}

/// The instances changed directly since listings in flight began.
#[derive(Default)]
struct InFlight {
    /// Bumped by each change noted.
    epoch: u64,
    /// Listings begun and not yet ended.
    open: u32,
    /// Instance → (its server, the epoch of its latest change).
    changed: HashMap<InstanceId, (String, u64), foldhash::fast::RandomState>,
}

/// A listing in flight: made before the list call, handed to
/// [`RuntimeView::replace_all`] with its result; dropping it (the call
/// failed, or the listing was taken) ends it.
pub(crate) struct ListingInFlight<'a> {
    view: &'a RuntimeView,
    since: u64,
}

impl Drop for ListingInFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.view.in_flight();
        in_flight.open = in_flight.open.saturating_sub(1);
        if in_flight.open == 0 {
            in_flight.changed = HashMap::default();
        }
    }
}

impl RuntimeView {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, ServerView, foldhash::fast::RandomState>) -> R,
    ) -> R {
        let mut guard = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a direct change of `id`, if a listing is in flight.
    fn note(&self, server: &str, id: &InstanceId) {
        let mut in_flight = self.in_flight();
        if in_flight.open == 0 {
            return;
        }
        in_flight.epoch += 1;
        let epoch = in_flight.epoch;
        in_flight
            .changed
            .insert(id.clone(), (server.to_owned(), epoch));
    }

    /// Begins a listing: call it before the list call, and hand the result
    /// to [`RuntimeView::replace_all`] with the listing's outcome.
    pub(crate) fn begin_listing(&self) -> ListingInFlight<'_> {
        let mut in_flight = self.in_flight();
        in_flight.open += 1;
        ListingInFlight {
            view: self,
            since: in_flight.epoch,
        }
    }

    /// Changes one server's observations; bumps its generation if `change`
    /// says it changed something.
    fn change(&self, server: &str, change: impl FnOnce(&mut ObservedMap) -> bool) {
        self.with(|s| {
            let view = match s.get_mut(server) {
                Some(view) => view,
                None => s.entry(server.to_owned()).or_default(),
            };
            if view.observed.is_empty() {
                // Room for one (a vector's first growth would reserve four).
                view.observed = Arc::new(LiteMap::with_capacity(1));
            }
            if change(Arc::make_mut(&mut view.observed)) {
                view.generation += 1;
            }
        });
    }

    /// Replaces everything with a fresh listing (dirty marks are kept: an
    /// event may have raced the listing), except the instances the
    /// controller changed since `listing` began, which keep what the view
    /// holds. A server whose observations are the same as before keeps its
    /// generation, and keeps its map if the listing showed exactly what it
    /// holds.
    pub(crate) fn replace_all(
        &self,
        listing: ListingInFlight<'_>,
        listed: Vec<InstanceObservation>,
    ) {
        let since = listing.since;
        self.with(|servers| {
            // Instances changed since the listing began, by server.
            let mut kept: HashMap<String, Vec<InstanceId>, foldhash::fast::RandomState> =
                HashMap::default();
            for (id, (server, epoch)) in &self.in_flight().changed {
                if *epoch > since {
                    kept.entry(server.clone()).or_default().push(id.clone());
                }
            }
            // Compare the listing with each server's map as it arrives; a
            // server seen for the first time gets a view. No server name is
            // copied for a server already known.
            for obs in listed {
                let view = match servers.get_mut(obs.server.as_str()) {
                    Some(view) => view,
                    None => servers.entry(obs.server.clone()).or_default(),
                };
                view.listing.take(&view.observed, obs);
            }
            for (server, view) in servers.iter_mut() {
                let listing = std::mem::take(&mut view.listing);
                let mut fresh = listing.finish(&view.observed);
                if let Some(ids) = kept.get(server.as_str()) {
                    let mut map = fresh.unwrap_or_else(|| (*view.observed).clone());
                    for id in ids {
                        match view.observed.get(id) {
                            Some(current) => {
                                map.insert(id.clone(), current.clone());
                            }
                            None => {
                                map.remove(id);
                            }
                        }
                    }
                    fresh = (map != *view.observed).then_some(map);
                }
                if let Some(fresh) = fresh {
                    if !shows_the_same(&view.observed, &fresh) {
                        view.generation += 1;
                    }
                    view.observed = Arc::new(fresh);
                }
            }
            servers.retain(|_, v| !v.observed.is_empty() || !v.dirty.is_empty());
        });
    }

    pub(crate) fn mark_dirty(&self, server: &str, id: &InstanceId) {
        self.with(|s| {
            s.entry(server.to_owned())
                .or_default()
                .dirty
                .insert(id.clone());
        });
    }

    pub(crate) fn take_dirty(&self, server: &str) -> Vec<InstanceId> {
        self.with(|s| {
            s.get_mut(server)
                .filter(|v| !v.dirty.is_empty())
                .map(|v| std::mem::take(&mut v.dirty).into_iter().collect())
                .unwrap_or_default()
        })
    }

    /// The generation of the server's observations, or `None` while an
    /// instance is marked for inspection.
    pub(crate) fn settled_generation(&self, server: &str) -> Option<u64> {
        self.with(|s| match s.get(server) {
            Some(v) if !v.dirty.is_empty() => None,
            Some(v) => Some(v.generation),
            None => Some(0),
        })
    }

    /// The server's observations now, and their generation.
    pub(crate) fn snapshot(&self, server: &str) -> (Observed, u64) {
        self.with(|s| {
            s.get(server)
                .map(|v| (v.observed.clone(), v.generation))
                .unwrap_or_default()
        })
    }

    pub(crate) fn upsert(&self, obs: InstanceObservation) {
        let (server, id) = (obs.server.clone(), obs.id.clone());
        self.change(&server, |observed| match observed.get(&obs.id) {
            Some(existing) if *existing == obs => false,
            _ => {
                observed.insert(obs.id.clone(), obs);
                true
            }
        });
        // Noted after the change: a listing that begins in between is newer
        // than the change anyway, so keeping the view's entry is right.
        self.note(&server, &id);
    }

    pub(crate) fn remove(&self, server: &str, id: &InstanceId) {
        self.with(|s| {
            if let Some(v) = s.get_mut(server)
                && v.observed.contains_key(id)
            {
                Arc::make_mut(&mut v.observed).remove(id);
                v.generation += 1;
            }
        });
        self.note(server, id);
    }

    pub(crate) fn set_exited(&self, server: &str, id: &InstanceId) {
        self.change(server, |observed| match observed.get_mut(id) {
            Some(obs) if obs.status == RuntimeStatus::Running => {
                obs.status = RuntimeStatus::Exited {
                    code: None,
                    oom_killed: false,
                    reason: Some("stopped by the controller".into()),
                };
                true
            }
            _ => false,
        });
        self.note(server, id);
    }

    pub(crate) fn forget_server(&self, server: &str) {
        self.with(|s| {
            s.remove(server);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn obs(server: &str, ordinal: u64, status: RuntimeStatus) -> InstanceObservation {
        InstanceObservation {
            id: InstanceId::new(server, ordinal),
            server: server.to_owned(),
            spec_hash: "h".to_owned(),
            status,
            image_digest: None,
            labels: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            started_at: None,
            replica: None,
        }
    }

    #[test]
    fn an_unchanged_listing_keeps_each_map_and_generation() {
        let view = RuntimeView::default();
        view.replace_all(
            view.begin_listing(),
            vec![
                obs("a", 0, RuntimeStatus::Running),
                obs("a", 1, RuntimeStatus::Running),
                obs("b", 0, RuntimeStatus::Running),
            ],
        );
        let (a, gen_a) = view.snapshot("a");
        let (_, gen_b) = view.snapshot("b");
        // Listed in another order: the same observations.
        view.replace_all(
            view.begin_listing(),
            vec![
                obs("b", 0, RuntimeStatus::Running),
                obs("a", 1, RuntimeStatus::Running),
                obs("a", 0, RuntimeStatus::Running),
            ],
        );
        let (a_again, gen_a_again) = view.snapshot("a");
        assert!(Arc::ptr_eq(&a, &a_again), "an unchanged map is kept");
        assert_eq!(gen_a, gen_a_again);
        assert_eq!(view.snapshot("b").1, gen_b);
    }

    #[test]
    fn a_changed_listing_replaces_what_changed() {
        let view = RuntimeView::default();
        view.replace_all(
            view.begin_listing(),
            vec![
                obs("a", 0, RuntimeStatus::Running),
                obs("a", 1, RuntimeStatus::Running),
                obs("b", 0, RuntimeStatus::Running),
                obs("c", 0, RuntimeStatus::Running),
            ],
        );
        let (_, gen_a) = view.snapshot("a");
        let (_, gen_b) = view.snapshot("b");
        let (_, gen_c) = view.snapshot("c");
        let mut relabelled = obs("c", 0, RuntimeStatus::Running);
        relabelled.labels.insert("extra".to_owned(), "x".to_owned());
        view.replace_all(
            view.begin_listing(),
            vec![
                // a-1 is gone; b-0 exited; c-0 shows what a status shows unchanged.
                obs("a", 0, RuntimeStatus::Running),
                obs(
                    "b",
                    0,
                    RuntimeStatus::Exited {
                        code: Some(1),
                        oom_killed: false,
                        reason: None,
                    },
                ),
                relabelled.clone(),
            ],
        );
        let (a, gen_a_now) = view.snapshot("a");
        assert_eq!(a.keys().collect::<Vec<_>>(), [&InstanceId::new("a", 0)]);
        assert!(gen_a_now > gen_a);
        let (b, gen_b_now) = view.snapshot("b");
        assert!(gen_b_now > gen_b);
        assert_ne!(
            b.get(&InstanceId::new("b", 0)).map(|o| &o.status),
            Some(&RuntimeStatus::Running)
        );
        let (c, gen_c_now) = view.snapshot("c");
        assert_eq!(gen_c_now, gen_c, "a status shows nothing new");
        assert_eq!(c.get(&InstanceId::new("c", 0)), Some(&relabelled));
        // A server the listing no longer shows is forgotten.
        view.replace_all(
            view.begin_listing(),
            vec![obs("a", 0, RuntimeStatus::Running)],
        );
        assert!(view.snapshot("b").0.is_empty());
    }

    #[test]
    fn a_listing_does_not_undo_what_changed_while_it_was_in_flight() {
        let view = RuntimeView::default();
        view.replace_all(
            view.begin_listing(),
            vec![
                obs("a", 0, RuntimeStatus::Running),
                obs("a", 1, RuntimeStatus::Running),
            ],
        );
        // A listing begins; meanwhile a-2 is started and a-1 removed.
        let listing = view.begin_listing();
        view.upsert(obs("a", 2, RuntimeStatus::Running));
        view.remove("a", &InstanceId::new("a", 1));
        // It answers with what it saw when it began.
        view.replace_all(
            listing,
            vec![
                obs("a", 0, RuntimeStatus::Running),
                obs("a", 1, RuntimeStatus::Running),
            ],
        );
        let (a, _) = view.snapshot("a");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            [&InstanceId::new("a", 0), &InstanceId::new("a", 2)],
            "the started instance stays and the removed one stays gone"
        );
        // With no listing in flight, nothing is noted, and a later listing
        // is taken as it is.
        view.upsert(obs("a", 3, RuntimeStatus::Running));
        view.replace_all(
            view.begin_listing(),
            vec![obs("a", 0, RuntimeStatus::Running)],
        );
        assert_eq!(
            view.snapshot("a").0.keys().collect::<Vec<_>>(),
            [&InstanceId::new("a", 0)]
        );
        assert!(view.in_flight().changed.is_empty());
    }
}
