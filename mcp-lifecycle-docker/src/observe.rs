//! What a container inspect says about an instance: its
//! [`InstanceObservation`] (status with exit code, OOM kill and restart count,
//! labels, start time) and the transport it was created for.
//!
//! This module owns the mapping from engine state to the port's
//! [`RuntimeStatus`]. It must not make engine calls of its own (the digest
//! is looked up by the caller) nor decide what a state means for the
//! instance's lifecycle.

use std::collections::BTreeMap;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use mcp_lifecycle::ports::{InstanceObservation, RuntimeStatus, labels};
use mcp_lifecycle::spec::Transport;
use mcp_lifecycle::{InstanceId, Timestamp};

/// The label holding the instance's [`Transport`] as JSON, so `connect` and
/// `logs` know how the container talks, also after a host restart.
pub const TRANSPORT_LABEL: &str = "mcp-lifecycle.dev/transport";

/// The parts of an inspect the backend needs, with labels as a sorted map.
pub(crate) struct Inspected {
    /// The engine's container id.
    pub(crate) container_id: String,
    /// The instance, from its label (or the id it was looked up by).
    pub(crate) instance: InstanceId,
    /// The server, from its label.
    pub(crate) server: String,
    /// The image id the container runs.
    pub(crate) image_id: String,
    /// The image reference it was created from.
    pub(crate) configured_image: String,
    /// All its labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Its status.
    pub(crate) status: RuntimeStatus,
    /// When it last started.
    pub(crate) started_at: Option<Timestamp>,
    /// The transport it was created for (stdio if the label is missing).
    pub(crate) transport: Transport,
    /// Whether it is running (or restarting, or paused).
    pub(crate) running: bool,
    /// The raw inspect, for addresses and ports.
    pub(crate) raw: ContainerInspectResponse,
}

impl Inspected {
    /// Reads an inspect response. `looked_up` is the instance id used to
    /// find it, for containers whose labels were tampered with.
    pub(crate) fn new(raw: ContainerInspectResponse, looked_up: Option<&InstanceId>) -> Self {
        let labels: BTreeMap<String, String> = raw
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let instance = labels
            .get(labels::INSTANCE)
            .map(InstanceId::from_raw)
            .or_else(|| looked_up.cloned())
            .unwrap_or_else(|| InstanceId::from_raw(raw.name.clone().unwrap_or_default()));
        let server = labels.get(labels::SERVER).cloned().unwrap_or_default();
        let transport = labels
            .get(TRANSPORT_LABEL)
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let state = raw.state.clone().unwrap_or_default();
        let running = matches!(
            state.status,
            Some(
                ContainerStateStatusEnum::RUNNING
                    | ContainerStateStatusEnum::RESTARTING
                    | ContainerStateStatusEnum::PAUSED
            )
        ) || (state.status.is_none() && state.running == Some(true));
        let status = status_of(&state, raw.restart_count.unwrap_or(0), running);
        let started_at = state.started_at.as_deref().and_then(parse_rfc3339);
        Inspected {
            container_id: raw.id.clone().unwrap_or_default(),
            instance,
            server,
            image_id: raw.image.clone().unwrap_or_default(),
            configured_image: raw
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            labels,
            status,
            started_at,
            transport,
            running,
            raw,
        }
    }

    /// The port's observation, with the digest the caller looked up.
    pub(crate) fn observation(&self, image_digest: Option<String>) -> InstanceObservation {
        InstanceObservation {
            id: self.instance.clone(),
            server: self.server.clone(),
            spec_hash: self
                .labels
                .get(labels::SPEC_HASH)
                .cloned()
                .unwrap_or_default(),
            status: self.status.clone(),
            image_digest,
            labels: self.labels.clone(),
            started_at: self.started_at,
            replica: None,
        }
    }

