//! Implementations of the [`crate::Store`] port, and the rules they share.
//!
//! This module owns the store semantics that do not depend on where bytes
//! live: how a [`Precondition`] is checked, how a [`Fence`] is checked, and how
//! a lease row changes on acquire / renew / release. Both [`InMemoryStore`]
//! and `RedbStore` apply exactly these rules inside their own atomic section
//! (a mutex, a write transaction), so they cannot drift apart. Nothing here
//! performs I/O or reads a clock. [`ChangeFeed`] is the fan-out of
//! `Store::changes` that every announcing store shares.

mod change_feed;
mod memory;
#[cfg(feature = "redb")]
mod redb;

#[cfg(feature = "redb")]
pub use self::redb::RedbStore;
pub use change_feed::ChangeFeed;
pub use memory::InMemoryStore;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ports::{Fence, Lease, Precondition, Version};
use crate::time::Timestamp;

/// Checks `expect` against the version currently stored (`None`: absent).
pub(crate) fn check_precondition(
    collection: &str,
    key: &str,
    current: Option<Version>,
    expect: Precondition,
) -> Result<()> {
    let ok = match (expect, current) {
        (Precondition::Any, _) => true,
        (Precondition::Absent, None) => true,
        (Precondition::Absent, Some(_)) => false,
        (Precondition::At(want), Some(have)) => want == have,
        (Precondition::At(_), None) => false,
    };
    if ok {
        return Ok(());
    }
    let expected = match expect {
        Precondition::Any => "any version".to_owned(),
        Precondition::Absent => "no record".to_owned(),
        Precondition::At(v) => v.to_string(),
    };
    let found = match current {
        None => "no record".to_owned(),
        Some(v) => v.to_string(),
    };
    Err(Error::VersionConflict {
        key: format!("{collection}/{key}"),
        expected,
        found,
    })
}

/// Checks a write's fence against the newest token granted for its lease
/// (`max_token`, 0 if none was ever granted). Only an *older* token is
/// rejected.
pub(crate) fn check_fence(fence: &Fence, max_token: u64) -> Result<()> {
    if fence.token < max_token {
        return Err(Error::Fenced {
            lease: fence.lease.clone(),
            token: fence.token,
            current: max_token,
        });
    }
    Ok(())
}

/// The next store-wide revision after `revision`.
pub(crate) fn next_revision(revision: u64) -> Result<u64> {
    revision
        .checked_add(1)
        .ok_or_else(|| Error::unavailable("store", "the store-wide revision counter is exhausted"))
}

/// Who holds a lease right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holding {
    /// The holder's name.
    pub(crate) holder: String,
    /// The token it was granted.
    pub(crate) token: u64,
    /// When the holding lapses unless renewed.
    pub(crate) expires_at: Timestamp,
}

/// Everything a store keeps per lease key: the current holding (if not
/// released) and the highest token ever granted, which outlives releases and
/// expiries so fencing keeps working.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRow {
    /// The current holding; `None` after a release (or before any grant).
    pub(crate) current: Option<Holding>,
    /// The highest token ever granted for this key (0: never granted).
    pub(crate) max_token: u64,
}

impl LeaseRow {
    /// Acquires or renews at `now`. Returns the granted lease, or `None` when
    /// another holder's lease is live. A renewal by the live holder keeps the
    /// token; every other grant takes a token above `max_token`.
    pub(crate) fn acquire(
        &mut self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let expires_at = now.saturating_add(ttl);
        if let Some(cur) = &mut self.current
            && cur.expires_at > now
        {
            if cur.holder != holder {
                return Ok(None);
            }
            cur.expires_at = expires_at;
            return Ok(Some(lease_of(key, cur)));
        }
        let token = self
            .max_token
            .checked_add(1)
            .ok_or_else(|| Error::unavailable(format!("lease {key}"), "token space exhausted"))?;
        self.max_token = token;
        let holding = Holding {
            holder: holder.to_owned(),
            token,
            expires_at,
        };
        let lease = lease_of(key, &holding);
        self.current = Some(holding);
        Ok(Some(lease))
    }

