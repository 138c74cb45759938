//! Rules that reject a bad [`ServerSpec`], and the error that names the field.
//!
//! Validation collects every problem, not only the first, so a host can show
//! them all at once. Each problem names its field by path (`env[2].name`).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::de::MAX_ARGUMENTS_DEPTH;
use super::server::{EnvSource, LivenessCheck, ReadinessCall, ServerSpec, Source, Transport};
use super::show::{path_key, quote};

/// The longest path the kernel takes for a program or working directory, its
/// terminating NUL included (Linux's `PATH_MAX`; longer is `ENAMETOOLONG`).
const PATH_MAX: usize = 4096;

/// The longest tool name, in characters. MCP says tool names should be 1 to
/// 128 characters (specification 2025-11-25, "Tool names").
const MAX_TOOL_NAME_CHARS: usize = 128;

/// The longest HTTP or SSE endpoint path, in bytes. HTTP/1.1 asks servers to
/// take request lines of at least 8000 octets (RFC 9112, section 3); 4096
/// leaves room for the method, version and query.
const MAX_HTTP_PATH_BYTES: usize = 4096;

/// Bounds that depend on the host rather than on one spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest replica count a spec may ask for. Default: 10.
    pub max_replicas: u32,
    /// The longest duration any interval, timeout or grace period may have. Default: 1 hour.
    pub max_duration: Duration,
    /// The longest single string handed to `execve`, in bytes with its
    /// terminating NUL: each of the program and its arguments, and each
    /// environment variable as `NAME=value`. Default: 131072, Linux's
    /// `MAX_ARG_STRLEN`, which the kernel enforces for local processes and
    /// inside containers alike.
    pub max_arg_bytes: usize,
    /// The most the program, its arguments and the spec's environment may add
    /// up to, counted as [`Limits::max_arg_bytes`] counts each string. A
    /// secret variable counts only `NAME=` and its NUL, as its value is not
    /// known before start. Default: 1 MiB, half of Linux's usual `ARG_MAX`
    /// (2 MiB: a quarter of the default 8 MiB stack limit), which leaves the
    /// other half for what a backend or image adds (an inherited environment,
    /// an entrypoint, `PORT`) and for the pointer arrays the kernel counts too.
    pub max_command_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_replicas: 10,
            max_duration: Duration::from_secs(3600),
            max_arg_bytes: 128 * 1024,
            max_command_bytes: 1024 * 1024,
        }
    }
}

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `name`, `env[1].name`, `health.timeout`.
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

/// A spec that failed validation: which server, and every rejected field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The server's name as given (may itself be the invalid field).
    pub server: String,
    /// Every problem found, in field order.
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// Whether `field` is among the rejected fields.
    pub fn names_field(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }

    /// A one-field error, for rules checked outside [`ServerSpec::validate`].
    pub fn single(server: &str, field: &str, reason: impl Into<String>) -> Self {
        ValidationError {
            server: server.to_owned(),
            errors: vec![FieldError {
                field: field.to_owned(),
                reason: reason.into(),
            }],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server spec {} is invalid: ", quote(&self.server))?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.reason)?;
        }
        Ok(())
    }
}

struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    fn reject(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }
}

/// The running size of what `execve` gets (program, arguments, environment),
/// against [`Limits::max_command_bytes`]. Only the first string that takes it
/// over is rejected; strings rejected on their own do not count.
struct CommandSize {
    total: usize,
    max: usize,
    over: bool,
}

impl CommandSize {
    /// Adds a string of `bytes` (NUL included) at `field`, rejecting it if it
    /// is the first to take the total over.
    fn add(&mut self, c: &mut Collector, field: String, bytes: usize) {
        self.total = self.total.saturating_add(bytes);
        if !self.over && self.total > self.max {
            self.over = true;
            c.reject(
                field,
                format!(
                    "brings the program, arguments and environment to {} bytes; at most {} allowed in all",
                    self.total, self.max
                ),
            );
        }
    }
}

