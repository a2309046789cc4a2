//! The per-machine iPXE script.

use super::body::Body;
use super::{HttpServer, status};
use hyper::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tinker_core::model::Hardware;
use tinker_core::store::{EventKind, EventSource, MachineEvent};
use tinker_core::{MacAddr, Secret};

/// At most one "script served" event per machine in this window.
const SCRIPT_EVENT_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

/// What the default script boots: the in-memory OS with the worker agent.
#[derive(Debug, Clone, Default)]
pub struct OsieConfig {
    /// Base URL of kernel and initrd, such as `http://10.0.0.1:8080/assets`.
    pub base_url: String,
    /// Kernel file name.
    pub kernel: String,
    /// Initrd file name.
    pub initrd: String,
    /// The control plane's URL, passed as `tinker_server=` for the worker.
    pub control_plane: String,
    /// Extra kernel arguments (console, ...), before the Hardware's own.
    pub extra_args: Vec<String>,
    /// The worker API's secret: when set, the script a machine fetches from its
    /// own address carries its bearer token (`tinker_token=`, see
    /// [`worker_token`](crate::credentials::worker_token)); anyone else gets the
    /// script without it.
    pub worker_secret: Option<tinker_core::Secret>,
}

/// Renders the script for a machine; `token` is its worker token, for the
/// machine itself only.
pub fn script(hw: &Hardware, mac: MacAddr, osie: &OsieConfig, token: Option<&Secret>) -> String {
    let iface = hw.interface(mac);
    let netboot = iface.and_then(|i| i.netboot.as_ref());
    if netboot.and_then(|n| n.allow_pxe) != Some(true) {
        // Netboot is off (the install finished, or an operator said so): boot the
        // local disk, so a machine whose BMC cannot set the boot device still
        // ends up in its installed OS.
        return format!(
            "#!ipxe\necho Tinker: netboot is off for {mac}; booting from the local disk\nsanboot --no-describe --drive 0x80 || exit\n"
        );
    }
    if let Some(ipxe) = netboot.and_then(|n| n.ipxe.as_ref()) {
        if let Some(contents) = &ipxe.contents {
            return contents.clone();
        }
        if let Some(url) = &ipxe.url {
            return format!(
                "#!ipxe\necho Tinker: chaining to the script set for {mac}\nchain --autofree {url}\n"
            );
        }
    }
    let o = netboot.and_then(|n| n.osie.as_ref());
    let base = o
        .and_then(|o| o.base_url.clone())
        .unwrap_or_else(|| osie.base_url.clone());
    let kernel = o
        .and_then(|o| o.kernel.clone())
        .unwrap_or_else(|| osie.kernel.clone());
    let initrd = o
        .and_then(|o| o.initrd.clone())
        .unwrap_or_else(|| osie.initrd.clone());
    let mut args = vec![
        // UEFI iPXE hands the initrd to the kernel only if the kernel line names it.
        format!("initrd={initrd}"),
        format!("tinker_server={}", osie.control_plane),
        format!("worker_id={mac}"),
        format!("hw_addr={mac}"),
    ];
    if let Some(token) = token {
        args.push(format!("tinker_token={}", token.expose()));
    }
    if let Some(host) = iface
        .and_then(|i| i.dhcp.as_ref())
        .and_then(|d| d.hostname.as_ref())
    {
        args.push(format!("hostname={host}"));
    }
    args.extend(osie.extra_args.iter().cloned());
    args.extend(o.map(|o| o.kernel_params.clone()).unwrap_or_default());
    let args = args.join(" ");
    format!(
        r#"#!ipxe

echo Tinker: loading the in-memory OS for {mac} ({name})
set base-url {base}
set retries:int32 10
set retry_delay:int32 3

set idx:int32 0
:retry_kernel
kernel ${{base-url}}/{kernel} {args} && goto download_initrd || iseq ${{idx}} ${{retries}} && goto kernel-error || inc idx && echo retry in ${{retry_delay}} seconds ; sleep ${{retry_delay}} ; goto retry_kernel

:download_initrd
set idx:int32 0
:retry_initrd
initrd ${{base-url}}/{initrd} && goto boot || iseq ${{idx}} ${{retries}} && goto initrd-error || inc idx && echo retry in ${{retry_delay}} seconds ; sleep ${{retry_delay}} ; goto retry_initrd

:boot
boot || goto boot-error

:kernel-error
echo Tinker: failed to load the kernel
goto give-up
:initrd-error
echo Tinker: failed to load the initrd
goto give-up
:boot-error
echo Tinker: failed to boot
:give-up
imgfree
exit
"#,
        name = hw.metadata.name
    )
}

