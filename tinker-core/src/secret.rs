//! [`Secret`]: a password or token that never prints and is wiped when dropped.
//!
//! BMC passwords, the worker secret, worker tokens and operator tokens are all
//! held in this one type, so "does this struct leak a secret in `Debug`?" has one
//! answer: `Debug` shows `Secret(***)`, there is no `Display`, and the bytes are
//! read only through [`Secret::expose`] at the one place they go on the wire.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret string: redacted `Debug`, no `Display`, zeroed on drop, compared in
/// constant time.
///
/// ```
/// use tinker_core::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret(***)");
/// assert_eq!(s.expose(), "hunter2");
/// assert_eq!(s, Secret::from("hunter2"));
/// ```
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret itself, for the wire or a key derivation; never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (an unset password, an empty file).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with untrusted input (a presented token) in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.0.as_bytes())
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_and_compares_by_value() {
        let s = Secret::new("p4ss");
        assert!(!format!("{s:?}").contains("p4ss"));
        assert!(s.matches(b"p4ss"));
        assert!(!s.matches(b"p4s"));
        assert_ne!(s, Secret::new("other"));
    }
}
