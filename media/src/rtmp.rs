//! The sans-IO side of an RTMP publish: handshake bytes, the session library's input
//! (with its panics isolated), and audio/video messages turned into packager inputs.
//! The caller owns the socket, the clock and the channel (`src/ingest/rtmp.rs`).
//!
//! ```text
//! bytes --RtmpHandshake::process--> response bytes ... Completed { remaining }
//! bytes --RtmpIngest::input--> rml_rtmp ServerSession --poll--> RtmpEvent
//!   connect(app)     -> accepted when app is the configured one, else an error
//!   publish(key)     -> PublishRequested: the caller answers accept_publish / reject_publish
//!   @setDataFrame    -> Tracks (while publishing)
//!   audio / video    -> FlvDemuxer -> Media (while publishing)
//!   play             -> an error: RTMP playback is not offered
//! ```
//!
//! Every error ends the connection; a panic inside the session library is one of them
//! (rml_rtmp 0.8 panics on some malformed messages, e.g. an AMF0 command of fewer than
//! three values). That isolation needs unwinding: no `panic = "abort"` profile.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};

use crate::flv::{FlvDemuxer, FlvError};
use crate::packager::Input;

/// Why a connection ends. The messages are what the server logs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    #[error("bad rtmp handshake: {0}")]
    Handshake(String),
    #[error("starting the rtmp session: {0}")]
    Start(String),
    #[error("rtmp protocol error: {0}")]
    Protocol(String),
    #[error("malformed rtmp message (the session library gave up on it)")]
    SessionPanicked,
    #[error("rtmp accept: {0}")]
    Accept(String),
    #[error("refused: application {got:?} is not {expected:?}")]
    UnknownApplication { got: String, expected: String },
    #[error("refused: a second publish on one connection")]
    SecondPublish,
    #[error("refused: rtmp playback is not offered (watch over HLS)")]
    PlayRefused,
    #[error("media before publish")]
    MediaBeforePublish,
    #[error("malformed {kind} tag at {ts} ms: {reason}")]
    MalformedTag {
        kind: &'static str,
        ts: u32,
        reason: FlvError,
    },
}

/// Where a server handshake stands after some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeProgress {
    /// Send `response` and read more.
    InProgress { response: Vec<u8> },
    /// Send `response`; `remaining` is the start of the session's input.
    Completed {
        response: Vec<u8>,
        remaining: Vec<u8>,
    },
}

/// The server side of the RTMP handshake.
pub struct RtmpHandshake {
    handshake: Handshake,
}

impl Default for RtmpHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl RtmpHandshake {
    pub fn new() -> Self {
        Self {
            handshake: Handshake::new(PeerType::Server),
        }
    }

    /// Takes the bytes the client sent (any chunking).
    pub fn process(&mut self, bytes: &[u8]) -> Result<HandshakeProgress, RtmpError> {
        match self.handshake.process_bytes(bytes) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                Ok(HandshakeProgress::InProgress {
                    response: response_bytes,
                })
            }
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => Ok(HandshakeProgress::Completed {
                response: response_bytes,
                remaining: remaining_bytes,
            }),
            Err(e) => Err(RtmpError::Handshake(format!("{e:?}"))),
        }
    }
}

/// What the caller does next, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RtmpEvent {
    /// Bytes for the client.
    Send(Vec<u8>),
    /// The client asks to publish `key` (the stream name without its `?query`): answer
    /// with [`RtmpIngest::accept_publish`] or [`RtmpIngest::reject_publish`] before the
    /// next poll.
    PublishRequested { request_id: u32, key: String },
    /// The stream's metadata announces these tracks (video, audio); while publishing.
    Tracks { video: bool, audio: bool },
    /// A packager input, from a tag of `bytes` bytes; while publishing.
    Media { input: Input, bytes: usize },
    /// The first tag of a track in a codec Sluice does not package: that track is left
    /// out (this publish reports it once), the rest goes on.
    UnsupportedTrack,
    /// The publisher finished (`deleteStream`, `FCUnpublish`).
    PublishFinished,
}

/// What one connection holds while it publishes.
struct Publishing {
    demuxer: FlvDemuxer,
    skipped_tags: u64,
}

/// One RTMP connection after the handshake: input in, events out.
pub struct RtmpIngest {
    app: String,
    session: ServerSession,
    /// Session results not yet acted on; what acting on one produces goes to the back.
    pending: VecDeque<ServerSessionResult>,
    publishing: Option<Publishing>,
}

impl RtmpIngest {
    /// A session for publishers of the application `app` (`rtmp://host/<app>`).
    pub fn new(app: impl Into<String>) -> Result<Self, RtmpError> {
        let (session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| RtmpError::Start(e.to_string()))?;
        Ok(Self {
            app: app.into(),
            session,
            pending: initial.into(),
            publishing: None,
        })
    }

