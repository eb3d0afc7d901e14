//! SRT ingest (listener): each publisher's MPEG-TS becomes `Feed`s for its channel.
//!
//! ```text
//! UDP --srt_front (drops what would panic the library)--> srt-tokio listener
//!   --> connection request (stream id, key size)
//!   stream id `#!::r=<key>,m=publish` or a bare `<key>`
//!   -> Origins::look_up_key: unknown key, channel live elsewhere, encryption that does
//!      not match the channel's passphrase: rejected in the handshake (reason + log)
//!   -> accept (with the channel's passphrase): a wrong one fails the key exchange
//!   -> Origins::publish: channel claimed through Raft
//!   data (1316-byte TS chunks) -> TsDemuxer -> Feed::Input
//! ```
//!
//! Nothing is claimed before the handshake is through, so a refused publisher touches
//! nothing. Lost and garbled packets are counted by the demuxer and survived; a
//! publisher that sends nothing usable for the idle timeout is disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use sluice_media::ts::TsDemuxer;
use srt_protocol::access::{AccessControlList, ConnectionMode, StandardAccessControlEntry};
use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::packet::{CoreRejectReason, RejectReason, ServerRejectReason};
use srt_protocol::settings::KeySettings;
use srt_tokio::{ConnectionRequest, SrtIncoming, SrtListener, SrtSocket};

use super::srt_front::Front;
use crate::origin::{Feed, KeyInfo, Origins, PublishRefused, Publisher};

/// Bytes of input with no media frame out of them before the stream is refused as not
/// MPEG-TS (a few seconds of any real stream).
const MAX_BYTES_WITHOUT_MEDIA: u64 = 8 << 20;

#[derive(Debug, Clone)]
pub(crate) struct SrtSettings {
    /// SRT receive latency: how long the receiver waits for retransmissions.
    pub(crate) latency: Duration,
    /// A publisher that sends nothing for this long is disconnected.
    pub(crate) idle_timeout: Duration,
    /// Publishers per node, failed publish attempts per address.
    pub(crate) limits: Arc<crate::limits::Limits>,
}

/// The SRT port: the front on the public address and the library behind it.
pub(crate) struct Bound {
    front: Arc<Front>,
    listener: SrtListener,
    incoming: SrtIncoming,
}

impl Bound {
    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        self.front.local_addr()
    }
}

/// Binds the public port and the library behind it (an error here stops the node from
/// starting).
pub(crate) async fn bind(addr: SocketAddr, settings: &SrtSettings) -> Result<Bound> {
    let front = Front::bind(addr).await?;
    let (listener, incoming) = bind_library(&front, settings).await?;
    Ok(Bound {
        front,
        listener,
        incoming,
    })
}

/// Binds the library's listener on loopback, on the port it had if it had one.
async fn bind_library(front: &Front, settings: &SrtSettings) -> Result<(SrtListener, SrtIncoming)> {
    let wanted = front.library_addr();
    let socket = match tokio::net::UdpSocket::bind(wanted).await {
        Ok(s) => s,
        Err(_) if wanted.port() != 0 => {
            tokio::net::UdpSocket::bind(SocketAddr::new(wanted.ip(), 0)).await?
        }
        Err(e) => return Err(e.into()),
    };
    let local = socket.local_addr()?;
    let (listener, incoming) = SrtListener::builder()
        .socket(socket)
        .latency(settings.latency)
        .bind(local)
        .await
        .map_err(|e| anyhow!("starting srt listener {local}: {e}"))?;
    front.set_library_addr(local);
    Ok((listener, incoming))
}

/// Relays and accepts connection requests until `stop` fires; each runs in its own task.
///
/// Datagrams that would panic the SRT library's parser are dropped by the front
/// (`srt_front`). Should the library's listener task still end (a panic further in),
/// it ends the connections it carried; it is bound again at once behind the same
/// front, the publishers reconnect (SRT callers retry) and their channels continue
/// within the reconnect grace.
pub(crate) async fn serve(
    bound: Bound,
    origins: Arc<Origins>,
    settings: SrtSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let Bound {
        front,
        listener,
        incoming,
    } = bound;
    let relaying = tokio::spawn(front.clone().run(stop.clone()));
    accept(&front, listener, incoming, origins, settings, stop).await;
    relaying.abort();
}

