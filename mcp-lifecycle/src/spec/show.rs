//! How values from a spec appear in error messages: quoted, and cut to a
//! short prefix when long, so that a megabyte value gives a short message.
//!
//! This module owns that one rule, for validation and loading errors alike.

use std::fmt::Write as _;

/// How many characters of a value a message shows.
pub(crate) const SHOWN_CHARS: usize = 64;

/// The longest load-error message kept whole, in bytes; longer ones are cut.
const MAX_MESSAGE_BYTES: usize = 1024;

/// `value` quoted as Rust debug-quotes it; a value of more than
/// [`SHOWN_CHARS`] characters shows only its first ones (cut on a character
/// boundary) and its size: `"aaaa…" (1048576 bytes)`.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => {
            let prefix = format!("{}…", &value[..cut]);
            format!("{prefix:?} ({} bytes)", value.len())
        }
    }
}

/// `key` as a segment of a field path (`labels.<key>`): whole when short,
/// else its first [`SHOWN_CHARS`] characters and `…`.
pub(crate) fn path_key(key: &str) -> String {
    match key.char_indices().nth(SHOWN_CHARS) {
        None => key.to_owned(),
        Some((cut, _)) => format!("{}…", &key[..cut]),
    }
}

/// A message from a parser, with every `"quoted"` or `` `quoted` `` span of
/// more than [`SHOWN_CHARS`] characters cut to its first ones and followed by
/// its size as quoted, and the whole cut at [`MAX_MESSAGE_BYTES`] as a last
/// resort.
pub(crate) fn shorten_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let delimiter = &rest[open..=open];
        out.push_str(&rest[..=open]);
        let body = &rest[open + 1..];
        let Some(close) = closing(body, delimiter) else {
            rest = body;
            break;
        };
        out.push_str(&shorten_span(&body[..close]));
        out.push_str(delimiter);
        if body[..close].char_indices().nth(SHOWN_CHARS).is_some() {
            let _ = write!(out, " ({close} bytes)");
        }
        rest = &body[close + 1..];
    }
    out.push_str(rest);
    if out.len() <= MAX_MESSAGE_BYTES {
        return out;
    }
    let mut cut = MAX_MESSAGE_BYTES;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &out[..cut], out.len())
}

/// Where the span opened by `delimiter` ends in `body`: the next `"` not
/// escaped by a backslash, or the next `` ` ``.
fn closing(body: &str, delimiter: &str) -> Option<usize> {
    if delimiter == "`" {
        return body.find('`');
    }
    let mut escaped = false;
    for (i, ch) in body.char_indices() {
        match ch {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// A quoted span cut to [`SHOWN_CHARS`] characters and `…`, backing off to
/// the start of an escape sequence (`\"`, `\u{feff}`) the cut would split.
fn shorten_span(span: &str) -> String {
    // The byte index of a `\` whose escape has not ended yet.
    let mut escape: Option<usize> = None;
    let mut unicode = false;
    for (count, (i, ch)) in span.char_indices().enumerate() {
        if count == SHOWN_CHARS {
            let cut = escape.unwrap_or(i);
            return format!("{}…", &span[..cut]);
        }
        match escape {
            None if ch == '\\' => escape = Some(i),
            None => {}
            Some(_) if unicode && ch == '}' => {
                escape = None;
                unicode = false;
            }
            Some(_) if unicode => {}
            Some(start) if i == start + 1 && ch == 'u' => unicode = true,
            Some(_) => escape = None,
        }
    }
    span.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(
            quote(&"x".repeat(SHOWN_CHARS)),
            format!("{:?}", "x".repeat(64))
        );
        assert_eq!(path_key("team"), "team");
    }

    #[test]
    fn long_values_show_a_prefix_and_their_size() {
        let long = "é".repeat(1000);
        let shown = quote(&long);
        assert_eq!(
            shown,
            format!("\"{}…\" (2000 bytes)", "é".repeat(SHOWN_CHARS))
        );
        assert_eq!(path_key(&long), format!("{}…", "é".repeat(SHOWN_CHARS)));
    }

    #[test]
    fn long_spans_in_messages_are_cut() {
        let long = "a".repeat(500);
        let message =
            format!("x: invalid type: string \"{long}\", expected u32 at line 1 column 4");
        assert_eq!(
            shorten_message(&message),
            format!(
                "x: invalid type: string \"{}…\" (500 bytes), expected u32 at line 1 column 4",
                "a".repeat(SHOWN_CHARS)
            )
        );
        let message = format!("unknown field `{long}`, expected `a` or `b`");
        assert_eq!(
            shorten_message(&message),
            format!(
                "unknown field `{}…` (500 bytes), expected `a` or `b`",
                "a".repeat(SHOWN_CHARS)
            )
        );
        // Escaped quotes do not end a span; short spans are kept.
        let message = r#"string "a \"b\" c", expected `x`"#;
        assert_eq!(shorten_message(message), message);
        // An unterminated span is kept, within the overall cap.
        let message = format!("oops \"{long}{long}{long}");
        let shown = shorten_message(&message);
        assert!(shown.len() < MAX_MESSAGE_BYTES + 32, "{}", shown.len());
        assert!(
            shown.ends_with(&format!("… ({} bytes)", message.len())),
            "{shown}"
        );
    }

    #[test]
    fn a_cut_does_not_split_an_escape() {
        // 60 plain characters, then escapes: the cut at 64 falls inside one.
        let span = format!("{}\\u{{feff}}\\u{{feff}}", "a".repeat(60));
        assert_eq!(shorten_span(&span), format!("{}…", "a".repeat(60)));
        let span = format!("{}\\\"bcdefgh", "a".repeat(63));
        assert_eq!(shorten_span(&span), format!("{}…", "a".repeat(63)));
        // An escaped backslash is a whole escape: the cut after it stands.
        let span = format!("{}\\\\bcdefgh", "a".repeat(62));
        assert_eq!(shorten_span(&span), format!("{}\\\\…", "a".repeat(62)));
    }
}
