//! The [`Store`] port: versioned records with compare-and-swap writes, and
//! leases with fencing tokens.
//!
//! The port is a small keyed record store (collections of JSON bytes); the
//! typed views the controller uses are written once above it. Time for lease
//! expiry is passed in (`now`), so every host sharing a store agrees on it
//! through its own wall clock and tests control it. A store may also announce
//! changes ([`Store::changes`]), so the leader acts on a write made by any
//! host at once instead of at its next lease renewal.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::time::Timestamp;

/// A record's version: a store-wide revision that only grows, so a record that
/// is deleted and created again never reuses an old version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}", self.0)
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its key within its collection.
    pub key: String,
    /// Its current version.
    pub version: Version,
    /// Its value (JSON for the library's own records).
    pub value: Vec<u8>,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    Any,
    /// The record must not exist (create).
    Absent,
    /// The record must exist at exactly this version (compare-and-swap).
    At(Version),
}

/// A granted lease. The `token` grows every time the lease changes hands, and
/// writes fenced with an older token are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// What the lease guards (e.g. `freshness/github`).
    pub key: String,
    /// Who holds it (a host replica's name).
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

impl Lease {
    /// The fence to attach to writes made under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.key.clone(),
            token: self.token,
        }
    }
}

/// A lease token attached to a write. The store rejects the write with
/// [`crate::Error::Fenced`] if a newer token has been granted for `lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease key.
    pub lease: String,
    /// The token held by the writer.
    pub token: u64,
}

/// What [`Store::changes`] announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A record was written or deleted, by this host or any other sharing
    /// the store. It says which, not what: read the record for its value.
    Record {
        /// The record's collection.
        collection: String,
        /// The record's key.
        key: String,
        /// The version the write gave it; `None` for a delete. A subscriber
        /// that already holds this version (its own write coming back) need
        /// not read the record.
        version: Option<Version>,
    },
    /// Changes may have been missed (the subscriber fell behind, or the
    /// store lost and regained its notification channel): re-read whatever
    /// the subscriber follows.
    Missed,
}

/// The storage port.
///
/// # Contract
///
/// - Versions are store-wide and strictly increasing across all writes.
/// - `put` with [`Precondition::At`] fails with `Conflict`
///   ([`crate::Error::VersionConflict`]) if the record is missing or at another
///   version; with [`Precondition::Absent`] if it exists.
/// - `delete` of a missing record succeeds when the precondition is `Any`.
/// - A write with a [`Fence`] whose token is older than the newest token
///   granted for that lease fails with [`crate::Error::Fenced`]; the check and
///   the write are atomic.
/// - `acquire_lease` grants the lease if it is free, expired at `now`, or
///   already held by `holder` (which renews it and keeps the token); a grant
///   to a new holder, or after expiry, carries a token larger than any before.
///   It returns `Ok(None)` when another holder's lease is live.
/// - `renew_lease` fails with [`crate::Error::LeaseHeld`] if the lease has
///   since been granted to someone else.
/// - `release_lease` of a lease no longer held by the caller succeeds and
///   changes nothing.
/// - `changes`, where offered, announces every successful `put` and every
///   `delete` that removed a record, made through any handle on the same
///   data, soon after it is durable (in order per record; announcements may
///   be coalesced, and a gap is announced as [`StoreChange::Missed`]). It is
///   a hint to act promptly, never the only way to learn of a change: the
///   controller still re-reads at every lease renewal.
///
/// Every store must pass `testing::store_conformance`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One record, if present.
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Record>>;

    /// Every record of a collection, ordered by key.
    async fn list(&self, collection: &str) -> Result<Vec<Record>>;

    /// Writes a record if `expect` holds (and `fence`, if given, is current).
    /// Returns the new version.
    async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version>;

    /// Deletes a record if `expect` holds (and `fence`, if given, is current).
    async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()>;

    /// Acquires or renews a lease; `None` if another holder's lease is live.
    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>>;

    /// Extends a lease the caller holds.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease>;

    /// Gives a lease up early so another holder need not wait for expiry.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// A stream of the changes to this store's records, from now on, if the
    /// store can announce them (see the contract above); `None` (the
    /// default) if it cannot, and the controller then learns of other hosts'
    /// writes at its lease renewals only. Each call is a new subscription.
    fn changes(&self) -> Option<BoxStream<'static, StoreChange>> {
        None
    }
}
