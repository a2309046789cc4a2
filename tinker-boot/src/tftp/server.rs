//! The TFTP driver: one socket receives read requests; each transfer runs in its
//! own task on its own socket. What one address can hold is bounded
//! ([`TftpLimits`]): its transfers at once, and what each sends without an
//! answer; a read request carries a source address anyone can forge, so these
//! bound what a spoofer can make us send to a victim.

use super::packet::{self, Packet};
use super::source::{FileSource, Origin, SourceError};
use super::transfer::{
    DEFAULT_MAX_UNANSWERED_BYTES, GaveUp, MAX_BLKSIZE_NO_FRAG, Transfer, Transmit,
};
use crate::per_address::{AddressSlot, PerAddress};
use jiff::Timestamp;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tinker_core::clock::{SharedClock, SystemClock};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Transfers at once, by default. A request beyond it is shed: not answered
/// and counted ([`TftpStats::shed`]); the client retransmits it (a PXE ROM
/// does for about 16 s) and is served when a transfer ends. An ERROR would end
/// that boot: a PXE ROM does not ask again after one.
pub const MAX_TRANSFERS: usize = 4096;

/// What the TFTP server lets clients hold. With the defaults, an address that
/// never answers (or a victim named by spoofed requests) is sent at most
/// `max_transfers_per_address × max_unanswered_bytes` (8 × 512 KiB = 4 MiB) at
/// a time, each transfer ending within `MAX_RETRIES` timeouts of at most
/// [`MAX_TIMEOUT_OPTION`](super::MAX_TIMEOUT_OPTION) seconds (about 23 s of
/// silence when the client named no timeout: see
/// [`MAX_BACKOFF`](super::MAX_BACKOFF)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TftpLimits {
    /// Transfers at once, all clients together (default [`MAX_TRANSFERS`]);
    /// each holds a socket.
    pub max_transfers: usize,
    /// Transfers at once from one address (default 8): a PXE ROM fetches one
    /// file at a time; a lab behind NAT needs more and says so here.
    pub max_transfers_per_address: usize,
    /// Bytes a transfer sends without the client acknowledging progress before
    /// it is abandoned (default
    /// [`DEFAULT_MAX_UNANSWERED_BYTES`]).
    pub max_unanswered_bytes: u64,
}

impl Default for TftpLimits {
    fn default() -> Self {
        TftpLimits {
            max_transfers: MAX_TRANSFERS,
            max_transfers_per_address: 8,
            max_unanswered_bytes: DEFAULT_MAX_UNANSWERED_BYTES,
        }
    }
}

impl TftpLimits {
    /// The defaults; set fields on the result.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Counters of the TFTP server.
#[derive(Debug, Default)]
pub struct TftpStats {
    /// Read requests received.
    pub requests: AtomicU64,
    /// Transfers completed.
    pub completed: AtomicU64,
    /// Transfers abandoned.
    pub failed: AtomicU64,
    /// Requests for files that do not exist.
    pub not_found: AtomicU64,
    /// Requests for paths outside the served directory.
    pub refused: AtomicU64,
    /// Malformed or unexpected packets (write requests included).
    pub malformed: AtomicU64,
    /// Bytes of file data acknowledged.
    pub bytes: AtomicU64,
    /// Transfers in progress now.
    pub active: AtomicU64,
    /// Requests shed (not answered; the client retransmits):
    /// [`TftpLimits::max_transfers`] were in progress.
    pub shed: AtomicU64,
    /// Requests shed (not answered; the client retransmits): their address
    /// had [`TftpLimits::max_transfers_per_address`] in progress. Silence
    /// also sends nothing to the victim of a spoofed request.
    pub shed_per_address: AtomicU64,
    /// Read requests not answered because the same client (address and port)
    /// has a transfer in progress: a retransmitted request whose answer is on
    /// its way.
    pub duplicate_requests: AtomicU64,
    /// Transfers abandoned because the client acknowledged nothing for
    /// [`TftpLimits::max_unanswered_bytes`].
    pub unanswered: AtomicU64,
    /// Files read from disk for a transfer.
    pub file_reads: AtomicU64,
    /// Transfers served from the file cache.
    pub cache_hits: AtomicU64,
}

/// The clients (address and port) with a transfer in progress.
type Peers = Arc<Mutex<HashSet<SocketAddr>>>;

/// A transfer's place: its address's slot, its client in the set of those
/// being served, and the active gauge.
struct Slot {
    _address: AddressSlot,
    peer: SocketAddr,
    peers: Peers,
    stats: Arc<TftpStats>,
}

impl Slot {
    fn new(address: AddressSlot, peer: SocketAddr, peers: &Peers, stats: &Arc<TftpStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        Slot {
            _address: address,
            peer,
            peers: peers.clone(),
            stats: stats.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.peer);
    }
}

/// How a transfer of a served file ended, as a [`TransferObserver`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// The client's address (a request's source address: anyone can forge
    /// it, though completing a transfer needs its answers).
    pub peer: IpAddr,
    /// The file, as the client named it.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// When the transfer began.
    pub started: Timestamp,
    /// When it ended.
    pub ended: Timestamp,
    /// Completed, or why it was abandoned.
    pub outcome: Result<(), GaveUp>,
}

