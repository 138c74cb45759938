//! The backend's configuration: where servers run (namespace), how their
//! pods are scheduled and secured, and how they are exposed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

/// The label a spec sets to `"off"` to run its pods without the MCP
/// readiness gate (the cluster then routes to a pod once its container runs).
pub const READINESS_GATE_OPT_OUT: &str = "mcp-lifecycle.dev/readiness-gate";

/// The label cortex-resource-manager finds MCP server Deployments by, and
/// the default adoption selector: `app.kubernetes.io/component=mcp-server`.
pub const DEFAULT_ADOPT_LABEL: (&str, &str) = ("app.kubernetes.io/component", "mcp-server");

/// How the Service of an HTTP or SSE server is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceExposure {
    /// A cluster-internal address (`ClusterIP`).
    #[default]
    ClusterIp,
    /// A port on every node (`NodePort`).
    NodePort,
    /// A cloud load balancer (`LoadBalancer`).
    LoadBalancer,
}

impl ServiceExposure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ServiceExposure::ClusterIp => "ClusterIP",
            ServiceExposure::NodePort => "NodePort",
            ServiceExposure::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How probes and `peer` reach an HTTP or SSE server's pods (each pod
/// itself, not its Service: readiness is per pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodAccess {
    /// At the pod IP and the container port: for a host inside the cluster
    /// network (a pod itself, or a node).
    #[default]
    PodIp,
    /// Through the API server's port-forward (`pods/portforward`), for a
    /// host outside the cluster network. The backend listens on a loopback
    /// port per pod and port (`127.0.0.1`, chosen by the system), reused
    /// while the pod exists and closed when it is gone; each connection to
    /// it opens a port-forward to the pod.
    PortForward,
}

/// Settings for [`crate::KubernetesOrchestrator`]. Defaults: namespace
/// `default`, field manager `mcp-lifecycle`, the restricted Pod Security
/// profile with a read-only root filesystem, no service account token,
/// `ClusterIP` Services, pods reached at their IP, 512Mi and 1 CPU as
/// limits when a spec sets none, adoption of Deployments labelled
/// `app.kubernetes.io/component=mcp-server`.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// The namespace every workload goes to.
    pub namespace: String,
    /// The server-side apply field manager.
    pub field_manager: String,
    /// How Services are exposed.
    pub exposure: ServiceExposure,
    /// How probes and `peer` reach each pod of an HTTP or SSE server.
    pub pod_access: PodAccess,
    /// Image pull secrets: names of `kubernetes.io/dockerconfigjson` (or
    /// legacy `kubernetes.io/dockercfg`) Secrets in the namespace, which
    /// [`crate::PullSecretResolver`] reads too.
    pub image_pull_secrets: Vec<String>,
    /// Node selector for every pod.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for every pod.
    pub tolerations: Vec<Toleration>,
    /// The service account pods run as (the namespace's default when `None`).
    pub service_account: Option<String>,
    /// Whether pods get a service account token mounted.
    pub automount_service_account_token: bool,
    /// Whether the container's root filesystem is read-only.
    pub read_only_root_filesystem: bool,
    /// The user id containers run as, when the image's own user is not numeric.
    pub run_as_user: Option<i64>,
    /// Memory limit for specs that set none.
    pub default_memory: String,
    /// CPU limit for specs that set none.
    pub default_cpu: String,
    /// The labels (all must match, on the Deployment and on its pod
    /// template) of Deployments the library did not create that servers
    /// may adopt with [`Source::Existing`](mcp_lifecycle::Source::Existing);
    /// their pods are watched by it. `None` turns adoption off. Default:
    /// [`DEFAULT_ADOPT_LABEL`].
    pub adopt_selector: Option<BTreeMap<String, String>>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: "default".to_owned(),
            field_manager: "mcp-lifecycle".to_owned(),
            exposure: ServiceExposure::default(),
            pod_access: PodAccess::default(),
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            service_account: None,
            automount_service_account_token: false,
            read_only_root_filesystem: true,
            run_as_user: None,
            default_memory: "512Mi".to_owned(),
            default_cpu: "1".to_owned(),
            adopt_selector: Some(BTreeMap::from([(
                DEFAULT_ADOPT_LABEL.0.to_owned(),
                DEFAULT_ADOPT_LABEL.1.to_owned(),
            )])),
        }
    }
}
