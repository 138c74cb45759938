//! [`DockerOrchestrator`]: the [`Orchestrator`] port on a Docker or Podman
//! engine, and its builder.
//!
//! This module owns the port's semantics on top of the engine: finding an
//! instance's container (by name when scoped to a manager, by label
//! otherwise), start-or-restart-in-place, stop and remove idempotence, the
//! list by labels, connections, and the lifetime of the event watcher and
//! attach pumps (ended when the last handle is dropped; containers keep
//! running for the next host to adopt). It must not shape containers (that is
//! `container`), pull (`image`), or decide restarts, which happen above the
//! port.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::ListContainersOptionsBuilder;
use futures::StreamExt;
use mcp_lifecycle::ports::{
    Connection, EventStream, InstanceObservation, InstanceSpec, Orchestrator, RuntimeEvent,
    RuntimeStatus, labels,
};
use mcp_lifecycle::spec::{Source, Transport};
use mcp_lifecycle::{Error, InstanceId, Result, StopMode};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::attach::Attachments;
use crate::client::{self, BACKEND, engine_error};
use crate::container::{self, CreateOutcome, ImageFacts};
use crate::digest::DigestCache;
use crate::events::{self, EVENT_CHANNEL_CAPACITY, KnownContainers, Watcher};
use crate::image::Images;
use crate::network::Network;
use crate::observe::Inspected;
use crate::options::{DefaultLimits, HttpAccess, Settings};

/// How many containers `list` inspects at once.
const LIST_CONCURRENCY: usize = 8;

/// How often `start` looks again when the container changed under it
/// (created or removed concurrently) before giving up.
const START_ATTEMPTS: usize = 4;

/// Builds a [`DockerOrchestrator`]. Every option has a safe default; see each
/// method.
#[derive(Default)]
pub struct DockerOrchestratorBuilder {
    docker: Option<Docker>,
    settings: Settings,
}

impl fmt::Debug for DockerOrchestratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerOrchestratorBuilder")
            .field("custom_client", &self.docker.is_some())
            .field("settings", &self.settings)
            .finish()
    }
}

impl DockerOrchestratorBuilder {
    /// Uses this bollard client instead of `Docker::connect_with_defaults()`
    /// (for example `Docker::connect_with_podman_defaults()`, or a client with
    /// TLS). Its API version is negotiated on build all the same.
    pub fn docker(mut self, docker: Docker) -> Self {
        self.docker = Some(docker);
        self
    }

    /// Sees only containers whose `managed-by` label is `manager` (the
    /// host's `LifecycleConfig::manager_name`), and finds them by name
    /// (`{manager}-{instance}`), one engine call per lookup. Set it whenever
    /// several managers share an engine: two managers can have instances of
    /// the same id. Default: every container with a `managed-by` label, found
    /// by its instance label.
    pub fn manager(mut self, manager: impl Into<String>) -> Self {
        self.settings.manager = Some(manager.into());
        self
    }

    /// The network containers join, created (bridge driver) if missing.
    /// Default: [`DEFAULT_NETWORK`](crate::DEFAULT_NETWORK).
    pub fn network(mut self, name: impl Into<String>) -> Self {
        self.settings.network = name.into();
        self
    }

    /// How the host reaches HTTP and SSE servers. Default:
    /// [`HttpAccess::PublishedLoopback`], since a host outside the engine's
    /// network cannot reach container addresses.
    pub fn http_access(mut self, access: HttpAccess) -> Self {
        self.settings.http_access = access;
        self
    }

    /// Whether the root filesystem is mounted read-only (with a small tmpfs
    /// on `/tmp`). Default: `true`. Turn it off for servers that write
    /// outside `/tmp`.
    pub fn read_only_root_fs(mut self, read_only: bool) -> Self {
        self.settings.read_only_root_fs = read_only;
        self
    }

    /// The user (`uid:gid`) containers run as when their image would run as
    /// root; an image that names a non-root user keeps it. `None` keeps every
    /// image's own user, root included. Default:
    /// [`DEFAULT_NON_ROOT_USER`](crate::DEFAULT_NON_ROOT_USER) (nobody).
    pub fn non_root_user(mut self, user: Option<String>) -> Self {
        self.settings.non_root_user = user;
        self
    }

    /// Limits for specs that set none, and the pids limit.
    /// Default: [`DefaultLimits::default`] (512 MiB, 1 CPU, 256 pids).
    pub fn default_limits(mut self, limits: DefaultLimits) -> Self {
        self.settings.limits = limits;
        self
    }

