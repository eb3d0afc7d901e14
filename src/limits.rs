//! Limits on what one client address may hold or try, so a flood from one address is
//! refused (429, or the connection closed) and counted, and never starves the others.
//!
//! ```text
//! accept (HTTP, RTMP, RTMPS) -- connections_per_ip --> refused: 429 + close / close
//! RTMP/SRT publish        -- publishers_per_node, failed publish attempts per IP/min
//! blocking playlist       -- blocking_requests_per_client --> 429
//! every HTTP connection   -- slow_client_timeout_ms: a write that makes no progress
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The `[limits]` table: every limit with its default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    /// Open connections from one address, on the HTTP listener and on the RTMP
    /// listeners (each counted apart). High by default: every viewer behind one NAT or
    /// proxy shares its address, and an LL-HLS viewer on HTTP/1.1 keeps two
    /// connections (a held playlist request and a part).
    pub(crate) connections_per_ip: u32,
    /// Publishers (RTMP, RTMPS, SRT) this node ingests at once.
    pub(crate) publishers_per_node: u32,
    /// Refused publish attempts (a wrong or revoked stream key) one address may make in
    /// a minute; past it every attempt from that address is refused until the minute
    /// has passed (stream-key guessing).
    pub(crate) failed_publishes_per_ip_per_minute: u32,
    /// Request head (line and headers) size, bytes: larger heads get 431.
    pub(crate) http_max_header_bytes: u32,
    /// Admin API request body size, bytes: larger bodies get 413.
    pub(crate) http_max_body_bytes: u32,
    /// A connection that sends no request head within this is closed (keep-alive idle
    /// time included).
    pub(crate) http_idle_timeout_ms: u64,
    /// A response write that makes no progress for this long closes the connection.
    pub(crate) slow_client_timeout_ms: u64,
    /// Blocking playlist requests one address may have held at once (one or two per
    /// viewer; other nodes' signed pulls are not counted).
    pub(crate) blocking_requests_per_client: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connections_per_ip: 1024,
            publishers_per_node: 128,
            failed_publishes_per_ip_per_minute: 20,
            http_max_header_bytes: 16 * 1024,
            http_max_body_bytes: 1024 * 1024,
            http_idle_timeout_ms: 10_000,
            slow_client_timeout_ms: 30_000,
            blocking_requests_per_client: 1024,
        }
    }
}

/// Which limit refused something (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    ConnectionsPerIp,
    PublishersPerNode,
    FailedPublishesPerIp,
    BlockingRequestsPerClient,
    SlowClient,
}

impl Limit {
    const ALL: [Limit; 5] = [
        Limit::ConnectionsPerIp,
        Limit::PublishersPerNode,
        Limit::FailedPublishesPerIp,
        Limit::BlockingRequestsPerClient,
        Limit::SlowClient,
    ];

    fn name(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::PublishersPerNode => "publishers_per_node",
            Limit::FailedPublishesPerIp => "failed_publishes_per_ip_per_minute",
            Limit::BlockingRequestsPerClient => "blocking_requests_per_client",
            Limit::SlowClient => "slow_client_timeout",
        }
    }
}

/// The address a per-address limit counts: an IPv4 address (also when it comes mapped
/// into IPv6), or an IPv6 address's /64 (one subscriber's network: a host has 2^64
/// addresses to rotate through).
pub(crate) fn client(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Counts per address; an entry goes when its count is back to zero.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, u32>>);

impl PerIp {
    /// One more for `ip` unless it already has `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<Held> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection or request counted against its address, until dropped.
pub(crate) struct Held {
    counts: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counts.0.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

/// The node's limits and their counters, shared by every listener.
pub(crate) struct Limits {
    pub(crate) config: LimitsConfig,
    http_connections: Arc<PerIp>,
    rtmp_connections: Arc<PerIp>,
    blocking: Arc<PerIp>,
    publishers: Arc<PerIp>,
    /// Times of refused publish attempts per address, oldest first (last minute).
    failed_publishes: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    refusals: [AtomicU64; Limit::ALL.len()],
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish()
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener {
    Http,
    Rtmp,
}

const MINUTE: Duration = Duration::from_secs(60);
/// Addresses remembered for failed publishes at most (a bound against spoofed floods).
const MAX_TRACKED_ADDRESSES: usize = 65_536;

impl Limits {
    pub(crate) fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            http_connections: Arc::default(),
            rtmp_connections: Arc::default(),
            blocking: Arc::default(),
            publishers: Arc::default(),
            failed_publishes: Mutex::default(),
            refusals: Default::default(),
        }
    }

