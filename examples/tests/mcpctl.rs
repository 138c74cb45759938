//! mcpctl end to end: mcpd runs as a real process (local backend, in-memory
//! state, mcpd itself allow-listed as the test MCP server) and every test
//! drives it through the real `mcpctl` binary, asserting what it prints —
//! tables, describe, JSON/YAML — and its exit codes and error texts.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN, MCPD, Mcpd, READER, spec_yaml, start_mcpd};
use serde_json::Value;

const MCPCTL: &str = env!("CARGO_BIN_EXE_mcpctl");

/// mcpctl with an environment of its own: no MCPCTL_* variables and a home
/// whose config directory is `home` (so a developer's config never leaks in).
fn bare(home: &Path) -> Command {
    let mut command = Command::new(MCPCTL);
    command
        .env_remove("MCPCTL_SERVER")
        .env_remove("MCPCTL_TOKEN")
        .env_remove("MCPCTL_CONFIG")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .stdin(Stdio::null());
    command
}

struct Ctl {
    home: tempfile::TempDir,
    server: String,
}

impl Ctl {
    fn new(d: &Mcpd) -> Self {
        Ctl {
            home: tempfile::tempdir().unwrap(),
            server: d.base.clone(),
        }
    }

    fn command(&self, token: &str, args: &[&str]) -> Command {
        let mut command = bare(self.home.path());
        command
            .args(["--server", &self.server, "--token", token])
            .args(args);
        command
    }

    fn run_as(&self, token: &str, args: &[&str]) -> Output {
        self.command(token, args).output().unwrap()
    }

    /// Runs as admin and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_as(ADMIN, args);
        assert!(
            out.status.success(),
            "mcpctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    /// The status of `name`, as `get servers NAME -o json` prints it.
    fn status(&self, name: &str) -> Value {
        let list = self.json(&["get", "servers", name]);
        list["servers"][0].clone()
    }
}

/// Fails with what a refused command printed.
fn assert_refused(out: &Output, status: u16, code: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert!(
        stderr.contains(&format!("{code}, HTTP {status}")),
        "expected {code}/{status}: {stderr}"
    );
    stderr
}

/// Waits until `check` holds, or fails after `within`.
fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cells of the table row whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"))
}

/// A running `mcpctl events --follow` and everything it has printed.
struct Follower {
    child: Child,
    seen: Arc<Mutex<String>>,
}

