//! The SRT listener's front: the public UDP port is Sluice's, not the SRT library's.
//!
//! ```text
//! caller --UDP--> front (public port) --admit()--> relay socket for that caller
//!                                                    --loopback--> srt-tokio listener
//! caller <--UDP-- front <-- relay socket (a handshake gets the caller's address back)
//! ```
//!
//! srt-protocol 0.4 panics while parsing a few datagrams anyone can send
//! ([`sluice_media::srt_datagram`]), and that panic ends the library's listener task with
//! every connection it carries. The front checks each datagram first, so those never
//! reach the library, and anything the check missed still panics only here, in
//! `admit`, where it is caught and the datagram dropped. Each caller gets its own
//! loopback relay socket, so the library still tells callers apart by address;
//! [`Front::caller`] maps a relay back to the caller for limits and logs.
//!
//! Relays are bounded: at most [`MAX_CALLERS`], each dropped after [`CALLER_IDLE`]
//! without a datagram from its caller. When the table is full, a caller the library has
//! not acknowledged yet (only handshakes or stray datagrams, as a flood sends) makes
//! room; callers with a connection (the library sends them ACKs) are never evicted.
//! One source address (an IPv6 /64) has at most [`MAX_CALLERS_PER_SOURCE`] relays: a
//! host that opens more makes room among its own, so one flooding host cannot push
//! other hosts' handshakes out.
//!
//! The front also remembers which callers sent key material in their handshake: a
//! caller that encrypts but leaves the key length to its default advertises no key
//! size, and accepting it without a passphrase panics the library; the listener
//! refuses such a caller for a channel without one (`Front::sent_key_material`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Callers with a relay at once.
pub(crate) const MAX_CALLERS: usize = 512;
/// Callers with a relay at once from one source address (an IPv6 /64).
pub(crate) const MAX_CALLERS_PER_SOURCE: usize = 32;
/// A relay whose caller sent nothing for this long is closed (SRT keepalives come
/// every second; the library itself gives a peer 5 s).
pub(crate) const CALLER_IDLE: Duration = Duration::from_secs(10);
/// Larger than any SRT datagram (the MTU is at most 1500 bytes).
const DATAGRAM: usize = 2048;

pub(crate) struct Front {
    public: Arc<UdpSocket>,
    /// Loopback of the public port's address family: relays and the library bind it.
    loopback: IpAddr,
    /// Where the library listens (loopback, same address family as `public`).
    library: Mutex<SocketAddr>,
    callers: Mutex<Callers>,
}

