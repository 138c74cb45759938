//! The local registry of `scripts/test-images.sh`: the image names it
//! wrote to `images.env`, and pushing a test image under a new tag.

use super::IMAGES_ENV;

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
