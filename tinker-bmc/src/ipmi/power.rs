//! [`IpmiPower`]: the driver. ipmi-rs is blocking, so every call runs in
//! `spawn_blocking`. One session per BMC is kept open and reused (opening one
//! costs six round trips); a call that fails on a reused session is tried once on
//! a fresh one, since BMCs drop idle sessions.

use super::session::{self, CommandError, Login, Session};
use super::wire::{self, Raw};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result, Secret,
};

/// Power control of one BMC over IPMI.
#[derive(Clone)]
pub struct IpmiPower {
    host: String,
    port: u16,
    user: String,
    password: Secret,
    timeout: Duration,
    session: Arc<Mutex<Option<Session>>>,
}

impl std::fmt::Debug for IpmiPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiPower")
            .field("target", &self.target())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl IpmiPower {
    /// A controller for the BMC at `host:port` (623 is IPMI's port).
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: Secret,
    ) -> Self {
        IpmiPower {
            host: host.into(),
            port,
            user: user.into(),
            password,
            timeout: Duration::from_secs(3),
            session: Arc::default(),
        }
    }

    /// How long to wait for each answer (default 3 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn login(&self) -> Login<'_> {
        Login {
            target: self.target(),
            host: &self.host,
            port: self.port,
            user: &self.user,
            password: &self.password,
            timeout: self.timeout,
        }
    }

    /// Runs `f` on the session (opening one if none is open), off the async
    /// threads; a connection failure on a reused session is tried once anew.
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl Fn(&mut Session) -> std::result::Result<T, CommandError> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        let target = self.target();
        let session = self.session.clone();
        let answer = tokio::task::spawn_blocking(move || {
            // ipmi-rs can panic on some malformed answers (a short RAKP message,
            // an answer to a cipher suite it leaves `todo!()`): a BMC's bytes
            // must not take a thread down with the session lock in a half-made
            // state, so a panic is caught here, the session dropped, and the
            // call refused as a bad answer.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                this.run_blocking(operation, &f)
            }))
        })
        .await
        .map_err(|e| Error::backend("ipmi-rs", e))?;
        answer.unwrap_or_else(|_| {
            *session.lock().unwrap_or_else(|e| e.into_inner()) = None;
            Err(Error::Remote {
                target,
                reason: format!("{operation}: the BMC's answer could not be decoded"),
            })
        })
    }

    /// The body of [`Self::run`], on a blocking thread.
    fn run_blocking<T>(
        &self,
        operation: &'static str,
        f: &impl Fn(&mut Session) -> std::result::Result<T, CommandError>,
    ) -> Result<T> {
        let target = self.target();
        let mut slot = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let reused = slot.is_some();
        let session = match slot.as_mut() {
            Some(s) => s,
            None => slot.insert(session::open(&self.login())?),
        };
        let e = match f(session) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !session::is_connection_error(&e) {
            return Err(session::command_error(&target, operation, e));
        }
        *slot = None;
        if !reused {
            return Err(session::command_error(&target, operation, e));
        }
        // The BMC may have closed our idle session: try once anew.
        tracing::debug!(bmc = %target, operation, "reopening the IPMI session");
        let session = slot.insert(session::open(&self.login())?);
        f(session).map_err(|e| {
            *slot = None;
            session::command_error(&target, operation, e)
        })
    }

    /// Sends one request and returns its answer's data.
    async fn raw(&self, operation: &'static str, request: Raw) -> Result<Vec<u8>> {
        self.run(operation, move |s| s.send_recv(request.clone()))
            .await
    }
}

#[async_trait]
impl PowerController for IpmiPower {
    fn target(&self) -> String {
        format!("ipmi://{}:{}", self.host, self.port)
    }

    async fn power_state(&self) -> Result<PowerState> {
        let data = self
            .raw("get chassis status", Raw::chassis_status())
            .await?;
        wire::parse_chassis_status(&data).ok_or_else(|| Error::Remote {
            target: self.target(),
            reason: "empty chassis status".into(),
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let request = Raw::chassis_control(action).ok_or_else(|| Error::Unsupported {
            target: self.target(),
            operation: format!("power {action:?}"),
        })?;
        self.raw("chassis control", request).await?;
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let request = Raw::set_boot_flags(device, options).ok_or_else(|| Error::Unsupported {
            target: self.target(),
            operation: format!("boot device {device:?}"),
        })?;
        self.run("set boot options", move |s| {
            // Bracket the write with "set in progress", as ipmitool does; BMCs
            // that do not implement parameter 0 refuse it, which is harmless.
            let _ = s.send_recv(Raw::boot_set_in_progress(0x01));
            let result = s.send_recv(request.clone());
            let _ = s.send_recv(Raw::boot_set_in_progress(0x00));
            result.map(|_| ())
        })
        .await
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        let data = self.raw("get boot options", Raw::get_boot_flags()).await?;
        Ok(wire::parse_boot_options_answer(&data))
    }
}
