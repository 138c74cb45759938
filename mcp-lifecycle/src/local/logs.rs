//! The bounded log ring each local instance keeps, and the pump that fills it
//! from a child's output pipe.
//!
//! This module owns [`LogRing`] (the last N lines of one instance, kept
//! across restarts in place) and [`pump`] (a task that splits a pipe into
//! lines and appends them). It must not spawn or signal processes, know about
//! instance state or events, or hold more than its capacity: every line is cut
//! at [`MAX_LINE_BYTES`], so a process that never prints a newline cannot grow
//! the ring without bound.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Longest line kept; longer lines are split into several.
pub(super) const MAX_LINE_BYTES: usize = 16 * 1024;

/// The pump's read buffer. Small, because every instance keeps one for its
/// whole life and most servers print little (tokio's default, 8 KiB, was an
/// eighth of the host's memory per instance); a longer line is assembled
/// across reads.
const PUMP_BUFFER_BYTES: usize = 1024;

/// The last `capacity` lines an instance printed, oldest first.
#[derive(Debug)]
pub(super) struct LogRing {
    capacity: usize,
    lines: Mutex<VecDeque<String>>,
}

impl LogRing {
    /// An empty ring keeping at most `capacity` lines (0 keeps nothing).
    /// It grows as lines arrive: a quiet instance costs no line slots.
    pub(super) fn new(capacity: usize) -> Self {
        LogRing {
            capacity,
            lines: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a line, dropping the oldest when full.
    pub(super) fn push(&self, line: String) {
        if self.capacity == 0 {
            return;
        }
        let mut lines = self.lock();
        while lines.len() >= self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `tail` lines, oldest first.
    pub(super) fn tail(&self, tail: usize) -> Vec<String> {
        let lines = self.lock();
        let skip = lines.len().saturating_sub(tail);
        lines.iter().skip(skip).cloned().collect()
    }
}

/// Spawns a task that reads `reader` to its end and appends each line (without
/// its line ending, invalid UTF-8 replaced) to `ring`. The task ends at EOF or
/// on a read error; the handle lets the caller wait for the last lines.
pub(super) fn pump<R>(reader: R, ring: std::sync::Arc<LogRing>) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(
        async move {
            let mut reader = BufReader::with_capacity(PUMP_BUFFER_BYTES, reader);
            let mut line: Vec<u8> = Vec::new();
            loop {
                let buf = match reader.fill_buf().await {
                    Ok(buf) => buf,
                    Err(e) => {
                        tracing::debug!(error = %e, "reading process output failed; log pump stops");
                        break;
                    }
                };
                if buf.is_empty() {
                    break;
                }
                let newline = buf.iter().position(|&b| b == b'\n');
                let end = newline.unwrap_or(buf.len());
                let room = MAX_LINE_BYTES.saturating_sub(line.len());
                let n = end.min(room);
                line.extend_from_slice(&buf[..n]);
                let consumed = if n < end {
                    // The line is at its limit: keep what we have as one line.
                    ring.push(finish(&mut line));
                    n
                } else if newline.is_some() {
                    ring.push(finish(&mut line));
                    n + 1
                } else {
                    n
                };
                reader.consume(consumed);
            }
            if !line.is_empty() {
                ring.push(finish(&mut line));
            }
        }
        .in_current_span(),
    )
}

/// Takes the buffered bytes as one line, dropping a trailing `\r`.
fn finish(line: &mut Vec<u8>) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines() {
        let ring = LogRing::new(3);
        for i in 0..10 {
            ring.push(format!("line {i}"));
        }
        assert_eq!(ring.tail(100), vec!["line 7", "line 8", "line 9"]);
        assert_eq!(ring.tail(1), vec!["line 9"]);
        assert!(ring.tail(0).is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let ring = LogRing::new(0);
        ring.push("x".into());
        assert!(ring.tail(10).is_empty());
    }

    #[tokio::test]
    async fn pump_splits_lines_and_long_lines() {
        let ring = std::sync::Arc::new(LogRing::new(100));
        let mut input = b"one\r\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 5));
        input.extend_from_slice(b"\nlast");
        let handle = pump(std::io::Cursor::new(input), ring.clone());
        handle.await.unwrap();
        let lines = ring.tail(100);
        assert_eq!(
            lines.len(),
            5,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        assert_eq!(lines[2].len(), MAX_LINE_BYTES);
        assert_eq!(lines[3], "xxxxx");
        assert_eq!(lines[4], "last");
    }
}