#[derive(Default)]
struct Callers {
    by_caller: HashMap<SocketAddr, Relay>,
    by_relay: HashMap<SocketAddr, SocketAddr>,
    refused: u64,
    last_warned: Option<Instant>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    last_heard: Instant,
    /// The library acknowledged data from it (a connected publisher).
    streaming: bool,
    /// Its handshake carried key material.
    key_material: bool,
    task: tokio::task::AbortHandle,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    /// Binds the public port.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Arc<Front>> {
        let public = UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow!("binding srt listener {addr}: {e}"))?;
        let loopback = loopback(&public.local_addr()?);
        Ok(Arc::new(Front {
            public: Arc::new(public),
            loopback,
            library: Mutex::new(SocketAddr::new(loopback, 0)),
            callers: Mutex::new(Callers::default()),
        }))
    }

    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.public.local_addr()?)
    }

    /// The loopback address the library should listen on: the one it had, if any.
    pub(crate) fn library_addr(&self) -> SocketAddr {
        *self.library.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_library_addr(&self, addr: SocketAddr) {
        *self.library.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    /// The caller behind a relay address the library reports as its peer.
    pub(crate) fn caller(&self, relay: SocketAddr) -> Option<SocketAddr> {
        self.lock().by_relay.get(&relay).copied()
    }

    /// Whether the caller behind `relay` sent key material in its handshake.
    pub(crate) fn sent_key_material(&self, relay: SocketAddr) -> bool {
        let callers = self.lock();
        callers
            .by_relay
            .get(&relay)
            .and_then(|c| callers.by_caller.get(c))
            .is_some_and(|r| r.key_material)
    }

    /// The library acknowledged `caller`'s data: it has a connection, never evicted.
    fn acknowledged(&self, caller: SocketAddr) {
        if let Some(r) = self.lock().by_caller.get_mut(&caller) {
            r.streaming = true;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Callers> {
        self.callers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Relays datagrams until `stop` fires.
    pub(crate) async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut buf = vec![0u8; DATAGRAM];
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let (len, from) = tokio::select! {
                r = self.public.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        // ICMP errors for earlier sends show up here on some systems.
                        tracing::debug!(error = %e, "srt front: receive");
                        continue;
                    }
                },
                _ = sweep.tick() => {
                    self.sweep(Instant::now());
                    continue;
                }
                _ = stop.wait_for(|s| *s) => {
                    self.lock().by_caller.clear();
                    return;
                }
            };
            let datagram = &buf[..len];
            if let Err(why) = admit(datagram) {
                self.refused(from, &why);
                continue;
            }
            let key_material = sluice_media::srt_datagram::carries_key_material(datagram);
            let Some(relay) = self.relay_for(from, key_material).await else {
                continue;
            };
            let to = self.library_addr();
            if let Err(e) = relay.send_to(datagram, to).await {
                tracing::debug!(error = %e, "srt front: relaying to the listener");
            }
        }
    }

    fn refused(&self, from: SocketAddr, why: &str) {
        let now = Instant::now();
        let mut callers = self.lock();
        callers.refused += 1;
        let quiet = callers
            .last_warned
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10));
        if !quiet {
            callers.last_warned = Some(now);
            tracing::warn!(%from, why, refused_so_far = callers.refused,
                "srt: dropped a datagram the SRT library must not see");
        }
    }

    /// The relay socket for `caller`, made on its first datagram.
    async fn relay_for(
        self: &Arc<Self>,
        caller: SocketAddr,
        key_material: bool,
    ) -> Option<Arc<UdpSocket>> {
        let now = Instant::now();
        {
            let mut callers = self.lock();
            if let Some(relay) = callers.by_caller.get_mut(&caller) {
                relay.last_heard = now;
                relay.key_material |= key_material;
                return Some(relay.socket.clone());
            }
            let source = crate::limits::client(caller.ip());
            if callers.count_from(source) >= MAX_CALLERS_PER_SOURCE
                && !callers.make_room(Some(source))
            {
                return None;
            }
            if callers.by_caller.len() >= MAX_CALLERS && !callers.make_room(None) {
                return None;
            }
        }
        let socket = match UdpSocket::bind(SocketAddr::new(self.loopback, 0)).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "srt front: no relay socket for a caller");
                return None;
            }
        };
        let local = socket.local_addr().ok()?;
        let task = tokio::spawn(back(self.clone(), socket.clone(), caller)).abort_handle();
        let mut callers = self.lock();
        callers.by_relay.insert(local, caller);
        let relay = Relay {
            socket: socket.clone(),
            local,
            last_heard: now,
            streaming: false,
            key_material,
            task,
        };
        if let Some(old) = callers.by_caller.insert(caller, relay) {
            // Two first datagrams raced: keep the newer relay.
            callers.by_relay.remove(&old.local);
        }
        Some(socket)
    }

    fn sweep(&self, now: Instant) {
        let mut callers = self.lock();
        let idle: Vec<SocketAddr> = callers
            .by_caller
            .iter()
            .filter(|(_, r)| now.duration_since(r.last_heard) >= CALLER_IDLE)
            .map(|(c, _)| *c)
            .collect();
        for caller in idle {
            callers.remove(&caller);
        }
    }
}

impl Callers {
    fn remove(&mut self, caller: &SocketAddr) {
        if let Some(relay) = self.by_caller.remove(caller) {
            self.by_relay.remove(&relay.local);
        }
    }