    /// The size of the `/tmp` tmpfs of read-only containers, in Docker's
    /// syntax (`64m`). Default: `64m`.
    pub fn tmpfs_size(mut self, size: impl Into<String>) -> Self {
        self.settings.tmpfs_size = size.into();
        self
    }

    /// Whether the engine's init process (`docker-init`, Podman's
    /// `catatonit`) runs as PID 1 and forwards signals, so a server without
    /// a SIGTERM handler still stops on a graceful stop instead of waiting
    /// out the grace period (PID 1 ignores unhandled signals). Default:
    /// `true`; turn it off for engines without an init binary.
    pub fn init(mut self, enabled: bool) -> Self {
        self.settings.init = enabled;
        self
    }

    /// Whether pulls send credentials from the Docker config (or Podman's
    /// auth file) for the image's registry. Default: `true`.
    pub fn pull_credentials(mut self, enabled: bool) -> Self {
        self.settings.pull_credentials = enabled;
        self
    }

    /// Connects (bollard's defaults honour `DOCKER_HOST`), negotiates the API
    /// version, and starts watching the engine's events. An engine that
    /// cannot be reached is [`mcp_lifecycle::ErrorKind::Unavailable`]. Must
    /// run inside a tokio runtime.
    pub async fn build(self) -> Result<DockerOrchestrator> {
        let (docker, engine) = match self.docker {
            Some(docker) => client::negotiate(docker).await?,
            None => client::connect_default().await?,
        };
        let settings = self.settings;
        let (sender, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let known = Arc::new(KnownContainers::default());
        let cancel = CancellationToken::new();
        let label_filter = match &settings.manager {
            Some(manager) => format!("{}={manager}", labels::MANAGED_BY),
            None => labels::MANAGED_BY.to_owned(),
        };
        let skew_secs = events::clock_skew_secs(&docker).await;
        let watcher = Watcher {
            docker: docker.clone(),
            label_filter,
            sender: sender.clone(),
            known: known.clone(),
            cancel: cancel.clone(),
            skew_secs,
        };
        tokio::spawn(
            watcher
                .run()
                .instrument(tracing::debug_span!("docker_events")),
        );
        Ok(DockerOrchestrator {
            inner: Arc::new(Inner {
                network: Network::new(settings.network.clone()),
                images: Images::new(settings.pull_credentials),
                digests: DigestCache::new(!client::is_podman(&engine)),
                attachments: Attachments::default(),
                known,
                events: sender,
                cancel,
                docker,
                engine,
                settings,
            }),
        })
    }
}

/// Runs each instance as one container on a Docker engine, or on Podman
/// through its Docker-compatible API.
///
/// - **Connection.** bollard's defaults: `DOCKER_HOST` (`unix://`, `tcp://`),
///   else `/var/run/docker.sock`; the API version is negotiated down to the
///   engine's (Docker 20.10 speaks 1.41). For Podman, start its API socket
///   (`systemctl --user start podman.socket`) and set
///   `DOCKER_HOST=unix:///run/user/$UID/podman/podman.sock`.
/// - **Containers.** One per instance, named `{manager}-{instance}` where
///   manager is the spec's `managed-by` label (else the builder's
///   [`manager`](DockerOrchestratorBuilder::manager), else `mcp-lifecycle`),
///   so two managers never collide;
///   labelled with the spec's labels (server, instance, spec hash, managed-by)
///   and the transport. They join a dedicated bridge network (created if
///   missing) and have no engine restart policy: restarts are decided above
///   the port and done in place by [`Orchestrator::start`].
/// - **Safe defaults.** No new privileges, every capability dropped, memory /
///   CPU limits from the spec or 512 MiB / 1 CPU, 256 pids, no swap, the
///   engine's init as PID 1 (signals reach the server), a read-only root
///   filesystem with a tmpfs `/tmp`, and user 65534 when the image would run
///   as root. The builder relaxes the last two.
/// - **Images.** Pulled only when missing, with credentials for the image's
///   registry from the Docker config (credential helpers included) or
///   Podman's auth file. A failed pull fails the start with an error naming
///   the image; the controller's backoff decides the retry.
/// - **Stop.** Graceful is the engine's stop with the grace period (SIGTERM,
///   then SIGKILL); Force is a SIGKILL, and returns once the engine reports
///   the container stopped.
/// - **Transports.** Stdio containers keep stdin open; [`connect`] attaches
///   (stdin, stdout, stderr; no replayed logs) and hands stdout frames to the
///   session while stderr lines go to the `mcp_lifecycle_docker::stderr`
///   tracing target; a second `connect` ends the first attach. HTTP and SSE
///   servers are told their port in `MCP_PORT` and `PORT` and reached per
///   [`HttpAccess`].
/// - **Events.** One subscription to the engine's events (start, die, oom,
///   destroy) feeds every [`events`](Orchestrator::events) stream; it
///   reconnects with `since` when the engine drops it, so crashes are pushed,
///   never polled for.
/// - **Adoption.** Dropping every handle ends the event watcher and attaches
///   but leaves containers running; a new orchestrator finds them by label.
///
/// [`connect`]: Orchestrator::connect
#[derive(Clone)]
pub struct DockerOrchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    /// The engine's name and version, as it reported them at connect.
    engine: String,
    settings: Settings,
    network: Network,
    images: Images,
    digests: DigestCache,
    attachments: Attachments,
    known: Arc<KnownContainers>,
    events: broadcast::Sender<RuntimeEvent>,
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.attachments.detach_all();
    }
}

