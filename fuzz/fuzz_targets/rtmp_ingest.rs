//! The RTMP ingest as the server runs it (`sluice_media::rtmp`, driven like
//! `src/ingest/rtmp.rs` drives it): bytes from the socket in chunks whose sizes follow
//! the second input byte, first through the handshake, then into the session, whose
//! events are acted on (publish accepted or refused, media demuxed) until an error
//! ends the connection.
//!
//! The first byte's flags put well-formed traffic first, so the fuzzer spends its time
//! past the parts it cannot guess:
//! - `HANDSHAKE`: a handshake of the original specification (c0, c1, c2 of zeros);
//! - `PUBLISH`: an rml_rtmp client's `connect(live)` and `publish(key)` (recorded once);
//! - `TAGS`: the rest is FLV tags (an `.flv` file, its header optional) sent as RTMP
//!   audio, video and `@setDataFrame` messages, on the published stream;
//! - `REFUSE`: publish requests are refused (the connection then ends).
//!
//! A panic inside rml_rtmp's input handling is the server's to isolate (`RtmpIngest::input`
//! turns it into an error that ends the connection); a panic that gets out is a crash.

#![no_main]

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use sluice_fuzz::chunks;
use sluice_media::flv::FlvFile;
use sluice_media::rtmp::{HandshakeProgress, RtmpEvent, RtmpHandshake, RtmpIngest};

const APP: &str = "live";
const HANDSHAKE: u8 = 1;
const PUBLISH: u8 = 2;
const TAGS: u8 = 4;
const REFUSE: u8 = 8;
/// The stream id `createStream` gives a client's first stream.
const STREAM_ID: u32 = 1;
const CHUNK_SIZE: u32 = 4096;

thread_local! {
    /// The last panic and where it happened, told if it escapes the server's code.
    static LAST_PANIC: RefCell<Option<(String, Backtrace)>> = const { RefCell::new(None) };
}

/// libfuzzer-sys's panic hook aborts at once, but the server catches the panics of
/// rml_rtmp's input handling: every panic is let unwind (and kept), and one that gets
/// out of the server's code aborts in the fuzz target's body.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let trace = Backtrace::force_capture();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((info.to_string(), trace)));
    }));
}

/// What an rml_rtmp client sends to connect to `APP` and publish, recorded once against
/// the server's own session: one write per answer it waited for (a client that does not
/// wait for `connect` to be accepted before it publishes is not answered).
fn publish_flights() -> &'static [Vec<u8>] {
    static PREFIX: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let mut server = RtmpIngest::new(APP).expect("server session");
        let (mut client, initial) =
            ClientSession::new(ClientSessionConfig::new()).expect("client session");
        let mut sent = Vec::new();
        exchange(&mut client, &mut server, initial, &mut sent);
        let connect = client
            .request_connection(APP.into())
            .expect("connect request");
        exchange(&mut client, &mut server, vec![connect], &mut sent);
        let publish = client
            .request_publishing("key".into(), PublishRequestType::Live)
            .expect("publish request");
        exchange(&mut client, &mut server, vec![publish], &mut sent);
        assert!(server.is_publishing(), "the recorded publish is accepted");
        sent
    })
}

/// Passes bytes both ways until both sides are quiet; what the client sent is kept.
fn exchange(
    client: &mut ClientSession,
    server: &mut RtmpIngest,
    results: Vec<ClientSessionResult>,
    sent: &mut Vec<Vec<u8>>,
) {
    let mut results = results;
    loop {
        let mut to_server = Vec::new();
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                to_server.extend(packet.bytes);
            }
        }
        if to_server.is_empty() {
            return;
        }
        sent.push(to_server.clone());
        server.input(&to_server).expect("server input");
        results = Vec::new();
        while let Some(event) = server.poll().expect("server event") {
            match event {
                RtmpEvent::Send(bytes) => {
                    results.extend(client.handle_input(&bytes).expect("client input"))
                }
                RtmpEvent::PublishRequested { request_id, .. } => {
                    server.accept_publish(request_id).expect("accept")
                }
                _ => {}
            }
        }
    }
}

