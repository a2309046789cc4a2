//! Building controllers for the engine: a [`PowerConnector`] maps a Hardware's
//! `spec.bmcRef` to a [`BmcEndpoint`] (registered by hand or read from a Rufio
//! `Machine`) and its password (from a [`SecretSource`]), and builds the
//! controller once per endpoint and password.
//!
//! A `bmcRef` is local to its Hardware's namespace, as in Kubernetes: Machines
//! are found by namespace and name, so two namespaces that both have a Machine
//! `node1` never drive each other's server. A missing secret is an error (the
//! [`SecretSource`] decides whether a shared password stands in for it, and only
//! when the operator said so: [`EnvSecrets::with_shared_fallback`](crate::EnvSecrets::with_shared_fallback)).
//! The password is read on every `connect`, and a controller built with another
//! password (or for another endpoint) is replaced, so a rotated password is
//! used from the next call on.
//!
//! Machines without a BMC are woken by Wake-on-LAN, chosen by the annotation
//! [`POWER_ANNOTATION`]` = wake-on-lan` on the Hardware (no Machine needed) or by
//! a Machine whose `preferredOrder` names `wol`. The packet goes to the
//! Hardware's first MAC, on the interface given by
//! [`Connector::with_wake_on_lan`]; a connector without one refuses to wake.

use crate::endpoint::BmcEndpoint;
use crate::policy::RetryPolicy;
use crate::rufio;
use crate::secrets::SecretSource;
use crate::wol::{WOL_PORT, WolEndpoint};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::model::{Document, Hardware};
use tinker_core::{Error, PowerConnector, PowerController, Result, Secret};

#[derive(Debug, Clone)]
struct MachineEntry {
    endpoint: BmcEndpoint,
    secret: String,
}

/// A controller built, with what it was built from: handed out again only
/// while both are still what the registry and the secret source say.
#[derive(Debug)]
struct Built {
    endpoint: BmcEndpoint,
    password: Secret,
    controller: Arc<dyn PowerController>,
}

/// The Hardware annotation that chooses how a machine is powered without a
/// Machine: `tinker.dev/power: wake-on-lan`.
pub const POWER_ANNOTATION: &str = "tinker.dev/power";

/// The value of [`POWER_ANNOTATION`] that chooses Wake-on-LAN.
pub const WAKE_ON_LAN: &str = "wake-on-lan";

