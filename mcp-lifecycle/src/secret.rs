//! Secret values: a redacting newtype that never reaches Debug, Display,
//! logs, events or errors — and log writers that keep the values out of what
//! other libraries log.
//!
//! A [`SecretValue`] is built only by a [`crate::SecretSource`] (or by a host
//! that already holds the value) and read only by a backend when it hands the
//! value to the runtime, through [`SecretValue::expose`]. It is zeroized on drop
//! (by `secrecy`). It deliberately implements neither `Serialize` nor `Display`.
//!
//! The library never logs a value, but the clients below it do: at `debug`
//! and `trace`, the Docker client logs the bodies it sends (a container's
//! environment) and receives (an inspect). So every live value is also
//! registered process-wide, and [`redact`], [`RedactingWriter`] and (feature
//! `tracing-subscriber`) [`redacting`] remove it, in every escaped form it
//! takes in log text, from whatever a host writes through them. A value stays
//! registered while any clone of it lives; the controller keeps the values an
//! instance was started with for as long as it tracks the instance.
//!
//! This file owns [`SecretValue`]; `secret/registry.rs` the registry and
//! [`redact`], `secret/forms.rs` the escaped forms, `secret/writer.rs` the
//! writers.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

mod forms;
mod registry;
mod writer;

pub use registry::{SHORT_SECRET_LEN, redact, redact_bytes};
pub use writer::RedactingWriter;
#[cfg(feature = "tracing-subscriber")]
pub use writer::{RedactingMakeWriter, redacting};

/// The text printed wherever a secret value would appear.
pub const REDACTED: &str = "[redacted]";

/// A resolved secret value. Formats as `[redacted]`.
///
/// Creating one registers the value for log redaction (see the module docs);
/// clones share that registration, which ends when the last clone drops.
#[derive(Clone)]
pub struct SecretValue(Arc<Held>);

/// The value and whether it is registered, shared by every clone.
struct Held {
    value: SecretString,
    registered: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.registered {
            registry::deregister(self.value.expose_secret());
        }
    }
}

impl SecretValue {
    /// Wraps a value and registers it for log redaction.
    pub fn new(value: impl Into<String>) -> Self {
        let value = SecretString::from(value.into());
        let registered = registry::register(value.expose_secret());
        SecretValue(Arc::new(Held { value, registered }))
    }

    /// The plain value, for handing to the runtime. Never log it.
    pub fn expose(&self) -> &str {
        self.0.value.expose_secret()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        // Not constant-time: secrets are compared only to detect rotation, never to authenticate.
        self.expose() == other.expose()
    }
}

impl Eq for SecretValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretValue::new("canary-1b7e-do-not-print");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(
            format!("{:#?}", vec![s.clone()]).matches("canary").count(),
            0
        );
        assert_eq!(s.expose(), "canary-1b7e-do-not-print");
    }
}
