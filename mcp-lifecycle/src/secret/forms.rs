//! The forms a secret value takes in log text.
//!
//! A value rarely reaches a log line as itself: a client library logs the JSON
//! request body it sends (JSON string escaping), the `Debug` of that body's
//! bytes (byte-string escaping on top of the JSON), the Docker engine answers
//! in Go's JSON (which may escape `<`, `>` and `&`), `tracing` fields use Rust
//! `Debug` escaping, and `tracing-subscriber` escapes terminal control
//! characters — or re-escapes everything as JSON with its JSON formatter.
//! [`forms`] lists every string a value becomes under up to [`DEPTH`] of these
//! escapings applied on top of each other. For a value made only of printable
//! ASCII other than `"`, `\`, `'`, `<`, `>` and `&` (most tokens), that is the
//! value alone.
//!
//! This file owns only the escapings; which values are live and how text is
//! searched live in `registry.rs`.

use std::fmt::Write as _;

use zeroize::Zeroizing;

/// How many escapings are applied on top of each other: a JSON request body
/// (1), logged as `Debug` bytes (2), by a subscriber that writes JSON (3).
pub(super) const DEPTH: usize = 3;

/// An upper bound on the forms of one value, whatever its characters.
const MAX_FORMS: usize = 512;

/// One escaping: the text a string becomes between the quotes of a quoted
/// form, or `None` when it does not change the string.
type Escape = fn(&str) -> Option<String>;

/// Every escaping a value may pass through on its way into a log line.
const ESCAPES: [Escape; 7] = [
    json,
    go_json_html,
    go_json_legacy,
    debug_str,
    debug_bytes,
    escape_ascii,
    ansi_sanitized,
];

/// The value and every string it becomes under up to [`DEPTH`] escapings,
/// without duplicates. Empty for an empty value.
pub(super) fn forms(value: &str) -> Vec<Zeroizing<String>> {
    if value.is_empty() {
        return Vec::new();
    }
    // A few dozen forms at most for real values: a list is enough.
    let mut seen: Vec<Zeroizing<String>> = vec![Zeroizing::new(value.to_owned())];
    let mut frontier = 0..1;
    for _ in 0..DEPTH {
        let start = seen.len();
        for at in frontier {
            for escape in ESCAPES {
                let Some(escaped) = escape(&seen[at]).map(Zeroizing::new) else {
                    continue;
                };
                if seen.len() < MAX_FORMS && !seen.contains(&escaped) {
                    seen.push(escaped);
                }
            }
        }
        frontier = start..seen.len();
    }
    seen
}

/// `Some(escaped)` when escaping changed the string.
fn changed(original: &str, escaped: String) -> Option<String> {
    (escaped != original).then_some(escaped)
}

/// JSON as `serde_json` writes it (and Go since 1.22 without HTML escaping):
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other controls as `\u00xx`.
fn json(s: &str) -> Option<String> {
    if !s.chars().any(|c| c == '"' || c == '\\' || c < ' ') {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Go's `encoding/json` with its default HTML escaping: as [`json`], and
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u00xx` / `\u20xx`.
fn go_json_html(s: &str) -> Option<String> {
    go_json(s, false)
}

/// Go's `encoding/json` before 1.22: `\b` and `\f` as `\u0008` and `\u000c`.
fn go_json_legacy(s: &str) -> Option<String> {
    go_json(s, true)
}

fn go_json(s: &str, legacy: bool) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' if !legacy => out.push_str("\\b"),
            '\u{c}' if !legacy => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    changed(s, out)
}

/// Rust `Debug` of a `str` (`{:?}`), between its quotes.
fn debug_str(s: &str) -> Option<String> {
    let quoted = format!("{s:?}");
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted);
    changed(s, inner.to_owned())
}

/// `Debug` of `bytes::Bytes` (what HTTP clients log request bodies as):
/// `\n`, `\r`, `\t`, `\\`, `\"`, `\0`, printable ASCII as itself, every
/// other byte as `\xNN`.
fn debug_bytes(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\0' => out.push_str("\\0"),
            0x20..0x7f => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    changed(s, out)
}

/// `<[u8]>::escape_ascii` (byte-string `Debug` in std), which also escapes `'`.
fn escape_ascii(s: &str) -> Option<String> {
    changed(s, s.as_bytes().escape_ascii().to_string())
}

/// `tracing-subscriber`'s fmt escaping of terminal control characters in
/// field values: ESC, BEL, BS, FF and DEL as `\xNN`, C1 controls as `\u{NN}`.
fn ansi_sanitized(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\u{1b}' | '\u{7}' | '\u{8}' | '\u{c}' | '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if ('\u{80}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    changed(s, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(value: &str) -> Vec<String> {
        let mut forms: Vec<String> = forms(value).iter().map(|f| f.to_string()).collect();
        forms.sort();
        forms
    }

    #[test]
    fn a_plain_token_has_one_form() {
        assert_eq!(all("ghp_A1b2C3d4-E5.f6"), vec!["ghp_A1b2C3d4-E5.f6"]);
        assert!(forms("").is_empty());
    }

    /// Between the quotes of a quoted form.
    fn unquote(quoted: &str) -> String {
        quoted[1..quoted.len() - 1].to_owned()
    }

    fn serde(s: &str) -> String {
        unquote(&serde_json::to_string(s).unwrap())
    }

    fn debug(s: &str) -> String {
        unquote(&format!("{s:?}"))
    }

    fn ascii(s: &str) -> String {
        s.as_bytes().escape_ascii().to_string()
    }

    #[test]
    fn forms_match_what_the_real_escapers_write() {
        let value = "a\"b\\c'd<e>&f\ng\th\u{1b}i\u{7f}é\u{2028}";
        let forms = all(value);
        for expected in [
            value.to_owned(),
            serde(value),
            debug(value),
            ascii(value),
            // A JSON body logged as Debug bytes, then by a JSON formatter.
            ascii(&serde(value)),
            serde(&ascii(&serde(value))),
            serde(&debug(value)),
            debug(&serde(value)),
        ] {
            assert!(forms.contains(&expected), "missing {expected:?}");
        }
        assert!(forms.iter().any(|f| f.contains("\\u003c")), "Go HTML form");
        assert!(forms.iter().any(|f| f.contains("\\x1b")), "sanitized form");
    }

    #[test]
    fn bytes_debug_form_matches_the_bytes_crate_rules() {
        assert_eq!(
            debug_bytes("q\"b\\n\n\0é").as_deref(),
            Some("q\\\"b\\\\n\\n\\0\\xc3\\xa9")
        );
        assert_eq!(debug_bytes("plain"), None);
    }

    #[test]
    fn forms_are_bounded() {
        let nasty: String = "\"\\<>&\n\u{1b}é'".repeat(50);
        let forms = forms(&nasty);
        assert!(forms.len() <= MAX_FORMS);
        assert!(forms.iter().any(|f| **f == nasty));
    }
}
