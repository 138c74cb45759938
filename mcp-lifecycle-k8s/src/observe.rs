//! What a pod says about its replica: [`observe`] turns a `Pod` from the
//! watch cache into the port's [`InstanceObservation`], with the runtime's
//! restart count, waiting reason, last exit, back-off and the readiness
//! gate's condition. Pure: no API calls.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use mcp_lifecycle::Timestamp;
use mcp_lifecycle::ports::{
    InstanceId, InstanceObservation, ReplicaDetail, RuntimeStatus, WaitingReason, labels,
};

use crate::workload::{CONTAINER, READY_GATE};

/// The observation of one managed pod, or `None` for a pod without the
/// server label.
pub(crate) fn observe(pod: &Pod) -> Option<InstanceObservation> {
    let server = pod.metadata.labels.as_ref()?.get(labels::SERVER)?.clone();
    observe_as(pod, server)
}

/// The observation of one pod as a replica of `server` (an adopted
/// Deployment's pods carry no server label of ours).
pub(crate) fn observe_as(pod: &Pod, server: String) -> Option<InstanceObservation> {
    let name = pod.metadata.name.clone()?;
    let pod_labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
    let spec_hash = pod_labels
        .get(labels::SPEC_HASH)
        .cloned()
        .unwrap_or_default();
    let status = pod.status.as_ref();
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == CONTAINER).or(all.first()));

    let mut detail = ReplicaDetail {
        terminating: pod.metadata.deletion_timestamp.is_some(),
        ready_gate: status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|all| all.iter().find(|c| c.type_ == READY_GATE))
            .map(|c| c.status == "True"),
        ..ReplicaDetail::default()
    };
    let mut runtime = RuntimeStatus::Created;
    let mut started_at = None;
    if let Some(c) = container {
        detail.restarts = u32::try_from(c.restart_count).unwrap_or(0);
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        detail.last_exit_code = last.map(|t| t.exit_code);
        detail.last_oom_killed = last.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
        let state = c.state.as_ref();
        if let Some(running) = state.and_then(|s| s.running.as_ref()) {
            runtime = RuntimeStatus::Running;
            started_at = running
                .started_at
                .as_ref()
                .map(|t| Timestamp::from(SystemTime::from(t.0)));
        } else if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting
                .reason
                .clone()
                .unwrap_or_else(|| "Waiting".to_owned());
            // ContainerCreating and PodInitializing are progress, not trouble.
            if !matches!(reason.as_str(), "ContainerCreating" | "PodInitializing") {
                detail.next_retry_at = next_retry(c, waiting.message.as_deref());
                if reason == "CrashLoopBackOff" {
                    runtime = RuntimeStatus::Exited {
                        code: detail.last_exit_code,
                        oom_killed: detail.last_oom_killed,
                        reason: Some(reason.clone()),
                    };
                }
                detail.waiting = Some(WaitingReason {
                    reason,
                    message: waiting.message.clone(),
                });
            }
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            runtime = RuntimeStatus::Exited {
                code: Some(t.exit_code),
                oom_killed: t.reason.as_deref() == Some("OOMKilled"),
                reason: t.reason.clone(),
            };
            detail.last_exit_code = Some(t.exit_code);
            detail.last_oom_killed = t.reason.as_deref() == Some("OOMKilled");
        }
    } else if let Some(unschedulable) = status.and_then(|s| s.conditions.as_ref()).and_then(|all| {
        all.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
    }) {
        detail.waiting = Some(WaitingReason {
            reason: "Unschedulable".to_owned(),
            message: unschedulable.message.clone(),
        });
    }
    Some(InstanceObservation {
        id: InstanceId::from_raw(name),
        server,
        spec_hash,
        status: runtime,
        image_digest: container.and_then(running_digest),
        labels: pod_labels,
        started_at,
        replica: Some(detail),
    })
}

/// The repository digest a container runs: the kubelet reports
/// `docker-pullable://REPO@sha256:…` once the image came from a registry,
/// and only an image ID (`docker://sha256:…`, not a digest) otherwise.
fn running_digest(c: &ContainerStatus) -> Option<String> {
    let (_, digest) = c.image_id.split_once('@')?;
    digest.starts_with("sha256:").then(|| digest.to_owned())
}

