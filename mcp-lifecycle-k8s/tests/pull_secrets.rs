//! `PullSecretResolver` on the cluster: the credentials come from image pull
//! Secrets created in the test's namespace, the registry is a fake on
//! 127.0.0.1 (wiremock) that answers only to them with HTTP basic
//! authentication, or the real local registry (`scripts/test-images.sh`)
//! for an anonymous resolution.
//!
//! Every test skips with the reason when no cluster answers (fails under
//! `MCP_LIFECYCLE_REQUIRE_K8S=1`). The role test needs the cluster's second
//! user (`MCP_K8S_KUBECONFIG_LIMITED`, as `tests/rbac.rs`).

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use common::{TestNamespace, skip};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Client, Config};
use mcp_lifecycle::ports::ResolveFailure;
use mcp_lifecycle::testing::LogCapture;
use mcp_lifecycle::{Error, ErrorKind, ImageResolver};
use mcp_lifecycle_k8s::{KubernetesConfig, PullSecretResolver};
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;
use wiremock::matchers::{basic_auth, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const USER: &str = "puller";
const PASSWORD: &str = "pull-canary-4c1d7e";
const WRONG_PASSWORD: &str = "wrong-canary-83f2a9";
const DIGEST: &str = "sha256:5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    DOCKER_MANIFEST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGES_ENV: &str = "/var/tmp/mcp-lifecycle-registry/images.env";
const ROLE: &str = include_str!("../../docs/kubernetes-rbac.yaml");

/// A registry on 127.0.0.1 that wants `USER`/`PASSWORD` as basic
/// authentication (as CNCF Distribution with htpasswd does): `/v2/` and
/// anything else without them answer 401 with a Basic challenge.
async fn basic_auth_registry(repository: &str) -> (MockServer, String) {
    let server = MockServer::start().await;
    let host = server.address().to_string();
    let challenge = ResponseTemplate::new(401)
        .insert_header("WWW-Authenticate", r#"Basic realm="pull-secret-test""#)
        .set_body_json(serde_json::json!({
            "errors": [{ "code": "UNAUTHORIZED", "message": "authentication required" }]
        }));
    let manifests = format!("/v2/{repository}/manifests/v1");
    Mock::given(method("HEAD"))
        .and(path(manifests.as_str()))
        .and(basic_auth(USER, PASSWORD))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Docker-Content-Digest", DIGEST)
                .insert_header("Content-Type", DOCKER_MANIFEST),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(manifests.as_str()))
        .and(basic_auth(USER, PASSWORD))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Docker-Content-Digest", DIGEST)
                .set_body_raw(
                    br#"{"schemaVersion":2,"layers":[]}"#.to_vec(),
                    DOCKER_MANIFEST,
                ),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/"))
        .and(basic_auth(USER, PASSWORD))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(challenge)
        .with_priority(10)
        .mount(&server)
        .await;
    (server, host)
}

/// A `.dockerconfigjson` with `auth` only, as `docker login` writes it.
fn docker_config_json(host: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    serde_json::json!({ "auths": { format!("http://{host}/v2/"): { "auth": auth } } }).to_string()
}

/// Creates Secret `name` of `type_` with `key` = `value` in `ns`.
async fn create_secret(ns: &TestNamespace, name: &str, type_: &str, key: &str, value: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        string_data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
}

/// Replaces the `.dockerconfigjson` of Secret `name`.
async fn rotate_secret(ns: &TestNamespace, name: &str, value: &str) {
    ns.api::<Secret>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "stringData": { ".dockerconfigjson": value } })),
        )
        .await
        .unwrap_or_else(|e| panic!("patch Secret {name}: {e}"));
}

fn config(ns: &TestNamespace, pull_secrets: &[&str]) -> KubernetesConfig {
    KubernetesConfig {
        namespace: ns.name.clone(),
        image_pull_secrets: pull_secrets.iter().map(|s| (*s).to_owned()).collect(),
        ..KubernetesConfig::default()
    }
}

