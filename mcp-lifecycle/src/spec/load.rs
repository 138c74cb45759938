//! Text to typed values: YAML and JSON parsing for specs (and the other
//! YAML-configured types), with errors that start with the path of the field
//! they are about (`env[0].value: invalid type: …`).
//!
//! This module owns what happens before a value exists: a leading byte-order
//! mark is dropped, the path is tracked with `serde_path_to_error`, and the
//! message is made short. It knows the spec's shape in one place only: which
//! fields hold free-form JSON ([`FREE_FORM_FIELDS`]).

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment, Track};

use super::show;

/// Fields whose value is free-form JSON: an error inside one is reported at the
/// field, since the keys inside are the user's own, not the spec's.
const FREE_FORM_FIELDS: [&str; 2] = [
    "health.readiness.arguments",
    "health.liveness.tool.arguments",
];

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// Parses YAML where enums are written as one-key maps (`source: {image: …}`),
/// the same shape serde gives them in JSON, rather than as YAML `!tags`.
pub(crate) fn from_yaml_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
    let mut track = Track::new();
    let result = serde_norway::with::singleton_map_recursive::deserialize(
        serde_path_to_error::Deserializer::new(
            serde_norway::Deserializer::from_str(text),
            &mut track,
        ),
    );
    result.map_err(|e| describe(&track.path(), &e.to_string()))
}

/// Parses JSON, with the same paths in errors as [`from_yaml_str`].
pub(crate) fn from_json_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| describe(e.path(), &e.inner().to_string()))?;
    // Only whitespace may follow the value.
    de.end()
        .map_err(|e| show::shorten_message(&e.to_string()))?;
    Ok(value)
}

/// `path: message`, with the path cut at a free-form field, the parser's own
/// copy of the path taken off the message, and long quoted values shortened.
/// An unknown key is reported at the map that holds it.
fn describe(path: &Path, message: &str) -> String {
    let mut segments: Vec<&Segment> = path.iter().collect();
    let full = render(&segments, |key| key.to_owned(), false);
    // serde_norway starts its messages with its own rendering of the path (the
    // same or an ancestor of ours); keep one.
    let message = ancestors(&full)
        .find_map(|p| message.strip_prefix(p).and_then(|m| m.strip_prefix(": ")))
        .unwrap_or(message);
    // The path of a key that was rejected ends in the key itself (or `?` for
    // one that is not a string), which is not a field: name the map instead.
    let rejected_key = match segments.last() {
        Some(Segment::Map { key }) => {
            ["unknown field `", "unknown variant `"]
                .iter()
                .any(|start| {
                    message
                        .strip_prefix(start)
                        .is_some_and(|rest| rest.starts_with(&format!("{key}`")))
                })
        }
        Some(Segment::Unknown) => true,
        _ => false,
    };
    if rejected_key {
        segments.pop();
    }
    let shown = render(&segments, show::path_key, true);
    let message = show::shorten_message(message);
    if shown.is_empty() {
        message
    } else {
        format!("{shown}: {message}")
    }
}

/// The path as written in messages (`env[0].value`), each key written by
/// `key`; with `cut`, it ends at a free-form field.
fn render(segments: &[&Segment], key: impl Fn(&str) -> String, cut: bool) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key(name));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
        if cut && FREE_FORM_FIELDS.contains(&out.as_str()) {
            break;
        }
    }
    out
}

/// `path` and each of its ancestors (`a.b[0]`, `a.b`, `a`), longest first.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let ends = path
        .char_indices()
        .filter(|(_, c)| matches!(c, '.' | '['))
        .map(|(i, _)| i)
        .chain(std::iter::once(path.len()))
        .filter(|&i| i > 0)
        .collect::<Vec<_>>();
    ends.into_iter().rev().map(move |end| &path[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_listed_longest_first() {
        assert_eq!(
            ancestors("env[0].secret.name").collect::<Vec<_>>(),
            ["env[0].secret.name", "env[0].secret", "env[0]", "env"]
        );
        assert_eq!(ancestors("").count(), 0);
    }
}