/// The key of a Machine: `namespace/name` (a namespace holds no `/`).
fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The [`PowerConnector`] for real BMCs: maps a Hardware's `spec.bmcRef` (a
/// Machine in the Hardware's namespace) to a BMC endpoint and secret, builds
/// each controller once and hands out the same one after (while its endpoint
/// and password stay the same), so its session limit holds across the engine's
/// calls.
#[derive(Debug)]
pub struct Connector {
    machines: HashMap<String, MachineEntry>,
    secrets: Arc<dyn SecretSource>,
    policy: RetryPolicy,
    clock: SharedClock,
    built: Mutex<HashMap<String, Built>>,
    wol_interface: Option<String>,
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
            wol_interface: None,
        }
    }

    /// Wakes machines that ask for Wake-on-LAN with a broadcast on `interface`
    /// (the provisioning interface), and on no other.
    pub fn with_wake_on_lan(mut self, interface: &str) -> Self {
        self.wol_interface = Some(interface.to_string());
        self
    }

    /// The Wake-on-LAN controller for `hardware`, sent to `port`.
    fn wake_on_lan(&self, hardware: &Hardware, port: u16) -> Result<Arc<dyn PowerController>> {
        let name = format!(
            "Hardware {}/{}",
            hardware.metadata.namespace(),
            hardware.metadata.name
        );
        let interface = self
            .wol_interface
            .as_deref()
            .ok_or_else(|| Error::Unsupported {
                target: name.clone(),
                operation: "Wake-on-LAN without a provisioning interface (the connector was not \
                        given one: Connector::with_wake_on_lan)"
                    .into(),
            })?;
        let mac = *hardware.macs().first().ok_or_else(|| Error::Unsupported {
            target: name,
            operation: "Wake-on-LAN without a MAC (give it an interface with dhcp.mac)".into(),
        })?;
        Ok(Arc::new(
            WolEndpoint::new(mac, interface)
                .with_port(port)
                .controller(),
        ))
    }

    /// Times the controllers it builds on `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Registers a BMC as the Machine `namespace/name`, with the name of its
    /// secret.
    pub fn add(&mut self, namespace: &str, name: &str, endpoint: BmcEndpoint, secret: &str) {
        self.machines.insert(
            key(namespace, name),
            MachineEntry {
                endpoint,
                secret: secret.to_string(),
            },
        );
    }

    /// Registers the Rufio `Machine` objects among `docs`
    /// (`bmc.tinkerbell.org/v1alpha1`). Returns how many. A Machine whose
    /// provider Tinker does not speak (Intel AMT, ...) is an
    /// [`Error::Unsupported`] naming it.
    pub fn add_rufio_machines(&mut self, docs: &[Document]) -> Result<usize> {
        let mut n = 0;
        for d in docs {
            let value = match d {
                Document::Object(tinker_core::model::Object::Machine(m)) => {
                    serde_norway::to_value(m).map_err(|e| Error::backend("yaml", e))?
                }
                Document::Unsupported {
                    api_version,
                    kind,
                    value,
                } if kind == "Machine" && api_version.starts_with("bmc.tinkerbell.org/") => {
                    value.clone()
                }
                _ => continue,
            };
            let m = rufio::read(&value)?;
            self.add(&m.namespace, &m.name, m.endpoint, &m.secret);
            n += 1;
        }
        Ok(n)
    }

    /// Sets the user name of the Machine `namespace/name`'s BMC.
    pub fn set_user(&mut self, namespace: &str, name: &str, user: &str) {
        if let Some(m) = self.machines.get_mut(&key(namespace, name)) {
            m.endpoint.set_user(user);
        }
    }

    /// Sets the user name of every registered BMC (Rufio keeps it beside the
    /// password, which [`SecretSource`] does not read).
    pub fn set_user_everywhere(&mut self, user: &str) {
        for m in self.machines.values_mut() {
            m.endpoint.set_user(user);
        }
    }

    /// The endpoint registered for the Machine `namespace/name`.
    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<&BmcEndpoint> {
        self.machines
            .get(&key(namespace, name))
            .map(|m| &m.endpoint)
    }

    fn built(&self) -> std::sync::MutexGuard<'_, HashMap<String, Built>> {
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PowerConnector for Connector {
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>> {
        let annotation = hardware
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POWER_ANNOTATION));
        if annotation.is_some_and(|v| v == WAKE_ON_LAN) {
            return self.wake_on_lan(hardware, WOL_PORT).map(Some);
        }
        let Some(bmc_ref) = &hardware.spec.bmc_ref else {
            return Ok(None);
        };
        let namespace = hardware.metadata.namespace();
        let machine = key(namespace, &bmc_ref.name);
        let entry = self.machines.get(&machine).ok_or_else(|| Error::NotFound {
            key: format!(
                "BMC Machine {machine} (spec.bmcRef of Hardware {namespace}/{})",
                hardware.metadata.name
            ),
        })?;
        if let BmcEndpoint::WakeOnLan { port } = entry.endpoint {
            // No BMC, so no password to read.
            return self.wake_on_lan(hardware, port).map(Some);
        }
        let password = self
            .secrets
            .password(&entry.secret)?
            .ok_or_else(|| Error::NotFound {
                key: format!(
                    "secret {:?} of BMC Machine {machine} ({})",
                    entry.secret,
                    entry.endpoint.url()
                ),
            })?;
        if let Some(b) = self.built().get(&machine)
            && b.endpoint == entry.endpoint
            && b.password == password
        {
            return Ok(Some(b.controller.clone()));
        }
        let controller = entry.endpoint.build_with_clock(
            password.clone(),
            self.policy.clone(),
            self.clock.clone(),
        )?;
        let mut built = self.built();
        // Another caller may have built one for the same password meanwhile:
        // keep that one, so the session limit stays one per BMC.
        let b = built.entry(machine).or_insert_with(|| Built {
            endpoint: entry.endpoint.clone(),
            password: password.clone(),
            controller: controller.clone(),
        });
        if b.endpoint != entry.endpoint || b.password != password {
            tracing::info!(bmc = %entry.endpoint.url(), "BMC endpoint or password changed: new controller");
            *b = Built {
                endpoint: entry.endpoint.clone(),
                password,
                controller,
            };
        }
        Ok(Some(b.controller.clone()))
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

