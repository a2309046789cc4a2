//! Batched datagram I/O for the DHCP driver: up to [`BATCH`] requests read with
//! one `recvmmsg` and their replies written with one `sendmmsg`, where the
//! profile of issue 17 spent a third of the server's time in one `sendto` and
//! one `recvfrom` (plus an `epoll_wait` and a wakeup) per packet.
//!
//! Why these crates and not `quinn-udp`: its batched receive turns on UDP GRO,
//! which merges same-sized datagrams from one sender (every request of one
//! relay) into one buffer to split again, and its send has no `sendmmsg` (GSO
//! only batches datagrams of one size to one destination). `nix` gives a safe
//! `recvmmsg` with each datagram's `SO_RXQ_OVFL` count (how many the kernel
//! dropped for want of room: the shed the server cannot see otherwise);
//! `rustix` a safe `sendmmsg` (nix's reads each message's address slot back,
//! which a send never fills). No GRO, so one buffer is one datagram.

use super::Outbound;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg};
use rustix::net::addr::SocketAddrArg;
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// The largest request read whole; longer ones are cut (and then fail to
/// parse, counted as malformed). DHCP's own minimum is 576.
const MAX_DATAGRAM: usize = 1500;

thread_local! {
    /// recvmmsg's headers hold raw pointers (not `Send`), so they cannot live
    /// in the receive loop's future across an `.await`; one set per thread,
    /// used only inside one synchronous call, spares an allocation per batch.
    static HEADERS: RefCell<Option<MultiHeaders<SockaddrIn>>> = const { RefCell::new(None) };
}

/// One receive loop's buffers and what its last [`recv`](Self::recv) read.
#[derive(Debug)]
pub struct Received {
    bufs: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    got: Vec<(usize, Option<SocketAddr>)>,
    /// The kernel's drop count last reported on this socket.
    drops_seen: u32,
}

/// What one [`Received::recv`] saw besides the datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Got {
    /// Datagrams read.
    pub datagrams: usize,
    /// Datagrams the kernel dropped since the previous report (its receive
    /// queue was full).
    pub dropped: u64,
}

impl Default for Received {
    fn default() -> Self {
        Self::new()
    }
}

impl Received {
    /// Empty buffers for [`BATCH`] datagrams.
    pub fn new() -> Self {
        Received {
            bufs: Box::new([[0; MAX_DATAGRAM]; BATCH]),
            got: Vec::with_capacity(BATCH),
            drops_seen: 0,
        }
    }

    /// Reads what is queued on `socket`, up to [`BATCH`] datagrams, without
    /// waiting (`WouldBlock` when nothing is).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> std::io::Result<Got> {
        self.got.clear();
        let fd = socket.as_raw_fd();
        let bufs = &mut self.bufs;
        let got = &mut self.got;
        let newest = HEADERS.with(|cell| -> std::io::Result<Option<u32>> {
            let mut cell = cell.borrow_mut();
            let headers = cell.get_or_insert_with(|| {
                MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u32)))
            });
            let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(std::io::Error::from)?;
            let mut newest = None;
            for msg in results {
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::RxqOvfl(n) = c {
                            newest = Some(n);
                        }
                    }
                }
                let source = msg.address.map(|a| SocketAddr::V4(a.into()));
                got.push((msg.bytes.min(MAX_DATAGRAM), source));
            }
            Ok(newest)
        })?;
        // The count is the socket's total at the time the datagram was queued;
        // report what it grew by.
        let mut dropped = 0;
        if let Some(n) = newest {
            dropped = u64::from(n.wrapping_sub(self.drops_seen));
            self.drops_seen = n;
        }
        Ok(Got {
            datagrams: self.got.len(),
            dropped,
        })
    }

    /// The datagrams the last [`recv`](Self::recv) read, with their senders.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got
            .iter()
            .zip(self.bufs.iter())
            .filter_map(|(&(len, source), buf)| Some((&buf[..len], source?)))
    }
}

/// Sends the first [`BATCH`] of `replies` with one `sendmmsg`, without waiting;
/// returns how many the kernel took (an error only when it took none).
pub fn send(socket: &impl AsFd, replies: &[Outbound]) -> std::io::Result<usize> {
    let replies = &replies[..replies.len().min(BATCH)];
    let addrs: Vec<SocketAddrAny> = replies.iter().map(|o| o.dest.as_any()).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = replies.iter().map(|o| [IoSlice::new(&o.bytes)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = replies
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    Ok(rustix::net::sendmmsg(
        socket,
        &mut msgs,
        SendFlags::DONTWAIT,
    )?)
}
