//! Making sure an instance's image is present: inspect it, and pull it (with
//! registry credentials from the local config) only when it is missing.
//!
//! This module owns the pull and its error, which names the image and the
//! instance so a failed start says what is wrong. It must not retry: a failed
//! pull fails the start, and the controller's backoff decides when to try
//! again (so a missing image never becomes a busy loop of pulls).

use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;
use mcp_lifecycle::{InstanceId, Result};

use crate::client::{engine_error, is_not_found};
use crate::credentials;
use crate::reference::ImageRef;

/// Pulls images on demand and counts the pulls.
pub(crate) struct Images {
    pulls: AtomicU64,
    use_credentials: bool,
}

impl Images {
    pub(crate) fn new(use_credentials: bool) -> Self {
        Images {
            pulls: AtomicU64::new(0),
            use_credentials,
        }
    }

    /// How many pulls were started.
    pub(crate) fn pulls(&self) -> u64 {
        self.pulls.load(Ordering::Relaxed)
    }

    /// Returns once `image` is present, pulling it if it is not.
    pub(crate) async fn ensure(
        &self,
        docker: &Docker,
        image: &str,
        instance: &InstanceId,
        server: &str,
    ) -> Result<()> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(engine_error(
                    format!("inspecting image {image} for instance {instance}"),
                    e,
                ));
            }
        }
        self.pull(docker, image, instance, server).await
    }

    /// Pulls `image` (tagged `:latest` if it names no tag or digest).
    pub(crate) async fn pull(
        &self,
        docker: &Docker,
        image: &str,
        instance: &InstanceId,
        server: &str,
    ) -> Result<()> {
        self.pulls.fetch_add(1, Ordering::Relaxed);
        let reference = ImageRef::pull_reference(image);
        let credentials = if self.use_credentials {
            credentials::for_image(&reference).await
        } else {
            None
        };
        tracing::info!(server, instance = %instance, image = %reference, "pulling image");
        let options = CreateImageOptionsBuilder::default()
            .from_image(&reference)
            .build();
        let mut progress = docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                tracing::warn!(server, instance = %instance, image = %reference, error = %e, "pull failed");
                return Err(engine_error(
                    format!("pulling image {image} for instance {instance}"),
                    e,
                ));
            }
        }
        tracing::info!(server, instance = %instance, image = %reference, "pulled image");
        Ok(())
    }
}
