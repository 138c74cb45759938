//! Change announcements: [`Store::changes`](mcp_lifecycle::Store::changes)
//! on PostgreSQL's LISTEN/NOTIFY.
//!
//! This file owns the listener: one connection per store, opened by
//! `build()` and LISTENing on [`CHANNEL`] before `build()` returns (so a
//! subscriber never misses a write made after it subscribed), a task that
//! turns notifications of this store's schema into [`StoreChange`]s on the
//! core's [`ChangeFeed`], and recovery: when the connection is lost, the task
//! reconnects with backoff and then announces [`StoreChange::Missed`]
//! (notifications sent meanwhile are gone). The notifications themselves come
//! from the trigger of migration 0002; this file sends none and writes
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use mcp_lifecycle::Result;
use mcp_lifecycle::ports::{StoreChange, Version};
use mcp_lifecycle::store::ChangeFeed;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::errors::map_sqlx;

/// The channel migration 0002's trigger notifies.
pub(crate) const CHANNEL: &str = "mcp_lifecycle_changes";

/// Backoff between reconnection attempts after the connection is lost.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// The store's end of the announcements: subscribe, and stop the listener
/// when the last store handle is dropped.
pub(crate) struct Changes {
    feed: ChangeFeed,
    cancel: CancellationToken,
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Changes {
    /// Opens the listening connection, LISTENs, and starts the task that
    /// forwards this schema's notifications.
    pub(crate) async fn start(pool: &PgPool, schema: &str, server: &str) -> Result<Changes> {
        let listener = listen(pool, server).await?;
        let feed = ChangeFeed::default();
        let cancel = CancellationToken::new();
        let task = Forwarder {
            pool: pool.clone(),
            schema: schema.into(),
            server: server.into(),
            feed: feed.clone(),
            cancel: cancel.clone(),
        };
        tokio::spawn(task.run(listener));
        Ok(Changes { feed, cancel })
    }

    /// A new subscription: every announcement from now on.
    pub(crate) fn subscribe(&self) -> BoxStream<'static, StoreChange> {
        self.feed.subscribe()
    }
}

/// A listener on [`CHANNEL`], ready.
async fn listen(pool: &PgPool, server: &str) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .map_err(|e| map_sqlx(server, "opening the connection that listens for changes", e))?;
    listener
        .listen(CHANNEL)
        .await
        .map_err(|e| map_sqlx(server, format!("LISTEN {CHANNEL}"), e))?;
    Ok(listener)
}

/// The task that forwards notifications.
struct Forwarder {
    pool: PgPool,
    schema: Arc<str>,
    server: Arc<str>,
    feed: ChangeFeed,
    cancel: CancellationToken,
}

impl Forwarder {
    async fn run(self, mut listener: PgListener) {
        loop {
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(notification)) => {
                    if let Some(change) = parse(notification.payload(), &self.schema) {
                        self.feed.send(change);
                    }
                    continue;
                }
                Ok(None) => {
                    tracing::warn!(server = %self.server, "the connection listening for store changes was lost; reconnecting");
                }
                Err(error) => {
                    tracing::warn!(server = %self.server, %error, "listening for store changes failed; reconnecting");
                }
            }
            drop(listener);
            let Some(again) = self.reconnect().await else {
                return;
            };
            listener = again;
            // Whatever was written while no one listened was not announced.
            self.feed.send(StoreChange::Missed);
        }
    }

    /// A new listener, retrying with backoff; `None` once the store is gone.
    async fn reconnect(&self) -> Option<PgListener> {
        let mut wait = RECONNECT_FIRST;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            match listen(&self.pool, &self.server).await {
                Ok(listener) => {
                    tracing::info!(server = %self.server, "listening for store changes again");
                    return Some(listener);
                }
                Err(error) => {
                    tracing::debug!(server = %self.server, %error, "reconnecting the change listener failed");
                    wait = (wait * 2).min(RECONNECT_MAX);
                }
            }
        }
    }
}

/// The change a notification payload (`schema TAB collection TAB version
/// TAB key`) announces, if it is about `schema`. An empty collection (a
/// payload too long for NOTIFY, cut by the trigger) or a payload that does
/// not parse is announced as missed changes.
fn parse(payload: &str, schema: &str) -> Option<StoreChange> {
    let mut parts = payload.splitn(4, '\t');
    let (Some(from), Some(collection), Some(version), Some(key)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(StoreChange::Missed);
    };
    if from != schema {
        return None;
    }
    if collection.is_empty() {
        return Some(StoreChange::Missed);
    }
    let version = match version {
        "" => None,
        digits => match digits.parse::<u64>() {
            Ok(v) => Some(Version(v)),
            Err(_) => return Some(StoreChange::Missed),
        },
    };
    Some(StoreChange::Record {
        collection: collection.to_owned(),
        key: key.to_owned(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_this_schema_become_changes() {
        assert_eq!(
            parse("s\tservers\t42\tgithub", "s"),
            Some(StoreChange::Record {
                collection: "servers".into(),
                key: "github".into(),
                version: Some(Version(42)),
            })
        );
        assert_eq!(
            parse("s\tservers\t\tgit\thub", "s"),
            Some(StoreChange::Record {
                collection: "servers".into(),
                key: "git\thub".into(),
                version: None,
            }),
            "a delete has no version, and the key keeps its tabs"
        );
        assert_eq!(parse("other\tservers\t1\tx", "s"), None);
        assert_eq!(parse("s\t\t\t", "s"), Some(StoreChange::Missed));
        assert_eq!(parse("s\tservers\tNaN\tx", "s"), Some(StoreChange::Missed));
        assert_eq!(parse("garbage", "s"), Some(StoreChange::Missed));
    }
}