impl HttpServer {
    pub(super) async fn script_by_mac(&self, mac: &str, caller: IpAddr) -> Response<Body> {
        let Ok(mac) = mac.replace('-', ":").parse::<MacAddr>() else {
            return status(StatusCode::BAD_REQUEST, "not a MAC address\n");
        };
        match self.config.store.hardware_by_mac(mac).await {
            Ok(Some(hw)) => self.serve_script(&hw.value, mac, caller),
            Ok(None) => status(StatusCode::NOT_FOUND, "unknown machine\n"),
            Err(e) => {
                tracing::warn!(%mac, error = %e, "store lookup failed");
                status(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
            }
        }
    }

    pub(super) async fn script_by_ip(&self, caller: IpAddr) -> Response<Body> {
        match self.config.store.hardware_by_ip(caller).await {
            Ok(Some(hw)) => {
                let mac = hw
                    .value
                    .spec
                    .interfaces
                    .iter()
                    .filter_map(|i| i.dhcp.as_ref())
                    .find(|d| {
                        d.ip.as_ref()
                            .is_some_and(|ip| ip.address.parse::<IpAddr>().ok() == Some(caller))
                    })
                    .and_then(|d| d.mac.parse().ok());
                match mac {
                    Some(mac) => self.serve_script(&hw.value, mac, caller),
                    None => status(StatusCode::NOT_FOUND, "unknown machine\n"),
                }
            }
            Ok(None) => status(StatusCode::NOT_FOUND, "unknown machine\n"),
            Err(_) => status(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
        }
    }

    /// Records in the machine's event log that it fetched its script (what "why is
    /// it pending?" reads), at most once per [`SCRIPT_EVENT_WINDOW`] per machine:
    /// a client fetching in a loop does not push the machine's other events out
    /// of its bounded log.
    fn record_script_served(&self, hw: &Hardware, mac: MacAddr) {
        let machine = format!("{}/{}", hw.metadata.namespace(), hw.metadata.name);
        let now = self.clock.now();
        {
            let mut last = self.script_events.lock().unwrap_or_else(|e| e.into_inner());
            if last
                .get(&machine)
                .is_some_and(|t| now.duration_since(*t) < SCRIPT_EVENT_WINDOW)
            {
                return;
            }
            last.insert(machine.clone(), now);
        }
        let event = MachineEvent::new(
            now,
            machine,
            EventSource::Http,
            EventKind::IpxeScriptServed { mac },
        );
        // In the background: the booting machine does not wait for the log.
        let store = self.config.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.append_event(event).await {
                tracing::warn!(error = %e, "could not record a script event");
            }
        });
    }

    /// The script, with the machine's token only when the caller is the
    /// machine: anyone can learn a MAC, so the by-MAC route gives others the
    /// script without it.
    fn serve_script(&self, hw: &Hardware, mac: MacAddr, caller: IpAddr) -> Response<Body> {
        self.stats.scripts.fetch_add(1, Ordering::Relaxed);
        let itself = self.config.callers.is_machine(hw, mac, caller);
        let token =
            match &self.config.osie.worker_secret {
                Some(secret) if itself && hw.allows_pxe() => Some(
                    crate::credentials::worker_token(secret, &mac.to_string(), hw.netboot_since()),
                ),
                Some(_) => {
                    self.stats
                        .scripts_without_token
                        .fetch_add(1, Ordering::Relaxed);
                    None
                }
                None => None,
            };
        tracing::info!(%mac, machine = %hw.metadata.name, %caller, allow_pxe = hw.allows_pxe(), with_token = token.is_some(), "iPXE script served");
        if itself {
            self.record_script_served(hw, mac);
        }
        let body = script(hw, mac, &self.config.osie, token.as_ref());
        let mut r = Response::new(super::body::full(body));
        r.headers_mut()
            .insert("content-type", "text/plain".parse().expect("static header"));
        r.headers_mut()
            .insert("cache-control", "no-store".parse().expect("static header"));
        r
    }
}
