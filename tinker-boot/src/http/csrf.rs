//! Cross-site request forgery defence for the operator API's browser sessions.
//!
//! A browser sends the session cookie with any request to this origin, also one
//! that another site's page makes it send (a form posted cross-site). So every
//! state-changing request (anything but `GET` and `HEAD`) that a session cookie
//! authorizes must also carry the session's CSRF token in the
//! `X-CSRF-Token` header. The pages read the token from `GET /api/v1/session`,
//! which another site's script cannot read (no CORS), and a header cannot be
//! set by a cross-site form at all. Requests with the operator's token as an
//! `Authorization: Bearer` header need no CSRF token: a browser never adds
//! that header on its own.
//!
//! The token is a keyed hash of the session id under a key drawn at start, so
//! no table is kept: a session has exactly one token, unknown without the
//! session id (an `HttpOnly` cookie) and the key.

use sha2::Digest;
use tinker_core::Secret;

/// The request header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Derives and checks CSRF tokens of sessions.
#[derive(Clone)]
pub(super) struct CsrfKey {
    /// `None` when the system had no randomness: then no session may change
    /// anything (bearer requests still may).
    key: Option<Secret>,
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrfKey").finish_non_exhaustive()
    }
}

impl CsrfKey {
    /// A key drawn from the system's randomness.
    pub(super) fn random() -> Self {
        let mut bytes = [0u8; 32];
        let key = getrandom::fill(&mut bytes).ok().map(|()| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Secret::new(hex)
        });
        CsrfKey { key }
    }

    /// The CSRF token of the session `session_id`.
    pub(super) fn token(&self, session_id: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut h = sha2::Sha256::new();
        h.update(b"tinker operator csrf v1\0");
        h.update(key.expose().as_bytes());
        h.update(b"\0");
        h.update(session_id.as_bytes());
        Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether `given` is the CSRF token of `session_id` (compared in constant
    /// time).
    pub(super) fn matches(&self, session_id: &str, given: &str) -> bool {
        self.token(session_id)
            .is_some_and(|t| Secret::new(t).matches(given.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::CsrfKey;

    #[test]
    fn a_token_belongs_to_one_session_and_one_key() {
        let key = CsrfKey::random();
        let token = key.token("session-a").unwrap();
        assert_eq!(token.len(), 64);
        assert!(key.matches("session-a", &token));
        assert!(!key.matches("session-b", &token));
        assert!(!key.matches("session-a", ""));
        assert!(!key.matches("session-a", &token[..63]));
        // Another process (another key) does not take it.
        assert!(!CsrfKey::random().matches("session-a", &token));
    }
}