    /// Relays of callers from `source` (an address as `limits::client` counts it).
    fn count_from(&self, source: IpAddr) -> usize {
        self.by_caller
            .keys()
            .filter(|c| crate::limits::client(c.ip()) == source)
            .count()
    }

    /// Drops the longest-silent caller (from `source`, when given) the library never
    /// acknowledged; false if there is none.
    fn make_room(&mut self, source: Option<IpAddr>) -> bool {
        let victim = self
            .by_caller
            .iter()
            .filter(|(_, r)| !r.streaming)
            .filter(|(c, _)| source.is_none_or(|s| crate::limits::client(c.ip()) == s))
            .min_by_key(|(_, r)| r.last_heard)
            .map(|(c, _)| *c);
        match victim {
            Some(c) => {
                self.remove(&c);
                true
            }
            None => false,
        }
    }
}

/// A datagram the library may parse. A panic in the check itself is caught: the
/// datagram is dropped and the front goes on.
fn admit(datagram: &[u8]) -> Result<(), String> {
    match std::panic::catch_unwind(|| sluice_media::srt_datagram::admit(datagram)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(why.to_string()),
        Err(_) => Err("the datagram check panicked".to_string()),
    }
}

/// Relays what the library sends through `relay` back to `caller`.
async fn back(front: Arc<Front>, relay: Arc<UdpSocket>, caller: SocketAddr) {
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let (len, from) = match relay.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "srt front: relay receive");
                tokio::task::yield_now().await;
                continue;
            }
        };
        if from != front.library_addr() {
            continue; // only the library talks to a relay
        }
        // An ACK (control type 2) exists only on a connection the library accepted.
        if buf[..len].starts_with(&[0x80, 0x02]) {
            front.acknowledged(caller);
        }
        let reply = with_caller_address(&buf[..len], caller, front.loopback.is_ipv6());
        let bytes = reply.as_deref().unwrap_or(&buf[..len]);
        if let Err(e) = front.public.send_to(bytes, caller).await {
            tracing::debug!(error = %e, %caller, "srt front: sending to a caller");
        }
    }
}

/// A handshake tells the caller the address it was seen from: the library saw the
/// relay, so the caller's own address is put back. Other packets pass unchanged.
fn with_caller_address(datagram: &[u8], caller: SocketAddr, ipv6: bool) -> Option<Vec<u8>> {
    use srt_protocol::packet::{ControlTypes, Packet};
    // Only handshakes: control type 0.
    if datagram.len() < 2 || datagram[0] != 0x80 || datagram[1] != 0 {
        return None;
    }
    let mut packet = Packet::parse(&mut std::io::Cursor::new(datagram), ipv6).ok()?;
    if let Packet::Control(control) = &mut packet {
        if let ControlTypes::Handshake(hs) = &mut control.control_type {
            hs.peer_addr = caller.ip().to_canonical();
        }
    }
    let mut out = Vec::with_capacity(datagram.len());
    packet.serialize(&mut out);
    Some(out)
}

