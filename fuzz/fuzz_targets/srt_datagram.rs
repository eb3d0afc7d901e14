//! A datagram on the SRT port, as the listener's front handles it
//! (`src/ingest/srt_front.rs`): whatever `sluice_media::srt_datagram::admit` lets
//! through is then parsed by the SRT library itself, as its listener task does, in
//! both address families. A panic in either is a crash: the front must never hand the
//! library a datagram its parser panics on.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use srt_protocol::packet::Packet;

fuzz_target!(|data: &[u8]| {
    if sluice_media::srt_datagram::admit(data).is_ok() {
        let _ = Packet::parse(&mut Cursor::new(data), false);
        let _ = Packet::parse(&mut Cursor::new(data), true);
    }
});
