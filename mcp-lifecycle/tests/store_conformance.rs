//! Store conformance and durability tests (features `testing` and `redb`,
//! enforced by `required-features` in Cargo.toml rather than a silent cfg).
//!
//! Runs the conformance suite on both stores, checks that a `RedbStore`
//! keeps everything across a drop and reopen, and that a writer killed with
//! SIGKILL mid-stream loses no acknowledged write. These tests own nothing in
//! the library; they must not depend on store internals beyond the file path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mcp_lifecycle::ports::{Precondition, Store, Version};
use mcp_lifecycle::testing::store_conformance;
use mcp_lifecycle::{Error, InMemoryStore, RedbStore, Timestamp};

const TTL: Duration = Duration::from_secs(30);

/// Tells [`crash_child_writer`] which database to write to. Set only by
/// [`redb_loses_no_acknowledged_write_when_killed`] on the child it spawns.
const CHILD_DB_ENV: &str = "MCP_LIFECYCLE_STORE_CRASH_CHILD_DB";
/// The prefix of each acknowledgement line the child prints.
const ACK: &str = "ACK";
/// Keys the child cycles through.
const CHILD_KEYS: u64 = 16;

#[tokio::test]
async fn in_memory_store_passes_conformance() {
    let store = InMemoryStore::new();
    store_conformance::run_all(&store).await;
    store_conformance::concurrent_cas_increments_spawned(Arc::new(store), 8, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_store_passes_concurrency_on_threads() {
    store_conformance::concurrent_cas_increments_spawned(Arc::new(InMemoryStore::new()), 8, 200)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_race_for_lapsed_leases_on_the_in_memory_store() {
    // One store, two handles: the race is decided inside the store.
    let store: Arc<dyn mcp_lifecycle::Store> = Arc::new(InMemoryStore::new());
    let race = store_conformance::two_hosts_race_for_lapsed_leases(store.clone(), store, 20).await;
    assert_eq!(race.keys.len(), 20);
    assert_eq!(race.wins.values().sum::<u32>(), 20, "{:?}", race.wins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    store_conformance::run_all(&store).await;
    store_conformance::concurrent_cas_increments_spawned(Arc::new(store), 8, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_passes_conformance_twice_on_one_file() {
    // Running the suite again on a reopened, non-empty store must still pass:
    // checks pick fresh names and assume nothing about version numbers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    store_conformance::run_all(&RedbStore::open(&path).unwrap()).await;
    store_conformance::run_all(&RedbStore::open(&path).unwrap()).await;
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");

    let store = RedbStore::open(&path).unwrap();
    let va = store
        .put(
            "servers",
            "a",
            b"alpha".to_vec(),
            Precondition::Absent,
            None,
        )
        .await
        .unwrap();
    let vb = store
        .put("servers", "b", b"beta".to_vec(), Precondition::Absent, None)
        .await
        .unwrap();
    let gone = store
        .put("servers", "gone", b"x".to_vec(), Precondition::Absent, None)
        .await
        .unwrap();
    store
        .delete("servers", "gone", Precondition::At(gone), None)
        .await
        .unwrap();
    // A lease that changed hands and was released: its max token must survive.
    let old = store
        .acquire_lease("fenced", "old", TTL, t(0))
        .await
        .unwrap()
        .unwrap();
    let newer = store
        .acquire_lease(
            "fenced",
            "new",
            TTL,
            old.expires_at + Duration::from_secs(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(newer.token > old.token);
    store.release_lease(&newer).await.unwrap();
    // A lease that is live at t(0): it must still be held after reopen.
    let live = store
        .acquire_lease("live", "holder", TTL, t(0))
        .await
        .unwrap()
        .unwrap();
    let max_before = va.max(vb).max(gone);
    drop(store);

    let store = RedbStore::open(&path).unwrap();
    let listed = store.list("servers").await.unwrap();
    let got: Vec<(&str, Version, &[u8])> = listed
        .iter()
        .map(|r| (r.key.as_str(), r.version, r.value.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![("a", va, &b"alpha"[..]), ("b", vb, &b"beta"[..])],
        "records and versions must survive a reopen, and the delete too"
    );

    // The live lease is still held, and its holder still renews with its token.
    assert_eq!(
        store
            .acquire_lease("live", "other", TTL, t(1))
            .await
            .unwrap(),
        None
    );
    let renewed = store.renew_lease(&live, TTL, t(2)).await.unwrap();
    assert_eq!(renewed.token, live.token);

    // Fencing survived: the old token is still rejected.
    let err = store
        .put(
            "servers",
            "a",
            b"late".to_vec(),
            Precondition::Any,
            Some(&old.fence()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fenced { current, .. } if current == newer.token),
        "{err}"
    );
    // The next grant continues above the highest token ever granted.
    let next = store
        .acquire_lease("fenced", "third", TTL, t(10_000))
        .await
        .unwrap()
        .unwrap();
    assert!(next.token > newer.token);

    // The store-wide revision survived: new versions are larger than any before,
    // including the deleted record's.
    let vc = store
        .put(
            "servers",
            "gone",
            b"again".to_vec(),
            Precondition::Absent,
            None,
        )
        .await
        .unwrap();
    assert!(vc > max_before, "{vc} must exceed {max_before}");
    let va2 = store
        .put(
            "servers",
            "a",
            b"alpha2".to_vec(),
            Precondition::At(va),
            None,
        )
        .await
        .unwrap();
    assert!(va2 > vc);
}

/// The child half of [`redb_loses_no_acknowledged_write_when_killed`].
///
/// In a normal test run `CHILD_DB_ENV` is absent and this test returns at
/// once, doing nothing. When the parent re-executes this test binary with the
/// variable set, it writes to that database in a loop and prints
/// `ACK <key> <version> <seq>` (flushed) after each write the store
/// acknowledged, until it is killed. It stops by itself after a bound, so an
/// orphan cannot run forever.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = RedbStore::open(&path).unwrap();
        let mut out = std::io::stdout().lock();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut seq: u64 = 0;
        while std::time::Instant::now() < deadline {
            let key = format!("k{}", seq % CHILD_KEYS);
            let version = store
                .put(
                    "crash",
                    &key,
                    seq.to_string().into_bytes(),
                    Precondition::Any,
                    None,
                )
                .await
                .unwrap();
            if seq.is_multiple_of(7) {
                // Exercise lease writes too; the result does not matter.
                store
                    .acquire_lease("crash-lease", "child", TTL, Timestamp::now_system())
                    .await
                    .unwrap();
            }
            writeln!(out, "{ACK} {key} {} {seq}", version.0).unwrap();
            out.flush().unwrap();
            seq += 1;
        }
    });
}

/// Reads ACK lines from the child until `want` of them arrived (or the child
/// closed stdout), returning the latest acknowledged (version, seq) per key
/// and how many ACKs were read.
fn read_acks(
    reader: &mut impl BufRead,
    want: usize,
) -> (std::collections::BTreeMap<String, (u64, u64)>, usize) {
    let mut acked = std::collections::BTreeMap::new();
    let mut count = 0;
    let mut line = String::new();
    while count < want {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let mut parts = line.split_whitespace();
        if parts.next() != Some(ACK) {
            continue; // libtest chatter such as "running 1 test"
        }
        let key = parts.next().unwrap().to_owned();
        let version: u64 = parts.next().unwrap().parse().unwrap();
        let seq: u64 = parts.next().unwrap().parse().unwrap();
        acked.insert(key, (version, seq));
        count += 1;
    }
    (acked, count)
}

#[test]
fn redb_loses_no_acknowledged_write_when_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    for round in 0..2u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let want = 300;
        let (acked, count) = read_acks(&mut reader, want);
        // SIGKILL on Unix: no destructors, no flush, possibly mid-commit.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            count, want,
            "round {round}: the child stopped after {count} acknowledged writes ({status})"
        );

        rt.block_on(verify_after_crash(&path, &acked, round));
    }
}

async fn verify_after_crash(
    path: &Path,
    acked: &std::collections::BTreeMap<String, (u64, u64)>,
    round: u32,
) {
    let store = RedbStore::open(path).unwrap();
    let mut max_seen = 0;
    for (key, &(version, seq)) in acked {
        let rec = store
            .get("crash", key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: acknowledged write to {key} was lost"));
        assert!(
            rec.version.0 >= version,
            "round {round}: {key} is at version {} but version {version} was acknowledged",
            rec.version.0
        );
        let stored_seq: u64 = std::str::from_utf8(&rec.value).unwrap().parse().unwrap();
        if rec.version.0 == version {
            assert_eq!(
                stored_seq, seq,
                "round {round}: {key} holds the wrong value"
            );
        } else {
            assert!(stored_seq > seq, "round {round}: {key} went backwards");
        }
        max_seen = max_seen.max(rec.version.0);
    }
    // The database accepts new writes, above every version that survived.
    let v = store
        .put("crash", "after", b"ok".to_vec(), Precondition::Any, None)
        .await
        .unwrap();
    assert!(
        v.0 > max_seen,
        "round {round}: new version {v} must exceed {max_seen}"
    );
    let listed = store.list("crash").await.unwrap();
    assert!(listed.len() >= acked.len());
}
