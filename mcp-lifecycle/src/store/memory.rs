//! The in-memory [`Store`]: the default embedded store.
//!
//! This file owns [`InMemoryStore`]: records, the store-wide revision and the
//! lease rows, all behind one `std::sync::Mutex`, so every check-and-write
//! (precondition, fence, lease rules from [`super`]) is atomic. It must not
//! hold the lock across an `.await` (no method awaits at all), must not do
//! I/O, and must not read a clock: lease time comes in as `now`. Nothing
//! survives the process; use `RedbStore` for that. Writes are announced on
//! [`Store::changes`] after the lock is released.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::change_feed::ChangeFeed;
use super::{LeaseRow, check_fence, check_precondition, next_revision};
use crate::error::Result;
use crate::ports::{Fence, Lease, Precondition, Record, Store, StoreChange, Version};
use crate::time::Timestamp;

/// A [`Store`] that keeps everything in process memory.
///
/// Cheap to create and to clone into an `Arc`; every operation takes one
/// short mutex section. Versions come from one store-wide revision counter,
/// and each lease key remembers the highest token it ever granted, so fencing
/// survives releases and expiries. Every `Lifecycle` sharing one (hosts in
/// one process, as in tests) hears of the others' writes at once through
/// [`Store::changes`].
#[derive(Debug, Default)]
pub struct InMemoryStore {
    inner: Mutex<Inner>,
    feed: ChangeFeed,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last revision handed out (0: none yet).
    revision: u64,
    /// collection → key → (version, value).
    records: BTreeMap<String, BTreeMap<String, (Version, Vec<u8>)>>,
    /// lease key → row.
    leases: BTreeMap<String, LeaseRow>,
}

impl Inner {
    fn max_token(&self, lease: &str) -> u64 {
        self.leases.get(lease).map_or(0, |row| row.max_token)
    }

    fn check_fence(&self, fence: Option<&Fence>) -> Result<()> {
        match fence {
            Some(f) => check_fence(f, self.max_token(&f.lease)),
            None => Ok(()),
        }
    }

    fn current_version(&self, collection: &str, key: &str) -> Option<Version> {
        self.records
            .get(collection)
            .and_then(|c| c.get(key))
            .map(|(v, _)| *v)
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write:
        // every mutation is computed first and applied last.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        let inner = self.lock();
        Ok(inner
            .records
            .get(collection)
            .and_then(|c| c.get(key))
            .map(|(version, value)| Record {
                key: key.to_owned(),
                version: *version,
                value: value.clone(),
            }))
    }

    async fn list(&self, collection: &str) -> Result<Vec<Record>> {
        let inner = self.lock();
        Ok(inner
            .records
            .get(collection)
            .map(|c| {
                c.iter()
                    .map(|(key, (version, value))| Record {
                        key: key.clone(),
                        version: *version,
                        value: value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version> {
        let mut inner = self.lock();
        inner.check_fence(fence)?;
        check_precondition(
            collection,
            key,
            inner.current_version(collection, key),
            expect,
        )?;
        let revision = next_revision(inner.revision)?;
        inner.revision = revision;
        let version = Version(revision);
        inner
            .records
            .entry(collection.to_owned())
            .or_default()
            .insert(key.to_owned(), (version, value));
        drop(inner);
        self.feed.announce(collection, key, Some(version));
        Ok(version)
    }

    async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut inner = self.lock();
        inner.check_fence(fence)?;
        let current = inner.current_version(collection, key);
        check_precondition(collection, key, current, expect)?;
        if current.is_none() {
            return Ok(());
        }
        // A delete is a write: it consumes a revision, like the durable store.
        inner.revision = next_revision(inner.revision)?;
        if let Some(c) = inner.records.get_mut(collection) {
            c.remove(key);
            if c.is_empty() {
                inner.records.remove(collection);
            }
        }
        drop(inner);
        self.feed.announce(collection, key, None);
        Ok(())
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let mut inner = self.lock();
        let mut row = inner.leases.get(key).cloned().unwrap_or_default();
        let granted = row.acquire(key, holder, ttl, now)?;
        if granted.is_some() {
            inner.leases.insert(key.to_owned(), row);
        }
        Ok(granted)
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease> {
        let mut inner = self.lock();
        let mut row = inner.leases.get(&lease.key).cloned().unwrap_or_default();
        let renewed = row.renew(lease, ttl, now)?;
        inner.leases.insert(lease.key.clone(), row);
        Ok(renewed)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut inner = self.lock();
        if let Some(row) = inner.leases.get_mut(&lease.key) {
            row.release(lease);
        }
        Ok(())
    }

    fn changes(&self) -> Option<BoxStream<'static, StoreChange>> {
        Some(self.feed.subscribe())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delete_consumes_a_revision_and_drops_empty_collections() {
        let store = InMemoryStore::new();
        let v1 = store
            .put("c", "k", b"x".to_vec(), Precondition::Absent, None)
            .await
            .unwrap();
        store
            .delete("c", "k", Precondition::At(v1), None)
            .await
            .unwrap();
        assert!(store.lock().records.is_empty());
        let v2 = store
            .put("c", "k", b"y".to_vec(), Precondition::Absent, None)
            .await
            .unwrap();
        assert_eq!(v2, Version(v1.0 + 2));
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::testing::store_conformance::run_all(&InMemoryStore::new()).await;
    }
}
