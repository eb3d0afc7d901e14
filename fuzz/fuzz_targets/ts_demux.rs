//! The MPEG-TS demuxer (SRT ingest), fed in chunks whose sizes follow the first byte,
//! then its output through the packager. With the first byte's top bit set, every
//! 188-byte packet of the rest gets its sync byte (the fuzzer then spends its time on
//! packet contents).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{chunks, Packaging};
use sluice_media::ts::TsDemuxer;
use sluice_media::Input;

fn feed(inputs: Vec<Input>, packaging: &mut Packaging) {
    for input in inputs {
        packaging.push(input, 0);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut stream = stream.to_vec();
    if seed & 0x80 != 0 {
        for packet in stream.chunks_mut(188) {
            packet[0] = 0x47;
        }
    }
    let mut demuxer = TsDemuxer::new();
    let mut packaging = Packaging::new();
    for piece in chunks(&stream, seed) {
        let inputs = demuxer.push(piece);
        feed(inputs, &mut packaging);
        let _ = demuxer.tracks();
    }
    let inputs = demuxer.flush();
    feed(inputs, &mut packaging);
    let _ = demuxer.stats();
    packaging.finish();
});
