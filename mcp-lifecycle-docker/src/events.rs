//! The engine's event stream, turned into the port's [`RuntimeEvent`]s and
//! shared by every subscriber.
//!
//! This module owns one watcher task per orchestrator: it subscribes to the
//! engine's container events (`start`, `die`, `oom`, `destroy`; Podman's
//! `died` and `remove` too) for our labels, folds an `oom` into the `die` that follows it, and broadcasts the
//! result. When the engine drops the stream (a daemon restart, a proxy
//! timeout) it reconnects with `since` set to the last event it saw, so
//! nothing in between is lost, and drops the replayed duplicates. The first
//! subscription starts from the moment the orchestrator was built (in the
//! engine's clock), so a subscriber never misses an event that happened after
//! it subscribed. Crash detection therefore never polls. This module must not
//! call anything but the events endpoint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use mcp_lifecycle::InstanceId;
use mcp_lifecycle::ports::{RuntimeEvent, RuntimeEventKind, labels};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::observe::parse_rfc3339;

/// Capacity of the broadcast channel; a subscriber that falls further behind
/// loses the oldest events (the controller's periodic resync covers them).
pub(crate) const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// How many recent events are remembered to drop duplicates after a reconnect.
const DEDUPE_WINDOW: usize = 1024;

/// First and longest wait before reconnecting.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Instances and servers by container id, for engines whose events do not
/// carry the container's labels; and each container's last exit as its
/// `die` event announced it, for engines whose inspect can lose the code.
#[derive(Default)]
pub(crate) struct KnownContainers {
    by_id: Mutex<HashMap<String, (InstanceId, String)>>,
    /// Container id → (the engine's time of its last `die` in milliseconds,
    /// the exit code it announced).
    exits: Mutex<HashMap<String, (u64, i32)>>,
}

impl KnownContainers {
    /// Remembers which instance a container is.
    pub(crate) fn remember(&self, container_id: &str, instance: &InstanceId, server: &str) {
        if container_id.is_empty() {
            return;
        }
        self.lock().insert(
            container_id.to_owned(),
            (instance.clone(), server.to_owned()),
        );
    }

    fn get(&self, container_id: &str) -> Option<(InstanceId, String)> {
        self.lock().get(container_id).cloned()
    }

    fn forget(&self, container_id: &str) {
        self.lock().remove(container_id);
        self.lock_exits().remove(container_id);
    }

    /// Records the exit a `die` event announced.
    fn exited(&self, container_id: &str, at_ms: u64, code: i32) {
        let mut exits = self.lock_exits();
        let last = exits
            .entry(container_id.to_owned())
            .or_insert((at_ms, code));
        if at_ms >= last.0 {
            *last = (at_ms, code);
        }
    }

    /// The exit code the container's `die` event announced, if that event
    /// came at or after `started_at_ms` (so it ended the run an inspect
    /// reports rather than an earlier one).
    pub(crate) fn announced_exit(&self, container_id: &str, started_at_ms: u64) -> Option<i32> {
        self.lock_exits()
            .get(container_id)
            .filter(|(at, _)| *at >= started_at_ms)
            .map(|(_, code)| *code)
    }

