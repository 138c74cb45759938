//! The conformance suite every [`Store`] must pass (feature `testing`).
//!
//! This file owns the executable form of the contract documented on
//! [`Store`]: one public check per rule, each a test helper that panics with
//! a message naming the rule it saw broken, and [`run_all`] to run them in
//! sequence. Each check works in its own freshly named collections and lease
//! keys, so the whole suite can run on one store, even one that already holds
//! data. It must not depend on any particular store's internals, must not
//! sleep (lease time is passed explicitly as `now`), and must not assume
//! versions start at any particular number — only that they grow.
//!
//! ```no_run
//! # async fn demo() {
//! let store = mcp_lifecycle::InMemoryStore::new();
//! mcp_lifecycle::testing::store_conformance::run_all(&store).await;
//! # }
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{Lease, Precondition, Record, Store, StoreChange, Version};
use crate::time::Timestamp;

/// Lease length used by the lease checks.
const TTL: Duration = Duration::from_secs(30);

/// Runs every check in this module against `store`.
///
/// The concurrency check runs as interleaved futures on the calling task
/// ([`concurrent_cas_increments`]); to also exercise writers on separate tasks
/// (and threads, on a multi-thread runtime), call
/// [`concurrent_cas_increments_spawned`] with an `Arc` of the store.
pub async fn run_all(store: &dyn Store) {
    basics(store).await;
    list_is_ordered_by_key(store).await;
    create_requires_absent(store).await;
    compare_and_swap(store).await;
    versions_increase_store_wide(store).await;
    delete_with_precondition(store).await;
    lease_acquire_renew_expire(store).await;
    lease_takeover_after_expiry(store).await;
    lease_release(store).await;
    fencing(store).await;
    concurrent_cas_increments(store, 8, 25).await;
    announces_changes(store).await;
}

/// A name no earlier check (in this process, or an earlier run on a durable
/// store) has used: `<what>-<pid>-<nanos>-<counter>`.
fn unique(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("conformance-{what}-{}-{nanos}-{n}", std::process::id())
}

/// A fixed, arbitrary starting time for lease checks.
fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

/// Unwraps a store result, panicking with the check and the error.
#[track_caller]
fn ok<T>(res: Result<T>, what: &str) -> T {
    match res {
        Ok(v) => v,
        Err(e) => panic!("store conformance: {what}: unexpected error: {e}"),
    }
}

/// Asserts `res` is a [`Error::VersionConflict`] (kind `Conflict`).
#[track_caller]
fn expect_version_conflict<T: Debug>(res: Result<T>, what: &str) {
    match res {
        Err(e @ Error::VersionConflict { .. }) => {
            assert_eq!(
                e.kind(),
                ErrorKind::Conflict,
                "store conformance: {what}: a version conflict must have kind Conflict"
            );
        }
        Err(e) => panic!("store conformance: {what}: expected a version conflict, got error: {e}"),
        Ok(v) => panic!("store conformance: {what}: expected a version conflict, got Ok({v:?})"),
    }
}

/// Asserts `res` is an [`Error::Fenced`] whose `current` token is `current`.
#[track_caller]
fn expect_fenced<T: Debug>(res: Result<T>, token: u64, current: u64, what: &str) {
    match res {
        Err(Error::Fenced {
            token: t,
            current: c,
            ..
        }) => {
            assert_eq!(
                (t, c),
                (token, current),
                "store conformance: {what}: Fenced must report the writer's token and the newest granted"
            );
        }
        Err(e) => panic!("store conformance: {what}: expected Error::Fenced, got error: {e}"),
        Ok(v) => panic!("store conformance: {what}: expected Error::Fenced, got Ok({v:?})"),
    }
}

async fn get(store: &dyn Store, collection: &str, key: &str) -> Option<Record> {
    ok(
        store.get(collection, key).await,
        &format!("get {collection}/{key}"),
    )
}

async fn put(
    store: &dyn Store,
    collection: &str,
    key: &str,
    value: &[u8],
    expect: Precondition,
) -> Version {
    ok(
        store
            .put(collection, key, value.to_vec(), expect, None)
            .await,
        &format!("put {collection}/{key} expecting {expect:?}"),
    )
}