impl ServerSpec {
    /// Checks the spec against its rules and the host's `limits`. Returns every
    /// problem found.
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        let mut c = Collector { errors: Vec::new() };
        let mut size = CommandSize {
            total: 0,
            max: limits.max_command_bytes,
            over: false,
        };
        if let Err(reason) = check_rfc1123_label(&self.name) {
            c.reject("name", reason);
        }
        match &self.source {
            Source::Image(image) => {
                if let Err(reason) = check_image_reference(image) {
                    c.reject("source.image", reason);
                }
            }
            Source::Command(cmd) => {
                let program_bytes = cmd.program.len() + 1;
                if cmd.program.trim().is_empty() {
                    c.reject("source.command.program", "must not be empty");
                } else if program_bytes > PATH_MAX.min(limits.max_arg_bytes) {
                    c.reject(
                        "source.command.program",
                        too_long(program_bytes, PATH_MAX.min(limits.max_arg_bytes)),
                    );
                } else {
                    size.add(&mut c, "source.command.program".into(), program_bytes);
                }
                for (i, arg) in cmd.args.iter().enumerate() {
                    let field = format!("source.command.args[{i}]");
                    let bytes = arg.len() + 1;
                    if bytes > limits.max_arg_bytes {
                        c.reject(field, too_long(bytes, limits.max_arg_bytes));
                    } else {
                        size.add(&mut c, field, bytes);
                    }
                }
                if let Some(dir) = &cmd.working_dir
                    && dir.len() + 1 > PATH_MAX
                {
                    c.reject(
                        "source.command.working_dir",
                        too_long(dir.len() + 1, PATH_MAX),
                    );
                }
                if cmd.program.contains('\0')
                    || cmd.args.iter().any(|a| a.contains('\0'))
                    || cmd.working_dir.as_ref().is_some_and(|d| d.contains('\0'))
                {
                    c.reject(
                        "source.command",
                        "program, arguments and working directory must not contain NUL",
                    );
                }
            }
            Source::Existing(workload) => {
                if let Err(reason) = check_rfc1123_subdomain(workload) {
                    c.reject("source.existing", reason);
                }
                if !self.env.is_empty() {
                    c.reject(
                        "env",
                        "an existing workload keeps its own environment; env must be empty",
                    );
                }
            }
        }
        match &self.transport {
            Transport::Stdio => {}
            Transport::Http { port, path } | Transport::Sse { port, path } => {
                let kind = if matches!(self.transport, Transport::Http { .. }) {
                    "http"
                } else {
                    "sse"
                };
                if *port == 0 {
                    c.reject(
                        format!("transport.{kind}.port"),
                        "must be between 1 and 65535",
                    );
                }
                if path.len() > MAX_HTTP_PATH_BYTES {
                    c.reject(
                        format!("transport.{kind}.path"),
                        format!(
                            "is {} bytes; at most {MAX_HTTP_PATH_BYTES} allowed",
                            path.len()
                        ),
                    );
                } else if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
                    c.reject(
                        format!("transport.{kind}.path"),
                        "must start with '/' and contain no whitespace",
                    );
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, entry) in self.env.iter().enumerate() {
            // `NAME=` and the NUL.
            let name_bytes = entry.name.len() + 2;
            let mut fits = true;
            if name_bytes > limits.max_arg_bytes {
                fits = false;
                c.reject(
                    format!("env[{i}].name"),
                    too_long(name_bytes, limits.max_arg_bytes),
                );
            } else if let Err(reason) = check_env_key(&entry.name) {
                c.reject(format!("env[{i}].name"), reason);
            } else if !seen.insert(entry.name.as_str()) {
                c.reject(
                    format!("env[{i}].name"),
                    format!("{} is set more than once", quote(&entry.name)),
                );
            }
            let mut bytes = name_bytes;
            match &entry.source {
                EnvSource::Value(v) => {
                    bytes = bytes.saturating_add(v.len());
                    if fits && bytes > limits.max_arg_bytes {
                        fits = false;
                        c.reject(
                            format!("env[{i}].value"),
                            format!(
                                "makes NAME=value {bytes} bytes with its NUL; at most {} allowed",
                                limits.max_arg_bytes
                            ),
                        );
                    } else if v.contains('\0') {
                        c.reject(format!("env[{i}].value"), "must not contain NUL");
                    }
                }
                EnvSource::Secret(r) if r.name.is_empty() || r.key.is_empty() => {
                    c.reject(format!("env[{i}].secret"), "name and key must both be set");
                }
                EnvSource::Secret(_) => {}
            }
            if fits {
                size.add(&mut c, format!("env[{i}]"), bytes);
            }
        }
        if self.replicas > limits.max_replicas {
            c.reject(
                "replicas",
                format!(
                    "{} is outside 0..={} (the host's maximum)",
                    self.replicas, limits.max_replicas
                ),
            );
        }
        if let Some(memory) = &self.resources.memory
            && let Err(reason) = parse_memory_bytes(memory)
        {
            c.reject("resources.memory", reason);
        }
        if let Some(cpu) = &self.resources.cpu
            && let Err(reason) = parse_cpu_millis(cpu)
        {
            c.reject("resources.cpu", reason);
        }
        let h = &self.health;
        check_duration(
            &mut c,
            "health.interval",
            h.interval,
            Duration::from_secs(1),
            limits,
        );
        check_duration(
            &mut c,
            "health.timeout",
            h.timeout,
            Duration::from_millis(100),
            limits,
        );
        check_duration(
            &mut c,
            "health.startup_timeout",
            h.startup_timeout,
            Duration::from_millis(100),
            limits,
        );
        if h.failure_threshold == 0 || h.failure_threshold > 100 {
            c.reject("health.failure_threshold", "must be between 1 and 100");
        }
        if let LivenessCheck::Tool(call) = &h.liveness {
            check_call(&mut c, "health.liveness.tool", call);
        }
        if let Some(call) = &h.readiness {
            check_call(&mut c, "health.readiness", call);
        }
        for (key, value) in &self.labels {
            if let Err(reason) = check_label_key(key) {
                c.reject(format!("labels.{}", path_key(key)), reason);
            } else if let Err(reason) = check_label_value(value) {
                c.reject(format!("labels.{}", path_key(key)), reason);
            }
        }
        check_duration(
            &mut c,
            "stop_grace_period",
            self.stop_grace_period,
            Duration::ZERO,
            limits,
        );
        if c.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                server: self.name.clone(),
                errors: c.errors,
            })
        }
    }
}

