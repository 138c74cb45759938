//! Builds the [`Lifecycle`] the configuration asks for (runtime backend,
//! store, image resolver and update-check settings, the manager name its
//! workloads carry) and applies the configured specs at start, idempotently.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use mcp_lifecycle::{
    ApplyOutcome, InMemoryStore, Lifecycle, LifecycleConfig, LocalOrchestrator, RedbStore,
    RegistryResolver, ServerSpec,
};
use mcp_lifecycle_docker::{DockerDistributionResolver, DockerOrchestrator};
use mcp_lifecycle_k8s::{
    KubernetesConfig, KubernetesOrchestrator, KubernetesStore, PodAccess, PullSecretResolver,
    ServiceExposure,
};
use mcp_lifecycle_postgres::PostgresStore;

use crate::config::{
    Backend, Config, ExposureSetting, KubernetesSettings, PodAccessSetting, ResolverSetting,
    StoreChoice,
};
use crate::policy::Policy;

/// The lifecycle manager for `config`: its backend, its store, its resolver.
pub(crate) async fn build(config: &Config) -> anyhow::Result<Lifecycle> {
    let mut lifecycle_config = LifecycleConfig {
        manager_name: config.manager.clone(),
        // Several mcpd on one shared store act only while they lead.
        leader_election: config
            .store
            .is_shared()
            .then(mcp_lifecycle::LeaderElection::default),
        ..LifecycleConfig::default()
    };
    if let Some(timeout) = config.registry.timeout {
        lifecycle_config.resolve_timeout = timeout;
    }
    if let Some(interval) = config.registry.check_interval {
        let floor = lifecycle_config.freshness.floor;
        if interval < floor {
            bail!(
                "registry.check_interval: {} is below the floor of {} (checks that often \
                 spend registries' rate limits)",
                humantime::format_duration(interval),
                humantime::format_duration(floor)
            );
        }
        lifecycle_config.freshness.interval = interval;
    }
    let mut builder = Lifecycle::builder().config(lifecycle_config);
    let mut kubernetes = None;
    builder = match config.backend {
        Backend::Local => builder.orchestrator(Arc::new(LocalOrchestrator::new())),
        Backend::Docker => {
            let docker = DockerOrchestrator::builder()
                .manager(&config.manager)
                .build()
                .await
                .context("connecting to the Docker engine")?;
            let builder = match config.registry.resolver {
                ResolverSetting::Engine => {
                    let mut resolver = DockerDistributionResolver::new(docker.docker().clone());
                    if let Some(timeout) = config.registry.timeout {
                        resolver = resolver.with_timeout(timeout);
                    }
                    builder.resolver(Arc::new(resolver))
                }
                ResolverSetting::Direct => builder.resolver(Arc::new(direct_resolver(config))),
            };
            builder.orchestrator(Arc::new(docker))
        }
        Backend::Kubernetes => {
            let settings = kubernetes_config(&config.kubernetes, &config.manager);
            let mut orchestrator = KubernetesOrchestrator::builder().config(settings.clone());
            if let Some(context) = &config.kubernetes.context {
                orchestrator = orchestrator.context(context);
            }
            let orchestrator = orchestrator
                .build()
                .await
                .context("connecting to the Kubernetes cluster")?;
            let mut resolver =
                PullSecretResolver::builder(orchestrator.client().clone(), &settings);
            for registry in &config.registry.insecure_registries {
                resolver = resolver.insecure_registry(registry);
            }
            if let Some(timeout) = config.registry.timeout {
                resolver = resolver.timeout(timeout);
            }
            kubernetes = Some(orchestrator.clone());
            builder
                .orchestrator(Arc::new(orchestrator))
                .resolver(Arc::new(resolver.build()))
        }
    };
    builder = match &config.store {
        StoreChoice::InMemory => builder.store(Arc::new(InMemoryStore::new())),
        StoreChoice::Redb(path) => {
            let store = RedbStore::open(path)
                .with_context(|| format!("opening the store {}", path.display()))?;
            builder.store(Arc::new(store))
        }
        StoreChoice::Kubernetes => {
            let Some(orchestrator) = &kubernetes else {
                bail!("store.kubernetes needs the kubernetes backend");
            };
            let store = KubernetesStore::builder()
                .client(orchestrator.client().clone())
                .namespace(orchestrator.namespace())
                .name(&config.manager)
                .build()
                .await
                .context("opening the store in the cluster")?;
            builder.store(Arc::new(store))
        }
        StoreChoice::Postgres(url, schema) => {
            let mut store = PostgresStore::builder().url(url.expose());
            if let Some(schema) = schema {
                store = store.schema(schema);
            }
            let store = store
                .build()
                .await
                .with_context(|| format!("opening the PostgreSQL store {url}"))?;
            builder.store(Arc::new(store))
        }
    };
    builder
        .build()
        .await
        .context("starting the lifecycle manager")
}

/// A resolver that asks registries itself (Docker config credentials).
fn direct_resolver(config: &Config) -> RegistryResolver {
    let mut resolver = RegistryResolver::builder();
    for registry in &config.registry.insecure_registries {
        resolver = resolver.insecure_registry(registry);
    }
    if let Some(timeout) = config.registry.timeout {
        resolver = resolver.timeout(timeout);
    }
    resolver.build()
}

/// The Kubernetes backend's settings from mcpd's: the library's defaults
/// (restricted pods, adoption of labelled Deployments) where mcpd sets none.
fn kubernetes_config(settings: &KubernetesSettings, manager: &str) -> KubernetesConfig {
    let defaults = KubernetesConfig::default();
    KubernetesConfig {
        namespace: settings
            .namespace
            .clone()
            .unwrap_or(defaults.namespace.clone()),
        field_manager: manager.to_owned(),
        pod_access: match settings.pod_access {
            PodAccessSetting::PodIp => PodAccess::PodIp,
            PodAccessSetting::PortForward => PodAccess::PortForward,
        },
        exposure: match settings.exposure {
            ExposureSetting::ClusterIp => ServiceExposure::ClusterIp,
            ExposureSetting::NodePort => ServiceExposure::NodePort,
            ExposureSetting::LoadBalancer => ServiceExposure::LoadBalancer,
        },
        image_pull_secrets: settings.image_pull_secrets.clone(),
        service_account: settings.service_account.clone(),
        ..defaults
    }
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
