//! Where a server's Service can be reached, as cortex-resource-manager
//! reports it: the ClusterIP, the cluster DNS name, each NodePort on the
//! nodes its pods run on, and load balancer IPs or hostnames. Pure: reads
//! the watch caches' objects.

use k8s_openapi::api::core::v1::{Pod, Service};
use mcp_lifecycle::ports::{Endpoint, EndpointKind};

use crate::workload::ENDPOINT_ANNOTATION;

/// The endpoints of `service` in `namespace`; `pods` are the server's pods
/// (their nodes' addresses carry a NodePort).
pub(crate) fn endpoints(service: &Service, namespace: &str, pods: &[&Pod]) -> Vec<Endpoint> {
    let Some(name) = service.metadata.name.as_deref() else {
        return Vec::new();
    };
    let path = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENDPOINT_ANNOTATION))
        .and_then(|e| e.split_whitespace().nth(2))
        .unwrap_or("/");
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let Some(port) = spec.ports.as_ref().and_then(|p| p.first()) else {
        return Vec::new();
    };
    let url = |host: &str, port: i32| format!("http://{host}:{port}{path}");
    let mut out = Vec::new();
    if let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        out.push(Endpoint {
            kind: EndpointKind::ClusterIp,
            url: url(ip, port.port),
        });
    }
    out.push(Endpoint {
        kind: EndpointKind::ClusterDns,
        url: url(&format!("{name}.{namespace}.svc.cluster.local"), port.port),
    });
    if let Some(node_port) = port.node_port {
        let mut hosts: Vec<&str> = pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.host_ip.as_deref())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        out.extend(hosts.into_iter().map(|host| Endpoint {
            kind: EndpointKind::NodePort,
            url: url(host, node_port),
        }));
    }
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for entry in ingress.into_iter().flatten() {
        if let Some(host) = entry.ip.as_deref().or(entry.hostname.as_deref()) {
            out.push(Endpoint {
                kind: EndpointKind::LoadBalancer,
                url: url(host, port.port),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_address_a_service_has_is_reported() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "echo", "annotations": {ENDPOINT_ANNOTATION: "http 8080 /mcp"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.7",
                "ports": [{"port": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(json!({"status": {"hostIP": "192.0.2.2"}})).unwrap();
        let got = endpoints(&service, "mcp", &[&pod, &pod]);
        let urls: Vec<(EndpointKind, &str)> =
            got.iter().map(|e| (e.kind, e.url.as_str())).collect();
        assert_eq!(
            urls,
            vec![
                (EndpointKind::ClusterIp, "http://10.0.0.7:8080/mcp"),
                (
                    EndpointKind::ClusterDns,
                    "http://echo.mcp.svc.cluster.local:8080/mcp"
                ),
                (EndpointKind::NodePort, "http://192.0.2.2:30080/mcp"),
                (EndpointKind::LoadBalancer, "http://203.0.113.9:8080/mcp"),
                (EndpointKind::LoadBalancer, "http://lb.example:8080/mcp"),
            ]
        );
    }

    #[test]
    fn a_headless_service_has_only_its_dns_name() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "echo"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let got = endpoints(&service, "ns", &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, EndpointKind::ClusterDns);
        assert_eq!(got[0].url, "http://echo.ns.svc.cluster.local:80/");
    }
}