async fn acquire(store: &dyn Store, key: &str, holder: &str, now: Timestamp) -> Option<Lease> {
    ok(
        store.acquire_lease(key, holder, TTL, now).await,
        &format!("acquire lease {key} for {holder}"),
    )
}

async fn must_acquire(store: &dyn Store, key: &str, holder: &str, now: Timestamp) -> Lease {
    let lease = acquire(store, key, holder, now).await;
    let Some(lease) = lease else {
        panic!("store conformance: lease {key} should be granted to {holder} at {now}, got None")
    };
    assert_eq!(
        (lease.key.as_str(), lease.holder.as_str(), lease.expires_at),
        (key, holder, now + TTL),
        "store conformance: a granted lease names its key and holder and expires at now + ttl"
    );
    lease
}

/// How long a store may take to announce a committed write. Generous: the
/// check is about what is announced; how fast is for benchmarks.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(10);

/// The next announcement about collection `c` (others' changes to other
/// collections are skipped) as key and version, or a panic naming `what`
/// was expected.
async fn next_change_in(
    changes: &mut BoxStream<'static, StoreChange>,
    c: &str,
    what: &str,
) -> (String, Option<Version>) {
    let found = tokio::time::timeout(ANNOUNCE_WITHIN, async {
        while let Some(change) = changes.next().await {
            match change {
                StoreChange::Record {
                    collection,
                    key,
                    version,
                } if collection == c => return Some((key, version)),
                StoreChange::Record { .. } => {}
                StoreChange::Missed => panic!(
                    "store conformance: changes reported Missed while {what} (nothing was lost: the check writes a handful of records)"
                ),
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        Ok(None) => panic!("store conformance: the changes stream ended while {what}"),
        Err(_) => {
            panic!("store conformance: no change announced within {ANNOUNCE_WITHIN:?} while {what}")
        }
    }
}

/// Rule: a store that offers [`Store::changes`] announces every successful
/// put (with the version it gave) and every delete that removed a record
/// (with no version), in order per record, and nothing for a write that
/// failed or a delete of a missing record. A store that does not offer
/// changes passes trivially.
pub async fn announces_changes(store: &dyn Store) {
    let Some(mut changes) = store.changes() else {
        return;
    };
    let c = unique("changes");
    let key = |k: &str| k.to_owned();
    let v1 = put(store, &c, "a", b"1", Precondition::Absent).await;
    assert_eq!(
        next_change_in(&mut changes, &c, "waiting for a create").await,
        (key("a"), Some(v1)),
        "store conformance: a create must be announced with its version"
    );
    let v2 = put(store, &c, "a", b"2", Precondition::At(v1)).await;
    assert_eq!(
        next_change_in(&mut changes, &c, "waiting for an update").await,
        (key("a"), Some(v2)),
        "store conformance: an update must be announced with its version"
    );
    // Failed writes and a delete of a missing record change nothing, so they
    // announce nothing: the next announcement is the marker's.
    let stale = store
        .put(&c, "a", b"3".to_vec(), Precondition::At(v1), None)
        .await;
    assert!(stale.is_err(), "a stale compare-and-swap must fail");
    ok(
        store.delete(&c, "missing", Precondition::Any, None).await,
        "delete a missing record",
    );
    let marker = put(store, &c, "marker", b"", Precondition::Any).await;
    assert_eq!(
        next_change_in(
            &mut changes,
            &c,
            "waiting for the marker after failed writes"
        )
        .await,
        (key("marker"), Some(marker)),
        "store conformance: a failed write or a delete of nothing must not be announced"
    );
    ok(
        store.delete(&c, "a", Precondition::Any, None).await,
        "delete a record",
    );
    assert_eq!(
        next_change_in(&mut changes, &c, "waiting for a delete").await,
        (key("a"), None),
        "store conformance: a delete must be announced, without a version"
    );
}

/// Get, put, list and delete round-trip: a missing record reads as `None`, a
/// written one reads back with the returned version and exact bytes (empty
/// and non-UTF-8 values included), an overwrite with `Any` replaces it, and
/// deleting a missing record with `Any` succeeds.
pub async fn basics(store: &dyn Store) {
    let c = unique("basics");
    assert_eq!(
        get(store, &c, "a").await,
        None,
        "store conformance: a missing record must read as None"
    );
    assert!(
        ok(store.list(&c).await, "list empty collection").is_empty(),
        "store conformance: an unknown collection must list as empty"
    );

    let value = vec![0u8, 159, 146, 150, 255, b'{'];
    let v1 = put(store, &c, "a", &value, Precondition::Any).await;
    assert_eq!(
        get(store, &c, "a").await,
        Some(Record {
            key: "a".into(),
            version: v1,
            value: value.clone(),
        }),
        "store conformance: get must return the written bytes and the version put returned"
    );

    let v2 = put(store, &c, "a", b"", Precondition::Any).await;
    assert!(
        v2 > v1,
        "store conformance: an overwrite must get a larger version"
    );
    let rec = get(store, &c, "a").await;
    assert_eq!(
        rec.as_ref().map(|r| (r.version, r.value.as_slice())),
        Some((v2, &b""[..])),
        "store conformance: an overwrite with Any must replace the value (empty values allowed)"
    );

    let listed = ok(store.list(&c).await, "list");
    assert_eq!(
        listed,
        vec![Record {
            key: "a".into(),
            version: v2,
            value: vec![],
        }],
        "store conformance: list must return the collection's records"
    );

    ok(
        store.delete(&c, "a", Precondition::Any, None).await,
        "delete existing",
    );
    assert_eq!(
        get(store, &c, "a").await,
        None,
        "store conformance: a deleted record must read as None"
    );
    assert!(
        ok(store.list(&c).await, "list after delete").is_empty(),
        "store conformance: a deleted record must not be listed"
    );
    ok(
        store.delete(&c, "a", Precondition::Any, None).await,
        "store conformance: deleting a missing record with Any must succeed",
    );
}

/// `list` returns exactly the collection's records, ordered by key, and does
/// not mix in collections whose names share a prefix.
pub async fn list_is_ordered_by_key(store: &dyn Store) {
    let c = unique("list");
    let sibling = format!("{c}x");
    let prefix = c
        .strip_suffix(|_: char| true)
        .map_or_else(String::new, str::to_owned);
    let keys = ["m", "b", "z", "a", "ab", "a/b", "B", "é", "0"];
    for k in keys {
        put(store, &c, k, k.as_bytes(), Precondition::Absent).await;
    }
    put(store, &sibling, "a", b"sibling", Precondition::Any).await;
    put(store, &prefix, "zz", b"prefix", Precondition::Any).await;

    let listed = ok(store.list(&c).await, "list");
    let got: Vec<&str> = listed.iter().map(|r| r.key.as_str()).collect();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "store conformance: list must return the collection's keys in byte order, and only them"
    );
    for r in &listed {
        assert_eq!(
            r.value,
            r.key.as_bytes(),
            "store conformance: list must return each record's own value"
        );
        assert_eq!(
            get(store, &c, &r.key).await.map(|g| g.version),
            Some(r.version),
            "store conformance: list and get must agree on versions"
        );
    }
}

/// `put` with [`Precondition::Absent`] creates a missing record and fails
/// with a version conflict when the record exists, leaving it unchanged.
pub async fn create_requires_absent(store: &dyn Store) {
    let c = unique("absent");
    let v1 = put(store, &c, "k", b"first", Precondition::Absent).await;
    expect_version_conflict(
        store
            .put(&c, "k", b"second".to_vec(), Precondition::Absent, None)
            .await,
        "put Absent on an existing record",
    );
    let rec = get(store, &c, "k").await;
    assert_eq!(
        rec.map(|r| (r.version, r.value)),
        Some((v1, b"first".to_vec())),
        "store conformance: a failed create must leave the record unchanged"
    );
}

/// `put` with [`Precondition::At`] succeeds at the current version and
/// conflicts at a stale one or on a missing record, changing nothing.
pub async fn compare_and_swap(store: &dyn Store) {
    let c = unique("cas");
    let v1 = put(store, &c, "k", b"1", Precondition::Absent).await;
    let v2 = put(store, &c, "k", b"2", Precondition::At(v1)).await;
    assert!(
        v2 > v1,
        "store conformance: a CAS write must get a larger version"
    );
    expect_version_conflict(
        store
            .put(&c, "k", b"stale".to_vec(), Precondition::At(v1), None)
            .await,
        "put At(stale version)",
    );
    let rec = get(store, &c, "k").await;
    assert_eq!(
        rec.map(|r| (r.version, r.value)),
        Some((v2, b"2".to_vec())),
        "store conformance: a conflicting CAS must leave the record unchanged"
    );
    expect_version_conflict(
        store
            .put(&c, "missing", b"x".to_vec(), Precondition::At(v2), None)
            .await,
        "put At(v) on a missing record",
    );
    assert_eq!(
        get(store, &c, "missing").await,
        None,
        "store conformance: a conflicting CAS must not create the record"
    );
    let v3 = put(store, &c, "k", b"3", Precondition::At(v2)).await;
    assert!(
        v3 > v2,
        "store conformance: CAS must keep working after a conflict"
    );
}

/// Versions are store-wide and strictly increasing across all writes and
/// collections, and a record deleted and created again never gets back an
/// old version.
pub async fn versions_increase_store_wide(store: &dyn Store) {
    let c1 = unique("versions-a");
    let c2 = unique("versions-b");
    let mut seen = Vec::new();
    for (c, k) in [(&c1, "x"), (&c2, "x"), (&c1, "y"), (&c1, "x"), (&c2, "y")] {
        seen.push(put(store, c, k, b"v", Precondition::Any).await);
    }
    let v_before_delete = put(store, &c1, "z", b"old", Precondition::Absent).await;
    seen.push(v_before_delete);
    ok(
        store
            .delete(&c1, "z", Precondition::At(v_before_delete), None)
            .await,
        "delete before re-create",
    );
    seen.push(put(store, &c1, "z", b"new", Precondition::Absent).await);
    seen.push(put(store, &c2, "x", b"v", Precondition::Any).await);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "store conformance: versions must strictly increase across all writes and collections, saw {seen:?}"
    );
}

/// `delete` honours its precondition: a stale `At` or one on a missing
/// record conflicts and changes nothing; the current `At` deletes.
pub async fn delete_with_precondition(store: &dyn Store) {
    let c = unique("delete");
    let v1 = put(store, &c, "k", b"1", Precondition::Absent).await;
    let v2 = put(store, &c, "k", b"2", Precondition::At(v1)).await;
    expect_version_conflict(
        store.delete(&c, "k", Precondition::At(v1), None).await,
        "delete At(stale version)",
    );
    assert_eq!(
        get(store, &c, "k").await.map(|r| r.version),
        Some(v2),
        "store conformance: a conflicting delete must leave the record in place"
    );
    ok(
        store.delete(&c, "k", Precondition::At(v2), None).await,
        "delete At(current version)",
    );
    assert_eq!(
        get(store, &c, "k").await,
        None,
        "store conformance: delete At(current) must remove the record"
    );
    expect_version_conflict(
        store.delete(&c, "k", Precondition::At(v2), None).await,
        "delete At(v) on a missing record",
    );
}

/// A free lease is granted; the holder renews it (through `acquire_lease` or
/// `renew_lease`) keeping the token and moving the expiry; another holder gets
/// `None` while it is live; once it expires another holder gets it.
pub async fn lease_acquire_renew_expire(store: &dyn Store) {
    let key = unique("lease-basic");
    let a = must_acquire(store, &key, "a", t(0)).await;

    let a_again = must_acquire(store, &key, "a", t(1_000)).await;
    assert_eq!(
        a_again.token, a.token,
        "store conformance: re-acquiring a live lease by its holder renews it and keeps the token"
    );

    let renewed = ok(
        store.renew_lease(&a_again, TTL, t(2_000)).await,
        "renew a live lease",
    );
    assert_eq!(
        (renewed.token, renewed.holder.as_str(), renewed.expires_at),
        (a.token, "a", t(2_000) + TTL),
        "store conformance: renew keeps the token and extends expiry to now + ttl"
    );

    let live_until = renewed.expires_at;
    let just_before = Timestamp::from_millis(live_until.as_millis() - 1);
    assert_eq!(
        acquire(store, &key, "b", just_before).await,
        None,
        "store conformance: acquire_lease must return None while another holder's lease is live"
    );
    let b = must_acquire(store, &key, "b", live_until + Duration::from_millis(1)).await;
    assert!(
        b.token > a.token,
        "store conformance: a grant after expiry must carry a larger token"
    );
}

/// After expiry another holder takes over with a larger token; the old
/// holder can no longer renew (`LeaseHeld`) or acquire, and its stale release
/// changes nothing. The same holder re-acquiring after its own lease expired
/// also gets a larger token.
pub async fn lease_takeover_after_expiry(store: &dyn Store) {
    let key = unique("lease-takeover");
    let a = must_acquire(store, &key, "a", t(0)).await;
    let later = a.expires_at + Duration::from_secs(1);
    let b = must_acquire(store, &key, "b", later).await;
    assert!(
        b.token > a.token,
        "store conformance: takeover after expiry must carry a larger token ({} then {})",
        a.token,
        b.token
    );

    match store.renew_lease(&a, TTL, later).await {
        Err(Error::LeaseHeld { holder, .. }) => assert_eq!(
            holder, "b",
            "store conformance: LeaseHeld must name the current holder"
        ),
        Err(e) => panic!(
            "store conformance: renewing a lease taken over by another holder must fail with LeaseHeld, got {e}"
        ),
        Ok(l) => panic!(
            "store conformance: renewing a lease taken over by another holder must fail with LeaseHeld, got Ok({l:?})"
        ),
    }
    assert_eq!(
        acquire(store, &key, "a", later).await,
        None,
        "store conformance: the old holder must not get the lease back while the new one is live"
    );

    ok(
        store.release_lease(&a).await,
        "store conformance: releasing a lease no longer held must succeed",
    );
    assert_eq!(
        acquire(store, &key, "c", later).await,
        None,
        "store conformance: a stale release must not free the new holder's lease"
    );
    let b_renewed = ok(
        store.renew_lease(&b, TTL, later).await,
        "new holder renews after a stale release",
    );
    assert_eq!(
        b_renewed.token, b.token,
        "store conformance: renewal keeps the token"
    );

    let much_later = b_renewed.expires_at + Duration::from_secs(1);
    let b2 = must_acquire(store, &key, "b", much_later).await;
    assert!(
        b2.token > b.token,
        "store conformance: re-acquiring after one's own lease expired must carry a larger token"
    );
}

/// Releasing a lease frees it at once: another holder acquires it before
/// the old expiry, with a larger token.
pub async fn lease_release(store: &dyn Store) {
    let key = unique("lease-release");
    let a = must_acquire(store, &key, "a", t(0)).await;
    ok(store.release_lease(&a).await, "release a held lease");
    let b = must_acquire(store, &key, "b", t(1)).await;
    assert!(
        b.token > a.token,
        "store conformance: a grant after release must carry a larger token"
    );
    ok(
        store.release_lease(&a).await,
        "store conformance: releasing an already released lease must succeed",
    );
    assert_eq!(
        acquire(store, &key, "c", t(2)).await,
        None,
        "store conformance: releasing an old lease must not free the current one"
    );
}

/// Writes fenced with a token older than the newest grant are rejected with
/// [`Error::Fenced`] and change nothing (put and delete), even after the new
/// holder releases; the current holder's fenced writes succeed.
pub async fn fencing(store: &dyn Store) {
    let c = unique("fencing");
    let key = unique("lease-fence");
    let a = must_acquire(store, &key, "a", t(0)).await;
    let v1 = ok(
        store
            .put(
                &c,
                "k",
                b"by a".to_vec(),
                Precondition::Absent,
                Some(&a.fence()),
            )
            .await,
        "fenced write by the current holder",
    );

    let b = must_acquire(store, &key, "b", a.expires_at + Duration::from_secs(1)).await;

    expect_fenced(
        store
            .put(
                &c,
                "k",
                b"late a".to_vec(),
                Precondition::Any,
                Some(&a.fence()),
            )
            .await,
        a.token,
        b.token,
        "put fenced with a token older than the newest grant",
    );
    expect_fenced(
        store
            .put(
                &c,
                "k",
                b"late a".to_vec(),
                Precondition::At(v1),
                Some(&a.fence()),
            )
            .await,
        a.token,
        b.token,
        "put fenced with an old token and a matching version",
    );
    expect_fenced(
        store
            .put(
                &c,
                "new",
                b"late a".to_vec(),
                Precondition::Absent,
                Some(&a.fence()),
            )
            .await,
        a.token,
        b.token,
        "create fenced with an old token",
    );
    expect_fenced(
        store
            .delete(&c, "k", Precondition::Any, Some(&a.fence()))
            .await,
        a.token,
        b.token,
        "delete fenced with an old token",
    );
    let rec = get(store, &c, "k").await;
    assert_eq!(
        rec.map(|r| (r.version, r.value)),
        Some((v1, b"by a".to_vec())),
        "store conformance: a fenced-out write must leave the record unchanged"
    );
    assert_eq!(
        get(store, &c, "new").await,
        None,
        "store conformance: a fenced-out create must not create the record"
    );

    let v2 = ok(
        store
            .put(
                &c,
                "k",
                b"by b".to_vec(),
                Precondition::At(v1),
                Some(&b.fence()),
            )
            .await,
        "fenced write by the new holder",
    );
    assert!(
        v2 > v1,
        "store conformance: versions grow under fencing too"
    );

    ok(store.release_lease(&b).await, "new holder releases");
    expect_fenced(
        store
            .put(
                &c,
                "k",
                b"late a".to_vec(),
                Precondition::Any,
                Some(&a.fence()),
            )
            .await,
        a.token,
        b.token,
        "fencing must survive the newer holder's release",
    );
    assert_eq!(
        get(store, &c, "k").await.map(|r| r.version),
        Some(v2),
        "store conformance: a fenced-out write after release must change nothing"
    );
}

/// One writer's loop: `increments` times, read the counter, add one, write it
/// back with `At(version)`, retrying from the read on a version conflict.
async fn cas_increment_loop(store: &dyn Store, collection: &str, increments: u64) {
    for _ in 0..increments {
        loop {
            let rec = get(store, collection, "counter").await;
            let Some(rec) = rec else {
                panic!("store conformance: the counter record disappeared")
            };
            let n: u64 = std::str::from_utf8(&rec.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "store conformance: counter holds non-numeric {:?}",
                        rec.value
                    )
                });
            // Let the other writers run between the read and the write.
            tokio::task::yield_now().await;
            match store
                .put(
                    collection,
                    "counter",
                    (n + 1).to_string().into_bytes(),
                    Precondition::At(rec.version),
                    None,
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => panic!("store conformance: CAS increment failed: {e}"),
            }
        }
    }
}

