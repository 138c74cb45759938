//! The HTTP client for mcpd's `/api/v1`: one method per route, typed
//! answers, and [`ApiFailure`] carrying the server's JSON error (`code`,
//! `message`, `field`) when a call fails. Owns the wire; prints nothing.

use std::time::Duration;

use anyhow::Context;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use mcp_lifecycle::{LifecycleEvent, ServerStatus, UpdateStatus};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Connection;

/// How long a call may take, beyond what it asks the server to wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call, as the server explained it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({code}, HTTP {status}{})", .field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
pub(crate) struct ApiFailure {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The stable, machine-readable code (`not_found`, `unauthorized`, ...).
    pub(crate) code: String,
    /// What went wrong.
    pub(crate) message: String,
    /// The rejected field, when the error is about one.
    pub(crate) field: Option<String>,
}

/// mcpd's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    field: Option<String>,
}

/// Every server's status (`GET /servers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerList {
    /// By name.
    pub(crate) servers: Vec<ServerStatus>,
}

/// One server (`GET /servers/{name}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerView {
    /// Its status.
    pub(crate) status: ServerStatus,
    /// Where the runtime serves it as a whole.
    pub(crate) endpoints: Vec<mcp_lifecycle::ports::Endpoint>,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Applied {
    /// `created`, `updated` or `unchanged`.
    pub(crate) outcome: String,
    /// The server's status after it.
    pub(crate) status: ServerStatus,
}

/// A status after an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatusBody {
    /// The status.
    pub(crate) status: ServerStatus,
}

/// An update check's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UpdateBody {
    /// The update state after the check.
    pub(crate) update: UpdateStatus,
}

/// Logs by instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Logs {
    /// One entry per instance.
    pub(crate) instances: Vec<InstanceLogs>,
}

/// One instance's lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceLogs {
    /// The instance.
    pub(crate) instance: String,
    /// Its lines, oldest first.
    pub(crate) lines: Vec<String>,
}

/// One item of the event stream.
#[derive(Debug, Clone)]
pub(crate) enum StreamItem {
    /// A lifecycle event.
    Event(Box<LifecycleEvent>),
    /// The stream fell behind and skipped this many events.
    Lagged(u64),
}

/// A client of one mcpd.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    http: reqwest::Client,
    connection: Connection,
}

