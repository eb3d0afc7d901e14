//! A small RTMP publisher (rml_rtmp's client session over a std socket), for what
//! ffmpeg cannot do: note the moment each tag leaves, or send a message ffmpeg never
//! would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

/// A connection that has been accepted as the publisher of `app/key`.
pub struct RtmpPublisher {
    stream: TcpStream,
    session: ClientSession,
    serializer: ChunkSerializer,
}

fn rtmp_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("rtmp: {e}")
}

impl RtmpPublisher {
    /// Connects to `127.0.0.1:port`, shakes hands and publishes `key` under `app`;
    /// fails when the server refuses or says nothing for 10 s.
    pub fn publish(port: u16, app: &str, key: &str) -> Result<Self> {
        Self::publish_over(TcpStream::connect(("127.0.0.1", port))?, app, key)
    }

    /// [`RtmpPublisher::publish`] over a connection the caller made (from another
    /// source address, say).
    pub fn publish_over(mut stream: TcpStream, app: &str, key: &str) -> Result<Self> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // A server that stops reading cannot hang the test.
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        let mut hs = Handshake::new(PeerType::Client);
        stream.write_all(&hs.generate_outbound_p0_and_p1().map_err(rtmp_err)?)?;
        let mut buf = vec![0u8; 8192];
        let leftover = loop {
            let n = stream.read(&mut buf)?;
            ensure!(
                n > 0,
                "the server closed the connection during the handshake"
            );
            match hs.process_bytes(&buf[..n]).map_err(rtmp_err)? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes)?
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes)?;
                    break remaining_bytes;
                }
            }
        };
        let (session, initial) =
            ClientSession::new(ClientSessionConfig::new()).map_err(rtmp_err)?;
        let mut me = Self {
            stream,
            session,
            serializer: ChunkSerializer::new(),
        };
        let mut events = me.send_results(initial)?;
        events.extend(me.input(&leftover)?);
        let connect = me
            .session
            .request_connection(app.into())
            .map_err(rtmp_err)?;
        events.extend(me.send_results(vec![connect])?);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for e in std::mem::take(&mut events) {
                match e {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = me
                            .session
                            .request_publishing(key.into(), PublishRequestType::Live)
                            .map_err(rtmp_err)?;
                        events.extend(me.send_results(vec![r])?);
                    }
                    ClientSessionEvent::PublishRequestAccepted => {
                        me.stream.set_read_timeout(None)?;
                        return Ok(me);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        bail!("connection refused: {description}")
                    }
                    _ => {}
                }
            }
            ensure!(
                Instant::now() < deadline,
                "publishing was not accepted in 10 s"
            );
            let n = me.stream.read(&mut buf)?;
            ensure!(n > 0, "the server closed the connection before publishing");
            let got = me.input(&buf[..n])?;
            events.extend(got);
        }
    }

    fn input(&mut self, bytes: &[u8]) -> Result<Vec<ClientSessionEvent>> {
        let results = self.session.handle_input(bytes).map_err(rtmp_err)?;
        self.send_results(results)
    }

    fn send_results(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.stream.write_all(&p.bytes)?,
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    /// Sends one FLV tag body: 8 audio, 9 video, 18 script data (`@setDataFrame` is
    /// added to script data as encoders do).
    pub fn send_tag(&mut self, tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Result<()> {
        let ts = RtmpTimestamp::new(timestamp_ms);
        let data = Bytes::copy_from_slice(body);
        let result = match tag_type {
            8 => self.session.publish_audio_data(data, ts, false),
            9 => self.session.publish_video_data(data, ts, false),
            _ => return Ok(()),
        }
        .map_err(rtmp_err)?;
        self.send_results(vec![result]).map(|_| ())
    }

    /// Sends a raw AMF0 data message on the stream's chunk stream.
    pub fn send_amf0_data(&mut self, values: Vec<rml_rtmp::rml_amf0::Amf0Value>) -> Result<()> {
        let payload = RtmpMessage::Amf0Data { values }
            .into_message_payload(RtmpTimestamp::new(0), 1)
            .map_err(rtmp_err)?;
        let packet = self
            .serializer
            .serialize(&payload, true, false)
            .map_err(rtmp_err)?;
        self.stream.write_all(&packet.bytes)?;
        Ok(())
    }

    /// Whether the server has closed the connection (reads whatever it sent meanwhile).
    pub fn closed_within(&mut self, limit: Duration) -> Result<bool> {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}
