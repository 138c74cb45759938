//! The process-wide registry of live secret values, and redaction of text
//! against it.
//!
//! Every non-empty [`SecretValue`](super::SecretValue) registers its value
//! when it is created; clones share one registration (an `Arc`), which is
//! withdrawn when the last clone drops, so rotated values do not accumulate.
//! Equal values created separately are counted, not repeated.
//! [`redact`] and [`redact_bytes`] replace every live value — in each of the
//! forms `forms.rs` lists — with [`REDACTED`].
//!
//! The matcher (one Aho-Corasick automaton over every form of every live
//! value) is rebuilt lazily, on the first redaction after the set of values
//! changed; a generation counter says when. With no live value, redaction is
//! one atomic load.
//!
//! This file owns the registry and the search; the escapings are in
//! `forms.rs`, the log writers in `writer.rs`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use zeroize::{Zeroize, Zeroizing};

use super::{REDACTED, forms};

/// Secret values shorter than this many bytes are short enough to occur by
/// chance in ordinary log text.
///
/// They are redacted all the same — a secret must not leak because it is
/// short — so every occurrence of such a value is replaced, also where it is
/// part of unrelated text, which can make logs hard to read. The first
/// registration of such a value logs one warning per process (without the
/// value). Empty values are not registered: they cannot leak.
pub const SHORT_SECRET_LEN: usize = 8;

/// What a whole piece of text is replaced with when the matcher cannot be
/// built: without a matcher nothing can be shown safely.
pub(super) const WITHHELD: &str =
    "[log text withheld: the secret redaction matcher could not be built]\n";

/// The distinct live values, each with how many registrations hold it.
/// Keys are zeroized when removed.
static VALUES: Mutex<BTreeMap<Box<str>, usize>> = Mutex::new(BTreeMap::new());
/// How many distinct values are live: the fast path when there are none.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Bumped whenever the set of distinct values changes.
static GENERATION: AtomicU64 = AtomicU64::new(1);
static WARNED_SHORT: AtomicBool = AtomicBool::new(false);
/// The matcher for one generation of [`VALUES`].
static COMPILED: RwLock<Option<Arc<Compiled>>> = RwLock::new(None);

/// Registers one holder of `value`; `false` (nothing registered) for an
/// empty value. A value equal to a live one only counts one more holder, so
/// the matcher is not rebuilt.
pub(super) fn register(value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    {
        let mut values = VALUES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = values.get_mut(value) {
            *count += 1;
            return true;
        }
        values.insert(Box::from(value), 1);
        LIVE.store(values.len(), Ordering::SeqCst);
        GENERATION.fetch_add(1, Ordering::SeqCst);
    }
    // Logged after the lock is released: the log writer reads the registry.
    if value.len() < SHORT_SECRET_LEN && !WARNED_SHORT.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "a secret value shorter than {SHORT_SECRET_LEN} bytes is live: redacted logs \
             replace every occurrence of it, also inside unrelated text"
        );
    }
    true
}

/// Withdraws one holder of `value`, registered by [`register`]; the value
/// stops being redacted when its last holder is withdrawn.
pub(super) fn deregister(value: &str) {
    let removed = {
        let mut values = VALUES.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(count) = values.get_mut(value) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let removed = values.remove_entry(value).map(|(key, _)| String::from(key));
        LIVE.store(values.len(), Ordering::SeqCst);
        GENERATION.fetch_add(1, Ordering::SeqCst);
        removed
    };
    // Zeroized outside the lock.
    if let Some(mut key) = removed {
        key.zeroize();
    }
}

/// Whether any secret value is live in this process.
pub(super) fn any_live() -> bool {
    LIVE.load(Ordering::SeqCst) > 0
}

/// The matcher over every form of every value live at `generation`.
struct Compiled {
    generation: u64,
    /// `None` when the automaton could not be built.
    matcher: Option<AhoCorasick>,
}

