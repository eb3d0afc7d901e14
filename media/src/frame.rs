//! The frame model every ingest produces and the packager consumes.

use crate::codec::{aac, av1, h264, hevc, CodecError};
use bytes::Bytes;

/// Timescale of every video track: the MPEG 90 kHz clock, exact for 24/25/30/50/60 fps
/// and for the millisecond timestamps RTMP carries.
pub const VIDEO_TIMESCALE: u32 = 90_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One access unit: a video picture (length-prefixed NAL units, or AV1 OBUs) or one
/// audio frame (raw AAC), with times in its track's timescale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: TrackKind,
    /// Decode time in the track timescale.
    pub dts: i64,
    /// Presentation minus decode time (B-frames), in the track timescale.
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

impl Frame {
    pub fn pts(&self) -> i64 {
        self.dts + i64::from(self.cts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
    Av1,
}

/// A video track's decoder configuration and what it says about the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// RFC 6381, as written into the multivariant playlist's CODECS.
    pub codec_string: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    /// The decoder configuration record (avcC, hvcC or av1C body), written verbatim.
    pub record: Bytes,
}

impl VideoConfig {
    /// Checks a decoder configuration record and reads the codec facts from it.
    pub fn from_record(codec: VideoCodec, record: Bytes) -> Result<Self, CodecError> {
        let (codec_string, width, height, frame_rate) = match codec {
            VideoCodec::H264 => {
                let info = h264::parse_avcc_record(&record)?;
                (info.codec_string, info.width, info.height, info.frame_rate)
            }
            VideoCodec::H265 => {
                let info = hevc::parse_hvcc_record(&record)?;
                (info.codec_string, info.width, info.height, info.frame_rate)
            }
            VideoCodec::Av1 => {
                let info = av1::parse_av1c_record(&record)?;
                (
                    info.codec_string,
                    info.width.unwrap_or(0),
                    info.height.unwrap_or(0),
                    None,
                )
            }
        };
        Ok(Self {
            codec,
            codec_string,
            width,
            height,
            frame_rate,
            record,
        })
    }
}

/// An AAC track's AudioSpecificConfig and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub codec_string: String,
    pub sample_rate: u32,
    pub channels: u8,
    /// Samples in one frame: the nominal duration of a frame in the track timescale.
    pub samples_per_frame: u32,
    pub asc: Bytes,
}

impl AudioConfig {
    pub fn from_aac_config(asc: Bytes) -> Result<Self, CodecError> {
        let info = aac::parse_audio_specific_config(&asc)?;
        Ok(Self {
            codec_string: info.codec_string,
            sample_rate: info.sample_rate,
            channels: info.channels,
            samples_per_frame: info.samples_per_frame,
            asc,
        })
    }
}

/// Decoder configuration of one track.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackConfig {
    Video(VideoConfig),
    Audio(AudioConfig),
}

impl TrackConfig {
    pub fn kind(&self) -> TrackKind {
        match self {
            TrackConfig::Video(_) => TrackKind::Video,
            TrackConfig::Audio(_) => TrackKind::Audio,
        }
    }

    pub fn timescale(&self) -> u32 {
        match self {
            TrackConfig::Video(_) => VIDEO_TIMESCALE,
            TrackConfig::Audio(a) => a.sample_rate,
        }
    }

    pub fn codec_string(&self) -> &str {
        match self {
            TrackConfig::Video(v) => &v.codec_string,
            TrackConfig::Audio(a) => &a.codec_string,
        }
    }
}
