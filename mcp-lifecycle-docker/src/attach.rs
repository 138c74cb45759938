//! The byte stream of a stdio instance: an attach to the container's stdin,
//! stdout and stderr, demultiplexed so the MCP session reads stdout frames
//! only.
//!
//! This module owns the attach, the pump task that copies stdout into an
//! in-memory pipe and sends stderr lines to the log, and the rule that one
//! attach per container is live (a new `connect` ends the previous pump, so
//! the old session sees end-of-file). It must not write anything to the
//! container's stdout pipe except the container's own stdout bytes, nor log
//! stdout (it carries the host's MCP traffic).

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptionsBuilder;
use futures::StreamExt;
use mcp_lifecycle::ports::StdioStream;
use mcp_lifecycle::{InstanceId, Result};
use tokio::io::AsyncWriteExt;
use tokio::task::AbortHandle;

use crate::client::{engine_error, is_not_found};

/// Bytes of stdout buffered for the session before the pump waits.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Longest stderr line logged as one record; longer lines are split.
const MAX_LOG_LINE: usize = 8 * 1024;

/// The demultiplexed output of an attach, as bollard hands it over.
type AttachOutput = std::pin::Pin<
    Box<dyn futures::Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The live pump of each attached container, by container id.
#[derive(Default)]
pub(crate) struct Attachments {
    pumps: Mutex<HashMap<String, AbortHandle>>,
}

impl Attachments {
    /// Attaches to `container` (stream on, stdin/stdout/stderr, no replayed
    /// logs) and returns the session's ends. Ends the previous attach of the
    /// same container, if any.
    pub(crate) async fn attach(
        &self,
        docker: &Docker,
        container: &str,
        server: &str,
        instance: &InstanceId,
    ) -> Result<StdioStream> {
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = docker
            .attach_container(container, Some(options))
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    mcp_lifecycle::Error::not_found(format!("instance {instance}"))
                } else {
                    engine_error(format!("attaching to the stdio of instance {instance}"), e)
                }
            })?;
        let (session_end, pump_end) = tokio::io::duplex(PIPE_CAPACITY);
        let pump = tokio::spawn(pump(
            attached.output,
            pump_end,
            server.to_owned(),
            instance.clone(),
        ));
        if let Some(previous) = self
            .lock()
            .insert(container.to_owned(), pump.abort_handle())
        {
            tracing::debug!(server, instance = %instance, "replacing the previous stdio attach");
            previous.abort();
        }
        Ok(StdioStream {
            reader: Box::pin(session_end),
            writer: attached.input,
        })
    }

    /// Ends the attach of `container`, if any (it was removed).
    pub(crate) fn detach(&self, container: &str) {
        if let Some(pump) = self.lock().remove(container) {
            pump.abort();
        }
    }

    /// Ends every attach (the orchestrator is going away).
    pub(crate) fn detach_all(&self) {
        for (_, pump) in self.lock().drain() {
            pump.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.pumps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Copies stdout into the session's pipe and logs stderr lines, until the
/// container's output ends, the session hangs up, or the pump is aborted.
async fn pump(
    mut output: AttachOutput,
    mut stdout: tokio::io::DuplexStream,
    server: String,
    instance: InstanceId,
) {
    let mut stderr_line: Vec<u8> = Vec::new();
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                if stdout.write_all(&message).await.is_err() {
                    tracing::debug!(server = %server, instance = %instance, "stdio session closed; ending attach");
                    return;
                }
            }
            Ok(LogOutput::StdErr { message }) => {
                stderr_line.extend_from_slice(&message);
                log_complete_lines(&mut stderr_line, &server, &instance);
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(error) => {
                tracing::debug!(server = %server, instance = %instance, %error, "stdio attach failed");
                break;
            }
        }
    }
    if !stderr_line.is_empty() {
        log_line(&stderr_line, &server, &instance);
    }
    tracing::debug!(server = %server, instance = %instance, "container output ended");
    let _ = stdout.shutdown().await;
}

/// Logs every complete line in `buf` and keeps the incomplete rest.
fn log_complete_lines(buf: &mut Vec<u8>, server: &str, instance: &InstanceId) {
    while let Some(end) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        log_line(&line[..line.len() - 1], server, instance);
    }
    if buf.len() > MAX_LOG_LINE {
        let line: Vec<u8> = std::mem::take(buf);
        log_line(&line, server, instance);
    }
}

fn log_line(line: &[u8], server: &str, instance: &InstanceId) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if !text.is_empty() {
        tracing::debug!(target: "mcp_lifecycle_docker::stderr", server, instance = %instance, "{text}");
    }
}
