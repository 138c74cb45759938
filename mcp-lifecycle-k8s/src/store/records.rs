//! Records of the [`super::KubernetesStore`]: one ConfigMap per record.
//!
//! This file owns how a record becomes a ConfigMap and back (labels, the raw
//! collection and key and the per-lease fence tokens in annotations, the
//! value in `binaryData`, the version from `resourceVersion`), and the
//! read-check-write of `get`, `list`, `put` and `delete`: preconditions and
//! fences are checked against what was read, and the write is a
//! compare-and-swap on the `resourceVersion` read (create when nothing was),
//! so a check and its write cannot be split by another writer.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Preconditions};
use mcp_lifecycle::ports::{Fence, Precondition, Record, Version};
use mcp_lifecycle::{Error, Result};

use super::{
    COLLECTION_ANNOTATION, COLLECTION_LABEL, CONFIGMAPS, FENCES_ANNOTATION, KEY_ANNOTATION,
    KubernetesStore, MAX_ATTEMPTS, STORE_LABEL, hash_hex, version_of,
};
use crate::errors;

/// The `binaryData` key holding a record's value.
const VALUE_KEY: &str = "value";

/// The version a record's last write replaced.
const REPLACES_ANNOTATION: &str = "mcp-lifecycle.dev/replaces-version";

/// How many ConfigMaps one list page holds.
const PAGE: u32 = 500;

/// A record as read, with what a compare-and-swap on it needs.
#[derive(Debug)]
pub(super) struct Stored {
    /// The record.
    pub(super) record: Record,
    /// The `resourceVersion` read (the record's version, as the API has it).
    resource_version: String,
    /// The raw collection, from its annotation.
    collection: String,
    /// lease key → the newest token a fenced write to this record carried.
    fences: BTreeMap<String, u64>,
}

/// What a write found in the way when its compare-and-swap failed.
enum Lost {
    /// Another write landed first (409).
    Changed,
    /// The object was deleted meanwhile (404 on replace or delete).
    Deleted,
}

impl KubernetesStore {
    /// The collection's label value.
    fn collection_label(collection: &str) -> String {
        hash_hex(&["collection", collection], 40)
    }

    /// Reads one record (a quorum read).
    pub(super) async fn read_record(&self, collection: &str, key: &str) -> Result<Option<Stored>> {
        let name = self.record_name(collection, key);
        let object = self
            .configmaps()
            .get_opt(&name)
            .await
            .map_err(|e| errors::map(self.call("get", CONFIGMAPS, &name), e))?;
        match object {
            None => Ok(None),
            Some(object) => {
                let stored = decode(&name, object)?;
                if stored.record.key != key || stored.collection != collection {
                    return Err(Error::backend(
                        "kubernetes",
                        format!("reading {collection}/{key} from configmap {name}"),
                        "the ConfigMap holds another record (a hash collision, or it was \
                         edited by hand)",
                    ));
                }
                Ok(Some(stored))
            }
        }
    }

