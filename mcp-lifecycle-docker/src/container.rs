//! One container per instance: its name, its configuration with safe
//! defaults, and the engine calls that create, start, stop, kill, inspect and
//! remove it, each idempotent.
//!
//! This module owns the container's shape (labels, limits, security options,
//! stdin, ports, network) and the mapping of "already in that state" answers
//! (304, 404, 409) to success. It must not decide when to restart anything,
//! pull images, or wait for MCP.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use mcp_lifecycle::ports::{InstanceSpec, labels};
use mcp_lifecycle::spec::{Transport, parse_cpu_millis, parse_memory_bytes};
use mcp_lifecycle::{Error, Result};

use crate::client::{REQUEST_TIMEOUT, engine_error, is_conflict, is_not_found, status_of};
use crate::observe::TRANSPORT_LABEL;
use crate::options::Settings;

/// The `managed-by` value used to name containers whose spec lacks the label.
pub(crate) const DEFAULT_MANAGER: &str = "mcp-lifecycle";

/// How long a kill may take to be reaped before `stop` gives up.
const KILL_WAIT: Duration = Duration::from_secs(15);

/// The container name of instance `id` of manager `manager`:
/// `{manager}-{id}`, with characters Docker rejects in names replaced by `-`.
pub(crate) fn container_name(manager: &str, id: &str) -> String {
    let raw = format!("{manager}-{id}");
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'm');
    }
    name
}

/// The manager a spec belongs to: its `managed-by` label, else the
/// orchestrator's scope, else [`DEFAULT_MANAGER`].
pub(crate) fn manager_of<'a>(spec: &'a InstanceSpec, scope: Option<&'a str>) -> &'a str {
    spec.labels
        .get(labels::MANAGED_BY)
        .map(String::as_str)
        .or(scope)
        .unwrap_or(DEFAULT_MANAGER)
}

/// The image's configured user, as far as container creation cares.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageFacts {
    /// `USER` of the image (empty means root).
    pub(crate) user: Option<String>,
}

/// Whether `user` (`name[:group]` or `uid[:gid]`) is root or unset.
fn runs_as_root(user: Option<&str>) -> bool {
    let user = user.unwrap_or("");
    let name = user.split(':').next().unwrap_or("");
    matches!(name, "" | "root" | "0")
}

