//! The one DHCP client: a PXE ROM's DORA exchange (DISCOVER, OFFER, REQUEST,
//! ACK) as a state machine without I/O, in the manner of quinn-proto. The caller
//! feeds it datagrams and the time ([`Dora::handle_datagram`],
//! [`Dora::handle_timeout`]), asks what to send ([`Dora::poll_transmit`]) and
//! when to wake it ([`Dora::poll_timeout`]); [`run`] is the thin async driver
//! over any [`Link`] and [`Clock`].
//!
//! Requests carry what a PXE ROM sends (PXE 2.1, RFC 4578): the vendor class
//! `PXEClient:Arch:xxxxx:UNDI:yyyzzz` (option 60), the client architecture (93),
//! the network interface identifier (94), the machine GUID (97) and, once iPXE
//! runs, its user class (77). Replies are read into a typed [`Reply`].
//!
//! Simulated machines (the homelab), the boot-storm benchmark and the tests all
//! use this client, so they speak to the server as one kind of client does.

use async_trait::async_trait;
use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use jiff::Timestamp;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tinker_core::MacAddr;
use tinker_core::clock::Clock;

/// A PXE ROM's retransmission schedule (PXE 2.1 2.2.1): wait 4, 8, 16 and 32
/// seconds for an answer, each randomized by up to a second either way (RFC 2131
/// 4.1), then give up. A protocol's fixed schedule, not an error backoff.
pub const PXE_SCHEDULE: [Duration; 4] = [
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// Which vendor class (option 60) the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorClass {
    /// `PXEClient:Arch:xxxxx:UNDI:002001`: a PXE ROM (and iPXE, which keeps it).
    Pxe,
    /// `HTTPClient:Arch:xxxxx:UNDI:003000`: UEFI HTTP boot.
    Http,
    /// No vendor class: a plain DHCP client.
    None,
}

/// What a booting client says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeClient {
    /// Its hardware address (`chaddr`).
    pub mac: MacAddr,
    /// Client system architecture (option 93; 0 is BIOS, 7 EFI x64, 11 EFI arm64).
    pub arch: u16,
    /// Vendor class (option 60).
    pub class: VendorClass,
    /// User class (option 77): `iPXE` once iPXE runs.
    pub user_class: Option<Vec<u8>>,
    /// Machine GUID (option 97).
    pub guid: [u8; 16],
    /// The relay agent that forwards it (`giaddr`), for a simulated rack.
    pub relay: Option<Ipv4Addr>,
    /// The relay agent's circuit id (option 82.1).
    pub circuit_id: Option<Vec<u8>>,
}

impl PxeClient {
    /// A PXE ROM of architecture `arch`; its GUID is derived from its MAC.
    pub fn new(mac: MacAddr, arch: u16) -> Self {
        let mut guid = [0u8; 16];
        guid[10..].copy_from_slice(&mac.octets());
        PxeClient {
            mac,
            arch,
            class: VendorClass::Pxe,
            user_class: None,
            guid,
            relay: None,
            circuit_id: None,
        }
    }

    /// The same machine once iPXE runs (user class `iPXE`).
    pub fn ipxe(mut self) -> Self {
        self.user_class = Some(b"iPXE".to_vec());
        self
    }

    /// The same machine with another vendor class.
    pub fn with_class(mut self, class: VendorClass) -> Self {
        self.class = class;
        self
    }

    /// The same machine behind a relay agent at `giaddr`.
    pub fn relayed(mut self, giaddr: Ipv4Addr) -> Self {
        self.relay = Some(giaddr);
        self
    }

    /// The same machine with a relay circuit id (option 82.1).
    pub fn with_circuit_id(mut self, id: impl Into<Vec<u8>>) -> Self {
        self.circuit_id = Some(id.into());
        self
    }

