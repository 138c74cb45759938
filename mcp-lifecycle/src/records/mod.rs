//! The records the controller keeps in the [`crate::Store`], and typed access
//! to them. Everything a restarted host needs to resume lives here.
//!
//! Layer: data, below the controller and the facade. Typed records are
//! written once here, above the store port.

pub mod freshness;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::ports::{Fence, InstanceId, Precondition, Store, Version};
use crate::spec::{ServerSpec, Source};
use crate::state::InstanceState;
use crate::time::Timestamp;

/// Collection of [`ServerRecord`]s, keyed by server name.
pub const SERVERS: &str = "servers";
/// Collection of [`InstanceRecord`]s, keyed by instance id.
pub const INSTANCES: &str = "instances";

/// A server as the host asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The validated spec. `spec.replicas` is the count to run when started.
    pub spec: ServerSpec,
    /// Stopped by the host: desired is 0 until started again.
    pub stopped: bool,
    /// The ordinal the next new instance gets.
    pub next_ordinal: u64,
    /// A digest-pinned image being rolled out in place of the spec's tag.
    pub rollout_image: Option<String>,
    /// When the spec was last applied.
    pub applied_at: Timestamp,
    /// Deleted by the host; the record goes once every workload is removed,
    /// so a deletion interrupted by a host restart is finished by the next host.
    #[serde(default)]
    pub deleting: bool,
}

impl ServerRecord {
    /// How many instances should be ready now.
    pub fn desired(&self) -> u32 {
        if self.stopped || self.deleting {
            0
        } else {
            self.spec.replicas
        }
    }

    /// The source new instances run: the rollout digest if one is set.
    pub fn effective_source(&self) -> Source {
        match (&self.spec.source, &self.rollout_image) {
            (Source::Image(_), Some(pinned)) => Source::Image(pinned.clone()),
            (source, _) => source.clone(),
        }
    }

    /// The workload hash of what new instances run.
    pub fn effective_hash(&self) -> String {
        match &self.rollout_image {
            None => self.spec.workload_hash(),
            Some(_) => {
                let mut spec = self.spec.clone();
                spec.source = self.effective_source();
                spec.workload_hash()
            }
        }
    }
}

/// One instance as the controller tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Its id.
    pub id: InstanceId,
    /// Its server.
    pub server: String,
    /// Its creation order within the server.
    pub ordinal: u64,
    /// The workload hash it was created from.
    pub spec_hash: String,
    /// The source it runs (a pinned image during rollouts).
    pub source: Source,
    /// Its lifecycle state.
    pub state: InstanceState,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A record with the version it was read or written at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Versioned<T> {
    /// The value.
    pub(crate) value: T,
    /// Its version in the store; `None` if not written yet.
    pub(crate) version: Option<Version>,
}

fn decode<T: DeserializeOwned>(collection: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::backend("store", format!("decoding {collection}/{key}"), e))
}

/// Reads every record of a collection.
pub(crate) async fn load_all<T: DeserializeOwned>(
    store: &dyn Store,
    collection: &str,
) -> Result<Vec<(String, Versioned<T>)>> {
    let mut out = Vec::new();
    for record in store.list(collection).await? {
        let value = decode(collection, &record.key, &record.value)?;
        out.push((
            record.key,
            Versioned {
                value,
                version: Some(record.version),
            },
        ));
    }
    Ok(out)
}

/// Reads one record.
pub(crate) async fn load<T: DeserializeOwned>(
    store: &dyn Store,
    collection: &str,
    key: &str,
) -> Result<Option<Versioned<T>>> {
    match store.get(collection, key).await? {
        None => Ok(None),
        Some(record) => Ok(Some(Versioned {
            value: decode(collection, key, &record.value)?,
            version: Some(record.version),
        })),
    }
}

/// Writes a record with compare-and-swap against the version it was read at,
/// and updates that version.
pub(crate) async fn save<T: Serialize>(
    store: &dyn Store,
    collection: &str,
    key: &str,
    record: &mut Versioned<T>,
    fence: Option<&Fence>,
) -> Result<()> {
    let bytes = serde_json::to_vec(&record.value)
        .map_err(|e| Error::backend("store", format!("encoding {collection}/{key}"), e))?;
    let expect = match record.version {
        Some(v) => Precondition::At(v),
        None => Precondition::Absent,
    };
    record.version = Some(store.put(collection, key, bytes, expect, fence).await?);
    Ok(())
}

/// Deletes a record (whatever its version).
pub(crate) async fn remove(
    store: &dyn Store,
    collection: &str,
    key: &str,
    fence: Option<&Fence>,
) -> Result<()> {
    store
        .delete(collection, key, Precondition::Any, fence)
        .await
}