/// The container configuration for `spec`, with the safe defaults:
/// no new privileges, every capability dropped, memory / CPU / pids limits,
/// no engine restarts, the engine's init as PID 1, a read-only root
/// filesystem and a non-root user unless the settings relax them, stdin kept
/// open for stdio servers, and the HTTP port published on loopback or left on
/// the network.
pub(crate) fn create_body(
    spec: &InstanceSpec,
    manager: &str,
    image: &str,
    network_id: &str,
    settings: &Settings,
    facts: &ImageFacts,
) -> Result<ContainerCreateBody> {
    let memory = match spec.resources.memory.as_deref() {
        Some(text) => parse_memory_bytes(text)
            .map_err(|reason| Error::invalid(format!("memory of instance {}", spec.id), reason))?,
        None => settings.limits.memory_bytes,
    };
    let cpu_millis = match spec.resources.cpu.as_deref() {
        Some(text) => parse_cpu_millis(text)
            .map_err(|reason| Error::invalid(format!("cpu of instance {}", spec.id), reason))?,
        None => settings.limits.cpu_millis,
    };
    let memory = i64::try_from(memory).unwrap_or(i64::MAX);
    let nano_cpus = i64::try_from(cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX);

    let mut env: Vec<String> = spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", v.expose()))
        .collect();
    let http_port = match &spec.transport {
        Transport::Stdio => None,
        Transport::Http { port, .. } | Transport::Sse { port, .. } => Some(*port),
    };
    if let Some(port) = http_port {
        // Tell the server its port, as the local backend does, unless the spec does.
        for key in ["MCP_PORT", "PORT"] {
            if !spec.env.iter().any(|(k, _)| k == key) {
                env.push(format!("{key}={port}"));
            }
        }
    }

    let mut all_labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all_labels
        .entry(labels::MANAGED_BY.to_owned())
        .or_insert_with(|| manager.to_owned());
    all_labels.insert(labels::SERVER.to_owned(), spec.server.clone());
    all_labels.insert(labels::INSTANCE.to_owned(), spec.id.to_string());
    all_labels.insert(labels::SPEC_HASH.to_owned(), spec.spec_hash.clone());
    let transport_json = serde_json::to_string(&spec.transport)
        .map_err(|e| Error::invalid(format!("transport of instance {}", spec.id), e.to_string()))?;
    all_labels.insert(TRANSPORT_LABEL.to_owned(), transport_json);

    let user = match &settings.non_root_user {
        Some(non_root) if runs_as_root(facts.user.as_deref()) => Some(non_root.clone()),
        _ => None,
    };

    let (exposed_ports, port_bindings) = match http_port {
        None => (None, None),
        Some(port) => {
            let key = format!("{port}/tcp");
            let bindings = match settings.http_access {
                crate::HttpAccess::PublishedLoopback => Some(HashMap::from([(
                    key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                crate::HttpAccess::ContainerAddress => None,
            };
            (Some(vec![key]), bindings)
        }
    };

    let read_only = settings.read_only_root_fs;
    let tmpfs = read_only.then(|| {
        HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,noexec,nosuid,nodev,size={}", settings.tmpfs_size),
        )])
    });

    let host_config = HostConfig {
        memory: Some(memory),
        // No swap on top of the memory limit.
        memory_swap: Some(memory),
        nano_cpus: Some(nano_cpus),
        pids_limit: Some(i64::from(settings.limits.pids)),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        readonly_rootfs: Some(read_only),
        tmpfs,
        // The library decides restarts; the engine never does.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        network_mode: Some(network_id.to_owned()),
        port_bindings,
        // A server that never installs a SIGTERM handler still stops on a
        // graceful stop: only PID 1 ignores signals it does not handle.
        init: Some(settings.init),
        ..HostConfig::default()
    };

    let stdio = matches!(spec.transport, Transport::Stdio);
    Ok(ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(env),
        labels: Some(all_labels),
        user,
        tty: Some(false),
        open_stdin: Some(stdio),
        stdin_once: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        exposed_ports,
        stop_timeout: Some(i64::try_from(grace_secs(spec.stop_grace_period)).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    })
}

/// Whole seconds of a grace period, rounded up.
fn grace_secs(grace: Duration) -> u64 {
    grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
}

/// Why a create did not produce a container.
pub(crate) enum CreateOutcome {
    /// Created, with this id.
    Created(String),
    /// The name is taken (created concurrently): look it up again.
    NameTaken,
    /// The image vanished since it was checked.
    NoSuchImage,
    /// The network vanished since it was looked up.
    NoSuchNetwork,
}

/// Creates the container `name`.
pub(crate) async fn create(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
    what: &str,
) -> Result<CreateOutcome> {
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    match docker.create_container(Some(options), body).await {
        Ok(created) => {
            for warning in created.warnings {
                tracing::warn!(container = name, %warning, "engine warning on create");
            }
            Ok(CreateOutcome::Created(created.id))
        }
        Err(e) if is_conflict(&e) => Ok(CreateOutcome::NameTaken),
        Err(e) if is_not_found(&e) => {
            if e.to_string().to_lowercase().contains("network") {
                Ok(CreateOutcome::NoSuchNetwork)
            } else {
                Ok(CreateOutcome::NoSuchImage)
            }
        }
        Err(e) => Err(engine_error(format!("creating the container of {what}"), e)),
    }
}

/// How often an inspect whose answer does not parse is asked again.
const INSPECT_PARSE_RETRIES: u32 = 10;

/// How long to wait before asking again.
const INSPECT_PARSE_RETRY_WAIT: Duration = Duration::from_millis(50);

/// Inspects a container by name or id; `None` if it does not exist.
///
/// Podman reports `"Status": "stopped"` for about 100 ms after a container
/// exits, a state Docker's API (and so bollard's model) does not have, and
/// the answer does not parse. Such an answer is asked for again, a few times
/// 50 ms apart, until the container has settled as `exited`.
pub(crate) async fn inspect(
    docker: &Docker,
    target: &str,
    what: &str,
) -> Result<Option<ContainerInspectResponse>> {
    let mut retries = 0;
    loop {
        match docker.inspect_container(target, None).await {
            Ok(found) => return Ok(Some(found)),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(bollard::errors::Error::JsonDataError { message, .. })
                if retries < INSPECT_PARSE_RETRIES =>
            {
                retries += 1;
                tracing::debug!(container = %target, %message, retries,
                    "the engine's inspect answer did not parse (a transient state?); asking again");
                tokio::time::sleep(INSPECT_PARSE_RETRY_WAIT).await;
            }
            Err(e) => return Err(engine_error(format!("inspecting {what}"), e)),
        }
    }
}

/// Starts a container. Already running is success; a missing container is `NotFound`.
pub(crate) async fn start(docker: &Docker, target: &str, what: &str) -> Result<()> {
    match docker.start_container(target, None).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Err(Error::not_found(what.to_owned())),
        Err(e) => Err(engine_error(format!("starting {what}"), e)),
    }
}

