//! The `BootResponder` conformance suite, written once, run by every responder
//! over every store it can answer from: `run_all(responder, store).await`. The
//! suite registers machines through `store` (the one the responder reads) and
//! asks the responder what each request gets; each check uses its own names and
//! MACs, so the checks can share one store.
//!
//! What it holds a responder to is Tinkerbell's smee behaviour: unknown MACs and
//! interfaces with `disableDhcp` are ignored with a typed reason; `allowPXE`
//! false still gets its address but nothing to boot; a machine without a
//! reservation (its address comes from another DHCP server: proxyDHCP) still
//! gets its boot target; the iPXE binary follows the client architecture
//! (option 93); iPXE itself gets its script's URL.

use super::{hardware, mac};
use crate::MacAddr;
use crate::boot::{BootDecision, BootRequest, BootResponder, BootTarget, ClientKind, IgnoreReason};
use crate::model::Hardware;
use crate::store::{Precondition, WorkflowStore};

/// Runs every check.
pub async fn run_all(responder: &dyn BootResponder, store: &dyn WorkflowStore) {
    unknown_mac_is_ignored(responder, store).await;
    dhcp_disabled_is_ignored(responder, store).await;
    netboot_not_allowed_gets_an_address_only(responder, store).await;
    proxy_mode_machine_gets_its_boot_target(responder, store).await;
    client_architecture_picks_the_boot_file(responder, store).await;
    ipxe_gets_its_script_url(responder, store).await;
}

/// A request from `mac` of `client` kind and architecture `arch`.
pub fn request(mac: MacAddr, client: ClientKind, arch: Option<u16>) -> BootRequest {
    BootRequest {
        mac,
        arch,
        client,
        relay: None,
        circuit_id: None,
    }
}

async fn put(store: &dyn WorkflowStore, hw: Hardware) {
    store
        .put(hw.into(), Precondition::Absent)
        .await
        .expect("the suite's Hardware is stored");
}

async fn decide(responder: &dyn BootResponder, req: &BootRequest) -> BootDecision {
    responder
        .decide(req)
        .await
        .unwrap_or_else(|e| panic!("the responder failed on {req:?}: {e}"))
}

fn boot_of(decision: BootDecision) -> Option<BootTarget> {
    match decision {
        BootDecision::Answer { boot, .. } => boot,
        BootDecision::Ignore { reason } => panic!("a known machine was ignored: {reason}"),
    }
}

/// A MAC no Hardware has is ignored, with [`IgnoreReason::UnknownMac`], for
/// every kind of client.
pub async fn unknown_mac_is_ignored(responder: &dyn BootResponder, store: &dyn WorkflowStore) {
    put(store, hardware("boot-known", 9001)).await;
    for client in [
        ClientKind::PxeRom,
        ClientKind::Ipxe,
        ClientKind::HttpBoot,
        ClientKind::Plain,
    ] {
        let decision = decide(responder, &request(mac(9099), client, Some(0))).await;
        assert_eq!(
            decision,
            BootDecision::Ignore {
                reason: IgnoreReason::UnknownMac
            },
            "an unknown {client:?} client"
        );
    }
}

/// An interface with `disableDhcp` is ignored with [`IgnoreReason::DhcpDisabled`].
pub async fn dhcp_disabled_is_ignored(responder: &dyn BootResponder, store: &dyn WorkflowStore) {
    let mut hw = hardware("boot-disabled", 9002);
    hw.spec.interfaces[0].disable_dhcp = Some(true);
    put(store, hw).await;
    let decision = decide(responder, &request(mac(9002), ClientKind::PxeRom, Some(0))).await;
    assert_eq!(
        decision,
        BootDecision::Ignore {
            reason: IgnoreReason::DhcpDisabled
        }
    );
}