async fn new_counter(store: &dyn Store) -> String {
    let c = unique("counter");
    put(store, &c, "counter", b"0", Precondition::Absent).await;
    c
}

async fn assert_counter(store: &dyn Store, collection: &str, want: u64) {
    let rec = get(store, collection, "counter").await;
    let got = rec.map(|r| String::from_utf8_lossy(&r.value).into_owned());
    assert_eq!(
        got,
        Some(want.to_string()),
        "store conformance: concurrent CAS increments must not lose updates"
    );
}

/// `writers` concurrent writers each CAS-increment one counter `increments`
/// times (retrying on conflict); the final count equals the total. The
/// writers are futures interleaved on the calling task, yielding between
/// read and write so their reads and writes cross.
pub async fn concurrent_cas_increments(store: &dyn Store, writers: u64, increments: u64) {
    let c = new_counter(store).await;
    let loops = (0..writers).map(|_| cas_increment_loop(store, &c, increments));
    futures::future::join_all(loops).await;
    assert_counter(store, &c, writers * increments).await;
}

/// Like [`concurrent_cas_increments`], but each writer is a spawned tokio
/// task, so on a multi-thread runtime the writers run in parallel.
pub async fn concurrent_cas_increments_spawned(
    store: Arc<dyn Store>,
    writers: u64,
    increments: u64,
) {
    let c = new_counter(store.as_ref()).await;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = Arc::clone(&store);
            let c = c.clone();
            tokio::spawn(async move { cas_increment_loop(store.as_ref(), &c, increments).await })
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            panic!("store conformance: a concurrent writer task failed: {e}");
        }
    }
    assert_counter(store.as_ref(), &c, writers * increments).await;
}

