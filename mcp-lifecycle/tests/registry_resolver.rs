//! `RegistryResolver` against fake registries (wiremock) and, when it runs,
//! the local test registry on 127.0.0.1:5000 (`scripts/test-images.sh`).
//!
//! The fakes speak the distribution protocol as CNCF Distribution does: a
//! `/v2/` ping that answers 200 or a `WWW-Authenticate` challenge, a token
//! service, and manifests that answer `HEAD` with `Docker-Content-Digest`.
//! The real-registry test (registry from `MCP_TEST_REGISTRY`, else
//! `/var/tmp/mcp-lifecycle-registry/images.env`, else 127.0.0.1:5000) skips with
//! a printed reason when the registry is not reachable, unless
//! `MCP_LIFECYCLE_REQUIRE_DOCKER=1`, when it fails.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mcp_lifecycle::ports::ResolveFailure;
use mcp_lifecycle::{Error, ErrorKind, ImageResolver, RegistryResolver};
use sha2::{Digest as _, Sha256};
use wiremock::matchers::{basic_auth, bearer_token, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CANARY: &str = "canary-pw-7d41f0c2";
const CANARY_TOKEN: &str = "canary-token-95be3e";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ALL_MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A fake registry and its `host:port`.
async fn fake_registry() -> (MockServer, String) {
    let server = MockServer::start().await;
    let host = server.address().to_string();
    (server, host)
}

/// A resolver that reaches `host` over plain HTTP and ignores the Docker config.
fn resolver_for(host: &str) -> RegistryResolver {
    RegistryResolver::builder()
        .insecure_registry(host)
        .timeout(Duration::from_secs(5))
        .docker_config(false)
        .build()
}

/// `/v2/` answers 200: an anonymous registry.
async fn open_ping(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v2/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
        .mount(server)
        .await;
}

fn manifest_head(digest: &str, media_type: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("Docker-Content-Digest", digest)
        .insert_header("Content-Type", media_type)
}

fn accepts_all_manifest_types(request: &Request) -> bool {
    let accept = request
        .headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    ALL_MEDIA_TYPES.iter().all(|t| accept.contains(t))
}

fn oci_error(code: &str) -> serde_json::Value {
    serde_json::json!({ "errors": [{ "code": code, "message": code.to_lowercase(), "detail": null }] })
}

/// Asserts neither Display nor Debug of `error` (nor its sources) shows a canary.
fn assert_no_canary(error: &Error) {
    eprintln!("error: {error}");
    let mut shown = format!("{error} / {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        shown.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    for canary in [CANARY, CANARY_TOKEN] {
        assert!(!shown.contains(canary), "{canary} leaked: {shown}");
    }
}

#[tokio::test]
async fn anonymous_head_answers_the_docker_content_digest() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(method("HEAD"))
        .and(path("/v2/team/app/manifests/v1"))
        .and(accepts_all_manifest_types)
        .respond_with(manifest_head(DIGEST_A, OCI_MANIFEST))
        .expect(1)
        .mount(&server)
        .await;
    // A resolution never needs the manifest body.
    Mock::given(method("GET"))
        .and(path("/v2/team/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;

    let resolver = resolver_for(&host);
    let digest = resolver.resolve(&format!("{host}/team/app:v1")).await;
    assert_eq!(digest.unwrap(), DIGEST_A);
    let sent = server.received_requests().await.unwrap();
    assert!(
        sent.iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "an anonymous resolution sent credentials"
    );
}

#[tokio::test]
async fn a_reference_without_tag_resolves_latest() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(method("HEAD"))
        .and(path("/v2/app/manifests/latest"))
        .respond_with(manifest_head(DIGEST_B, DOCKER_MANIFEST))
        .expect(1)
        .mount(&server)
        .await;
    let digest = resolver_for(&host).resolve(&format!("{host}/app")).await;
    assert_eq!(digest.unwrap(), DIGEST_B);
}

#[tokio::test]
async fn manifest_lists_and_oci_indexes_are_accepted() {
    for (i, media_type) in ALL_MEDIA_TYPES.iter().enumerate() {
        let (server, host) = fake_registry().await;
        open_ping(&server).await;
        let digest = format!("sha256:{}", format!("{i}").repeat(64));
        Mock::given(method("HEAD"))
            .and(path("/v2/multi/arch/manifests/v2"))
            .and(accepts_all_manifest_types)
            .respond_with(manifest_head(&digest, media_type))
            .expect(1)
            .mount(&server)
            .await;
        let got = resolver_for(&host)
            .resolve(&format!("{host}/multi/arch:v2"))
            .await;
        assert_eq!(got.unwrap(), digest, "media type {media_type}");
    }
}

#[tokio::test]
async fn a_head_without_digest_header_falls_back_to_digesting_the_manifest() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let expected = format!("sha256:{:x}", Sha256::digest(body));
    Mock::given(method("HEAD"))
        .and(path("/v2/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(200).insert_header("Content-Type", OCI_INDEX))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.to_vec(), OCI_INDEX))
        .expect(1)
        .mount(&server)
        .await;
    let got = resolver_for(&host).resolve(&format!("{host}/app:v1")).await;
    assert_eq!(got.unwrap(), expected);
}

/// `/v2/` and unauthenticated manifest requests answer a bearer challenge.
async fn bearer_challenge(server: &MockServer, host: &str, repository: &str) {
    let challenge = format!(
        r#"Bearer realm="http://{host}/token",service="fake-registry",scope="repository:{repository}:pull""#
    );
    Mock::given(method("GET"))
        .and(path("/v2/"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", challenge.as_str()),
        )
        .mount(server)
        .await;
    Mock::given(path(format!("/v2/{repository}/manifests/v1")))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("WWW-Authenticate", challenge.as_str())
                .set_body_json(oci_error("UNAUTHORIZED")),
        )
        .with_priority(10)
        .mount(server)
        .await;
}

#[tokio::test]
async fn bearer_flow_exchanges_credentials_for_a_token() {
    let (server, host) = fake_registry().await;
    bearer_challenge(&server, &host, "team/app").await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("scope", "repository:team/app:pull"))
        .and(query_param("service", "fake-registry"))
        .and(basic_auth("alice", CANARY))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "token": CANARY_TOKEN, "expires_in": 300 })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/v2/team/app/manifests/v1"))
        .and(bearer_token(CANARY_TOKEN))
        .respond_with(manifest_head(DIGEST_A, OCI_INDEX))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;

    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .credentials(&host, "alice", CANARY)
        .docker_config(false)
        .build();
    let digest = resolver.resolve(&format!("{host}/team/app:v1")).await;
    assert_eq!(digest.unwrap(), DIGEST_A);
}

