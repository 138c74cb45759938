//! Image pull Secrets as the kubelet reads them: the data of a
//! `kubernetes.io/dockerconfigjson` Secret (`.dockerconfigjson`, a Docker
//! `config.json` with an `auths` map) or a legacy `kubernetes.io/dockercfg`
//! one (`.dockercfg`, the map alone) becomes a [`Keyring`], and
//! [`Keyring::lookup`] finds an image's credentials the way the kubelet's
//! keyring does (`pkg/credentialprovider/keyring.go`):
//!
//! - An entry's key loses its `http://`/`https://` scheme and a leading `/v1/`
//!   or `/v2/` path; what remains is `host[:port][/path]`.
//! - An image (`registry/repository`, Docker Hub's as
//!   `docker.io/library/nginx`) matches a key when the ports are equal, the
//!   hosts have as many dot-separated parts and each part matches as a glob
//!   (`*.example.com`), and the key's path is a prefix of the image's.
//! - Every matching key counts, most specific (reverse-sorted) first; a key's
//!   credentials are in the order the Secrets were read. With no match, a
//!   Docker Hub image takes the `index.docker.io` entry (what `docker login`
//!   writes as `https://index.docker.io/v1/`).
//! - An entry's credentials are its `auth` (base64 of `username:password`,
//!   padded or not) when set, else its `username` and `password`; an entry
//!   with neither is anonymous.
//!
//! Passwords are [`SecretString`]s from the moment they are parsed; nothing
//! here formats one, and a parse error says where (the key, a line and
//! column), never what.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

/// The type of a Secret holding a Docker `config.json`.
pub(crate) const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Its data key.
pub(crate) const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The type of a Secret holding a legacy `~/.dockercfg`.
pub(crate) const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
/// Its data key.
pub(crate) const DOCKERCFG_KEY: &str = ".dockercfg";

/// The key `docker login` gives Docker Hub, as the keyring stores it.
const DOCKER_HUB_KEY: &str = "index.docker.io";

/// Base64 with or without padding, as the kubelet accepts an `auth` field.
const AUTH_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A username and password from a pull secret.
#[derive(Clone)]
pub(crate) struct PullCredential {
    pub(crate) username: String,
    pub(crate) password: SecretString,
}

impl fmt::Debug for PullCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullCredential")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What a lookup found: the credential (`None`: the entry is anonymous) and
/// the Secret it came from.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) secret: String,
    pub(crate) credential: Option<PullCredential>,
}

/// Why a pull secret's data cannot be used. Says where, never what: no
/// message carries a value from the Secret other than a registry key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// The Secret is of another type.
    #[error("its type is `{found}`, not `{DOCKER_CONFIG_JSON_TYPE}` or `{DOCKERCFG_TYPE}`")]
    WrongType {
        /// The type it has (`Opaque` when unset).
        found: String,
    },
    /// The data key its type requires is missing or empty.
    #[error("it has no `{key}` data, which a `{kind}` Secret must have")]
    MissingKey {
        /// The key.
        key: &'static str,
        /// The Secret's type.
        kind: &'static str,
    },
    /// The data is not JSON of the expected shape.
    #[error("its `{key}` is not a Docker config ({category} at line {line}, column {column})")]
    Json {
        /// The data key.
        key: &'static str,
        /// serde_json's category, not its message (which may quote values).
        category: &'static str,
        /// Where.
        line: usize,
        /// Where.
        column: usize,
    },
    /// An entry's `auth` is not base64 of `username:password`.
    #[error("the `auth` of its entry for `{registry}` is not base64 of `username:password`")]
    Auth {
        /// The entry's key, without scheme or user-info.
        registry: String,
    },
}

/// One entry of a Docker config, as the kubelet reads it (other fields,
/// such as `email` or `identitytoken`, are ignored as the kubelet ignores
/// them).
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    auth: Option<SecretString>,
}

/// A `.dockerconfigjson`: the entries are under `auths`.
#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: Option<BTreeMap<String, Entry>>,
}

