//! Builders and readers shared by the unit tests.

use bytes::Bytes;
use mp4_atom::{Any, Decode};

use crate::frame::{
    AudioConfig, Frame, TrackConfig, TrackKind, VideoCodec, VideoConfig, VIDEO_TIMESCALE,
};

/// Bytes from hex digits (white space ignored), for parameter sets kept in tests.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

/// avcC of 320x180 High@L1.3 x264 output (ffmpeg testsrc2, 30 fps).
pub(crate) const AVCC_320X180: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x18, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xb4, 0x0a, 0x0c,
    0xfc, 0xf8, 0x08, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x47, 0x8a, 0x15, 0x50,
    0x01, 0x00, 0x04, 0x68, 0xef, 0x0f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
];

pub(crate) fn video_config() -> TrackConfig {
    TrackConfig::Video(
        VideoConfig::from_record(VideoCodec::H264, Bytes::from_static(AVCC_320X180))
            .expect("valid avcC"),
    )
}

pub(crate) fn audio_config() -> TrackConfig {
    TrackConfig::Audio(
        AudioConfig::from_aac_config(Bytes::from_static(&[0x11, 0x90])).expect("valid ASC"),
    )
}

/// A video frame at `ms` (converted to 90 kHz).
pub(crate) fn video_at_ticks(dts: i64, keyframe: bool) -> Frame {
    Frame {
        track: TrackKind::Video,
        dts,
        cts: 0,
        keyframe,
        data: Bytes::from(vec![0, 0, 0, 2, if keyframe { 0x65 } else { 0x41 }, 0x80]),
    }
}

/// Video frames at `fps` (an exact divisor of 90 kHz), keyframe every `gop` frames.
pub(crate) fn video_frames(fps: i64, gop: i64, count: i64) -> Vec<Frame> {
    let step = i64::from(VIDEO_TIMESCALE) / fps;
    (0..count)
        .map(|i| video_at_ticks(i * step, i % gop == 0))
        .collect()
}

/// AAC frames at 48 kHz.
pub(crate) fn audio_frames(count: i64) -> Vec<Frame> {
    (0..count)
        .map(|i| Frame {
            track: TrackKind::Audio,
            dts: i * 1024,
            cts: 0,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10, 0x04]),
        })
        .collect()
}

/// Interleaves frames by time, as RTMP delivers them.
pub(crate) fn interleave(video: Vec<Frame>, audio: Vec<Frame>) -> Vec<Frame> {
    let mut all: Vec<Frame> = video.into_iter().chain(audio).collect();
    let us = |f: &Frame| match f.track {
        TrackKind::Video => f.dts * 1_000_000 / 90_000,
        TrackKind::Audio => f.dts * 1_000_000 / 48_000,
    };
    all.sort_by_key(us);
    all
}

/// One `traf` of a fragment, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrafFacts {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub durations: Vec<u32>,
    pub sizes: Vec<u32>,
}

/// Reads a fragment (moof + mdat) back, checking the data offsets point into the mdat.
pub(crate) fn read_fragment(data: &[u8]) -> Vec<TrafFacts> {
    let mut cursor = std::io::Cursor::new(data);
    let moof = match Any::decode(&mut cursor).expect("moof decodes") {
        Any::Moof(m) => m,
        other => panic!("expected moof, got {other:?}"),
    };
    let moof_len = cursor.position() as usize;
    let mdat_len =
        u32::from_be_bytes(data[moof_len..moof_len + 4].try_into().expect("4 bytes")) as usize;
    assert_eq!(&data[moof_len + 4..moof_len + 8], b"mdat");
    assert_eq!(moof_len + mdat_len, data.len(), "mdat ends the fragment");
    let mut expected_offset = moof_len + 8;
    moof.traf
        .iter()
        .map(|traf| {
            let trun = &traf.trun[0];
            assert_eq!(trun.data_offset, Some(expected_offset as i32));
            let durations: Vec<u32> = trun
                .samples
                .iter()
                .map(|s| s.duration.unwrap_or(0))
                .collect();
            let sizes: Vec<u32> = trun.samples.iter().map(|s| s.size.unwrap_or(0)).collect();
            expected_offset += sizes.iter().map(|s| *s as usize).sum::<usize>();
            TrafFacts {
                track_id: traf.tfhd.track_id,
                base_decode_time: traf
                    .tfdt
                    .as_ref()
                    .map(|t| t.base_media_decode_time)
                    .unwrap_or(0),
                durations,
                sizes,
            }
        })
        .collect()
}