#[tokio::test]
async fn anonymous_bearer_tokens_are_fetched_without_credentials() {
    let (server, host) = fake_registry().await;
    bearer_challenge(&server, &host, "library/tool").await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("scope", "repository:library/tool:pull"))
        .and(|r: &Request| !r.headers.contains_key("authorization"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "access_token": "anon-token" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/v2/library/tool/manifests/v1"))
        .and(bearer_token("anon-token"))
        .respond_with(manifest_head(DIGEST_B, DOCKER_LIST))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    let digest = resolver_for(&host)
        .resolve(&format!("{host}/library/tool:v1"))
        .await;
    assert_eq!(digest.unwrap(), DIGEST_B);
}

#[tokio::test]
async fn basic_auth_registries_get_basic_credentials() {
    let (server, host) = fake_registry().await;
    Mock::given(method("GET"))
        .and(path("/v2/"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Basic realm="fake""#),
        )
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/v2/app/manifests/v1"))
        .and(basic_auth("bob", CANARY))
        .respond_with(manifest_head(DIGEST_A, DOCKER_MANIFEST))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v2/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(oci_error("UNAUTHORIZED")))
        .with_priority(10)
        .mount(&server)
        .await;

    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .credentials(&host, "bob", CANARY)
        .docker_config(false)
        .build();
    assert_eq!(
        resolver.resolve(&format!("{host}/app:v1")).await.unwrap(),
        DIGEST_A
    );

    // Without credentials the same registry refuses: Unauthorized.
    let error = resolver_for(&host)
        .resolve(&format!("{host}/app:v1"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
    assert_eq!(
        resolver_for(&host).classify(&error),
        ResolveFailure::Unauthorized
    );
}

#[tokio::test]
async fn missing_tags_and_repositories_are_not_found() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    for (repository, code) in [("app", "MANIFEST_UNKNOWN"), ("ghost", "NAME_UNKNOWN")] {
        Mock::given(method("HEAD"))
            .and(path(format!("/v2/{repository}/manifests/v9")))
            .respond_with(ResponseTemplate::new(404))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v2/{repository}/manifests/v9")))
            .respond_with(ResponseTemplate::new(404).set_body_json(oci_error(code)))
            .mount(&server)
            .await;
    }
    // No mock at all: wiremock's bare 404.
    let resolver = resolver_for(&host);
    for reference in ["app:v9", "ghost:v9", "nothing-here:v1"] {
        let error = resolver
            .resolve(&format!("{host}/{reference}"))
            .await
            .unwrap_err();
        eprintln!("error: {error}");
        assert_eq!(error.kind(), ErrorKind::NotFound, "{reference}: {error}");
        assert_eq!(resolver.classify(&error), ResolveFailure::NotFound);
        assert!(error.to_string().contains(reference), "{error}");
    }
}

#[tokio::test]
async fn refused_credentials_are_unauthorized_and_never_shown() {
    let (server, host) = fake_registry().await;
    bearer_challenge(&server, &host, "private/app").await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_string(format!("bad credentials {CANARY} {CANARY_TOKEN}")),
        )
        .mount(&server)
        .await;

    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .credentials(&host, "mallory", CANARY)
        .docker_config(false)
        .timeout(Duration::from_secs(5))
        .build();
    let error = resolver
        .resolve(&format!("{host}/private/app:v1"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
    assert_eq!(resolver.classify(&error), ResolveFailure::Unauthorized);
    assert_no_canary(&error);
    // The canary really was sent, so the check above is not vacuous.
    let sent = server.received_requests().await.unwrap();
    assert!(
        sent.iter()
            .any(|r| r.url.path() == "/token" && r.headers.contains_key("authorization")),
        "the token service never saw the credentials"
    );
}

#[tokio::test]
async fn forbidden_is_unauthorized() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(path("/v2/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(403).set_body_json(oci_error("DENIED")))
        .mount(&server)
        .await;
    Mock::given(path("/v2/plain/manifests/v1"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    let resolver = resolver_for(&host);
    for reference in ["app:v1", "plain:v1"] {
        let error = resolver
            .resolve(&format!("{host}/{reference}"))
            .await
            .unwrap_err();
        assert_eq!(
            resolver.classify(&error),
            ResolveFailure::Unauthorized,
            "{error}"
        );
    }
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_unavailable() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(path("/v2/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(503).set_body_string("down for maintenance"))
        .mount(&server)
        .await;
    Mock::given(path("/v2/busy/manifests/v1"))
        .respond_with(ResponseTemplate::new(429).set_body_json(oci_error("TOOMANYREQUESTS")))
        .mount(&server)
        .await;
    let resolver = resolver_for(&host);
    for reference in ["app:v1", "busy:v1"] {
        let error = resolver
            .resolve(&format!("{host}/{reference}"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        assert_eq!(resolver.classify(&error), ResolveFailure::Unreachable);
    }
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out_within_the_timeout() {
    let (server, host) = fake_registry().await;
    Mock::given(method("GET"))
        .and(path("/v2/"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(120)))
        .mount(&server)
        .await;
    let timeout = Duration::from_millis(500);
    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .credentials(&host, "carol", CANARY)
        .docker_config(false)
        .timeout(timeout)
        .build();
    let started = Instant::now();
    let error = resolver
        .resolve(&format!("{host}/app:v1"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert_eq!(resolver.classify(&error), ResolveFailure::Timeout);
    assert!(took < timeout + Duration::from_secs(3), "took {took:?}");
    assert_no_canary(&error);
}

#[tokio::test]
async fn a_manifest_request_that_hangs_times_out() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(path("/v2/app/manifests/v1"))
        .respond_with(manifest_head(DIGEST_A, OCI_MANIFEST).set_delay(Duration::from_secs(120)))
        .mount(&server)
        .await;
    let timeout = Duration::from_millis(500);
    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .docker_config(false)
        .timeout(timeout)
        .build();
    let started = Instant::now();
    let error = resolver
        .resolve(&format!("{host}/app:v1"))
        .await
        .unwrap_err();
    assert_eq!(
        resolver.classify(&error),
        ResolveFailure::Timeout,
        "{error}"
    );
    assert!(started.elapsed() < timeout + Duration::from_secs(3));
}

#[tokio::test]
async fn plain_http_is_refused_for_registries_not_named_insecure() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(path("/v2/app/manifests/v1"))
        .respond_with(manifest_head(DIGEST_A, OCI_MANIFEST))
        .mount(&server)
        .await;
    let resolver = RegistryResolver::builder()
        .insecure_registry("127.0.0.1:1")
        .credentials(&host, "dave", CANARY)
        .docker_config(false)
        .timeout(Duration::from_secs(5))
        .build();
    let error = resolver
        .resolve(&format!("{host}/app:v1"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert_eq!(resolver.classify(&error), ResolveFailure::Unreachable);
    assert!(error.to_string().contains("insecure_registry"), "{error}");
    assert_no_canary(&error);
    // It spoke TLS: no plain-HTTP request reached the registry.
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable() {
    let host = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }; // closed again: connections are refused
    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .credentials(&host, "erin", CANARY)
        .docker_config(false)
        .build();
    let error = resolver
        .resolve(&format!("{host}/app:v1"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert_eq!(resolver.classify(&error), ResolveFailure::Unreachable);
    assert_no_canary(&error);
}

#[tokio::test]
async fn pinned_references_make_no_request() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    let resolver = resolver_for(&host);
    for reference in [
        format!("{host}/app@{DIGEST_A}"),
        format!("{host}/app:v1@{DIGEST_B}"),
    ] {
        let digest = resolver.resolve(&reference).await.unwrap();
        assert!(reference.ends_with(&digest));
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn malformed_digest_headers_are_rejected() {
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(method("HEAD"))
        .and(path("/v2/app/manifests/v1"))
        .respond_with(manifest_head("sha256:not-hex", OCI_MANIFEST))
        .mount(&server)
        .await;
    let error = resolver_for(&host)
        .resolve(&format!("{host}/app:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::Backend | ErrorKind::Unavailable),
        "{error}"
    );
}

#[tokio::test]
async fn header_matching_sanity() {
    // Guards the helpers above: the fake really sees the HEAD and its Accept.
    let (server, host) = fake_registry().await;
    open_ping(&server).await;
    Mock::given(method("HEAD"))
        .and(header_exists("accept"))
        .respond_with(manifest_head(DIGEST_A, OCI_MANIFEST))
        .mount(&server)
        .await;
    resolver_for(&host)
        .resolve(&format!("{host}/x:y"))
        .await
        .unwrap();
    let sent = server.received_requests().await.unwrap();
    let head = sent
        .iter()
        .find(|r| r.method.as_str() == "HEAD")
        .expect("a HEAD");
    assert!(accepts_all_manifest_types(head));
}

// --- The real local registry -------------------------------------------------

const REQUIRE_ENV: &str = "MCP_LIFECYCLE_REQUIRE_DOCKER";
const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";

/// Skips (prints why and returns `true`) or, with `MCP_LIFECYCLE_REQUIRE_DOCKER=1`, fails.
fn skip(reason: &str) -> bool {
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_ENV}=1 but {reason}");
    }
    eprintln!(
        "SKIPPED: {reason} (run scripts/test-images.sh to start it; {REQUIRE_ENV}=1 makes this fail)"
    );
    true
}

/// A value from images.env, if the file and key exist.
fn images_env(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(IMAGES_ENV).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
}

/// `HEAD /v2/<repository>/manifests/<tag>` over a bare socket, as a second
/// opinion that shares no code with the resolver: `Ok(Some(digest))` on 200,
/// `Ok(None)` on another status, `Err` if the registry cannot be reached.
fn raw_head_digest(host: &str, repository: &str, tag: &str) -> std::io::Result<Option<String>> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "HEAD /v2/{repository}/manifests/{tag} HTTP/1.1\r\nHost: {host}\r\nAccept: {}\r\nConnection: close\r\n\r\n",
        ALL_MEDIA_TYPES.join(", ")
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let mut lines = response.lines();
    let status_ok = lines
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return Ok(None);
    }
    Ok(lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("docker-content-digest"))
        .map(|(_, v)| v.trim().to_owned()))
}

/// The digest Docker recorded when it pushed `image` to `repository`, if
/// Docker is there and has the image.
fn docker_repo_digest(image: &str, repository: &str) -> Option<String> {
    let output = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .RepoDigests}}", image])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let digests: Vec<String> = serde_json::from_slice(&output.stdout).ok()?;
    digests
        .iter()
        .filter_map(|d| d.split_once('@'))
        .find(|(repo, _)| *repo == repository)
        .map(|(_, digest)| digest.to_owned())
}

#[tokio::test]
async fn resolves_from_the_real_local_registry() {
    let host = std::env::var("MCP_TEST_REGISTRY")
        .ok()
        .or_else(|| images_env("MCP_TEST_REGISTRY"))
        .unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let repository = "mcp-test-server";
    let head = match raw_head_digest(&host, repository, "v1") {
        Ok(Some(digest)) => digest,
        Ok(None) => {
            skip(&format!(
                "the registry at {host} answers but has no {repository}:v1 with a digest"
            ));
            return;
        }
        Err(e) => {
            skip(&format!("no registry reachable at {host} ({e})"));
            return;
        }
    };

    let resolver = RegistryResolver::builder()
        .insecure_registry(&host)
        .timeout(Duration::from_secs(10))
        .build();
    let image = format!("{host}/{repository}:v1");
    let resolved = resolver.resolve(&image).await.unwrap();
    assert_eq!(resolved, head, "the resolver and a raw HEAD disagree");
    assert!(
        resolved.starts_with("sha256:") && resolved.len() == 7 + 64,
        "{resolved}"
    );

    match docker_repo_digest(&image, &format!("{host}/{repository}")) {
        Some(pushed) if pushed == resolved => {
            eprintln!("{image} resolves to {resolved}, the digest docker pushed");
        }
        Some(pushed) => {
            // The registry is the authority on what a pull gets now; a test
            // may have moved the tag since the push.
            eprintln!(
                "note: docker pushed {image} as {pushed}; the tag now points to {resolved} (moved since)"
            );
        }
        None => eprintln!("docker has no repo digest for {image}; compared with a raw HEAD only"),
    }

    // A missing tag on the real registry is NotFound.
    let error = resolver
        .resolve(&format!("{host}/{repository}:no-such-tag"))
        .await
        .unwrap_err();
    assert_eq!(
        resolver.classify(&error),
        ResolveFailure::NotFound,
        "{error}"
    );
}
