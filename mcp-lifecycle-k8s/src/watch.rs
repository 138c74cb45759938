//! The watches: a kube-runtime watcher over the namespace's managed pods
//! (and one over adopted Deployments' pods, when adoption is on) feeds a
//! reflector (the cache every read is served from) and fans each change out
//! as a [`RuntimeEvent`]. The watcher relists after an
//! expired resource version and retries with back-off while the API server
//! is away; after a relist, pods that vanished meanwhile are reported
//! removed. A second watcher keeps the managed Services (for endpoints).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use mcp_lifecycle::ports::{
    InstanceId, InstanceObservation, RuntimeEvent, RuntimeEventKind, RuntimeStatus, labels,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What a pod is a replica of: its observation, or `None` for a pod that is
/// none of ours.
pub(crate) type Observer = Arc<dyn Fn(&Pod) -> Option<InstanceObservation> + Send + Sync>;

/// Starts a watch of the pods `selector` matches (a label selector);
/// `observe` says which server each is a replica of. Returns the cache. The
/// task ends with `cancel`.
pub(crate) fn start(
    api: Api<Pod>,
    selector: &str,
    observe: Observer,
    events: broadcast::Sender<RuntimeEvent>,
    cancel: CancellationToken,
) -> Store<Pod> {
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(selector);
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut known: BTreeSet<(String, String)> = BTreeSet::new();
        let mut relisted: BTreeSet<(String, String)> = BTreeSet::new();
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = stream.next() => next,
            };
            let Some(next) = next else { return };
            match next {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    let Some(obs) = observe(&pod) else { continue };
                    let key = (obs.server.clone(), obs.id.as_str().to_owned());
                    relisted.insert(key.clone());
                    known.insert(key);
                    send(&events, obs, false);
                }
                Ok(Event::Delete(pod)) => {
                    let Some(obs) = observe(&pod) else { continue };
                    known.remove(&(obs.server.clone(), obs.id.as_str().to_owned()));
                    send(&events, obs, true);
                }
                Ok(Event::Init) => relisted.clear(),
                Ok(Event::InitDone) => {
                    for (server, name) in known.difference(&relisted) {
                        let _ = events.send(RuntimeEvent {
                            instance: InstanceId::from_raw(name.clone()),
                            server: server.clone(),
                            kind: RuntimeEventKind::Removed,
                        });
                    }
                    known = std::mem::take(&mut relisted);
                    relisted = known.clone();
                }
                Err(error) => {
                    tracing::warn!(%error, "pod watch failed; retrying with back-off");
                }
            }
        }
    });
    reader
}

/// Starts a watch of the namespace's managed Services (for endpoints);
/// returns its cache. The task ends with `cancel`.
pub(crate) fn start_services(api: Api<Service>, cancel: CancellationToken) -> Store<Service> {
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(labels::MANAGED_BY);
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                None => return,
                Some(Err(error)) => {
                    tracing::warn!(%error, "service watch failed; retrying with back-off");
                }
                Some(Ok(_)) => {}
            }
        }
    });
    reader
}

/// Fans one replica's change out as a [`RuntimeEvent`].
pub(crate) fn send(
    events: &broadcast::Sender<RuntimeEvent>,
    obs: InstanceObservation,
    deleted: bool,
) {
    let kind = if deleted {
        RuntimeEventKind::Removed
    } else {
        match obs.status {
            RuntimeStatus::Running => RuntimeEventKind::Started,
            RuntimeStatus::Exited {
                code, oom_killed, ..
            } => RuntimeEventKind::Exited { code, oom_killed },
            RuntimeStatus::Created => RuntimeEventKind::Changed,
        }
    };
    let _ = events.send(RuntimeEvent {
        instance: obs.id,
        server: obs.server,
        kind,
    });
}
