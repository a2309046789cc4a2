//! Reading a hub action's environment contract: required keys, octal modes,
//! numbers and yes/no flags, each failing with the key and what was expected.

use std::collections::BTreeMap;
use tinker_core::{Error, Result};

/// A required, non-empty key.
pub(super) fn need<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    env.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Unsupported {
            target: "native action".into(),
            operation: format!("running without {key} (required by this action's contract)"),
        })
}

/// An octal mode such as `0644` (or `0o644`), `default` when absent.
pub(super) fn octal(env: &BTreeMap<String, String>, key: &str, default: u32) -> Result<u32> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => u32::from_str_radix(v.trim().trim_start_matches("0o"), 8).map_err(|_| {
            Error::Unsupported {
                target: "native action".into(),
                operation: format!("{key}={v:?} (expected an octal mode such as 0644)"),
            }
        }),
    }
}

/// A decimal number, `default` when absent.
pub(super) fn number(env: &BTreeMap<String, String>, key: &str, default: u32) -> Result<u32> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| Error::Unsupported {
            target: "native action".into(),
            operation: format!("{key}={v:?} (expected a number)"),
        }),
    }
}

/// Whether a yes/no key is set to yes (`accepted` lists the spellings the hub
/// action takes for yes; anything else, or absent, is no).
pub(super) fn flag(env: &BTreeMap<String, String>, key: &str, accepted: &[&str]) -> bool {
    env.get(key).is_some_and(|v| accepted.contains(&v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn contract_values_parse_or_name_the_key() {
        let e = env(&[
            ("MODE", "0o600"),
            ("UID", "1000"),
            ("BAD", "x"),
            ("EMPTY", ""),
        ]);
        assert_eq!(octal(&e, "MODE", 0o644).unwrap(), 0o600);
        assert_eq!(octal(&e, "DIRMODE", 0o755).unwrap(), 0o755);
        assert_eq!(number(&e, "UID", 0).unwrap(), 1000);
        let err = number(&e, "BAD", 0).unwrap_err().to_string();
        assert!(err.contains("BAD=\"x\""), "{err}");
        let err = need(&e, "EMPTY").unwrap_err().to_string();
        assert!(err.contains("without EMPTY"), "{err}");
        assert!(!flag(&e, "CHROOT", &["y", "true"]));
    }
}