    /// Whether a publish was accepted and has not finished.
    pub fn is_publishing(&self) -> bool {
        self.publishing.is_some()
    }

    /// Takes bytes the client sent (any chunking); `poll` gives what they make.
    pub fn input(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        let session = &mut self.session;
        match std::panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(bytes))) {
            Ok(Ok(results)) => {
                self.pending.extend(results);
                Ok(())
            }
            Ok(Err(e)) => Err(RtmpError::Protocol(e.to_string())),
            Err(_) => Err(RtmpError::SessionPanicked),
        }
    }

    /// The next thing to do; `None` once the input so far is all acted on.
    pub fn poll(&mut self) -> Result<Option<RtmpEvent>, RtmpError> {
        while let Some(result) = self.pending.pop_front() {
            let event = match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    Some(RtmpEvent::Send(packet.bytes))
                }
                ServerSessionResult::RaisedEvent(event) => self.on_event(event)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => None,
            };
            if event.is_some() {
                return Ok(event);
            }
        }
        Ok(None)
    }

    /// The publish of `request_id` is allowed: its media comes out from now on.
    pub fn accept_publish(&mut self, request_id: u32) -> Result<(), RtmpError> {
        self.publishing = Some(Publishing {
            demuxer: FlvDemuxer::new(),
            skipped_tags: 0,
        });
        self.accept(request_id)
    }

    /// The publish of `request_id` is refused for `reason`: the session's answer (an
    /// `onStatus` error naming the reason) comes out of [`RtmpIngest::poll`] as bytes to
    /// send; then the caller ends the connection.
    pub fn reject_publish(&mut self, request_id: u32, reason: &str) {
        if let Ok(results) =
            self.session
                .reject_request(request_id, "NetStream.Publish.BadName", reason)
        {
            self.pending.extend(results);
        }
    }

    fn accept(&mut self, request_id: u32) -> Result<(), RtmpError> {
        let results = self
            .session
            .accept_request(request_id)
            .map_err(|e| RtmpError::Accept(e.to_string()))?;
        self.pending.extend(results);
        Ok(())
    }

    /// Acts on one session event; what is the caller's to do comes back.
    fn on_event(&mut self, event: ServerSessionEvent) -> Result<Option<RtmpEvent>, RtmpError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') != self.app {
                    let _ = self.session.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    );
                    return Err(RtmpError::UnknownApplication {
                        got: app_name,
                        expected: self.app.clone(),
                    });
                }
                self.accept(request_id)?;
                Ok(None)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.publishing.is_some() {
                    return Err(RtmpError::SecondPublish);
                }
                // OBS and ffmpeg pass the key as the stream name; a `?query` is not part of it.
                let key = stream_key.split('?').next().unwrap_or_default().to_string();
                Ok(Some(RtmpEvent::PublishRequested { request_id, key }))
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => Ok(self
                .publishing
                .as_ref()
                .and_then(|_| announced_tracks(&metadata))
                .map(|(video, audio)| RtmpEvent::Tracks { video, audio })),
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.media(true, timestamp.value, data),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.media(false, timestamp.value, data),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                Ok(self.publishing.take().map(|_| RtmpEvent::PublishFinished))
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let _ = self.session.reject_request(
                    request_id,
                    "NetStream.Play.Failed",
                    "this server does not play rtmp",
                );
                Err(RtmpError::PlayRefused)
            }
            // releaseStream, FCPublish, acknowledgements, chunk sizes: nothing to do.
            _ => Ok(None),
        }
    }

    fn media(&mut self, video: bool, ts: u32, data: Bytes) -> Result<Option<RtmpEvent>, RtmpError> {
        let Some(p) = self.publishing.as_mut() else {
            return Err(RtmpError::MediaBeforePublish);
        };
        let bytes = data.len();
        let parsed = if video {
            p.demuxer.push_video(ts, &data)
        } else {
            p.demuxer.push_audio(ts, &data)
        };
        match parsed {
            Ok(input) => Ok(input.map(|input| RtmpEvent::Media { input, bytes })),
            // A track in a codec Sluice does not package is left out; the rest goes on.
            Err(FlvError::UnsupportedAudioFormat(_) | FlvError::UnsupportedVideoCodec(_)) => {
                p.skipped_tags += 1;
                Ok((p.skipped_tags == 1).then_some(RtmpEvent::UnsupportedTrack))
            }
            Err(reason) => Err(RtmpError::MalformedTag {
                kind: if video { "video" } else { "audio" },
                ts,
                reason,
            }),
        }
    }
}

/// The tracks a stream's metadata announces, when it names any.
fn announced_tracks(m: &StreamMetadata) -> Option<(bool, bool)> {
    let video = m.video_codec_id.is_some() || m.video_width.is_some();
    let audio = m.audio_codec_id.is_some() || m.audio_sample_rate.is_some();
    (video || audio).then_some((video, audio))
}

#[cfg(test)]
mod tests;