async fn accept(
    front: &Arc<Front>,
    listener: SrtListener,
    incoming: SrtIncoming,
    origins: Arc<Origins>,
    settings: SrtSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let mut current = Some((listener, incoming));
    loop {
        let (listener, mut incoming) = match current.take() {
            Some(l) => l,
            None => match bind_library(front, &settings).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "srt listener: binding again failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            },
        };
        loop {
            let request = tokio::select! {
                r = incoming.incoming().next() => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(request) = request else { break };
            let origins = origins.clone();
            let settings = settings.clone();
            let peer = front.caller(request.remote()).unwrap_or(request.remote());
            let key_material = front.sent_key_material(request.remote());
            tokio::spawn(async move {
                match connection(request, peer, key_material, origins, &settings).await {
                    Ok(()) => tracing::info!(%peer, "srt connection closed"),
                    Err(e) => {
                        tracing::warn!(%peer, reason = %format!("{e:#}"), "srt connection ended")
                    }
                }
            });
        }
        drop(listener);
        tracing::error!(addr = %front.library_addr(), "the srt library's listener stopped: listening again");
    }
}

/// The stream key in a stream id: `#!::r=KEY,m=publish` (SRT access control) or `KEY`.
pub(crate) fn stream_key(stream_id: &str) -> Result<String, &'static str> {
    if !stream_id.starts_with("#!::") {
        return match stream_id.trim() {
            "" => Err("empty stream id"),
            key => Ok(key.to_string()),
        };
    }
    let list: AccessControlList = stream_id
        .parse()
        .map_err(|_| "malformed access control stream id")?;
    let mut key = None;
    for entry in list.0 {
        match StandardAccessControlEntry::try_from(entry) {
            Ok(StandardAccessControlEntry::ResourceName(r)) => key = Some(r),
            Ok(StandardAccessControlEntry::Mode(ConnectionMode::Publish)) => {}
            Ok(StandardAccessControlEntry::Mode(_)) => {
                return Err("only m=publish is served (watch over HLS)")
            }
            // User names, hosts, session ids, types and unknown keys do not matter here.
            _ => {}
        }
    }
    key.filter(|k| !k.is_empty())
        .ok_or("no r=<stream key> in the stream id")
}

async fn reject(request: ConnectionRequest, reason: RejectReason, why: &str) -> Result<()> {
    let _ = request.reject(reason).await;
    bail!("refused in the handshake: {why}")
}

async fn connection(
    request: ConnectionRequest,
    peer: SocketAddr,
    key_material: bool,
    origins: Arc<Origins>,
    settings: &SrtSettings,
) -> Result<()> {
    let stream_id = request
        .stream_id()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let admitted = match admit(&stream_id, peer, &origins, settings).await {
        Ok(admitted) => admitted,
        Err(Refusal(reason, why)) => return reject(request, reason, &why).await,
    };
    let (key, info) = admitted;
    let key_settings = match key_settings(&request, &info, key_material) {
        Ok(k) => k,
        Err(Refusal(reason, why)) => return reject(request, reason, &why).await,
    };
    let Some(_slot) = settings.limits.publisher() else {
        return reject(
            request,
            RejectReason::Server(ServerRejectReason::Overload),
            "this node ingests as many publishers as it may (limits.publishers_per_node)",
        )
        .await;
    };
    let encrypted = key_settings.is_some();
    let mut socket = request.accept(key_settings).await.map_err(|e| {
        if encrypted {
            anyhow!(
                "channel {:?}: the key exchange failed (no or wrong passphrase): {e}",
                info.channel
            )
        } else {
            anyhow!("handshake did not complete: {e}")
        }
    })?;
    let publisher = origins
        .publish(&key)
        .await
        .map_err(|e| anyhow!("publish refused: {e}"))?;
    tracing::info!(channel = %publisher.channel, generation = publisher.generation,
        encrypted, "srt publish accepted");
    pump(&mut socket, &publisher, &origins, settings.idle_timeout).await
}

/// Why a caller is refused in the handshake: what it is told, and what is logged.
struct Refusal(RejectReason, String);

/// The caller's stream key and its channel, or why it is refused: a stream id that is
/// not a publish request, an address over its failed-attempt budget, a key that opens
/// nothing.
async fn admit(
    stream_id: &str,
    peer: SocketAddr,
    origins: &Origins,
    settings: &SrtSettings,
) -> Result<(String, KeyInfo), Refusal> {
    let key = stream_key(stream_id).map_err(|why| {
        let reason = if why.starts_with("only") {
            ServerRejectReason::BadMode
        } else {
            ServerRejectReason::BadRequest
        };
        Refusal(RejectReason::Server(reason), why.to_string())
    })?;
    let peer = peer.ip();
    let limits = &settings.limits;
    if let Some(why) = limits.publish_refusal(peer, std::time::Instant::now()) {
        return Err(Refusal(
            RejectReason::Server(ServerRejectReason::Unauthorized),
            why,
        ));
    }
    match origins.look_up_key(&key).await {
        Ok(info) => Ok((key, info)),
        Err(refused) => {
            if matches!(refused, PublishRefused::UnknownKey) {
                limits.publish_failed(peer, std::time::Instant::now());
            }
            let reason = match &refused {
                PublishRefused::UnknownKey => ServerRejectReason::Unauthorized,
                PublishRefused::AlreadyLive { .. } => ServerRejectReason::Conflict,
                PublishRefused::NotPushed { .. } => ServerRejectReason::Forbidden,
                PublishRefused::Cluster(_) | PublishRefused::Draining => ServerRejectReason::Down,
            };
            Err(Refusal(RejectReason::Server(reason), refused.to_string()))
        }
    }
}

