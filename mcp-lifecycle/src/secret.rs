//! Secret values: a redacting newtype that never reaches Debug, Display,
//! logs, events or errors.
//!
//! A [`SecretValue`] is built only by a [`crate::SecretSource`] (or by a host
//! that already holds the value) and read only by a backend when it hands the
//! value to the runtime, through [`SecretValue::expose`]. It is zeroized on drop
//! (by `secrecy`). It deliberately implements neither `Serialize` nor `Display`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The text printed wherever a secret value would appear.
pub const REDACTED: &str = "[redacted]";

/// A resolved secret value. Formats as `[redacted]`.
#[derive(Clone)]
pub struct SecretValue(SecretString);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(SecretString::from(value.into()))
    }

    /// The plain value, for handing to the runtime. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
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
