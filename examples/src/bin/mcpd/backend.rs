//! Builds the [`Lifecycle`] the configuration asks for (runtime backend,
//! store, the manager name its workloads carry) and applies the configured specs at start, idempotently.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use mcp_lifecycle::{
    ApplyOutcome, Lifecycle, LifecycleConfig, LocalOrchestrator, RedbStore, ServerSpec,
};
use mcp_lifecycle_docker::{DockerDistributionResolver, DockerOrchestrator};

use crate::config::{Backend, Config};
use crate::policy::Policy;

/// The lifecycle manager for `config`: its backend, its store.
pub(crate) async fn build(config: &Config) -> anyhow::Result<Lifecycle> {
    let lifecycle_config = LifecycleConfig {
        manager_name: config.manager.clone(),
        ..LifecycleConfig::default()
    };
    let mut builder = Lifecycle::builder().config(lifecycle_config);
    builder = match config.backend {
        Backend::Local => builder.orchestrator(Arc::new(LocalOrchestrator::new())),
        Backend::Docker => {
            let docker = DockerOrchestrator::builder()
                .manager(&config.manager)
                .build()
                .await
                .context("connecting to the Docker engine")?;
            let resolver = DockerDistributionResolver::new(docker.docker().clone());
            builder
                .orchestrator(Arc::new(docker))
                .resolver(Arc::new(resolver))
        }
    };
    if let Some(path) = &config.store {
        let store = RedbStore::open(path)
            .with_context(|| format!("opening the store {}", path.display()))?;
        builder = builder.store(Arc::new(store));
    }
    builder
        .build()
        .await
        .context("starting the lifecycle manager")
}

/// The spec files at `path`: the file itself, or the `*.yaml`, `*.yml` and
/// `*.json` files of a directory, sorted by name.
pub(crate) fn spec_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let file = entry
            .with_context(|| format!("listing {}", path.display()))?
            .path();
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if matches!(ext, "yaml" | "yml" | "json") && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one spec file (JSON by extension, YAML otherwise).
pub(crate) fn read_spec(file: &Path) -> anyhow::Result<ServerSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec = if file.extension().is_some_and(|e| e == "json") {
        ServerSpec::from_json(&text)
    } else {
        ServerSpec::from_yaml(&text)
    };
    spec.with_context(|| format!("in {}", file.display()))
}

/// Applies every configured spec (the policy admits each first). Unchanged
/// specs are no-ops, so a restart re-applies safely. Stops at the first error.
pub(crate) async fn apply_configured(
    lifecycle: &Lifecycle,
    policy: &Policy,
    path: &Path,
) -> anyhow::Result<()> {
    for file in spec_files(path)? {
        let spec = read_spec(&file)?;
        policy
            .admit(&spec)
            .map_err(mcp_lifecycle::Error::from)
            .with_context(|| format!("in {}", file.display()))?;
        let name = spec.name.clone();
        let outcome = lifecycle
            .apply(spec)
            .await
            .with_context(|| format!("applying {}", file.display()))?;
        let outcome = match outcome {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Updated => "updated",
            _ => "unchanged",
        };
        tracing::info!(server = %name, file = %file.display(), outcome, "applied a configured spec");
    }
    Ok(())
}