fn loopback(of: &SocketAddr) -> IpAddr {
    match of {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's datagram reaches the library from the caller's own relay, the
    /// library's reply reaches the caller, and the relay maps back to the caller; what
    /// would panic the library never reaches it.
    #[tokio::test]
    async fn relays_both_ways_and_drops_what_the_library_must_not_see() -> Result<()> {
        let front = Front::bind("127.0.0.1:0".parse()?).await?;
        let library = UdpSocket::bind("127.0.0.1:0").await?;
        front.set_library_addr(library.local_addr()?);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(front.clone().run(stop));
        let public = front.local_addr()?;
        let wait = Duration::from_secs(5);
        let mut buf = [0u8; 2048];

        let caller = UdpSocket::bind("127.0.0.1:0").await?;
        // The reviewed 72-byte handshake: a congestion extension of one word.
        let mut bad = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        for word in [5i32, 7, 1, 1500, 8192, -1, 2, 3] {
            bad.extend(word.to_be_bytes());
        }
        bad.extend([0u8; 16]);
        bad.extend([0, 6, 0, 1]);
        bad.extend(*b"evil");
        caller.send_to(&bad, public).await?;
        let data = [0u8, 0, 0, 9, 0xc0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0x47];
        caller.send_to(&data, public).await?;
        let (len, relay) = tokio::time::timeout(wait, library.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..len], &data, "the handshake before it was dropped");
        assert_eq!(front.caller(relay), Some(caller.local_addr()?));

        library
            .send_to(b"\x00\x00\x00\x01reply-bytes-here", relay)
            .await?;
        let (len, from) = tokio::time::timeout(wait, caller.recv_from(&mut buf)).await??;
        assert_eq!(from, public);
        assert_eq!(&buf[..len], b"\x00\x00\x00\x01reply-bytes-here");

        // A second caller gets its own relay.
        let other = UdpSocket::bind("127.0.0.1:0").await?;
        other.send_to(&data, public).await?;
        let (_, relay2) = tokio::time::timeout(wait, library.recv_from(&mut buf)).await??;
        assert_ne!(relay, relay2);
        assert_eq!(front.caller(relay2), Some(other.local_addr()?));

        stop_tx.send(true)?;
        running.await?;
        Ok(())
    }

    /// One host opening caller after caller keeps at most its share of relays, the
    /// newest; another host's caller still gets one.
    #[tokio::test]
    async fn one_source_cannot_take_every_relay() -> Result<()> {
        let front = Front::bind("127.0.0.1:0".parse()?).await?;
        let library = UdpSocket::bind("127.0.0.1:0").await?;
        front.set_library_addr(library.local_addr()?);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(front.clone().run(stop));
        let public = front.local_addr()?;
        let wait = Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        let data = [0u8, 0, 0, 9, 0xc0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0x47];
        let mut flood = Vec::new();
        for _ in 0..MAX_CALLERS_PER_SOURCE + 8 {
            let caller = UdpSocket::bind("127.0.0.1:0").await?;
            caller.send_to(&data, public).await?;
            tokio::time::timeout(wait, library.recv_from(&mut buf)).await??;
            flood.push(caller);
        }
        let held = |addr: SocketAddr| front.lock().by_caller.contains_key(&addr);
        assert_eq!(front.lock().by_caller.len(), MAX_CALLERS_PER_SOURCE);
        assert!(
            !held(flood[0].local_addr()?),
            "the oldest was not the one dropped"
        );
        assert!(held(flood[flood.len() - 1].local_addr()?));
        // 127.0.0.2 is another source (loopback answers it too).
        let other = UdpSocket::bind("127.0.0.2:0").await?;
        other.send_to(&data, public).await?;
        tokio::time::timeout(wait, library.recv_from(&mut buf)).await??;
        assert!(held(other.local_addr()?));
        assert_eq!(front.lock().by_caller.len(), MAX_CALLERS_PER_SOURCE + 1);
        stop_tx.send(true)?;
        running.await?;
        Ok(())
    }

    /// A handshake going back carries the caller's address, not the relay's.
    #[test]
    fn a_handshake_reply_names_the_caller() -> Result<()> {
        use srt_protocol::packet::{ControlTypes, Packet};
        let mut hs = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        for word in [5i32, 0x4A17, 1, 1500, 8192, 1, 2, 3] {
            hs.extend(word.to_be_bytes());
        }
        hs.extend([1, 0, 0, 127]); // 127.0.0.1, little-endian words
        hs.extend([0u8; 12]);
        let caller: SocketAddr = "203.0.113.7:4000".parse()?;
        let out = with_caller_address(&hs, caller, false).ok_or(anyhow!("not rewritten"))?;
        let Packet::Control(c) = Packet::parse(&mut std::io::Cursor::new(&out), false)? else {
            return Err(anyhow!("not control"));
        };
        let ControlTypes::Handshake(h) = c.control_type else {
            return Err(anyhow!("not a handshake"));
        };
        assert_eq!(h.peer_addr, caller.ip());
        assert_eq!(out.len(), hs.len());
        Ok(())
    }
}