    /// A `kind` message from this client with every option it sends.
    pub fn message(&self, kind: MessageType, xid: u32) -> v4::Message {
        let mut msg = message(kind, xid, self.mac);
        if let Some(giaddr) = self.relay {
            msg.set_giaddr(giaddr);
        }
        let o = msg.opts_mut();
        let class = match self.class {
            VendorClass::Pxe => Some(format!("PXEClient:Arch:{:05}:UNDI:002001", self.arch)),
            VendorClass::Http => Some(format!("HTTPClient:Arch:{:05}:UNDI:003000", self.arch)),
            VendorClass::None => None,
        };
        if let Some(class) = class {
            o.insert(DhcpOption::ClassIdentifier(class.into_bytes()));
            o.insert(DhcpOption::ClientSystemArchitecture(self.arch.into()));
            // UNDI 2.1 (PXE 2.1 2.2.4).
            o.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
            let mut guid = vec![0u8];
            guid.extend_from_slice(&self.guid);
            o.insert(DhcpOption::ClientMachineIdentifier(guid));
        }
        if let Some(user_class) = &self.user_class {
            o.insert(DhcpOption::UserClass(user_class.clone()));
        }
        if let Some(id) = &self.circuit_id {
            let mut info = v4::relay::RelayAgentInformation::default();
            info.insert(v4::relay::RelayInfo::AgentCircuitId(id.clone()));
            o.insert(DhcpOption::RelayAgentInformation(info));
        }
        msg
    }

    /// The DISCOVER that starts an exchange.
    pub fn discover(&self, xid: u32) -> Vec<u8> {
        encode(&self.message(MessageType::Discover, xid))
    }

    /// The REQUEST that takes `offer` (RFC 2131 SELECTING: the offered address
    /// and the offering server's identifier).
    pub fn request(&self, xid: u32, offer: &Reply) -> Vec<u8> {
        let mut msg = self.message(MessageType::Request, xid);
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.address));
        if let Some(server) = offer.server_id {
            msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        }
        encode(&msg)
    }
}

/// A bare client message of `kind` (type option only), for the exchanges a PXE
/// ROM does not make (renewals, INFORM, RELEASE) and for hand-made packets.
pub fn message(kind: MessageType, xid: u32, mac: MacAddr) -> v4::Message {
    let mut msg = v4::Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.octets(),
    );
    msg.set_flags(Flags::default());
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    msg
}

/// Encodes a client message. A message built here always encodes; an
/// unencodable hand-made one gives no bytes (a packet no server answers).
pub fn encode(msg: &v4::Message) -> Vec<u8> {
    msg.to_vec().unwrap_or_default()
}

/// Decodes a server's message (a BOOTREPLY), with every option, for callers
/// that look past the [`Reply`] fields.
pub fn decode(bytes: &[u8]) -> Option<v4::Message> {
    let msg = v4::Message::decode(&mut dhcproto::Decoder::new(bytes)).ok()?;
    (msg.opcode() == Opcode::BootReply).then_some(msg)
}

/// A server's OFFER, ACK or NAK, read into what a client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub kind: MessageType,
    /// The transaction it answers.
    pub xid: u32,
    /// The address handed out (`yiaddr`; unspecified from a proxyDHCP server).
    pub address: Ipv4Addr,
    /// The server's identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
    /// The TFTP server (`siaddr`).
    pub next_server: Ipv4Addr,
    /// The boot file (option 67, else the header's `file`), if any.
    pub boot_file: Option<String>,
    /// Subnet mask (option 1).
    pub subnet_mask: Option<Ipv4Addr>,
    /// First router (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51).
    pub lease_seconds: Option<u32>,
    /// Host name (option 12).
    pub hostname: Option<String>,
    /// The vendor class the server answered with (option 60).
    pub vendor_class: Option<Vec<u8>>,
}

