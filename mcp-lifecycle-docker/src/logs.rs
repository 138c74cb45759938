//! The last lines a container wrote, from the engine's log endpoint.
//!
//! This module owns reading the tail of a container's log: stderr only for
//! stdio servers (their stdout is MCP traffic), stdout and stderr otherwise.
//! It must not follow the log or keep anything.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use mcp_lifecycle::{Error, Result};

use crate::client::{engine_error, is_not_found};

/// The last `tail` lines of `container`'s output.
pub(crate) async fn tail(
    docker: &Docker,
    container: &str,
    tail: usize,
    include_stdout: bool,
    what: &str,
) -> Result<Vec<String>> {
    if tail == 0 {
        return Ok(Vec::new());
    }
    let options = LogsOptions {
        follow: false,
        stdout: include_stdout,
        stderr: true,
        tail: tail.to_string(),
        ..LogsOptions::default()
    };
    let mut stream = docker.logs(container, Some(options));
    let mut text: Vec<u8> = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdErr { message })
            | Ok(LogOutput::StdOut { message })
            | Ok(LogOutput::Console { message }) => text.extend_from_slice(&message),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) if is_not_found(&e) => return Err(Error::not_found(what.to_owned())),
            Err(e) => return Err(engine_error(format!("reading the logs of {what}"), e)),
        }
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    let skip = lines.len().saturating_sub(tail);
    Ok(lines.into_iter().skip(skip).collect())
}