#[cfg(all(test, feature = "redfish", feature = "ipmi"))]
mod tests {
    use super::*;
    use crate::secrets::StaticSecrets;

    #[test]
    fn registers_rufio_machines_and_their_users() {
        let yaml = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: node1, namespace: tink}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {name: bmc-creds, namespace: tink}\n    insecureTLS: true\n    providerOptions:\n      redfish: {port: 8443, systemName: S1}\n";
        let docs = tinker_core::model::parse_documents("m.yaml", yaml).unwrap();
        let mut c = Connector::new(Arc::new(StaticSecrets::default()), RetryPolicy::fast());
        assert_eq!(c.add_rufio_machines(&docs).unwrap(), 1);
        assert_eq!(c.machines["tink/node1"].secret, "tink/bmc-creds");
        c.set_user("tink", "node1", "root");
        assert!(c.endpoint("default", "node1").is_none());
        let Some(BmcEndpoint::Redfish(e)) = c.endpoint("tink", "node1") else {
            panic!("{:?}", c.endpoint("tink", "node1"))
        };
        assert_eq!((e.user.as_str(), e.port), ("root", 8443));
        assert_eq!(e.system.as_deref(), Some("S1"));
        assert_eq!(e.verification, crate::TlsVerification::Insecure);
    }

    /// Passwords that can change, as a rotated secret does.
    #[derive(Debug, Default)]
    struct Rotating(Mutex<HashMap<String, Secret>>);

    impl SecretSource for Rotating {
        fn password(&self, name: &str) -> Result<Option<Secret>> {
            Ok(self.0.lock().unwrap().get(name).cloned())
        }
    }

    fn hardware(namespace: &str, machine: &str) -> Hardware {
        let yaml = format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: hw-{namespace}, namespace: {namespace}}}\nspec:\n  bmcRef: {{apiGroup: bmc.tinkerbell.org, kind: Machine, name: {machine}}}\n"
        );
        match tinker_core::model::parse_documents("hw.yaml", &yaml)
            .unwrap()
            .remove(0)
        {
            Document::Object(tinker_core::model::Object::Hardware(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    fn ipmi(host: &str) -> BmcEndpoint {
        BmcEndpoint::parse(&format!("ipmi://admin@{host}")).unwrap()
    }

    #[tokio::test]
    async fn machines_are_found_by_namespace_and_name() {
        let secrets = Arc::new(Rotating::default());
        for ns in ["team-a", "team-b"] {
            secrets
                .0
                .lock()
                .unwrap()
                .insert(format!("{ns}/creds"), Secret::new("pw"));
        }
        let mut c = Connector::new(secrets, RetryPolicy::fast());
        c.add("team-a", "node1", ipmi("10.0.0.1"), "team-a/creds");
        c.add("team-b", "node1", ipmi("10.0.0.2"), "team-b/creds");
        let a = c
            .connect(&hardware("team-a", "node1"))
            .await
            .unwrap()
            .unwrap();
        let b = c
            .connect(&hardware("team-b", "node1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.target(), "ipmi://10.0.0.1:623");
        assert_eq!(b.target(), "ipmi://10.0.0.2:623");
        // A namespace without that Machine finds none, not another's.
        let err = c.connect(&hardware("team-c", "node1")).await.err().unwrap();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_missing_secret_is_an_error_and_a_rotated_one_a_new_controller() {
        let secrets = Arc::new(Rotating::default());
        let mut c = Connector::new(secrets.clone(), RetryPolicy::fast());
        c.add("lab", "node1", ipmi("10.0.0.1"), "lab/creds");
        let hw = hardware("lab", "node1");
        let err = c.connect(&hw).await.err().unwrap();
        assert!(
            matches!(&err, Error::NotFound { key } if key.contains("lab/creds")),
            "{err:?}"
        );
        let set = |pw: &str| {
            secrets
                .0
                .lock()
                .unwrap()
                .insert("lab/creds".into(), Secret::new(pw));
        };
        set("old");
        let first = c.connect(&hw).await.unwrap().unwrap();
        let again = c.connect(&hw).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "rebuilt without a change");
        set("new");
        let rotated = c.connect(&hw).await.unwrap().unwrap();
        assert!(
            !Arc::ptr_eq(&first, &rotated),
            "the old password is still used"
        );
        assert!(Arc::ptr_eq(
            &rotated,
            &c.connect(&hw).await.unwrap().unwrap()
        ));
        // A changed endpoint (a new user) is a new controller too.
        c.set_user("lab", "node1", "root");
        let renamed = c.connect(&hw).await.unwrap().unwrap();
        assert!(!Arc::ptr_eq(&rotated, &renamed));
    }

    fn nuc(annotation: &str, machine: Option<&str>) -> Hardware {
        let bmc_ref = machine
            .map(|m| {
                format!("  bmcRef: {{apiGroup: bmc.tinkerbell.org, kind: Machine, name: {m}}}\n")
            })
            .unwrap_or_default();
        let yaml = format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: nuc1, namespace: lab, annotations: {{{annotation}}}}}\nspec:\n{bmc_ref}  interfaces:\n  - dhcp: {{mac: '52:54:00:aa:bb:01', ip: {{address: 10.0.0.21}}}}\n"
        );
        match tinker_core::model::parse_documents("hw.yaml", &yaml)
            .unwrap()
            .remove(0)
        {
            Document::Object(tinker_core::model::Object::Hardware(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn wake_on_lan_is_chosen_by_annotation_or_machine_without_a_secret() {
        let secrets = Arc::new(Rotating::default());
        let mut c = Connector::new(secrets, RetryPolicy::fast()).with_wake_on_lan("tink0");
        let yaml = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: nuc-power, namespace: lab}\nspec:\n  connection:\n    host: 10.0.0.21\n    authSecretRef: {name: unused}\n    providerOptions: {preferredOrder: [wol], wol: {port: 7}}\n";
        let docs = tinker_core::model::parse_documents("m.yaml", yaml).unwrap();
        assert_eq!(c.add_rufio_machines(&docs).unwrap(), 1);
        let by_annotation = c
            .connect(&nuc("'tinker.dev/power': wake-on-lan", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            by_annotation.target(),
            "wol://52:54:00:aa:bb:01@tink0:255.255.255.255:9"
        );
        let by_machine = c
            .connect(&nuc("", Some("nuc-power")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            by_machine.target(),
            "wol://52:54:00:aa:bb:01@tink0:255.255.255.255:7"
        );
        // Other annotations change nothing: no bmcRef, no controller.
        assert!(c.connect(&nuc("a: b", None)).await.unwrap().is_none());
        // Without a provisioning interface, it is refused, never sent anywhere.
        let c = Connector::new(Arc::new(Rotating::default()), RetryPolicy::fast());
        let err = c
            .connect(&nuc("'tinker.dev/power': wake-on-lan", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported { operation, .. } if operation.contains("provisioning interface")),
            "{err:?}"
        );
    }
}