impl fmt::Debug for DockerOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerOrchestrator")
            .field(
                "api_version",
                &self.inner.docker.client_version().to_string(),
            )
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl DockerOrchestrator {
    /// An orchestrator with every default; see [`DockerOrchestratorBuilder::build`].
    pub async fn connect() -> Result<Self> {
        Self::builder().build().await
    }

    /// A builder for the options.
    pub fn builder() -> DockerOrchestratorBuilder {
        DockerOrchestratorBuilder::default()
    }

    /// The bollard client, API version negotiated (for diagnostics and tests).
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The manager this orchestrator is scoped to, if any.
    pub fn manager(&self) -> Option<&str> {
        self.inner.settings.manager.as_deref()
    }

    /// The network containers join.
    pub fn network_name(&self) -> &str {
        self.inner.network.name()
    }

    /// How many image pulls this orchestrator has started.
    pub fn pull_count(&self) -> u64 {
        self.inner.images.pulls()
    }

    /// The engine's id of the instance's container, if it exists.
    pub async fn container_id(&self, id: &InstanceId) -> Result<Option<String>> {
        Ok(self.locate(id).await?.map(|found| found.container_id))
    }

    /// Finds the container of instance `id`.
    async fn locate(&self, id: &InstanceId) -> Result<Option<Inspected>> {
        let what = format!("instance {id}");
        let docker = &self.inner.docker;
        let target = match &self.inner.settings.manager {
            Some(manager) => container::container_name(manager, id.as_str()),
            None => {
                let filters = HashMap::from([(
                    "label",
                    vec![
                        format!("{}={id}", labels::INSTANCE),
                        labels::MANAGED_BY.to_owned(),
                    ],
                )]);
                let options = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                let mut found = docker
                    .list_containers(Some(options))
                    .await
                    .map_err(|e| engine_error(format!("looking up {what}"), e))?;
                if found.len() > 1 {
                    tracing::warn!(instance = %id, count = found.len(),
                        "several containers carry this instance label (several managers on one engine?); \
                         scope the orchestrator with DockerOrchestratorBuilder::manager");
                }
                // Prefer a running one.
                found.sort_by_key(|c| {
                    c.state != Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                });
                match found.into_iter().find_map(|c| c.id) {
                    Some(container_id) => container_id,
                    None => return Ok(None),
                }
            }
        };
        let Some(raw) = container::inspect(docker, &target, &what).await? else {
            return Ok(None);
        };
        let found = Inspected::new(raw, Some(id));
        if found.instance != *id {
            // A container of that name that is not this instance: not ours.
            return Ok(None);
        }
        self.inner
            .known
            .remember(&found.container_id, &found.instance, &found.server);
        Ok(Some(found))
    }

    /// The observation of an inspected container, with its running digest,
    /// and the exit code its `die` event announced where the inspect lost it.
    async fn observe(&self, found: &Inspected) -> InstanceObservation {
        let digest = if found.image_id.is_empty() {
            None
        } else {
            self.inner
                .digests
                .running_digest(&self.inner.docker, &found.image_id, &found.configured_image)
                .await
        };
        let mut observation = found.observation(digest);
        if let RuntimeStatus::Exited {
            code: code @ None,
            oom_killed,
            reason,
        } = &mut observation.status
            && let Some(announced) = found.started_at.and_then(|started| {
                self.inner
                    .known
                    .announced_exit(&found.container_id, started.as_millis())
            })
        {
            *code = Some(announced);
            if !*oom_killed {
                *reason = Some(format!("exited with code {announced}"));
            }
        }
        observation
    }

    /// Re-inspects a container by its engine id and observes it.
    async fn observe_by_container(
        &self,
        container_id: &str,
        id: &InstanceId,
    ) -> Result<InstanceObservation> {
        let what = format!("instance {id}");
        let raw = container::inspect(&self.inner.docker, container_id, &what)
            .await?
            .ok_or_else(|| Error::not_found(what.clone()))?;
        let found = Inspected::new(raw, Some(id));
        self.inner
            .known
            .remember(&found.container_id, &found.instance, &found.server);
        Ok(self.observe(&found).await)
    }

    async fn start_instance(&self, spec: &InstanceSpec) -> Result<InstanceObservation> {
        let Source::Image(image) = &spec.source else {
            return Err(Error::invalid(
                format!("source of instance {}", spec.id),
                "the docker backend runs images only (source: image); \
                 command sources need the local backend",
            ));
        };
        let manager = container::manager_of(spec, self.inner.settings.manager.as_deref());
        if let Some(scope) = &self.inner.settings.manager
            && scope != manager
        {
            return Err(Error::invalid(
                format!("labels of instance {}", spec.id),
                format!(
                    "its {} label is {manager:?}, but this orchestrator is scoped to {scope:?}",
                    labels::MANAGED_BY
                ),
            ));
        }
        let name = container::container_name(manager, spec.id.as_str());
        let what = format!("instance {}", spec.id);
        let docker = &self.inner.docker;
        for _ in 0..START_ATTEMPTS {
            if let Some(raw) = container::inspect(docker, &name, &what).await? {
                let found = Inspected::new(raw, Some(&spec.id));
                self.inner
                    .known
                    .remember(&found.container_id, &spec.id, &spec.server);
                if found.running {
                    return Ok(self.observe(&found).await);
                }
                let state = found.raw.state.as_ref().and_then(|s| s.status);
                if matches!(
                    state,
                    Some(ContainerStateStatusEnum::DEAD | ContainerStateStatusEnum::REMOVING)
                ) {
                    tracing::info!(container = %name, ?state, "replacing a dead container");
                    container::remove(docker, &found.container_id, &what).await?;
                    continue;
                }
                match container::start(docker, &found.container_id, &what).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == mcp_lifecycle::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                tracing::info!(container = %name, "restarted container in place");
                return self
                    .observe_by_container(&found.container_id, &spec.id)
                    .await;
            }
            let facts = self.image_facts(image, spec).await?;
            let network_id = self.inner.network.ensure(docker).await?;
            let body = container::create_body(
                spec,
                manager,
                image,
                &network_id,
                &self.inner.settings,
                &facts,
            )?;
            match container::create(docker, &name, body, &what).await? {
                CreateOutcome::Created(container_id) => {
                    self.inner
                        .known
                        .remember(&container_id, &spec.id, &spec.server);
                    container::start(docker, &container_id, &what).await?;
                    tracing::info!(container = %name, image = %image, "created and started container");
                    return self.observe_by_container(&container_id, &spec.id).await;
                }
                CreateOutcome::NameTaken => continue,
                CreateOutcome::NoSuchImage => continue,
                CreateOutcome::NoSuchNetwork => {
                    self.inner.network.invalidate();
                    continue;
                }
            }
        }
        Err(Error::unavailable(
            what,
            "its container kept changing while it was being started (created or removed \
             concurrently); try again",
        ))
    }

    /// Pulls the image if missing and reads what container creation needs from it.
    async fn image_facts(&self, image: &str, spec: &InstanceSpec) -> Result<ImageFacts> {
        let docker = &self.inner.docker;
        self.inner
            .images
            .ensure(docker, image, &spec.id, &spec.server)
            .await?;
        let inspected = docker.inspect_image(image).await.map_err(|e| {
            engine_error(
                format!("inspecting image {image} for instance {}", spec.id),
                e,
            )
        })?;
        Ok(ImageFacts {
            user: inspected.config.and_then(|c| c.user),
        })
    }

    async fn connection(&self, id: &InstanceId) -> Result<Connection> {
        let found = self
            .locate(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("instance {id}")))?;
        if !found.running {
            return Err(Error::unavailable(
                format!("instance {id}"),
                "it is not running; start it before connecting",
            ));
        }
        match &found.transport {
            Transport::Stdio => self
                .inner
                .attachments
                .attach(&self.inner.docker, &found.container_id, &found.server, id)
                .await
                .map(Connection::Stdio),
            Transport::Http { port, path } | Transport::Sse { port, path } => {
                let base = match self.inner.settings.http_access {
                    HttpAccess::PublishedLoopback => found
                        .published_port(*port)
                        .map(|(ip, host_port)| format!("http://{ip}:{host_port}")),
                    HttpAccess::ContainerAddress => found
                        .address_on(self.inner.network.name())
                        .map(|ip| format!("http://{ip}:{port}")),
                };
                base.map(|base| Connection::Url(format!("{base}{path}")))
                    .ok_or_else(|| {
                        Error::unavailable(
                            format!("instance {id}"),
                            format!(
                                "its port {port} is not reachable as configured ({:?}): the \
                                 container was created with other settings; remove it to recreate it",
                                self.inner.settings.http_access
                            ),
                        )
                    })
            }
        }
    }
}

