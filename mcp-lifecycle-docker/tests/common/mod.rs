//! Shared helpers of the Docker backend's tests: finding the engine and the
//! test images (skipping, or failing under `MCP_LIFECYCLE_REQUIRE_DOCKER=1`),
//! unique names, and a guard that removes every container a test's manager
//! labelled, also when the test panics.
//!
//! Images come from `scripts/test-images.sh`, which writes
//! `/var/tmp/mcp-lifecycle-registry/images.env`; each `MCP_TEST_*` key there
//! can be overridden by an environment variable of the same name.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_lifecycle::ports::labels;
use mcp_lifecycle_docker::DockerOrchestrator;
use mcp_lifecycle_docker::bollard::Docker;
use mcp_lifecycle_docker::bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};

/// Where `scripts/test-images.sh` writes the image names.
pub(crate) const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";

/// The test images.
#[derive(Debug, Clone)]
pub(crate) struct TestImages {
    /// `mcp-lifecycle/test-server:v1`: a stdio MCP server (HTTP with
    /// `MCP_TEST_TRANSPORT=http`).
    pub(crate) v1: String,
    /// `:v2`, another version of the same server.
    pub(crate) v2: String,
    /// `:v3`, which exits at once with code 3.
    pub(crate) v3: String,
    /// `127.0.0.1:5000`, when the local registry is up.
    pub(crate) registry: Option<String>,
    /// `127.0.0.1:5000/mcp-test-server` (tags v1 v2 v3 latest), when the registry is up.
    pub(crate) registry_image: Option<String>,
    /// The registry's manifest digest of v1.
    pub(crate) registry_digest_v1: Option<String>,
}

