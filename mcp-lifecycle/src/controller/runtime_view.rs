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
}

impl RuntimeView {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, ServerView, foldhash::fast::RandomState>) -> R,
    ) -> R {
        let mut guard = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
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
    /// event may have raced the listing). A server whose observations are
    /// the same as before keeps its generation, and keeps its map if the
    /// listing showed exactly what it holds.
    pub(crate) fn replace_all(&self, listed: Vec<InstanceObservation>) {
        self.with(|servers| {
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
            for view in servers.values_mut() {
                let listing = std::mem::take(&mut view.listing);
                if let Some(fresh) = listing.finish(&view.observed) {
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
        let server = obs.server.clone();
        self.change(&server, |observed| match observed.get(&obs.id) {
            Some(existing) if *existing == obs => false,
            _ => {
                observed.insert(obs.id.clone(), obs);
                true
            }
        });
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
        view.replace_all(vec![
            obs("a", 0, RuntimeStatus::Running),
            obs("a", 1, RuntimeStatus::Running),
            obs("b", 0, RuntimeStatus::Running),
        ]);
        let (a, gen_a) = view.snapshot("a");
        let (_, gen_b) = view.snapshot("b");
        // Listed in another order: the same observations.
        view.replace_all(vec![
            obs("b", 0, RuntimeStatus::Running),
            obs("a", 1, RuntimeStatus::Running),
            obs("a", 0, RuntimeStatus::Running),
        ]);
        let (a_again, gen_a_again) = view.snapshot("a");
        assert!(Arc::ptr_eq(&a, &a_again), "an unchanged map is kept");
        assert_eq!(gen_a, gen_a_again);
        assert_eq!(view.snapshot("b").1, gen_b);
    }

    #[test]
    fn a_changed_listing_replaces_what_changed() {
        let view = RuntimeView::default();
        view.replace_all(vec![
            obs("a", 0, RuntimeStatus::Running),
            obs("a", 1, RuntimeStatus::Running),
            obs("b", 0, RuntimeStatus::Running),
            obs("c", 0, RuntimeStatus::Running),
        ]);
        let (_, gen_a) = view.snapshot("a");
        let (_, gen_b) = view.snapshot("b");
        let (_, gen_c) = view.snapshot("c");
        let mut relabelled = obs("c", 0, RuntimeStatus::Running);
        relabelled.labels.insert("extra".to_owned(), "x".to_owned());
        view.replace_all(vec![
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
        ]);
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
        view.replace_all(vec![obs("a", 0, RuntimeStatus::Running)]);
        assert!(view.snapshot("b").0.is_empty());
    }
}