fn span_for(server: &str, id: &InstanceId) -> tracing::Span {
    tracing::info_span!("docker_instance", server = %server, instance = %id)
}

#[async_trait]
impl Orchestrator for DockerOrchestrator {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn runtime_version(&self) -> Option<String> {
        Some(self.inner.engine.clone())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceObservation> {
        self.start_instance(spec)
            .instrument(span_for(&spec.server, &spec.id))
            .await
    }

    async fn stop(&self, id: &InstanceId, mode: StopMode, grace: Duration) -> Result<()> {
        let found = self
            .locate(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("instance {id}")))?;
        if !found.running {
            return Ok(());
        }
        let what = format!("instance {id}");
        let docker = &self.inner.docker;
        async {
            tracing::info!(?mode, ?grace, "stopping container");
            match mode {
                StopMode::Graceful => {
                    container::stop_graceful(docker, &found.container_id, grace, &what).await
                }
                StopMode::Force => container::kill(docker, &found.container_id, &what).await,
            }
        }
        .instrument(span_for(&found.server, id))
        .await
    }

    async fn remove(&self, id: &InstanceId) -> Result<()> {
        let Some(found) = self.locate(id).await? else {
            return Ok(());
        };
        self.inner.attachments.detach(&found.container_id);
        container::remove(
            &self.inner.docker,
            &found.container_id,
            &format!("instance {id}"),
        )
        .instrument(span_for(&found.server, id))
        .await?;
        tracing::info!(server = %found.server, instance = %id, "removed container");
        Ok(())
    }