/// The key exchange's settings for the channel's passphrase; none for a channel
/// without one, whose callers must not encrypt.
fn key_settings(
    request: &ConnectionRequest,
    info: &KeyInfo,
    key_material: bool,
) -> Result<Option<KeySettings>, Refusal> {
    // A caller that leaves the key length to its default advertises none in the
    // handshake, yet sends key material: whether it encrypts shows only in the key
    // exchange, which the SRT library runs against the channel's passphrase. The key
    // size given back must be the one the caller advertised (the library cannot take
    // another), and the library's default length then applies.
    match &info.srt_passphrase {
        Some(p) => Ok(Some(KeySettings {
            key_size: request.key_size(),
            passphrase: Passphrase::try_from(p.clone()).map_err(|e| {
                Refusal(
                    RejectReason::Server(ServerRejectReason::InternalServerError),
                    format!("channel {}: stored passphrase: {e}", info.channel),
                )
            })?,
        })),
        // Encrypting with the default key length shows only as key material in the
        // handshake (seen by the front); accepting it without a passphrase panics the
        // library, so it is refused here like any other encrypting caller.
        None if request.key_size() != KeySize::Unspecified || key_material => Err(Refusal(
            RejectReason::Core(CoreRejectReason::Unsecure),
            format!(
                "channel {:?} has no passphrase; the stream is encrypted",
                info.channel
            ),
        )),
        None => Ok(None),
    }
}

/// Feeds a connected SRT socket's MPEG-TS into the channel's packaging loop until the
/// peer closes (Ok), goes quiet for `idle_timeout`, sends no media, or the loop ends.
/// Shared by the listener (publishers) and the caller (pulled channels).
pub(crate) async fn pump(
    socket: &mut SrtSocket,
    publisher: &Publisher,
    origins: &Origins,
    idle_timeout: Duration,
) -> Result<()> {
    let mut demuxer = TsDemuxer::new();
    let mut announced = false;
    let mut bytes_without_media = 0u64;
    let mut counted = demuxer.stats();
    loop {
        let next = tokio::time::timeout(idle_timeout, socket.next()).await;
        let data = match next {
            Err(_) => bail!("nothing received for {idle_timeout:?}: the peer timed out"),
            Ok(None) => break,
            Ok(Some(Err(e))) => bail!("srt receive: {e}"),
            Ok(Some(Ok((_, data)))) => data,
        };
        let inputs = demuxer.push(&data);
        let stats = demuxer.stats();
        origins.metrics().ts_losses(
            &publisher.channel,
            stats.continuity_errors - counted.continuity_errors,
            stats.skipped_bytes - counted.skipped_bytes,
        );
        counted = stats;
        if !announced {
            if let Some((video, audio)) = demuxer.tracks() {
                announced = true;
                publisher
                    .send(Feed::Tracks { video, audio })
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        if inputs.is_empty() {
            bytes_without_media += data.len() as u64;
            if bytes_without_media > MAX_BYTES_WITHOUT_MEDIA {
                bail!("{bytes_without_media} bytes without a media frame: not an MPEG-TS stream with H.264/H.265 and AAC");
            }
            continue;
        }
        bytes_without_media = 0;
        // The wire bytes are counted with the first input they completed.
        let mut wire = data.len();
        for input in inputs {
            publisher
                .send(Feed::Input {
                    input,
                    bytes: std::mem::take(&mut wire),
                })
                .await
                .map_err(|e| anyhow!("{e}: closing the connection"))?;
        }
    }
    let stats = demuxer.stats();
    tracing::info!(channel = %publisher.channel, packets = stats.packets,
        skipped_bytes = stats.skipped_bytes, continuity_errors = stats.continuity_errors,
        dropped_pes = stats.dropped_pes, "srt stream finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_give_the_key() {
        assert_eq!(stream_key("#!::r=abc,m=publish").as_deref(), Ok("abc"));
        assert_eq!(
            stream_key("#!::m=publish,r=abc,u=someone").as_deref(),
            Ok("abc")
        );
        assert_eq!(stream_key("#!::r=abc").as_deref(), Ok("abc"));
        assert_eq!(stream_key("abc").as_deref(), Ok("abc"));
        assert!(stream_key("#!::r=abc,m=request").is_err());
        assert!(stream_key("#!::m=publish").is_err());
        assert!(stream_key("#!::garbage").is_err());
        assert!(stream_key("").is_err());
    }
}
