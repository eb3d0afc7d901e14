//! RTMP ingest: one task per connection turns an encoder's publish into `Feed`s for the
//! channel's packaging loop.
//!
//! ```text
//! TCP -> handshake (bounded time) -> rml_rtmp ServerSession (sans-IO)
//!   connect(app)   -> app must be the configured one (default `live`)
//!   publish(key)   -> Origins::publish: key verified, channel claimed through Raft
//!   @setDataFrame  -> which tracks to wait for
//!   audio / video  -> FlvDemuxer -> Feed::Input
//! ```
//!
//! A protocol error, a panic inside the session library, a malformed tag or a silent
//! publisher ends this connection only.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use sluice_media::flv::{FlvDemuxer, FlvError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::origin::{Feed, Origins, Publisher};

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
}

impl Default for RtmpSettings {
    fn default() -> Self {
        Self {
            app: "live".into(),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts connections until `stop` fires; each runs in its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    origins: Arc<Origins>,
    settings: RtmpSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "rtmp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let origins = origins.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            match connection(stream, peer, origins, &settings).await {
                Ok(()) => tracing::info!(%peer, "rtmp connection closed"),
                Err(e) => {
                    tracing::warn!(%peer, reason = %format!("{e:#}"), "rtmp connection ended")
                }
            }
        });
    }
}

/// Runs the session library on one input, turning a panic inside it into an error.
fn session_input(session: &mut ServerSession, bytes: &[u8]) -> Result<Vec<ServerSessionResult>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(bytes))) {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(e)) => Err(anyhow!("rtmp protocol error: {e}")),
        Err(_) => Err(anyhow!(
            "malformed rtmp message (the session library gave up on it)"
        )),
    }
}

