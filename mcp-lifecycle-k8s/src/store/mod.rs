//! [`KubernetesStore`]: the core's [`Store`] port on the Kubernetes API, so
//! host replicas share records and leases through the cluster with no
//! database of their own.
//!
//! This file owns the store's handle and builder, the checks `build()`
//! makes, and how object names, labels and annotations are derived from a
//! store name, a collection and a key. Records live in `records` (one
//! ConfigMap each), leases in `leases` (one coordination.k8s.io Lease each).

mod leases;
mod records;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease as KubeLease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use mcp_lifecycle::ports::{Fence, Lease, Precondition, Record, Store, Version};
use mcp_lifecycle::{Error, Result, Timestamp};
use sha2::{Digest as _, Sha256};

use crate::errors::{self, Call};

/// The label naming the store an object belongs to (its value is the
/// store's name): `kubectl get cm,leases -l mcp-lifecycle.dev/store=NAME`.
pub const STORE_LABEL: &str = "mcp-lifecycle.dev/store";

/// The label grouping a store's records by collection. Its value is a hash
/// of the collection (label values are short and restricted); the raw
/// collection is in the `mcp-lifecycle.dev/collection` annotation.
pub(crate) const COLLECTION_LABEL: &str = "mcp-lifecycle.dev/store-collection";
/// The raw collection of a record.
pub(crate) const COLLECTION_ANNOTATION: &str = "mcp-lifecycle.dev/collection";
/// The raw key of a record.
pub(crate) const KEY_ANNOTATION: &str = "mcp-lifecycle.dev/key";
/// The newest fencing token each lease has written a record with (JSON map).
pub(crate) const FENCES_ANNOTATION: &str = "mcp-lifecycle.dev/fences";
/// The raw key of a lease.
pub(crate) const LEASE_KEY_ANNOTATION: &str = "mcp-lifecycle.dev/lease";
/// The newest fencing token granted for a lease (kept after release).
pub(crate) const TOKEN_ANNOTATION: &str = "mcp-lifecycle.dev/token";
/// When the current holding lapses, in milliseconds since the epoch, by the
/// callers' clocks (absent while nobody holds the lease).
pub(crate) const EXPIRES_ANNOTATION: &str = "mcp-lifecycle.dev/expires-at-ms";

/// The field manager of every write.
const FIELD_MANAGER: &str = "mcp-lifecycle";

/// How often a read-check-write is retried when another writer's write
/// lands between its read and its write (only where the caller asked for no
/// particular version: `Precondition::Any`, lease changes).
pub(crate) const MAX_ATTEMPTS: usize = 16;

/// The RBAC resource name of Leases, for error messages.
pub(crate) const LEASES: &str = "leases.coordination.k8s.io";
/// The RBAC resource name of ConfigMaps, for error messages.
pub(crate) const CONFIGMAPS: &str = "configmaps";