/// What [`two_hosts_race_for_lapsed_leases`] did: the record collection it
/// wrote, the lease (and record) keys it raced for, one a round, and how
/// many rounds each holder (`host-a`, `host-b`) won.
#[derive(Debug, Clone, Default)]
pub struct LeaseRace {
    /// The collection of the records written under the leases.
    pub collection: String,
    /// The keys raced for, in round order.
    pub keys: Vec<String>,
    /// Rounds won, by holder.
    pub wins: std::collections::BTreeMap<String, u32>,
}

/// Two hosts (two handles on one shared store, as two machines would hold)
/// race for a lapsed lease, `rounds` times, each on spawned tasks: exactly
/// one wins with a larger token, the loser cannot take the live lease, the
/// deposed holder's fenced write is rejected from either host with the
/// tokens named, and the winner's write is what the loser reads.
pub async fn two_hosts_race_for_lapsed_leases(
    host_a: Arc<dyn Store>,
    host_b: Arc<dyn Store>,
    rounds: u32,
) -> LeaseRace {
    let collection = unique("race");
    let mut race = LeaseRace {
        collection: collection.clone(),
        ..LeaseRace::default()
    };
    for round in 0..rounds {
        let key = unique(&format!("race-{round}"));
        let old = must_acquire(host_a.as_ref(), &key, "host-old", t(0)).await;
        let v1 = ok(
            host_a
                .put(
                    &collection,
                    &key,
                    b"old".to_vec(),
                    Precondition::Absent,
                    Some(&old.fence()),
                )
                .await,
            "the first holder writes under its lease",
        );
        // It lapses; both hosts race for it at the same moment.
        let later = old.expires_at + Duration::from_millis(1);
        let spawn = |host: &Arc<dyn Store>, holder: &'static str| {
            let (host, key) = (host.clone(), key.clone());
            tokio::spawn(async move { host.acquire_lease(&key, holder, TTL, later).await })
        };
        let (a, b) = (spawn(&host_a, "host-a"), spawn(&host_b, "host-b"));
        let joined = |r: std::result::Result<Result<Option<Lease>>, tokio::task::JoinError>| match r
        {
            Ok(r) => ok(r, "racing for a lapsed lease"),
            Err(e) => panic!("store conformance: a racing task failed: {e}"),
        };
        let (a, b) = (joined(a.await), joined(b.await));
        let (winner, winner_store, loser, loser_store) = match (a, b) {
            (Some(w), None) => (w, &host_a, "host-b", &host_b),
            (None, Some(w)) => (w, &host_b, "host-a", &host_a),
            other => panic!(
                "store conformance: round {round}: exactly one host must win a lapsed lease, got {other:?}"
            ),
        };
        *race.wins.entry(winner.holder.clone()).or_insert(0) += 1;
        assert!(
            winner.token > old.token,
            "store conformance: round {round}: the winner's token must be larger ({} then {})",
            old.token,
            winner.token
        );
        assert_eq!(
            acquire(loser_store.as_ref(), &key, loser, later).await,
            None,
            "store conformance: round {round}: the loser must not get the live lease"
        );
        for host in [&host_a, &host_b] {
            expect_fenced(
                host.put(
                    &collection,
                    &key,
                    b"stale".to_vec(),
                    Precondition::At(v1),
                    Some(&old.fence()),
                )
                .await,
                old.token,
                winner.token,
                "a deposed holder's write, from either host",
            );
        }
        let v2 = ok(
            winner_store
                .put(
                    &collection,
                    &key,
                    b"new".to_vec(),
                    Precondition::At(v1),
                    Some(&winner.fence()),
                )
                .await,
            "the winner writes under its lease",
        );
        assert_eq!(
            get(loser_store.as_ref(), &collection, &key)
                .await
                .map(|r| (r.version, r.value)),
            Some((v2, b"new".to_vec())),
            "store conformance: round {round}: the loser must read the winner's write"
        );
        race.keys.push(key);
    }
    race
}