async fn handshake(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Vec<u8>> {
    let mut hs = Handshake::new(PeerType::Server);
    loop {
        let n = stream.read(buf).await.context("reading the handshake")?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| anyhow!("bad rtmp handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// What one connection holds once it publishes.
struct Publishing {
    publisher: Publisher,
    demuxer: FlvDemuxer,
    skipped_tags: u64,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    origins: Arc<Origins>,
    settings: &RtmpSettings,
) -> Result<()> {
    let opened = std::time::Instant::now();
    stream.set_nodelay(true).ok();
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
    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|e| anyhow!("starting the rtmp session: {e}"))?;
    let mut publishing: Option<Publishing> = None;
    let mut pending = initial;
    pending.extend(session_input(&mut session, &leftover)?);
    loop {
        // Answer and act on everything the last input produced, in order.
        let mut queue = std::mem::take(&mut pending);
        while !queue.is_empty() {
            let mut follow_up = Vec::new();
            for result in queue {
                match result {
                    ServerSessionResult::OutboundResponse(packet) => {
                        stream.write_all(&packet.bytes).await?;
                    }
                    ServerSessionResult::RaisedEvent(event) => {
                        let answered = on_event(
                            &mut session,
                            event,
                            &mut publishing,
                            &origins,
                            settings,
                            peer,
                        )
                        .await;
                        match answered {
                            Ok(more) => follow_up.extend(more),
                            Err(e) => {
                                // The server closes: the encoder hears why first.
                                if let Some(Closed(reason)) = e.downcast_ref::<Closed>() {
                                    if let Ok(status) = closing_status(reason) {
                                        tell_and_close(&mut stream, &status, &mut buf).await;
                                    }
                                }
                                return Err(e);
                            }
                        }
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            queue = follow_up;
        }
        if publishing.is_none() && opened.elapsed() > PUBLISH_DEADLINE {
            bail!("no publish within {PUBLISH_DEADLINE:?} of connecting");
        }
        let timeout = if publishing.is_some() {
            settings.idle_timeout
        } else {
            settings.handshake_timeout
        };
        let n = match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
            Ok(read) => read.context("reading")?,
            Err(_) => bail!("nothing received for {timeout:?}: publisher timed out"),
        };
        if n == 0 {
            return Ok(());
        }
        pending = session_input(&mut session, &buf[..n])?;
    }
}

/// Acts on one session event; returns what the session answers to the action.
async fn on_event(
    session: &mut ServerSession,
    event: ServerSessionEvent,
    publishing: &mut Option<Publishing>,
    origins: &Arc<Origins>,
    settings: &RtmpSettings,
    peer: SocketAddr,
) -> Result<Vec<ServerSessionResult>> {
    let accept = |session: &mut ServerSession, id| {
        session
            .accept_request(id)
            .map_err(|e| anyhow!("rtmp accept: {e}"))
    };
    match event {
        ServerSessionEvent::ConnectionRequested {
            request_id,
            app_name,
        } => {
            if app_name.trim_end_matches('/') != settings.app {
                let _ = session.reject_request(
                    request_id,
                    "NetConnection.Connect.Rejected",
                    "unknown application",
                );
                bail!(
                    "refused: application {app_name:?} is not {:?}",
                    settings.app
                );
            }
            accept(session, request_id)
        }
        ServerSessionEvent::PublishStreamRequested {
            request_id,
            stream_key,
            ..
        } => {
            if publishing.is_some() {
                bail!("refused: a second publish on one connection");
            }
            // OBS and ffmpeg pass the key as the stream name; a `?query` is not part of it.
            let key = stream_key.split('?').next().unwrap_or_default().to_string();
            match origins.publish(&key).await {
                Ok(publisher) => {
                    tracing::info!(%peer, channel = %publisher.channel,
                        generation = publisher.generation, "rtmp publish accepted");
                    *publishing = Some(Publishing {
                        publisher,
                        demuxer: FlvDemuxer::new(),
                        skipped_tags: 0,
                    });
                    accept(session, request_id)
                }
                Err(refused) => {
                    let _ = session.reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        &refused.to_string(),
                    );
                    bail!("publish refused: {refused}");
                }
            }
        }
        ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
            if let Some(p) = publishing.as_ref() {
                if let Some((video, audio)) = announced_tracks(&metadata) {
                    p.publisher
                        .send(Feed::Tracks { video, audio })
                        .await
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
            Ok(Vec::new())
        }
        ServerSessionEvent::VideoDataReceived {
            data, timestamp, ..
        } => {
            media(publishing, true, timestamp.value, data).await?;
            Ok(Vec::new())
        }
        ServerSessionEvent::AudioDataReceived {
            data, timestamp, ..
        } => {
            media(publishing, false, timestamp.value, data).await?;
            Ok(Vec::new())
        }
        ServerSessionEvent::PublishStreamFinished { .. } => {
            if let Some(p) = publishing.take() {
                tracing::info!(%peer, channel = %p.publisher.channel, "publisher finished");
            }
            Ok(Vec::new())
        }
        ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
            let _ = session.reject_request(
                request_id,
                "NetStream.Play.Failed",
                "this server does not play rtmp",
            );
            bail!("refused: rtmp playback is not offered (watch over HLS)");
        }
        // releaseStream, FCPublish, acknowledgements, chunk sizes: nothing to do.
        _ => Ok(Vec::new()),
    }
}

/// The tracks a stream's metadata announces, when it names any.
fn announced_tracks(m: &StreamMetadata) -> Option<(bool, bool)> {
    let video = m.video_codec_id.is_some() || m.video_width.is_some();
    let audio = m.audio_codec_id.is_some() || m.audio_sample_rate.is_some();
    (video || audio).then_some((video, audio))
}

async fn media(
    publishing: &mut Option<Publishing>,
    video: bool,
    ts: u32,
    data: Bytes,
) -> Result<()> {
    let Some(p) = publishing.as_mut() else {
        bail!("media before publish");
    };
    let bytes = data.len();
    let parsed = if video {
        p.demuxer.push_video(ts, &data)
    } else {
        p.demuxer.push_audio(ts, &data)
    };
    let input = match parsed {
        Ok(input) => input,
        // A track in a codec Sluice does not package is left out; the rest goes on.
        Err(FlvError::UnsupportedAudioFormat(_) | FlvError::UnsupportedVideoCodec(_)) => {
            p.skipped_tags += 1;
            if p.skipped_tags == 1 {
                tracing::warn!(channel = %p.publisher.channel, "a track in an unsupported codec is skipped");
            }
            None
        }
        Err(e) => bail!(
            "malformed {} tag at {ts} ms: {e}",
            if video { "video" } else { "audio" }
        ),
    };
    if let Some(input) = input {
        if p.publisher
            .send(Feed::Input { input, bytes })
            .await
            .is_err()
        {
            return Err(anyhow::Error::new(Closed(p.publisher.closed_reason())));
        }
    }
    Ok(())
}

/// How long a closing connection waits for the encoder to read why.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Writes `status`, ends the sending side, and reads (and drops) what the encoder still
/// sends until it closes or `CLOSE_LINGER` passes: closing a socket with unread input
/// resets it, and a reset can destroy the status before the encoder reads it.
async fn tell_and_close(stream: &mut TcpStream, status: &[u8], buf: &mut [u8]) {
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
struct Closed(&'static str);

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
