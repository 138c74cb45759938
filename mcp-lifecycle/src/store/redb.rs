//! The durable [`Store`] on redb (feature `redb`).
//!
//! This file owns [`RedbStore`]: the table layout, the on-disk encoding of
//! records and lease rows, and the mapping of redb errors to
//! [`Error::Backend`]. Every write (put, delete, lease grant, renewal or
//! release) is exactly one redb write transaction committed with
//! [`Durability::Immediate`], and the precondition / fence / lease rules from
//! [`super`] are applied inside that transaction, so a process kill between
//! any two calls loses nothing that was acknowledged and never leaves a
//! half-applied write. Committed record writes are announced on
//! [`Store::changes`] to this process's subscribers (one process opens a
//! file at a time, so that is every host on it). It must not block the async runtime (every redb call
//! runs on `spawn_blocking`), must not panic on anything the file can contain
//! (bad bytes become errors), and must not read a clock.
//!
//! Layout:
//! - `records`: `(collection, key)` → 8-byte big-endian version, then the value bytes.
//! - `meta`: `"revision"` → the last store-wide revision handed out.
//! - `leases`: lease key → JSON of the lease row (current holding and highest token ever granted).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};

use super::change_feed::ChangeFeed;
use super::{LeaseRow, check_fence, check_precondition, next_revision};
use crate::error::{Error, Result};
use crate::ports::{Fence, Lease, Precondition, Record, Store, StoreChange, Version};
use crate::time::Timestamp;

const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const REVISION: &str = "revision";
const VERSION_LEN: usize = 8;

/// A durable [`Store`] in one redb database file.
///
/// Semantics are those of [`crate::InMemoryStore`], kept on disk: the
/// store-wide revision, every record with its version, and every lease row
/// (including the highest token ever granted) survive restarts and crashes.
/// One process opens a file at a time; a second [`RedbStore::open`] of the
/// same file fails until the first store is dropped.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    feed: ChangeFeed,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a write closure decided: its result, and whether to commit.
struct Outcome<T> {
    value: T,
    commit: bool,
}

impl<T> Outcome<T> {
    fn commit(value: T) -> Self {
        Outcome {
            value,
            commit: true,
        }
    }

    fn unchanged(value: T) -> Self {
        Outcome {
            value,
            commit: false,
        }
    }
}

fn redb_err<E>(doing: &str) -> impl FnOnce(E) -> Error + '_
where
    E: Into<crate::error::BoxError>,
{
    move |e| Error::backend("redb", doing.to_owned(), e)
}

fn encode_record(version: Version, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_LEN + value.len());
    out.extend_from_slice(&version.0.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_record(key: &str, bytes: &[u8], doing: &str) -> Result<Record> {
    let Some((head, value)) = bytes.split_first_chunk::<VERSION_LEN>() else {
        return Err(Error::backend(
            "redb",
            doing.to_owned(),
            format!(
                "stored record is {} bytes, shorter than its version prefix",
                bytes.len()
            ),
        ));
    };
    Ok(Record {
        key: key.to_owned(),
        version: Version(u64::from_be_bytes(*head)),
        value: value.to_vec(),
    })
}

fn read_lease_row<T>(table: &T, key: &str, doing: &str) -> Result<LeaseRow>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key).map_err(redb_err(doing))? {
        Some(guard) => serde_json::from_slice(guard.value()).map_err(redb_err(doing)),
        None => Ok(LeaseRow::default()),
    }
}

fn write_lease_row(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    row: &LeaseRow,
    doing: &str,
) -> Result<()> {
    let bytes = serde_json::to_vec(row).map_err(redb_err(doing))?;
    table
        .insert(key, bytes.as_slice())
        .map_err(redb_err(doing))?;
    Ok(())
}

/// Checks a fence against the lease table inside a write transaction.
fn fence_in(txn: &WriteTransaction, fence: Option<&Fence>, doing: &str) -> Result<()> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let leases = txn.open_table(LEASES).map_err(redb_err(doing))?;
    let row = read_lease_row(&leases, &fence.lease, doing)?;
    check_fence(fence, row.max_token)
}

