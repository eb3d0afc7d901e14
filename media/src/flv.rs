//! FLV tag bodies as RTMP delivers them (and as an `.flv` file stores them), including
//! Enhanced RTMP video (FourCC `avc1`/`hvc1`/`av01`), turned into packager inputs.
//!
//! ```text
//! RTMP message / FLV tag --parse_video_tag/parse_audio_tag--> VideoTag/AudioTag
//!   --FlvDemuxer (timestamp unwrap, ms -> track timescale, AAC smoothing)--> Input
//! ```
//! `FlvFile` splits a whole `.flv` file into tags for `sluice package`.

use crate::codec::CodecError;
use crate::frame::{AudioConfig, Frame, TrackConfig, TrackKind, VideoCodec, VideoConfig};
use crate::packager::Input;
use bytes::Bytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty {0} tag")]
    Empty(&'static str),
    #[error("{0} tag is truncated")]
    Truncated(&'static str),
    #[error("unsupported video codec {0}")]
    UnsupportedVideoCodec(String),
    #[error("unsupported audio format {0}")]
    UnsupportedAudioFormat(u8),
    #[error("unsupported Enhanced RTMP packet type {0}")]
    UnsupportedPacketType(u8),
    #[error("video frame before its sequence header")]
    FrameBeforeSequenceHeader,
    #[error("not an FLV file")]
    NotFlv,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// Decoder configuration record (avcC, hvcC or av1C body).
    SequenceStart {
        codec: VideoCodec,
        record: Bytes,
    },
    /// One coded picture; `data` is length-prefixed NAL units (or AV1 OBUs).
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        cts_ms: i32,
        data: Bytes,
    },
    SequenceEnd,
    /// Metadata, command frames and other tags with no picture: ignored.
    Ignored,
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    AacConfig(Bytes),
    AacFrame(Bytes),
}

fn si24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

/// Parses a video tag body: legacy AVC (codec id 7) or Enhanced RTMP.
pub fn parse_video_tag(body: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty("video"))?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(first, body);
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Ignored); // video info / command frame
    }
    if codec_id != 7 {
        return Err(FlvError::UnsupportedVideoCodec(format!(
            "FLV codec id {codec_id}"
        )));
    }
    let header = body.get(1..5).ok_or(FlvError::Truncated("AVC video"))?;
    let cts_ms = si24(&header[1..4]);
    match header[0] {
        0 => Ok(VideoTag::SequenceStart {
            codec: VideoCodec::H264,
            record: body.slice(5..),
        }),
        1 => Ok(VideoTag::Frame {
            codec: VideoCodec::H264,
            keyframe: frame_type == 1,
            cts_ms,
            data: body.slice(5..),
        }),
        2 => Ok(VideoTag::SequenceEnd),
        t => Err(FlvError::UnsupportedPacketType(t)),
    }
}