    /// The container's IP address on `network` (by name), if it has one.
    pub(crate) fn address_on(&self, network: &str) -> Option<String> {
        let networks = self.raw.network_settings.as_ref()?.networks.as_ref()?;
        networks
            .get(network)
            .and_then(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
    }

    /// The host port `container_port/tcp` is published on, if it is.
    pub(crate) fn published_port(&self, container_port: u16) -> Option<(String, u16)> {
        let ports = self.raw.network_settings.as_ref()?.ports.as_ref()?;
        let bindings = ports.get(&format!("{container_port}/tcp"))?.as_ref()?;
        bindings.iter().find_map(|b| {
            let port = b.host_port.as_deref()?.parse::<u16>().ok()?;
            let ip = match b.host_ip.as_deref() {
                None | Some("") | Some("0.0.0.0") => "127.0.0.1".to_owned(),
                Some("::") => "[::1]".to_owned(),
                Some(ip) => ip.to_owned(),
            };
            Some((ip, port))
        })
    }
}

/// The port's status for an engine state.
fn status_of(
    state: &bollard::models::ContainerState,
    restart_count: i64,
    running: bool,
) -> RuntimeStatus {
    if running {
        return RuntimeStatus::Running;
    }
    let error = state.error.clone().filter(|e| !e.is_empty());
    let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
    let oom_killed = state.oom_killed.unwrap_or(false);
    // A real start time (never started is the zero time, which does not
    // parse) means the container has run.
    let has_run = state
        .started_at
        .as_deref()
        .and_then(parse_rfc3339)
        .is_some();
    match state.status {
        // Created and never started, unless a start failed (then the engine
        // records the error and an exit code on a container still "created").
        Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None
            if error.is_none() && !has_run =>
        {
            RuntimeStatus::Created
        }
        // Podman sometimes leaves a container that started and exited at
        // once as "created", with exit code 0 whatever the process returned:
        // it is not running, and its recorded code is not to be trusted (the
        // orchestrator fills in the code its `die` event announced).
        Some(ContainerStateStatusEnum::CREATED) if error.is_none() => RuntimeStatus::Exited {
            code: None,
            oom_killed,
            reason: Some("exited right after its start".to_owned()),
        },
        _ => {
            let mut reason = match (&error, oom_killed, code) {
                (Some(error), _, _) => error.clone(),
                (None, true, _) => "killed for exceeding its memory limit (OOMKilled)".to_owned(),
                (None, false, Some(code)) => format!("exited with code {code}"),
                (None, false, None) => "exited".to_owned(),
            };
            if restart_count > 0 {
                reason.push_str(&format!(" (restarted {restart_count} times by the engine)"));
            }
            RuntimeStatus::Exited {
                code,
                oom_killed,
                reason: Some(reason),
            }
        }
    }
}

/// Parses the engine's RFC 3339 times (`2024-05-07T21:09:36.123456789Z`,
/// offsets allowed). The zero time `0001-01-01T00:00:00Z` is `None`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let (date, rest) = text.split_once('T')?;
    let mut ymd = date.splitn(3, '-');
    let year: i64 = ymd.next()?.parse().ok()?;
    let month: u32 = ymd.next()?.parse().ok()?;
    let day: u32 = ymd.next()?.parse().ok()?;
    if year < 1970 {
        return None;
    }
    let (clock, offset_secs) = split_offset(rest)?;
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, fraction),
        None => (clock, ""),
    };
    let mut parts = hms.splitn(3, ':');
    let hour: i64 = parts.next()?.parse().ok()?;
    let minute: i64 = parts.next()?.parse().ok()?;
    let second: i64 = parts.next()?.parse().ok()?;
    let millis: i64 = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(3).collect();
        let value: i64 = digits.parse().ok()?;
        value * 10_i64.pow(3 - u32::try_from(digits.len()).ok()?)
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let total = secs.checked_mul(1000)?.checked_add(millis)?;
    u64::try_from(total).ok().map(Timestamp::from_millis)
}

/// Splits `hh:mm:ss[.frac](Z|±hh:mm)` into the clock and the offset in seconds.
fn split_offset(rest: &str) -> Option<(&str, i64)> {
    if let Some(clock) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
        return Some((clock, 0));
    }
    let at = rest.rfind(['+', '-'])?;
    let (clock, offset) = rest.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let (h, m) = offset[1..].split_once(':')?;
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    Some((clock, sign * (h * 3600 + m * 60)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    #[test]
    fn parses_engine_times() {
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.5Z"),
            Some(Timestamp::from_millis(1500))
        );
        assert_eq!(
            parse_rfc3339("2024-05-07T21:09:36.123456789Z"),
            Some(Timestamp::from_millis(1_715_116_176_123))
        );
        assert_eq!(
            parse_rfc3339("2024-05-07T23:09:36+02:00"),
            Some(Timestamp::from_millis(1_715_116_176_000))
        );
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn maps_engine_states() {
        let exited = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            oom_killed: Some(true),
            ..ContainerState::default()
        };
        match status_of(&exited, 0, false) {
            RuntimeStatus::Exited {
                code: Some(137),
                oom_killed: true,
                reason: Some(reason),
            } => assert!(reason.contains("OOM"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
        let created = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            started_at: Some("0001-01-01T00:00:00Z".into()),
            ..ContainerState::default()
        };
        assert_eq!(status_of(&created, 0, false), RuntimeStatus::Created);
        // Podman, after a container started and exited at once: "created",
        // with the start it had and a code of 0 that is not the process's.
        let ran = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            started_at: Some("2026-12-01T17:17:56.306856469Z".into()),
            finished_at: Some("2026-12-01T17:17:56.308271468Z".into()),
            exit_code: Some(0),
            ..ContainerState::default()
        };
        assert_eq!(
            status_of(&ran, 0, false),
            RuntimeStatus::Exited {
                code: None,
                oom_killed: false,
                reason: Some("exited right after its start".into()),
            },
            "a container that has run is not created, and its 0 is not trusted"
        );
        let failed_start = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            exit_code: Some(127),
            error: Some("exec: \"/nope\": no such file".into()),
            ..ContainerState::default()
        };
        assert!(matches!(
            status_of(&failed_start, 0, false),
            RuntimeStatus::Exited {
                code: Some(127),
                ..
            }
        ));
        assert_eq!(status_of(&exited, 0, true), RuntimeStatus::Running);
    }
}
