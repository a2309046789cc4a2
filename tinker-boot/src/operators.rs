//! Who the operators are: named operator tokens, so that each change made
//! through the operator API says who made it.
//!
//! The control plane's own operator token ([`crate::credentials::operator_token`],
//! written to `<data dir>/operator-token`) is the operator named
//! [`OperatorName::GENERATED`]. More operators come from a tokens file, one per
//! line, as a name and the SHA-256 of its token (the file holds no token, so
//! it may be read by whoever configures the control plane):
//!
//! ```text
//! # name   sha256 of the token (printf %s "$TOKEN" | sha256sum)
//! alice    sha256:2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90
//! bob      sha256:81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9
//! ```
//!
//! A presented token is hashed once and compared with every entry in constant
//! time, without stopping at the first match, so neither the answer's time nor
//! a log line tells anything about the tokens.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use tinker_core::Secret;

/// An operator's name: 1 to 64 letters, digits and `._@-`, so it reads safely
/// in a log line, an event and a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorName(String);

impl OperatorName {
    /// The name of the control plane's own operator token.
    pub const GENERATED: &'static str = "operator";

    /// The name, if it is one.
    pub fn new(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() || name.len() > 64 {
            return Err("a name is 1 to 64 characters");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        {
            return Err("a name holds only letters, digits and . _ @ -");
        }
        Ok(OperatorName(name.to_string()))
    }

    /// The control plane's own operator.
    pub fn generated() -> Self {
        OperatorName(Self::GENERATED.to_string())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OperatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a tokens file cannot be used. Never holds a token (the file holds none).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorTokensError {
    /// The file cannot be read.
    #[error("operator tokens file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `NAME sha256:HEX`.
    #[error("operator tokens file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The operators and their tokens' hashes.
#[derive(Clone, Default)]
pub struct OperatorTokens {
    entries: Vec<(OperatorName, [u8; 32])>,
}

impl std::fmt::Debug for OperatorTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(n, _)| n))
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `sha256:` and the lower-case hex of a token's SHA-256: the form a tokens
/// file takes (`printf %s "$TOKEN" | sha256sum` prints the same hex).
pub fn token_hash_text(token: &Secret) -> String {
    let hex: String = sha256(token.expose().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

impl OperatorTokens {
    /// No operators.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a tokens file (see the module's documentation).
    pub fn read(path: &Path) -> Result<Self, OperatorTokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| OperatorTokensError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Reads the text of a tokens file named `path` (for messages): blank
    /// lines and `#` comments are skipped; each other line is `NAME sha256:HEX`.
    /// A name or a hash given twice is refused, and so is the name of the
    /// generated token.
    pub fn parse(path: &Path, text: &str) -> Result<Self, OperatorTokensError> {
        let mut tokens = OperatorTokens::new();
        for (i, raw) in text.lines().enumerate() {
            let fail = |reason: String| OperatorTokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(hash), None) = (words.next(), words.next(), words.next()) else {
                return Err(fail("expected NAME sha256:HEX".into()));
            };
            let name = OperatorName::new(name).map_err(|r| fail(format!("name {name:?}: {r}")))?;
            if name.as_str() == OperatorName::GENERATED {
                return Err(fail(format!(
                    "the name {:?} is the control plane's own operator token; choose another",
                    OperatorName::GENERATED
                )));
            }
            let hash = parse_hash(hash).map_err(fail)?;
            tokens.add(name, hash).map_err(fail)?;
        }
        Ok(tokens)
    }

    fn add(&mut self, name: OperatorName, hash: [u8; 32]) -> Result<(), String> {
        if self.entries.iter().any(|(n, _)| *n == name) {
            return Err(format!("the name {name} is given twice"));
        }
        if self.entries.iter().any(|(_, h)| *h == hash) {
            return Err("this token's hash is already another operator's".into());
        }
        self.entries.push((name, hash));
        Ok(())
    }

    /// The same operators and `name`, whose token is `token` (the control
    /// plane adds its own operator token this way). A name or token already
    /// there is not added twice.
    pub fn with_token(mut self, name: OperatorName, token: &Secret) -> Self {
        let _ = self.add(name, sha256(token.expose().as_bytes()));
        self
    }

    /// These operators and then those of `more` (a name or token already
    /// here is not added again).
    pub fn extended(mut self, more: &OperatorTokens) -> Self {
        for (name, hash) in &more.entries {
            let _ = self.add(name.clone(), *hash);
        }
        self
    }

    /// The operators' names.
    pub fn names(&self) -> impl Iterator<Item = &OperatorName> {
        self.entries.iter().map(|(n, _)| n)
    }

    /// Whose token `presented` is, compared in constant time with every entry.
    pub fn who(&self, presented: &[u8]) -> Option<&OperatorName> {
        if presented.is_empty() {
            return None;
        }
        let hash = sha256(presented);
        let mut found = None;
        for (name, h) in &self.entries {
            // No early exit: every entry is compared whatever matched before.
            let hit: bool = h.ct_eq(&hash).into();
            if hit && found.is_none() {
                found = Some(name);
            }
        }
        found
    }
}

fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex = text
        .strip_prefix("sha256:")
        .ok_or_else(|| "the hash must start with sha256:".to_string())?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err("the hash must be sha256: and 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "the hash must be sha256: and 64 hex digits".to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[(&str, &str)]) -> String {
        let mut text = String::from("# operators\n\n");
        for (name, token) in lines {
            text.push_str(&format!(
                "{name} {}  # {name}'s laptop\n",
                token_hash_text(&Secret::new(*token))
            ));
        }
        text
    }

    #[test]
    fn each_token_names_its_operator() {
        let tokens = OperatorTokens::parse(
            Path::new("ops.txt"),
            &file(&[("alice", "alice-token"), ("bob", "bob-token")]),
        )
        .unwrap()
        .with_token(OperatorName::generated(), &Secret::new("generated"));
        let who = |t: &str| tokens.who(t.as_bytes()).map(|n| n.to_string());
        assert_eq!(who("alice-token").as_deref(), Some("alice"));
        assert_eq!(who("bob-token").as_deref(), Some("bob"));
        assert_eq!(who("generated").as_deref(), Some("operator"));
        assert_eq!(who("alice-token "), None);
        assert_eq!(who(""), None);
        // The hash, never the token, is what the file and Debug hold.
        assert!(!format!("{tokens:?}").contains("token"));
    }

    #[test]
    fn a_bad_line_names_the_file_the_line_and_the_reason() {
        let cases = [
            ("alice\n", "expected NAME sha256:HEX"),
            ("alice md5:abc\n", "must start with sha256:"),
            ("alice sha256:abc\n", "64 hex digits"),
            ("al ice sha256:00\n", "expected NAME sha256:HEX"),
            ("al/ice sha256:00\n", "only letters"),
            ("operator sha256:00\n", "own operator token"),
        ];
        for (line, reason) in cases {
            let text = format!("# first\n{line}");
            let e = OperatorTokens::parse(Path::new("/etc/tinker/ops"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("operator tokens file /etc/tinker/ops, line 2: "),
                "{e}"
            );
            assert!(e.contains(reason), "{line}: {e}");
        }
        let twice = file(&[("alice", "a"), ("alice", "b")]);
        let e = OperatorTokens::parse(Path::new("f"), &twice).unwrap_err();
        assert!(
            e.to_string()
                .contains("line 4: the name alice is given twice"),
            "{e}"
        );
        let same = file(&[("alice", "a"), ("bob", "a")]);
        let e = OperatorTokens::parse(Path::new("f"), &same).unwrap_err();
        assert!(e.to_string().contains("already another operator's"), "{e}");
    }
}
