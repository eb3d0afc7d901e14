//! AAC: the AudioSpecificConfig RTMP sends as the AAC sequence header.

use super::CodecError;

const WHAT: &str = "AAC AudioSpecificConfig";

/// Sampling frequencies by `samplingFrequencyIndex` (ISO 14496-3 1.6.3.4).
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// What an AudioSpecificConfig says about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacInfo {
    /// `mp4a.40.N`, N the audio object type (2 = AAC-LC, 5 = HE-AAC, 29 = HE-AACv2).
    pub codec_string: String,
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
    /// Samples per frame: 1024 for AAC-LC (960 when the frame-length flag says so).
    pub samples_per_frame: u32,
    /// The config as sent, written verbatim into the `esds` box.
    pub config: Vec<u8>,
}

/// Parses an AudioSpecificConfig.
pub fn parse_audio_specific_config(asc: &[u8]) -> Result<AacInfo, CodecError> {
    let mut r = super::bits::BitReader::new(asc, WHAT);
    let mut object_type = r.read_bits(5)? as u8;
    if object_type == 31 {
        object_type = 32 + r.read_bits(6)? as u8;
    }
    let freq_index = r.read_bits(4)? as usize;
    let sample_rate = if freq_index == 15 {
        r.read_bits(24)? as u32
    } else {
        *SAMPLE_RATES.get(freq_index).ok_or(CodecError::Invalid {
            what: WHAT,
            reason: format!("sampling frequency index {freq_index}"),
        })?
    };
    let channels = r.read_bits(4)? as u8;
    if sample_rate == 0 {
        return Err(CodecError::Invalid {
            what: WHAT,
            reason: "sample rate 0".into(),
        });
    }
    // For plain AAC objects the GASpecificConfig's first bit is frameLengthFlag.
    let samples_per_frame = match object_type {
        1..=4 | 6 | 7 | 17 | 19..=23 if r.read_bit().unwrap_or(false) => 960,
        _ => 1024,
    };
    Ok(AacInfo {
        codec_string: format!("mp4a.40.{object_type}"),
        object_type,
        sample_rate,
        channels,
        samples_per_frame,
        config: asc.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo() {
        let info = parse_audio_specific_config(&[0x11, 0x90]).expect("valid");
        assert_eq!(info.codec_string, "mp4a.40.2");
        assert_eq!((info.sample_rate, info.channels), (48000, 2));
        assert_eq!(info.samples_per_frame, 1024);
    }

    #[test]
    fn lc_44k_mono() {
        let info = parse_audio_specific_config(&[0x12, 0x08]).expect("valid");
        assert_eq!(
            (info.object_type, info.sample_rate, info.channels),
            (2, 44100, 1)
        );
    }

    #[test]
    fn bad_frequency_index_and_truncation() {
        assert!(parse_audio_specific_config(&[0x16, 0x88]).is_err());
        assert!(parse_audio_specific_config(&[0x11]).is_err());
        assert!(parse_audio_specific_config(&[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..16)) {
            let _ = parse_audio_specific_config(&bytes);
        }
    }
}
