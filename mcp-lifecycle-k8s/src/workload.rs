//! The objects one server becomes: a Deployment (replicas, rolling updates
//! that wait for the MCP readiness gate, the restricted security profile), a
//! Service for HTTP and SSE servers, and a Secret holding the values of the
//! spec's secret environment variables (so they never sit in the
//! Deployment). Pure: builds objects, makes no API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, LocalObjectReference,
    PodReadinessGate, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_lifecycle::ports::{ResolvedEnv, WorkloadSpec, labels};
use mcp_lifecycle::{Error, Result, Source, Transport};

use crate::config::{KubernetesConfig, READINESS_GATE_OPT_OUT};

/// The pod condition the library sets from its MCP probes.
pub const READY_GATE: &str = "mcp-lifecycle.dev/mcp-ready";

/// The pod annotation saying how MCP is spoken to a replica
/// (`stdio`, `http PORT PATH`, `sse PORT PATH`).
pub(crate) const ENDPOINT_ANNOTATION: &str = "mcp-lifecycle.dev/endpoint";

/// The endpoint annotation's value for a transport.
pub(crate) fn endpoint(transport: &Transport) -> String {
    match transport {
        Transport::Stdio => "stdio".to_owned(),
        Transport::Http { port, path } => format!("http {port} {path}"),
        Transport::Sse { port, path } => format!("sse {port} {path}"),
    }
}

/// The name of the one container in each pod.
pub(crate) const CONTAINER: &str = "mcp";

/// The labels that select a server's pods (also the Deployment's selector,
/// which never changes after creation).
pub(crate) fn selector(manager: &str, server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_owned(), manager.to_owned()),
        (labels::SERVER.to_owned(), server.to_owned()),
    ])
}

/// The Service's name: the server's, made a DNS-1035 label (it must start
/// with a letter).
pub(crate) fn service_name(server: &str) -> String {
    if server.starts_with(|c: char| c.is_ascii_lowercase()) {
        server.to_owned()
    } else {
        let mut name = format!("mcp-{server}");
        name.truncate(63);
        name.trim_end_matches('-').to_owned()
    }
}

/// The name of the Secret holding a server's secret environment values.
pub(crate) fn env_secret_name(server: &str) -> String {
    format!("{server}-mcp-env")
}

/// The image the pods run. Only image sources run on Kubernetes.
fn image(workload: &WorkloadSpec) -> Result<&str> {
    match &workload.template.source {
        Source::Image(image) => Ok(image),
        Source::Command(_) => Err(Error::invalid(
            "source",
            "the Kubernetes backend runs images; a command source needs the local backend",
        )),
        Source::Existing(_) => Err(Error::invalid(
            "source",
            "an existing workload is adopted, not built from a template",
        )),
    }
}

/// Whether the spec keeps the MCP readiness gate (the default).
pub(crate) fn gated(workload: &WorkloadSpec) -> bool {
    workload
        .template
        .labels
        .get(READINESS_GATE_OPT_OUT)
        .is_none_or(|v| v != "off")
}

