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
//! comparing anything whether its published status is still current.

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
    listed: Option<ObservedMap>,
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
    /// the same as before keeps its generation.
    pub(crate) fn replace_all(&self, listed: Vec<InstanceObservation>) {
        self.with(|servers| {
            // Sort the listing into each server's next map; a server seen
            // for the first time gets a view. No server name is copied for
            // a server already known.
            for obs in listed {
                let view = match servers.get_mut(obs.server.as_str()) {
                    Some(view) => view,
                    None => servers.entry(obs.server.clone()).or_default(),
                };
                view.listed
                    .get_or_insert_with(|| LiteMap::with_capacity(1))
                    .insert(obs.id.clone(), obs);
            }
            for view in servers.values_mut() {
                let fresh = view.listed.take().unwrap_or_default();
                if !shows_the_same(&view.observed, &fresh) {
                    view.generation += 1;
                }
                view.observed = Arc::new(fresh);
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