fn resolver_for(client: Client, config: &KubernetesConfig, host: &str) -> PullSecretResolver {
    PullSecretResolver::builder(client, config)
        .insecure_registry(host)
        .timeout(Duration::from_secs(10))
        .build()
}

/// An error's Display, Debug and sources, for searching.
fn shown(error: &Error) -> String {
    let mut shown = format!("{error} / {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        shown.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    shown
}

fn assert_no_password(text: &str) {
    for password in [PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(password), "{password} leaked: {text}");
    }
}

/// Whether any request the fake registry received carried an Authorization header.
async fn sent_credentials(server: &MockServer) -> bool {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .any(|r| r.headers.contains_key("authorization"))
}

/// Everything every crate logs, at trace, on the test's thread and on
/// every thread of its runtime (the kube client's and the HTTP
/// connections' tasks run there).
fn runtime_with_log_capture() -> (tokio::runtime::Runtime, LogCapture, DefaultGuard) {
    let capture = LogCapture::new();
    let dispatch = Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish(),
    );
    let for_workers = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        // The runtime's threads keep the capture for their lifetime.
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&for_workers)))
        .build()
        .unwrap();
    let guard = tracing::dispatcher::set_default(&dispatch);
    (runtime, capture, guard)
}

#[test]
fn a_dockerconfigjson_secret_authenticates_and_its_password_never_shows() {
    let (runtime, capture, guard) = runtime_with_log_capture();
    runtime.block_on(credentials_from_a_secret(&capture));
    drop(runtime);
    drop(guard);
}

