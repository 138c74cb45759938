//! Log writers that redact every live secret value from what passes through
//! them, whatever the log filter lets through.
//!
//! [`RedactingWriter`] wraps any [`std::io::Write`]: it holds what it is given
//! until it is flushed or dropped, then writes it redacted. With feature
//! `tracing-subscriber` (on by default), [`RedactingMakeWriter`] wraps a
//! `tracing_subscriber::fmt::MakeWriter`, so each formatted event — the
//! library's own, and those of the libraries below it (the Docker client, the
//! HTTP client, forwarded from `log` by `tracing-log`) — is redacted as a
//! whole before it reaches the terminal or file.
//!
//! This file owns the writers; what is redacted is decided in `registry.rs`.

use std::fmt;
use std::io::{self, Write};

use zeroize::Zeroize;

use super::registry;

/// An [`io::Write`] that redacts every live secret value (see
/// [`redact`](super::redact)) from what is written through it.
///
/// Writes are held until [`flush`](Write::flush) or drop, then redacted and
/// written to the inner writer in one `write_all`, so a value split across
/// `write` calls is still caught; use one writer per record (as
/// [`RedactingMakeWriter`] does, one per event) or flush at record
/// boundaries. The held bytes are zeroized once written. While no secret
/// value is live, writes go straight through.
///
/// An error writing to the inner writer on drop is lost; call `flush` to
/// see it.
pub struct RedactingWriter<W: Write> {
    inner: W,
    held: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        RedactingWriter {
            inner,
            held: Vec::new(),
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes what is held, redacted, to the inner writer.
    fn emit(&mut self) -> io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let written = self.inner.write_all(&registry::redact_bytes(&self.held));
        self.held.zeroize();
        written
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.held.is_empty() && !registry::any_live() {
            return self.inner.write(buf);
        }
        self.held.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

impl<W: Write> fmt::Debug for RedactingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the held bytes: they may hold a value.
        f.debug_struct("RedactingWriter")
            .field("held_bytes", &self.held.len())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tracing-subscriber")]
pub use self::make_writer::{RedactingMakeWriter, redacting};

#[cfg(feature = "tracing-subscriber")]
mod make_writer {
    use tracing_subscriber::fmt::MakeWriter;

    use super::RedactingWriter;

    /// A [`MakeWriter`] whose writers redact every live secret value: give it
    /// to `tracing_subscriber::fmt().with_writer(…)` (or a fmt layer) in
    /// place of the writer it wraps. See [`redacting`].
    #[derive(Debug, Clone, Default)]
    pub struct RedactingMakeWriter<M> {
        inner: M,
    }

    impl<M> RedactingMakeWriter<M> {
        /// Wraps `inner` (e.g. `std::io::stderr`).
        pub fn new(inner: M) -> Self {
            RedactingMakeWriter { inner }
        }

        /// The wrapped `MakeWriter`.
        pub fn get_ref(&self) -> &M {
            &self.inner
        }
    }

    impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
        type Writer = RedactingWriter<M::Writer>;

        fn make_writer(&'a self) -> Self::Writer {
            RedactingWriter::new(self.inner.make_writer())
        }

        fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
            RedactingWriter::new(self.inner.make_writer_for(meta))
        }
    }

    /// Wraps a `MakeWriter` so that every event written through it has every
    /// live secret value redacted, in any escaped form.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// tracing_subscriber::fmt()
    ///     .with_writer(mcp_lifecycle::secret::redacting(std::io::stderr))
    ///     .try_init()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn redacting<M>(inner: M) -> RedactingMakeWriter<M>
    where
        M: for<'a> MakeWriter<'a>,
    {
        RedactingMakeWriter::new(inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::SecretValue;
    use crate::secret::REDACTED;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn a_value_split_across_writes_is_redacted() {
        let _value = SecretValue::new("writer-test-split-4b2d");
        let sink = Sink::default();
        let mut writer = RedactingWriter::new(sink.clone());
        for byte in b"token=writer-test-split-4b2d\n" {
            writer.write_all(&[*byte]).unwrap();
        }
        assert_eq!(sink.text(), "", "nothing is written before the record ends");
        drop(writer);
        assert_eq!(sink.text(), format!("token={REDACTED}\n"));
    }

    #[test]
    fn flush_writes_what_is_held() {
        let _value = SecretValue::new("writer-test-flush-81e0");
        let sink = Sink::default();
        let mut writer = RedactingWriter::new(sink.clone());
        write!(writer, "a writer-test-flush-81e0 b").unwrap();
        writer.flush().unwrap();
        assert_eq!(sink.text(), format!("a {REDACTED} b"));
        assert!(!format!("{writer:?}").contains("81e0"));
    }
}