/// Asks the container to stop (SIGTERM, or the image's stop signal) and lets
/// the engine kill it after `grace`. A stopped container is success.
pub(crate) async fn stop_graceful(
    docker: &Docker,
    target: &str,
    grace: Duration,
    what: &str,
) -> Result<()> {
    let secs = grace_secs(grace);
    let options = StopContainerOptionsBuilder::default()
        .t(i32::try_from(secs).unwrap_or(i32::MAX))
        .build();
    // The engine answers when the container is gone: allow for the grace period.
    let needed = Duration::from_secs(secs) + Duration::from_secs(30);
    let long;
    let client = if needed > REQUEST_TIMEOUT {
        long = docker.clone().with_timeout(needed);
        &long
    } else {
        docker
    };
    match client.stop_container(target, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Err(Error::not_found(what.to_owned())),
        // 304: already stopped (bollard passes it as success; some engines say 409).
        Err(e) if matches!(status_of(&e), Some(304 | 409)) => Ok(()),
        Err(e) => Err(engine_error(format!("stopping {what}"), e)),
    }
}

/// Kills the container with SIGKILL and waits until the engine reports it
/// stopped. A stopped container is success.
pub(crate) async fn kill(docker: &Docker, target: &str, what: &str) -> Result<()> {
    let options = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    match docker.kill_container(target, Some(options)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Err(Error::not_found(what.to_owned())),
        // Not running.
        Err(e) if is_conflict(&e) => return Ok(()),
        Err(e) => return Err(engine_error(format!("killing {what}"), e)),
    }
    wait_not_running(docker, target, what).await
}

/// Waits (on the engine's wait endpoint, no polling) until the container is not running.
async fn wait_not_running(docker: &Docker, target: &str, what: &str) -> Result<()> {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut waiting = docker.wait_container(target, Some(options));
    match tokio::time::timeout(KILL_WAIT, waiting.next()).await {
        Err(_) => Err(Error::Timeout {
            what: format!("{what} to exit after SIGKILL"),
            after: KILL_WAIT,
        }),
        // A non-zero exit code comes back as an error; the wait is over either way.
        Ok(None)
        | Ok(Some(Ok(_)))
        | Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { .. }))) => Ok(()),
        Ok(Some(Err(e))) if is_not_found(&e) => Ok(()),
        Ok(Some(Err(e))) => Err(engine_error(format!("waiting for {what} to exit"), e)),
    }
}