    /// Renews `lease` for `ttl` from `now`, keeping its token. Fails with
    /// [`Error::LeaseHeld`] unless `lease` is still the current holding (same
    /// holder and token). A holding that expired but was not taken over is
    /// still current: no newer token exists, so renewing it is safe.
    pub(crate) fn renew(&mut self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease> {
        match &mut self.current {
            Some(cur) if cur.holder == lease.holder && cur.token == lease.token => {
                cur.expires_at = now.saturating_add(ttl);
                Ok(lease_of(&lease.key, cur))
            }
            Some(cur) => Err(Error::LeaseHeld {
                lease: lease.key.clone(),
                holder: cur.holder.clone(),
            }),
            None => Err(Error::LeaseHeld {
                lease: lease.key.clone(),
                holder: "no one (it was released)".to_owned(),
            }),
        }
    }

    /// Releases `lease` if it is the current holding; otherwise changes
    /// nothing. Returns whether the row changed. The max token is kept.
    pub(crate) fn release(&mut self, lease: &Lease) -> bool {
        match &self.current {
            Some(cur) if cur.holder == lease.holder && cur.token == lease.token => {
                self.current = None;
                true
            }
            _ => false,
        }
    }
}

fn lease_of(key: &str, holding: &Holding) -> Lease {
    Lease {
        key: key.to_owned(),
        holder: holding.holder.clone(),
        token: holding.token,
        expires_at: holding.expires_at,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const TTL: Duration = Duration::from_secs(10);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn preconditions() {
        let v = Version(3);
        assert!(check_precondition("c", "k", None, Precondition::Any).is_ok());
        assert!(check_precondition("c", "k", Some(v), Precondition::Any).is_ok());
        assert!(check_precondition("c", "k", None, Precondition::Absent).is_ok());
        assert!(check_precondition("c", "k", Some(v), Precondition::At(v)).is_ok());
        for (cur, expect) in [
            (Some(v), Precondition::Absent),
            (None, Precondition::At(v)),
            (Some(Version(4)), Precondition::At(v)),
        ] {
            let err = check_precondition("c", "k", cur, expect).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict);
            assert!(err.to_string().contains("c/k"), "{err}");
        }
    }

    #[test]
    fn fence_rejects_only_older_tokens() {
        let fence = |token| Fence {
            lease: "l".into(),
            token,
        };
        assert!(check_fence(&fence(2), 2).is_ok());
        assert!(check_fence(&fence(0), 0).is_ok());
        assert!(matches!(
            check_fence(&fence(1), 2),
            Err(Error::Fenced {
                token: 1,
                current: 2,
                ..
            })
        ));
    }

    #[test]
    fn lease_row_lifecycle() {
        let mut row = LeaseRow::default();
        let a = row.acquire("l", "a", TTL, at(0)).unwrap().unwrap();
        assert_eq!(a.token, 1);
        // Renewal through acquire keeps the token.
        let a2 = row.acquire("l", "a", TTL, at(5_000)).unwrap().unwrap();
        assert_eq!((a2.token, a2.expires_at), (1, at(15_000)));
        // Another holder is refused while live, including at the last live millisecond.
        assert!(row.acquire("l", "b", TTL, at(14_999)).unwrap().is_none());
        // Expiry is exclusive: at expires_at the lease is free.
        let b = row.acquire("l", "b", TTL, at(15_000)).unwrap().unwrap();
        assert_eq!(b.token, 2);
        assert!(matches!(
            row.renew(&a2, TTL, at(15_001)),
            Err(Error::LeaseHeld { .. })
        ));
        // A stale release changes nothing.
        assert!(!row.release(&a2));
        assert!(row.release(&b));
        assert_eq!(row.max_token, 2);
        assert!(row.renew(&b, TTL, at(16_000)).is_err());
        // The same holder re-acquiring after expiry gets a fresh token.
        let b2 = row.acquire("l", "b", TTL, at(16_000)).unwrap().unwrap();
        let b3 = row.acquire("l", "b", TTL, at(40_000)).unwrap().unwrap();
        assert!(b3.token > b2.token);
        // Renewing an expired holding nobody took over keeps its token.
        let b4 = row.renew(&b3, TTL, at(60_000)).unwrap();
        assert_eq!((b4.token, b4.expires_at), (b3.token, at(70_000)));
    }

    #[test]
    fn lease_row_round_trips_through_json() {
        let mut row = LeaseRow::default();
        row.acquire("l", "a", TTL, at(1)).unwrap();
        let bytes = serde_json::to_vec(&row).unwrap();
        let back: LeaseRow = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, row);
    }
}
