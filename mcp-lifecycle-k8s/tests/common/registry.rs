//! The local registry of `scripts/test-images.sh`: the image names it
//! wrote to `images.env`, and pushing a test image under a new tag.

use super::{IMAGES_ENV, skip, unique};

/// A value `scripts/test-images.sh` wrote to `images.env`.
pub(crate) fn images_env(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(IMAGES_ENV).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// `docker tag` + `docker push`; the digest the registry reported.
pub(crate) fn push_as(source: &str, target: &str) -> String {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
        assert!(out.status.success(), "docker {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["tag", source, target]);
    let out = run(&["push", target]);
    out.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .filter(|d| d.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("docker push {target} reported no digest: {out}"))
        .to_owned()
}

/// Removes the local tag when dropped (never touches the registry).
pub(crate) struct Untag(pub(crate) String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "--no-prune", &self.0])
            .output();
    }
}

/// A tag of one test's own in the local registry, holding the v1 test image
/// (pushed when made); the local tag is removed when it is dropped.
pub(crate) struct TestTag {
    /// The registry repository (`127.0.0.1:5000/mcp-test-server`).
    pub(crate) repo: String,
    /// `repo:unique-name`.
    pub(crate) tag: String,
    /// The digest the registry reported for v1 under `tag`.
    pub(crate) v1: String,
    _untag: Untag,
}

impl TestTag {
    /// Pushes v1 under a new tag named after `prefix`; `None` (the test
    /// skips, or fails under `MCP_LIFECYCLE_REQUIRE_K8S=1`) without the
    /// local registry of `scripts/test-images.sh`.
    pub(crate) fn push_v1(test: &str, prefix: &str) -> Option<TestTag> {
        let (Some(repo), Some(local_v1)) = (
            images_env("MCP_TEST_REGISTRY_IMAGE"),
            images_env("MCP_TEST_IMAGE_V1"),
        ) else {
            return skip(
                test,
                "no local registry in images.env; run scripts/test-images.sh",
            );
        };
        let tag = format!("{repo}:{}", unique(prefix));
        let untag = Untag(tag.clone());
        let v1 = push_as(&local_v1, &tag);
        Some(TestTag {
            repo,
            tag,
            v1,
            _untag: untag,
        })
    }

    /// Pushes v2 under the same tag; the digest the registry reported.
    pub(crate) fn push_v2(&self) -> String {
        let local_v2 = images_env("MCP_TEST_IMAGE_V2")
            .unwrap_or_else(|| panic!("images.env has no MCP_TEST_IMAGE_V2"));
        push_as(&local_v2, &self.tag)
    }
}
