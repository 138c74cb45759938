//! Leases of the [`super::KubernetesStore`]: one coordination.k8s.io/v1
//! Lease per lease key.
//!
//! This file owns the lease rules (a pure [`LeaseRow`] decides acquire,
//! renew and release from what was read and the caller's `now`), how a row
//! becomes a Lease object and back (holder, duration, acquire and renew time
//! in the spec for kubectl; the fencing token and the expiry in
//! annotations), and the read-decide-write loops: each change is a
//! compare-and-swap on the Lease's `resourceVersion` (a create when there is
//! no Lease yet), retried from the read when another host's change landed
//! first. Lease objects are never deleted: the newest token outlives
//! releases, so tokens only grow.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as KubeLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff;
use mcp_lifecycle::ports::Lease;
use mcp_lifecycle::{Error, Result, Timestamp};

use super::{
    EXPIRES_ANNOTATION, KubernetesStore, LEASE_KEY_ANNOTATION, LEASES, MAX_ATTEMPTS, STORE_LABEL,
    TOKEN_ANNOTATION,
};
use crate::errors;

/// Who holds a lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    holder: String,
    expires_at: Timestamp,
}

/// What a Lease object says: the current holding (none after a release)
/// and the newest token ever granted, which the current holding carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LeaseRow {
    current: Option<Holding>,
    token: u64,
}

impl LeaseRow {
    /// Acquires or renews at `now`: `None` when another holder's lease is
    /// live (expiry is exclusive: at `expires_at` the lease is free). The
    /// live holder keeps its token; every other grant takes the next one.
    fn acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<(LeaseRow, Lease)>> {
        let expires_at = now.saturating_add(ttl);
        let token = match &self.current {
            Some(cur) if cur.expires_at > now && cur.holder != holder => return Ok(None),
            Some(cur) if cur.expires_at > now => self.token,
            _ => self.token.checked_add(1).ok_or_else(|| {
                Error::unavailable(format!("lease {key}"), "token space exhausted")
            })?,
        };
        Ok(Some(self.granted(key, holder, token, expires_at)))
    }

    /// Renews `lease` if it is still the current holding (same holder and
    /// token); an expired holding nobody took over still is.
    fn renew(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<(LeaseRow, Lease)> {
        match &self.current {
            Some(cur) if cur.holder == lease.holder && self.token == lease.token => Ok(self
                .granted(
                    &lease.key,
                    &lease.holder,
                    lease.token,
                    now.saturating_add(ttl),
                )),
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

    /// The row after `lease` is released, or `None` if it is not the
    /// current holding (then nothing changes). The token is kept.
    fn release(&self, lease: &Lease) -> Option<LeaseRow> {
        match &self.current {
            Some(cur) if cur.holder == lease.holder && self.token == lease.token => {
                Some(LeaseRow {
                    current: None,
                    token: self.token,
                })
            }
            _ => None,
        }
    }

    fn granted(
        &self,
        key: &str,
        holder: &str,
        token: u64,
        expires_at: Timestamp,
    ) -> (LeaseRow, Lease) {
        let row = LeaseRow {
            current: Some(Holding {
                holder: holder.to_owned(),
                expires_at,
            }),
            token,
        };
        let lease = Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            token,
            expires_at,
        };
        (row, lease)
    }
}

/// A Lease as read: its row and what a compare-and-swap on it needs.
struct Read {
    row: LeaseRow,
    object: KubeLease,
}

/// How a change computed from a read ends.
enum Change<T> {
    /// Write this row, then return `T`.
    Write(LeaseRow, T),
    /// Write nothing and return `T`.
    Done(T),
}

fn micro_time(t: Timestamp) -> Option<MicroTime> {
    let millis = i64::try_from(t.as_millis()).ok()?;
    jiff::Timestamp::from_millisecond(millis)
        .ok()
        .map(MicroTime)
}

fn decode_row(name: &str, object: &KubeLease) -> Result<LeaseRow> {
    let bad = |what: String| {
        Error::backend(
            "kubernetes",
            format!("reading lease {name}"),
            format!("{what}; it was not written by the Kubernetes store"),
        )
    };
    let annotations = object.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    let number = |key: &str| -> Result<Option<u64>> {
        annotation(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("annotation {key} is {v:?}, not a number")))
            })
            .transpose()
    };
    let token = number(TOKEN_ANNOTATION)?.ok_or_else(|| bad("it has no token".to_owned()))?;
    let holder = object
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let current = match (holder, number(EXPIRES_ANNOTATION)?) {
        (Some(holder), Some(ms)) => Some(Holding {
            holder,
            expires_at: Timestamp::from_millis(ms),
        }),
        _ => None,
    };
    Ok(LeaseRow { current, token })
}

