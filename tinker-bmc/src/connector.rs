//! Building controllers for the engine: a [`PowerConnector`] maps a Hardware's
//! `spec.bmcRef` to a [`BmcEndpoint`] (registered by hand or read from a Rufio
//! `Machine`) and its password (from a [`SecretSource`]), and builds the
//! controller once.

use crate::endpoint::BmcEndpoint;
use crate::policy::RetryPolicy;
use crate::rufio;
use crate::secrets::SecretSource;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::model::{Document, Hardware};
use tinker_core::{Error, PowerConnector, PowerController, Result};

#[derive(Debug, Clone)]
struct MachineEntry {
    endpoint: BmcEndpoint,
    secret: String,
}

/// The [`PowerConnector`] for real BMCs: maps a Hardware's `spec.bmcRef` name to a
/// BMC endpoint and secret, builds each controller once and hands out the same one
/// after, so its session limit holds across the engine's calls.
#[derive(Debug)]
pub struct Connector {
    machines: HashMap<String, MachineEntry>,
    secrets: Arc<dyn SecretSource>,
    policy: RetryPolicy,
    clock: SharedClock,
    built: Mutex<HashMap<String, Arc<dyn PowerController>>>,
}

impl Connector {
    /// An empty connector, timing calls on the system clock.
    pub fn new(secrets: Arc<dyn SecretSource>, policy: RetryPolicy) -> Self {
        Connector {
            machines: HashMap::new(),
            secrets,
            policy,
            clock: SystemClock::shared(),
            built: Mutex::default(),
        }
    }

    /// Times the controllers it builds on `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Registers a BMC under a machine name, with the name of its secret.
    pub fn add(&mut self, machine: &str, endpoint: BmcEndpoint, secret: &str) {
        self.machines.insert(
            machine.to_string(),
            MachineEntry {
                endpoint,
                secret: secret.to_string(),
            },
        );
    }

    /// Registers the Rufio `Machine` objects among `docs`
    /// (`bmc.tinkerbell.org/v1alpha1`). Returns how many.
    pub fn add_rufio_machines(&mut self, docs: &[Document]) -> Result<usize> {
        let mut n = 0;
        for d in docs {
            let Document::Unsupported {
                api_version,
                kind,
                value,
            } = d
            else {
                continue;
            };
            if kind != "Machine" || !api_version.starts_with("bmc.tinkerbell.org/") {
                continue;
            }
            let m = rufio::read(value)?;
            self.add(&m.name, m.endpoint, &m.secret);
            n += 1;
        }
        Ok(n)
    }

    /// Sets the user name of a registered machine's BMC.
    pub fn set_user(&mut self, machine: &str, user: &str) {
        if let Some(m) = self.machines.get_mut(machine) {
            m.endpoint.set_user(user);
        }
    }

    /// The endpoint registered for a machine.
    pub fn endpoint(&self, machine: &str) -> Option<&BmcEndpoint> {
        self.machines.get(machine).map(|m| &m.endpoint)
    }

    fn built(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn PowerController>>> {
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PowerConnector for Connector {
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>> {
        let Some(bmc_ref) = &hardware.spec.bmc_ref else {
            return Ok(None);
        };
        if let Some(c) = self.built().get(&bmc_ref.name) {
            return Ok(Some(c.clone()));
        }
        let entry = self
            .machines
            .get(&bmc_ref.name)
            .ok_or_else(|| Error::NotFound {
                key: format!(
                    "BMC Machine {:?} (spec.bmcRef of Hardware {})",
                    bmc_ref.name, hardware.metadata.name
                ),
            })?;
        let password = self
            .secrets
            .password(&entry.secret)?
            .ok_or_else(|| Error::NotFound {
                key: format!("secret {:?} for BMC {}", entry.secret, entry.endpoint.url()),
            })?;
        let controller =
            entry
                .endpoint
                .build_with_clock(password, self.policy.clone(), self.clock.clone())?;
        Ok(Some(
            self.built()
                .entry(bmc_ref.name.clone())
                .or_insert(controller)
                .clone(),
        ))
    }
}

/// A connector over controllers made beforehand, by Hardware name: for tests and
/// simulations (a rack of [`MockBmc`](crate::MockBmc)s).
#[derive(Debug, Default)]
pub struct StaticConnector(Mutex<HashMap<String, Arc<dyn PowerController>>>);

impl StaticConnector {
    /// An empty connector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the Hardware named `hardware` this controller.
    pub fn insert(&self, hardware: &str, controller: Arc<dyn PowerController>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hardware.to_string(), controller);
    }
}

#[async_trait]
impl PowerConnector for StaticConnector {
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hardware.metadata.name)
            .cloned())
    }
}

#[cfg(all(test, feature = "redfish"))]
mod tests {
    use super::*;
    use crate::secrets::StaticSecrets;

    #[test]
    fn registers_rufio_machines_and_their_users() {
        let yaml = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: node1, namespace: tink}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {name: bmc-creds, namespace: tink}\n    insecureTLS: true\n    providerOptions:\n      redfish: {port: 8443, systemName: S1}\n";
        let docs = tinker_core::model::parse_documents("m.yaml", yaml).unwrap();
        let mut c = Connector::new(Arc::new(StaticSecrets::default()), RetryPolicy::fast());
        assert_eq!(c.add_rufio_machines(&docs).unwrap(), 1);
        assert_eq!(c.machines["node1"].secret, "tink/bmc-creds");
        c.set_user("node1", "root");
        let Some(BmcEndpoint::Redfish(e)) = c.endpoint("node1") else {
            panic!("{:?}", c.endpoint("node1"))
        };
        assert_eq!((e.user.as_str(), e.port), ("root", 8443));
        assert_eq!(e.system.as_deref(), Some("S1"));
        assert_eq!(e.verification, crate::TlsVerification::Insecure);
    }
}
