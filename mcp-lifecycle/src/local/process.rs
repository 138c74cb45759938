//! Spawning one local instance as its own process group, and signalling that
//! group.
//!
//! This module owns the OS side of the local backend: building the
//! `tokio::process::Command` from an [`InstanceSpec`] (program, arguments,
//! working directory, environment, pipes, a free loopback port for HTTP and
//! SSE servers), starting it as the leader of a new process group, and sending
//! signals to the whole group with `killpg`. It must not keep instance state,
//! emit events, wait for exits or log environment values (they may be
//! secrets): the orchestrator decides when to signal and records what happens.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::ports::{InstanceSpec, StdioStream};
use crate::spec::{Command, Transport};

use super::BACKEND;
use super::logs::{LogRing, pump};

/// The placeholder in a command's arguments replaced by the instance's port.
pub(super) const PORT_PLACEHOLDER: &str = "{port}";

/// The process group of one run: its id is the leader's pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcessGroup(Pid);

impl ProcessGroup {
    /// The group id (equal to the leader's pid).
    pub(super) fn id(self) -> u32 {
        // Pids are positive; a group is only built from a successful spawn.
        u32::try_from(self.0.as_raw()).unwrap_or(0)
    }

    /// Sends `signal` to every process in the group. `Ok(false)` when the
    /// group no longer exists (everyone in it has exited).
    pub(super) fn signal(self, signal: Signal) -> Result<bool> {
        match killpg(self.0, signal) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(Error::backend(
                BACKEND,
                format!("sending {signal} to process group {}", self.0),
                e,
            )),
        }
    }

    /// SIGKILLs the group, ignoring every error: for cleanup paths (drop,
    /// after the leader exited) where there is nobody to report to.
    pub(super) fn kill_quietly(self) {
        if let Err(e) = self.signal(Signal::SIGKILL) {
            tracing::warn!(pgid = self.id(), error = %e, "could not kill process group");
        }
    }
}

/// A freshly spawned run: the child to wait on, its group, the stdio stream
/// to hand out (stdio transport), its port (HTTP/SSE), and the log pumps.
pub(super) struct Spawned {
    /// The group leader; the caller must wait on it (to reap it).
    pub(super) child: Child,
    /// The leader's process group.
    pub(super) group: ProcessGroup,
    /// stdin/stdout for a stdio instance, not yet handed out.
    pub(super) stdio: Option<StdioStream>,
    /// The loopback port an HTTP/SSE instance was told to listen on.
    pub(super) port: Option<u16>,
    /// The tasks copying stdout/stderr into the log ring.
    pub(super) pumps: Vec<JoinHandle<()>>,
}

/// Starts `command` for `spec` as the leader of a new process group.
///
/// stdio transport: stdin and stdout are pipes (MCP frames), stderr goes to
/// `logs`. HTTP/SSE: a free loopback port is chosen and passed as `MCP_PORT`
/// and `PORT` and in place of `{port}` in the arguments; stdout and stderr go
/// to `logs`, stdin is closed. The host's environment is inherited, then the
/// spec's variables are set (the port variables last, so they win).
pub(super) fn spawn(
    spec: &InstanceSpec,
    command: &Command,
    logs: &Arc<LogRing>,
) -> Result<Spawned> {
    let port = match &spec.transport {
        Transport::Stdio => None,
        Transport::Http { .. } | Transport::Sse { .. } => {
            Some(free_loopback_port().map_err(|e| {
                Error::backend(
                    BACKEND,
                    format!("choosing a loopback port for instance {}", spec.id),
                    e,
                )
            })?)
        }
    };

    let mut cmd = tokio::process::Command::new(&command.program);
    match port {
        Some(port) => {
            let port_text = port.to_string();
            cmd.args(
                command
                    .args
                    .iter()
                    .map(|a| a.replace(PORT_PLACEHOLDER, &port_text)),
            );
        }
        None => {
            cmd.args(&command.args);
        }
    }
    if let Some(dir) = &command.working_dir {
        cmd.current_dir(dir);
    }
    for (key, value) in &spec.env {
        cmd.env(key, value.expose());
    }
    if let Some(port) = port {
        cmd.env("MCP_PORT", port.to_string());
        cmd.env("PORT", port.to_string());
    }
    let stdio_transport = port.is_none();
    cmd.stdin(if stdio_transport {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);

    let mut child = cmd.spawn().map_err(|e| spawn_error(spec, command, e))?;
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("starting instance {}", spec.id),
                "the spawned process has no pid",
            )
        })?;
    let group = ProcessGroup(Pid::from_raw(pid));

    let mut pumps = Vec::with_capacity(2);
    if let Some(stderr) = child.stderr.take() {
        pumps.push(pump(stderr, logs.clone()));
    }
    let mut stdio = None;
    if stdio_transport {
        if let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) {
            stdio = Some(StdioStream {
                reader: Box::pin(stdout),
                writer: Box::pin(stdin),
            });
        }
    } else if let Some(stdout) = child.stdout.take() {
        pumps.push(pump(stdout, logs.clone()));
    }

    Ok(Spawned {
        child,
        group,
        stdio,
        port,
        pumps,
    })
}

fn spawn_error(spec: &InstanceSpec, command: &Command, e: io::Error) -> Error {
    let doing = format!(
        "starting program {:?} for instance {}",
        command.program, spec.id
    );
    match e.kind() {
        io::ErrorKind::NotFound => Error::not_found(format!(
            "program {:?} for instance {} (is it installed and on PATH, and does the working \
             directory exist?)",
            command.program, spec.id
        )),
        io::ErrorKind::PermissionDenied => Error::invalid(
            format!("command of instance {}", spec.id),
            format!("{doing}: permission denied (is it executable?)"),
        ),
        _ => Error::backend(BACKEND, doing, e),
    }
}

/// A loopback TCP port that was free a moment ago: bind port 0, read the
/// port the kernel chose, close the listener.
pub(super) fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// An exit status as the port reports it: the exit code when the process
/// exited on its own, and words for the reason.
pub(super) fn describe_exit(status: ExitStatus) -> (Option<i32>, String) {
    if let Some(code) = status.code() {
        return (Some(code), format!("exited with code {code}"));
    }
    match status.signal() {
        Some(raw) => {
            let name = Signal::try_from(raw)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| format!("signal {raw}"));
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            (None, format!("killed by {name}{core}"))
        }
        None => (None, format!("ended with status {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals_are_described() {
        let (code, reason) = describe_exit(ExitStatus::from_raw(7 << 8));
        assert_eq!(code, Some(7));
        assert_eq!(reason, "exited with code 7");
        let (code, reason) = describe_exit(ExitStatus::from_raw(9));
        assert_eq!(code, None);
        assert_eq!(reason, "killed by SIGKILL");
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_loopback_port().unwrap(), 0);
    }
}
