//! Port-forwards to pods, for a host outside the cluster network
//! ([`crate::PodAccess::PortForward`]): one loopback listener per pod and
//! port, reused while the pod exists. Each connection it accepts opens a
//! port-forward to the pod through the API server (kube's websocket
//! `pods/portforward`) and copies bytes both ways. A listener closes, with
//! its connections, when the pod watch reports the pod removed (and, after
//! a lagging subscriber missed events, when the watch's cache no longer
//! holds the pod); all of them close when the backend is dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use mcp_lifecycle::ports::{RuntimeEvent, RuntimeEventKind};
use mcp_lifecycle::{Error, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::errors::{self, Call};

/// The RBAC resource a port-forward needs.
const RESOURCE: &str = "pods/portforward";

/// The RBAC verbs kube's websocket port-forward needs: it is a GET upgrade
/// (authorized as `get`), which recent API servers also check as `create`.
const VERB: &str = "get` and `create";

/// How long a listener waits after a failed accept (out of descriptors,
/// say) before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listeners, keyed by pod name and port.
#[derive(Clone)]
pub(crate) struct PortForwards {
    shared: Arc<Shared>,
}

struct Shared {
    api: Api<Pod>,
    namespace: String,
    /// The pod watches' caches (managed pods, adopted Deployments' pods).
    pods: Vec<Store<Pod>>,
    listeners: Mutex<HashMap<(String, u16), Listener>>,
    cancel: CancellationToken,
}

/// One loopback listener forwarding to one port of one pod.
struct Listener {
    /// The pod's uid: a pod recreated under the same name gets a new listener.
    uid: Option<String>,
    address: SocketAddr,
    /// Closes the listener and every connection it accepted.
    cancel: CancellationToken,
}

impl PortForwards {
    /// Starts closing listeners of pods that `events` reports removed.
    /// `pods` are the pod watches' caches; everything ends with `cancel`.
    pub(crate) fn start(
        api: Api<Pod>,
        namespace: String,
        pods: Vec<Store<Pod>>,
        events: broadcast::Receiver<RuntimeEvent>,
        cancel: CancellationToken,
    ) -> PortForwards {
        let forwards = PortForwards {
            shared: Arc::new(Shared {
                api,
                namespace,
                pods,
                listeners: Mutex::new(HashMap::new()),
                cancel,
            }),
        };
        tokio::spawn(forwards.clone().close_removed(events));
        forwards
    }

    /// The loopback address that forwards to `port` of `pod`: the pod's
    /// listener, opened on first use. Opening one first opens a
    /// port-forward to the pod, so a role without `pods/portforward` (or a
    /// pod the API server cannot forward to) fails here, with the API
    /// server's answer.
    pub(crate) async fn address(&self, pod: &Pod, port: u16) -> Result<SocketAddr> {
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or_else(|| Error::invalid("pod", "the pod has no name"))?;
        let uid = pod.metadata.uid.clone();
        let key = (name.clone(), port);
        if let Some(listener) = self.listeners().get(&key)
            && listener.uid == uid
        {
            return Ok(listener.address);
        }
        self.check(&name, port).await?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::unavailable("a loopback port", e.to_string()))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::unavailable("a loopback port", e.to_string()))?;
        let address = self.insert(&name, uid.as_deref(), port, listener, address);
        // The cache drops a pod before its removal is reported: a pod that
        // went away while the listener opened is gone from it by now, and
        // its removal may have been handled before the listener existed.
        if !self.exists(&name, uid.as_deref()) {
            self.close(|(pod, p), listener| *pod == name && *p == port && listener.uid == uid);
            return Err(Error::not_found(format!("pod {name}")));
        }
        Ok(address)
    }

    /// Serves `listener` (bound at `address`) for `port` of `pod`, unless
    /// another caller opened one meanwhile: then ours is dropped and that
    /// one's address returned. A listener for an older pod of the name closes.
    fn insert(
        &self,
        pod: &str,
        uid: Option<&str>,
        port: u16,
        listener: TcpListener,
        address: SocketAddr,
    ) -> SocketAddr {
        let key = (pod.to_owned(), port);
        let mut listeners = self.listeners();
        if let Some(existing) = listeners.get(&key)
            && existing.uid.as_deref() == uid
        {
            return existing.address;
        }
        let cancel = self.shared.cancel.child_token();
        tokio::spawn(accept(
            self.shared.clone(),
            listener,
            pod.to_owned(),
            port,
            cancel.clone(),
        ));
        tracing::debug!(pod, port, %address, "port-forward listener opened");
        let opened = Listener {
            uid: uid.map(str::to_owned),
            address,
            cancel,
        };
        if let Some(old) = listeners.insert(key, opened) {
            old.cancel.cancel();
        }
        address
    }

    fn listeners(&self) -> MutexGuard<'_, HashMap<(String, u16), Listener>> {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens one port-forward and closes it again: whether the role may
    /// forward and the API server can reach the pod.
    async fn check(&self, pod: &str, port: u16) -> Result<()> {
        let mut forwarder = self
            .shared
            .api
            .portforward(pod, &[port])
            .await
            .map_err(|e| errors::map(self.shared.call(pod), e))?;
        drop(forwarder.take_stream(port));
        forwarder.abort();
        Ok(())
    }

    /// Whether a watch's cache holds `pod` with `uid`.
    fn exists(&self, pod: &str, uid: Option<&str>) -> bool {
        let key = ObjectRef::new(pod).within(&self.shared.namespace);
        self.shared.pods.iter().any(|cache| {
            cache
                .get(&key)
                .is_some_and(|cached| cached.metadata.uid.as_deref() == uid)
        })
    }

    /// Closes (and forgets) the listeners `gone` picks.
    fn close(&self, gone: impl Fn(&(String, u16), &Listener) -> bool) {
        self.listeners().retain(|key, listener| {
            if gone(key, listener) {
                tracing::debug!(pod = %key.0, port = key.1, "port-forward listener closed");
                listener.cancel.cancel();
                false
            } else {
                true
            }
        });
    }

    /// Until the backend is dropped: closes the listeners of removed pods.
    async fn close_removed(self, mut events: broadcast::Receiver<RuntimeEvent>) {
        loop {
            let event = tokio::select! {
                biased;
                () = self.shared.cancel.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(RuntimeEvent {
                    instance,
                    kind: RuntimeEventKind::Removed,
                    ..
                }) => self.close(|(pod, _), _| pod == instance.as_str()),
                Ok(_) => {}
                // Missed events: the cache says which pods still exist.
                Err(RecvError::Lagged(_)) => {
                    self.close(|(pod, _), listener| !self.exists(pod, listener.uid.as_deref()));
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

impl Shared {
    fn call<'a>(&'a self, pod: &'a str) -> Call<'a> {
        Call {
            verb: VERB,
            resource: RESOURCE,
            name: pod,
            namespace: &self.namespace,
        }
    }
}

/// Accepts connections until `cancel`, each forwarded on a task of its own.
async fn accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    pod: String,
    port: u16,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(forward(
                    shared.clone(),
                    stream,
                    pod.clone(),
                    port,
                    cancel.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(pod = %pod, port, %error, "accepting a port-forward connection failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Forwards one accepted connection to `port` of `pod` until either side
/// closes, the kubelet reports an error, or `cancel`.
async fn forward(
    shared: Arc<Shared>,
    mut client: TcpStream,
    pod: String,
    port: u16,
    cancel: CancellationToken,
) {
    if let Err(error) = client.set_nodelay(true) {
        tracing::debug!(pod = %pod, port, %error, "TCP_NODELAY not set");
    }
    let ports = [port];
    let opened = tokio::select! {
        biased;
        () = cancel.cancelled() => return,
        opened = shared.api.portforward(&pod, &ports) => opened,
    };
    let mut forwarder = match opened {
        Ok(forwarder) => forwarder,
        Err(e) => {
            let error = errors::map(shared.call(&pod), e);
            tracing::warn!(
                pod = %pod,
                port,
                %error,
                "opening a port-forward failed; closing the connection"
            );
            return;
        }
    };
    let (Some(mut upstream), Some(failure)) =
        (forwarder.take_stream(port), forwarder.take_error(port))
    else {
        forwarder.abort();
        return;
    };
    {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        let mut copy = std::pin::pin!(copy);
        let mut failure = std::pin::pin!(failure);
        let mut failure_pending = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                copied = &mut copy => {
                    match copied {
                        Ok((sent, received)) => {
                            tracing::trace!(pod = %pod, port, sent, received, "forwarded connection closed");
                        }
                        Err(error) => {
                            tracing::debug!(pod = %pod, port, %error, "forwarded connection failed");
                        }
                    }
                    break;
                }
                // The kubelet's error channel: it could not reach the port
                // (nothing listens yet, say). `None`: the forward ended.
                message = &mut failure, if failure_pending => match message {
                    Some(message) => {
                        tracing::debug!(pod = %pod, port, %message, "the port-forward failed; closing the connection");
                        break;
                    }
                    None => failure_pending = false,
                },
            }
        }
    }
    // Ends kube's forwarding task (a no-op when it has ended already) and
    // with it the websocket.
    forwarder.abort();
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use mcp_lifecycle::ports::InstanceId;

    use super::*;

    fn pod(name: &str, uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "ns", "uid": uid }
        }))
        .unwrap()
    }

    /// Forwards whose API server nobody answers at (port 9 on loopback).
    fn forwards(pods: Store<Pod>, events: broadcast::Receiver<RuntimeEvent>) -> PortForwards {
        let config = kube::Config::new("http://127.0.0.1:9".parse::<http::Uri>().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        PortForwards::start(
            Api::namespaced(client, "ns"),
            "ns".to_owned(),
            vec![pods],
            events,
            CancellationToken::new(),
        )
    }

    async fn listen(forwards: &PortForwards, pod: &str, uid: &str, port: u16) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        forwards.insert(pod, Some(uid), port, listener, address)
    }

    /// Whether nothing listens at `address` any more, within 5 s.
    async fn closed(address: SocketAddr) -> bool {
        tokio::time::timeout(Duration::from_secs(5), async {
            while TcpStream::connect(address).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    }

    fn event(pod: &str, kind: RuntimeEventKind) -> RuntimeEvent {
        RuntimeEvent {
            instance: InstanceId::from_raw(pod),
            server: "s".to_owned(),
            kind,
        }
    }

    #[tokio::test]
    async fn a_removed_pod_closes_its_listeners_and_no_other() {
        let (pods, _writer) = reflector::store::<Pod>();
        let (events, rx) = broadcast::channel(16);
        let forwards = forwards(pods, rx);
        let a = listen(&forwards, "a", "uid-a", 8080).await;
        let a2 = listen(&forwards, "a", "uid-a", 9090).await;
        let b = listen(&forwards, "b", "uid-b", 8080).await;
        assert_ne!(a, b);
        // The same pod and port: the listener there is reused.
        assert_eq!(listen(&forwards, "a", "uid-a", 8080).await, a);
        events.send(event("a", RuntimeEventKind::Changed)).unwrap();
        events.send(event("a", RuntimeEventKind::Removed)).unwrap();
        assert!(closed(a).await, "{a} still listens");
        assert!(closed(a2).await, "{a2} still listens");
        assert!(TcpStream::connect(b).await.is_ok(), "b's listener stays");
        assert_eq!(forwards.listeners().len(), 1);
    }

    #[tokio::test]
    async fn a_pod_recreated_under_its_name_gets_a_new_listener() {
        let (pods, _writer) = reflector::store::<Pod>();
        let (_events, rx) = broadcast::channel(16);
        let forwards = forwards(pods, rx);
        let old = listen(&forwards, "a", "uid-1", 8080).await;
        let new = listen(&forwards, "a", "uid-2", 8080).await;
        assert_ne!(old, new);
        assert!(closed(old).await, "{old} still listens");
        assert!(TcpStream::connect(new).await.is_ok());
    }

    #[tokio::test]
    async fn missed_events_are_made_up_from_the_watch_cache() {
        let (pods, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Apply(pod("kept", "uid-k")));
        let (events, rx) = broadcast::channel(1);
        let forwards = forwards(pods, rx);
        let gone = listen(&forwards, "gone", "uid-g", 8080).await;
        let kept = listen(&forwards, "kept", "uid-k", 8080).await;
        // Two events in a channel of one: the subscriber lags.
        events.send(event("x", RuntimeEventKind::Changed)).unwrap();
        events.send(event("y", RuntimeEventKind::Changed)).unwrap();
        assert!(closed(gone).await, "{gone} still listens");
        assert!(TcpStream::connect(kept).await.is_ok());
    }

    #[tokio::test]
    async fn no_listener_opens_when_the_api_server_does_not_answer() {
        let (pods, mut writer) = reflector::store::<Pod>();
        let a = pod("a", "uid-a");
        writer.apply_watcher_event(&watcher::Event::Apply(a.clone()));
        let (_events, rx) = broadcast::channel(16);
        let forwards = forwards(pods, rx);
        let error = forwards.address(&a, 8080).await.unwrap_err();
        assert_eq!(
            error.kind(),
            mcp_lifecycle::ErrorKind::Unavailable,
            "{error}"
        );
        assert!(forwards.listeners().is_empty());
    }

    #[tokio::test]
    async fn dropping_the_backend_closes_every_listener() {
        let (pods, _writer) = reflector::store::<Pod>();
        let (_events, rx) = broadcast::channel(16);
        let forwards = forwards(pods, rx);
        let a = listen(&forwards, "a", "uid-a", 8080).await;
        forwards.shared.cancel.cancel();
        assert!(closed(a).await, "{a} still listens");
    }
}
