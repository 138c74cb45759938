//! Spec validation and loading: every rule of `ServerSpec::validate` rejects
//! what it must and names the field, in a table; YAML and JSON load the
//! documented shapes with the documented defaults; unknown fields are
//! rejected; `workload_hash` covers exactly what shapes a workload.
//!
//! This file owns tests of `spec/` only; it must not start a `Lifecycle`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_lifecycle::spec::{
    Command, EnvEntry, EnvSource, HealthSpec, LivenessCheck, ReadinessCall, Resources, SecretRef,
    UpdatePolicy,
};
use mcp_lifecycle::{ErrorKind, Limits, ServerSpec, Source, Transport, ValidationError};
use serde_json::json;

const IMAGE: &str = "ghcr.io/example/github-mcp:1.4";

/// A valid spec that exercises every part a mutation may break: an image, an
/// HTTP transport, plain and secret env, limits, a readiness call and labels.
fn base() -> ServerSpec {
    let mut spec = ServerSpec::new("github", Source::Image(IMAGE.to_owned()));
    spec.transport = Transport::Http {
        port: 8080,
        path: "/mcp".to_owned(),
    };
    spec.env = vec![
        EnvEntry::plain("LOG_LEVEL", "info"),
        EnvEntry::secret("GITHUB_TOKEN", SecretRef::new("github", "token")),
    ];
    spec.replicas = 2;
    spec.resources = Resources {
        memory: Some("256Mi".to_owned()),
        cpu: Some("500m".to_owned()),
    };
    spec.health.readiness = Some(ReadinessCall {
        tool: "ping".to_owned(),
        arguments: json!({ "deep": true }),
    });
    spec.labels.insert("team".to_owned(), "platform".to_owned());
    spec
}

