//! The dedicated network every container joins, created if missing.
//!
//! This module owns finding or creating that network and remembering its id.
//! Older engines (API < 1.44) accept two networks of one name when two
//! creates race, so after creating it lists again and settles on the oldest
//! id (every racer picks the same one) and removes the others. It must not
//! remove a network it did not label, nor touch containers.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use mcp_lifecycle::Result;

use crate::client::{engine_error, is_conflict};

/// The label put on networks this crate creates.
pub(crate) const NETWORK_LABEL: &str = "mcp-lifecycle.dev/network";

/// The network's name and, once known, its id.
pub(crate) struct Network {
    name: String,
    id: Mutex<Option<String>>,
    creating: tokio::sync::Mutex<()>,
}

impl Network {
    pub(crate) fn new(name: String) -> Self {
        Network {
            name,
            id: Mutex::new(None),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// The network's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn cached(&self) -> Option<String> {
        self.id.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the id (the network was removed behind our back).
    pub(crate) fn invalidate(&self) {
        *self.id.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The network's id, creating the network if it is missing.
    pub(crate) async fn ensure(&self, docker: &Docker) -> Result<String> {
        if let Some(id) = self.cached() {
            return Ok(id);
        }
        let _one_at_a_time = self.creating.lock().await;
        if let Some(id) = self.cached() {
            return Ok(id);
        }
        let id = match self.find(docker).await? {
            Some(id) => id,
            None => {
                self.create(docker).await?;
                self.find(docker).await?.ok_or_else(|| {
                    mcp_lifecycle::Error::unavailable(
                        format!("docker network {}", self.name),
                        "it was created but is not listed; is something removing it?",
                    )
                })?
            }
        };
        *self.id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        Ok(id)
    }

    /// The oldest network of this exact name; removes younger duplicates we made.
    async fn find(&self, docker: &Docker) -> Result<Option<String>> {
        let filters = HashMap::from([("name", vec![self.name.as_str()])]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = docker
            .list_networks(Some(options))
            .await
            .map_err(|e| engine_error(format!("listing network {}", self.name), e))?;
        // The name filter matches substrings; keep exact matches.
        let mut matches: Vec<_> = listed
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(self.name.as_str()))
            .filter_map(|n| {
                let id = n.id?;
                let ours = n.labels.is_some_and(|l| l.contains_key(NETWORK_LABEL));
                Some((n.created.unwrap_or_default(), id, ours))
            })
            .collect();
        matches.sort();
        let mut matches = matches.into_iter();
        let Some((_, keep, _)) = matches.next() else {
            return Ok(None);
        };
        for (_, duplicate, ours) in matches {
            if ours {
                tracing::info!(network = %self.name, %duplicate, "removing a duplicate network from a create race");
                if let Err(error) = docker.remove_network(&duplicate).await {
                    tracing::debug!(network = %self.name, %duplicate, %error, "could not remove duplicate network");
                }
            }
        }
        Ok(Some(keep))
    }

    async fn create(&self, docker: &Docker) -> Result<()> {
        let request = NetworkCreateRequest {
            name: self.name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(HashMap::from([(
                NETWORK_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            ..NetworkCreateRequest::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %self.name, "created the container network");
                Ok(())
            }
            // Another host created it first.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(engine_error(format!("creating network {}", self.name), e)),
        }
    }
}
