//! [`RedfishPower`]: the driver. Finds the ComputerSystem under
//! `/redfish/v1/Systems` (or uses the one named), resets it with a `ResetType`
//! the system advertises, and sets the boot source override with a PATCH (with
//! `If-Match` when the BMC gives an ETag).

use super::client::{Client, RedfishAuth};
use super::mapping;
use super::tls::TlsVerification;
use super::wire::{Collection, ComputerSystem, ResetRequest};
use async_trait::async_trait;
use hyper::Method;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::clock::SharedClock;
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result, Secret,
};

/// Power control of one system through a Redfish BMC.
#[derive(Debug, Clone)]
pub struct RedfishPower {
    client: Client,
    system: Arc<Mutex<Option<String>>>,
}

impl RedfishPower {
    /// A controller for the BMC at `base` (`https://10.0.0.5` or
    /// `http://127.0.0.1:8000`).
    pub fn new(
        base: impl Into<String>,
        user: impl Into<String>,
        password: Secret,
        auth: RedfishAuth,
        verification: TlsVerification,
    ) -> Result<Self> {
        Ok(RedfishPower {
            client: Client::new(base.into(), user.into(), password, auth, &verification)?,
            system: Arc::default(),
        })
    }

    /// Uses this system (`/redfish/v1/Systems/<id>`) instead of the first listed.
    pub fn with_system(self, id: &str) -> Self {
        *self.system_slot() = Some(format!("/redfish/v1/Systems/{id}"));
        self
    }

    /// Time limit of each HTTP request (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.client.timeout = timeout;
        self
    }

    /// Reads request time limits on `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.client.clock = clock;
        self
    }

    fn system_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.system.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of the ComputerSystem: the one named, else the first listed
    /// (looked up once).
    async fn system_path(&self) -> Result<String> {
        if let Some(p) = self.system_slot().clone() {
            return Ok(p);
        }
        let (systems, _) = self.client.get::<Collection>("/redfish/v1/Systems").await?;
        let link = systems
            .members
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unsupported {
                target: self.target(),
                operation: "finding a ComputerSystem (the Systems collection is empty)".into(),
            })?
            .odata_id;
        let path = self.client.link(&link)?;
        *self.system_slot() = Some(path.clone());
        Ok(path)
    }

    /// The ComputerSystem, its path and its ETag.
    async fn system(&self) -> Result<(String, ComputerSystem, Option<String>)> {
        let path = self.system_path().await?;
        let (sys, etag) = self.client.get::<ComputerSystem>(&path).await?;
        Ok((path, sys, etag))
    }
}

#[async_trait]
impl PowerController for RedfishPower {
    fn target(&self) -> String {
        self.client.target()
    }

    async fn power_state(&self) -> Result<PowerState> {
        let (_, sys, _) = self.system().await?;
        mapping::power_state(sys.power_state.as_ref()).ok_or_else(|| Error::Remote {
            target: self.target(),
            reason: format!("unknown PowerState {:?}", sys.power_state),
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let (path, sys, _) = self.system().await?;
        let reset = sys.actions.reset.unwrap_or_default();
        let allowed = reset.allowable_values.as_deref();
        let reset_type =
            mapping::choose_reset(action, allowed).ok_or_else(|| Error::Unsupported {
                target: self.target(),
                operation: format!("power {action:?} (the system allows {allowed:?})"),
            })?;
        let action_path = match reset.target {
            Some(target) => self.client.link(&target)?,
            None => format!("{path}/Actions/ComputerSystem.Reset"),
        };
        let body = ResetRequest { reset_type };
        self.client
            .call(Method::POST, &action_path, Some(&body), None)
            .await?;
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let (path, sys, etag) = self.system().await?;
        let patch =
            mapping::boot_patch(device, options, &sys.boot).ok_or_else(|| Error::Unsupported {
                target: self.target(),
                operation: format!("boot device {device:?}"),
            })?;
        self.client
            .call(Method::PATCH, &path, Some(&patch), etag.as_deref())
            .await?;
        Ok(())
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        let (_, sys, _) = self.system().await?;
        Ok(mapping::boot_override(&sys.boot))
    }
}