    async fn list(&self, selector: &BTreeMap<String, String>) -> Result<Vec<InstanceObservation>> {
        let mut label_filters: Vec<String> =
            selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        label_filters.push(match &self.inner.settings.manager {
            Some(manager) => format!("{}={manager}", labels::MANAGED_BY),
            None => labels::MANAGED_BY.to_owned(),
        });
        let filters = HashMap::from([("label", label_filters)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error("listing containers", e))?;
        let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
        let observed: Vec<Result<Option<InstanceObservation>>> = futures::stream::iter(ids)
            .map(|container_id| async move {
                let what = format!("container {container_id}");
                let Some(raw) =
                    container::inspect(&self.inner.docker, &container_id, &what).await?
                else {
                    // Removed since it was listed.
                    return Ok(None);
                };
                let found = Inspected::new(raw, None);
                let matches = selector
                    .iter()
                    .all(|(k, v)| found.labels.get(k).is_some_and(|have| have == v));
                if !matches {
                    return Ok(None);
                }
                self.inner
                    .known
                    .remember(&found.container_id, &found.instance, &found.server);
                Ok(Some(self.observe(&found).await))
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(observed.len());
        for item in observed {
            if let Some(obs) = item? {
                out.push(obs);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn inspect(&self, id: &InstanceId) -> Result<InstanceObservation> {
        let found = self
            .locate(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("instance {id}")))?;
        Ok(self.observe(&found).await)
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<Vec<String>> {
        let found = self
            .locate(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("instance {id}")))?;
        let include_stdout = !matches!(found.transport, Transport::Stdio);
        crate::logs::tail(
            &self.inner.docker,
            &found.container_id,
            tail,
            include_stdout,
            &format!("instance {id}"),
        )
        .await
    }

    async fn connect(&self, id: &InstanceId) -> Result<Connection> {
        self.connection(id).await
    }

    fn events(&self) -> EventStream {
        BroadcastStream::new(self.inner.events.subscribe())
            .filter_map(|event| futures::future::ready(event.ok()))
            .boxed()
    }
}
