//! RTMP ingest: one task per connection turns an encoder's publish into `Feed`s for the
//! channel's packaging loop.
//!
//! ```text
//! TCP -> handshake (bounded time) -> sluice_media::rtmp::RtmpIngest (sans-IO)
//!   connect(app)   -> app must be the configured one (default `live`)
//!   publish(key)   -> Origins::publish: key verified, channel claimed through Raft
//!   @setDataFrame  -> which tracks to wait for
//!   audio / video  -> FlvDemuxer -> Feed::Input
//! ```
//!
//! This file holds the socket, the timeouts and the channel; the protocol itself is
//! `sluice_media::rtmp` (sans-IO, fuzzed in `fuzz/`). A protocol error, a panic inside
//! the session library, a malformed tag or a silent publisher ends this connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rml_rtmp::sessions::ServerSessionConfig;
use sluice_media::rtmp::{HandshakeProgress, RtmpEvent, RtmpHandshake, RtmpIngest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::limits::{Limits, Listener};
use crate::origin::{Feed, Origins, PublishRefused, Publisher};

/// A connection that has not published by then is closed (it holds a task and a
/// buffer; OBS publishes within a second of connecting).
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct RtmpSettings {
    /// The RTMP application publishers connect to (`rtmp://host/<app>`).
    pub(crate) app: String,
    /// A publisher that sends nothing for this long is disconnected.
    pub(crate) idle_timeout: Duration,
    /// The handshake and connect must be done within this.
    pub(crate) handshake_timeout: Duration,
    /// Connections per address, publishers per node, failed publishes per address.
    pub(crate) limits: Arc<Limits>,
}

/// RTMPS: the TLS a listener speaks before RTMP (`None`: plain RTMP).
pub(crate) type Tls = Option<tokio_rustls::TlsAcceptor>;

/// Accepts connections until `stop` fires; each runs in its own task. With `tls` the
/// listener is RTMPS: a client that does not complete the TLS handshake (a plain-RTMP
/// one, say) is closed and logged.
pub(crate) async fn serve(
    listener: TcpListener,
    origins: Arc<Origins>,
    settings: RtmpSettings,
    tls: Tls,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let scheme = if tls.is_some() { "rtmps" } else { "rtmp" };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "{scheme} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(held) = settings.limits.connection(Listener::Rtmp, peer.ip()) else {
            tracing::warn!(%peer, "{scheme} connection refused: too many from this address (limits.connections_per_ip)");
            continue;
        };
        let origins = origins.clone();
        let settings = settings.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _held = held;
            stream.set_nodelay(true).ok();
            let ended = match tls {
                None => connection(stream, peer, origins, &settings).await,
                Some(acceptor) => {
                    let accepting =
                        tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream))
                            .await;
                    match accepting {
                        Ok(Ok(tls_stream)) => {
                            connection(tls_stream, peer, origins, &settings).await
                        }
                        Ok(Err(e)) => Err(anyhow!("TLS handshake refused: {e}")),
                        Err(_) => Err(anyhow!("TLS handshake not finished in time")),
                    }
                }
            };
            match ended {
                Ok(()) => tracing::info!(%peer, "{scheme} connection closed"),
                Err(e) => {
                    tracing::warn!(%peer, reason = %format!("{e:#}"), "{scheme} connection ended")
                }
            }
        });
    }
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<Vec<u8>> {
    let mut hs = RtmpHandshake::new();
    loop {
        let n = stream.read(buf).await.context("reading the handshake")?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        match hs.process(&buf[..n])? {
            HandshakeProgress::InProgress { response } => {
                stream.write_all(&response).await?;
            }
            HandshakeProgress::Completed {
                response,
                remaining,
            } => {
                stream.write_all(&response).await?;
                return Ok(remaining);
            }
        }
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    origins: Arc<Origins>,
    settings: &RtmpSettings,
) -> Result<()> {
    let opened = std::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let leftover =
        tokio::time::timeout(settings.handshake_timeout, handshake(&mut stream, &mut buf))
            .await
            .map_err(|_| {
                anyhow!(
                    "handshake not finished within {:?}",
                    settings.handshake_timeout
                )
            })??;
    let mut session = Session {
        stream,
        buf,
        ingest: RtmpIngest::new(settings.app.as_str())?,
        peer,
        origins,
        settings,
        publisher: None,
        _slot: None,
    };
    session.ingest.input(&leftover)?;
    loop {
        // Answer and act on everything the last input produced, in order.
        while let Some(event) = session.ingest.poll()? {
            session.on_event(event).await?;
        }
        if session.publisher.is_none() && opened.elapsed() > PUBLISH_DEADLINE {
            bail!("no publish within {PUBLISH_DEADLINE:?} of connecting");
        }
        let timeout = if session.publisher.is_some() {
            settings.idle_timeout
        } else {
            settings.handshake_timeout
        };
        let n = match tokio::time::timeout(timeout, session.stream.read(&mut session.buf)).await {
            Ok(read) => read.context("reading")?,
            Err(_) => bail!("nothing received for {timeout:?}: publisher timed out"),
        };
        if n == 0 {
            return Ok(());
        }
        session.ingest.input(&session.buf[..n])?;
    }
}

/// One RTMP connection after its handshake: the sans-IO session, and the publisher it
/// feeds once a publish is accepted.
struct Session<'a, S> {
    stream: S,
    buf: Vec<u8>,
    ingest: RtmpIngest,
    peer: SocketAddr,
    origins: Arc<Origins>,
    settings: &'a RtmpSettings,
    publisher: Option<Publisher>,
    /// This node's publisher slot, held while publishing.
    _slot: Option<crate::limits::Held>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    async fn on_event(&mut self, event: RtmpEvent) -> Result<()> {
        match event {
            RtmpEvent::Send(bytes) => self.stream.write_all(&bytes).await?,
            RtmpEvent::PublishRequested { request_id, key } => {
                self.publish(request_id, &key).await?;
            }
            RtmpEvent::Tracks { video, audio } => {
                if let Some(p) = self.publisher.as_ref() {
                    p.send(Feed::Tracks { video, audio })
                        .await
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
            RtmpEvent::Media { input, bytes } => {
                let Some(p) = self.publisher.as_ref() else {
                    bail!("media before publish");
                };
                if p.send(Feed::Input { input, bytes }).await.is_err() {
                    // The server closes: the encoder hears why first.
                    let reason = p.closed_reason();
                    if let Ok(status) = closing_status(&reason) {
                        tell_and_close(&mut self.stream, &status, &mut self.buf).await;
                    }
                    return Err(anyhow::Error::new(Closed(reason)));
                }
            }
            RtmpEvent::UnsupportedTrack => {
                if let Some(p) = self.publisher.as_ref() {
                    tracing::warn!(channel = %p.channel, "a track in an unsupported codec is skipped");
                }
            }
            RtmpEvent::PublishFinished => {
                self._slot = None;
                if let Some(p) = self.publisher.take() {
                    tracing::info!(peer = %self.peer, channel = %p.channel, "publisher finished");
                }
            }
        }
        Ok(())
    }

    /// A publish request: accepted, or refused with the reason sent to the encoder
    /// (and the connection ended).
    async fn publish(&mut self, request_id: u32, key: &str) -> Result<()> {
        let limits = &self.settings.limits;
        let now = std::time::Instant::now();
        let ip = self.peer.ip();
        let refusal = if let Some(why) = limits.publish_refusal(ip, now) {
            why
        } else if let Some(held) = limits.publisher() {
            // Held from here: a refused publisher counts until its connection is
            // closed (the refusal lingers while the encoder reads it).
            self._slot = Some(held);
            match self.origins.publish(key).await {
                Ok(p) => {
                    tracing::info!(peer = %self.peer, channel = %p.channel,
                        generation = p.generation, "rtmp publish accepted");
                    self.publisher = Some(p);
                    self.ingest.accept_publish(request_id)?;
                    return Ok(());
                }
                Err(refused) => {
                    if matches!(refused, PublishRefused::UnknownKey) {
                        limits.publish_failed(ip, now);
                    }
                    refused.to_string()
                }
            }
        } else {
            "this node ingests as many publishers as it may (limits.publishers_per_node)".into()
        };
        refuse(
            &mut self.ingest,
            request_id,
            &refusal,
            &mut self.stream,
            &mut self.buf,
        )
        .await;
        bail!("publish refused: {refusal}")
    }
}

/// Rejects a publish request: the encoder is sent the rejection (`_error` with the
/// reason), then the connection is closed.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    ingest: &mut RtmpIngest,
    request_id: u32,
    why: &str,
    stream: &mut S,
    buf: &mut [u8],
) {
    ingest.reject_publish(request_id, why);
    let mut out = Vec::new();
    while let Ok(Some(event)) = ingest.poll() {
        if let RtmpEvent::Send(bytes) = event {
            out.extend_from_slice(&bytes);
        }
    }
    tell_and_close(stream, &out, buf).await;
}

/// How long a closing connection waits for the encoder to read why.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Writes `status`, ends the sending side, and reads (and drops) what the encoder still
/// sends until it closes or `CLOSE_LINGER` passes: closing a socket with unread input
/// resets it, and a reset can destroy the status before the encoder reads it.
async fn tell_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    status: &[u8],
    buf: &mut [u8],
) {
    if stream.write_all(status).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while matches!(stream.read(buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The server ends a publishing connection, for this reason (told to the encoder).
#[derive(Debug, thiserror::Error)]
#[error("closing the publisher's connection: {0}")]
struct Closed(String);

/// The stream id publishers publish on: the one `createStream` gives first (OBS, ffmpeg
/// and GStreamer create one stream per connection).
const PUBLISH_STREAM_ID: u32 = 1;

/// `onStatus` with level `error` and `reason`, as chunks the publisher can read: ffmpeg
/// logs it as a server error, OBS shows the disconnect and reconnects. Written with
/// the session's chunk size, announced again first (the session's own serializer is
/// not reachable, and a full header makes the message independent of its state).
fn closing_status(reason: &str) -> Result<Vec<u8>> {
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::RtmpMessage;
    use rml_rtmp::rml_amf0::Amf0Value;
    use rml_rtmp::time::RtmpTimestamp;
    let mut serializer = ChunkSerializer::new();
    let mut out = Vec::new();
    let chunk_size = ServerSessionConfig::new().chunk_size;
    out.extend(
        serializer
            .set_max_chunk_size(chunk_size, RtmpTimestamp::new(0))
            .map_err(|e| anyhow!("{e}"))?
            .bytes,
    );
    let status = [
        ("level", "error"),
        ("code", "NetConnection.Connect.Closed"),
        ("description", reason),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Amf0Value::Utf8String(v.to_string())))
    .collect();
    let message = RtmpMessage::Amf0Command {
        command_name: "onStatus".into(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(status)],
    };
    let payload = message
        .into_message_payload(RtmpTimestamp::new(0), PUBLISH_STREAM_ID)
        .map_err(|e| anyhow!("{e}"))?;
    out.extend(
        serializer
            .serialize(&payload, true, false)
            .map_err(|e| anyhow!("{e}"))?
            .bytes,
    );
    Ok(out)
}