/// A [`Store`] kept in the Kubernetes API: several host replicas pointed at
/// one namespace and store name coordinate through the cluster, with no
/// extra database.
///
/// - **Records** are ConfigMaps, one per record, named from a hash of the
///   store name, collection and key (with a readable prefix), labelled
///   `mcp-lifecycle.dev/store=NAME` and with a hash of the collection; the
///   raw collection and key are annotations and the value is `binaryData`.
///   A record's [`Version`] is its `resourceVersion`, an etcd revision,
///   which is cluster-wide and only grows. `Precondition::At` is a replace
///   carrying that `resourceVersion`, `Absent` a create, and a delete
///   carries it as a precondition, so every check-and-write is one
///   compare-and-swap in the API server. A record is at most about 1 MiB
///   (the API server's object limit).
/// - **Leases** are coordination.k8s.io/v1 Leases (holder, duration,
///   acquire and renew time set for `kubectl get leases`), with the fencing
///   token and the expiry — computed from the `now` each caller passes, not
///   the API server's clock — in annotations. Every change is a
///   compare-and-swap on the Lease's `resourceVersion`, so two hosts racing
///   for an expired lease cannot both win. A Lease is never deleted: it
///   keeps the newest token after a release, so tokens grow across holders.
///   Do not delete them by hand either: a re-created Lease counts its
///   tokens from 1 again, and records a newer holder wrote keep rejecting
///   the smaller tokens until the count passes theirs.
/// - **Fencing.** Kubernetes has no multi-object transactions, so a fenced
///   write cannot check the Lease and write the record atomically. A fenced
///   write reads the Lease's newest token and is rejected with
///   [`Error::Fenced`] if a newer one was granted; it also records its
///   token on the record (the `mcp-lifecycle.dev/fences` annotation), and
///   the compare-and-swap of every later write to that record checks it, so
///   once a newer holder has written a record, no write with an older token
///   lands on it. What remains is one API round trip: a deposed holder's
///   write already in flight when the lease changes hands (it read the
///   Lease before the grant) can still land, if the new holder has not
///   written that record yet. That is the timing assumption client-go's
///   leader election makes too; keep lease TTLs well above API latency.
///
/// Built with [`KubernetesStore::builder`]; cheap to clone. Hosts that
/// share state build one each, with the same namespace and name:
///
/// ```no_run
/// # async fn run(client: kube::Client) -> mcp_lifecycle::Result<()> {
/// use std::sync::Arc;
/// use mcp_lifecycle_k8s::KubernetesStore;
///
/// let store = KubernetesStore::builder()
///     .client(client)
///     .namespace("mcp")
///     .name("gateway")
///     .build()
///     .await?;
/// // …and hand it to the Lifecycle with leader election on.
/// let builder = mcp_lifecycle::Lifecycle::builder().store(Arc::new(store));
/// # let _ = builder; Ok(()) }
/// ```
#[derive(Clone)]
pub struct KubernetesStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for KubernetesStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesStore")
            .field("namespace", &self.inner.namespace)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KubernetesStore`].
#[derive(Default)]
pub struct KubernetesStoreBuilder {
    client: Option<Client>,
    namespace: Option<String>,
    name: Option<String>,
}

impl std::fmt::Debug for KubernetesStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesStoreBuilder")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KubernetesStoreBuilder {
    /// A client the host built itself. Without one, the client comes from
    /// the environment: `KUBECONFIG` or `~/.kube/config`, or the pod's
    /// service account inside a cluster.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The namespace records and leases live in. Default: `default`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The store's name: hosts that share state use the same name, and
    /// several stores can share a namespace under different names. It is a
    /// label value (at most 63 letters, digits, `-`, `_` or `.`, starting
    /// and ending with a letter or digit). Default: `mcp-lifecycle`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Connects and checks that the namespace exists and that the identity
    /// may list ConfigMaps and Leases there. A missing namespace is
    /// `Unavailable`; a denied list is a `Backend` error whose source is
    /// [`crate::Forbidden`], naming the verb and resource to grant.
    pub async fn build(self) -> Result<KubernetesStore> {
        let name = self.name.unwrap_or_else(|| "mcp-lifecycle".to_owned());
        if let Err(reason) = check_label_value(&name) {
            return Err(Error::invalid("store name", format!("`{name}` {reason}")));
        }
        let namespace = self.namespace.unwrap_or_else(|| "default".to_owned());
        let client = match self.client {
            Some(client) => client,
            None => Client::try_default()
                .await
                .map_err(|e| Error::invalid("kubeconfig", e.to_string()))?,
        };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        match namespaces.get(&namespace).await {
            Ok(_) => {}
            Err(e) if errors::is_not_found(&e) => {
                return Err(Error::unavailable(
                    format!("the Kubernetes store `{name}`"),
                    format!("namespace `{namespace}` does not exist; create it first"),
                ));
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                // Reading namespaces is cluster-wide and optional.
                tracing::debug!(%namespace, "may not read the namespace; not checked");
            }
            Err(e) => {
                return Err(errors::map(
                    Call {
                        verb: "get",
                        resource: "namespaces",
                        name: &namespace,
                        namespace: &namespace,
                    },
                    e,
                ));
            }
        }
        let store = KubernetesStore {
            inner: Arc::new(Inner {
                client,
                namespace,
                name,
            }),
        };
        let probe = ListParams::default().labels(&store.selector()).limit(1);
        store
            .configmaps()
            .list_metadata(&probe)
            .await
            .map_err(|e| errors::map(store.call("list", CONFIGMAPS, ""), e))?;
        store
            .leases()
            .list_metadata(&probe)
            .await
            .map_err(|e| errors::map(store.call("list", LEASES, ""), e))?;
        Ok(store)
    }
}

impl KubernetesStore {
    /// A builder: set the client, namespace and name, then `build()`.
    pub fn builder() -> KubernetesStoreBuilder {
        KubernetesStoreBuilder::default()
    }

    /// The namespace records and leases live in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The store's name (the value of [`STORE_LABEL`] on its objects).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.inner.client.clone(), &self.inner.namespace)
    }

    fn leases(&self) -> Api<KubeLease> {
        Api::namespaced(self.inner.client.clone(), &self.inner.namespace)
    }

    fn call<'a>(&'a self, verb: &'a str, resource: &'a str, name: &'a str) -> Call<'a> {
        Call {
            verb,
            resource,
            name,
            namespace: &self.inner.namespace,
        }
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        }
    }

    /// The label selector of every object of this store.
    fn selector(&self) -> String {
        format!("{STORE_LABEL}={}", self.inner.name)
    }

    /// The ConfigMap name of a record.
    fn record_name(&self, collection: &str, key: &str) -> String {
        object_name(
            &[readable(collection, 12), readable(key, 12)],
            &hash_hex(&["record", &self.inner.name, collection, key], 32),
        )
    }

    /// The Lease name of a lease key.
    fn lease_name(&self, key: &str) -> String {
        object_name(
            &[readable(key, 26)],
            &hash_hex(&["lease", &self.inner.name, key], 32),
        )
    }
}

/// `mcp-PART-PART-HASH`, skipping empty parts: a DNS-1123 label (so also a
/// subdomain) of at most 63 characters with the part lengths used here.
fn object_name(parts: &[String], hash: &str) -> String {
    let mut name = "mcp-".to_owned();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        name.push_str(part);
        name.push('-');
    }
    name.push_str(hash);
    name
}

/// The first `len` hex digits of SHA-256 over `parts`, each length-prefixed
/// so no two different part lists hash the same input.
pub(crate) fn hash_hex(parts: &[&str], len: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(len);
    hex
}

/// At most `max` characters of `s` a DNS name may hold (lowercase letters
/// and digits, other runs as one `-`), for a readable name prefix.
fn readable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= max {
            break;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Why `value` is not a valid label value, if it is not.
fn check_label_value(value: &str) -> std::result::Result<(), &'static str> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.is_empty() || value.len() > 63 {
        return Err("must be 1 to 63 characters (it is a label value)");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may hold only letters, digits, `-`, `_` and `.` (it is a label value)");
    }
    if !edge_ok(value.chars().next()) || !edge_ok(value.chars().last()) {
        return Err("must start and end with a letter or digit (it is a label value)");
    }
    Ok(())
}

/// An object's `resourceVersion` as a [`Version`]. etcd revisions are
/// numbers; an API server that hands out anything else cannot back this
/// store.
pub(crate) fn version_of(
    resource: &str,
    name: &str,
    resource_version: Option<&str>,
) -> Result<Version> {
    let rv = resource_version.unwrap_or_default();
    rv.parse::<u64>().map(Version).map_err(|_| {
        Error::backend(
            "kubernetes",
            format!("reading the version of {resource} {name}"),
            format!(
                "resourceVersion {rv:?} is not a number; the Kubernetes store needs an \
                 API server whose resource versions are etcd revisions"
            ),
        )
    })
}

#[async_trait]
impl Store for KubernetesStore {
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        Ok(self
            .read_record(collection, key)
            .await?
            .map(|stored| stored.record))
    }

    async fn list(&self, collection: &str) -> Result<Vec<Record>> {
        self.list_records(collection).await
    }

    async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version> {
        self.put_record(collection, key, value, expect, fence).await
    }

    async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()> {
        self.delete_record(collection, key, expect, fence).await
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        self.acquire(key, holder, ttl, now).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease> {
        self.renew(lease, ttl, now).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.release(lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn names_are_dns_labels_and_differ_by_store_collection_and_key() {
        let long = "Ünïcode/and SPACES/".repeat(20);
        for (c, k) in [
            ("servers", "github"),
            ("", ""),
            ("--", "--"),
            (long.as_str(), long.as_str()),
            ("freshness", "a/b"),
        ] {
            let name = object_name(
                &[readable(c, 12), readable(k, 12)],
                &hash_hex(&["record", "s", c, k], 32),
            );
            assert!(is_dns_label(&name), "{name}");
            let name = object_name(&[readable(c, 26)], &hash_hex(&["lease", "s", c], 32));
            assert!(is_dns_label(&name), "{name}");
        }
        assert_eq!(readable("Freshness/GitHub--x", 32), "freshness-github-x");
        assert_ne!(
            hash_hex(&["record", "s", "ab", "c"], 32),
            hash_hex(&["record", "s", "a", "bc"], 32)
        );
        assert_ne!(
            hash_hex(&["record", "s1", "a", "b"], 32),
            hash_hex(&["record", "s2", "a", "b"], 32)
        );
        assert_eq!(hash_hex(&["x"], 40).len(), 40);
    }

    #[test]
    fn store_names_must_be_label_values() {
        assert!(check_label_value("mcp-lifecycle").is_ok());
        assert!(check_label_value("A.b_c-1").is_ok());
        for bad in ["", "-a", "a-", "a b", "é", &"a".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_are_numeric_resource_versions() {
        assert_eq!(
            version_of("configmaps", "x", Some("12345")).unwrap(),
            Version(12345)
        );
        for bad in [None, Some(""), Some("abc"), Some("-1")] {
            let error = version_of("configmaps", "x", bad).unwrap_err();
            assert_eq!(error.kind(), mcp_lifecycle::ErrorKind::Backend);
            assert!(
                std::error::Error::source(&error)
                    .is_some_and(|s| s.to_string().contains("not a number")),
                "{error}"
            );
        }
    }
}
