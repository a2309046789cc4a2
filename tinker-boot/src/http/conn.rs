//! The connection-serving layer of the HTTP server: what one client may hold.
//! The provisioning network is shared and hostile, and every open connection is a
//! file descriptor that TFTP (a socket per transfer) and the store need too. So a
//! connection is admitted only under a total and a per-address limit (excess ones
//! are closed at once and counted by reason), its headers must arrive within a
//! deadline (which is also the keep-alive idle timeout), and a read or write that
//! makes no progress for a while ends it (slow readers, trickled bodies).
//!
//! Time comes from the server's [`Clock`](tinker_core::clock::Clock): hyper's own timers run on it through
//! [`ClockTimer`], as do the stall timers of [`Guarded`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tinker_core::clock::SharedClock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one client, and all of them together, may hold of the HTTP server. The
/// defaults suit a control plane booting ten thousand machines at once on a
/// process allowed 20,000 file descriptors or more; a smaller process should
/// lower [`max_connections`](Self::max_connections) to well below its
/// `RLIMIT_NOFILE`, leaving room for TFTP's sockets and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Connections open at once, all clients together (default 16,384). Beyond
    /// it a new connection is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Connections open at once from one address (default 64): a machine needs
    /// two or three (its script, its worker, its metadata); a lab behind NAT
    /// needs more and says so here.
    pub max_connections_per_address: usize,
    /// Time for a request's headers to arrive, counted from the connection's
    /// start or the end of the previous answer; so it is also how long a
    /// kept-alive connection may sit idle (default 10 s). A connection that
    /// trickles its headers (slowloris) is closed when it runs out.
    pub header_read_timeout: Duration,
    /// How long a read or a write may make no progress while a request is under
    /// way before the connection is closed (default 30 s): a client that stops
    /// reading its answer, or sends its body a byte at a time. The connection is
    /// watched while its answer is prepared too, so a handler must answer, and
    /// an answer that streams for long (a watch, a log follow) must send
    /// something, within this time.
    pub stall_timeout: Duration,
    /// The largest request head (request line and headers) in bytes (default
    /// 64 KiB; hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// Kept-alive connections left open while they wait for their next
    /// request (default 12,288, three quarters of the default
    /// [`max_connections`](Self::max_connections)). Past it the one idle
    /// longest is closed (its client opens a new one for its next request, as
    /// after the idle timeout), so that idle agents do not hold every
    /// connection and new ones are admitted rather than refused. Each close
    /// costs a reconnection (and a connection-tracking entry in any firewall
    /// on the way), so the cap sits well above what most sites keep open.
    pub max_idle_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 16_384,
            max_connections_per_address: 64,
            header_read_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_idle_connections: 12_288,
        }
    }
}

impl HttpLimits {
    /// The defaults; set fields on the result (the struct is non-exhaustive so
    /// that new limits can be added).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why a connection was closed before (or instead of) being served. Rendered as
/// the `reason` label of `tinker_http_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// [`HttpLimits::max_connections`] were open.
    TotalLimit,
    /// [`HttpLimits::max_connections_per_address`] were open from its address.
    PerAddressLimit,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TotalLimit => "total_limit",
            Refusal::PerAddressLimit => "per_address_limit",
        }
    }
}

/// Counters and the gauge of the connection layer.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted and served.
    pub served: AtomicU64,
    /// Connections closed at once: the total limit was reached.
    pub refused_total: AtomicU64,
    /// Connections closed at once: the per-address limit was reached.
    pub refused_per_address: AtomicU64,
    /// Connections closed because their headers did not arrive in time (idle
    /// keep-alive connections included).
    pub header_timeouts: AtomicU64,
    /// Connections closed because a read or write made no progress.
    pub stalled: AtomicU64,
    /// Kept-alive connections closed while idle: more than
    /// [`HttpLimits::max_idle_connections`] waited for a request.
    pub idle_closed: AtomicU64,
}

