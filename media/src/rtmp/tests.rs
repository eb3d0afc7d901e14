use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::*;
use crate::frame::{TrackConfig, TrackKind};

/// An rml_rtmp client publishing to an `RtmpIngest`, the bytes passed both ways.
struct Publisher {
    client: ClientSession,
    server: RtmpIngest,
    /// Whether `PublishRequested` is accepted.
    accept: bool,
    events: Vec<RtmpEvent>,
    client_events: Vec<ClientSessionEvent>,
}

impl Publisher {
    /// Handshakes with a new server for `app`.
    fn connect_to(app: &str) -> Self {
        let mut server_hs = RtmpHandshake::new();
        let mut client_hs = Handshake::new(PeerType::Client);
        let c0c1 = client_hs
            .generate_outbound_p0_and_p1()
            .expect("client p0 and p1");
        let HandshakeProgress::InProgress { response } = server_hs.process(&c0c1).expect("c0c1")
        else {
            panic!("the handshake cannot be done after c0 and c1");
        };
        let c2 = match client_hs.process_bytes(&response).expect("s0s1s2") {
            HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
            HandshakeProcessResult::InProgress { .. } => panic!("the client wants more"),
        };
        let HandshakeProgress::Completed { remaining, .. } = server_hs.process(&c2).expect("c2")
        else {
            panic!("the handshake is done after c2");
        };
        assert!(remaining.is_empty());
        let (client, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
        let mut p = Self {
            client,
            server: RtmpIngest::new(app).expect("server"),
            accept: true,
            events: Vec::new(),
            client_events: Vec::new(),
        };
        p.exchange(initial).expect("session start");
        p
    }

    /// Sends what the client produced, then passes bytes both ways until both are quiet.
    fn exchange(&mut self, results: Vec<ClientSessionResult>) -> Result<(), RtmpError> {
        let mut to_server = self.client_bytes(results);
        loop {
            self.server.input(&to_server)?;
            to_server = Vec::new();
            while let Some(event) = self.server.poll()? {
                match event {
                    RtmpEvent::Send(bytes) => {
                        let results = self.client.handle_input(&bytes).expect("client input");
                        to_server.extend(self.client_bytes(results));
                    }
                    RtmpEvent::PublishRequested { request_id, key } => {
                        if self.accept {
                            self.server.accept_publish(request_id)?;
                        } else {
                            self.server.reject_publish(request_id, "no");
                        }
                        self.events
                            .push(RtmpEvent::PublishRequested { request_id, key });
                    }
                    other => self.events.push(other),
                }
            }
            if to_server.is_empty() {
                return Ok(());
            }
        }
    }

    fn client_bytes(&mut self, results: Vec<ClientSessionResult>) -> Vec<u8> {
        let mut out = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(packet) => out.extend(packet.bytes),
                ClientSessionResult::RaisedEvent(e) => self.client_events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        out
    }

    fn send(&mut self, r: ClientSessionResult) -> Result<(), RtmpError> {
        self.exchange(vec![r])
    }

    fn connect(&mut self, app: &str) -> Result<(), RtmpError> {
        let r = self
            .client
            .request_connection(app.to_string())
            .expect("connect request");
        self.send(r)
    }

    fn publish(&mut self, key: &str) -> Result<(), RtmpError> {
        let r = self
            .client
            .request_publishing(key.to_string(), PublishRequestType::Live)
            .expect("publish request");
        self.send(r)
    }

    fn video(&mut self, ms: u32, body: &[u8]) -> Result<(), RtmpError> {
        let r = self
            .client
            .publish_video_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ms), false)
            .expect("video");
        self.send(r)
    }

    fn audio(&mut self, ms: u32, body: &[u8]) -> Result<(), RtmpError> {
        let r = self
            .client
            .publish_audio_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ms), false)
            .expect("audio");
        self.send(r)
    }

    fn take_events(&mut self) -> Vec<RtmpEvent> {
        std::mem::take(&mut self.events)
    }
}

#[test]
fn a_publish_turns_into_tracks_and_media() {
    let mut p = Publisher::connect_to("live");
    p.connect("live/").expect("connect");
    assert!(p
        .client_events
        .contains(&ClientSessionEvent::ConnectionRequestAccepted));
    p.publish("key?token=1").expect("publish");
    assert!(matches!(
        p.take_events().as_slice(),
        [RtmpEvent::PublishRequested { key, .. }] if key == "key"
    ));
    assert!(p.server.is_publishing());
    assert!(p
        .client_events
        .contains(&ClientSessionEvent::PublishRequestAccepted));

    let mut metadata = StreamMetadata::new();
    metadata.video_width = Some(320);
    let r = p.client.publish_metadata(&metadata).expect("metadata");
    p.send(r).expect("metadata");
    assert_eq!(
        p.take_events(),
        vec![RtmpEvent::Tracks {
            video: true,
            audio: false
        }]
    );

    let mut sequence_header = vec![0x17, 0, 0, 0, 0];
    sequence_header.extend_from_slice(crate::testing::AVCC_320X180);
    p.video(0, &sequence_header).expect("sequence header");
    p.video(40, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])
        .expect("frame");
    let events = p.take_events();
    assert!(matches!(
        events.as_slice(),
        [
            RtmpEvent::Media { input: Input::Config(TrackConfig::Video(_)), bytes: 48 },
            RtmpEvent::Media { input: Input::Frame(f), bytes: 10 },
        ] if f.track == TrackKind::Video && f.dts == 40 * 90 && f.keyframe
    ));

    // MP3 is not packaged: reported once, then left out quietly.
    p.audio(0, &[0x2f, 0xff]).expect("mp3");
    p.audio(26, &[0x2f, 0xff]).expect("mp3");
    assert_eq!(p.take_events(), vec![RtmpEvent::UnsupportedTrack]);

    let r = p.client.stop_publishing().expect("stop");
    p.exchange(r).expect("stop");
    assert_eq!(p.take_events(), vec![RtmpEvent::PublishFinished]);
    assert!(!p.server.is_publishing());
}

