//! [`ChangeFeed`]: the fan-out behind [`Store::changes`](crate::Store::changes),
//! for every store that announces changes (the in-memory and redb stores
//! here, the PostgreSQL store with what its database notifies): a broadcast
//! channel written after each committed write, and the streams read from it.
//!
//! This file owns turning a lagging subscriber into
//! [`StoreChange::Missed`]. It must not decide anything about records: a
//! store calls [`ChangeFeed::announce`] after a write has committed, never
//! before, and never for a write that failed or changed nothing.

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::ports::{StoreChange, Version};

/// How many announcements a slow subscriber may fall behind before it is
/// told it missed some.
const CAPACITY: usize = 1024;

/// Announces a store's committed writes to every subscriber: what a store
/// implementation hands out from [`Store::changes`](crate::Store::changes).
/// Clones share one channel. A subscriber that falls more than 1024
/// announcements behind is told it [missed](StoreChange::Missed) some.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<StoreChange>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl ChangeFeed {
    /// Announces that `collection/key` was written (at `version`) or
    /// deleted (`None`). Free when nobody subscribes.
    pub fn announce(&self, collection: &str, key: &str, version: Option<Version>) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        self.send(StoreChange::Record {
            collection: collection.to_owned(),
            key: key.to_owned(),
            version,
        });
    }

    /// Announces `change` as it is (a store that learns of changes as
    /// [`StoreChange`]s, or that lost track: [`StoreChange::Missed`]).
    pub fn send(&self, change: StoreChange) {
        // An error only means nobody subscribes right now.
        let _ = self.sender.send(change);
    }

    /// A new subscription: every announcement from now on, with a lag
    /// turned into [`StoreChange::Missed`].
    pub fn subscribe(&self) -> BoxStream<'static, StoreChange> {
        BroadcastStream::new(self.sender.subscribe())
            .map(|item| match item {
                Ok(change) => change,
                Err(BroadcastStreamRecvError::Lagged(_)) => StoreChange::Missed,
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_announcements_and_laggards_are_told() {
        let feed = ChangeFeed::default();
        feed.announce("servers", "before-anyone-listens", Some(Version(1)));
        let mut changes = feed.subscribe();
        feed.announce("servers", "a", Some(Version(2)));
        assert_eq!(
            changes.next().await,
            Some(StoreChange::Record {
                collection: "servers".into(),
                key: "a".into(),
                version: Some(Version(2)),
            })
        );
        for i in 0..=CAPACITY {
            feed.announce("servers", &i.to_string(), None);
        }
        assert_eq!(changes.next().await, Some(StoreChange::Missed));
    }
}