/// A named change to a spec.
type Row = (&'static str, fn(&mut ServerSpec));

fn image(spec: &mut ServerSpec, reference: &str) {
    spec.source = Source::Image(reference.to_owned());
}

fn env_key(spec: &mut ServerSpec, key: &str) {
    spec.env[0].name = key.to_owned();
}

fn readiness_args(spec: &mut ServerSpec, arguments: serde_json::Value) {
    spec.health.readiness.as_mut().unwrap().arguments = arguments;
}

/// One row: what is broken, how, under which limits, and the field that must be named.
struct Case {
    what: &'static str,
    mutate: fn(&mut ServerSpec),
    limits: Limits,
    field: &'static str,
}

fn case(what: &'static str, field: &'static str, mutate: fn(&mut ServerSpec)) -> Case {
    Case {
        what,
        mutate,
        limits: Limits::default(),
        field,
    }
}

impl Case {
    fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

fn invalid_cases() -> Vec<Case> {
    let three = Limits {
        max_replicas: 3,
        ..Limits::default()
    };
    vec![
        // name: RFC 1123 label
        case("uppercase name", "name", |s| s.name = "GitHub".into()),
        case("unicode name", "name", |s| s.name = "sérveur".into()),
        case("leading hyphen", "name", |s| s.name = "-github".into()),
        case("trailing hyphen", "name", |s| s.name = "github-".into()),
        case("64-character name", "name", |s| s.name = "a".repeat(64)),
        case("empty name", "name", |s| s.name = String::new()),
        case("underscore in name", "name", |s| s.name = "git_hub".into()),
        case("dot in name", "name", |s| s.name = "git.hub".into()),
        case("space in name", "name", |s| s.name = "git hub".into()),
        // replicas above the host's maximum
        case("replicas 11 > default max 10", "replicas", |s| {
            s.replicas = 11
        }),
        case("replicas u32::MAX", "replicas", |s| s.replicas = u32::MAX),
        case("replicas 4 > custom max 3", "replicas", |s| s.replicas = 4).with_limits(three),
        // malformed image references
        case("uppercase repository", "source.image", |s| {
            image(s, "UPPER/case:tag")
        }),
        case("space in tag", "source.image", |s| {
            image(s, "repo:tag with space")
        }),
        case("short digest", "source.image", |s| {
            image(s, "repo@sha256:short")
        }),
        case(
            "uppercase hub repository without tag",
            "source.image",
            |s| image(s, "Team/repo"),
        ),
        case("uppercase path component", "source.image", |s| {
            image(s, "ghcr.io/Team/repo:1")
        }),
        case("empty image", "source.image", |s| image(s, "")),
        case("only colons", "source.image", |s| image(s, "::")),
        case("surrounding whitespace", "source.image", |s| {
            image(s, " repo:1 ")
        }),
        case("trailing colon", "source.image", |s| image(s, "repo:")),
        // existing workloads (adopted by name)
        case("empty existing workload", "source.existing", |s| {
            s.env.clear();
            s.source = Source::Existing(String::new());
        }),
        case("uppercase existing workload", "source.existing", |s| {
            s.env.clear();
            s.source = Source::Existing("Weather".into());
        }),
        case(
            "existing workload with an empty dot part",
            "source.existing",
            |s| {
                s.env.clear();
                s.source = Source::Existing("weather..mcp".into());
            },
        ),
        case("existing workload over 253 bytes", "source.existing", |s| {
            s.env.clear();
            s.source = Source::Existing(vec!["a".repeat(63); 4].join("."));
        }),
        case("env on an existing workload", "env", |s| {
            s.source = Source::Existing("weather-mcp".into());
        }),
        // local commands
        case("empty program", "source.command.program", |s| {
            s.source = Source::Command(Command {
                program: "  ".into(),
                args: Vec::new(),
                working_dir: None,
            })
        }),
        case("NUL in argument", "source.command", |s| {
            s.source = Source::Command(Command {
                program: "mcp".into(),
                args: vec!["a\0b".into()],
                working_dir: None,
            })
        }),
        case("NUL in working directory", "source.command", |s| {
            s.source = Source::Command(Command {
                program: "mcp".into(),
                args: Vec::new(),
                working_dir: Some("/srv\0".into()),
            })
        }),
        // env keys
        case("env key starting with a digit", "env[0].name", |s| {
            env_key(s, "1ABC")
        }),
        case("env key with '-'", "env[0].name", |s| env_key(s, "A-B")),
        case("empty env key", "env[0].name", |s| env_key(s, "")),
        case("env key with a space", "env[0].name", |s| env_key(s, "A B")),
        case("env key with '='", "env[0].name", |s| env_key(s, "A=B")),
        case("non-ASCII env key", "env[0].name", |s| env_key(s, "ÉTAT")),
        case("repeated env key", "env[2].name", |s| {
            s.env.push(EnvEntry::plain("LOG_LEVEL", "debug"))
        }),
        case("repeated env key, plain then secret", "env[2].name", |s| {
            s.env.push(EnvEntry::secret(
                "GITHUB_TOKEN",
                SecretRef::new("other", "token"),
            ))
        }),
        case("NUL in env value", "env[0].value", |s| {
            s.env[0].source = EnvSource::Value("a\0b".into())
        }),
        case("secret without a key", "env[1].secret", |s| {
            s.env[1].source = EnvSource::Secret(SecretRef::new("github", ""))
        }),
        // durations
        case("interval 0s", "health.interval", |s| {
            s.health.interval = Duration::ZERO
        }),
        case("interval 500ms (below 1s)", "health.interval", |s| {
            s.health.interval = Duration::from_millis(500)
        }),
        case("interval 2h (above 1h)", "health.interval", |s| {
            s.health.interval = Duration::from_secs(7200)
        }),
        case("timeout 0s", "health.timeout", |s| {
            s.health.timeout = Duration::ZERO
        }),
        case("timeout 2h", "health.timeout", |s| {
            s.health.timeout = Duration::from_secs(7200)
        }),
        case("startup_timeout 0s", "health.startup_timeout", |s| {
            s.health.startup_timeout = Duration::ZERO
        }),
        case("startup_timeout 2h", "health.startup_timeout", |s| {
            s.health.startup_timeout = Duration::from_secs(7200)
        }),
        case("stop_grace_period 2h", "stop_grace_period", |s| {
            s.stop_grace_period = Duration::from_secs(7200)
        }),
        case(
            "interval 2h (above a custom 1m max)",
            "health.interval",
            |s| s.health.interval = Duration::from_secs(120),
        )
        .with_limits(Limits {
            max_duration: Duration::from_secs(60),
            ..Limits::default()
        }),
        // probes
        case(
            "readiness arguments array",
            "health.readiness.arguments",
            |s| readiness_args(s, json!([1, 2])),
        ),
        case(
            "readiness arguments string",
            "health.readiness.arguments",
            |s| readiness_args(s, json!("x")),
        ),
        case(
            "readiness arguments number",
            "health.readiness.arguments",
            |s| readiness_args(s, json!(42)),
        ),
        case(
            "readiness arguments null",
            "health.readiness.arguments",
            |s| readiness_args(s, serde_json::Value::Null),
        ),
        case("readiness tool empty", "health.readiness.tool", |s| {
            s.health.readiness.as_mut().unwrap().tool = " ".into()
        }),
        case(
            "liveness tool arguments array",
            "health.liveness.tool.arguments",
            |s| {
                s.health.liveness = LivenessCheck::Tool(ReadinessCall {
                    tool: "ping".into(),
                    arguments: json!([]),
                })
            },
        ),
        case("failure_threshold 0", "health.failure_threshold", |s| {
            s.health.failure_threshold = 0
        }),
        case("failure_threshold 101", "health.failure_threshold", |s| {
            s.health.failure_threshold = 101
        }),
        // transport
        case("http port 0", "transport.http.port", |s| {
            s.transport = Transport::Http {
                port: 0,
                path: "/mcp".into(),
            }
        }),
        case("sse port 0", "transport.sse.port", |s| {
            s.transport = Transport::Sse {
                port: 0,
                path: "/sse".into(),
            }
        }),
        case("http path without '/'", "transport.http.path", |s| {
            s.transport = Transport::Http {
                port: 8080,
                path: "mcp".into(),
            }
        }),
        // resources
        case("memory \"lots\"", "resources.memory", |s| {
            s.resources.memory = Some("lots".into())
        }),
        case("memory \"1Ki\" (below 4Mi)", "resources.memory", |s| {
            s.resources.memory = Some("1Ki".into())
        }),
        case("memory \"0\"", "resources.memory", |s| {
            s.resources.memory = Some("0".into())
        }),
        case("memory \"-1Gi\"", "resources.memory", |s| {
            s.resources.memory = Some("-1Gi".into())
        }),
        case("memory overflowing u64", "resources.memory", |s| {
            s.resources.memory = Some("99999999999999Ti".into())
        }),
        case("cpu \"0\"", "resources.cpu", |s| {
            s.resources.cpu = Some("0".into())
        }),
        case("cpu \"-1\"", "resources.cpu", |s| {
            s.resources.cpu = Some("-1".into())
        }),
        case("cpu \"0m\"", "resources.cpu", |s| {
            s.resources.cpu = Some("0m".into())
        }),
        case("cpu \"NaN\"", "resources.cpu", |s| {
            s.resources.cpu = Some("NaN".into())
        }),
        case("cpu \"inf\"", "resources.cpu", |s| {
            s.resources.cpu = Some("inf".into())
        }),
        case("cpu \"2000\" (above 1024 cores)", "resources.cpu", |s| {
            s.resources.cpu = Some("2000".into())
        }),
        case("cpu \"lots\"", "resources.cpu", |s| {
            s.resources.cpu = Some("lots".into())
        }),
        // labels
        case("label key with a space", "labels.bad key", |s| {
            s.labels.insert("bad key".into(), "v".into());
        }),
        case(
            "label prefix not a DNS subdomain",
            "labels.Bad Prefix!/tier",
            |s| {
                s.labels.insert("Bad Prefix!/tier".into(), "v".into());
            },
        ),
        case(
            "label prefix with an empty part",
            "labels.example..com/tier",
            |s| {
                s.labels.insert("example..com/tier".into(), "v".into());
            },
        ),
        case("label with an empty prefix", "labels./tier", |s| {
            s.labels.insert("/tier".into(), "v".into());
        }),
        case("label value of 64 characters", "labels.long", |s| {
            s.labels.insert("long".into(), "v".repeat(64));
        }),
        // what Kubernetes would refuse at apply time
        case("label value with a space", "labels.team", |s| {
            s.labels.insert("team".into(), "a b".into());
        }),
        case("label value ending in a dash", "labels.team", |s| {
            s.labels.insert("team".into(), "platform-".into());
        }),
        case("label value with a slash", "labels.team", |s| {
            s.labels.insert("team".into(), "a/b".into());
        }),
        case("memory \"1.5.5Gi\"", "resources.memory", |s| {
            s.resources.memory = Some("1.5.5Gi".into())
        }),
        case("memory \".Gi\"", "resources.memory", |s| {
            s.resources.memory = Some(".Gi".into())
        }),
        // lengths the kernel refuses at exec: MAX_ARG_STRLEN counts the NUL, and
        // NAME= for an environment string; a path over PATH_MAX (with its NUL)
        // is ENAMETOOLONG
        case("1 MB program", "source.command.program", |s| {
            command(s, &format!("/{}", "a".repeat(MB)), &[])
        }),
        case("program of PATH_MAX bytes", "source.command.program", |s| {
            command(s, &"/".repeat(PATH_MAX), &[])
        }),
        case(
            "argument of MAX_ARG_STRLEN bytes",
            "source.command.args[2]",
            |s| command(s, "mcp", &["--root", "/srv", &"a".repeat(MAX_ARG_STRLEN)]),
        ),
        case("1 MB argument", "source.command.args[0]", |s| {
            command(s, "mcp", &[&"a".repeat(MB)])
        }),
        case(
            "1 MB working directory",
            "source.command.working_dir",
            |s| {
                s.source = Source::Command(Command {
                    program: "mcp".into(),
                    args: Vec::new(),
                    working_dir: Some(format!("/{}", "d".repeat(MB))),
                })
            },
        ),
        case("1 MB env name", "env[0].name", |s| {
            env_key(s, &"A".repeat(MB))
        }),
        case("1 MB env value", "env[0].value", |s| {
            s.env[0].source = EnvSource::Value("v".repeat(MB))
        }),
        case(
            "env NAME=value of MAX_ARG_STRLEN bytes with its NUL",
            "env[0].value",
            // "LOG_LEVEL" + "=" + value + NUL
            |s| s.env[0].source = EnvSource::Value("v".repeat(MAX_ARG_STRLEN - "LOG_LEVEL=".len())),
        ),
        case("1 MB name of a secret variable", "env[1].name", |s| {
            s.env[1].name = "S".repeat(MB)
        }),
        case(
            "env adding up past the 1 MiB total",
            // base() holds "LOG_LEVEL=info\0" (15) and "GITHUB_TOKEN=\0" (14); each
            // pushed "Vn=<120 KiB>\0" is 122884: eight fit (983101), the ninth,
            // env[10], does not.
            "env[10]",
            |s| {
                for i in 0..9 {
                    s.env
                        .push(EnvEntry::plain(format!("V{i}"), "v".repeat(120 * 1024)));
                }
            },
        ),
        case("1 MB readiness tool name", "health.readiness.tool", |s| {
            s.health.readiness.as_mut().unwrap().tool = "t".repeat(MB)
        }),
        case(
            "129-character readiness tool name",
            "health.readiness.tool",
            |s| s.health.readiness.as_mut().unwrap().tool = "t".repeat(129),
        ),
        case(
            "129-character liveness tool name",
            "health.liveness.tool.tool",
            |s| {
                s.health.liveness = LivenessCheck::Tool(ReadinessCall {
                    tool: "t".repeat(129),
                    arguments: json!({}),
                })
            },
        ),
        case("1 MB http path", "transport.http.path", |s| {
            s.transport = Transport::Http {
                port: 8080,
                path: format!("/{}", "p".repeat(MB)),
            }
        }),
        case("sse path of 4097 bytes", "transport.sse.path", |s| {
            s.transport = Transport::Sse {
                port: 8080,
                path: format!("/{}", "p".repeat(4096)),
            }
        }),
        case(
            "readiness arguments nested 200 levels",
            "health.readiness.arguments",
            |s| readiness_args(s, nested(200)),
        ),
        case(
            "readiness arguments nested 33 levels",
            "health.readiness.arguments",
            |s| readiness_args(s, nested(33)),
        ),
        case(
            "liveness arguments nested 200 levels",
            "health.liveness.tool.arguments",
            |s| {
                s.health.liveness = LivenessCheck::Tool(ReadinessCall {
                    tool: "ping".into(),
                    arguments: nested(200),
                })
            },
        ),
        case(
            "arguments adding up past a custom total",
            // "mcp\0" (4) + 301 per argument: 305, 606, 907, then 1208.
            "source.command.args[3]",
            |s| {
                let arg = "a".repeat(300);
                command(s, "mcp", &[&arg, &arg, &arg, &arg])
            },
        )
        .with_limits(Limits {
            max_command_bytes: 1000,
            ..Limits::default()
        }),
        case(
            "env value over a custom per-string maximum",
            // "LOG_LEVEL=" (10) + 60 + NUL = 71 > 64
            "env[0].value",
            |s| s.env[0].source = EnvSource::Value("v".repeat(60)),
        )
        .with_limits(Limits {
            max_arg_bytes: 64,
            ..Limits::default()
        }),
    ]
}

/// One megabyte: a value no runtime takes as one argument or variable.
const MB: usize = 1 << 20;
/// Linux's MAX_ARG_STRLEN (32 pages): the longest argument or environment
/// string execve takes, its terminating NUL included.
const MAX_ARG_STRLEN: usize = 128 * 1024;
/// Linux's PATH_MAX, its terminating NUL included.
const PATH_MAX: usize = 4096;

fn command(spec: &mut ServerSpec, program: &str, args: &[&str]) {
    spec.source = Source::Command(Command {
        program: program.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        working_dir: None,
    });
}

/// A JSON object `levels` deep: `{"a": {"a": … {"a": 1}}}`.
fn nested(levels: usize) -> serde_json::Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = json!({ "a": value });
    }
    value
}