impl Follower {
    fn start(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut seen = sink.lock().unwrap();
                seen.push_str(&line);
                seen.push('\n');
            }
        });
        Follower { child, seen }
    }

    fn seen(&self) -> String {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_goes_through_its_lifecycle_with_mcpctl() {
    let d = start_mcpd(&[]);
    let ctl = Ctl::new(&d);
    let spec = ctl.home.path().join("echo.yaml");
    std::fs::write(&spec, spec_yaml("echo", MCPD)).unwrap();
    let spec = spec.to_str().unwrap();

    assert_eq!(ctl.ok(&["apply", "-f", spec]), "server/echo created\n");
    assert_eq!(ctl.ok(&["apply", "-f", spec]), "server/echo unchanged\n");

    // The follower prints the recent events (the apply) once it is
    // subscribed, so every later transition reaches it.
    let follower = Follower::start(ctl.command(READER, &["events", "--follow"]));
    wait_until(Duration::from_secs(30), "the follower", || {
        follower.seen().contains("applied")
    });

    let out = ctl.ok(&["start", "echo", "--wait", "--timeout", "60s"]);
    assert_eq!(out, "server/echo ready (1/1 instances)\n");

    // The table: one row, aligned under its header.
    let table = ctl.ok(&["get", "servers"]);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{table}");
    let echo = row(&table, "echo");
    assert_eq!(
        &echo[..6],
        ["echo", "running", "1/1", "0", "0", "0"],
        "{table}"
    );
    let echo_line = table.lines().find(|l| l.starts_with("echo")).unwrap();
    assert_eq!(header.find("PHASE"), echo_line.find("running"), "{table}");

    // JSON for scripts: the full status.
    let status = ctl.status("echo");
    assert_eq!(status["name"], "echo");
    assert_eq!(status["phase"], "running");
    assert_eq!(
        (status["desired"].as_u64(), status["ready"].as_u64()),
        (Some(1), Some(1))
    );
    let first = status["instances"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(status["instances"][0]["phase"], "ready");
    let yaml = ctl.ok(&["get", "servers", "echo", "-o", "yaml"]);
    let from_yaml: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(
        from_yaml["servers"][0]["instances"][0]["id"],
        first.as_str()
    );

    // describe: the fields, the instance with its attempt, and the events.
    let described = ctl.ok(&["describe", "server", "echo"]);
    assert_eq!(row(&described, "Name:"), ["Name:", "echo"], "{described}");
    assert_eq!(
        row(&described, "Phase:"),
        ["Phase:", "running"],
        "{described}"
    );
    assert!(
        described.contains("1 desired | 1 ready | 0 starting"),
        "{described}"
    );
    let instance = row(&described, first.as_str());
    assert_eq!(
        &instance[..3],
        [first.as_str(), "ready", "0"],
        "{described}"
    );
    for section in ["Update:", "Endpoints:", "Instances:", "Events:"] {
        assert!(described.contains(section), "{section}: {described}");
    }
    assert!(described.contains("instance_created"), "{described}");
    let described: Value =
        serde_json::from_str(&ctl.ok(&["describe", "server", "echo", "-o", "json"])).unwrap();
    assert_eq!(described["status"]["name"], "echo");
    assert!(described["endpoints"].is_array());

    // Scale to two, and see two ready (a watching `get` sees it too).
    let watcher = Follower::start(ctl.command(READER, &["get", "servers", "--watch"]));
    wait_until(Duration::from_secs(30), "the first table", || {
        watcher.seen().contains("1/1")
    });
    assert_eq!(
        ctl.ok(&["scale", "echo", "--replicas", "2"]),
        "server/echo scaled to 2 replicas\n"
    );
    wait_until(Duration::from_secs(60), "two ready instances", || {
        ctl.status("echo")["ready"] == 2
    });
    let table = ctl.ok(&["get", "servers"]);
    assert_eq!(row(&table, "echo")[2], "2/2", "{table}");
    wait_until(Duration::from_secs(30), "the watched change", || {
        watcher.seen().contains("2/2")
    });
    let watched = watcher.seen();
    assert!(watched.matches("NAME").count() >= 2, "{watched}");
    drop(watcher);
    let instances = ctl.ok(&["get", "instances"]);
    let ready_rows = instances
        .lines()
        .filter(|l| l.starts_with("echo") && l.split_whitespace().nth(2) == Some("ready"))
        .count();
    assert_eq!(ready_rows, 2, "{instances}");
    assert_eq!(row(&instances, "echo").len(), 8, "{instances}");

    // Logs: the test server says it serves on stdio.
    wait_until(Duration::from_secs(30), "the server's log line", || {
        ctl.ok(&["logs", "echo", "--instance", &first, "--tail", "50"])
            .contains("serving MCP on stdio")
    });
    let logs: Value = serde_json::from_str(&ctl.ok(&["logs", "echo", "-o", "json"])).unwrap();
    assert_eq!(logs["instances"].as_array().unwrap().len(), 2, "{logs}");
    let all = ctl.ok(&["logs", "echo"]);
    assert!(all.contains(&format!("[{first}] ")), "{all}");

    // The update-policy toggles.
    assert_eq!(
        ctl.ok(&[
            "set-update-policy",
            "echo",
            "--check",
            "off",
            "--auto-reinstall",
            "off"
        ]),
        "server/echo update policy: check off, auto-reinstall off\n"
    );

    // A forced stop keeps the spec.
    assert_eq!(
        ctl.ok(&["stop", "echo", "--force"]),
        "server/echo stopped (forced)\n"
    );
    let status = ctl.status("echo");
    assert_eq!(
        (status["phase"].as_str(), status["ready"].as_u64()),
        (Some("stopped"), Some(0))
    );
    let table = ctl.ok(&["get", "servers"]);
    assert_eq!(
        &row(&table, "echo")[..3],
        ["echo", "stopped", "0/0"],
        "{table}"
    );

    // Events: the recent ones as a table, and the transitions the follower saw.
    let events = ctl.ok(&["events", "echo"]);
    assert!(
        events.lines().next().unwrap().starts_with("AGE"),
        "{events}"
    );
    for kind in [
        "applied",
        "desired_changed",
        "instance_created",
        "phase_changed",
    ] {
        assert!(events.contains(kind), "{kind}: {events}");
    }
    wait_until(Duration::from_secs(30), "the followed transitions", || {
        let seen = follower.seen();
        [
            "desired_changed",
            "instance_created",
            "instance_phase_changed",
            "phase_changed",
            "instance_removed",
        ]
        .iter()
        .all(|k| seen.contains(k))
    });
    let seen = follower.seen();
    assert!(seen.contains(&first), "{seen}");

    // Delete: gone, and describing it is mcpd's 404.
    assert_eq!(ctl.ok(&["delete", "echo"]), "server/echo deleted\n");
    assert_eq!(ctl.ok(&["get", "servers"]), "No servers.\n");
    let out = ctl.run_as(ADMIN, &["describe", "server", "echo"]);
    let stderr = assert_refused(&out, 404, "not_found");
    assert!(stderr.contains("echo"), "{stderr}");
    wait_until(Duration::from_secs(30), "the followed delete", || {
        follower.seen().contains("deleted")
    });
}

#[test]
fn apply_takes_many_specs_from_stdin_files_and_directories() {
    let d = start_mcpd(&[]);
    let ctl = Ctl::new(&d);

    // Two YAML documents on stdin.
    let two = format!("{}---\n{}", spec_yaml("one", MCPD), spec_yaml("two", MCPD));
    let mut child = ctl
        .command(ADMIN, &["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(two.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "server/one created\nserver/two created\n"
    );

    // A directory: a JSON list and a YAML file; other files are ignored.
    let dir = ctl.home.path().join("specs");
    std::fs::create_dir(&dir).unwrap();
    let json = serde_json::json!([
        { "name": "three", "source": { "command": { "program": MCPD, "args": ["serve-mcp-test-server"] } } },
    ]);
    std::fs::write(dir.join("a.json"), json.to_string()).unwrap();
    std::fs::write(dir.join("b.yaml"), spec_yaml("four", MCPD)).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a spec").unwrap();
    assert_eq!(
        ctl.ok(&["apply", "-f", dir.to_str().unwrap()]),
        "server/three created\nserver/four created\n"
    );
    let names: Vec<String> = ctl.json(&["get", "servers"])["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for name in ["one", "two", "three", "four"] {
        assert!(names.iter().any(|n| n == name), "{name}: {names:?}");
    }

    // One refused spec (a program outside the allow-list) does not stop
    // the others, and the command fails with mcpd's error naming the field.
    let mixed = ctl.home.path().join("mixed.yaml");
    std::fs::write(
        &mixed,
        format!(
            "{}---\n{}",
            spec_yaml("rogue", "/bin/sh"),
            spec_yaml("five", MCPD)
        ),
    )
    .unwrap();
    let out = ctl.run_as(ADMIN, &["apply", "-f", mixed.to_str().unwrap()]);
    let stderr = assert_refused(&out, 422, "invalid");
    assert!(stderr.contains("field source.command.program"), "{stderr}");
    assert!(stderr.contains("mixed.yaml (spec 1)"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "server/five created\n"
    );
}

#[test]
fn tokens_are_checked_and_roles_enforced() {
    let d = start_mcpd(&[]);
    let ctl = Ctl::new(&d);

    let out = ctl.run_as("not-a-token", &["get", "servers"]);
    let stderr = assert_refused(&out, 401, "unauthorized");
    assert!(stderr.starts_with("Error from server: "), "{stderr}");
    let out = bare(ctl.home.path())
        .args(["--server", &d.base, "get", "servers"])
        .output()
        .unwrap();
    assert_refused(&out, 401, "unauthorized");

    let spec = ctl.home.path().join("echo.yaml");
    std::fs::write(&spec, spec_yaml("echo", MCPD)).unwrap();
    let spec = spec.to_str().unwrap();
    assert_refused(
        &ctl.run_as(READER, &["apply", "-f", spec]),
        403,
        "forbidden",
    );
    ctl.ok(&["apply", "-f", spec]);

    // Reading is allowed, changing is not (and changes nothing).
    let before = ctl.status("echo")["desired"].clone();
    let table = ctl.command(READER, &["get", "servers"]).output().unwrap();
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("echo"));
    for change in [
        &["start", "echo"][..],
        &["stop", "echo", "--force"],
        &["scale", "echo", "--replicas", "2"],
        &[
            "set-update-policy",
            "echo",
            "--check",
            "on",
            "--auto-reinstall",
            "off",
        ],
        &["check-updates", "echo"],
        &["delete", "echo"],
    ] {
        let out = ctl.run_as(READER, change);
        assert_refused(&out, 403, "forbidden");
    }
    assert_eq!(ctl.status("echo")["desired"], before);
    assert_eq!(ctl.json(&["get", "servers"])["servers"][0]["name"], "echo");
}

#[test]
fn flags_beat_environment_beats_config_file() {
    let d = start_mcpd(&[]);
    let home = tempfile::tempdir().unwrap();
    let good_server = d.base.as_str();
    // Nothing listens on port 1: a request sent there fails to connect.
    let bad_server = "127.0.0.1:1";
    let config = |name: &str, server: &str, token: &str| {
        let path = home.path().join(name);
        std::fs::write(&path, format!("server: {server}\ntoken: {token}\n")).unwrap();
        path
    };
    let outcome = |mut command: Command| {
        let out = command.args(["get", "servers"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            "ok".to_owned()
        } else if stderr.contains("unauthorized, HTTP 401") {
            "401".to_owned()
        } else if stderr.contains("cannot reach mcpd at http://127.0.0.1:1") {
            "unreachable".to_owned()
        } else {
            panic!("unexpected: {stderr}")
        }
    };

    // The default config file, under XDG_CONFIG_HOME.
    let default_dir = home.path().join(".config").join("mcpctl");
    std::fs::create_dir_all(&default_dir).unwrap();
    std::fs::write(
        default_dir.join("config.yaml"),
        format!("server: {good_server}\ntoken: {ADMIN}\n"),
    )
    .unwrap();
    assert_eq!(outcome(bare(home.path())), "ok");

    // A named config file wins over the default one; the flag over the variable.
    let bad_file = config("bad.yaml", bad_server, "wrong");
    let good_file = config("good.yaml", good_server, ADMIN);
    let mut c = bare(home.path());
    c.env("MCPCTL_CONFIG", &bad_file);
    assert_eq!(outcome(c), "unreachable");
    let mut c = bare(home.path());
    c.env("MCPCTL_CONFIG", &bad_file)
        .arg("--config")
        .arg(&good_file);
    assert_eq!(outcome(c), "ok");

    // The environment wins over the file.
    let mut c = bare(home.path());
    c.env("MCPCTL_CONFIG", &good_file)
        .env("MCPCTL_TOKEN", "wrong");
    assert_eq!(outcome(c), "401");
    let mut c = bare(home.path());
    c.env("MCPCTL_CONFIG", &bad_file)
        .env("MCPCTL_SERVER", good_server)
        .env("MCPCTL_TOKEN", ADMIN);
    assert_eq!(outcome(c), "ok");

    // Flags win over the environment.
    let mut c = bare(home.path());
    c.env("MCPCTL_SERVER", bad_server)
        .env("MCPCTL_TOKEN", "wrong")
        .args(["--server", good_server, "--token", ADMIN]);
    assert_eq!(outcome(c), "ok");
    let mut c = bare(home.path());
    c.env("MCPCTL_SERVER", good_server)
        .env("MCPCTL_TOKEN", ADMIN)
        .args(["--token", "wrong"]);
    assert_eq!(outcome(c), "401");

    // A named config file that does not exist is an error, not a default.
    let mut c = bare(home.path());
    c.arg("--config").arg(home.path().join("absent.yaml"));
    let out = c.args(["get", "servers"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.yaml"));
}

#[test]
fn a_failing_server_shows_its_retries_and_a_wait_that_times_out_fails() {
    let d = start_mcpd(&[]);
    let ctl = Ctl::new(&d);
    let spec = ctl.home.path().join("crash.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: crash\nsource:\n  command:\n    program: \"{MCPD}\"\n    \
             args: [serve-mcp-test-server, --exit-immediately-code, \"3\"]\n"
        ),
    )
    .unwrap();
    ctl.ok(&["apply", "-f", spec.to_str().unwrap()]);

    // The wait ends with mcpd's 504 and the server's last failure.
    let out = ctl.run_as(ADMIN, &["start", "crash", "--wait", "--timeout", "2s"]);
    let stderr = assert_refused(&out, 504, "timeout");
    assert!(stderr.contains("crash"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // describe shows the failed instance with its attempt and reason.
    let mut described = String::new();
    wait_until(Duration::from_secs(60), "a failed instance", || {
        described = ctl.ok(&["describe", "server", "crash"]);
        described
            .lines()
            .any(|l| l.trim_start().starts_with("crash-") && l.contains(" failed "))
    });
    let line = described
        .lines()
        .find(|l| l.trim_start().starts_with("crash-") && l.contains(" failed "))
        .unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    let attempt: u32 = cells[2].parse().unwrap();
    assert!(attempt >= 1, "{described}");
    assert!(
        !line.ends_with("<none>"),
        "a failed instance has a reason: {described}"
    );
    assert!(described.contains("failed"), "{described}");
}
