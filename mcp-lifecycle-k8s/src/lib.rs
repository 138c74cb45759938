//! # mcp-lifecycle-k8s
//!
//! The Kubernetes backend of [`mcp_lifecycle`]: [`KubernetesOrchestrator`]
//! implements the [`mcp_lifecycle::Orchestrator`] port and its
//! [`mcp_lifecycle::ports::ReplicaOwner`] capability on kube and k8s-openapi.
//!
//! - One Deployment per server, written by server-side apply with the field
//!   manager `mcp-lifecycle`; replicas through the scale subresource; a
//!   Service per HTTP or SSE server; the spec's secret values in a Secret
//!   the pods reference, never in the Deployment. Everything carries the
//!   `mcp-lifecycle.dev/server` label, so `kubectl get deploy,pods,svc -l
//!   mcp-lifecycle.dev/server=NAME` shows it all.
//! - Every pod template carries the readiness gate
//!   `mcp-lifecycle.dev/mcp-ready`, which the library sets from its MCP
//!   probes: Service endpoints and Deployment rollouts (`maxSurge: 1,
//!   maxUnavailable: 0`) wait for MCP readiness, not for a port. A spec opts
//!   out with the label `mcp-lifecycle.dev/readiness-gate: "off"`.
//! - Pods are observed by watch (kube-runtime's watcher and reflector);
//!   every read is served from that cache. A pod's restart count, waiting
//!   reason (`CrashLoopBackOff`, `ImagePullBackOff`, `Unschedulable` with the
//!   scheduler's message, …), last exit code and the kubelet's back-off
//!   become the instance's attempt, reason and next retry.
//! - Probes and `peer` reach each pod itself: an HTTP or SSE server at the
//!   pod IP, or, with [`PodAccess::PortForward`] for a host outside the
//!   cluster network, at a loopback listener per pod and port whose
//!   connections the API server port-forwards to the pod (the listener
//!   closes when the pod is gone); a stdio server through pod attach.
//! - Pods run under the restricted Pod Security profile by default.
//! - Deployments the library did not create, labelled
//!   `app.kubernetes.io/component=mcp-server` (configurable:
//!   [`KubernetesConfig::adopt_selector`]), are found by
//!   [`KubernetesOrchestrator::adoptable`] and adopted by a spec whose
//!   source is [`Source::Existing`](mcp_lifecycle::Source::Existing): listed,
//!   probed, started, stopped and scaled, their template never changed.
//! - [`KubernetesStore`] implements the [`mcp_lifecycle::Store`] port in a
//!   namespace (a ConfigMap per record, a coordination.k8s.io Lease per
//!   lease, compare-and-swap on `resourceVersion`), so host replicas share
//!   state and leader election through the cluster with no database. Its
//!   fencing and the one-round-trip window it leaves are documented on the
//!   type.
//! - Two [`mcp_lifecycle::ImageResolver`]s for image freshness:
//!   [`ProbePodResolver`] pulls in a short-lived pod (the cluster's own
//!   mirrors and credentials); [`PullSecretResolver`] asks the registry
//!   with the credentials of the servers' image pull Secrets
//!   (`dockerconfigjson` or legacy `dockercfg`, else the service account's),
//!   read at every resolution and matched to the image as the kubelet
//!   matches them.
//!
//! The library crate leaves k8s-openapi's version feature to the binary
//! that links it (`k8s-openapi = { version = "0.29", features = ["v1_33"] }`
//! or whichever the host targets).
//!
//! ```no_run
//! # async fn run() -> mcp_lifecycle::Result<()> {
//! use std::sync::Arc;
//! use mcp_lifecycle::Lifecycle;
//! use mcp_lifecycle_k8s::{KubernetesConfig, KubernetesOrchestrator};
//!
//! let backend = KubernetesOrchestrator::builder()
//!     .config(KubernetesConfig { namespace: "mcp".into(), ..Default::default() })
//!     .build()
//!     .await?;
//! let lifecycle = Lifecycle::builder()
//!     .orchestrator(Arc::new(backend))
//!     .build()
//!     .await?;
//! # let _ = lifecycle; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::print_stdout,
        clippy::print_stderr
    )
)]

mod adopt;
mod config;
mod docker_config_json;
mod endpoints;
mod errors;
mod observe;
mod orchestrator;
mod port_forward;
mod pull_secrets;
mod resolver;
mod store;
mod watch;
mod workload;

pub use adopt::TRANSPORT_ANNOTATION;
pub use config::{
    DEFAULT_ADOPT_LABEL, KubernetesConfig, PodAccess, READINESS_GATE_OPT_OUT, ServiceExposure,
};
pub use errors::Forbidden;
pub use orchestrator::{KubernetesOrchestrator, KubernetesOrchestratorBuilder};
pub use pull_secrets::{PullSecretResolver, PullSecretResolverBuilder};
pub use resolver::{ProbePodResolver, ROLE_LABEL};
pub use store::{KubernetesStore, KubernetesStoreBuilder, STORE_LABEL};
pub use workload::READY_GATE;