async fn credentials_from_a_secret(capture: &LogCapture) {
    let test = "a_dockerconfigjson_secret_authenticates_and_its_password_never_shows";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };

    let (server, host) = basic_auth_registry("team/app").await;
    let image = format!("{host}/team/app:v1");
    create_secret(
        &ns,
        "regcred",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        &docker_config_json(&host, PASSWORD),
    )
    .await;
    let resolver = resolver_for(ns.client.clone(), &config(&ns, &["regcred"]), &host);

    // The right credentials: the registry's digest.
    let digest = resolver.resolve(&image).await;
    assert_eq!(digest.unwrap(), DIGEST);
    assert!(
        sent_credentials(&server).await,
        "the registry never saw credentials"
    );

    // Rotated to a wrong password: read again, refused, Unauthorized.
    rotate_secret(&ns, "regcred", &docker_config_json(&host, WRONG_PASSWORD)).await;
    let error = resolver.resolve(&image).await.unwrap_err();
    let text = shown(&error);
    eprintln!("wrong password: {error}");
    assert_eq!(error.kind(), ErrorKind::Invalid, "{text}");
    assert_eq!(resolver.classify(&error), ResolveFailure::Unauthorized);
    assert!(
        text.contains("regcred"),
        "the error names the secret: {text}"
    );
    assert_no_password(&text);

    // Rotated back: resolves again (nothing was cached).
    rotate_secret(&ns, "regcred", &docker_config_json(&host, PASSWORD)).await;
    assert_eq!(resolver.resolve(&image).await.unwrap(), DIGEST);

    // No pull secret at all: anonymous, and this registry refuses that.
    let anonymous = PullSecretResolver::builder(ns.client.clone(), &config(&ns, &[]))
        .insecure_registry(&host)
        .build();
    let error = anonymous.resolve(&image).await.unwrap_err();
    assert_eq!(
        anonymous.classify(&error),
        ResolveFailure::Unauthorized,
        "{error}"
    );

    // A missing secret, one of another type and one that does not parse:
    // Invalid, naming the secret, never showing its contents.
    create_secret(&ns, "opaque", "Opaque", "password", WRONG_PASSWORD).await;
    create_secret(
        &ns,
        "garbled",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        &serde_json::json!({ "auths": { host.as_str(): { "auth": format!("not base64 {PASSWORD}") } } })
            .to_string(),
    )
    .await;
    create_secret(
        &ns,
        "wrong-shape",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        &serde_json::json!({ "auths": { host.as_str(): { "password": [PASSWORD] } } }).to_string(),
    )
    .await;
    for (name, says) in [
        ("no-such-secret", "no such Secret"),
        ("opaque", "`Opaque`"),
        ("garbled", "not base64"),
        ("wrong-shape", "not a Docker config"),
    ] {
        // Listed after a good secret: each one named must be usable.
        let resolver = resolver_for(ns.client.clone(), &config(&ns, &["regcred", name]), &host);
        let error = resolver.resolve(&image).await.unwrap_err();
        let text = shown(&error);
        eprintln!("{name}: {error}");
        assert_eq!(error.kind(), ErrorKind::Invalid, "{name}: {text}");
        assert!(text.contains(&format!("`{name}`")), "{text}");
        assert!(text.contains(&ns.name), "{text}");
        assert!(text.contains(says), "{name}: {text}");
        assert_eq!(resolver.classify(&error), ResolveFailure::Unauthorized);
        assert_no_password(&text);
    }

    let logs = capture.text();
    assert!(
        logs.contains("regcred") && logs.contains(&host),
        "the capture saw the resolutions: {} bytes",
        logs.len()
    );
    assert_no_password(&logs);
    eprintln!("captured {} bytes of logs; no password in them", logs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_accounts_pull_secrets_count_when_the_config_names_none() {
    let test = "the_service_accounts_pull_secrets_count_when_the_config_names_none";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let (_server, host) = basic_auth_registry("app").await;
    let image = format!("{host}/app:v1");
    create_secret(
        &ns,
        "legacy",
        "kubernetes.io/dockercfg",
        ".dockercfg",
        &serde_json::json!({ host.as_str(): { "username": USER, "password": PASSWORD } })
            .to_string(),
    )
    .await;
    let account: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "runner" },
        // A secret that does not exist is skipped, as the kubelet skips it.
        "imagePullSecrets": [{ "name": "gone" }, { "name": "legacy" }],
    }))
    .unwrap();
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let with_account = KubernetesConfig {
        service_account: Some("runner".into()),
        ..config(&ns, &[])
    };
    let resolver = resolver_for(ns.client.clone(), &with_account, &host);
    assert_eq!(resolver.resolve(&image).await.unwrap(), DIGEST);

    // Opted out: anonymous, refused.
    let opted_out = PullSecretResolver::builder(ns.client.clone(), &with_account)
        .insecure_registry(&host)
        .service_account_secrets(false)
        .build();
    let error = opted_out.resolve(&image).await.unwrap_err();
    assert_eq!(
        opted_out.classify(&error),
        ResolveFailure::Unauthorized,
        "{error}"
    );

    // A service account the config names but the namespace lacks.
    let missing = KubernetesConfig {
        service_account: Some("nobody".into()),
        ..config(&ns, &[])
    };
    let error = resolver_for(ns.client.clone(), &missing, &host)
        .resolve(&image)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Invalid, "{error}");
    assert!(error.to_string().contains("`nobody`"), "{error}");
}

// --- Under the documented Role ----------------------------------------------

/// A client for the cluster's limited user, or why there is none.
async fn limited_client() -> Result<Client, String> {
    let path = std::env::var("MCP_K8S_KUBECONFIG_LIMITED")
        .map_err(|_| "MCP_K8S_KUBECONFIG_LIMITED is not set".to_owned())?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|e| e.to_string())?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

