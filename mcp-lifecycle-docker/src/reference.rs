//! Image references as Docker reads them: registry domain, repository path,
//! tag and digest.
//!
//! This module owns the parsing rules only (the same as the Docker CLI's
//! `reference.ParseNormalizedNamed`, minus validation the daemon does anyway).
//! It must not talk to the engine or a registry.

/// Docker Hub's domain in normalized references.
const DOCKER_HUB: &str = "docker.io";

/// The key Docker Hub credentials are stored under in the Docker config.
pub(crate) const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The registry: `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `localhost`.
    pub(crate) domain: String,
    /// The repository path inside the registry (`library/nginx`, `org/app`).
    pub(crate) path: String,
    /// The tag, if any.
    pub(crate) tag: Option<String>,
    /// The digest (`sha256:…`), if any.
    pub(crate) digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference` leniently: anything is accepted, and the daemon
    /// rejects what is malformed.
    pub(crate) fn parse(reference: &str) -> ImageRef {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_owned())),
            None => (reference, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_owned()),
            ),
            None => (name, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
            None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
        };
        let domain = if domain == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            domain
        };
        ImageRef {
            domain,
            path,
            tag,
            digest,
        }
    }

    /// The fully qualified repository: `docker.io/library/nginx`.
    pub(crate) fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The reference to pull: `reference` itself, with `:latest` added when it
    /// names neither a tag nor a digest (the pull endpoint would otherwise
    /// fetch every tag of the repository).
    pub(crate) fn pull_reference(reference: &str) -> String {
        let parsed = ImageRef::parse(reference);
        if parsed.tag.is_none() && parsed.digest.is_none() {
            format!("{reference}:latest")
        } else {
            reference.to_owned()
        }
    }

    /// The key under which the Docker config stores this registry's credentials.
    pub(crate) fn credential_key(&self) -> String {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_CREDENTIAL_KEY.to_owned()
        } else {
            self.domain.clone()
        }
    }
}

/// The digest of a reference pinned by digest (`repo@sha256:<64 hex>`), if it is.
pub(crate) fn pinned_digest(reference: &str) -> Option<&str> {
    let (_, digest) = reference.rsplit_once('@')?;
    is_sha256_digest(digest).then_some(digest)
}

/// Whether `digest` is `sha256:` followed by 64 lowercase hex characters.
pub(crate) fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_the_usual_shapes() {
        let r = ImageRef::parse("nginx");
        assert_eq!(r.repository(), "docker.io/library/nginx");
        assert_eq!(r.tag, None);
        let r = ImageRef::parse("org/app:1.2");
        assert_eq!(r.repository(), "docker.io/org/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = ImageRef::parse("127.0.0.1:5000/mcp-test-server:v1");
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.path, "mcp-test-server");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = ImageRef::parse(&format!("ghcr.io/a/b@{DIGEST}"));
        assert_eq!(r.repository(), "ghcr.io/a/b");
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        let r = ImageRef::parse("localhost/x:y");
        assert_eq!(r.domain, "localhost");
        assert_eq!(r.credential_key(), "localhost");
        assert_eq!(
            ImageRef::parse("nginx").credential_key(),
            DOCKER_HUB_CREDENTIAL_KEY
        );
    }

    #[test]
    fn pull_reference_adds_latest_only_when_needed() {
        assert_eq!(ImageRef::pull_reference("nginx"), "nginx:latest");
        assert_eq!(
            ImageRef::pull_reference("127.0.0.1:5000/x"),
            "127.0.0.1:5000/x:latest"
        );
        assert_eq!(ImageRef::pull_reference("x:1"), "x:1");
        let pinned = format!("x@{DIGEST}");
        assert_eq!(ImageRef::pull_reference(&pinned), pinned);
    }

    #[test]
    fn pinned_digests_are_recognised() {
        assert_eq!(pinned_digest(&format!("a/b@{DIGEST}")), Some(DIGEST));
        assert_eq!(pinned_digest("a/b:1"), None);
        assert_eq!(pinned_digest("a/b@sha256:short"), None);
    }
}