#[test]
fn another_application_is_refused() {
    let mut p = Publisher::connect_to("live");
    assert_eq!(
        p.connect("other"),
        Err(RtmpError::UnknownApplication {
            got: "other".into(),
            expected: "live".into()
        })
    );
}

#[test]
fn a_second_publish_is_refused() {
    let mut p = Publisher::connect_to("live");
    p.connect("live").expect("connect");
    p.publish("a").expect("publish");
    // The client does not ask twice; a second publish command on the stream does.
    let Some(RtmpEvent::PublishRequested { request_id, .. }) = p.take_events().pop() else {
        panic!("no publish request");
    };
    p.server.pending.push_back(ServerSessionResult::RaisedEvent(
        ServerSessionEvent::PublishStreamRequested {
            request_id: request_id + 1,
            app_name: "live".into(),
            stream_key: "b".into(),
            mode: rml_rtmp::sessions::PublishMode::Live,
        },
    ));
    assert_eq!(p.server.poll(), Err(RtmpError::SecondPublish));
}

#[test]
fn a_refused_publish_sends_no_media() {
    let mut p = Publisher::connect_to("live");
    p.accept = false;
    p.connect("live").expect("connect");
    p.publish("a").expect("publish");
    assert!(!p.server.is_publishing());
    p.server.pending.push_back(ServerSessionResult::RaisedEvent(
        ServerSessionEvent::VideoDataReceived {
            app_name: "live".into(),
            stream_key: "a".into(),
            data: Bytes::from_static(&[0x17, 0, 0, 0, 0]),
            timestamp: RtmpTimestamp::new(0),
        },
    ));
    assert_eq!(p.server.poll(), Err(RtmpError::MediaBeforePublish));
}

#[test]
fn a_malformed_tag_ends_the_publish() {
    let mut p = Publisher::connect_to("live");
    p.connect("live").expect("connect");
    p.publish("a").expect("publish");
    assert_eq!(
        p.video(7, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
        Err(RtmpError::MalformedTag {
            kind: "video",
            ts: 7,
            reason: FlvError::FrameBeforeSequenceHeader
        })
    );
}

#[test]
fn a_bad_handshake_is_an_error() {
    let mut hs = RtmpHandshake::new();
    assert_eq!(
        hs.process(&[6, 0, 0]),
        Err(RtmpError::Handshake("BadVersionId".into()))
    );
}

#[test]
fn the_handshake_takes_any_chunking_and_keeps_what_follows() {
    let mut hs = RtmpHandshake::new();
    let mut input = vec![3u8];
    input.extend([0u8; 1536]); // c1 of the original specification: no digest
    input.extend([0u8; 1536]); // c2
    input.extend([1, 2, 3]);
    let mut sent = Vec::new();
    let mut remaining = None;
    for chunk in input.chunks(100) {
        match hs.process(chunk).expect("handshake") {
            HandshakeProgress::InProgress { response } => sent.extend(response),
            HandshakeProgress::Completed {
                response,
                remaining: r,
            } => {
                sent.extend(response);
                remaining = Some(r);
                break;
            }
        }
    }
    // s0, s1 and s2 (an echo of c1).
    assert_eq!(sent.len(), 1 + 2 * 1536);
    assert_eq!(remaining, Some(vec![1, 2, 3]));
}

#[test]
fn garbage_after_the_handshake_is_an_error() {
    let mut ingest = RtmpIngest::new("live").expect("session");
    while ingest.poll().expect("initial").is_some() {}
    // A chunk of type 0 on chunk stream 2 announcing a 16 MB AMF0 command: the body is
    // buffered until it is complete, so 100 bytes of it are no error yet.
    let mut input = vec![0x02, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
    input.extend([0xee; 100]);
    assert_eq!(ingest.input(&input), Ok(()));
    assert_eq!(ingest.poll(), Ok(None));
    // Past the 128-byte chunk, 0xee reads as a continuation on chunk stream 46, which
    // never started.
    assert!(matches!(
        ingest.input(&[0xee; 100]),
        Err(RtmpError::Protocol(e)) if e.contains("csid 46")
    ));
}

/// Found by `fuzz/fuzz_targets/rtmp_ingest.rs`: rml_rtmp 0.8 panics on an AMF0 command
/// message with fewer than three values (`Vec::drain(..3)` in its deserializer). The
/// panic stays inside `input`: the connection ends with an error, the server goes on.
#[test]
fn a_command_of_one_value_is_an_error_not_a_panic() {
    let mut ingest = RtmpIngest::new("live").expect("session");
    while ingest.poll().expect("initial").is_some() {}
    // Chunk stream 3, type 0 header: timestamp 0, 10 bytes, AMF0 command (20), stream 0;
    // then the body: the one AMF0 string "connect".
    let mut input = vec![0x03, 0, 0, 0, 0, 0, 10, 20, 0, 0, 0, 0];
    input.extend([0x02, 0, 7]);
    input.extend(b"connect");
    assert_eq!(ingest.input(&input), Err(RtmpError::SessionPanicked));
}