/// The entries of a pull Secret's data, by the Secret's `type_`
/// (`None` is `Opaque`): the registry key as written and its credential.
pub(crate) fn parse_secret(
    type_: Option<&str>,
    data: &BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<Vec<(String, Option<PullCredential>)>, ParseError> {
    let (kind, key) = match type_ {
        Some(DOCKER_CONFIG_JSON_TYPE) => (DOCKER_CONFIG_JSON_TYPE, DOCKER_CONFIG_JSON_KEY),
        Some(DOCKERCFG_TYPE) => (DOCKERCFG_TYPE, DOCKERCFG_KEY),
        other => {
            return Err(ParseError::WrongType {
                found: other.unwrap_or("Opaque").to_owned(),
            });
        }
    };
    let bytes = match data.get(key) {
        Some(bytes) if !bytes.0.is_empty() => &bytes.0,
        _ => return Err(ParseError::MissingKey { key, kind }),
    };
    let json_error = |e: serde_json::Error| ParseError::Json {
        key,
        category: match e.classify() {
            serde_json::error::Category::Syntax => "a syntax error",
            serde_json::error::Category::Data => "a value of the wrong type",
            serde_json::error::Category::Eof => "an unexpected end",
            serde_json::error::Category::Io => "a read error",
        },
        line: e.line(),
        column: e.column(),
    };
    let entries = if key == DOCKER_CONFIG_JSON_KEY {
        serde_json::from_slice::<DockerConfigJson>(bytes)
            .map_err(json_error)?
            .auths
            .unwrap_or_default()
    } else {
        serde_json::from_slice::<BTreeMap<String, Entry>>(bytes).map_err(json_error)?
    };
    entries
        .into_iter()
        .map(|(registry, entry)| {
            let credential = credential(&registry, entry)?;
            Ok((registry, credential))
        })
        .collect()
}

/// An entry's credential: `auth` wins over `username`/`password`; an entry
/// with neither username nor password is anonymous.
fn credential(registry: &str, entry: Entry) -> Result<Option<PullCredential>, ParseError> {
    let (username, password) = match entry.auth.filter(|a| !a.expose_secret().is_empty()) {
        Some(auth) => {
            let bad = || ParseError::Auth {
                registry: keyring_key(registry).unwrap_or_else(|| "an unnamed registry".into()),
            };
            let decoded = Zeroizing::new(
                AUTH_BASE64
                    .decode(auth.expose_secret())
                    .map_err(|_| bad())?,
            );
            let text = std::str::from_utf8(&decoded).map_err(|_| bad())?;
            let (username, password) = text.split_once(':').ok_or_else(bad)?;
            (username.to_owned(), SecretString::from(password))
        }
        None => (
            entry.username.unwrap_or_default(),
            entry.password.unwrap_or_default(),
        ),
    };
    if username.is_empty() && password.expose_secret().is_empty() {
        return Ok(None);
    }
    Ok(Some(PullCredential { username, password }))
}

/// The keyring key of a Docker config entry (`https://host:port/v1/` →
/// `host:port`, `quay.io/team` → `quay.io/team`), or `None` for one that
/// names no host.
pub(crate) fn keyring_key(location: &str) -> Option<String> {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = split_schemeless(rest);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // Docker treats `/v1/` and `/v2/` as the host itself.
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        &path[3..]
    } else {
        path
    };
    Some(if path.is_empty() || path == "/" {
        host.to_owned()
    } else {
        format!("{host}{path}")
    })
}