/// The matcher for the current values, rebuilding it if they changed.
fn current() -> Arc<Compiled> {
    // Read before the values: a registration racing with the rebuild makes
    // the next call rebuild again, never skips a value.
    let generation = GENERATION.load(Ordering::SeqCst);
    {
        let cached = COMPILED.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(compiled) = cached.as_ref().filter(|c| c.generation == generation) {
            return compiled.clone();
        }
    }
    let patterns: Vec<Zeroizing<String>> = {
        let values = VALUES.lock().unwrap_or_else(PoisonError::into_inner);
        let mut patterns = Vec::new();
        for value in values.keys() {
            patterns.extend(forms::forms(value));
        }
        patterns
    };
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns.iter().map(|p| p.as_bytes()))
        .ok();
    let compiled = Arc::new(Compiled {
        generation,
        matcher,
    });
    let mut cached = COMPILED.write().unwrap_or_else(PoisonError::into_inner);
    // Another thread may have built a newer one meanwhile; keep the newest.
    if cached.as_ref().is_none_or(|c| c.generation < generation) {
        *cached = Some(compiled.clone());
    }
    compiled
}

/// `text` with every live secret value, in any of its escaped forms,
/// replaced by [`REDACTED`]. Borrows `text` when nothing was found.
///
/// Only values live in this process are known: a [`SecretValue`](super::SecretValue)
/// some part of the process still holds. If the matcher over them cannot be
/// built, the whole text is replaced by a notice that it was withheld.
pub fn redact(text: &str) -> Cow<'_, str> {
    match redact_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Whole UTF-8 patterns were replaced by UTF-8 text: still UTF-8.
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// [`redact`] for bytes (log output need not be UTF-8).
pub fn redact_bytes(text: &[u8]) -> Cow<'_, [u8]> {
    if !any_live() || text.is_empty() {
        return Cow::Borrowed(text);
    }
    let compiled = current();
    let Some(matcher) = &compiled.matcher else {
        return Cow::Owned(WITHHELD.as_bytes().to_vec());
    };
    if !matcher.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    let replaced = matcher.try_replace_all_with_bytes(text, &mut out, |_, _, dst| {
        dst.extend_from_slice(REDACTED.as_bytes());
        true
    });
    match replaced {
        Ok(()) => Cow::Owned(out),
        Err(_) => Cow::Owned(WITHHELD.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretValue;

    #[test]
    fn live_values_are_redacted_until_the_last_clone_drops() {
        let value = SecretValue::new("registry-test-3c1f-live");
        let text = "before registry-test-3c1f-live after";
        assert_eq!(redact(text), format!("before {REDACTED} after"));
        let clone = value.clone();
        drop(value);
        assert_eq!(redact(text), format!("before {REDACTED} after"));
        drop(clone);
        assert_eq!(redact(text), text, "a dropped value stays registered");
    }

    #[test]
    fn equal_values_are_counted_separately() {
        let a = SecretValue::new("registry-test-77d0-twice");
        let b = SecretValue::new("registry-test-77d0-twice");
        let text = "x registry-test-77d0-twice";
        drop(a);
        assert_eq!(redact(text), format!("x {REDACTED}"));
        drop(b);
        assert_eq!(redact(text), text);
    }

    #[test]
    fn escaped_forms_are_redacted() {
        let raw = "registry-test-\"q\\b\n-9e41";
        let _value = SecretValue::new(raw);
        let json = serde_json::json!({ "Env": [format!("TOKEN={raw}")] }).to_string();
        // A JSON body logged as byte-string Debug, and as itself.
        let logged = format!("body b\"{}\" json {json}", json.as_bytes().escape_ascii());
        let redacted = redact(&logged);
        assert!(!redacted.contains("9e41"), "{redacted}");
        assert!(redacted.contains(REDACTED));
        assert!(redacted.contains("TOKEN="), "{redacted}");
    }

    #[test]
    fn short_values_are_redacted_and_empty_ones_are_not_registered() {
        let _short = SecretValue::new("q7Z");
        assert_eq!(redact("a q7Z b"), format!("a {REDACTED} b"));
        let empty = SecretValue::new("");
        assert_eq!(empty.expose(), "");
        assert_eq!(redact("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn the_longest_overlapping_value_wins() {
        let _short = SecretValue::new("registry-test-overlap");
        let _long = SecretValue::new("registry-test-overlap-longer");
        assert_eq!(
            redact("registry-test-overlap-longer!"),
            format!("{REDACTED}!")
        );
    }

    #[test]
    fn text_without_values_is_borrowed() {
        let _value = SecretValue::new("registry-test-borrow-5a");
        assert!(matches!(redact("clean text"), Cow::Borrowed(_)));
        assert!(matches!(redact_bytes(b"\xff\xfe"), Cow::Borrowed(_)));
    }
}