    fn lock_exits(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, i32)>> {
        self.exits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (InstanceId, String)>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the watcher needs.
pub(crate) struct Watcher {
    pub(crate) docker: Docker,
    /// `label` filter values: the managed-by key, or `key=value` when scoped.
    pub(crate) label_filter: String,
    pub(crate) sender: broadcast::Sender<RuntimeEvent>,
    pub(crate) known: Arc<KnownContainers>,
    pub(crate) cancel: CancellationToken,
    /// Engine time minus host time, in seconds.
    pub(crate) skew_secs: i64,
}

/// Engine time minus host time, in whole seconds (0 if the engine does not say).
pub(crate) async fn clock_skew_secs(docker: &Docker) -> i64 {
    let host = now_secs();
    match docker.info().await {
        Ok(info) => info
            .system_time
            .as_deref()
            .and_then(parse_rfc3339)
            .map_or(0, |t| {
                i64::try_from(t.as_millis() / 1000).unwrap_or(host) - host
            }),
        Err(e) => {
            tracing::debug!(error = %e, "engine info failed; assuming its clock matches ours");
            0
        }
    }
}

fn now_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl Watcher {
    /// Runs until cancelled. Reconnects when the engine ends the stream.
    pub(crate) async fn run(self) {
        // Two seconds of slack for the time the first request takes; the
        // replayed events are dropped as duplicates or are harmless (a
        // subscriber inspects what an event names).
        let mut since = now_secs() + self.skew_secs - 2;
        let mut seen = Seen::default();
        let mut oom: HashSet<String> = HashSet::new();
        let mut delay = RECONNECT_MIN;
        loop {
            // No `event` filter: Podman filters on its own names (`died`),
            // so `die` would match nothing there; `translate` picks the
            // actions. A label filter without a value matches nothing on
            // Podman, so only `key=value` is sent; `translate` keeps only
            // containers that carry our labels or that we know.
            let mut filters = HashMap::from([("type", vec!["container".to_owned()])]);
            if self.label_filter.contains('=') {
                filters.insert("label", vec![self.label_filter.clone()]);
            }
            let options = EventsOptionsBuilder::default()
                .since(&since.to_string())
                .filters(&filters)
                .build();
            let mut stream = self.docker.events(Some(options));
            let connected = tokio::time::Instant::now();
            tracing::debug!(since, "subscribed to engine events");
            loop {
                let next = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return,
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        delay = RECONNECT_MIN;
                        if let Some(time) = message.time {
                            since = since.max(time);
                        }
                        if !seen.first_time(&message) {
                            continue;
                        }
                        if let Some(event) = self.translate(&message, &mut oom) {
                            tracing::debug!(server = %event.server, instance = %event.instance,
                                kind = ?event.kind, "engine event");
                            // No subscribers is fine.
                            let _ = self.sender.send(event);
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "engine event stream failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::info!("engine ended the event stream; reconnecting");
                        break;
                    }
                }
            }
            if connected.elapsed() > Duration::from_secs(10) {
                delay = RECONNECT_MIN;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// The port's event for an engine event, if it is one we report.
    fn translate(&self, message: &EventMessage, oom: &mut HashSet<String>) -> Option<RuntimeEvent> {
        let actor = message.actor.as_ref()?;
        let container = actor.id.clone().unwrap_or_default();
        let empty = HashMap::new();
        let attributes = actor.attributes.as_ref().unwrap_or(&empty);
        let (instance, server) = match (
            attributes.get(labels::INSTANCE),
            attributes.get(labels::SERVER),
        ) {
            (Some(instance), Some(server)) => {
                (InstanceId::from_raw(instance.clone()), server.clone())
            }
            _ => self.known.get(&container)?,
        };
        // Docker's names, and Podman's where they differ (`died`, `remove`).
        let kind = match message.action.as_deref()? {
            "start" => RuntimeEventKind::Started,
            "oom" => {
                oom.insert(container);
                return None;
            }
            "die" | "died" => {
                let code = attributes
                    .get("exitCode")
                    .or_else(|| attributes.get("containerExitCode"))
                    .and_then(|c| c.parse().ok());
                let at_ms = message
                    .time_nano
                    .map(|nanos| nanos / 1_000_000)
                    .or_else(|| message.time.map(|secs| secs.saturating_mul(1000)))
                    .and_then(|ms| u64::try_from(ms).ok());
                if let (Some(code), Some(at_ms)) = (code, at_ms) {
                    self.known.exited(&container, at_ms, code);
                }
                RuntimeEventKind::Exited {
                    code,
                    oom_killed: oom.remove(&container),
                }
            }
            "destroy" | "remove" => {
                self.known.forget(&container);
                oom.remove(&container);
                RuntimeEventKind::Removed
            }
            _ => return None,
        };
        Some(RuntimeEvent {
            instance,
            server,
            kind,
        })
    }
}

/// Recently seen events, to drop the ones a reconnect replays.
#[derive(Default)]
struct Seen {
    order: VecDeque<(i64, String, String)>,
    set: HashSet<(i64, String, String)>,
}

impl Seen {
    /// Records the event; `false` if it was already seen.
    fn first_time(&mut self, message: &EventMessage) -> bool {
        let key = (
            message
                .time_nano
                .or_else(|| message.time.map(|t| t.saturating_mul(1_000_000_000)))
                .unwrap_or(0),
            message
                .actor
                .as_ref()
                .and_then(|a| a.id.clone())
                .unwrap_or_default(),
            message.action.clone().unwrap_or_default(),
        );
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > DEDUPE_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(all(test, unix))]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};
    use tokio::sync::mpsc;

    use super::*;

    fn event_json(time: i64, nano_offset: i64, action: &str) -> String {
        serde_json::json!({
            "Type": "container",
            "Action": action,
            "Actor": {
                "ID": "c0ffee",
                "Attributes": {
                    "mcp-lifecycle.dev/instance": "echo-0",
                    "mcp-lifecycle.dev/server": "echo",
                    "exitCode": "137"
                }
            },
            "scope": "local",
            "time": time,
            "timeNano": time * 1_000_000_000 + nano_offset
        })
        .to_string()
    }

    async fn read_head(sock: &mut UnixStream) -> String {
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// A fake engine: the first events request gets an `oom` and a `die`, then
    /// the connection drops; the second gets the `die` again (a replay) and a
    /// `start`, and stays open.
    #[tokio::test]
    async fn reconnects_with_since_after_the_engine_drops_the_stream() {
        let path = std::env::temp_dir().join(format!(
            "mcpl-events-{}-{}.sock",
            std::process::id(),
            now_secs()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let t = now_secs() + 5;
        let (requests_tx, mut requests) = mpsc::unbounded_channel::<String>();
        let server = tokio::spawn(async move {
            let mut kept = Vec::new();
            for round in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                requests_tx.send(read_head(&mut sock).await).unwrap();
                let body = if round == 0 {
                    format!("{}\n{}\n", event_json(t, 1, "oom"), event_json(t, 2, "die"))
                } else {
                    format!(
                        "{}\n{}\n",
                        event_json(t, 2, "die"),
                        event_json(t + 1, 3, "start")
                    )
                };
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                sock.write_all(body.as_bytes()).await.unwrap();
                sock.flush().await.unwrap();
                if round == 1 {
                    kept.push(sock);
                }
            }
            std::future::pending::<()>().await;
            drop(kept);
        });

        let docker =
            Docker::connect_with_unix(path.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let (sender, mut received) = broadcast::channel(16);
        let cancel = CancellationToken::new();
        let watcher = Watcher {
            docker,
            label_filter: labels::MANAGED_BY.to_owned(),
            sender,
            known: Arc::new(KnownContainers::default()),
            cancel: cancel.clone(),
            skew_secs: 0,
        };
        let task = tokio::spawn(watcher.run());

        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), received.recv())
                .await
                .expect("an event within 5 s")
                .unwrap()
        };
        let first = next().await;
        assert_eq!(first.instance, InstanceId::from_raw("echo-0"));
        assert_eq!(first.server, "echo");
        assert_eq!(
            first.kind,
            RuntimeEventKind::Exited {
                code: Some(137),
                oom_killed: true
            },
            "the oom folds into the die"
        );
        // The replayed die is dropped; the start after the reconnect arrives.
        let second = next().await;
        assert_eq!(second.kind, RuntimeEventKind::Started);

        let first_request = requests.recv().await.unwrap();
        let second_request = requests.recv().await.unwrap();
        assert!(first_request.contains("/events?"), "{first_request}");
        assert!(
            second_request.contains(&format!("since={t}")),
            "the reconnect asks for events since the last one seen: {second_request}"
        );
        cancel.cancel();
        task.await.unwrap();
        server.abort();
        let _ = std::fs::remove_file(&path);
    }
}