/// `name` as one URL path segment.
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ApiClient {
    /// A client for the resolved connection.
    pub(crate) fn new(connection: Connection) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(ApiClient { http, connection })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/api/v1{path}", self.connection.server);
        let request = self.http.request(method, url);
        match &self.connection.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder, what: &str) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "{what}: cannot reach mcpd at {}: {e}",
                self.connection.server
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(failure(response).await.into())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> anyhow::Result<T> {
        let response = self.send(request.timeout(CALL_TIMEOUT), what).await?;
        response
            .json()
            .await
            .with_context(|| format!("{what}: reading mcpd's answer"))
    }

    /// `GET /servers`.
    pub(crate) async fn list(&self) -> anyhow::Result<ServerList> {
        self.call(self.request(Method::GET, "/servers"), "listing servers")
            .await
    }

    /// `GET /servers/{name}`.
    pub(crate) async fn get(&self, name: &str) -> anyhow::Result<ServerView> {
        let path = format!("/servers/{}", segment(name));
        self.call(self.request(Method::GET, &path), &format!("getting {name}"))
            .await
    }

    /// `POST /servers` with a YAML spec.
    pub(crate) async fn apply_yaml(&self, yaml: String, what: &str) -> anyhow::Result<Applied> {
        let request = self
            .request(Method::POST, "/servers")
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml);
        self.call(request, what).await
    }

    /// `DELETE /servers/{name}`.
    pub(crate) async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("/servers/{}", segment(name));
        self.send(
            self.request(Method::DELETE, &path).timeout(CALL_TIMEOUT),
            &format!("deleting {name}"),
        )
        .await?;
        Ok(())
    }

    /// `POST /servers/{name}/start`, waiting up to `wait` when given.
    pub(crate) async fn start(
        &self,
        name: &str,
        wait: Option<Duration>,
    ) -> anyhow::Result<StatusBody> {
        let path = format!("/servers/{}/start", segment(name));
        let mut request = self.request(Method::POST, &path);
        let mut timeout = CALL_TIMEOUT;
        if let Some(wait) = wait {
            let millis = wait.as_millis().to_string();
            request = request.query(&[("wait", "true"), ("timeout", &format!("{millis}ms"))]);
            timeout += wait;
        }
        let response = self
            .send(request.timeout(timeout), &format!("starting {name}"))
            .await?;
        response
            .json()
            .await
            .with_context(|| format!("starting {name}: reading mcpd's answer"))
    }

    /// `POST /servers/{name}/stop`.
    pub(crate) async fn stop(&self, name: &str, force: bool) -> anyhow::Result<StatusBody> {
        let path = format!("/servers/{}/stop", segment(name));
        let mode = if force { "force" } else { "graceful" };
        // A graceful stop waits for the spec's grace period.
        let request = self
            .request(Method::POST, &path)
            .query(&[("mode", mode)])
            .timeout(Duration::from_secs(600));
        let response = self.send(request, &format!("stopping {name}")).await?;
        response
            .json()
            .await
            .with_context(|| format!("stopping {name}: reading mcpd's answer"))
    }

    /// `POST /servers/{name}/scale`.
    pub(crate) async fn scale(&self, name: &str, replicas: u32) -> anyhow::Result<StatusBody> {
        let path = format!("/servers/{}/scale", segment(name));
        let request = self
            .request(Method::POST, &path)
            .json(&json!({ "replicas": replicas }));
        self.call(request, &format!("scaling {name}")).await
    }

    /// `PATCH /servers/{name}/update-policy`.
    pub(crate) async fn set_update_policy(
        &self,
        name: &str,
        check: bool,
        auto_reinstall: bool,
    ) -> anyhow::Result<StatusBody> {
        let path = format!("/servers/{}/update-policy", segment(name));
        let request = self
            .request(Method::PATCH, &path)
            .json(&json!({ "check": check, "auto_reinstall": auto_reinstall }));
        self.call(request, &format!("setting {name}'s update policy"))
            .await
    }

    /// `POST /servers/{name}/check-updates`.
    pub(crate) async fn check_updates(&self, name: &str) -> anyhow::Result<UpdateBody> {
        let path = format!("/servers/{}/check-updates", segment(name));
        self.call(
            self.request(Method::POST, &path),
            &format!("checking {name} for updates"),
        )
        .await
    }

    /// `GET /servers/{name}/logs` or `.../instances/{id}/logs`.
    pub(crate) async fn logs(
        &self,
        name: &str,
        instance: Option<&str>,
        tail: usize,
    ) -> anyhow::Result<Logs> {
        let path = match instance {
            Some(id) => format!("/servers/{}/instances/{}/logs", segment(name), segment(id)),
            None => format!("/servers/{}/logs", segment(name)),
        };
        let request = self
            .request(Method::GET, &path)
            .query(&[("tail", tail.to_string())]);
        self.call(request, &format!("reading {name}'s logs")).await
    }

    /// `GET /events`: lifecycle events as they happen, until mcpd ends the
    /// stream.
    pub(crate) async fn events(
        &self,
        server: Option<&str>,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<StreamItem>> + use<>> {
        let mut request = self.request(Method::GET, "/events");
        if let Some(server) = server {
            request = request.query(&[("server", server)]);
        }
        let response = self.send(request, "opening the event stream").await?;
        let events = response
            .bytes_stream()
            .eventsource()
            .filter_map(|item| async move {
                match item {
                    Err(e) => Some(Err(anyhow::anyhow!("reading the event stream: {e}"))),
                    Ok(event) if event.event == "lagged" => {
                        let missed = serde_json::from_str::<Value>(&event.data)
                            .ok()
                            .and_then(|v| v["missed"].as_u64())
                            .unwrap_or(0);
                        Some(Ok(StreamItem::Lagged(missed)))
                    }
                    Ok(event) if event.data.is_empty() => None,
                    Ok(event) => Some(
                        serde_json::from_str::<LifecycleEvent>(&event.data)
                            .map(|e| StreamItem::Event(Box::new(e)))
                            .with_context(|| format!("an event mcpd sent: {}", event.data)),
                    ),
                }
            });
        Ok(events)
    }
}

/// The failure a non-success answer describes.
async fn failure(response: Response) -> ApiFailure {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ApiFailure {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
            field: body.field,
        },
        Err(_) => ApiFailure {
            status: status.as_u16(),
            code: code_of(status),
            message: if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("no answer").to_owned()
            } else {
                text.trim().to_owned()
            },
            field: None,
        },
    }
}

/// A code for an answer that carried no JSON error (a proxy's, say).
fn code_of(status: StatusCode) -> String {
    format!("http_{}", status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("echo-1"), "echo-1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn a_failure_shows_message_code_status_and_field() {
        let f = ApiFailure {
            status: 422,
            code: "invalid".into(),
            message: "bad program".into(),
            field: Some("source.command.program".into()),
        };
        assert_eq!(
            f.to_string(),
            "bad program (invalid, HTTP 422, field source.command.program)"
        );
    }
}