/// Takes the next store-wide revision inside a write transaction.
fn bump_revision(txn: &WriteTransaction, doing: &str) -> Result<u64> {
    let mut meta = txn.open_table(META).map_err(redb_err(doing))?;
    let last = meta
        .get(REVISION)
        .map_err(redb_err(doing))?
        .map_or(0, |g| g.value());
    let next = next_revision(last)?;
    meta.insert(REVISION, next).map_err(redb_err(doing))?;
    Ok(next)
}

fn current_version(
    records: &Table<'_, (&'static str, &'static str), &'static [u8]>,
    collection: &str,
    key: &str,
    doing: &str,
) -> Result<Option<Version>> {
    match records.get((collection, key)).map_err(redb_err(doing))? {
        Some(guard) => Ok(Some(decode_record(key, guard.value(), doing)?.version)),
        None => Ok(None),
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating it if missing and recovering it
    /// if the last process using it was killed.
    ///
    /// This blocks (file I/O, and possibly a repair after a crash): call it at
    /// startup or inside `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let doing = format!("opening database {}", path.display());
        let db = Database::create(&path).map_err(redb_err(&doing))?;
        // Create the tables up front so read transactions always find them.
        let mut txn = db.begin_write().map_err(redb_err(&doing))?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_err(&doing))?;
        txn.open_table(RECORDS).map_err(redb_err(&doing))?;
        txn.open_table(META).map_err(redb_err(&doing))?;
        txn.open_table(LEASES).map_err(redb_err(&doing))?;
        txn.commit().map_err(redb_err(&doing))?;
        Ok(RedbStore {
            db: Arc::new(db),
            path,
            feed: ChangeFeed::default(),
        })
    }

    /// The database file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction on a blocking thread.
    async fn read<T, F>(&self, doing: String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction, &str) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let task_doing = doing.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(redb_err(&task_doing))?;
            f(&txn, &task_doing)
        })
        .await
        .map_err(redb_err(&doing))?
    }

    /// Runs `f` in one write transaction on a blocking thread and commits it
    /// with immediate durability if `f` succeeds and asks to; otherwise the
    /// transaction is aborted and nothing changes.
    async fn write<T, F>(&self, doing: String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, &str) -> Result<Outcome<T>> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let task_doing = doing.clone();
        tokio::task::spawn_blocking(move || {
            let doing = task_doing.as_str();
            let mut txn = db.begin_write().map_err(redb_err(doing))?;
            txn.set_durability(Durability::Immediate)
                .map_err(redb_err(doing))?;
            match f(&txn, doing) {
                Ok(outcome) if outcome.commit => {
                    txn.commit().map_err(redb_err(doing))?;
                    Ok(outcome.value)
                }
                Ok(outcome) => {
                    txn.abort().map_err(redb_err(doing))?;
                    Ok(outcome.value)
                }
                Err(err) => {
                    if let Err(abort_err) = txn.abort() {
                        tracing::warn!(
                            error = %abort_err,
                            "redb failed to abort a transaction while {doing}"
                        );
                    }
                    Err(err)
                }
            }
        })
        .await
        .map_err(redb_err(&doing))?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        self.read(format!("reading {collection}/{key}"), move |txn, doing| {
            let records = txn.open_table(RECORDS).map_err(redb_err(doing))?;
            match records
                .get((collection.as_str(), key.as_str()))
                .map_err(redb_err(doing))?
            {
                Some(guard) => Ok(Some(decode_record(&key, guard.value(), doing)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, collection: &str) -> Result<Vec<Record>> {
        let collection = collection.to_owned();
        self.read(
            format!("listing collection {collection}"),
            move |txn, doing| {
                let records = txn.open_table(RECORDS).map_err(redb_err(doing))?;
                let mut out = Vec::new();
                let start = (collection.as_str(), "");
                for item in records.range(start..).map_err(redb_err(doing))? {
                    let (k, v) = item.map_err(redb_err(doing))?;
                    let (c, key) = k.value();
                    if c != collection {
                        break;
                    }
                    out.push(decode_record(key, v.value(), doing)?);
                }
                Ok(out)
            },
        )
        .await
    }

    async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version> {
        let (collection, key, fence) = (collection.to_owned(), key.to_owned(), fence.cloned());
        let (announce_collection, announce_key) = (collection.clone(), key.clone());
        let version = self
            .write(format!("writing {collection}/{key}"), move |txn, doing| {
                fence_in(txn, fence.as_ref(), doing)?;
                let mut records = txn.open_table(RECORDS).map_err(redb_err(doing))?;
                let current = current_version(&records, &collection, &key, doing)?;
                check_precondition(&collection, &key, current, expect)?;
                let version = Version(bump_revision(txn, doing)?);
                let bytes = encode_record(version, &value);
                records
                    .insert((collection.as_str(), key.as_str()), bytes.as_slice())
                    .map_err(redb_err(doing))?;
                Ok(Outcome::commit(version))
            })
            .await?;
        self.feed
            .announce(&announce_collection, &announce_key, Some(version));
        Ok(version)
    }

    async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let (collection, key, fence) = (collection.to_owned(), key.to_owned(), fence.cloned());
        let (announce_collection, announce_key) = (collection.clone(), key.clone());
        let removed = self
            .write(format!("deleting {collection}/{key}"), move |txn, doing| {
                fence_in(txn, fence.as_ref(), doing)?;
                let mut records = txn.open_table(RECORDS).map_err(redb_err(doing))?;
                let current = current_version(&records, &collection, &key, doing)?;
                check_precondition(&collection, &key, current, expect)?;
                if current.is_none() {
                    return Ok(Outcome::unchanged(false));
                }
                // A delete is a write: it consumes a revision, like the memory store.
                bump_revision(txn, doing)?;
                records
                    .remove((collection.as_str(), key.as_str()))
                    .map_err(redb_err(doing))?;
                Ok(Outcome::commit(true))
            })
            .await?;
        if removed {
            self.feed
                .announce(&announce_collection, &announce_key, None);
        }
        Ok(())
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.write(
            format!("acquiring lease {key} for {holder}"),
            move |txn, doing| {
                let mut leases = txn.open_table(LEASES).map_err(redb_err(doing))?;
                let mut row = read_lease_row(&leases, &key, doing)?;
                match row.acquire(&key, &holder, ttl, now)? {
                    Some(lease) => {
                        write_lease_row(&mut leases, &key, &row, doing)?;
                        Ok(Outcome::commit(Some(lease)))
                    }
                    None => Ok(Outcome::unchanged(None)),
                }
            },
        )
        .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease> {
        let lease = lease.clone();
        self.write(
            format!("renewing lease {} for {}", lease.key, lease.holder),
            move |txn, doing| {
                let mut leases = txn.open_table(LEASES).map_err(redb_err(doing))?;
                let mut row = read_lease_row(&leases, &lease.key, doing)?;
                let renewed = row.renew(&lease, ttl, now)?;
                write_lease_row(&mut leases, &lease.key, &row, doing)?;
                Ok(Outcome::commit(renewed))
            },
        )
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.write(
            format!("releasing lease {} for {}", lease.key, lease.holder),
            move |txn, doing| {
                let mut leases = txn.open_table(LEASES).map_err(redb_err(doing))?;
                let mut row = read_lease_row(&leases, &lease.key, doing)?;
                if !row.release(&lease) {
                    return Ok(Outcome::unchanged(()));
                }
                write_lease_row(&mut leases, &lease.key, &row, doing)?;
                Ok(Outcome::commit(()))
            },
        )
        .await
    }

    fn changes(&self) -> Option<BoxStream<'static, StoreChange>> {
        Some(self.feed.subscribe())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn record_encoding_round_trips_and_rejects_short_bytes() {
        let bytes = encode_record(Version(42), b"hello");
        let rec = decode_record("k", &bytes, "testing").unwrap();
        assert_eq!(
            (rec.version, rec.value.as_slice()),
            (Version(42), &b"hello"[..])
        );
        let empty = decode_record("k", &encode_record(Version(1), b""), "testing").unwrap();
        assert!(empty.value.is_empty());
        assert!(decode_record("k", &[0, 1, 2], "testing").is_err());
    }

    #[tokio::test]
    async fn second_open_of_the_same_file_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let _first = RedbStore::open(&path).unwrap();
        let err = RedbStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Backend, "{err}");
    }

    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
        crate::testing::store_conformance::run_all(&store).await;
    }
}