fn require() -> bool {
    std::env::var("MCP_LIFECYCLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// Skips the test (prints why and returns `None`), or fails it when
/// `MCP_LIFECYCLE_REQUIRE_DOCKER=1`.
pub(crate) fn skip<T>(test: &str, reason: &str) -> Option<T> {
    if require() {
        panic!("{test}: {reason} (MCP_LIFECYCLE_REQUIRE_DOCKER=1, so this is a failure)");
    }
    println!("SKIPPED {test}: {reason}");
    None
}

fn read_env_file() -> HashMap<String, String> {
    let text = std::fs::read_to_string(IMAGES_ENV).unwrap_or_default();
    let mut values: HashMap<String, String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    for (key, value) in std::env::vars() {
        if key.starts_with("MCP_TEST_") {
            values.insert(key, value);
        }
    }
    values
}

/// The engine and the test images, or `None` (after printing why) if either
/// is missing.
pub(crate) async fn setup(test: &str) -> Option<(Docker, TestImages)> {
    let docker = match Docker::connect_with_defaults() {
        Ok(d) => d,
        Err(e) => return skip(test, &format!("no Docker client: {e}")),
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => return skip(test, &format!("no Docker engine reachable: {e}")),
    };
    let env = read_env_file();
    let get =
        |key: &str, default: &str| env.get(key).cloned().unwrap_or_else(|| default.to_owned());
    let images = TestImages {
        v1: get("MCP_TEST_IMAGE_V1", "mcp-lifecycle/test-server:v1"),
        v2: get("MCP_TEST_IMAGE_V2", "mcp-lifecycle/test-server:v2"),
        v3: get("MCP_TEST_IMAGE_V3", "mcp-lifecycle/test-server:v3"),
        registry: env.get("MCP_TEST_REGISTRY").cloned(),
        registry_image: env.get("MCP_TEST_REGISTRY_IMAGE").cloned(),
        registry_digest_v1: env.get("MCP_TEST_REGISTRY_DIGEST_V1").cloned(),
    };
    for image in [&images.v1, &images.v2, &images.v3] {
        if docker.inspect_image(image).await.is_err() {
            return skip(
                test,
                &format!("test image {image} is missing; run scripts/test-images.sh"),
            );
        }
    }
    Some((docker, images))
}

/// Whether the engine is Podman (through its Docker-compatible API), where a
/// few answers differ by design: no distribution endpoint, and a tag-started
/// container's running digest is unknown (Podman's repo digests do not say
/// which digest a tag was pulled by).
pub(crate) async fn is_podman(docker: &Docker) -> bool {
    let version = docker
        .version()
        .await
        .unwrap_or_else(|e| panic!("asking the engine its version: {e}"));
    version
        .components
        .iter()
        .flatten()
        .any(|c| c.name.contains("Podman"))
}

/// The registry image and v1 digest, or `None` (after printing why) when the
/// local registry is not up.
pub(crate) async fn registry(test: &str, images: &TestImages) -> Option<(String, String)> {
    let (Some(registry), Some(image), Some(digest)) = (
        images.registry.clone(),
        images.registry_image.clone(),
        images.registry_digest_v1.clone(),
    ) else {
        return skip(
            test,
            "no local registry in images.env; run scripts/test-images.sh",
        );
    };
    let up = tokio::net::TcpStream::connect(registry.as_str())
        .await
        .is_ok();
    if !up {
        return skip(
            test,
            &format!(
                "the local registry at {registry} does not answer; run scripts/test-images.sh"
            ),
        );
    }
    Some((image, digest))
}

/// A name unique across tests, processes and runs: `{prefix}-{8 hex}`.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20) ^ (n << 40))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}-{:08x}", mixed >> 32)
}

/// An orchestrator scoped to `manager`.
pub(crate) async fn orchestrator(manager: &str) -> DockerOrchestrator {
    DockerOrchestrator::builder()
        .manager(manager)
        .build()
        .await
        .expect("DockerOrchestrator::build")
}

/// Containers labelled `managed-by={manager}`, all states.
pub(crate) async fn containers_of(docker: &Docker, manager: &str) -> Vec<String> {
    containers_with(docker, &format!("{}={manager}", labels::MANAGED_BY)).await
}

/// Containers carrying `label` (`key` or `key=value`), all states.
pub(crate) async fn containers_with(docker: &Docker, label: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![label.to_owned()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Removes every container labelled `managed-by={manager}` when dropped
/// (test end or panic), on a thread of its own so it works during unwinding.
pub(crate) struct Cleanup {
    manager: String,
}

impl Cleanup {
    /// Guards the containers of `manager`.
    pub(crate) fn new(manager: &str) -> Self {
        Cleanup {
            manager: manager.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let manager = self.manager.clone();
        let joined = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(docker) = Docker::connect_with_defaults() else {
                    return;
                };
                let Ok(docker) = docker.negotiate_version().await else {
                    return;
                };
                let filters =
                    HashMap::from([("label", vec![format!("{}={manager}", labels::MANAGED_BY)])]);
                let options = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                let Ok(found) = docker.list_containers(Some(options)).await else {
                    return;
                };
                for id in found.into_iter().filter_map(|c| c.id) {
                    let options = RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build();
                    let _ = docker.remove_container(&id, Some(options)).await;
                }
            });
        })
        .join();
        let _ = joined;
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The registry's manifest digest of test image `version` (`v1`, `v2`,
/// `v3`) from images.env (`MCP_TEST_REGISTRY_DIGEST_V1`, …), if recorded.
pub(crate) fn registry_digest(version: &str) -> Option<String> {
    read_env_file()
        .get(&format!(
            "MCP_TEST_REGISTRY_DIGEST_{}",
            version.to_ascii_uppercase()
        ))
        .cloned()
}

/// The path of `scripts/test-images.sh` (images.env's
/// `MCP_TEST_IMAGES_SCRIPT`, else the one in this workspace).
pub(crate) fn images_script() -> String {
    read_env_file()
        .get("MCP_TEST_IMAGES_SCRIPT")
        .cloned()
        .unwrap_or_else(|| format!("{}/../scripts/test-images.sh", env!("CARGO_MANIFEST_DIR")))
}

/// Runs `docker <args>` and returns its stdout, or panics with its stderr.
pub(crate) async fn docker_cli(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("docker")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")));
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("docker CLI task")
}

/// Tags local image `source` as `target` (a reference in the local
/// registry) and pushes it; returns the manifest digest the push reported.
pub(crate) async fn push_as(source: &str, target: &str) -> String {
    docker_cli(&["tag", source, target]).await;
    let out = docker_cli(&["push", target]).await;
    out.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .filter(|d| d.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("docker push {target} reported no digest: {out}"))
        .to_owned()
}

/// Removes the local tag `reference` when dropped (the image stays under
/// its other names); never touches the registry.
pub(crate) struct Untag(pub(crate) String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "--no-prune", &self.0])
            .output();
    }
}

/// `Config.Image` of every running container labelled `managed-by={manager}`.
pub(crate) async fn running_images(docker: &Docker, manager: &str) -> Vec<String> {
    let mut images = Vec::new();
    for id in containers_of(docker, manager).await {
        let Ok(c) = docker.inspect_container(&id, None).await else {
            continue;
        };
        if c.state.and_then(|s| s.running) != Some(true) {
            continue;
        }
        if let Some(image) = c.config.and_then(|c| c.image) {
            images.push(image);
        }
    }
    images.sort();
    images
}