fn check_duration(c: &mut Collector, field: &str, d: Duration, min: Duration, limits: &Limits) {
    if min > Duration::ZERO && d < min {
        c.reject(field, format!("{d:?} is below the minimum of {min:?}"));
    } else if d > limits.max_duration {
        c.reject(
            field,
            format!("{d:?} is above the maximum of {:?}", limits.max_duration),
        );
    }
}

/// `bytes` (what a string takes with its NUL) against `max`.
fn too_long(bytes: usize, max: usize) -> String {
    format!("is {bytes} bytes with its NUL; at most {max} allowed")
}

fn check_call(c: &mut Collector, field: &str, call: &ReadinessCall) {
    if call.tool.trim().is_empty() {
        c.reject(format!("{field}.tool"), "must name a tool");
    } else if call.tool.chars().nth(MAX_TOOL_NAME_CHARS).is_some() {
        c.reject(
            format!("{field}.tool"),
            format!(
                "is {} characters; MCP tool names are at most {MAX_TOOL_NAME_CHARS}",
                call.tool.chars().count()
            ),
        );
    }
    if !call.arguments.is_object() {
        c.reject(
            format!("{field}.arguments"),
            "must be a JSON object (tool arguments are named)",
        );
    } else if nests_deeper_than(&call.arguments, MAX_ARGUMENTS_DEPTH) {
        c.reject(
            format!("{field}.arguments"),
            format!(
                "nested more than {MAX_ARGUMENTS_DEPTH} levels deep; tool arguments may nest at most {MAX_ARGUMENTS_DEPTH} levels"
            ),
        );
    }
}

/// Whether `value` has more than `max` levels of objects and arrays (the
/// outermost counts as one). Walks without recursion, so no depth can
/// overflow the stack here.
fn nests_deeper_than(value: &serde_json::Value, max: usize) -> bool {
    use serde_json::Value;
    // Each container with the number of levels it opens.
    let mut stack = vec![(value, 1_usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(_) | Value::Object(_) if level > max => return true,
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    false
}

/// Checks an RFC 1123 DNS label: 1–63 characters of `[a-z0-9-]`, starting and
/// ending with a letter or digit.
pub(crate) fn check_rfc1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-'))
    {
        return Err(format!(
            "{bad:?} is not allowed: use lowercase ASCII letters, digits and '-' (RFC 1123 label)"
        ));
    }
    // All ASCII from here, so bytes are characters.
    if name.len() > 63 {
        return Err(format!("is {} characters; at most 63 allowed", name.len()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit (RFC 1123 label)".into());
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123): dot-separated labels, at most 253 characters,
/// as Kubernetes object names are.
fn check_rfc1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!("is {} bytes; at most 253 allowed", name.len()));
    }
    for label in name.split('.') {
        check_rfc1123_label(label)
            .map_err(|reason| format!("{reason} (in each dot-separated part)"))?;
    }
    Ok(())
}

fn check_image_reference(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("must not be empty".into());
    }
    if image.trim() != image {
        return Err("must not have surrounding whitespace".into());
    }
    let reference = image
        .parse::<oci_spec::distribution::Reference>()
        .map_err(|e| format!("{} is not a valid image reference: {e}", quote(image)))?;
    // The reference grammar lets a first component with uppercase letters
    // match as a registry host; oci-spec then takes one without '.' or ':'
    // as part of a Docker Hub repository path without checking its case, so
    // `UPPER/case:tag` would pass as repository `UPPER/case`. Docker rejects it.
    if reference
        .repository()
        .chars()
        .any(|c| c.is_ascii_uppercase())
    {
        return Err(format!(
            "{} is not a valid image reference: repository name must be lowercase",
            quote(image)
        ));
    }
    Ok(())
}