    pub(crate) fn refused(&self, limit: Limit) {
        if let Some(i) = Limit::ALL.iter().position(|l| *l == limit) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection from `ip`, or `None` (refused, counted) when it has too many.
    pub(crate) fn connection(&self, listener: Listener, ip: IpAddr) -> Option<Held> {
        let counts = match listener {
            Listener::Http => &self.http_connections,
            Listener::Rtmp => &self.rtmp_connections,
        };
        let held = counts.take(client(ip), self.config.connections_per_ip);
        if held.is_none() {
            self.refused(Limit::ConnectionsPerIp);
        }
        held
    }

    /// A blocking request from `ip`, or `None` (refused, counted).
    pub(crate) fn blocking_request(&self, ip: IpAddr) -> Option<Held> {
        let held = self
            .blocking
            .take(client(ip), self.config.blocking_requests_per_client);
        if held.is_none() {
            self.refused(Limit::BlockingRequestsPerClient);
        }
        held
    }

    /// Why `ip` may not try to publish now, if it may not.
    pub(crate) fn publish_refusal(&self, ip: IpAddr, now: Instant) -> Option<String> {
        let ip = client(ip);
        let max = self.config.failed_publishes_per_ip_per_minute;
        let mut failed = self.failed_publishes.lock().ok()?;
        let times = failed.get_mut(&ip)?;
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            times.pop_front();
        }
        if times.is_empty() {
            failed.remove(&ip);
            return None;
        }
        if times.len() >= max as usize {
            drop(failed);
            self.refused(Limit::FailedPublishesPerIp);
            return Some(format!(
                "too many refused publish attempts from this address (more than {max} a minute): try again later"
            ));
        }
        None
    }

    /// Remembers a refused publish attempt (a wrong key) from `ip`.
    pub(crate) fn publish_failed(&self, ip: IpAddr, now: Instant) {
        let ip = client(ip);
        let Ok(mut failed) = self.failed_publishes.lock() else {
            return;
        };
        if failed.len() >= MAX_TRACKED_ADDRESSES && !failed.contains_key(&ip) {
            failed.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < MINUTE)
            });
            if failed.len() >= MAX_TRACKED_ADDRESSES {
                return;
            }
        }
        let times = failed.entry(ip).or_default();
        times.push_back(now);
        // Only the last `max` matter.
        let max = self.config.failed_publishes_per_ip_per_minute.max(1) as usize;
        while times.len() > max {
            times.pop_front();
        }
    }

    /// A publisher slot on this node, or `None` (refused, counted) when they are taken.
    pub(crate) fn publisher(&self) -> Option<Held> {
        // One shared key: publishers are counted per node, not per address.
        let held = self
            .publishers
            .take(IpAddr::from([0, 0, 0, 0]), self.config.publishers_per_node);
        if held.is_none() {
            self.refused(Limit::PublishersPerNode);
        }
        held
    }

    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("# HELP sluice_limit_refusals_total Connections, requests and publishes refused by a limit.\n");
        out.push_str("# TYPE sluice_limit_refusals_total counter\n");
        for (i, limit) in Limit::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "sluice_limit_refusals_total{{limit=\"{}\"}} {}",
                limit.name(),
                self.refusals[i].load(Ordering::Relaxed)
            );
        }
    }
}

