//! The running digest of an instance: the manifest digest its image was
//! pulled by, read from the image's repo digests.
//!
//! This module owns choosing the right repo digest (the one of the
//! repository the container was created from) and a cache keyed by image id
//! (an image id never changes what it is; its repo digests only grow when
//! the same content is pulled under another name). It must not pull or
//! resolve anything: an image built locally and never pushed or pulled has
//! no digest, and reports none.
//!
//! The rule, in order: a container created from `repo@sha256:…` runs that
//! digest (the controller pins tags this way when it has a resolver);
//! otherwise, on an engine whose repo digests are records of pulls and
//! pushes per repository (Docker), the one digest recorded for the
//! configured repository; otherwise unknown. Podman's repo digests are every
//! name the image has crossed with every digest it has seen, so they are no
//! record of what the tag was pulled by (a locally tagged image lists digests
//! it was never pulled by from that repository): on Podman a tag-started
//! container's digest is unknown, never a guess.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::Docker;

use crate::client::is_not_found;
use crate::reference::{ImageRef, is_sha256_digest, pinned_digest};

/// Repo digests by image id.
pub(crate) struct DigestCache {
    by_image: Mutex<HashMap<String, Vec<String>>>,
    /// Whether repo digests say which digest was pulled for a repository
    /// (Docker) or not (Podman).
    repo_digests_trusted: bool,
}

impl DigestCache {
    /// A cache for an engine whose repo digests are (`true`, Docker) or are
    /// not (`false`, Podman) records of what each repository was pulled by.
    pub(crate) fn new(repo_digests_trusted: bool) -> Self {
        DigestCache {
            by_image: Mutex::new(HashMap::new()),
            repo_digests_trusted,
        }
    }

    /// The digest `configured` (the reference the container was created
    /// from) runs as, given the container's image id. A digest-pinned
    /// reference is its own answer.
    pub(crate) async fn running_digest(
        &self,
        docker: &Docker,
        image_id: &str,
        configured: &str,
    ) -> Option<String> {
        if let Some(digest) = pinned_digest(configured) {
            return Some(digest.to_owned());
        }
        if !self.repo_digests_trusted {
            return None;
        }
        let cached = self
            .by_image
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(image_id)
            .cloned();
        let repo_digests = match cached {
            Some(found) => found,
            None => {
                let found = match docker.inspect_image(image_id).await {
                    Ok(image) => image.repo_digests.unwrap_or_default(),
                    Err(e) => {
                        if !is_not_found(&e) {
                            tracing::debug!(image = %configured, error = %e, "inspecting the image for its digest failed");
                        }
                        return None;
                    }
                };
                // An image with no repo digest yet may get one from a later pull.
                if !found.is_empty() {
                    self.by_image
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(image_id.to_owned(), found.clone());
                }
                found
            }
        };
        choose(&repo_digests, configured)
    }
}

/// The digest of the repo digest (`repo@sha256:…`) whose repository is the
/// one `configured` names. An image known only under other repositories (a
/// local tag of a pushed image) has no running digest for this reference.
///
/// Docker keeps a repo digest per repository: the manifest it pulled or
/// pushed that content by. Should one repository show several digests (the
/// same content pulled by two manifests), the list's order says nothing about
/// which one the tag was pulled by, so several distinct digests are no answer
/// (unknown, never a guess that depends on order).
pub(crate) fn choose(repo_digests: &[String], configured: &str) -> Option<String> {
    let want = ImageRef::parse(configured).repository();
    let mut found: Option<&str> = None;
    for entry in repo_digests {
        let Some((repo, digest)) = entry.rsplit_once('@') else {
            continue;
        };
        if !is_sha256_digest(digest) || ImageRef::parse(repo).repository() != want {
            continue;
        }
        match found {
            None => found = Some(digest),
            Some(seen) if seen == digest => {}
            Some(_) => {
                tracing::debug!(image = %configured, ?repo_digests,
                    "the image has several digests for its repository; its running digest is unknown");
                return None;
            }
        }
    }
    found.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn picks_the_configured_repository() {
        let digests = vec![
            format!("127.0.0.1:5000/other@{A}"),
            format!("127.0.0.1:5000/mcp-test-server@{B}"),
        ];
        assert_eq!(
            choose(&digests, "127.0.0.1:5000/mcp-test-server:v1").as_deref(),
            Some(B)
        );
        assert_eq!(choose(&digests, "elsewhere/x:1"), None);
    }

    #[test]
    fn several_digests_for_the_repository_are_no_answer_in_any_order() {
        // Podman's shape: every name crossed with every digest, sorted.
        let mut digests = vec![
            format!("127.0.0.1:5000/mcp-test-server@{A}"),
            format!("127.0.0.1:5000/mcp-test-server@{B}"),
            format!("localhost/mcp-lifecycle/test-server@{A}"),
            format!("localhost/mcp-lifecycle/test-server@{B}"),
        ];
        assert_eq!(choose(&digests, "127.0.0.1:5000/mcp-test-server:v1"), None);
        digests.reverse();
        assert_eq!(choose(&digests, "127.0.0.1:5000/mcp-test-server:v1"), None);
        // The same digest listed twice is still one answer.
        let twice = vec![
            format!("127.0.0.1:5000/mcp-test-server@{A}"),
            format!("127.0.0.1:5000/mcp-test-server@{A}"),
        ];
        assert_eq!(
            choose(&twice, "127.0.0.1:5000/mcp-test-server:v1").as_deref(),
            Some(A)
        );
    }

    /// A cache that already holds `repo_digests` for image `id`, so no
    /// engine is asked.
    fn primed(trusted: bool, id: &str, repo_digests: Vec<String>) -> DigestCache {
        let cache = DigestCache::new(trusted);
        cache
            .by_image
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), repo_digests);
        cache
    }

    #[tokio::test]
    async fn untrusted_repo_digests_leave_tags_unknown_and_pins_known() {
        // Never contacted: the answers come from the cache or the reference.
        let docker =
            Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
                .unwrap_or_else(|e| panic!("a client that is never used: {e}"));
        let repo_digests = vec![format!("127.0.0.1:5000/mcp-test-server@{A}")];
        let tag = "127.0.0.1:5000/mcp-test-server:v1";
        let pinned = format!("127.0.0.1:5000/mcp-test-server@{B}");

        let docker_like = primed(true, "img", repo_digests.clone());
        assert_eq!(
            docker_like
                .running_digest(&docker, "img", tag)
                .await
                .as_deref(),
            Some(A)
        );
        let podman_like = primed(false, "img", repo_digests);
        assert_eq!(podman_like.running_digest(&docker, "img", tag).await, None);
        // A pinned reference is its own answer on both, whatever the image lists.
        for cache in [&docker_like, &podman_like] {
            assert_eq!(
                cache
                    .running_digest(&docker, "img", &pinned)
                    .await
                    .as_deref(),
                Some(B)
            );
        }
    }

    #[test]
    fn familiar_names_match_normalized_ones() {
        let digests = vec![format!("nginx@{A}")];
        assert_eq!(
            choose(&digests, "docker.io/library/nginx:1").as_deref(),
            Some(A)
        );
        assert_eq!(choose(&digests, "unrelated:1"), None);
        assert_eq!(choose(&[], "nginx"), None);
    }
}
