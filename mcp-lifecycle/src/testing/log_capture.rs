//! [`LogCapture`]: a `tracing_subscriber` writer that keeps everything written
//! through it in memory, so a test (a secret canary, say) can search what a
//! subscriber printed.
//!
//! This file owns only the capture; what is searched for is the test's.

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Everything written through it, shared by clones. Use it as a subscriber's
/// writer, directly or inside [`crate::secret::redacting`].
///
/// ```
/// use mcp_lifecycle::testing::LogCapture;
///
/// let capture = LogCapture::new();
/// let subscriber = tracing_subscriber::fmt().with_writer(capture.clone()).finish();
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
/// assert!(capture.text().contains("hello"));
/// ```
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

impl LogCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// One writer handed out by [`LogCapture`].
#[derive(Debug)]
pub struct LogCaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogCaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogCaptureWriter(self.0.clone())
    }
}
