//! [`IpmiPower`]: the driver. ipmi-rs is blocking, so every call runs in
//! `spawn_blocking`. One session per BMC is kept open and reused (opening one
//! costs six round trips); a call that fails on a reused session is tried once on
//! a fresh one, since BMCs drop idle sessions.
//!
//! A session left idle longer than [`IpmiPower::with_idle_limit`] is not tried at
//! all but replaced: a BMC that has dropped it does not answer on it, and finding
//! that out costs every retry of the answer timeout (about 9 s with ipmi-rs's
//! three tries of 3 s) where a new session costs six quick round trips. OpenIPMI's
//! `ipmi_sim` drops a session after 30 s idle; IPMI 2.0 (22.18) suggests 60 s.

use super::session::{self, CommandError, Login, Session};
use super::wire::{self, Raw};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
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
    idle_limit: Duration,
    clock: SharedClock,
    session: Arc<Mutex<Option<OpenSession>>>,
    counters: Arc<Counters>,
}

/// The kept session and when it was last answered on.
struct OpenSession {
    session: Session,
    last_answer: jiff::Timestamp,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    idle_replaced: AtomicU64,
    stale_failures: AtomicU64,
}

/// What an [`IpmiPower`] has done with its sessions (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpmiSessionStats {
    /// Sessions opened (each costs six round trips).
    pub opened: u64,
    /// Kept sessions replaced unused because they had been idle past the limit.
    pub idle_replaced: u64,
    /// Calls that failed on a kept session and were tried again on a new one
    /// (each cost the answer timeout's retries).
    pub stale_failures: u64,
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
            idle_limit: Duration::from_secs(20),
            clock: SystemClock::shared(),
            session: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// How long a kept session may sit unused before it is replaced rather than
    /// tried (default 20 s, under `ipmi_sim`'s 30 s and the 60 s most BMCs use).
    pub fn with_idle_limit(mut self, idle_limit: Duration) -> Self {
        self.idle_limit = idle_limit;
        self
    }

    /// Reads idle time on `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// What this controller (and its clones) did with their sessions so far.
    pub fn session_stats(&self) -> IpmiSessionStats {
        IpmiSessionStats {
            opened: self.counters.opened.load(Ordering::Relaxed),
            idle_replaced: self.counters.idle_replaced.load(Ordering::Relaxed),
            stale_failures: self.counters.stale_failures.load(Ordering::Relaxed),
        }
    }

    fn open(&self) -> Result<OpenSession> {
        let session = session::open(&self.login())?;
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok(OpenSession {
            session,
            last_answer: self.clock.now(),
        })
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
        let now = self.clock.now();
        if let Some(kept) = slot.as_ref() {
            let idle = now.duration_since(kept.last_answer);
            if now >= kept.last_answer + self.idle_limit {
                tracing::debug!(bmc = %target, operation, idle_s = idle.as_secs(), "replacing an idle IPMI session");
                self.counters.idle_replaced.fetch_add(1, Ordering::Relaxed);
                *slot = None;
            }
        }
        let reused = slot.is_some();
        let kept = match slot.as_mut() {
            Some(s) => s,
            None => slot.insert(self.open()?),
        };
        let e = match f(&mut kept.session) {
            Ok(v) => {
                kept.last_answer = self.clock.now();
                return Ok(v);
            }
            Err(e) => e,
        };
        if !session::is_connection_error(&e) {
            return Err(session::command_error(&target, operation, e));
        }
        *slot = None;
        if !reused {
            return Err(session::command_error(&target, operation, e));
        }
        // The BMC may have closed our session before the idle limit: try once anew.
        self.counters.stale_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(bmc = %target, operation, "reopening the IPMI session");
        let kept = slot.insert(self.open()?);
        match f(&mut kept.session) {
            Ok(v) => {
                kept.last_answer = self.clock.now();
                Ok(v)
            }
            Err(e) => {
                *slot = None;
                Err(session::command_error(&target, operation, e))
            }
        }
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
