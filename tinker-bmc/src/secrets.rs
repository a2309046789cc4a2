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
/// name upper-cased, non-alphanumerics as `_`), else `TINKER_BMC_PASSWORD`.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl EnvSecrets {
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

impl SecretSource for EnvSecrets {
    fn password(&self, name: &str) -> Result<Option<Secret>> {
        Ok(std::env::var(Self::variable(name))
            .or_else(|_| std::env::var("TINKER_BMC_PASSWORD"))
            .ok()
            .map(Secret::new))
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
}
