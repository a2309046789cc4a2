//! Where BMC passwords come from: a [`SecretSource`]. Never from a URL, a command
//! line or a log line; always held in a [`Secret`].

use std::collections::HashMap;
use tinker_core::{Result, Secret};

/// Where passwords come from.
pub trait SecretSource: Send + Sync + std::fmt::Debug + 'static {
    /// The password stored under `name` (a Kubernetes-style `namespace/name`, or
    /// whatever the source uses), or `None`.
    fn password(&self, name: &str) -> Result<Option<Secret>>;
}

/// Passwords from the environment: `TINKER_BMC_PASSWORD_<NAME>` (the secret's
/// name upper-cased, non-alphanumerics as `_`). A secret without its variable
/// is missing (and the connector reports which), unless the operator asked for
/// one shared password with [`EnvSecrets::with_shared_fallback`]: then
/// `TINKER_BMC_PASSWORD` stands in for every secret without its own variable.
/// Read on every call, so a changed variable is a rotated password.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets {
    shared_fallback: bool,
}

impl EnvSecrets {
    /// Each secret from its own variable only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also `TINKER_BMC_PASSWORD` for every secret without its own variable:
    /// one password for every BMC, as a small lab may have. Opt-in, because a
    /// typo in a secret's name would otherwise send the shared password to that
    /// BMC without a word.
    pub fn with_shared_fallback() -> Self {
        EnvSecrets {
            shared_fallback: true,
        }
    }

    /// The variable that holds the secret `name`.
    fn variable(name: &str) -> String {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("TINKER_BMC_PASSWORD_{key}")
    }
}

impl EnvSecrets {
    /// The password of `name`, read from an environment `env`.
    fn lookup(&self, name: &str, env: impl Fn(&str) -> Option<String>) -> Option<Secret> {
        let password = match env(&Self::variable(name)) {
            Some(p) => Some(p),
            None if self.shared_fallback => env("TINKER_BMC_PASSWORD"),
            None => None,
        };
        password.map(Secret::new)
    }
}

impl SecretSource for EnvSecrets {
    fn password(&self, name: &str) -> Result<Option<Secret>> {
        Ok(self.lookup(name, |v| std::env::var(v).ok()))
    }
}

/// Passwords held in memory, by name. Its `Debug` shows the names; each
/// [`Secret`] prints `***`.
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets(pub HashMap<String, Secret>);

impl SecretSource for StaticSecrets {
    fn password(&self, name: &str) -> Result<Option<Secret>> {
        Ok(self.0.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_variables_and_never_print() {
        assert_eq!(
            EnvSecrets::variable("tink/bmc-creds"),
            "TINKER_BMC_PASSWORD_TINK_BMC_CREDS"
        );
        let s = StaticSecrets(HashMap::from([("a".into(), Secret::new("pw-123"))]));
        assert!(!format!("{s:?}").contains("pw-123"));
        assert_eq!(s.password("a").unwrap().unwrap().expose(), "pw-123");
        assert!(s.password("b").unwrap().is_none());
    }

    #[test]
    fn the_shared_password_stands_in_only_when_asked_for() {
        let env = |v: &str| match v {
            "TINKER_BMC_PASSWORD_LAB_NODE1" => Some("own".to_string()),
            "TINKER_BMC_PASSWORD" => Some("shared".to_string()),
            _ => None,
        };
        let read = |e: EnvSecrets, name: &str| e.lookup(name, env).map(|s| s.expose().to_string());
        assert_eq!(read(EnvSecrets::new(), "lab/node1").as_deref(), Some("own"));
        assert_eq!(read(EnvSecrets::new(), "lab/typo"), None);
        let shared = EnvSecrets::with_shared_fallback();
        assert_eq!(read(shared, "lab/node1").as_deref(), Some("own"));
        assert_eq!(read(shared, "lab/typo").as_deref(), Some("shared"));
    }
}