/// The Deployment for a server.
pub(crate) fn deployment(
    workload: &WorkloadSpec,
    config: &KubernetesConfig,
    manager: &str,
) -> Result<Deployment> {
    let t = &workload.template;
    let image = image(workload)?;
    let stdio = matches!(t.transport, Transport::Stdio);
    let port = match &t.transport {
        Transport::Http { port, .. } | Transport::Sse { port, .. } => Some(*port),
        Transport::Stdio => None,
    };
    let env = t
        .env
        .iter()
        .map(|(name, value)| match value {
            ResolvedEnv::Plain(v) => EnvVar {
                name: name.clone(),
                value: Some(v.clone()),
                value_from: None,
            },
            ResolvedEnv::Secret(_) => EnvVar {
                name: name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: env_secret_name(&t.server),
                        key: name.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            },
        })
        .collect::<Vec<_>>();
    let memory = t
        .resources
        .memory
        .clone()
        .unwrap_or_else(|| config.default_memory.clone());
    let cpu = t
        .resources
        .cpu
        .clone()
        .unwrap_or_else(|| config.default_cpu.clone());
    let limits = BTreeMap::from([
        ("memory".to_owned(), Quantity(memory)),
        ("cpu".to_owned(), Quantity(cpu)),
    ]);
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: (!env.is_empty()).then_some(env),
        ports: port.map(|p| {
            vec![ContainerPort {
                container_port: i32::from(p),
                name: Some("mcp".to_owned()),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]
        }),
        stdin: stdio.then_some(true),
        stdin_once: stdio.then_some(false),
        tty: stdio.then_some(false),
        resources: Some(ResourceRequirements {
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            read_only_root_filesystem: Some(config.read_only_root_filesystem),
            run_as_non_root: Some(true),
            run_as_user: config.run_as_user,
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    let pod_labels = t.labels.clone();
    let grace = i64::try_from(t.stop_grace_period.as_secs()).unwrap_or(i64::MAX);
    let pod = PodSpec {
        containers: vec![container],
        readiness_gates: gated(workload).then(|| {
            vec![PodReadinessGate {
                condition_type: READY_GATE.to_owned(),
            }]
        }),
        termination_grace_period_seconds: Some(grace),
        automount_service_account_token: Some(config.automount_service_account_token),
        service_account_name: config.service_account.clone(),
        image_pull_secrets: (!config.image_pull_secrets.is_empty()).then(|| {
            config
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        node_selector: (!config.node_selector.is_empty()).then(|| config.node_selector.clone()),
        tolerations: (!config.tolerations.is_empty()).then(|| config.tolerations.clone()),
        restart_policy: Some("Always".to_owned()),
        ..PodSpec::default()
    };
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(t.server.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(t.labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(workload.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector(manager, &t.server)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        ENDPOINT_ANNOTATION.to_owned(),
                        endpoint(&t.transport),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The Service for an HTTP or SSE server (`None` for stdio).
pub(crate) fn service(
    workload: &WorkloadSpec,
    config: &KubernetesConfig,
    manager: &str,
) -> Option<Service> {
    let t = &workload.template;
    let port = match &t.transport {
        Transport::Http { port, .. } | Transport::Sse { port, .. } => *port,
        Transport::Stdio => return None,
    };
    Some(Service {
        metadata: ObjectMeta {
            name: Some(service_name(&t.server)),
            namespace: Some(config.namespace.clone()),
            labels: Some(selector(manager, &t.server)),
            annotations: Some(BTreeMap::from([(
                ENDPOINT_ANNOTATION.to_owned(),
                endpoint(&t.transport),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(config.exposure.as_str().to_owned()),
            selector: Some(selector(manager, &t.server)),
            ports: Some(vec![ServicePort {
                name: Some("mcp".to_owned()),
                port: i32::from(port),
                target_port: Some(IntOrString::String("mcp".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The Secret with the values of the spec's secret variables (`None` when
/// it has none). Values go as `stringData`, which the API server stores
/// base64-encoded.
pub(crate) fn env_secret(
    workload: &WorkloadSpec,
    config: &KubernetesConfig,
    manager: &str,
) -> Option<Secret> {
    let t = &workload.template;
    let data: BTreeMap<String, String> = t
        .env
        .iter()
        .filter_map(|(name, value)| match value {
            ResolvedEnv::Secret(secret) => Some((name.clone(), secret.expose().to_owned())),
            ResolvedEnv::Plain(_) => None,
        })
        .collect();
    if data.is_empty() {
        return None;
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(env_secret_name(&t.server)),
            namespace: Some(config.namespace.clone()),
            labels: Some(selector(manager, &t.server)),
            ..ObjectMeta::default()
        },
        string_data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mcp_lifecycle::SecretValue;
    use mcp_lifecycle::ports::{InstanceId, InstanceSpec};
    use mcp_lifecycle::spec::Resources;

    use super::*;

    fn workload(transport: Transport) -> WorkloadSpec {
        WorkloadSpec {
            template: InstanceSpec {
                id: InstanceId::from_raw("echo"),
                server: "echo".into(),
                spec_hash: "h1".into(),
                source: Source::Image("mcp-lifecycle/test-server:v1".into()),
                transport,
                env: vec![
                    ("PLAIN".into(), ResolvedEnv::Plain("p".into())),
                    (
                        "TOKEN".into(),
                        ResolvedEnv::Secret(SecretValue::new("s3cret-value")),
                    ),
                ],
                resources: Resources {
                    memory: Some("64Mi".into()),
                    cpu: None,
                },
                labels: BTreeMap::from([
                    (labels::SERVER.to_owned(), "echo".to_owned()),
                    (labels::MANAGED_BY.to_owned(), "m".to_owned()),
                    (labels::SPEC_HASH.to_owned(), "h1".to_owned()),
                ]),
                stop_grace_period: Duration::from_secs(7),
            },
            replicas: 2,
        }
    }

    #[test]
    fn the_deployment_is_gated_restricted_and_holds_no_secret_value() {
        let w = workload(Transport::Http {
            port: 8080,
            path: "/mcp".into(),
        });
        let d = deployment(&w, &KubernetesConfig::default(), "m").unwrap();
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("s3cret-value"), "{text}");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.readiness_gates.unwrap()[0].condition_type, READY_GATE);
        assert_eq!(pod.termination_grace_period_seconds, Some(7));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL"]);
        let limits = c.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["memory"].0, "64Mi");
        assert_eq!(limits["cpu"].0, "1");
        let token = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .find(|e| e.name == "TOKEN")
            .unwrap();
        assert_eq!(
            token.value_from.unwrap().secret_key_ref.unwrap().name,
            "echo-mcp-env"
        );
        let secret = env_secret(&w, &KubernetesConfig::default(), "m").unwrap();
        assert_eq!(secret.string_data.unwrap()["TOKEN"], "s3cret-value");
        assert!(service(&w, &KubernetesConfig::default(), "m").is_some());
    }

    #[test]
    fn stdio_pods_keep_stdin_open_and_get_no_service() {
        let w = workload(Transport::Stdio);
        let d = deployment(&w, &KubernetesConfig::default(), "m").unwrap();
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.stdin, Some(true));
        assert_eq!(c.stdin_once, Some(false));
        assert!(service(&w, &KubernetesConfig::default(), "m").is_none());
    }

    #[test]
    fn a_spec_can_opt_out_of_the_gate_and_names_become_service_names() {
        let mut w = workload(Transport::Stdio);
        w.template
            .labels
            .insert(READINESS_GATE_OPT_OUT.to_owned(), "off".to_owned());
        let d = deployment(&w, &KubernetesConfig::default(), "m").unwrap();
        assert!(
            d.spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .readiness_gates
                .is_none()
        );
        assert_eq!(service_name("echo"), "echo");
        assert_eq!(service_name("1echo"), "mcp-1echo");
    }

    #[test]
    fn a_command_source_is_refused() {
        let mut w = workload(Transport::Stdio);
        w.template.source = Source::Command(
            serde_json::from_value(serde_json::json!({"program": "/bin/true"})).unwrap(),
        );
        let err = deployment(&w, &KubernetesConfig::default(), "m").unwrap_err();
        assert_eq!(err.kind(), mcp_lifecycle::ErrorKind::Invalid);
    }
}