/// Removes the container, killing it first if it runs. A missing container
/// (or one already being removed) is success.
pub(crate) async fn remove(docker: &Docker, target: &str, what: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(target, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) if is_conflict(&e) => {
            // "removal already in progress": done once it is gone.
            tracing::debug!(container = target, error = %e, "removal already in progress");
            Ok(())
        }
        Err(e) => Err(engine_error(format!("removing {what}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcp_lifecycle::InstanceId;
    use mcp_lifecycle::ports::ResolvedEnv;
    use mcp_lifecycle::spec::{Resources, Source};

    use super::*;

    fn spec(transport: Transport) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new("echo", 0),
            server: "echo".into(),
            spec_hash: "abc".into(),
            source: Source::Image("img:1".into()),
            transport,
            env: vec![("A".into(), ResolvedEnv::Plain("1".into()))],
            resources: Resources {
                memory: Some("256Mi".into()),
                cpu: None,
            },
            labels: BTreeMap::from([(labels::MANAGED_BY.to_owned(), "mgr".to_owned())]),
            stop_grace_period: Duration::from_millis(1500),
        }
    }

    #[test]
    fn names_are_per_manager_and_valid() {
        assert_eq!(container_name("mgr", "echo-0"), "mgr-echo-0");
        assert_eq!(container_name("a b/c", "x-1"), "a-b-c-x-1");
        assert_eq!(container_name("-x", "y-1"), "m-x-y-1");
        assert_eq!(manager_of(&spec(Transport::Stdio), Some("other")), "mgr");
        let mut unlabelled = spec(Transport::Stdio);
        unlabelled.labels.clear();
        assert_eq!(manager_of(&unlabelled, Some("scope")), "scope");
        assert_eq!(manager_of(&unlabelled, None), DEFAULT_MANAGER);
    }

    #[test]
    fn stdio_containers_are_locked_down_with_stdin_open() {
        let body = create_body(
            &spec(Transport::Stdio),
            "mgr",
            "img:1",
            "net",
            &Settings::default(),
            &ImageFacts::default(),
        )
        .unwrap();
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(false));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.stop_timeout, Some(2));
        assert_eq!(body.env.as_deref(), Some(&["A=1".to_owned()][..]));
        let labels = body.labels.unwrap();
        assert_eq!(labels[labels::INSTANCE], "echo-0");
        assert_eq!(labels[labels::SERVER], "echo");
        assert_eq!(labels[labels::SPEC_HASH], "abc");
        assert_eq!(labels[TRANSPORT_LABEL], "\"stdio\"");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.init, Some(true));
        assert!(host.tmpfs.unwrap().contains_key("/tmp"));
        assert!(host.port_bindings.is_none());
    }

    #[test]
    fn http_containers_publish_on_loopback_and_learn_their_port() {
        let transport = Transport::Http {
            port: 8080,
            path: "/mcp".into(),
        };
        let facts = ImageFacts {
            user: Some("1000".into()),
        };
        let settings = Settings {
            read_only_root_fs: false,
            ..Settings::default()
        };
        let body = create_body(&spec(transport), "mgr", "img:1", "net", &settings, &facts).unwrap();
        assert_eq!(body.open_stdin, Some(false));
        // The image's own non-root user is kept.
        assert_eq!(body.user, None);
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
        let env = body.env.unwrap();
        assert!(env.contains(&"MCP_PORT=8080".to_owned()), "{env:?}");
        let host = body.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(host.readonly_rootfs, Some(false));
        assert!(host.tmpfs.is_none());
    }

    #[test]
    fn root_users_are_recognised() {
        assert!(runs_as_root(None));
        assert!(runs_as_root(Some("")));
        assert!(runs_as_root(Some("root:root")));
        assert!(runs_as_root(Some("0:0")));
        assert!(!runs_as_root(Some("65534:65534")));
        assert!(!runs_as_root(Some("app")));
    }
}