async fn grant_documented_role(ns: &TestNamespace) {
    let role: Role = serde_norway::from_str(ROLE).expect("docs/kubernetes-rbac.yaml is a Role");
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    let user = std::env::var("MCP_K8S_LIMITED_USER").unwrap_or_else(|_| "mcp-limited".to_owned());
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "mcp-lifecycle" },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role.metadata.name.clone().unwrap(),
        },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
    }))
    .unwrap();
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind the Role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_needs_only_the_documented_role() {
    let test = "the_resolver_needs_only_the_documented_role";
    let client = match limited_client().await {
        Ok(client) => client,
        Err(reason) => return skip(test, &format!("no limited user: {reason}")).unwrap_or(()),
    };
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let (_server, host) = basic_auth_registry("app").await;
    let image = format!("{host}/app:v1");
    create_secret(
        &ns,
        "regcred",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        &docker_config_json(&host, PASSWORD),
    )
    .await;
    // Through the default service account: both `get`s are needed.
    ns.api::<ServiceAccount>()
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "imagePullSecrets": [{ "name": "regcred" }] })),
        )
        .await
        .unwrap();
    let by_account = resolver_for(client.clone(), &config(&ns, &[]), &host);
    let named = resolver_for(client, &config(&ns, &["regcred"]), &host);

    // Without the Role: the error says what to grant.
    let error = by_account.resolve(&image).await.unwrap_err();
    let text = shown(&error);
    assert!(text.contains("verb `get` on `serviceaccounts`"), "{text}");
    let error = named.resolve(&image).await.unwrap_err();
    let text = shown(&error);
    assert!(text.contains("verb `get` on `secrets`"), "{text}");

    grant_documented_role(&ns).await;
    // RBAC takes effect at once for new requests, but give the authorizer's cache a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for resolver in [&by_account, &named] {
        loop {
            match resolver.resolve(&image).await {
                Ok(digest) => {
                    assert_eq!(digest, DIGEST);
                    break;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("under the documented role: {}", shown(&e)),
            }
        }
    }
}

// --- The real local registry ------------------------------------------------

/// A value from images.env.
fn images_env(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(IMAGES_ENV).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
}

/// `HEAD /v2/<repository>/manifests/<tag>` over a bare socket: the
/// registry's own answer, sharing no code with the resolver.
fn raw_head_digest(host: &str, repository: &str, tag: &str) -> std::io::Result<Option<String>> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "HEAD /v2/{repository}/manifests/{tag} HTTP/1.1\r\nHost: {host}\r\nAccept: {}\r\nConnection: close\r\n\r\n",
        MANIFEST_TYPES.join(", ")
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let mut lines = response.lines();
    if lines.next().and_then(|s| s.split_whitespace().nth(1)) != Some("200") {
        return Ok(None);
    }
    Ok(lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("docker-content-digest"))
        .map(|(_, v)| v.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pull_secrets_the_local_registry_resolves_anonymously() {
    let test = "without_pull_secrets_the_local_registry_resolves_anonymously";
    let Some(ns) = TestNamespace::create(test).await else {
        return;
    };
    let registry_image = images_env("MCP_TEST_REGISTRY_IMAGE")
        .unwrap_or_else(|| "127.0.0.1:5000/mcp-test-server".to_owned());
    let Some((host, repository)) = registry_image.split_once('/') else {
        panic!("MCP_TEST_REGISTRY_IMAGE {registry_image} has no host");
    };
    let expected = match raw_head_digest(host, repository, "v1") {
        Ok(Some(digest)) => digest,
        Ok(None) => {
            return skip(test, &format!("{registry_image}:v1 is not in the registry"))
                .unwrap_or(());
        }
        Err(e) => {
            return skip(
                test,
                &format!("no registry at {host} ({e}); run scripts/test-images.sh"),
            )
            .unwrap_or(());
        }
    };
    // No pull secrets, and the namespace's default service account has none.
    let resolver = resolver_for(ns.client.clone(), &config(&ns, &[]), host);
    let image = format!("{registry_image}:v1");
    let resolved = resolver.resolve(&image).await.unwrap();
    assert_eq!(resolved, expected, "the resolver and the registry disagree");
    eprintln!(
        "{image} resolves to {resolved} (images.env: {:?})",
        images_env("MCP_TEST_REGISTRY_DIGEST_V1")
    );
    let error = resolver
        .resolve(&format!("{registry_image}:no-such-tag"))
        .await
        .unwrap_err();
    assert_eq!(
        resolver.classify(&error),
        ResolveFailure::NotFound,
        "{error}"
    );
}
