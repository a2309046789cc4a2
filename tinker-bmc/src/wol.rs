//! [`WakeOnLan`]: power for machines without a BMC (a home lab's NUCs). Powering
//! on sends the Wake-on-LAN "magic packet" (six `0xFF` bytes, then the MAC
//! sixteen times) as a UDP broadcast on the provisioning interface; that is all
//! the protocol can do. Power off, reset, cycle and boot-device settings answer
//! [`Error::NotCapable`] with the reason, and the engine skips those steps
//! (recorded as skipped): the machine netboots by its firmware's boot order, and
//! the workflow's last action reboots it into its installed OS. The power state
//! cannot be read back, so it is unsupported too (the engine then wakes the
//! machine rather than cycling it).
//!
//! The socket is bound to the provisioning interface (`SO_BINDTODEVICE`), so
//! the broadcast never leaves on another network; a controller without an
//! interface is refused when built. UDP can be lost, so the packet is sent a
//! few times ([`WolEndpoint::repeats`]); waking a machine twice is harmless.

use async_trait::async_trait;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tinker_core::{
    BootDevice, BootOptions, Error, MacAddr, PowerAction, PowerController, PowerState, Result,
};

/// The UDP port Wake-on-LAN listeners conventionally use (discard).
pub const WOL_PORT: u16 = 9;

/// The magic packet that wakes the machine with `mac`: six `0xFF` bytes, then
/// the MAC sixteen times (102 bytes; no SecureOn password).
pub fn magic_packet(mac: MacAddr) -> [u8; 102] {
    let mut p = [0xFF; 102];
    for chunk in p[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.octets());
    }
    p
}

/// Where to send a machine's magic packets: its MAC, the provisioning interface
/// the broadcast goes out on, and the broadcast address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WolEndpoint {
    /// The machine's MAC (the NIC that wakes it).
    pub mac: MacAddr,
    /// The provisioning interface (`eno1`): the only one the packet leaves on.
    pub interface: String,
    /// Where the packet goes: `255.255.255.255:9` unless set (a subnet's
    /// directed broadcast, or port 7).
    pub destination: SocketAddrV4,
    /// How many times the packet is sent (UDP can be lost); at least once.
    pub repeats: u8,
}

impl WolEndpoint {
    /// The machine with `mac`, woken by a broadcast to port 9 on `interface`,
    /// sent three times.
    pub fn new(mac: MacAddr, interface: impl Into<String>) -> Self {
        WolEndpoint {
            mac,
            interface: interface.into(),
            destination: SocketAddrV4::new(Ipv4Addr::BROADCAST, WOL_PORT),
            repeats: 3,
        }
    }

    /// Sends to `port` instead of 9.
    pub fn with_port(mut self, port: u16) -> Self {
        self.destination.set_port(port);
        self
    }

    /// The controller.
    pub fn controller(&self) -> WakeOnLan {
        WakeOnLan {
            endpoint: self.clone(),
        }
    }
}

/// A [`PowerController`] that can only power a machine on, by Wake-on-LAN.
#[derive(Debug, Clone)]
pub struct WakeOnLan {
    endpoint: WolEndpoint,
}

impl WakeOnLan {
    fn unsupported(&self, operation: &str) -> Error {
        Error::NotCapable {
            target: self.target(),
            operation: format!(
                "{operation}: Wake-on-LAN can only power a machine on; the machine \
                 netboots by its firmware's boot order and the workflow's last action \
                 reboots it (or do it by hand)"
            ),
        }
    }

    /// Sends the magic packet `repeats` times.
    fn send(&self) -> Result<()> {
        let e = &self.endpoint;
        let unreachable = |reason: std::io::Error| Error::Unreachable {
            target: self.target(),
            reason: reason.to_string(),
        };
        let socket =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(unreachable)?;
        socket.set_broadcast(true).map_err(unreachable)?;
        // Bound to the provisioning interface: a limited broadcast would
        // otherwise leave on whichever interface the default route names.
        socket
            .bind_device(Some(e.interface.as_bytes()))
            .map_err(unreachable)?;
        let packet = magic_packet(e.mac);
        let to = SocketAddr::V4(e.destination).into();
        for _ in 0..e.repeats.max(1) {
            socket.send_to(&packet, &to).map_err(unreachable)?;
        }
        tracing::info!(mac = %e.mac, interface = %e.interface, "Wake-on-LAN packet sent");
        Ok(())
    }
}

#[async_trait]
impl PowerController for WakeOnLan {
    fn target(&self) -> String {
        format!(
            "wol://{}@{}:{}",
            self.endpoint.mac, self.endpoint.interface, self.endpoint.destination
        )
    }

    async fn power_state(&self) -> Result<PowerState> {
        Err(Error::NotCapable {
            target: self.target(),
            operation: "reading the power state (Wake-on-LAN hears nothing back from the machine)"
                .into(),
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        match action {
            // A few datagrams on a local interface: sent inline, not worth a
            // blocking thread.
            PowerAction::On => self.send(),
            other => Err(self.unsupported(&format!("power {other:?}"))),
        }
    }

    async fn set_boot_device(&self, device: BootDevice, _: BootOptions) -> Result<()> {
        Err(self.unsupported(&format!("setting the boot device to {device:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magic_packet_is_six_ff_then_the_mac_sixteen_times() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(p[..6], [0xFF; 6]);
        for i in 0..16 {
            assert_eq!(
                p[6 + 6 * i..12 + 6 * i],
                [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
            );
        }
    }

    #[tokio::test]
    async fn everything_but_power_on_is_unsupported_with_the_reason() {
        let wol = WolEndpoint::new("52:54:00:12:34:56".parse().unwrap(), "eno1").controller();
        let opts = BootOptions::default();
        for err in [
            wol.power(PowerAction::Off).await.unwrap_err(),
            wol.power(PowerAction::Reset).await.unwrap_err(),
            wol.power(PowerAction::Cycle).await.unwrap_err(),
            wol.power(PowerAction::SoftOff).await.unwrap_err(),
            wol.set_boot_device(BootDevice::Pxe, opts)
                .await
                .unwrap_err(),
            wol.power_state().await.unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::NotCapable { target, .. } if target == "wol://52:54:00:12:34:56@eno1:255.255.255.255:9"),
                "{err:?}"
            );
        }
        let off = wol.power(PowerAction::Off).await.unwrap_err().to_string();
        assert!(
            off.contains("Wake-on-LAN can only power a machine on"),
            "{off}"
        );
    }
}