impl Reply {
    /// Reads a server's message; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<Reply> {
        Reply::from_message(&decode(bytes)?)
    }

    /// Reads a decoded server's message; `None` when it has no message type.
    pub fn from_message(msg: &v4::Message) -> Option<Reply> {
        let o = msg.opts();
        let kind = o.msg_type()?;
        let boot_file = match o.get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => msg
                .fname()
                .map(|f| {
                    String::from_utf8_lossy(f)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .filter(|f| !f.is_empty()),
        };
        Some(Reply {
            kind,
            xid: msg.xid(),
            address: msg.yiaddr(),
            server_id: match o.get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
                _ => None,
            },
            next_server: msg.siaddr(),
            boot_file,
            subnet_mask: match o.get(OptionCode::SubnetMask) {
                Some(DhcpOption::SubnetMask(m)) => Some(*m),
                _ => None,
            },
            router: match o.get(OptionCode::Router) {
                Some(DhcpOption::Router(r)) => r.first().copied(),
                _ => None,
            },
            dns: match o.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(d)) => d.clone(),
                _ => Vec::new(),
            },
            lease_seconds: match o.get(OptionCode::AddressLeaseTime) {
                Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
                _ => None,
            },
            hostname: match o.get(OptionCode::Hostname) {
                Some(DhcpOption::Hostname(h)) => Some(h.clone()),
                _ => None,
            },
            vendor_class: match o.get(OptionCode::ClassIdentifier) {
                Some(DhcpOption::ClassIdentifier(c)) => Some(c.clone()),
                _ => None,
            },
        })
    }
}

/// Why an exchange ended without an address.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Every transmission of a message went unanswered.
    #[error("no DHCP answer to {tries} {stage:?} messages; is a DHCP server on this network?")]
    NoAnswer {
        /// The unanswered message: DISCOVER or REQUEST.
        stage: MessageType,
        /// How many times it was sent.
        tries: usize,
    },
    /// The server answered the REQUEST with a NAK.
    #[error("the DHCP server refused the address (DHCPNAK{})", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused {
        /// The server's reason (option 56), if given.
        message: Option<String>,
    },
    /// The link failed (a socket error).
    #[error("DHCP client link failed: {0}")]
    Link(#[source] Arc<std::io::Error>),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Link(Arc::new(e))
    }
}

#[derive(Debug, Clone)]
enum State {
    /// DISCOVER sent, awaiting an OFFER.
    Selecting,
    /// REQUEST sent for this OFFER, awaiting the ACK.
    Requesting(Reply),
    /// Done.
    Done(Result<Reply, ClientError>),
}

/// One DORA exchange: DISCOVER, OFFER, REQUEST, ACK, with a PXE ROM's
/// retransmissions. Sans-IO: bytes and time in, bytes and a deadline out.
///
/// ```
/// use jiff::Timestamp;
/// use tinker_boot::dhcp::client::{Dora, PxeClient};
///
/// let now = Timestamp::from_second(1_800_000_000).unwrap();
/// let mac = "52:54:00:00:00:01".parse().unwrap();
/// let mut dora = Dora::new(PxeClient::new(mac, 0), 7);
/// let discover = dora.poll_transmit(now).expect("a DISCOVER to send");
/// assert!(discover.len() > 240);
/// assert!(dora.poll_transmit(now).is_none(), "sent once until its timer runs out");
/// assert!(dora.poll_timeout().unwrap() > now);
/// assert!(dora.outcome().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Dora {
    client: PxeClient,
    xid: u32,
    state: State,
    schedule: Vec<Duration>,
    /// Transmissions of the current message so far.
    sent: usize,
    /// Whether the current message is due to be sent.
    due: bool,
    deadline: Option<Timestamp>,
    retransmissions: u32,
}

impl Dora {
    /// An exchange for `client` with transaction id `xid`, on [`PXE_SCHEDULE`].
    pub fn new(client: PxeClient, xid: u32) -> Self {
        Dora {
            client,
            xid,
            state: State::Selecting,
            schedule: PXE_SCHEDULE.to_vec(),
            sent: 0,
            due: true,
            deadline: None,
            retransmissions: 0,
        }
    }

    /// The same exchange with another retransmission schedule: how long to wait
    /// after each transmission of a message (at least one entry).
    pub fn with_schedule(mut self, schedule: impl Into<Vec<Duration>>) -> Self {
        let schedule = schedule.into();
        if !schedule.is_empty() {
            self.schedule = schedule;
        }
        self
    }

