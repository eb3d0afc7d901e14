//! Decoder configuration records and parameter sets as an encoder sends them: avcC and
//! the H.264 SPS, hvcC and the HEVC SPS, av1C, the AAC AudioSpecificConfig. Every parser
//! reads the whole input; what parses is also rebuilt (as the MPEG-TS ingest does).
//! There is no VPS parser: a VPS is only copied into a record.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_media::codec::{aac, av1, h264, hevc};
use sluice_media::{AudioConfig, VideoCodec, VideoConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(avc) = h264::parse_avcc_record(data) {
        if let (Some(sps), Some(pps)) = (avc.sps.first(), avc.pps.first()) {
            let _ = h264::build_avcc_record(sps, pps);
        }
    }
    let _ = h264::sps_facts(data);
    let _ = h264::build_avcc_record(data, &[0x68, 0xce, 0x3c, 0x80]);

    let _ = hevc::parse_hvcc_record(data);
    if hevc::parse_sps(data).is_ok() {
        // VPS and PPS headers only: the SPS decides.
        let _ = hevc::build_hvcc_record(&[0x40, 0x01, 0x0c], data, &[0x44, 0x01, 0xc1]);
    }

    let _ = av1::parse_av1c_record(data);
    let _ = aac::parse_audio_specific_config(data);

    let bytes = Bytes::copy_from_slice(data);
    for codec in [VideoCodec::H264, VideoCodec::H265, VideoCodec::Av1] {
        let _ = VideoConfig::from_record(codec, bytes.clone());
    }
    let _ = AudioConfig::from_aac_config(bytes);
});
