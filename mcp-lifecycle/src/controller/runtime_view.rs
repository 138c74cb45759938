//! The controller's cached view of what the runtime runs, by server.
//!
//! Layer: controller.
//!
//! Filled by one `list` at start and at each resync, corrected by the results
//! of the controller's own calls, and marked dirty by runtime events so the
//! next pass inspects exactly the instances that changed. A steady-state pass
//! therefore makes no runtime call at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use crate::ports::{InstanceId, InstanceObservation, RuntimeStatus};

#[derive(Default)]
struct ServerView {
    observed: BTreeMap<InstanceId, InstanceObservation>,
    dirty: BTreeSet<InstanceId>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct RuntimeView {
    servers: Mutex<HashMap<String, ServerView>>,
}

impl RuntimeView {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, ServerView>) -> R) -> R {
        let mut guard = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Replaces everything with a fresh listing (dirty marks are kept: an
    /// event may have raced the listing).
    pub(crate) fn replace_all(&self, listed: Vec<InstanceObservation>) {
        self.with(|servers| {
            for view in servers.values_mut() {
                view.observed.clear();
            }
            for obs in listed {
                servers
                    .entry(obs.server.clone())
                    .or_default()
                    .observed
                    .insert(obs.id.clone(), obs);
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
                .map(|v| std::mem::take(&mut v.dirty).into_iter().collect())
                .unwrap_or_default()
        })
    }

    pub(crate) fn snapshot(&self, server: &str) -> BTreeMap<InstanceId, InstanceObservation> {
        self.with(|s| {
            s.get(server)
                .map(|v| v.observed.clone())
                .unwrap_or_default()
        })
    }

    pub(crate) fn upsert(&self, obs: InstanceObservation) {
        self.with(|s| {
            s.entry(obs.server.clone())
                .or_default()
                .observed
                .insert(obs.id.clone(), obs);
        });
    }

    pub(crate) fn remove(&self, server: &str, id: &InstanceId) {
        self.with(|s| {
            if let Some(v) = s.get_mut(server) {
                v.observed.remove(id);
            }
        });
    }

    pub(crate) fn set_exited(&self, server: &str, id: &InstanceId) {
        self.with(|s| {
            if let Some(obs) = s.get_mut(server).and_then(|v| v.observed.get_mut(id))
                && obs.status == RuntimeStatus::Running
            {
                obs.status = RuntimeStatus::Exited {
                    code: None,
                    oom_killed: false,
                    reason: Some("stopped by the controller".into()),
                };
            }
        });
    }

    pub(crate) fn forget_server(&self, server: &str) {
        self.with(|s| {
            s.remove(server);
        });
    }
}