#[test]
fn base_spec_is_valid() {
    base().validate(&Limits::default()).unwrap();
}

#[test]
fn each_invalid_field_is_rejected_and_named() {
    let mut failures = Vec::new();
    for c in invalid_cases() {
        let mut spec = base();
        (c.mutate)(&mut spec);
        let err = match spec.validate(&c.limits) {
            Ok(()) => {
                failures.push(format!(
                    "{}: accepted, expected {} rejected",
                    c.what, c.field
                ));
                continue;
            }
            Err(err) => err,
        };
        if !err.names_field(c.field) {
            failures.push(format!(
                "{}: expected field {:?}, got {:?}",
                c.what, c.field, err.errors
            ));
            continue;
        }
        // The mutation breaks one thing, so nothing else may be blamed.
        if let Some(other) = err.errors.iter().find(|e| e.field != c.field) {
            failures.push(format!(
                "{}: also blamed {:?} ({})",
                c.what, other.field, other.reason
            ));
        }
        let message = err.to_string();
        if !message.contains(c.field) {
            failures.push(format!(
                "{}: message {message:?} does not name {}",
                c.what, c.field
            ));
        }
        if err.errors.iter().any(|e| e.reason.trim().is_empty()) {
            failures.push(format!("{}: a reason is empty: {:?}", c.what, err.errors));
        }
        if err.server != spec.name {
            failures.push(format!("{}: server is {:?}", c.what, err.server));
        }
        // Through the crate's error type it is an Invalid error with the same message.
        let wrapped = mcp_lifecycle::Error::from(err);
        if wrapped.kind() != ErrorKind::Invalid || wrapped.to_string() != message {
            failures.push(format!("{}: wrapped as {wrapped:?}", c.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_table_covers_the_required_fields() {
    let fields: std::collections::BTreeSet<&str> =
        invalid_cases().iter().map(|c| c.field).collect();
    for required in [
        "name",
        "replicas",
        "source.image",
        "env[0].name",
        "env[2].name",
        "health.interval",
        "health.timeout",
        "health.startup_timeout",
        "stop_grace_period",
        "health.readiness.arguments",
        "health.failure_threshold",
        "transport.http.port",
        "resources.memory",
        "resources.cpu",
        "source.command.program",
        "source.command.args[0]",
        "source.command.working_dir",
        "env[0].value",
        "env[10]",
        "health.readiness.tool",
        "transport.http.path",
    ] {
        assert!(fields.contains(required), "no case for {required}");
    }
}

#[test]
fn boundary_values_are_accepted() {
    let cases: Vec<Row> = vec![
        ("63-character name", |s| s.name = "a".repeat(63)),
        ("one-character name", |s| s.name = "a".into()),
        ("name starting with a digit", |s| {
            s.name = "1password".into()
        }),
        ("name with inner hyphens", |s| s.name = "git--hub-2".into()),
        ("replicas 0", |s| s.replicas = 0),
        ("replicas at max", |s| s.replicas = 10),
        ("image without tag", |s| image(s, "repo")),
        ("existing workload with dots", |s| {
            s.env.clear();
            s.source = Source::Existing("weather.mcp-1".into());
        }),
        ("image with registry port", |s| {
            image(s, "localhost:5000/team/repo:1.0")
        }),
        ("uppercase registry host (DNS is case-insensitive)", |s| {
            image(s, "Registry.Example.com/team/repo:1")
        }),
        ("uppercase tag", |s| image(s, "repo:V1.0-RC")),
        ("image pinned by digest", |s| {
            image(s, &format!("ghcr.io/x/y@sha256:{}", "a".repeat(64)))
        }),
        ("image with tag and digest", |s| {
            image(s, &format!("ghcr.io/x/y:1@sha256:{}", "0".repeat(64)))
        }),
        ("env key with underscore first", |s| env_key(s, "_A1")),
        ("lowercase env key", |s| env_key(s, "path")),
        ("interval 1s", |s| {
            s.health.interval = Duration::from_secs(1)
        }),
        ("interval 1h", |s| {
            s.health.interval = Duration::from_secs(3600)
        }),
        ("timeout 100ms", |s| {
            s.health.timeout = Duration::from_millis(100)
        }),
        ("stop_grace_period 0s", |s| {
            s.stop_grace_period = Duration::ZERO
        }),
        ("failure_threshold 1", |s| s.health.failure_threshold = 1),
        ("failure_threshold 100", |s| {
            s.health.failure_threshold = 100
        }),
        ("readiness arguments {}", |s| readiness_args(s, json!({}))),
        ("http port 65535", |s| {
            s.transport = Transport::Http {
                port: 65535,
                path: "/".into(),
            }
        }),
        ("memory 4Mi", |s| s.resources.memory = Some("4Mi".into())),
        ("memory 1Gi", |s| s.resources.memory = Some("1Gi".into())),
        ("memory 500M", |s| s.resources.memory = Some("500M".into())),
        ("memory 8192k", |s| {
            s.resources.memory = Some("8192k".into())
        }),
        ("memory in bytes", |s| {
            s.resources.memory = Some("1073741824".into())
        }),
        ("cpu 1.5", |s| s.resources.cpu = Some("1.5".into())),
        ("cpu 1m", |s| s.resources.cpu = Some("1m".into())),
        ("cpu 1024", |s| s.resources.cpu = Some("1024".into())),
        ("no limits", |s| s.resources = Resources::default()),
        ("prefixed label key", |s| {
            s.labels.insert("example.com/tier".into(), "gold".into());
        }),
        ("stdio", |s| s.transport = Transport::Stdio),
        ("program of PATH_MAX - 1 bytes", |s| {
            command(s, &"/".repeat(PATH_MAX - 1), &[])
        }),
        ("argument of MAX_ARG_STRLEN - 1 bytes", |s| {
            command(s, "mcp", &[&"a".repeat(MAX_ARG_STRLEN - 1)])
        }),
        ("env NAME=value of MAX_ARG_STRLEN - 1 bytes", |s| {
            s.env[0].source = EnvSource::Value("v".repeat(MAX_ARG_STRLEN - 1 - "LOG_LEVEL=".len()))
        }),
        ("eight 120 KiB variables (under the 1 MiB total)", |s| {
            for i in 0..8 {
                s.env
                    .push(EnvEntry::plain(format!("V{i}"), "v".repeat(120 * 1024)));
            }
        }),
        ("128-character tool name", |s| {
            s.health.readiness.as_mut().unwrap().tool = "t".repeat(128)
        }),
        ("http path of 4096 bytes", |s| {
            s.transport = Transport::Http {
                port: 8080,
                path: format!("/{}", "p".repeat(4095)),
            }
        }),
        ("readiness arguments nested 32 levels", |s| {
            readiness_args(s, nested(32))
        }),
        ("readiness arguments with a long flat array", |s| {
            readiness_args(s, json!({ "list": vec![[1]; 10_000] }))
        }),
        ("command source", |s| {
            s.source = Source::Command(Command {
                program: "/usr/bin/mcp".into(),
                args: vec!["--stdio".into()],
                working_dir: Some("/tmp".into()),
            })
        }),
    ];
    let mut failures = Vec::new();
    for (what, mutate) in cases {
        let mut spec = base();
        mutate(&mut spec);
        if let Err(err) = spec.validate(&Limits::default()) {
            failures.push(format!("{what}: rejected: {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn default_string_limits_are_the_documented_ones() {
    let limits = Limits::default();
    assert_eq!(limits.max_arg_bytes, MAX_ARG_STRLEN);
    assert_eq!(limits.max_command_bytes, 1 << 20);
}

#[test]
fn the_command_total_counts_every_string_with_its_nul() {
    let limits = Limits {
        max_command_bytes: 1000,
        ..Limits::default()
    };
    let arg = "a".repeat(300);
    // "mcp\0" (4) + 3 × 301 + 64 + "LOG_LEVEL=info\0" (15) + "GITHUB_TOKEN=\0"
    // (14, a secret's value is not known yet) = 1000.
    let mut spec = base();
    command(&mut spec, "mcp", &[&arg, &arg, &arg, &"b".repeat(63)]);
    spec.validate(&limits).unwrap();
    // One byte more, and the last string, the secret variable, is blamed.
    command(&mut spec, "mcp", &[&arg, &arg, &arg, &"b".repeat(64)]);
    let err = spec.validate(&limits).unwrap_err();
    let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["env[1]"], "{err}");
    assert!(err.errors[0].reason.contains("1001 bytes"), "{err}");
    assert!(err.errors[0].reason.contains("at most 1000"), "{err}");
}

#[test]
fn custom_max_replicas_is_the_bound() {
    let limits = Limits {
        max_replicas: 3,
        ..Limits::default()
    };
    let mut spec = base();
    spec.replicas = 3;
    spec.validate(&limits).unwrap();
    spec.replicas = 4;
    let err = spec.validate(&limits).unwrap_err();
    assert!(err.names_field("replicas"));
    assert!(err.to_string().contains("0..=3"), "{err}");
}

#[test]
fn several_problems_are_all_reported_in_field_order() {
    let mut spec = base();
    spec.name = "Bad_Name".into();
    spec.source = Source::Image("UPPER/case:tag".into());
    spec.env.push(EnvEntry::plain("1ABC", "x"));
    spec.replicas = 99;
    spec.resources.memory = Some("lots".into());
    spec.health.interval = Duration::ZERO;
    spec.health.failure_threshold = 0;
    spec.labels.insert("bad key".into(), "v".into());
    spec.stop_grace_period = Duration::from_secs(7200);
    let err: ValidationError = spec.validate(&Limits::default()).unwrap_err();
    let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "source.image",
            "env[2].name",
            "replicas",
            "resources.memory",
            "health.interval",
            "health.failure_threshold",
            "labels.bad key",
            "stop_grace_period",
        ],
        "{err}"
    );
    let message = err.to_string();
    for field in fields {
        assert!(message.contains(field), "{message} lacks {field}");
    }
    assert!(message.contains("Bad_Name"), "{message}");
}

#[test]
fn duplicate_key_names_the_second_occurrence_only() {
    let mut spec = base();
    spec.env = vec![
        EnvEntry::plain("A", "1"),
        EnvEntry::plain("B", "2"),
        EnvEntry::plain("A", "3"),
        EnvEntry::plain("A", "4"),
    ];
    let err = spec.validate(&Limits::default()).unwrap_err();
    let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["env[2].name", "env[3].name"], "{err}");
    assert!(err.errors[0].reason.contains("\"A\""), "{err}");
}

// ----- loading ---------------------------------------------------------------

const FULL_YAML: &str = r#"
name: github
source:
  image: ghcr.io/example/github-mcp:1.4
transport:
  http: { port: 8080, path: /mcp }
env:
  - name: LOG_LEVEL
    value: info
  - name: GITHUB_TOKEN
    secret: { name: github, key: token }
replicas: 2
resources:
  memory: 256Mi
  cpu: 500m
health:
  liveness:
    tool: { tool: ping, arguments: { echo: hi } }
  readiness: { tool: search, arguments: { query: "mcp", limit: 1 } }
  interval: 30s
  timeout: 5s
  failure_threshold: 5
  startup_timeout: 5m
update: { check: true, auto_reinstall: false }
labels:
  team: platform
  example.com/tier: gold
stop_grace_period: 20s
"#;

fn full_expected() -> ServerSpec {
    let mut spec = ServerSpec::new("github", Source::Image(IMAGE.to_owned()));
    spec.transport = Transport::Http {
        port: 8080,
        path: "/mcp".into(),
    };
    spec.env = vec![
        EnvEntry::plain("LOG_LEVEL", "info"),
        EnvEntry::secret("GITHUB_TOKEN", SecretRef::new("github", "token")),
    ];
    spec.replicas = 2;
    spec.resources = Resources {
        memory: Some("256Mi".into()),
        cpu: Some("500m".into()),
    };
    spec.health = HealthSpec {
        liveness: LivenessCheck::Tool(ReadinessCall {
            tool: "ping".into(),
            arguments: json!({ "echo": "hi" }),
        }),
        readiness: Some(ReadinessCall {
            tool: "search".into(),
            arguments: json!({ "query": "mcp", "limit": 1 }),
        }),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        failure_threshold: 5,
        startup_timeout: Duration::from_secs(300),
    };
    spec.update = UpdatePolicy {
        check: true,
        auto_reinstall: false,
    };
    spec.labels = BTreeMap::from([
        ("team".to_owned(), "platform".to_owned()),
        ("example.com/tier".to_owned(), "gold".to_owned()),
    ]);
    spec.stop_grace_period = Duration::from_secs(20);
    spec
}

#[test]
fn full_yaml_loads_and_validates() {
    let spec = ServerSpec::from_yaml(FULL_YAML).unwrap();
    assert_eq!(spec, full_expected());
    spec.validate(&Limits::default()).unwrap();
}

#[test]
fn command_source_and_other_transports_load() {
    let spec = ServerSpec::from_yaml(
        r#"
name: local
source:
  command: { program: /usr/local/bin/mcp-fs, args: [--root, /srv], working_dir: /srv }
transport: stdio
"#,
    )
    .unwrap();
    assert_eq!(
        spec.source,
        Source::Command(Command {
            program: "/usr/local/bin/mcp-fs".into(),
            args: vec!["--root".into(), "/srv".into()],
            working_dir: Some("/srv".into()),
        })
    );
    assert_eq!(spec.transport, Transport::Stdio);
    spec.validate(&Limits::default()).unwrap();

    let sse = ServerSpec::from_yaml(
        "name: legacy\nsource: {command: {program: mcp}}\ntransport: {sse: {port: 9000}}\n",
    )
    .unwrap();
    assert_eq!(
        sse.transport,
        Transport::Sse {
            port: 9000,
            path: "/sse".into()
        }
    );
    let Source::Command(cmd) = &sse.source else {
        panic!("expected a command, got {:?}", sse.source);
    };
    assert!(cmd.args.is_empty() && cmd.working_dir.is_none());

    let http =
        ServerSpec::from_yaml("name: h\nsource: {image: repo:1}\ntransport: {http: {port: 80}}\n")
            .unwrap();
    assert_eq!(
        http.transport,
        Transport::Http {
            port: 80,
            path: "/mcp".into()
        }
    );
}

#[test]
fn defaults_are_as_documented() {
    let spec = ServerSpec::from_yaml("name: tiny\nsource: {image: repo:1}\n").unwrap();
    assert_eq!(spec.replicas, 1);
    assert_eq!(spec.transport, Transport::Stdio);
    assert_eq!(
        spec.update,
        UpdatePolicy {
            check: true,
            auto_reinstall: true
        }
    );
    assert_eq!(spec.health.interval, Duration::from_secs(30));
    assert_eq!(spec.health.timeout, Duration::from_secs(10));
    assert_eq!(spec.health.failure_threshold, 3);
    assert_eq!(spec.health.startup_timeout, Duration::from_secs(60));
    assert_eq!(spec.health.liveness, LivenessCheck::ToolsList);
    assert_eq!(spec.health.readiness, None);
    assert_eq!(spec.stop_grace_period, Duration::from_secs(10));
    assert!(spec.env.is_empty() && spec.labels.is_empty());
    assert_eq!(spec.resources, Resources::default());
    // The same defaults as the constructor, and as JSON.
    assert_eq!(
        spec,
        ServerSpec::new("tiny", Source::Image("repo:1".into()))
    );
    let json = ServerSpec::from_json(r#"{"name": "tiny", "source": {"image": "repo:1"}}"#).unwrap();
    assert_eq!(json, spec);
    spec.validate(&Limits::default()).unwrap();

    // A readiness call without arguments gets an empty object.
    let spec = ServerSpec::from_yaml(
        "name: r\nsource: {image: repo:1}\nhealth: {readiness: {tool: ping}}\n",
    )
    .unwrap();
    assert_eq!(spec.health.readiness.unwrap().arguments, json!({}));
}

#[test]
fn unknown_fields_are_rejected_and_named() {
    let head = "name: x\nsource: {image: repo:1}\n";
    let cases: &[(&str, &str, &str)] = &[
        ("top level", "replica: 2\n", "replica"),
        ("health", "health: {intervall: 5s}\n", "intervall"),
        (
            "readiness",
            "health: {readiness: {tool: p, args: {}}}\n",
            "args",
        ),
        (
            "liveness tool",
            "health: {liveness: {tool: {tool: p, argz: {}}}}\n",
            "argz",
        ),
        ("update", "update: {chek: false}\n", "chek"),
        ("resources", "resources: {memroy: 1Gi}\n", "memroy"),
        (
            "http transport",
            "transport: {http: {port: 80, paht: /x}}\n",
            "paht",
        ),
        (
            "sse transport",
            "transport: {sse: {port: 80, prot: 1}}\n",
            "prot",
        ),
        (
            "env entry",
            "env: [{name: A, value: b, vaule: c}]\n",
            "vaule",
        ),
        (
            "secret reference",
            "env: [{name: A, secret: {name: s, key: k, keyy: k}}]\n",
            "keyy",
        ),
    ];
    let mut failures = Vec::new();
    for (what, extra, field) in cases {
        let text = format!("{head}{extra}");
        match ServerSpec::from_yaml(&text) {
            Ok(spec) => failures.push(format!("{what}: accepted as {spec:?}")),
            Err(err) => {
                if err.kind() != ErrorKind::Invalid || !err.to_string().contains(field) {
                    failures.push(format!("{what}: error does not name {field}: {err}"));
                }
            }
        }
    }
    // Nested in source, where the enum's own keys are checked.
    for (what, text, field) in [
        (
            "command",
            "name: x\nsource: {command: {program: p, argz: []}}\n",
            "argz",
        ),
        ("source kind", "name: x\nsource: {imag: repo:1}\n", "imag"),
        (
            "transport kind",
            "name: x\nsource: {image: r}\ntransport: htp\n",
            "htp",
        ),
    ] {
        match ServerSpec::from_yaml(text) {
            Ok(spec) => failures.push(format!("{what}: accepted as {spec:?}")),
            Err(err) if !err.to_string().contains(field) => {
                failures.push(format!("{what}: error does not name {field}: {err}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_env_entry_must_have_exactly_one_source() {
    for text in [
        "name: x\nsource: {image: r}\nenv: [{name: A}]\n",
        "name: x\nsource: {image: r}\nenv: [{name: A, value: v, secret: {name: s, key: k}}]\n",
    ] {
        let result = ServerSpec::from_yaml(text);
        assert!(result.is_err(), "{text:?} loaded as {result:?}");
    }
}

#[test]
fn unknown_fields_are_rejected_in_json() {
    for (text, field) in [
        (
            r#"{"name": "x", "source": {"image": "r"}, "replica": 2}"#,
            "replica",
        ),
        (
            r#"{"name": "x", "source": {"image": "r"}, "health": {"intervall": "5s"}}"#,
            "intervall",
        ),
    ] {
        let err = ServerSpec::from_json(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn malformed_documents_are_invalid_not_panics() {
    for text in [
        "",
        "name: [",
        "- a\n- b\n",
        "name: x\n",
        "name: x\nsource: 5\n",
    ] {
        let err = ServerSpec::from_yaml(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{text:?}: {err}");
    }
    for text in ["", "{", "[]", r#"{"name": "x"}"#] {
        let err = ServerSpec::from_json(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{text:?}: {err}");
    }
    // Durations must be humantime strings.
    let err = ServerSpec::from_yaml("name: x\nsource: {image: r}\nhealth: {interval: soon}\n")
        .unwrap_err();
    assert!(err.to_string().contains("interval") || err.to_string().contains("soon"));
}

#[test]
fn yaml_round_trips() {
    for spec in [
        full_expected(),
        base(),
        ServerSpec::new("tiny", Source::Image("repo:1".into())),
        ServerSpec::from_yaml(
            "name: legacy\nsource: {command: {program: mcp, args: [a, b]}}\ntransport: {sse: {port: 9000}}\n",
        )
        .unwrap(),
    ] {
        let text = spec.to_yaml().unwrap();
        let back = ServerSpec::from_yaml(&text).unwrap();
        assert_eq!(back, spec, "round trip through:\n{text}");
        // And the written form is stable.
        assert_eq!(back.to_yaml().unwrap(), text);
    }
    // Durations are written in humantime form.
    let text = full_expected().to_yaml().unwrap();
    assert!(text.contains("5m"), "{text}");
    assert!(text.contains("20s"), "{text}");
}

#[test]
fn json_loads_the_same_shape() {
    let json = r#"{
        "name": "github",
        "source": {"image": "ghcr.io/example/github-mcp:1.4"},
        "transport": {"http": {"port": 8080, "path": "/mcp"}},
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "GITHUB_TOKEN", "secret": {"name": "github", "key": "token"}}
        ],
        "replicas": 2,
        "resources": {"memory": "256Mi", "cpu": "500m"},
        "health": {
            "liveness": {"tool": {"tool": "ping", "arguments": {"echo": "hi"}}},
            "readiness": {"tool": "search", "arguments": {"query": "mcp", "limit": 1}},
            "interval": "30s",
            "timeout": "5s",
            "failure_threshold": 5,
            "startup_timeout": "5m"
        },
        "update": {"check": true, "auto_reinstall": false},
        "labels": {"team": "platform", "example.com/tier": "gold"},
        "stop_grace_period": "20s"
    }"#;
    let spec = ServerSpec::from_json(json).unwrap();
    assert_eq!(spec, full_expected());
    assert_eq!(spec, ServerSpec::from_yaml(FULL_YAML).unwrap());
    // serde_json round trip too.
    let text = serde_json::to_string(&spec).unwrap();
    assert_eq!(ServerSpec::from_json(&text).unwrap(), spec);
    // Unit variants are plain strings.
    let stdio = ServerSpec::from_json(
        r#"{"name": "s", "source": {"command": {"program": "mcp"}}, "transport": "stdio"}"#,
    )
    .unwrap();
    assert_eq!(stdio.transport, Transport::Stdio);
}

// ----- workload hash -----------------------------------------------------------

#[test]
fn workload_hash_tracks_what_shapes_a_workload() {
    let spec = base();
    let hash = spec.workload_hash();
    assert_eq!(hash.len(), 16);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    assert_eq!(spec.clone().workload_hash(), hash, "stable");

    let changed: Vec<Row> = vec![
        ("image tag", |s| image(s, "ghcr.io/example/github-mcp:1.5")),
        ("image to command", |s| {
            s.source = Source::Command(Command {
                program: "mcp".into(),
                args: Vec::new(),
                working_dir: None,
            })
        }),
        ("env value", |s| {
            s.env[0].source = EnvSource::Value("debug".into())
        }),
        ("env name", |s| s.env[0].name = "LEVEL".into()),
        ("env secret reference", |s| {
            s.env[1].source = EnvSource::Secret(SecretRef::new("github", "other"))
        }),
        ("env added", |s| s.env.push(EnvEntry::plain("NEW", "1"))),
        ("env removed", |s| {
            s.env.pop();
        }),
        ("transport", |s| s.transport = Transport::Stdio),
        ("memory", |s| s.resources.memory = Some("512Mi".into())),
        ("labels", |s| {
            s.labels.insert("tier".into(), "gold".into());
        }),
    ];
    for (what, mutate) in changed {
        let mut other = base();
        mutate(&mut other);
        assert_ne!(other.workload_hash(), hash, "{what} must change the hash");
    }

    let unchanged: Vec<Row> = vec![
        ("replicas", |s| s.replicas = 7),
        ("replicas 0", |s| s.replicas = 0),
        ("update check", |s| s.update.check = false),
        ("auto reinstall", |s| s.update.auto_reinstall = false),
        ("health interval", |s| {
            s.health.interval = Duration::from_secs(5)
        }),
        ("readiness", |s| s.health.readiness = None),
    ];
    for (what, mutate) in unchanged {
        let mut other = base();
        mutate(&mut other);
        assert_eq!(
            other.workload_hash(),
            hash,
            "{what} must not change the hash"
        );
    }
}

#[test]
fn name_errors_say_what_is_wrong() {
    let reason = |name: &str| {
        let mut spec = base();
        spec.name = name.to_owned();
        let err = spec.validate(&Limits::default()).unwrap_err();
        assert!(err.names_field("name"));
        err.errors[0].reason.clone()
    };
    assert!(reason("").contains("empty"));
    assert!(reason(&"a".repeat(64)).contains("64 characters"));
    assert!(reason("-a").contains("start and end"));
    // A long non-ASCII name is blamed for its character, not a byte count.
    assert!(reason(&"é".repeat(40)).contains("'é'"));
    assert!(reason("GitHub").contains("'G'"));
}

// ----- loading: what is rejected, and where --------------------------------------

/// The reason of a load error, which must be `Invalid`.
fn load_reason(result: mcp_lifecycle::Result<ServerSpec>) -> String {
    match result {
        Ok(spec) => panic!("accepted as {spec:?}"),
        Err(mcp_lifecycle::Error::InvalidArgument { reason, .. }) => reason,
        Err(other) => panic!("not an invalid-argument error: {other:?}"),
    }
}

/// Checks that each document is rejected with a reason that starts with its
/// field path and contains each of `wanted`.
fn check_load_errors(
    load: fn(&str) -> mcp_lifecycle::Result<ServerSpec>,
    cases: &[(&str, &str, &[&str])],
) {
    let mut failures = Vec::new();
    for (text, field, wanted) in cases {
        let reason = match load(text) {
            Ok(spec) => {
                failures.push(format!("{text:?}: accepted as {spec:?}"));
                continue;
            }
            Err(mcp_lifecycle::Error::InvalidArgument { reason, .. }) => reason,
            Err(other) => {
                failures.push(format!("{text:?}: wrong error {other:?}"));
                continue;
            }
        };
        if !reason.starts_with(&format!("{field}: ")) {
            failures.push(format!("{text:?}: does not name {field}: {reason}"));
        }
        for w in *wanted {
            if !reason.contains(w) {
                failures.push(format!("{text:?}: {reason:?} does not say {w:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn yaml_scalars_that_are_not_strings_are_rejected_where_a_string_is_wanted() {
    let string = &["expected a string"][..];
    check_load_errors(
        ServerSpec::from_yaml,
        &[
            ("name: null\nsource: {image: r}\n", "name", string),
            ("name: ~\nsource: {image: r}\n", "name", string),
            ("name: true\nsource: {image: r}\n", "name", string),
            ("name: 42\nsource: {image: r}\n", "name", string),
            ("name: 1.5\nsource: {image: r}\n", "name", string),
            ("name: x\nsource: {image: 42}\n", "source.image", string),
            ("name: x\nsource: {image: null}\n", "source.image", string),
            (
                "name: x\nsource: {command: {program: null}}\n",
                "source.command.program",
                string,
            ),
            (
                "name: x\nsource: {command: {program: p, args: [a, 1]}}\n",
                "source.command.args[1]",
                string,
            ),
            (
                "name: x\nsource: {command: {program: p, args: [null]}}\n",
                "source.command.args[0]",
                string,
            ),
            (
                "name: x\nsource: {command: {program: p, working_dir: 7}}\n",
                "source.command.working_dir",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nenv: [{name: null, value: v}]\n",
                "env[0].name",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nenv: [{name: A, value: 42}]\n",
                "env[0].value",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nenv: [{name: A, value: b}, {name: B, value: true}]\n",
                "env[1].value",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nenv: [{name: A, value: null}]\n",
                "env[0].value",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nenv: [{name: A, secret: {name: null, key: k}}]\n",
                "env[0].secret.name",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nenv: [{name: A, secret: {name: s, key: 1}}]\n",
                "env[0].secret.key",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nlabels: {team: null}\n",
                "labels.team",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nlabels: {team: 1}\n",
                "labels.team",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nhealth: {readiness: {tool: 42}}\n",
                "health.readiness.tool",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nhealth: {liveness: {tool: {tool: true}}}\n",
                "health.liveness.tool.tool",
                string,
            ),
            (
                "name: x\nsource: {image: r}\ntransport: {http: {port: 80, path: null}}\n",
                "transport.http.path",
                string,
            ),
            (
                "name: x\nsource: {image: r}\ntransport: {sse: {port: 80, path: 1}}\n",
                "transport.sse.path",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nresources: {memory: 536870912}\n",
                "resources.memory",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nresources: {cpu: 2}\n",
                "resources.cpu",
                string,
            ),
        ],
    );
    // A key that is not a string is rejected too (a number key is named by
    // its number, a null one by its map); so is a key given twice.
    check_load_errors(
        ServerSpec::from_yaml,
        &[
            (
                "name: x\nsource: {image: r}\nlabels: {null: x}\n",
                "labels",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nlabels: {1: x}\n",
                "labels.1",
                string,
            ),
            (
                "name: x\nsource: {image: r}\nlabels: {team: a, team: b}\n",
                "labels",
                &["\"team\"", "more than once"],
            ),
        ],
    );
    check_load_errors(
        ServerSpec::from_json,
        &[(
            r#"{"name": "x", "source": {"image": "r"}, "labels": {"team": "a", "team": "b"}}"#,
            "labels",
            &["\"team\"", "more than once"],
        )],
    );
}

#[test]
fn quoted_yaml_scalars_stay_strings() {
    let spec = ServerSpec::from_yaml(
        r#"
name: "null"
source: {command: {program: 'true', args: ["1", 'null', "~"], working_dir: "7"}}
env: [{name: A, value: "42"}, {name: B, secret: {name: "null", key: '1'}}]
labels: {team: "1", "null": x}
health: {readiness: {tool: "42"}}
transport: {http: {port: 80, path: "null"}}
resources: {memory: "536870912", cpu: "2"}
"#,
    )
    .unwrap();
    assert_eq!(spec.name, "null");
    assert_eq!(
        spec.source,
        Source::Command(Command {
            program: "true".into(),
            args: vec!["1".into(), "null".into(), "~".into()],
            working_dir: Some("7".into()),
        })
    );
    assert_eq!(
        spec.env,
        [
            EnvEntry::plain("A", "42"),
            EnvEntry::secret("B", SecretRef::new("null", "1")),
        ]
    );
    assert_eq!(
        spec.labels,
        BTreeMap::from([
            ("team".to_owned(), "1".to_owned()),
            ("null".to_owned(), "x".to_owned()),
        ])
    );
    assert_eq!(spec.health.readiness.as_ref().unwrap().tool, "42");
    assert_eq!(
        spec.transport,
        Transport::Http {
            port: 80,
            path: "null".into()
        }
    );
    assert_eq!(spec.resources.memory.as_deref(), Some("536870912"));
    assert_eq!(spec.resources.cpu.as_deref(), Some("2"));
    // Written back, such strings are quoted, so they read back as strings.
    let text = spec.to_yaml().unwrap();
    assert_eq!(ServerSpec::from_yaml(&text).unwrap(), spec, "{text}");
    // An explicit null for an optional field is still "not set".
    let spec =
        ServerSpec::from_yaml("name: x\nsource: {command: {program: p, working_dir: null}}\n")
            .unwrap();
    assert_eq!(
        spec.source,
        Source::Command(Command {
            program: "p".into(),
            args: Vec::new(),
            working_dir: None,
        })
    );
}

#[test]
fn json_type_errors_name_the_field() {
    let string = &["expected a string"][..];
    check_load_errors(
        ServerSpec::from_json,
        &[
            (
                r#"{"name": null, "source": {"image": "r"}}"#,
                "name",
                string,
            ),
            (
                r#"{"name": "x", "source": {"image": 42}}"#,
                "source.image",
                string,
            ),
            (
                r#"{"name": "x", "source": {"image": "r"}, "env": [{"name": "A", "value": true}]}"#,
                "env[0].value",
                string,
            ),
            (
                r#"{"name": "x", "source": {"command": {"program": "p", "args": ["a", null]}}}"#,
                "source.command.args[1]",
                string,
            ),
            (
                r#"{"name": "x", "source": {"image": "r"}, "replicas": "2"}"#,
                "replicas",
                &[],
            ),
        ],
    );
}

#[test]
fn env_entry_errors_name_the_entry_and_say_what_is_wanted() {
    let head = "name: x\nsource: {image: r}\n";
    let cases: Vec<(String, &str, &[&str])> = vec![
        (
            format!("{head}env: [{{name: A, valeu: b}}]\n"),
            "env[0]",
            &["valeu", "name", "value", "secret"],
        ),
        (
            format!(
                "{head}env: [{{name: A, value: b}}, {{name: B, secert: {{name: s, key: k}}}}]\n"
            ),
            "env[1]",
            &["secert", "name", "value", "secret"],
        ),
        (
            format!("{head}env: [{{name: A, value: [a, b]}}]\n"),
            "env[0].value",
            &["sequence", "expected a string"],
        ),
        (
            format!("{head}env: [{{name: A, value: {{a: b}}}}]\n"),
            "env[0].value",
            &["map", "expected a string"],
        ),
        (
            format!("{head}env: [{{name: A}}]\n"),
            "env[0]",
            &["value", "secret"],
        ),
        (format!("{head}env: [{{value: v}}]\n"), "env[0]", &["name"]),
        (
            format!("{head}env: [{{name: A, value: v, secret: {{name: s, key: k}}}}]\n"),
            "env[0]",
            &["value", "secret"],
        ),
        (
            format!("{head}env: [{{name: A, secret: [s, k]}}]\n"),
            "env[0].secret",
            &["sequence"],
        ),
        (format!("{head}env: [A]\n"), "env[0]", &["map"]),
    ];
    let cases: Vec<(&str, &str, &[&str])> = cases
        .iter()
        .map(|(text, field, wanted)| (text.as_str(), *field, *wanted))
        .collect();
    check_load_errors(ServerSpec::from_yaml, &cases);
    check_load_errors(
        ServerSpec::from_json,
        &[(
            r#"{"name": "x", "source": {"image": "r"}, "env": [{"name": "A", "valeu": "b"}]}"#,
            "env[0]",
            &["valeu", "name", "value", "secret"],
        )],
    );
}

/// `{a: {a: … {a: 1}}}` nested `levels` deep, in YAML flow style (also JSON
/// with `"a"` for `a`).
fn nested_text(levels: usize, key: &str) -> String {
    format!(
        "{}1{}",
        format!("{{{key}: ").repeat(levels),
        "}".repeat(levels)
    )
}

#[test]
fn deeply_nested_arguments_are_rejected_at_the_arguments_field() {
    let deep = nested_text(200, "a");
    let over = nested_text(33, "a");
    let wanted = &["32 levels"][..];
    let yaml = |health: String| format!("name: x\nsource: {{image: r}}\nhealth: {health}\n");
    let cases = [
        (
            yaml(format!("{{readiness: {{tool: t, arguments: {deep}}}}}")),
            "health.readiness.arguments",
        ),
        (
            yaml(format!("{{readiness: {{tool: t, arguments: {over}}}}}")),
            "health.readiness.arguments",
        ),
        (
            yaml(format!(
                "{{readiness: {{tool: t, arguments: {{list: [{deep}]}}}}}}"
            )),
            "health.readiness.arguments",
        ),
        (
            yaml(format!(
                "{{liveness: {{tool: {{tool: t, arguments: {deep}}}}}}}"
            )),
            "health.liveness.tool.arguments",
        ),
    ];
    let cases: Vec<(&str, &str, &[&str])> = cases
        .iter()
        .map(|(text, field)| (text.as_str(), *field, wanted))
        .collect();
    check_load_errors(ServerSpec::from_yaml, &cases);

    let deep = nested_text(200, "\"a\"");
    let json = format!(
        r#"{{"name": "x", "source": {{"image": "r"}}, "health": {{"readiness": {{"tool": "t", "arguments": {deep}}}}}}}"#
    );
    check_load_errors(
        ServerSpec::from_json,
        &[(json.as_str(), "health.readiness.arguments", wanted)],
    );

    // 32 levels load, and are valid.
    let ok = nested_text(32, "a");
    let spec = ServerSpec::from_yaml(&yaml(format!(
        "{{readiness: {{tool: t, arguments: {ok}}}}}"
    )))
    .unwrap();
    assert_eq!(
        spec.health.readiness.as_ref().unwrap().arguments,
        nested(32)
    );
    spec.validate(&Limits::default()).unwrap();
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let yaml = "name: tiny\nsource: {image: repo:1}\n";
    let json = r#"{"name": "tiny", "source": {"image": "repo:1"}}"#;
    let expected = ServerSpec::new("tiny", Source::Image("repo:1".into()));
    assert_eq!(
        ServerSpec::from_yaml(&format!("\u{feff}{yaml}")).unwrap(),
        expected
    );
    assert_eq!(
        ServerSpec::from_json(&format!("\u{feff}{json}")).unwrap(),
        expected
    );
    assert_eq!(
        ServerSpec::from_yaml(&format!("\u{feff}{FULL_YAML}")).unwrap(),
        full_expected()
    );
    // Only one, and only at the start.
    load_reason(ServerSpec::from_json(&format!("\u{feff}\u{feff}{json}")));
}

/// The longest a reason that quotes a huge value may be.
const SHORT: usize = 300;

#[test]
fn errors_about_huge_values_quote_only_a_prefix() {
    let huge = "a".repeat(MB);
    let failures = std::cell::RefCell::new(Vec::new());
    // Short, with no run of more than 64 characters of the value; where the
    // value is quoted, its size is said.
    let check = |what: &str, message: String, quoted: Option<usize>| {
        let mut ok = message.len() <= SHORT && !message.contains(&"a".repeat(65));
        if let Some(bytes) = quoted {
            let prefix = "a".repeat(64);
            ok &= message.contains(&format!("\"{prefix}…\" ({bytes} bytes)"))
                || message.contains(&format!("`{prefix}…` ({bytes} bytes)"));
        }
        if !ok {
            let shown: String = message.chars().take(SHORT).collect();
            failures
                .borrow_mut()
                .push(format!("{what}: {} bytes: {shown}", message.len()));
        }
    };

    type Mutation = Box<dyn Fn(&mut ServerSpec, &str)>;
    let mutations: Vec<(&str, String, Mutation, bool)> = vec![
        ("image", format!("{huge}:x y"), Box::new(image), true),
        // Under the length limit, so that the key itself is quoted.
        (
            "env key",
            format!("{}-", "a".repeat(100_000)),
            Box::new(env_key),
            true,
        ),
        (
            "memory",
            huge.clone(),
            Box::new(|s, v| s.resources.memory = Some(v.into())),
            true,
        ),
        (
            "cpu",
            huge.clone(),
            Box::new(|s, v| s.resources.cpu = Some(v.into())),
            true,
        ),
        (
            "label key",
            huge.clone(),
            Box::new(|s, v| {
                s.labels.insert(v.into(), "x".into());
            }),
            false,
        ),
        (
            "label value",
            huge.clone(),
            Box::new(|s, v| {
                s.labels.insert("k".into(), v.into());
            }),
            false,
        ),
        (
            "server name",
            format!("{huge}_"),
            Box::new(|s, v| s.name = v.into()),
            true,
        ),
    ];
    for (what, value, mutate, quoted) in mutations {
        let mut spec = base();
        mutate(&mut spec, &value);
        match spec.validate(&Limits::default()) {
            Ok(()) => failures.borrow_mut().push(format!("{what}: accepted")),
            Err(err) => check(what, err.to_string(), quoted.then_some(value.len())),
        }
    }
    let head = "name: x\nsource: {image: r}\n";
    for (what, text) in [
        ("replicas", format!("{head}replicas: \"{huge}\"\n")),
        (
            "port",
            format!("{head}transport: {{http: {{port: {huge}}}}}\n"),
        ),
        ("interval", format!("{head}health: {{interval: {huge}}}\n")),
        ("transport kind", format!("{head}transport: {huge}\n")),
    ] {
        match ServerSpec::from_yaml(&text) {
            Ok(_) => failures.borrow_mut().push(format!("{what}: accepted")),
            Err(err) => check(what, err.to_string(), Some(MB)),
        }
    }
    let json = format!(r#"{{"name": "x", "source": {{"image": "r"}}, "{huge}": 1}}"#);
    match ServerSpec::from_json(&json) {
        Ok(_) => failures
            .borrow_mut()
            .push("unknown JSON key: accepted".into()),
        Err(err) => check("unknown JSON key", err.to_string(), Some(MB)),
    }
    let failures = failures.into_inner();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_quoted_prefix_ends_on_a_character_boundary() {
    // Two-byte characters: a byte-count cut at 64 would split one.
    let mut spec = base();
    image(&mut spec, &format!("{}:x y", "é".repeat(MB / 2)));
    let err = spec.validate(&Limits::default()).unwrap_err();
    let message = err.to_string();
    assert!(message.len() < SHORT, "{} bytes", message.len());
    assert!(message.contains(&"é".repeat(64)), "{message}");
    assert!(!message.contains(&"é".repeat(65)), "{message}");
    assert!(
        message.contains(&format!("({} bytes)", MB + 4)),
        "{message}"
    );
}