/// `host[:port]` and `/path` of a URL without its scheme (user-info,
/// query and fragment dropped).
fn split_schemeless(url: &str) -> (&str, &str) {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let (authority, path) = match url.find('/') {
        Some(slash) => url.split_at(slash),
        None => (url, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (host, path)
}

/// Go's `net.SplitHostPort`, falling back to the whole host and no port as
/// the kubelet does when there is none.
fn split_host_port(host: &str) -> (&str, &str) {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.split_once("]:") {
            Some((name, port)) => (name, port),
            None => (host, ""),
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => (name, port),
        _ => (host, ""),
    }
}

/// Whether keyring key `key` (host parts may be globs) matches `image`
/// (`registry/repository`), as the kubelet's `URLsMatch`.
fn urls_match(key: &str, image: &str) -> bool {
    let (key_host, key_path) = split_schemeless(key);
    let (image_host, image_path) = split_schemeless(image);
    let (key_name, key_port) = split_host_port(key_host);
    let (image_name, image_port) = split_host_port(image_host);
    if key_port != image_port || !image_path.starts_with(key_path) {
        return false;
    }
    let key_parts: Vec<&str> = key_name.split('.').collect();
    let image_parts: Vec<&str> = image_name.split('.').collect();
    key_parts.len() == image_parts.len()
        && key_parts.iter().zip(&image_parts).all(|(pattern, part)| {
            glob::Pattern::new(pattern).is_ok_and(|pattern| pattern.matches(part))
        })
}

/// Whether `image` is on Docker Hub, as the kubelet decides it: no registry
/// part, `docker.io` or `index.docker.io`, or a first part that cannot be a
/// host (no `.` or `:`, not `localhost`).
fn is_docker_hub(image: &str) -> bool {
    match image.split_once('/') {
        None => !image.is_empty(),
        Some(("", _)) => false,
        Some((first, _)) => {
            first == "docker.io"
                || first == "index.docker.io"
                || (!first.contains(['.', ':']) && first != "localhost")
        }
    }
}

/// The credentials of some pull Secrets, indexed as the kubelet indexes them.
#[derive(Debug, Default)]
pub(crate) struct Keyring {
    /// Keyring key → its credentials, in the order the Secrets were added.
    entries: BTreeMap<String, Vec<Candidate>>,
}

impl Keyring {
    /// Adds the entries of Secret `secret`. Entries whose key names no host
    /// are skipped, as the kubelet skips them.
    pub(crate) fn add(&mut self, secret: &str, entries: Vec<(String, Option<PullCredential>)>) {
        for (location, credential) in entries {
            match keyring_key(&location) {
                Some(key) => self.entries.entry(key).or_default().push(Candidate {
                    secret: secret.to_owned(),
                    credential,
                }),
                None => {
                    tracing::warn!(
                        secret,
                        "an entry of the pull secret names no registry host; ignored"
                    );
                }
            }
        }
    }

    /// The credentials to try for `image` (`registry/repository`, Docker
    /// Hub's as `docker.io/library/NAME`), in order; empty: pull anonymously.
    pub(crate) fn lookup(&self, image: &str) -> Vec<Candidate> {
        let found: Vec<Candidate> = self
            .entries
            .iter()
            .rev()
            .filter(|(key, _)| urls_match(key, image))
            .flat_map(|(_, candidates)| candidates.iter().cloned())
            .collect();
        if found.is_empty() && is_docker_hub(image) {
            return self
                .entries
                .get(DOCKER_HUB_KEY)
                .cloned()
                .unwrap_or_default();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;
    use k8s_openapi::ByteString;

    /// `username:password` in base64, as `docker login` writes `auth`.
    fn encode_auth(username: &str, password: &str) -> String {
        general_purpose::STANDARD.encode(format!("{username}:{password}"))
    }

    const CANARY: &str = "canary-pw-0b5e9d";

    fn data(key: &str, json: &str) -> BTreeMap<String, ByteString> {
        BTreeMap::from([(key.to_owned(), ByteString(json.as_bytes().to_vec()))])
    }

    fn parse_json(json: &str) -> Result<Vec<(String, Option<PullCredential>)>, ParseError> {
        parse_secret(
            Some(DOCKER_CONFIG_JSON_TYPE),
            &data(DOCKER_CONFIG_JSON_KEY, json),
        )
    }

    fn user_of(
        entries: &[(String, Option<PullCredential>)],
        key: &str,
    ) -> Option<(String, String)> {
        entries
            .iter()
            .find(|(k, _)| k == key)?
            .1
            .as_ref()
            .map(|c| (c.username.clone(), c.password.expose_secret().to_owned()))
    }

    fn keyring(secrets: &[(&str, &str)]) -> Keyring {
        let mut keyring = Keyring::default();
        for (name, json) in secrets {
            keyring.add(name, parse_json(json).unwrap());
        }
        keyring
    }

    fn users(candidates: &[Candidate]) -> Vec<String> {
        candidates
            .iter()
            .map(|c| {
                c.credential
                    .as_ref()
                    .map_or("<anonymous>".to_owned(), |c| c.username.clone())
            })
            .collect()
    }

    #[test]
    fn username_and_password_entries_parse() {
        let entries = parse_json(
            r#"{"auths":{"127.0.0.1:5000":{"username":"alice","password":"pw","email":"a@b"}}}"#,
        )
        .unwrap();
        assert_eq!(
            user_of(&entries, "127.0.0.1:5000"),
            Some(("alice".into(), "pw".into()))
        );
    }

    #[test]
    fn auth_wins_and_may_be_padded_or_not() {
        let padded = encode_auth("bob", "p:w:colons");
        let unpadded = general_purpose::STANDARD_NO_PAD.encode("carol:x");
        assert!(padded.ends_with('='), "the test wants a padded value");
        let json = format!(
            r#"{{"auths":{{"a.example":{{"auth":"{padded}","username":"ignored","password":"ignored"}},"b.example":{{"auth":"{unpadded}"}}}}}}"#
        );
        let entries = parse_json(&json).unwrap();
        assert_eq!(
            user_of(&entries, "a.example"),
            Some(("bob".into(), "p:w:colons".into()))
        );
        assert_eq!(
            user_of(&entries, "b.example"),
            Some(("carol".into(), "x".into()))
        );
    }

    #[test]
    fn legacy_dockercfg_is_the_bare_map() {
        let entries = parse_secret(
            Some(DOCKERCFG_TYPE),
            &data(
                DOCKERCFG_KEY,
                &format!(
                    r#"{{"https://index.docker.io/v1/":{{"auth":"{}","email":"x"}}}}"#,
                    encode_auth("dave", "pw")
                ),
            ),
        )
        .unwrap();
        assert_eq!(
            user_of(&entries, "https://index.docker.io/v1/"),
            Some(("dave".into(), "pw".into()))
        );
    }

    #[test]
    fn entries_without_credentials_are_anonymous() {
        let entries = parse_json(r#"{"auths":{"a.example":{},"b.example":{"auth":""}}}"#).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|(_, c)| c.is_none()));
        assert!(parse_json(r#"{}"#).unwrap().is_empty());
    }

    #[test]
    fn wrong_types_and_missing_keys_are_errors() {
        let json = data(DOCKER_CONFIG_JSON_KEY, "{}");
        assert_eq!(
            parse_secret(Some("Opaque"), &json).unwrap_err(),
            ParseError::WrongType {
                found: "Opaque".into()
            }
        );
        assert!(matches!(
            parse_secret(None, &json),
            Err(ParseError::WrongType { .. })
        ));
        assert!(matches!(
            parse_secret(Some(DOCKERCFG_TYPE), &json),
            Err(ParseError::MissingKey {
                key: DOCKERCFG_KEY,
                ..
            })
        ));
        assert!(matches!(
            parse_secret(
                Some(DOCKER_CONFIG_JSON_TYPE),
                &data(DOCKER_CONFIG_JSON_KEY, "")
            ),
            Err(ParseError::MissingKey { .. })
        ));
    }

    #[test]
    fn parse_errors_never_quote_the_data() {
        let cases = [
            format!(r#"{{"auths":{{"r.example":{{"password":["{CANARY}"]}}}}}}"#),
            format!(r#"{{"auths":{{"r.example":{{"password":"{CANARY}" "#),
            format!(r#"{{"auths":"{CANARY}"}}"#),
            format!(r#"{{"auths":{{"r.example":{{"username":1,"password":"{CANARY}"}}}}}}"#),
            CANARY.to_owned(),
        ];
        for json in &cases {
            let error = parse_json(json).unwrap_err();
            let shown = format!("{error} / {error:?}");
            assert!(matches!(error, ParseError::Json { .. }), "{json}: {shown}");
            assert!(!shown.contains(CANARY), "{shown}");
        }
        // An `auth` that is not base64 of user:pass names the registry only.
        for auth in [
            "%%%".to_owned(),
            general_purpose::STANDARD.encode(format!("no-colon-{CANARY}")),
        ] {
            let json = format!(
                r#"{{"auths":{{"https://user:{CANARY}@r.example/v2/":{{"auth":"{auth}"}}}}}}"#
            );
            let error = parse_json(&json).unwrap_err();
            let shown = format!("{error} / {error:?}");
            assert_eq!(
                error,
                ParseError::Auth {
                    registry: "r.example".into()
                },
                "{shown}"
            );
            assert!(!shown.contains(CANARY), "{shown}");
        }
    }

    #[test]
    fn debug_of_credentials_hides_the_password() {
        let entries = parse_json(&format!(
            r#"{{"auths":{{"r.example":{{"username":"eve","password":"{CANARY}"}}}}}}"#
        ))
        .unwrap();
        let mut keyring = Keyring::default();
        keyring.add("regcred", entries.clone());
        let shown = format!(
            "{entries:?} {keyring:?} {:?}",
            keyring.lookup("r.example/app")
        );
        assert!(shown.contains("eve"), "{shown}");
        assert!(!shown.contains(CANARY), "{shown}");
    }

    #[test]
    fn keys_lose_scheme_user_info_and_api_version_paths() {
        assert_eq!(
            keyring_key("127.0.0.1:5000").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            keyring_key("https://index.docker.io/v1/").as_deref(),
            Some("index.docker.io")
        );
        assert_eq!(
            keyring_key("http://r.example/v2/").as_deref(),
            Some("r.example")
        );
        assert_eq!(
            keyring_key("https://quay.io/v2/team").as_deref(),
            Some("quay.io/team")
        );
        assert_eq!(
            keyring_key("quay.io/team/").as_deref(),
            Some("quay.io/team/")
        );
        assert_eq!(
            keyring_key("https://u:p@r.example:443/").as_deref(),
            Some("r.example:443")
        );
        assert_eq!(keyring_key("https://"), None);
        assert_eq!(keyring_key("bad host"), None);
    }

    #[test]
    fn hosts_and_ports_must_match() {
        assert!(urls_match(
            "127.0.0.1:5000",
            "127.0.0.1:5000/mcp-test-server"
        ));
        assert!(!urls_match(
            "127.0.0.1:5000",
            "127.0.0.1:5001/mcp-test-server"
        ));
        assert!(!urls_match("127.0.0.1", "127.0.0.1:5000/mcp-test-server"));
        assert!(!urls_match("r.example:5000", "r.example/app"));
        assert!(urls_match("[::1]:5000", "[::1]:5000/app"));
        assert!(!urls_match("ghcr.io", "quay.io/app"));
    }

    #[test]
    fn host_parts_are_globs_of_the_same_count() {
        assert!(urls_match("*.example.com", "registry.example.com/app"));
        assert!(!urls_match("*.example.com", "a.registry.example.com/app"));
        assert!(!urls_match("*.example.com", "example.com/app"));
        assert!(urls_match(
            "registry-[0-9].example.com",
            "registry-1.example.com/app"
        ));
        // `?` starts a URL query, for the kubelet too: never a glob.
        assert!(!urls_match(
            "registry-?.example.com",
            "registry-1.example.com/app"
        ));
        assert!(urls_match("*.*.example.com", "a.b.example.com/app"));
    }

    #[test]
    fn a_key_path_must_prefix_the_repository() {
        assert!(urls_match("quay.io/team", "quay.io/team/app"));
        assert!(!urls_match("quay.io/team", "quay.io/other/app"));
        // A plain string prefix, as the kubelet compares.
        assert!(urls_match("quay.io/team", "quay.io/teamwork/app"));
    }

    #[test]
    fn docker_hub_images_are_recognised_as_the_kubelet_does() {
        for image in [
            "docker.io/library/nginx",
            "index.docker.io/acme/app",
            "acme/app",
            "nginx",
        ] {
            assert!(is_docker_hub(image), "{image}");
        }
        for image in [
            "quay.io/app",
            "localhost/app",
            "127.0.0.1:5000/app",
            "host:5000/app",
            "/x",
        ] {
            assert!(!is_docker_hub(image), "{image}");
        }
    }

    #[test]
    fn docker_hub_credentials_match_under_either_name() {
        let legacy = keyring(&[(
            "hub",
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"hubuser","password":"x"}}}"#,
        )]);
        assert_eq!(
            users(&legacy.lookup("docker.io/library/nginx")),
            ["hubuser"]
        );
        assert!(legacy.lookup("quay.io/library/nginx").is_empty());
        let short = keyring(&[(
            "hub",
            r#"{"auths":{"docker.io":{"username":"hubuser","password":"x"}}}"#,
        )]);
        assert_eq!(users(&short.lookup("docker.io/acme/app")), ["hubuser"]);
    }

    #[test]
    fn more_specific_keys_come_first_then_secret_order() {
        let keyring = keyring(&[
            (
                "first",
                r#"{"auths":{"quay.io":{"username":"host-1","password":"x"},"quay.io/team":{"username":"team","password":"x"}}}"#,
            ),
            (
                "second",
                r#"{"auths":{"https://quay.io/v2/":{"username":"host-2","password":"x"},"ghcr.io":{"username":"gh","password":"x"}}}"#,
            ),
        ]);
        let found = keyring.lookup("quay.io/team/app");
        assert_eq!(users(&found), ["team", "host-1", "host-2"]);
        assert_eq!(
            found.iter().map(|c| c.secret.as_str()).collect::<Vec<_>>(),
            ["first", "first", "second"]
        );
        assert_eq!(
            users(&keyring.lookup("quay.io/other/app")),
            ["host-1", "host-2"]
        );
        assert_eq!(users(&keyring.lookup("ghcr.io/o/r")), ["gh"]);
        assert!(keyring.lookup("127.0.0.1:5000/app").is_empty());
        assert!(keyring.lookup("docker.io/library/nginx").is_empty());
    }

    #[test]
    fn an_anonymous_entry_is_a_candidate_too() {
        let keyring = keyring(&[("anon", r#"{"auths":{"r.example":{}}}"#)]);
        assert_eq!(users(&keyring.lookup("r.example/app")), ["<anonymous>"]);
    }
}