/// `allowPXE` false: the reservation is still handed out (the installed OS
/// needs its address), but there is nothing to boot, for any client; a plain
/// DHCP client never gets a boot target either.
pub async fn netboot_not_allowed_gets_an_address_only(
    responder: &dyn BootResponder,
    store: &dyn WorkflowStore,
) {
    let mut hw = hardware("boot-no-pxe", 9003);
    hw.set_allow_pxe(false);
    let address = hw.ipv4s()[0];
    put(store, hw).await;
    put(store, hardware("boot-plain", 9004)).await;
    for client in [ClientKind::PxeRom, ClientKind::Ipxe, ClientKind::HttpBoot] {
        match decide(responder, &request(mac(9003), client, Some(7))).await {
            BootDecision::Answer { network, boot } => {
                assert_eq!(network.map(|n| n.address), Some(address), "{client:?}");
                assert_eq!(
                    boot, None,
                    "allowPXE false, yet a boot target for {client:?}"
                );
            }
            other => panic!("allowPXE false still gets its address: {other:?}"),
        }
    }
    match decide(responder, &request(mac(9004), ClientKind::Plain, None)).await {
        BootDecision::Answer { network, boot } => {
            assert!(network.is_some(), "a plain client gets its reservation");
            assert_eq!(boot, None, "a plain DHCP client gets nothing to boot");
        }
        other => panic!("a plain client of a known machine: {other:?}"),
    }
}

/// A machine without an address reservation (another DHCP server gives its
/// address; we answer as proxyDHCP) gets no network settings and its boot
/// target all the same.
pub async fn proxy_mode_machine_gets_its_boot_target(
    responder: &dyn BootResponder,
    store: &dyn WorkflowStore,
) {
    let mut hw = hardware("boot-proxy", 9005);
    if let Some(dhcp) = hw.spec.interfaces[0].dhcp.as_mut() {
        dhcp.ip = None;
    }
    put(store, hw).await;
    match decide(responder, &request(mac(9005), ClientKind::PxeRom, Some(7))).await {
        BootDecision::Answer { network, boot } => {
            assert_eq!(network, None, "no reservation, no network settings");
            assert!(
                matches!(&boot, Some(BootTarget::Tftp { file, .. }) if file == "ipxe.efi"),
                "proxyDHCP boot target: {boot:?}"
            );
        }
        other => panic!("a machine without a reservation still boots: {other:?}"),
    }
}

/// The iPXE binary by client architecture (RFC 4578 option 93, Tinkerbell's
/// mapping): over TFTP for a PXE ROM, over HTTP for a UEFI HTTP-boot client;
/// an architecture without a binary gets nothing to boot.
pub async fn client_architecture_picks_the_boot_file(
    responder: &dyn BootResponder,
    store: &dyn WorkflowStore,
) {
    put(store, hardware("boot-arch", 9006)).await;
    for (arch, want) in [
        (0u16, "undionly.kpxe"),
        (6, "ipxe.efi"),
        (7, "ipxe.efi"),
        (9, "ipxe.efi"),
        (11, "snp-arm64.efi"),
    ] {
        let boot = boot_of(
            decide(
                responder,
                &request(mac(9006), ClientKind::PxeRom, Some(arch)),
            )
            .await,
        );
        assert!(
            matches!(&boot, Some(BootTarget::Tftp { file, .. }) if file == want),
            "arch {arch}: want {want} over TFTP, got {boot:?}"
        );
    }
    let boot = boot_of(
        decide(
            responder,
            &request(mac(9006), ClientKind::HttpBoot, Some(16)),
        )
        .await,
    );
    assert!(
        matches!(&boot, Some(BootTarget::Http { url }) if url.ends_with("/ipxe.efi")),
        "HTTP boot, arch 16: {boot:?}"
    );
    let boot = boot_of(
        decide(
            responder,
            &request(mac(9006), ClientKind::PxeRom, Some(0x7fff)),
        )
        .await,
    );
    assert_eq!(boot, None, "an architecture without a binary");
}

/// iPXE (user class `iPXE`) gets the URL of its own script, whatever its
/// architecture.
pub async fn ipxe_gets_its_script_url(responder: &dyn BootResponder, store: &dyn WorkflowStore) {
    put(store, hardware("boot-ipxe", 9007)).await;
    for arch in [Some(0), Some(7), None] {
        let boot = boot_of(decide(responder, &request(mac(9007), ClientKind::Ipxe, arch)).await);
        match &boot {
            Some(BootTarget::IpxeScript { url }) => {
                assert!(url.starts_with("http"), "{url}");
                assert!(
                    url.contains(&mac(9007).to_string()),
                    "its own script: {url}"
                );
                assert!(url.ends_with("/auto.ipxe"), "{url}");
            }
            other => panic!("iPXE, arch {arch:?}: want a script URL, got {other:?}"),
        }
    }
}