fn check_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    match chars.next() {
        None => Err("must not be empty".into()),
        Some(first) if !(first.is_ascii_alphabetic() || first == '_') => Err(format!(
            "{} must start with a letter or '_' (POSIX environment name)",
            quote(key)
        )),
        Some(_) if !chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_') => Err(format!(
            "{} may only contain ASCII letters, digits and '_'",
            quote(key)
        )),
        Some(_) => Ok(()),
    }
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err("label name must be 1-63 characters of [A-Za-z0-9-_.]".into());
    }
    if let Some(prefix) = prefix
        && (prefix.len() > 253 || prefix.split('.').any(|l| check_rfc1123_label(l).is_err()))
    {
        return Err(
            "label prefix must be a DNS subdomain (dot-separated lowercase RFC 1123 labels)".into(),
        );
    }
    Ok(())
}

/// Checks a label value as Kubernetes does: empty, or at most 63
/// characters of `[A-Za-z0-9-_.]` that begin and end with a letter or digit.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    let edges_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.len() > 63
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || !edges_ok(value.chars().next())
        || !edges_ok(value.chars().last())
    {
        return Err(format!(
            "value {} must be at most 63 characters of [A-Za-z0-9-_.], beginning and ending \
             with a letter or digit",
            quote(value)
        ));
    }
    Ok(())
}

/// Parses a memory quantity (`"256Mi"`, `"1.5Gi"`, `"500M"`, `"8192k"`,
/// `"1048576"`) into bytes, as Kubernetes reads it. Rejects zero and values below 4 MiB. Kilo is `k`
/// as in Kubernetes; `K` is accepted too.
pub fn parse_memory_bytes(text: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 9] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, unit) = SUFFIXES
        .iter()
        .find_map(|(s, m)| text.strip_suffix(s).map(|d| (d, *m)))
        .unwrap_or((text, 1));
    let not_a_quantity = || {
        format!(
            "{} is not a memory quantity like \"256Mi\", \"1.5Gi\" or \"1G\"",
            quote(text)
        )
    };
    // Kubernetes accepts a decimal number before the suffix ("1.5Gi").
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
        || fraction.len() > 9
    {
        return Err(not_a_quantity());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| not_a_quantity())?
    };
    let too_large = || format!("{} is too large", quote(text));
    let mut bytes = whole.checked_mul(unit).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(fraction.len() as u32);
        let part: u128 = fraction.parse().map_err(|_| not_a_quantity())?;
        // Bytes are whole: a fraction of a byte rounds up, as Kubernetes does.
        let extra = (part * u128::from(unit)).div_ceil(scale);
        bytes = bytes
            .checked_add(u64::try_from(extra).map_err(|_| too_large())?)
            .ok_or_else(too_large)?;
    }
    if bytes < 4 << 20 {
        return Err(format!("{} is below the 4Mi minimum", quote(text)));
    }
    Ok(bytes)
}

/// Parses a CPU quantity (`"500m"`, `"2"`, `"1.5"`) into millicores. Rejects
/// zero and more than 1024 cores.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    let millis = if let Some(m) = text.strip_suffix('m') {
        m.parse::<u64>().ok()
    } else {
        text.parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c >= 0.0)
            .map(|c| (c * 1000.0).round() as u64)
    };
    match millis {
        None => Err(format!(
            "{} is not a CPU quantity like \"500m\" or \"1.5\"",
            quote(text)
        )),
        Some(0) => Err("must be more than zero".into()),
        Some(m) if m > 1_024_000 => Err(format!("{} is more than 1024 cores", quote(text))),
        Some(m) => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_read_as_kubernetes_reads_them() {
        assert_eq!(parse_memory_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory_bytes("0.5Gi"), Ok(1 << 29));
        assert_eq!(parse_memory_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("4194304"), Ok(4 << 20));
        // A fraction of a byte rounds up.
        assert_eq!(parse_memory_bytes("4194304.5"), Ok((4 << 20) + 1));
        assert!(parse_memory_bytes("1.5.5Gi").is_err());
        assert!(parse_memory_bytes("Gi").is_err());
    }

    #[test]
    fn label_values_follow_kubernetes() {
        for ok in ["", "a", "gold", "v1.2_3-x", &"a".repeat(63)] {
            assert_eq!(check_label_value(ok), Ok(()), "{ok:?}");
        }
        for bad in ["-a", "a-", "a b", "a/b", "ü", &"a".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad:?}");
        }
    }
}
