//! The TFTP driver: one socket receives read requests; each transfer runs in its
//! own task on its own socket.

use super::packet::{self, Packet};
use super::source::{FileSource, SourceError};
use super::transfer::{MAX_BLKSIZE_NO_FRAG, Transfer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tinker_core::clock::{SharedClock, SystemClock};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Transfers at once; more requests get an error ("busy") rather than a queue.
pub const MAX_TRANSFERS: usize = 4096;

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
    /// Malformed or unexpected packets.
    pub malformed: AtomicU64,
    /// Bytes of file data acknowledged.
    pub bytes: AtomicU64,
}

/// A read-only TFTP server.
#[derive(Debug, Clone)]
pub struct TftpServer {
    source: Arc<FileSource>,
    stats: Arc<TftpStats>,
    max_blksize: usize,
    /// Retransmission timers run on it.
    clock: SharedClock,
}

impl TftpServer {
    /// A server for `source`.
    pub fn new(source: FileSource) -> Self {
        TftpServer {
            source: Arc::new(source),
            stats: Arc::default(),
            max_blksize: MAX_BLKSIZE_NO_FRAG,
            clock: SystemClock::shared(),
        }
    }

    /// The same server, timing retransmissions on `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
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
        let limit = Arc::new(Semaphore::new(MAX_TRANSFERS));
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
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        let _ = socket
                            .send_to(
                                &packet::error(packet::code::UNDEFINED, "server busy, try again"),
                                peer,
                            )
                            .await;
                        continue;
                    };
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = this.transfer(local_ip, peer, &file, &options).await {
                            tracing::debug!(%peer, file, error = %e, "TFTP transfer socket error");
                        }
                    });
                }
                Some(Packet::Wrq) => {
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
        let data = match self.source.get(file) {
            Ok(d) => d,
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
        let (mut t, out) = Transfer::start(data, options, self.max_blksize, started);
        for p in out {
            socket.send_to(&p, peer).await?;
        }
        let mut buf = vec![0u8; 1500];
        while !t.is_complete() && !t.is_failed() {
            let sleep = self.clock.sleep_until(t.deadline());
            let out = tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let (n, from) = r?;
                    if from != peer {
                        // Another transfer id: tell it, carry on (RFC 1350).
                        socket.send_to(&packet::error(packet::code::UNKNOWN_TID, "unknown transfer id"), from).await?;
                        continue;
                    }
                    t.on_packet(&buf[..n], self.clock.now())
                }
                () = sleep => t.on_timeout(self.clock.now()),
            };
            for p in out {
                socket.send_to(&p, peer).await?;
            }
        }
        if t.is_complete() {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(size as u64, Ordering::Relaxed);
            tracing::info!(%peer, file, bytes = size, blksize = t.options().blksize, windowsize = t.options().windowsize, ms = self.clock.now().duration_since(started).as_millis() as u64, "TFTP transfer complete");
        } else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, file, "TFTP transfer abandoned");
        }
        Ok(())
    }
}