fn parse_enhanced_video(first: u8, body: &Bytes) -> Result<VideoTag, FlvError> {
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0f;
    let fourcc = body
        .get(1..5)
        .ok_or(FlvError::Truncated("Enhanced RTMP video"))?;
    let codec = match fourcc {
        b"avc1" => VideoCodec::H264,
        b"hvc1" => VideoCodec::H265,
        b"av01" => VideoCodec::Av1,
        other => {
            return Err(FlvError::UnsupportedVideoCodec(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    if frame_type == 5 && packet_type != 0 && packet_type != 2 {
        return Ok(VideoTag::Ignored); // command frame: no picture
    }
    let keyframe = frame_type == 1;
    match packet_type {
        0 => Ok(VideoTag::SequenceStart {
            codec,
            record: body.slice(5..),
        }),
        // CodedFrames: H.264 and HEVC carry a composition time offset first; AV1 does not.
        1 if codec != VideoCodec::Av1 => {
            let cts = body
                .get(5..8)
                .ok_or(FlvError::Truncated("Enhanced RTMP video"))?;
            Ok(VideoTag::Frame {
                codec,
                keyframe,
                cts_ms: si24(cts),
                data: body.slice(8..),
            })
        }
        1 | 3 => Ok(VideoTag::Frame {
            codec,
            keyframe,
            cts_ms: 0,
            data: body.slice(5..),
        }),
        2 => Ok(VideoTag::SequenceEnd),
        4 => Ok(VideoTag::Ignored), // metadata (HDR info)
        t => Err(FlvError::UnsupportedPacketType(t)),
    }
}

/// Parses an audio tag body. Only AAC (sound format 10) is packaged.
pub fn parse_audio_tag(body: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty("audio"))?;
    let format = first >> 4;
    if format != 10 {
        return Err(FlvError::UnsupportedAudioFormat(format));
    }
    match body.get(1) {
        Some(0) => Ok(AudioTag::AacConfig(body.slice(2..))),
        Some(1) => Ok(AudioTag::AacFrame(body.slice(2..))),
        Some(t) => Err(FlvError::UnsupportedPacketType(*t)),
        None => Err(FlvError::Truncated("AAC audio")),
    }
}

/// Extends RTMP's 32-bit millisecond timestamps to 64 bits across rollover (every
/// 49.7 days): a step of more than half the range is read as a wrap, not a jump.
#[derive(Debug, Default, Clone)]
pub struct TimestampUnwrapper {
    last: Option<i64>,
}

impl TimestampUnwrapper {
    pub fn unwrap(&mut self, ts_ms: u32) -> i64 {
        const RANGE: i64 = 1 << 32;
        let Some(last) = self.last else {
            self.last = Some(i64::from(ts_ms));
            return i64::from(ts_ms);
        };
        let epoch = last.div_euclid(RANGE);
        let candidates = [epoch - 1, epoch, epoch + 1].map(|e| e * RANGE + i64::from(ts_ms));
        let best = candidates
            .into_iter()
            .min_by_key(|c| (c - last).abs())
            .unwrap_or(i64::from(ts_ms));
        self.last = Some(best);
        best
    }
}

/// AAC frames from RTMP carry millisecond timestamps, a jitter of up to 1 ms against
/// the 21.33 ms frame at 48 kHz. The demuxer counts samples instead and only resyncs
/// to the timestamp when the two disagree by more than this.
const AUDIO_RESYNC_MS: i64 = 40;

/// Turns one publisher's FLV tags into packager inputs.
#[derive(Debug, Default)]
pub struct FlvDemuxer {
    video_ts: TimestampUnwrapper,
    audio_ts: TimestampUnwrapper,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    next_audio_dts: Option<i64>,
}

impl FlvDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<&AudioConfig> {
        self.audio.as_ref()
    }

    /// One video tag body with its RTMP timestamp; `Ok(None)` for tags with no media.
    pub fn push_video(&mut self, ts_ms: u32, body: &Bytes) -> Result<Option<Input>, FlvError> {
        match parse_video_tag(body)? {
            VideoTag::SequenceStart { codec, record } => {
                let config = VideoConfig::from_record(codec, record)?;
                if self.video.as_ref() == Some(&config) {
                    return Ok(None);
                }
                self.video = Some(config.clone());
                Ok(Some(Input::Config(TrackConfig::Video(config))))
            }
            VideoTag::Frame {
                codec,
                keyframe,
                cts_ms,
                data,
            } => {
                match &self.video {
                    Some(v) if v.codec == codec => {}
                    _ => return Err(FlvError::FrameBeforeSequenceHeader),
                }
                if data.is_empty() {
                    return Ok(None);
                }
                let ticks_per_ms = i64::from(crate::frame::VIDEO_TIMESCALE / 1000);
                let dts = self.video_ts.unwrap(ts_ms) * ticks_per_ms;
                Ok(Some(Input::Frame(Frame {
                    track: TrackKind::Video,
                    dts,
                    cts: cts_ms.saturating_mul(ticks_per_ms as i32),
                    keyframe,
                    data,
                })))
            }
            VideoTag::SequenceEnd | VideoTag::Ignored => Ok(None),
        }
    }

    /// One audio tag body with its RTMP timestamp; `Ok(None)` for tags with no media.
    pub fn push_audio(&mut self, ts_ms: u32, body: &Bytes) -> Result<Option<Input>, FlvError> {
        match parse_audio_tag(body)? {
            AudioTag::AacConfig(asc) => {
                let config = AudioConfig::from_aac_config(asc)?;
                if self.audio.as_ref() == Some(&config) {
                    return Ok(None);
                }
                self.audio = Some(config.clone());
                self.next_audio_dts = None;
                Ok(Some(Input::Config(TrackConfig::Audio(config))))
            }
            AudioTag::AacFrame(data) => {
                let Some(config) = &self.audio else {
                    return Err(FlvError::FrameBeforeSequenceHeader);
                };
                if data.is_empty() {
                    return Ok(None);
                }
                let rate = i64::from(config.sample_rate);
                let measured = self.audio_ts.unwrap(ts_ms) * rate / 1000;
                let dts = match self.next_audio_dts {
                    Some(expected)
                        if (expected - measured).abs() <= AUDIO_RESYNC_MS * rate / 1000 =>
                    {
                        expected
                    }
                    _ => measured,
                };
                self.next_audio_dts = Some(dts + i64::from(config.samples_per_frame));
                Ok(Some(Input::Frame(Frame {
                    track: TrackKind::Audio,
                    dts,
                    cts: 0,
                    keyframe: true,
                    data,
                })))
            }
        }
    }
}

/// FLV file header facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    pub has_audio: bool,
    pub has_video: bool,
}

/// One tag of an FLV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script data.
    pub tag_type: u8,
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Splits a whole FLV file held in memory into tags.
pub struct FlvFile {
    data: Bytes,
    pos: usize,
    pub header: FlvHeader,
}

impl FlvFile {
    pub fn new(data: Bytes) -> Result<Self, FlvError> {
        if data.len() < 9 || &data[0..3] != b"FLV" {
            return Err(FlvError::NotFlv);
        }
        let flags = data[4];
        let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
        Ok(Self {
            pos: header_len.saturating_add(4), // header, then PreviousTagSize0
            header: FlvHeader {
                has_audio: flags & 0x04 != 0,
                has_video: flags & 0x01 != 0,
            },
            data,
        })
    }

    /// The next tag; `Ok(None)` at the end, an error for a tag cut short.
    pub fn next_tag(&mut self) -> Result<Option<FlvTag>, FlvError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let head = self
            .data
            .get(self.pos..self.pos + 11)
            .ok_or(FlvError::Truncated("FLV file"))?;
        let tag_type = head[0] & 0x1f;
        let size =
            (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
        let timestamp_ms = (u32::from(head[7]) << 24)
            | (u32::from(head[4]) << 16)
            | (u32::from(head[5]) << 8)
            | u32::from(head[6]);
        let start = self.pos + 11;
        if start + size > self.data.len() {
            return Err(FlvError::Truncated("FLV file"));
        }
        let body = self.data.slice(start..start + size);
        self.pos = start + size + 4;
        Ok(Some(FlvTag {
            tag_type,
            timestamp_ms,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_frame_with_negative_composition_time() {
        let body = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0x41]);
        assert_eq!(
            parse_video_tag(&body),
            Ok(VideoTag::Frame {
                codec: VideoCodec::H264,
                keyframe: false,
                cts_ms: -2,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            })
        );
    }

    #[test]
    fn enhanced_hevc_coded_frames_and_frames_x() {
        let mut b = vec![0x91]; // ex header, keyframe, CodedFrames
        b.extend_from_slice(b"hvc1");
        b.extend_from_slice(&[0, 0, 33, 9, 9]);
        let tag = parse_video_tag(&Bytes::from(b)).expect("valid");
        assert_eq!(
            tag,
            VideoTag::Frame {
                codec: VideoCodec::H265,
                keyframe: true,
                cts_ms: 33,
                data: Bytes::from_static(&[9, 9]),
            }
        );
        let mut b = vec![0xa3]; // ex header, inter frame, CodedFramesX
        b.extend_from_slice(b"hvc1");
        b.extend_from_slice(&[7]);
        assert!(matches!(
            parse_video_tag(&Bytes::from(b)),
            Ok(VideoTag::Frame {
                keyframe: false,
                cts_ms: 0,
                ..
            })
        ));
    }

    #[test]
    fn unknown_codecs_are_typed_errors() {
        let mut b = vec![0x90];
        b.extend_from_slice(b"vp09");
        assert_eq!(
            parse_video_tag(&Bytes::from(b)),
            Err(FlvError::UnsupportedVideoCodec("vp09".into()))
        );
        assert_eq!(
            parse_video_tag(&Bytes::from_static(&[0x12, 0])),
            Err(FlvError::UnsupportedVideoCodec("FLV codec id 2".into()))
        );
        assert_eq!(
            parse_audio_tag(&Bytes::from_static(&[0x2f, 0])),
            Err(FlvError::UnsupportedAudioFormat(2))
        );
        assert_eq!(
            parse_video_tag(&Bytes::new()),
            Err(FlvError::Empty("video"))
        );
    }

    #[test]
    fn timestamps_unwrap_across_rollover_and_allow_small_backsteps() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(u.unwrap(5), (1i64 << 32) + 5);
        assert_eq!(u.unwrap(u32::MAX - 1), i64::from(u32::MAX - 1));
        assert_eq!(u.unwrap(100), (1i64 << 32) + 100);
    }

    #[test]
    fn aac_timestamps_follow_the_sample_count_within_jitter() {
        let mut d = FlvDemuxer::new();
        let cfg = d
            .push_audio(0, &Bytes::from_static(&[0xaf, 0, 0x11, 0x90]))
            .expect("config");
        assert!(matches!(cfg, Some(Input::Config(TrackConfig::Audio(_)))));
        let mut dts = Vec::new();
        for ms in [0u32, 21, 43, 64, 85, 107, 500] {
            match d.push_audio(ms, &Bytes::from_static(&[0xaf, 1, 0x21])) {
                Ok(Some(Input::Frame(f))) => dts.push(f.dts),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(dts, vec![0, 1024, 2048, 3072, 4096, 5120, 24000]);
    }

    #[test]
    fn rtmp_timestamp_rollover_keeps_the_packaged_timeline_continuous() {
        use crate::packager::{Output, Packager, PackagerSettings};
        let mut d = FlvDemuxer::new();
        let mut p = Packager::new(PackagerSettings {
            expect_audio: false,
            ..PackagerSettings::default()
        })
        .expect("settings");
        let mut config = vec![0x17, 0, 0, 0, 0];
        config.extend_from_slice(crate::testing::AVCC_320X180);
        let input = d.push_video(0, &Bytes::from(config)).expect("config");
        p.push(input.expect("an input"), 0).expect("push");
        // Two seconds of 30 fps video whose 32-bit millisecond clock wraps halfway.
        let start = u32::MAX - 999;
        for i in 0..60u32 {
            let ts = start.wrapping_add(i * 1000 / 30);
            let key = if i % 30 == 0 { 0x17 } else { 0x27 };
            let body = Bytes::from(vec![key, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
            if let Some(input) = d.push_video(ts, &body).expect("frame") {
                p.push(input, 0).expect("push");
            }
        }
        p.finish().expect("finish");
        let mut last_tfdt = 0;
        while let Some(o) = p.poll_output() {
            if let Output::Part(part) = o {
                let tfdt = crate::testing::read_fragment(&part.data)[0].base_decode_time;
                assert!(tfdt >= last_tfdt);
                last_tfdt = tfdt;
            }
        }
        assert_eq!(p.stats().discontinuities, 0);
        assert_eq!(p.stats().frames_dropped, 0);
        // The encoder's clock is carried through: past 2^32 ms, in 90 kHz ticks.
        assert!(last_tfdt > u64::from(u32::MAX) * 90);
    }

    #[test]
    fn frames_before_config_are_refused() {
        let mut d = FlvDemuxer::new();
        assert_eq!(
            d.push_video(
                0,
                &Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])
            ),
            Err(FlvError::FrameBeforeSequenceHeader)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tags_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            ts in proptest::num::u32::ANY,
        ) {
            let body = Bytes::from(bytes.clone());
            let mut d = FlvDemuxer::new();
            let _ = d.push_video(ts, &body);
            let _ = d.push_audio(ts, &body);
            if let Ok(mut f) = FlvFile::new(Bytes::from(bytes)) {
                while let Ok(Some(_)) = f.next_tag() {}
            }
        }
    }
}