/// Told of each transfer of a file the server has (not of requests for files
/// it has not, nor of refused ones): how the control plane puts TFTP in a
/// machine's event log. Called on the transfer's task; must not block.
pub trait TransferObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A transfer ended.
    fn transfer_ended(&self, report: TransferReport);
}

/// A read-only TFTP server.
#[derive(Debug, Clone)]
pub struct TftpServer {
    source: Arc<FileSource>,
    /// Told of each transfer's end, when set.
    observer: Option<Arc<dyn TransferObserver>>,
    stats: Arc<TftpStats>,
    max_blksize: usize,
    /// Retransmission timers run on it.
    clock: SharedClock,
    limits: TftpLimits,
}

impl TftpServer {
    /// A server for `source`.
    pub fn new(source: FileSource) -> Self {
        TftpServer {
            source: Arc::new(source),
            observer: None,
            stats: Arc::default(),
            max_blksize: MAX_BLKSIZE_NO_FRAG,
            clock: SystemClock::shared(),
            limits: TftpLimits::default(),
        }
    }

    /// Holds clients to `limits` instead of [`TftpLimits::default`].
    pub fn with_limits(mut self, limits: TftpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same server, timing retransmissions on `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Tells `observer` of each transfer's end (the control plane records
    /// them in the machines' event logs).
    pub fn with_observer(mut self, observer: Arc<dyn TransferObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<TftpStats> {
        self.stats.clone()
    }

    /// Serves read requests arriving on `socket` until `shutdown` resolves.
    pub async fn serve(
        self,
        socket: UdpSocket,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let local_ip = socket.local_addr()?.ip();
        let limit = Arc::new(Semaphore::new(self.limits.max_transfers));
        let per_address = Arc::new(PerAddress::default());
        let peers = Peers::default();
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, peer) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = socket.recv_from(&mut buf) => r?,
            };
            match Packet::decode(&buf[..n]) {
                Some(Packet::Rrq { file, options, .. }) => {
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    if !peers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer) {
                        self.stats
                            .duplicate_requests
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // From here the peer is in the set: the slot takes it out
                    // when the transfer ends, or `forget` does if it is shed.
                    let forget = || {
                        peers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&peer);
                    };
                    // Overload is shed by silence: the client's retransmission
                    // comes back, and is served once a transfer has ended.
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        forget();
                        self.stats.shed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, file, "TFTP: at the transfer limit, request shed");
                        continue;
                    };
                    let Some(address) = per_address.try_take(
                        peer.ip().to_canonical(),
                        self.limits.max_transfers_per_address,
                    ) else {
                        forget();
                        self.stats.shed_per_address.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, file, "TFTP: too many transfers from this address, request shed");
                        continue;
                    };
                    let slot = Slot::new(address, peer, &peers, &self.stats);
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _held = (permit, slot);
                        if let Err(e) = this.transfer(local_ip, peer, &file, &options).await {
                            tracing::debug!(%peer, file, error = %e, "TFTP transfer socket error");
                        }
                    });
                }
                Some(Packet::Wrq) => {
                    // Unexpected for a read-only server: refused aloud, counted.
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    let _ = socket
                        .send_to(
                            &packet::error(packet::code::ACCESS, "read-only server"),
                            peer,
                        )
                        .await;
                }
                _ => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn transfer(
        &self,
        local_ip: std::net::IpAddr,
        peer: SocketAddr,
        file: &str,
        options: &[(String, String)],
    ) -> std::io::Result<()> {
        let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
        let data = match self.source.load(file).await {
            Ok((d, origin)) => {
                match origin {
                    Origin::Disk => self.stats.file_reads.fetch_add(1, Ordering::Relaxed),
                    Origin::Cache => self.stats.cache_hits.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                d
            }
            Err(SourceError::NotFound) => {
                self.stats.not_found.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, file, "TFTP: file not found");
                socket
                    .send_to(
                        &packet::error(packet::code::NOT_FOUND, "file not found"),
                        peer,
                    )
                    .await?;
                return Ok(());
            }
            Err(SourceError::Outside) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, file, "TFTP: path outside the served directory refused");
                socket
                    .send_to(
                        &packet::error(packet::code::ACCESS, "access violation"),
                        peer,
                    )
                    .await?;
                return Ok(());
            }
        };
        let size = data.len();
        let started = self.clock.now();
        // Connected to its client: the kernel keeps other senders' packets off
        // this transfer id (RFC 1350's "unknown transfer id" case), and each
        // send skips a route lookup.
        socket.connect(peer).await?;
        let (mut t, tx) = Transfer::begin(data, options, self.max_blksize, started);
        t.limit_unanswered(self.limits.max_unanswered_bytes);
        let mut out = Vec::with_capacity(4 + t.options().blksize);
        send(&socket, &t, tx, &mut out).await?;
        let mut buf = vec![0u8; 1500];
        // The timer is armed for the deadline it was set at and moved only when
        // it fires: an ACK moves the transfer's deadline, and re-arming a timer
        // per block would cost more than the block.
        let mut timer = self.clock.sleep_until(t.deadline());
        while !t.is_complete() && !t.is_failed() {
            let tx = tokio::select! {
                r = socket.recv(&mut buf) => match r {
                    Ok(n) => {
                        let tx = t.handle(&buf[..n], self.clock.now());
                        if matches!(tx, Transmit::Blocks { .. }) {
                            drained(&socket);
                        }
                        tx
                    }
                    // An ICMP error for an earlier packet: the client may be
                    // gone; the retransmission timer decides.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e),
                },
                () = &mut timer => {
                    let now = self.clock.now();
                    if t.deadline() > now {
                        timer = self.clock.sleep_until(t.deadline());
                        continue;
                    }
                    let tx = t.expire(now);
                    timer = self.clock.sleep_until(t.deadline());
                    tx
                }
            };
            send(&socket, &t, tx, &mut out).await?;
        }
        if let Some(observer) = &self.observer {
            observer.transfer_ended(TransferReport {
                peer: peer.ip().to_canonical(),
                file: file.to_string(),
                bytes: size as u64,
                started,
                ended: self.clock.now(),
                outcome: match t.gave_up() {
                    Some(why) if !t.is_complete() => Err(why),
                    _ => Ok(()),
                },
            });
        }
        if t.is_complete() {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(size as u64, Ordering::Relaxed);
            tracing::info!(%peer, file, bytes = size, blksize = t.options().blksize, windowsize = t.options().windowsize, ms = self.clock.now().duration_since(started).as_millis() as u64, "TFTP transfer complete");
        } else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            if t.gave_up() == Some(GaveUp::Unanswered) {
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(%peer, file, reason = ?t.gave_up(), "TFTP transfer abandoned");
        }
        Ok(())
    }
}

/// Sends what the transfer asked for, each packet written into `out` in turn.
async fn send(
    socket: &UdpSocket,
    t: &Transfer,
    tx: Transmit,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    for i in 0..tx.count() {
        t.encode(tx, i, out);
        match socket.send(out).await {
            Ok(_) => {}
            // An ICMP error for an earlier packet, reported on this send: the
            // retransmission timer decides whether the client is gone.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Tells tokio that the socket holds nothing more to read, without the
/// `recv` that would find it empty: the client has just acknowledged progress
/// and answers only the blocks about to be sent, so the next `recv` waits for
/// its answer. That is one system call in three per block. Called before the
/// blocks go out: an answer to them arrives after this and is announced anew
/// (readiness is edge-triggered, per datagram). A duplicate the client sent
/// earlier may wait in the socket until the next datagram wakes the transfer,
/// and is then read and ignored; the retransmission timer covers the rest.
fn drained(socket: &UdpSocket) {
    let _ = socket.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}