/// The end of the kubelet's back-off: its message says `back-off 40s
/// restarting failed container=…`, counted from the last run's end.
fn next_retry(c: &ContainerStatus, message: Option<&str>) -> Option<Timestamp> {
    let message = message?;
    let after = message.split("back-off ").nth(1)?;
    let word = after.split_whitespace().next()?;
    let wait = parse_go_duration(word)?;
    let finished = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| Timestamp::from(SystemTime::from(t.0)))?;
    Some(finished + wait)
}

/// Parses a Go duration as the kubelet prints it (`40s`, `1m20s`, `5m0s`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut any = false;
    for ch in text.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            number.push(ch);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let unit = match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(value * unit);
        any = true;
    }
    (any && number.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn base(status: serde_json::Value) -> Pod {
        pod(json!({
            "metadata": {
                "name": "echo-7d9f-abcde",
                "labels": {
                    "mcp-lifecycle.dev/server": "echo",
                    "mcp-lifecycle.dev/spec-hash": "h1",
                    "mcp-lifecycle.dev/managed-by": "mcp-lifecycle"
                }
            },
            "status": status
        }))
    }

    #[test]
    fn a_crash_loop_reports_restarts_reason_exit_code_and_back_off() {
        let obs = observe(&base(json!({
            "containerStatuses": [{
                "name": "mcp", "image": "x", "imageID": "", "ready": false,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                    "message": "back-off 1m20s restarting failed container=mcp pod=echo"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                    "finishedAt": "2026-01-01T00:00:00Z"}}
            }]
        })))
        .unwrap();
        let detail = obs.replica.unwrap();
        assert_eq!(detail.restarts, 4);
        assert_eq!(detail.last_exit_code, Some(3));
        assert_eq!(detail.waiting.unwrap().reason, "CrashLoopBackOff");
        let finished = Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600));
        assert_eq!(
            detail.next_retry_at,
            Some(finished + Duration::from_secs(80))
        );
        assert!(matches!(
            obs.status,
            RuntimeStatus::Exited { code: Some(3), .. }
        ));
    }

    #[test]
    fn an_image_pull_failure_is_waiting_not_exited() {
        let obs = observe(&base(json!({
            "containerStatuses": [{
                "name": "mcp", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
            }]
        })))
        .unwrap();
        assert_eq!(obs.status, RuntimeStatus::Created);
        let waiting = obs.replica.unwrap().waiting.unwrap();
        assert_eq!(waiting.reason, "ErrImagePull");
        assert_eq!(waiting.message.as_deref(), Some("not found"));
    }

    #[test]
    fn creating_is_progress_and_unschedulable_carries_the_schedulers_message() {
        let creating = observe(&base(json!({
            "containerStatuses": [{
                "name": "mcp", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]
        })))
        .unwrap();
        assert_eq!(creating.replica.unwrap().waiting, None);
        let pending = observe(&base(json!({
            "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/1 nodes are available"}]
        })))
        .unwrap();
        let waiting = pending.replica.unwrap().waiting.unwrap();
        assert_eq!(waiting.reason, "Unschedulable");
        assert_eq!(waiting.message.as_deref(), Some("0/1 nodes are available"));
    }

    #[test]
    fn running_reports_the_digest_only_from_a_registry_and_the_gate() {
        let obs = observe(&base(json!({
            "conditions": [{"type": READY_GATE, "status": "True"}],
            "containerStatuses": [{
                "name": "mcp", "image": "x", "ready": true, "restartCount": 1,
                "imageID": "docker-pullable://127.0.0.1:5000/t@sha256:abc",
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
            }]
        })))
        .unwrap();
        assert_eq!(obs.status, RuntimeStatus::Running);
        assert_eq!(obs.image_digest.as_deref(), Some("sha256:abc"));
        let detail = obs.replica.unwrap();
        assert_eq!(detail.ready_gate, Some(true));
        assert!(detail.last_oom_killed);
        let local = observe(&base(json!({
            "containerStatuses": [{
                "name": "mcp", "image": "x", "ready": true, "restartCount": 0,
                "imageID": "docker://sha256:def", "state": {"running": {}}
            }]
        })))
        .unwrap();
        assert_eq!(local.image_digest, None);
    }

    #[test]
    fn go_durations_parse_as_the_kubelet_prints_them() {
        assert_eq!(parse_go_duration("40s"), Some(Duration::from_secs(40)));
        assert_eq!(parse_go_duration("5m0s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("40"), None);
        assert_eq!(parse_go_duration("x"), None);
    }
}
