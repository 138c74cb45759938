//! What is stored about a server's image freshness, and what status shows.
//!
//! Layer: data.

use serde::{Deserialize, Serialize};

use crate::state::{CheckFailure, Freshness};
use crate::time::Timestamp;

/// Collection of [`FreshnessRecord`]s, keyed by server name.
pub const FRESHNESS: &str = "freshness";

/// The longest failure message kept; longer ones are cut.
const MAX_MESSAGE: usize = 300;

/// The last failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckFailureRecord {
    /// When.
    pub at: Timestamp,
    /// Why, as a category.
    pub category: CheckFailure,
    /// The error, truncated, with credentials and tokens scrubbed.
    pub message: String,
}

/// A server's freshness bookkeeping, stored durably so that a host restart
/// resumes a rollout verification where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FreshnessRecord {
    /// The state machine's state (a rollout's next verification is inside it).
    pub state: Freshness,
    /// When the next check is due.
    pub next_check_at: Option<Timestamp>,
    /// When the last check ran.
    pub last_check: Option<Timestamp>,
    /// When a check last succeeded.
    pub last_success: Option<Timestamp>,
    /// The last failed check.
    pub last_failure: Option<CheckFailureRecord>,
    /// The digest the tag pointed to at the last successful check.
    pub available_digest: Option<String>,
    /// When a reinstall last started.
    pub last_reinstall_at: Option<Timestamp>,
    /// The pinned image in force before the current rollout, to return to if
    /// it fails (`None`: the spec's own reference).
    pub previous_rollout_image: Option<String>,
}

/// Image update status, as [`crate::ServerStatus`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateStatus {
    /// The freshness state.
    pub state: Freshness,
    /// The digest the configured tag pointed to at the last successful check.
    pub available_digest: Option<String>,
    /// The digest being rolled out, if any.
    pub target_digest: Option<String>,
    /// When the last check ran.
    pub last_check: Option<Timestamp>,
    /// When a check last succeeded.
    pub last_success: Option<Timestamp>,
    /// The last failed check.
    pub last_failure: Option<CheckFailureRecord>,
    /// When a reinstall last started.
    pub last_reinstall_at: Option<Timestamp>,
    /// When the next check is due.
    pub next_check_at: Option<Timestamp>,
}

impl From<&FreshnessRecord> for UpdateStatus {
    fn from(r: &FreshnessRecord) -> Self {
        UpdateStatus {
            state: r.state.clone(),
            available_digest: r.available_digest.clone(),
            target_digest: match &r.state {
                Freshness::Reinstalling { target, .. } => Some(target.clone()),
                _ => None,
            },
            last_check: r.last_check,
            last_success: r.last_success,
            last_failure: r.last_failure.clone(),
            last_reinstall_at: r.last_reinstall_at,
            next_check_at: r.next_check_at,
        }
    }
}

/// Cuts a registry error message to a bounded length and removes what looks
/// like a credential: URL user-info, `Bearer`/`Basic` tokens, and values of
/// `token=`, `password=`, `access_token=`, `secret=` parameters.
pub fn scrub_message(message: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut redact_next = false;
    for word in message.split(' ') {
        if redact_next {
            words.push("[redacted]".into());
            redact_next = false;
            continue;
        }
        let lower = word.to_ascii_lowercase();
        if lower == "bearer" || lower == "basic" {
            redact_next = true;
            words.push(word.to_owned());
            continue;
        }
        words.push(scrub_word(word));
    }
    let scrubbed = words.join(" ");
    match scrubbed.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &scrubbed[..i]),
        None => scrubbed,
    }
}

fn scrub_word(word: &str) -> String {
    let mut out = word.to_owned();
    // URL user-info: scheme://user:pass@host
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            out = format!("{}[redacted]@{}", &out[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    for key in ["token=", "password=", "access_token=", "secret=", "passwd="] {
        let lower = out.to_ascii_lowercase();
        if let Some(pos) = lower.find(key) {
            let start = pos + key.len();
            let end = out[start..]
                .find(['&', ',', ';', '"', '\''])
                .map_or(out.len(), |e| start + e);
            out = format!("{}[redacted]{}", &out[..start], &out[end..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_credentials_and_truncates() {
        let m = scrub_message(
            "GET https://alice:s3cret@registry.local/v2/ failed: Authorization: Bearer abc.def.ghi; retry with token=xyz&scope=pull password=hunter2",
        );
        for secret in ["s3cret", "abc.def.ghi", "xyz", "hunter2", "alice"] {
            assert!(!m.contains(secret), "{secret} leaked: {m}");
        }
        assert!(m.contains("registry.local/v2/"));
        let long = scrub_message(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_MESSAGE + 1);
    }
}