    /// The transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Messages sent again because an answer was late.
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// The message to send now, if one is due; starts its answer timer.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Vec<u8>> {
        if !self.due {
            return None;
        }
        let bytes = match &self.state {
            State::Selecting => self.client.discover(self.xid),
            State::Requesting(offer) => self.client.request(self.xid, offer),
            State::Done(_) => return None,
        };
        self.due = false;
        self.deadline = Some(now + self.wait(self.sent));
        self.sent += 1;
        Some(bytes)
    }

    /// When [`Dora::handle_timeout`] is next due; `None` once the exchange ended.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Done(_) => None,
            _ => self.deadline,
        }
    }

    /// The answer timer ran out: send again, or give up after the schedule's
    /// last wait.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline || matches!(self.state, State::Done(_)) {
            return;
        }
        if self.sent >= self.schedule.len() {
            let stage = match self.state {
                State::Requesting(_) => MessageType::Request,
                _ => MessageType::Discover,
            };
            self.state = State::Done(Err(ClientError::NoAnswer {
                stage,
                tries: self.sent,
            }));
            return;
        }
        self.retransmissions += 1;
        self.due = true;
    }

    /// A datagram arrived; returns whether it answered this exchange (another
    /// transaction's replies, or a stale OFFER, are not).
    pub fn handle_datagram(&mut self, bytes: &[u8], _now: Timestamp) -> bool {
        let Some(reply) = Reply::parse(bytes) else {
            return false;
        };
        if reply.xid != self.xid {
            return false;
        }
        match (&self.state, reply.kind) {
            (State::Selecting, MessageType::Offer) => {
                self.state = State::Requesting(reply);
                self.next_message();
            }
            (State::Requesting(_), MessageType::Ack) => self.state = State::Done(Ok(reply)),
            (State::Requesting(_), MessageType::Nak) => {
                let message = decode(bytes).and_then(|m| match m.opts().get(OptionCode::Message) {
                    Some(DhcpOption::Message(text)) => Some(text.clone()),
                    _ => None,
                });
                self.state = State::Done(Err(ClientError::Refused { message }));
            }
            _ => return false,
        }
        true
    }

    /// The ACK (the lease), or why there is none; `None` while under way.
    pub fn outcome(&self) -> Option<Result<&Reply, &ClientError>> {
        match &self.state {
            State::Done(r) => Some(r.as_ref()),
            _ => None,
        }
    }

    fn next_message(&mut self) {
        self.sent = 0;
        self.due = true;
        self.deadline = None;
    }

    /// The wait after transmission `n` (from 0): the schedule's entry, moved by
    /// up to a second either way, derived from the transaction id so a row of
    /// machines does not retransmit in one wave and a run can be repeated.
    fn wait(&self, n: usize) -> Duration {
        let base = self.schedule[n.min(self.schedule.len() - 1)];
        let jitter_ms = u64::from(
            self.xid
                .wrapping_mul(2_654_435_761)
                .rotate_left((n as u32).wrapping_mul(7))
                % 2000,
        );
        (base + Duration::from_millis(jitter_ms)).saturating_sub(Duration::from_secs(1))
    }
}

/// Where a client's datagrams go and come from: a socket, a relay's queue, an
/// in-memory channel to a server.
#[async_trait]
pub trait Link: Send {
    /// Sends one message to the server.
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// The next datagram for this client. Others' replies may come too (the
    /// exchange drops them by transaction id). Must be cancel-safe: it races
    /// the answer timer.
    async fn recv(&mut self) -> std::io::Result<Vec<u8>>;
}

/// Drives `dora` over `link` until it ends, sleeping on `clock` between
/// retransmissions; returns the ACK.
pub async fn run(
    dora: &mut Dora,
    link: &mut dyn Link,
    clock: &dyn Clock,
) -> Result<Reply, ClientError> {
    loop {
        while let Some(bytes) = dora.poll_transmit(clock.now()) {
            link.send(&bytes).await?;
        }
        if let Some(outcome) = dora.outcome() {
            return outcome.cloned().map_err(Clone::clone);
        }
        let Some(deadline) = dora.poll_timeout() else {
            continue;
        };
        tokio::select! {
            got = link.recv() => {
                let bytes = got?;
                dora.handle_datagram(&bytes, clock.now());
            }
            () = clock.sleep_until(deadline) => dora.handle_timeout(clock.now()),
        }
    }
}