/// A connection held against its address's count, whose writes must make progress
/// within the slow-client timeout.
pub(crate) struct Guarded<S> {
    inner: S,
    _held: Option<Held>,
    slow_after: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    limits: Arc<Limits>,
}

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S, held: Option<Held>, limits: Arc<Limits>) -> Self {
        Self {
            inner,
            _held: held,
            slow_after: Duration::from_millis(limits.config.slow_client_timeout_ms.max(1)),
            stalled: None,
            limits,
        }
    }

    /// A write-side poll's result: `Pending` starts (or checks) the stall clock, which
    /// fails the write once it runs out; progress stops the clock.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => match self.stall(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let after = self.slow_after;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.limits.refused(Limit::SlowClient);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read nothing for the slow-client timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits::new(LimitsConfig {
            connections_per_ip: 2,
            publishers_per_node: 1,
            failed_publishes_per_ip_per_minute: 3,
            blocking_requests_per_client: 1,
            ..Default::default()
        })
    }

    /// 500 viewers behind one NAT (a school, an office, a carrier-grade NAT) each hold
    /// a playlist request and a part connection: the defaults let them all in (with
    /// 64 held requests per address, the 65th viewer got 429), and still cap one host.
    #[test]
    fn the_defaults_let_500_viewers_share_one_address() {
        let l = Limits::new(LimitsConfig::default());
        let nat: IpAddr = "198.51.100.7".parse().expect("ip");
        let held: Vec<_> = (0..1000).map(|_| l.blocking_request(nat)).collect();
        assert!(held.iter().all(Option::is_some));
        let open: Vec<_> = (0..1000)
            .map(|_| l.connection(Listener::Http, nat))
            .collect();
        assert!(open.iter().all(Option::is_some));
        let more: Vec<_> = (0..100).map(|_| l.blocking_request(nat)).collect();
        assert!(more.iter().any(Option::is_none), "still a cap per address");
    }

    /// An IPv6 host rotating through its /64 is one client; another /64 is another; an
    /// IPv4 address mapped into IPv6 is that IPv4 address.
    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let l = small();
        let host = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let held: Vec<_> = (1..=2)
            .map(|i| l.connection(Listener::Http, host(i)))
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert!(
            l.connection(Listener::Http, host(0xbeef)).is_none(),
            "same /64"
        );
        let other = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(l.connection(Listener::Http, other).is_some(), "another /64");
        let v4: IpAddr = "10.0.0.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().expect("ip");
        assert_eq!(client(mapped), v4);
        let t0 = Instant::now();
        for i in 0..10 {
            l.publish_failed(host(100 + i), t0);
        }
        assert!(
            l.publish_refusal(host(7), t0).is_some(),
            "failures add up per /64"
        );
    }

    #[test]
    fn connections_are_counted_per_address_until_dropped() {
        let l = small();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = l.connection(Listener::Http, a);
        let second = l.connection(Listener::Http, a);
        assert!(first.is_some() && second.is_some());
        assert!(l.connection(Listener::Http, a).is_none(), "third from a");
        assert!(l.connection(Listener::Http, b).is_some(), "b is not a");
        assert!(
            l.connection(Listener::Rtmp, a).is_some(),
            "RTMP counts apart"
        );
        drop(first);
        assert!(
            l.connection(Listener::Http, a).is_some(),
            "a slot came back"
        );
        let mut text = String::new();
        l.render(&mut text);
        assert!(text.contains("sluice_limit_refusals_total{limit=\"connections_per_ip\"} 1"));
    }

    #[test]
    fn failed_publishes_lock_an_address_out_for_a_minute() {
        let l = small();
        let a = IpAddr::from([10, 0, 0, 1]);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.publish_refusal(a, t0), None, "attempt {i}");
            l.publish_failed(a, t0);
        }
        assert!(l.publish_refusal(a, t0 + Duration::from_secs(30)).is_some());
        assert_eq!(l.publish_refusal(IpAddr::from([10, 0, 0, 9]), t0), None);
        assert_eq!(l.publish_refusal(a, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn publishers_and_blocking_requests_have_their_own_counts() {
        let l = small();
        let p = l.publisher();
        assert!(p.is_some());
        assert!(l.publisher().is_none());
        drop(p);
        assert!(l.publisher().is_some());
        let a = IpAddr::from([10, 0, 0, 1]);
        let held = l.blocking_request(a);
        assert!(held.is_some());
        assert!(l.blocking_request(a).is_none());
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_is_cut_off() {
        use tokio::io::AsyncWriteExt as _;
        let limits = Arc::new(Limits::new(LimitsConfig {
            slow_client_timeout_ms: 200,
            ..Default::default()
        }));
        // A 1-byte pipe nobody reads: the second write stalls.
        let (client, _reader) = tokio::io::duplex(1);
        let mut guarded = Guarded::new(client, None, limits.clone());
        let started = Instant::now();
        let r = guarded.write_all(&[0u8; 64]).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(200));
        let mut text = String::new();
        limits.render(&mut text);
        assert!(text.contains("limit=\"slow_client_timeout\"} 1"));
    }
}
