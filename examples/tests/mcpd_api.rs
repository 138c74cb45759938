//! mcpd over real HTTP: the daemon runs as a real process (its own binary)
//! on a free loopback port with the local backend, in-memory state, and the
//! project's test MCP server (mcpd re-executed as `serve-mcp-test-server`,
//! the one allow-listed program). Every route is exercised with reqwest:
//! the lifecycle flow, YAML apply, start with wait, logs, the SSE stream,
//! auth (401/403), the error codes, the allow-list, the OpenAPI document,
//! metrics, and graceful shutdown on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ADMIN, MCPD, READER, assert_error, mcpd_command, spec_yaml, start_mcpd, start_mcpd_in,
    terminate,
};

use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_goes_through_its_whole_lifecycle_over_the_api() {
    let d = start_mcpd(&[]);

    // The event stream, opened before anything happens.
    let resp = Client::new()
        .get(d.url("/api/v1/events?server=echo"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut seen = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("data:") && seen.contains("\"server\":\"echo\"") {
                break;
            }
        }
        seen
    });

    // Apply as YAML: created, then unchanged.
    let yaml = spec_yaml("echo", MCPD);
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(ADMIN),
            Some(("application/yaml", yaml.clone())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["outcome"], "created");
    let (status, body) = d
        .call(
            Method::PUT,
            "/api/v1/servers/echo",
            Some(ADMIN),
            Some(("application/yaml", yaml)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "unchanged");

    // Start and wait until ready.
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/start?wait=true&timeout=30s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["phase"], "running", "{body}");
    assert_eq!(body["status"]["ready"], 1, "{body}");

    let seen = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen.contains("event:") && seen.contains("\"server\":\"echo\""),
        "{seen}"
    );

    // List and get (read-only token).
    let (status, body) = d
        .call(Method::GET, "/api/v1/servers", Some(READER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["servers"][0]["name"], "echo", "{body}");
    let (status, body) = d
        .call(Method::GET, "/api/v1/servers/echo", Some(READER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["name"], "echo");
    assert_eq!(body["status"]["instances"][0]["phase"], "ready", "{body}");
    assert!(body["endpoints"].is_array(), "{body}");
    let instance = body["status"]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Logs of the server and of one instance.
    let (status, body) = d
        .call(
            Method::GET,
            "/api/v1/servers/echo/logs?tail=20",
            Some(READER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["instances"][0]["instance"], instance.as_str());
    assert!(body["instances"][0]["lines"].is_array());
    let path = format!("/api/v1/servers/echo/instances/{instance}/logs?tail=5");
    let (status, body) = d.call(Method::GET, &path, Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["instances"].as_array().unwrap().len(), 1);
    assert!(body["instances"][0]["lines"].as_array().unwrap().len() <= 5);
    let (status, body) = d
        .call(
            Method::GET,
            "/api/v1/servers/echo/instances/echo-999/logs",
            Some(READER),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = d
        .call(
            Method::GET,
            "/api/v1/servers/echo/logs?tail=lots",
            Some(READER),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "tail", "{body}");

    // Scale to 2 and wait.
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/scale",
            Some(json!({"replicas": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["desired"], 2, "{body}");
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/start?wait=true&timeout=30s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["ready"], 2, "{body}");

    // Metrics show it.
    let metrics = Client::new()
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mcpd_server_ready_instances{server=\"echo\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpd_server_update_state{server=\"echo\",state=\"unknown\"} 1"),
        "{metrics}"
    );

    // A server that exits at once: its failures are counted, and /metrics
    // says what its status says.
    let crashy = format!(
        "{}env:\n  - {{ name: MCP_TEST_EXIT_IMMEDIATELY_CODE, value: \"3\" }}\n",
        spec_yaml("crashy", MCPD)
    );
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(ADMIN),
            Some(("application/yaml", crashy)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let failures = loop {
        let (_, body) = d.admin(Method::GET, "/api/v1/servers/crashy", None).await;
        let failures = body["status"]["counters"]["failures"].as_u64().unwrap_or(0);
        if failures >= 1 {
            break failures;
        }
        assert!(Instant::now() < deadline, "no failure counted: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let metrics = Client::new()
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mcpd_server_failures_total{server=\"crashy\"} "))
        .unwrap_or_else(|| panic!("no failure counter for crashy: {metrics}"))
        .parse()
        .unwrap();
    // Later failures may land between the two reads, never fewer.
    assert!(counted >= failures, "{counted} < {failures}: {metrics}");
    assert!(
        metrics.contains("mcpd_server_restarts_total{server=\"crashy\"}"),
        "{metrics}"
    );
    let (status, _) = d
        .admin(Method::DELETE, "/api/v1/servers/crashy", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Update policy toggles, and a check now.
    let (status, body) = d
        .admin(
            Method::PATCH,
            "/api/v1/servers/echo/update-policy",
            Some(json!({"check": false, "auto_reinstall": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = d
        .admin(
            Method::PATCH,
            "/api/v1/servers/echo/update-policy",
            Some(json!({"check": "no"})),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "check", "{body}");
    let (status, body) = d
        .admin(Method::POST, "/api/v1/servers/echo/check-updates", None)
        .await;
    // Without an image resolver (the local backend has none) a check is
    // refused as a 4xx error; with one it answers the update state.
    if status == StatusCode::OK {
        assert!(body["update"]["state"].is_string(), "{body}");
    } else {
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }

    // Stop (forced), delete, gone.
    let (status, body) = d
        .admin(Method::POST, "/api/v1/servers/echo/stop?mode=force", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["ready"], 0, "{body}");
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/stop?mode=sideways",
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, _) = d.admin(Method::DELETE, "/api/v1/servers/echo", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = d.admin(Method::GET, "/api/v1/servers/echo", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_error_codes_are_enforced() {
    let d = start_mcpd(&[]);
    let spec = json!({"name": "s", "source": {"command": {"program": MCPD, "args": ["serve-mcp-test-server"]}}});
    let changes: [(Method, &str, Option<Value>); 8] = [
        (Method::POST, "/api/v1/servers", Some(spec.clone())),
        (Method::PUT, "/api/v1/servers/s", Some(spec.clone())),
        (Method::DELETE, "/api/v1/servers/s", None),
        (Method::POST, "/api/v1/servers/s/start", None),
        (Method::POST, "/api/v1/servers/s/stop", None),
        (
            Method::POST,
            "/api/v1/servers/s/scale",
            Some(json!({"replicas": 1})),
        ),
        (
            Method::PATCH,
            "/api/v1/servers/s/update-policy",
            Some(json!({"check": true, "auto_reinstall": true})),
        ),
        (Method::POST, "/api/v1/servers/s/check-updates", None),
    ];
    let reads = [
        "/api/v1/servers",
        "/api/v1/servers/s",
        "/api/v1/servers/s/logs",
        "/api/v1/servers/s/instances/s-1/logs",
        "/api/v1/events",
        "/api/v1/openapi.json",
    ];
    let wrong = "not-the-token-at-all";
    for (method, path, body) in &changes {
        let body = body.as_ref().map(|b| ("application/json", b.to_string()));
        for token in [None, Some(wrong)] {
            let (status, value) = d.call(method.clone(), path, token, body.clone()).await;
            assert_error(status, &value, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let (status, value) = d.call(method.clone(), path, Some(READER), body).await;
        assert_error(status, &value, StatusCode::FORBIDDEN, "forbidden");
    }
    for path in reads {
        for token in [None, Some(wrong)] {
            let (status, value) = d.call(Method::GET, path, token, None).await;
            assert_error(status, &value, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    assert!(
        d.log().contains("refused a request without a valid token"),
        "{}",
        d.log()
    );
    assert!(!d.log().contains(wrong), "a token reached the log");
    assert!(
        !d.log().contains(READER) && !d.log().contains(ADMIN),
        "a token reached the log"
    );

    // Open routes.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = Client::new()
            .get(d.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }

    // Bad input is 4xx with a JSON body, never 5xx.
    let post = |ct: &'static str, text: &str| {
        d.call(
            Method::POST,
            "/api/v1/servers",
            Some(ADMIN),
            Some((ct, text.to_owned())),
        )
    };
    let (status, body) = post("application/json", "{\"name\": ").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed");
    let (status, body) = post("application/yaml", "name: [unclosed").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed");
    let (status, body) = post("text/plain", "hello").await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (status, body) = post(
        "application/json",
        "{\"name\": \"s\", \"source\": {\"image\": \"x:1\"}, \"replicas\": \"two\"}",
    )
    .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "replicas", "{body}");
    let (status, body) = post("application/yaml", &spec_yaml("Not_A_Name", MCPD)).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "name", "{body}");
    // Valid YAML with an integer wider than 64 bits is YAML (found by the
    // API fuzzer): the field that cannot hold it is named.
    let wide = format!(
        "name: wide\nsource: {{ command: {{ program: \"{MCPD}\" }} }}\n\
         health: {{ readiness: {{ tool: t, arguments: {{ n: {} }} }} }}\n",
        u128::MAX
    );
    let (status, body) = post("application/yaml", &wide).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        body["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("health.readiness.arguments")),
        "{body}"
    );

    // The allow-list: an admin token is not a shell on the host.
    let (status, body) = post("application/yaml", &spec_yaml("shell", "/bin/sh")).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "source.command.program", "{body}");
    let (status, _) = d.admin(Method::GET, "/api/v1/servers/shell", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A spec sent to another name.
    let (status, body) = d
        .admin(Method::PUT, "/api/v1/servers/other", Some(spec.clone()))
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "name", "{body}");

    // Unknown servers, routes and methods.
    for (method, path) in [
        (Method::POST, "/api/v1/servers/ghost/start"),
        (Method::POST, "/api/v1/servers/ghost/stop"),
        (Method::GET, "/api/v1/servers/ghost/logs"),
        (Method::GET, "/api/v1/nothing-here"),
    ] {
        let (status, body) = d.admin(method, path, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/ghost/scale",
            Some(json!({"replicas": 1})),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/ghost/scale",
            Some(json!({"replicas": -1})),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "replicas", "{body}");
    let (status, body) = d.admin(Method::DELETE, "/api/v1/openapi.json", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = d
        .admin(Method::POST, "/api/v1/servers/ghost/start?timeout=1h", None)
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(body["field"], "timeout", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let d = start_mcpd(&[]);
    let (status, doc) = d
        .call(Method::GET, "/api/v1/openapi.json", Some(READER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let expected: [(&str, &[&str]); 14] = [
        ("/api/v1/servers", &["get", "post"]),
        ("/api/v1/servers/{name}", &["get", "put", "delete"]),
        ("/api/v1/servers/{name}/start", &["post"]),
        ("/api/v1/servers/{name}/stop", &["post"]),
        ("/api/v1/servers/{name}/scale", &["post"]),
        ("/api/v1/servers/{name}/update-policy", &["patch"]),
        ("/api/v1/servers/{name}/check-updates", &["post"]),
        ("/api/v1/servers/{name}/logs", &["get"]),
        ("/api/v1/servers/{name}/instances/{instance}/logs", &["get"]),
        ("/api/v1/events", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    for (path, methods) in expected {
        for m in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*m)).is_some(),
                "{m} {path} missing"
            );
        }
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "unexpected paths: {:?}",
        paths.keys()
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ApiError"].is_object());
}

/// The schema named by `reference` (`#/components/schemas/NAME`) in `doc`.
fn schema<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let name = reference
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("not a schema reference: {reference}"));
    &doc["components"]["schemas"][name]
}

/// Every key of `value` is a property of `object_schema`, and every
/// required property is a key of `value`.
fn assert_keys_fit(what: &str, object_schema: &Value, value: &Value) {
    let properties = object_schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no properties in {object_schema}"));
    let keys = value.as_object().unwrap();
    for key in keys.keys() {
        assert!(
            properties.contains_key(key),
            "{what}: {key} is not in the schema"
        );
    }
    for required in object_schema["required"].as_array().unwrap() {
        let required = required.as_str().unwrap();
        assert!(
            keys.contains_key(required),
            "{what}: {required} is required but not sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_status_mcpd_sends() {
    let d = start_mcpd(&[]);
    let (_, doc) = d
        .call(Method::GET, "/api/v1/openapi.json", Some(READER), None)
        .await;
    // Apply takes a ServerSpec, in JSON and YAML.
    let apply = &doc["paths"]["/api/v1/servers"]["post"]["requestBody"]["content"];
    for media in ["application/json", "application/yaml"] {
        let spec = schema(&doc, &apply[media]["schema"]["$ref"]);
        assert!(
            spec["properties"]["stop_grace_period"]["type"] == "string",
            "{spec}"
        );
    }
    let spec = json!({"name": "s", "source": {"command": {"program": MCPD, "args": ["serve-mcp-test-server"]}}});
    let (status, _) = d.admin(Method::POST, "/api/v1/servers", Some(spec)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, view) = d
        .admin(
            Method::POST,
            "/api/v1/servers/s/start?wait=true&timeout=30s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let sent = &view["status"];
    let view_schema = &doc["components"]["schemas"]["StatusBody"];
    let status_schema = schema(&doc, &view_schema["properties"]["status"]["$ref"]);
    assert_keys_fit("ServerStatus", status_schema, sent);
    let instance_schema = schema(
        &doc,
        &status_schema["properties"]["instances"]["items"]["$ref"],
    );
    assert_keys_fit("InstanceStatus", instance_schema, &sent["instances"][0]);
    let update_schema = schema(&doc, &status_schema["properties"]["update"]["$ref"]);
    assert_keys_fit("UpdateStatus", update_schema, &sent["update"]);
    let event_schema = schema(
        &doc,
        &status_schema["properties"]["recent_events"]["items"]["$ref"],
    );
    assert_keys_fit("LifecycleEvent", event_schema, &sent["recent_events"][0]);
    let phases = schema(&doc, &status_schema["properties"]["phase"]["$ref"])["enum"].clone();
    assert!(
        phases.as_array().unwrap().contains(&sent["phase"]),
        "{phases} {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_ends_event_streams_and_exits_cleanly() {
    let mut d = start_mcpd(&[]);
    // An open event stream must not hold shutdown up.
    let resp = Client::new()
        .get(d.url("/api/v1/events"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pid = d.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mcpd did not exit: {}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}: {}", d.log());
    // The stream ended rather than hanging.
    let rest = tokio::time::timeout(Duration::from_secs(5), resp.bytes()).await;
    assert!(rest.is_ok(), "the event stream did not end");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = d.log();
    assert!(log.contains("SIGTERM") && log.contains("detached"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_specs_are_applied_at_every_start_and_kept_in_the_redb_file() {
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("servers");
    std::fs::create_dir(&specs).unwrap();
    std::fs::write(specs.join("echo.yaml"), spec_yaml("echo", MCPD)).unwrap();
    std::fs::write(specs.join("notes.txt"), "not a spec").unwrap();
    let store = dir.path().join("state.redb");
    let args = [
        "--specs",
        specs.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ];

    let mut d = start_mcpd_in(dir.path(), &args);
    assert!(d.log().contains("outcome=\"created\""), "{}", d.log());
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/start?wait=true&timeout=30s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A server applied over the API is kept in the store too.
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(ADMIN),
            Some(("application/yaml", spec_yaml("other", MCPD))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    terminate(&mut d).await;
    assert!(store.exists());

    // The same configuration again: the spec is unchanged, both servers are back.
    let d = start_mcpd_in(dir.path(), &args);
    assert!(d.log().contains("outcome=\"unchanged\""), "{}", d.log());
    let (status, body) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/start?wait=true&timeout=30s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["ready"], 1, "{body}");
    let (_, body) = d.admin(Method::GET, "/api/v1/servers", None).await;
    let names: Vec<&str> = body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "other"], "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_spec_outside_the_allow_list_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("shell.yaml");
    std::fs::write(&spec, spec_yaml("shell", "/bin/sh")).unwrap();
    let out = mcpd_command(dir.path(), &["--specs", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source.command.program") && stderr.contains("shell.yaml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_servers_on_exit_stops_them() {
    let mut d = start_mcpd(&["--stop-servers-on-exit"]);
    let (status, body) = d
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(ADMIN),
            Some(("application/yaml", spec_yaml("echo", MCPD))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = d
        .admin(
            Method::POST,
            "/api/v1/servers/echo/start?wait=true&timeout=30s",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    terminate(&mut d).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(d.log().contains("stopped every server"), "{}", d.log());
}