impl KubernetesStore {
    /// Reads the Lease of `key`, if there is one (a quorum read).
    async fn read_lease(&self, name: &str) -> Result<Option<Read>> {
        let object = self
            .leases()
            .get_opt(name)
            .await
            .map_err(|e| errors::map(self.call("get", LEASES, name), e))?;
        object
            .map(|object| {
                Ok(Read {
                    row: decode_row(name, &object)?,
                    object,
                })
            })
            .transpose()
    }

    /// The newest token granted for `key` (0: never granted).
    pub(super) async fn newest_token(&self, key: &str) -> Result<u64> {
        let name = self.lease_name(key);
        Ok(self
            .read_lease(&name)
            .await?
            .map_or(0, |read| read.row.token))
    }

    /// The Lease object for `row`, built on what was read (its
    /// `resourceVersion`, so the replace is a compare-and-swap).
    fn encode(
        &self,
        key: &str,
        name: &str,
        read: Option<&KubeLease>,
        row: &LeaseRow,
        ttl: Option<Duration>,
        now: Option<Timestamp>,
    ) -> KubeLease {
        let mut object = read.cloned().unwrap_or_else(|| KubeLease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.inner.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    STORE_LABEL.to_owned(),
                    self.inner.name.clone(),
                )])),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        object.metadata.managed_fields = None;
        let annotations = object
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(LEASE_KEY_ANNOTATION.to_owned(), key.to_owned());
        annotations.insert(TOKEN_ANNOTATION.to_owned(), row.token.to_string());
        let previous_token = read.and_then(|o| decode_row(name, o).ok()).map(|r| r.token);
        let spec = object.spec.get_or_insert_with(LeaseSpec::default);
        match &row.current {
            Some(holding) => {
                annotations.insert(
                    EXPIRES_ANNOTATION.to_owned(),
                    holding.expires_at.as_millis().to_string(),
                );
                spec.holder_identity = Some(holding.holder.clone());
                if let Some(ttl) = ttl {
                    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                    spec.lease_duration_seconds =
                        Some(i32::try_from(seconds.max(1)).unwrap_or(i32::MAX));
                }
                if let Some(now) = now {
                    if previous_token != Some(row.token) {
                        spec.acquire_time = micro_time(now);
                        spec.lease_transitions = Some(
                            spec.lease_transitions
                                .unwrap_or(0)
                                .saturating_add(i32::from(previous_token.is_some())),
                        );
                    }
                    spec.renew_time = micro_time(now);
                }
            }
            None => {
                annotations.remove(EXPIRES_ANNOTATION);
                spec.holder_identity = None;
            }
        }
        object
    }

    /// Reads the Lease of `key`, lets `decide` compute the change, and
    /// writes it as a compare-and-swap, from the read again when another
    /// change landed first.
    async fn change<T>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        now: Option<Timestamp>,
        decide: impl Fn(&LeaseRow, bool) -> Result<Change<T>>,
    ) -> Result<T> {
        let name = self.lease_name(key);
        for _ in 0..MAX_ATTEMPTS {
            let read = self.read_lease(&name).await?;
            let exists = read.is_some();
            let row = read.as_ref().map(|r| r.row.clone()).unwrap_or_default();
            let (new_row, out) = match decide(&row, exists)? {
                Change::Done(out) => return Ok(out),
                Change::Write(new_row, out) => (new_row, out),
            };
            let object = self.encode(
                key,
                &name,
                read.as_ref().map(|r| &r.object),
                &new_row,
                ttl,
                now,
            );
            let api = self.leases();
            let written = match read {
                None => api
                    .create(&Self::post_params(), &object)
                    .await
                    .map_err(|e| (e, "create")),
                Some(_) => api
                    .replace(&name, &Self::post_params(), &object)
                    .await
                    .map_err(|e| (e, "update")),
            };
            match written {
                Ok(_) => return Ok(out),
                // Another host's change landed first (or the Lease was
                // deleted by hand): decide again from a fresh read.
                Err((kube::Error::Api(status), verb))
                    if status.code == 409 || (status.code == 404 && verb == "update") =>
                {
                    tracing::debug!(lease = %key, "lease changed meanwhile; reading it again");
                }
                Err((e, verb)) => return Err(errors::map(self.call(verb, LEASES, &name), e)),
            }
        }
        Err(Error::unavailable(
            format!("lease {key}"),
            format!("other hosts changed it {MAX_ATTEMPTS} times between a read and a write"),
        ))
    }

    /// `acquire_lease`.
    pub(super) async fn acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        self.change(key, Some(ttl), Some(now), |row, _| {
            Ok(match row.acquire(key, holder, ttl, now)? {
                Some((row, lease)) => Change::Write(row, Some(lease)),
                None => Change::Done(None),
            })
        })
        .await
    }

    /// `renew_lease`.
    pub(super) async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease> {
        self.change(&lease.key, Some(ttl), Some(now), |row, exists| {
            if !exists {
                return Err(Error::LeaseHeld {
                    lease: lease.key.clone(),
                    holder: "no one (it was never granted)".to_owned(),
                });
            }
            let (row, lease) = row.renew(lease, ttl, now)?;
            Ok(Change::Write(row, lease))
        })
        .await
    }

    /// `release_lease`.
    pub(super) async fn release(&self, lease: &Lease) -> Result<()> {
        self.change(&lease.key, None, None, |row, _| {
            Ok(match row.release(lease) {
                Some(row) => Change::Write(row, ()),
                None => Change::Done(()),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn rows_follow_the_lease_rules() {
        let row = LeaseRow::default();
        let (row, a) = row.acquire("l", "a", TTL, at(0)).unwrap().unwrap();
        assert_eq!((a.token, a.expires_at), (1, at(10_000)));
        let (row, a2) = row.acquire("l", "a", TTL, at(5_000)).unwrap().unwrap();
        assert_eq!((a2.token, a2.expires_at), (1, at(15_000)));
        assert!(row.acquire("l", "b", TTL, at(14_999)).unwrap().is_none());
        let (row, b) = row.acquire("l", "b", TTL, at(15_000)).unwrap().unwrap();
        assert_eq!(b.token, 2);
        assert!(matches!(
            row.renew(&a2, TTL, at(15_001)),
            Err(Error::LeaseHeld { holder, .. }) if holder == "b"
        ));
        assert!(row.release(&a2).is_none());
        let released = row.release(&b).unwrap();
        assert_eq!(released.token, 2);
        assert!(released.current.is_none());
        assert!(released.renew(&b, TTL, at(16_000)).is_err());
        let (_, c) = released
            .acquire("l", "c", TTL, at(16_000))
            .unwrap()
            .unwrap();
        assert_eq!(c.token, 3);
    }

    #[test]
    fn a_row_round_trips_through_a_lease_object() {
        let row = LeaseRow {
            current: Some(Holding {
                holder: "host-a".into(),
                expires_at: at(1_700_000_030_000),
            }),
            token: 7,
        };
        let object = KubeLease {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (TOKEN_ANNOTATION.to_owned(), "7".to_owned()),
                    (EXPIRES_ANNOTATION.to_owned(), "1700000030000".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("host-a".into()),
                ..LeaseSpec::default()
            }),
        };
        assert_eq!(decode_row("x", &object).unwrap(), row);
        let mut released = object.clone();
        released.spec = Some(LeaseSpec::default());
        assert_eq!(
            decode_row("x", &released).unwrap(),
            LeaseRow {
                current: None,
                token: 7
            }
        );
        let mut foreign = object;
        foreign.metadata.annotations = None;
        let error = decode_row("x", &foreign).unwrap_err();
        assert_eq!(error.kind(), mcp_lifecycle::ErrorKind::Backend);
        assert!(micro_time(at(1_700_000_000_000)).is_some());
        assert!(micro_time(at(u64::MAX)).is_none());
    }
}