impl ConnStats {
    /// Counts a refusal.
    pub fn refused(&self, why: Refusal) {
        let c = match why {
            Refusal::TotalLimit => &self.refused_total,
            Refusal::PerAddressLimit => &self.refused_per_address,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for ConnStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let gauge = ConstGauge::new(load(&self.open) as i64);
        gauge.encode(encoder.encode_descriptor(
            "tinker_http_connections_open",
            "HTTP connections open",
            None,
            gauge.metric_type(),
        )?)?;
        let counter = |encoder: &mut DescriptorEncoder, name, help, v: u64| {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
        };
        counter(
            &mut encoder,
            "tinker_http_connections_served",
            "HTTP connections admitted and served",
            load(&self.served),
        )?;
        counter(
            &mut encoder,
            "tinker_http_connections_header_timeouts",
            "HTTP connections closed: headers late or idle keep-alive",
            load(&self.header_timeouts),
        )?;
        counter(
            &mut encoder,
            "tinker_http_connections_stalled",
            "HTTP connections closed: a read or write made no progress",
            load(&self.stalled),
        )?;
        counter(
            &mut encoder,
            "tinker_http_connections_idle_closed",
            "kept-alive HTTP connections closed while idle: past the idle cap, oldest first",
            load(&self.idle_closed),
        )?;
        let refused = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "tinker_http_connections_refused",
            "HTTP connections closed at once by a limit",
            None,
            refused.metric_type(),
        )?;
        for why in [Refusal::TotalLimit, Refusal::PerAddressLimit] {
            let v = match why {
                Refusal::TotalLimit => load(&self.refused_total),
                Refusal::PerAddressLimit => load(&self.refused_per_address),
            };
            ConstCounter::new(v).encode(family.encode_family(&[("reason", why.label())])?)?;
        }
        Ok(())
    }
}

/// Keeps the open-connections gauge right however the connection ends.
#[derive(Debug)]
pub(crate) struct OpenGuard(pub(crate) Arc<ConnStats>);