    /// Every record of `collection`, ordered by key (one consistent list,
    /// paged).
    pub(super) async fn list_records(&self, collection: &str) -> Result<Vec<Record>> {
        let selector = format!(
            "{},{COLLECTION_LABEL}={}",
            self.selector(),
            Self::collection_label(collection)
        );
        let mut params = ListParams::default().labels(&selector).limit(PAGE);
        let mut records = Vec::new();
        loop {
            let page = self
                .configmaps()
                .list(&params)
                .await
                .map_err(|e| errors::map(self.call("list", CONFIGMAPS, ""), e))?;
            for object in page.items {
                let name = object.metadata.name.clone().unwrap_or_default();
                let stored = decode(&name, object)?;
                // The label is a hash: skip a colliding collection's records.
                if stored.collection == collection {
                    records.push(stored.record);
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }

    /// The newest token granted for `fence`'s lease, read only when a fence
    /// is given.
    async fn fence_token(&self, fence: Option<&Fence>) -> Result<u64> {
        match fence {
            Some(fence) => self.newest_token(&fence.lease).await,
            None => Ok(0),
        }
    }

    /// Reads the record and (for a fenced write) the lease's newest token,
    /// and checks the fence and then the precondition against them.
    async fn read_and_check(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Option<Stored>> {
        let (current, lease_token) =
            tokio::try_join!(self.read_record(collection, key), self.fence_token(fence))?;
        if let Some(fence) = fence {
            let record_token = current
                .as_ref()
                .and_then(|c| c.fences.get(&fence.lease).copied())
                .unwrap_or(0);
            check_fence(fence, lease_token.max(record_token))?;
        }
        check_precondition(
            collection,
            key,
            current.as_ref().map(|c| c.record.version),
            expect,
        )?;
        Ok(current)
    }

    /// `put`: create when absent, replace at the version read otherwise.
    pub(super) async fn put_record(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version> {
        let name = self.record_name(collection, key);
        let mut object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.inner.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (STORE_LABEL.to_owned(), self.inner.name.clone()),
                    (
                        COLLECTION_LABEL.to_owned(),
                        Self::collection_label(collection),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            binary_data: Some(BTreeMap::from([(VALUE_KEY.to_owned(), ByteString(value))])),
            ..ConfigMap::default()
        };
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read_and_check(collection, key, expect, fence).await?;
            let mut fences = current
                .as_ref()
                .map(|c| c.fences.clone())
                .unwrap_or_default();
            if let Some(fence) = fence {
                let token = fences.entry(fence.lease.clone()).or_insert(0);
                *token = (*token).max(fence.token);
            }
            object.metadata.annotations = Some(annotations(
                collection,
                key,
                &fences,
                current.as_ref().map(|c| c.resource_version.as_str()),
            )?);
            object.metadata.resource_version = current.as_ref().map(|c| c.resource_version.clone());
            let api = self.configmaps();
            let written = match &current {
                None => api
                    .create(&Self::post_params(), &object)
                    .await
                    .map_err(|e| (e, "create")),
                Some(_) => api
                    .replace(&name, &Self::post_params(), &object)
                    .await
                    .map_err(|e| (e, "update")),
            };
            let lost = match written {
                Ok(object) => {
                    return version_of(
                        CONFIGMAPS,
                        &name,
                        object.metadata.resource_version.as_deref(),
                    );
                }
                Err((e, verb)) => match lost(&e, verb) {
                    Some(lost) => lost,
                    None => return Err(errors::map(self.call(verb, CONFIGMAPS, &name), e)),
                },
            };
            match (expect, lost) {
                (Precondition::Any, _) => continue,
                (Precondition::Absent, _) => {
                    return Err(conflict(
                        collection,
                        key,
                        expect,
                        "a record written meanwhile",
                    ));
                }
                (Precondition::At(_), Lost::Changed) => {
                    return Err(conflict(collection, key, expect, "a newer version"));
                }
                (Precondition::At(_), Lost::Deleted) => {
                    return Err(conflict(collection, key, expect, "no record"));
                }
            }
        }
        Err(gave_up(collection, key))
    }

    /// `delete`: a delete whose precondition is the `resourceVersion` read.
    pub(super) async fn delete_record(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let name = self.record_name(collection, key);
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.read_and_check(collection, key, expect, fence).await? else {
                // Any (or Absent) on a missing record: nothing to do.
                return Ok(());
            };
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(current.resource_version.clone()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            let e = match self.configmaps().delete(&name, &params).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match (expect, lost(&e, "delete")) {
                (_, None) => return Err(errors::map(self.call("delete", CONFIGMAPS, &name), e)),
                (Precondition::At(_), Some(Lost::Deleted)) => {
                    return Err(conflict(collection, key, expect, "no record"));
                }
                (Precondition::At(_), Some(Lost::Changed)) => {
                    return Err(conflict(collection, key, expect, "a newer version"));
                }
                (_, Some(Lost::Deleted)) => return Ok(()),
                (_, Some(Lost::Changed)) => continue,
            }
        }
        Err(gave_up(collection, key))
    }
}

/// Whether a failed write (`verb`) lost a race (and how), rather than
/// failed. A 404 on a create is not a race: the namespace is missing.
fn lost(error: &kube::Error, verb: &str) -> Option<Lost> {
    match error {
        kube::Error::Api(status) if status.code == 409 => Some(Lost::Changed),
        kube::Error::Api(status) if status.code == 404 && verb != "create" => Some(Lost::Deleted),
        _ => None,
    }
}

/// The annotations of a record that replaces `replaces` (the version read,
/// if any). That version changes with every write, so no write is a no-op
/// the API server would skip without a new `resourceVersion`: every write
/// gets a new version, as the store contract requires.
fn annotations(
    collection: &str,
    key: &str,
    fences: &BTreeMap<String, u64>,
    replaces: Option<&str>,
) -> Result<BTreeMap<String, String>> {
    let mut annotations = BTreeMap::from([
        (COLLECTION_ANNOTATION.to_owned(), collection.to_owned()),
        (KEY_ANNOTATION.to_owned(), key.to_owned()),
    ]);
    if let Some(version) = replaces {
        annotations.insert(REPLACES_ANNOTATION.to_owned(), version.to_owned());
    }
    if !fences.is_empty() {
        let json = serde_json::to_string(fences)
            .map_err(|e| Error::backend("kubernetes", "encoding fence tokens", e))?;
        annotations.insert(FENCES_ANNOTATION.to_owned(), json);
    }
    Ok(annotations)
}

/// Checks `expect` against the version read (`None`: no record).
fn check_precondition(
    collection: &str,
    key: &str,
    current: Option<Version>,
    expect: Precondition,
) -> Result<()> {
    let found = match (expect, current) {
        (Precondition::Any, _) | (Precondition::Absent, None) => return Ok(()),
        (Precondition::At(want), Some(have)) if want == have => return Ok(()),
        (_, None) => "no record".to_owned(),
        (_, Some(have)) => have.to_string(),
    };
    Err(conflict(collection, key, expect, &found))
}

/// A [`Error::VersionConflict`] for a write that expected `expect`.
fn conflict(collection: &str, key: &str, expect: Precondition, found: &str) -> Error {
    let expected = match expect {
        Precondition::Any => "any version".to_owned(),
        Precondition::Absent => "no record".to_owned(),
        Precondition::At(v) => v.to_string(),
    };
    Error::VersionConflict {
        key: format!("{collection}/{key}"),
        expected,
        found: found.to_owned(),
    }
}

/// Rejects a fence older than `newest`, the newest token granted for its
/// lease (by the Lease, or as seen on the record).
fn check_fence(fence: &Fence, newest: u64) -> Result<()> {
    if fence.token < newest {
        return Err(Error::Fenced {
            lease: fence.lease.clone(),
            token: fence.token,
            current: newest,
        });
    }
    Ok(())
}

/// A write that lost [`MAX_ATTEMPTS`] races in a row.
fn gave_up(collection: &str, key: &str) -> Error {
    Error::unavailable(
        format!("record {collection}/{key}"),
        format!("other writers changed it {MAX_ATTEMPTS} times between a read and a write"),
    )
}

/// A ConfigMap as a record of this store.
fn decode(name: &str, object: ConfigMap) -> Result<Stored> {
    let bad = |what: &str| {
        Error::backend(
            "kubernetes",
            format!("reading configmap {name} as a store record"),
            format!("it has no {what}; it was not written by the Kubernetes store"),
        )
    };
    let version = version_of(
        CONFIGMAPS,
        name,
        object.metadata.resource_version.as_deref(),
    )?;
    let mut annotations = object.metadata.annotations.unwrap_or_default();
    let key = annotations
        .remove(KEY_ANNOTATION)
        .ok_or_else(|| bad("key annotation"))?;
    let collection = annotations
        .remove(COLLECTION_ANNOTATION)
        .ok_or_else(|| bad("collection annotation"))?;
    let fences = match annotations.get(FENCES_ANNOTATION) {
        None => BTreeMap::new(),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            Error::backend(
                "kubernetes",
                format!("reading the fence tokens of configmap {name}"),
                e,
            )
        })?,
    };
    let value = object
        .binary_data
        .and_then(|mut data| data.remove(VALUE_KEY))
        .map(|bytes| bytes.0)
        .unwrap_or_default();
    Ok(Stored {
        record: Record {
            key,
            version,
            value,
        },
        resource_version: object.metadata.resource_version.unwrap_or_default(),
        collection,
        fences,
    })
}
