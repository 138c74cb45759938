//! How results are printed: aligned tables without borders (kubectl's
//! look) by default, JSON or YAML with `-o`, and the small text helpers the
//! tables share (times as "in 3s"/"5s ago", absent values as `<none>`).
//! Owns formatting only; the commands decide what goes in.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use comfy_table::{ContentArrangement, Table, presets};
use mcp_lifecycle::Timestamp;
use serde::Serialize;

use crate::cli::OutputFormat;

/// What an absent value prints as.
pub(crate) const NONE: &str = "<none>";

/// A table with a header and kubectl's look: no borders, columns three
/// spaces apart, never wrapped.
pub(crate) fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    table
}

/// A table without a header (key/value lists), with the same look.
pub(crate) fn plain_table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
}

/// The table as text: columns three spaces apart, no trailing blanks.
pub(crate) fn render(mut table: Table) -> String {
    let last = table.column_count().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
    }
    let mut out = String::new();
    // The preset draws its (invisible) header rule as a blank line.
    for line in table.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `value` as JSON or YAML text.
pub(crate) fn structured<T: Serialize>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .context("writing JSON"),
        OutputFormat::Yaml => serde_norway::to_string(value).context("writing YAML"),
    }
}

/// `value` on one line of JSON, or as one `---` YAML document: for streams.
pub(crate) fn streamed<T: Serialize>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => serde_json::to_string(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .context("writing JSON"),
        OutputFormat::Yaml => serde_norway::to_string(value)
            .map(|s| format!("---\n{s}"))
            .context("writing YAML"),
    }
}

/// Writes `text` to stdout and flushes it (a closed pipe is an error the
/// caller may treat as the end, as `mcpctl events -f | head` wants).
pub(crate) fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// An optional text, or `<none>`.
pub(crate) fn or_none(value: Option<&str>) -> String {
    value.map_or_else(|| NONE.to_owned(), str::to_owned)
}

/// A duration the way kubectl shows ages: `45s`, `3m12s`, `2h5m`, `3d4h`.
pub(crate) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A time relative to `now`: `in 3s`, `5s ago`, `now`.
pub(crate) fn relative(at: Timestamp, now: Timestamp) -> String {
    if at > now {
        format!("in {}", short_duration(at - now))
    } else {
        let ago = now - at;
        if ago < Duration::from_secs(1) {
            "now".to_owned()
        } else {
            format!("{} ago", short_duration(ago))
        }
    }
}

/// An optional time relative to `now`, or `<none>`.
pub(crate) fn relative_or_none(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(|| NONE.to_owned(), |at| relative(at, now))
}

/// A digest cut to its algorithm and first 12 hex digits, as tables show it.
pub(crate) fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 => format!("{algorithm}:{}", &hex[..12]),
        _ => digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_borders() {
        let mut t = table(["NAME", "PHASE"]);
        t.add_row(["a-long-name", "running"]);
        t.add_row(["b", "stopped"]);
        let text = render(t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column = lines[0].find("PHASE").unwrap();
        assert_eq!(lines[1].find("running"), Some(column), "{text}");
        assert_eq!(lines[2].find("stopped"), Some(column), "{text}");
        assert!(lines[0].starts_with("NAME"), "{text}");
    }

    #[test]
    fn times_read_relative_to_now() {
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(relative(now + Duration::from_secs(3), now), "in 3s");
        assert_eq!(
            relative(Timestamp::from_millis(1_000_000 - 125_000), now),
            "2m5s ago"
        );
        assert_eq!(relative(now, now), "now");
    }

    #[test]
    fn digests_are_cut_for_tables() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("x"), "x");
    }
}