/// FLV tags as the chunks of RTMP messages on the published stream, every chunk with a
/// full header (so no state is shared with the recorded prefix).
fn tags_as_chunks(tags: &[u8]) -> Vec<u8> {
    let file = if tags.starts_with(b"FLV") {
        Bytes::copy_from_slice(tags)
    } else {
        let mut f = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
        f.extend_from_slice(tags);
        Bytes::from(f)
    };
    let mut out = Vec::new();
    let Ok(mut file) = FlvFile::new(file) else {
        return out;
    };
    let mut serializer = ChunkSerializer::new();
    if let Ok(packet) = serializer.set_max_chunk_size(CHUNK_SIZE, RtmpTimestamp::new(0)) {
        out.extend(packet.bytes);
    }
    while let Ok(Some(tag)) = file.next_tag() {
        let data = if tag.tag_type == 18 {
            // An encoder's metadata goes out as `@setDataFrame` + the script tag body.
            let mut d = vec![0x02, 0, 13];
            d.extend_from_slice(b"@setDataFrame");
            d.extend_from_slice(&tag.body);
            Bytes::from(d)
        } else {
            tag.body
        };
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(tag.timestamp_ms),
            type_id: tag.tag_type,
            message_stream_id: STREAM_ID,
            data,
        };
        match serializer.serialize(&payload, true, false) {
            Ok(packet) => out.extend(packet.bytes),
            Err(_) => break,
        }
    }
    out
}

/// Gives the session one read's bytes and acts on what comes out, as the server does;
/// `false` once the connection would end.
fn feed(ingest: &mut RtmpIngest, bytes: &[u8], refuse: bool) -> bool {
    if ingest.input(bytes).is_err() {
        return false;
    }
    loop {
        match ingest.poll() {
            Ok(None) => return true,
            Ok(Some(RtmpEvent::PublishRequested { request_id, .. })) => {
                if refuse {
                    ingest.reject_publish(request_id, "refused by the fuzz target");
                    return false;
                }
                if ingest.accept_publish(request_id).is_err() {
                    return false;
                }
            }
            Ok(Some(_)) => {}
            Err(_) => return false,
        }
    }
}

fn run(data: &[u8]) {
    let [flags, seed, rest @ ..] = data else {
        return;
    };
    let body = if flags & TAGS != 0 {
        tags_as_chunks(rest)
    } else {
        rest.to_vec()
    };
    let handshake_bytes = if flags & HANDSHAKE != 0 {
        let mut c0c1c2 = vec![0u8; 1 + 2 * 1536];
        c0c1c2[0] = 3;
        c0c1c2
    } else {
        Vec::new()
    };
    // What each read from the socket gives.
    let mut reads = chunks(&handshake_bytes, *seed);
    if flags & HANDSHAKE != 0 && flags & PUBLISH != 0 {
        reads.extend(publish_flights().iter().map(Vec::as_slice));
    }
    reads.extend(chunks(&body, *seed));

    let refuse = flags & REFUSE != 0;
    let mut handshake = RtmpHandshake::new();
    let mut session: Option<RtmpIngest> = None;
    for read in reads {
        if let Some(ingest) = session.as_mut() {
            if !feed(ingest, read, refuse) {
                return;
            }
            continue;
        }
        match handshake.process(read) {
            Ok(HandshakeProgress::InProgress { .. }) => {}
            Ok(HandshakeProgress::Completed { remaining, .. }) => {
                let mut ingest = RtmpIngest::new(APP).expect("a session starts");
                if !feed(&mut ingest, &remaining, refuse) {
                    return;
                }
                session = Some(ingest);
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(
    init: {
        install_panic_hook();
        let _ = publish_flights();
    },
    |data: &[u8]| {
        if std::panic::catch_unwind(AssertUnwindSafe(|| run(data))).is_err() {
            match LAST_PANIC.with(|p| p.borrow_mut().take()) {
                Some((message, trace)) => eprintln!("{message}\n{trace}"),
                None => eprintln!("a panic escaped (no message)"),
            }
            std::process::abort();
        }
    }
);