impl OpenGuard {
    pub(crate) fn new(stats: Arc<ConnStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        stats.served.fetch_add(1, Ordering::Relaxed);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

fn sleep_on(clock: &SharedClock, d: Duration) -> SleepFuture {
    let clock = clock.clone();
    Box::pin(async move { clock.sleep(d).await })
}

/// A byte stream whose reads and writes each fail with `TimedOut` after making
/// no progress for the stall timeout. Progress either way restarts both timers:
/// a client downloading a large image sends nothing for minutes, and one sending
/// a body reads nothing.
pub(crate) struct Guarded<I> {
    io: I,
    clock: SharedClock,
    stall: Duration,
    read_timer: Option<SleepFuture>,
    write_timer: Option<SleepFuture>,
    stats: Arc<ConnStats>,
    /// Its place among the idle connections, when the server caps them.
    idle: Option<Arc<ConnState>>,
}

impl<I> Guarded<I> {
    pub(crate) fn new(io: I, clock: SharedClock, stall: Duration, stats: Arc<ConnStats>) -> Self {
        Guarded {
            io,
            clock,
            stall,
            read_timer: None,
            write_timer: None,
            stats,
            idle: None,
        }
    }

    /// Ends the stream (a clean end of input, as if the client had closed
    /// it) when `state` is told to close while no request is in flight.
    pub(crate) fn closed_when_idle(mut self, state: Arc<ConnState>) -> Self {
        self.idle = Some(state);
        self
    }

    fn progressed(&mut self) {
        self.read_timer = None;
        self.write_timer = None;
    }

    /// Called when the inner stream is not ready: arms the timer on first use
    /// and fails once it has run out.
    fn stalled(
        timer: &mut Option<SleepFuture>,
        clock: &SharedClock,
        stall: Duration,
        stats: &ConnStats,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Error> {
        let t = timer.get_or_insert_with(|| sleep_on(clock, stall));
        match t.as_mut().poll(cx) {
            Poll::Ready(()) => {
                stats.stalled.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client made no progress",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progressed();
                    if let Some(idle) = &this.idle {
                        // The client spoke first: it keeps its connection.
                        idle.close.store(false, Ordering::Relaxed);
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some(idle) = &this.idle {
                    if idle.should_close() {
                        // Nothing buffered, no request in flight: hyper sees the
                        // end of input between requests and closes cleanly.
                        return Poll::Ready(Ok(()));
                    }
                    idle.wake_with(cx.waker());
                }
                Self::stalled(
                    &mut this.read_timer,
                    &this.clock,
                    this.stall,
                    &this.stats,
                    cx,
                )
                .map(Err)
            }
        }
    }
}

impl<I> Guarded<I> {
    /// What a write-side poll of the inner stream answered, with the stall
    /// timer applied: progress (`made_progress`) restarts both timers, a
    /// pending poll arms or checks the write timer.
    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
        made_progress: impl FnOnce(&T) -> bool,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                if r.as_ref().is_ok_and(made_progress) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => Self::stalled(
                &mut self.write_timer,
                &self.clock,
                self.stall,
                &self.stats,
                cx,
            )
            .map(Err),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(cx, polled, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, polled, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        // A flush that completes is not progress by itself (it moved no bytes).
        this.written(cx, polled, |_| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One connection as the idle cap sees it: how many of its requests are being
/// served, where it stands in the idle queue, and the word to close.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Requests whose answer is not yet sent (the service was called, the
    /// response body not yet dropped).
    in_flight: AtomicUsize,
    /// Its key in the idle queue; 0 while not in it.
    idle_key: AtomicU64,
    /// Told to close while idle.
    close: AtomicBool,
    /// Its task, to wake when told to close.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    fn should_close(&self) -> bool {
        self.close.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Acquire) == 0
    }

    fn wake_with(&self, waker: &Waker) {
        let mut w = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*w {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }
}

/// The kept-alive connections waiting for their next request, oldest first,
/// at most [`HttpLimits::max_idle_connections`]: one more makes the oldest
/// close.
#[derive(Debug)]
pub(crate) struct IdleConns {
    cap: usize,
    /// The last key handed out, and the idle connections by key (keys grow,
    /// so the first is the one idle longest).
    queue: Mutex<(u64, BTreeMap<u64, Arc<ConnState>>)>,
    stats: Arc<ConnStats>,
}

impl IdleConns {
    pub(crate) fn new(cap: usize, stats: Arc<ConnStats>) -> Arc<Self> {
        Arc::new(IdleConns {
            cap,
            queue: Mutex::default(),
            stats,
        })
    }

    /// A request arrived on `conn`: it is no longer idle.
    pub(crate) fn busy(&self, conn: &Arc<ConnState>) {
        if conn.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.unqueue(conn);
        }
    }

    /// An answer on `conn` was sent (or dropped): with none left in flight,
    /// it waits for its next request, and the oldest waiting past the cap
    /// are told to close.
    pub(crate) fn done(&self, conn: &Arc<ConnState>) {
        if conn.in_flight.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut victims = Vec::new();
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.0 += 1;
            let key = q.0;
            conn.idle_key.store(key, Ordering::Relaxed);
            q.1.insert(key, conn.clone());
            while q.1.len() > self.cap {
                let Some((_, oldest)) = q.1.pop_first() else {
                    break;
                };
                oldest.idle_key.store(0, Ordering::Relaxed);
                victims.push(oldest);
            }
        }
        for v in victims {
            v.close.store(true, Ordering::Relaxed);
            self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
            let waker = v.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// `conn` ended: out of the queue.
    pub(crate) fn gone(&self, conn: &Arc<ConnState>) {
        self.unqueue(conn);
    }

    fn unqueue(&self, conn: &ConnState) {
        let key = conn.idle_key.swap(0, Ordering::Relaxed);
        if key != 0 {
            self.queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .remove(&key);
        }
    }
}

/// A connection's hold on the idle queue: out of it when the connection ends.
pub(crate) struct IdleSlot(pub(crate) Arc<IdleConns>, pub(crate) Arc<ConnState>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.gone(&self.1);
    }
}

/// Marks a request answered when dropped: the response body, once hyper has
/// sent it (or given up on it).
pub(crate) struct Answered(pub(crate) Arc<IdleConns>, pub(crate) Arc<ConnState>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.done(&self.1);
    }
}

/// hyper's timer (its header-read timeout) on the server's [`Clock`](tinker_core::clock::Clock), so the
/// timeout runs under a simulated clock as under the system's, and on a runtime
/// without tokio's time driver. hyper speaks [`Instant`]s; they are mapped onto
/// the clock from one anchor taken when the timer is made.
#[derive(Debug, Clone)]
pub(crate) struct ClockTimer {
    clock: SharedClock,
    anchor: Instant,
    anchor_at: jiff::Timestamp,
}

impl ClockTimer {
    pub(crate) fn new(clock: SharedClock) -> Self {
        ClockTimer {
            anchor_at: clock.now(),
            // The only reading of the process's own clock: a fixed origin for
            // hyper's `Instant`s, never used to decide anything by itself.
            anchor: Instant::now(),
            clock,
        }
    }

    fn at(&self, deadline: Instant) -> jiff::Timestamp {
        let after = deadline.saturating_duration_since(self.anchor);
        self.anchor_at
            .checked_add(after)
            .unwrap_or(jiff::Timestamp::MAX)
    }
}

/// A clock sleep as hyper wants it: `Sync` too (the boxed future is only
/// `Send`; the mutex is never contended, it is reached through `&mut`).
struct ClockSleep(Mutex<SleepFuture>);

impl Future for ClockSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        inner.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for ClockSleep {}

impl hyper::rt::Timer for ClockTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ClockSleep(Mutex::new(sleep_on(&self.clock, duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let clock = self.clock.clone();
        let at = self.at(deadline);
        Box::pin(ClockSleep(Mutex::new(Box::pin(async move {
            clock.sleep_until(at).await
        }))))
    }

    fn now(&self) -> Instant {
        let since = self.clock.now().duration_since(self.anchor_at);
        let since = since.try_into().unwrap_or(Duration::ZERO);
        self.anchor + since
    }
}

/// The hyper connection builder with the limits applied.
pub(crate) fn builder(
    limits: &HttpLimits,
    clock: &SharedClock,
) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.keep_alive(true)
        // Without a timer hyper silently ignores the header timeout.
        .timer(ClockTimer::new(clock.clone()))
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b
}
