//! H.264: the AVCDecoderConfigurationRecord RTMP sends as the AVC sequence header.
//!
//! The record's own profile/compatibility/level bytes give the RFC 6381 string
//! (`avc1.PPCCLL`, lower-case hex as HLS players compare it); the SPS inside gives the
//! picture size and, when the VUI signals it, the frame rate.

use super::CodecError;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{decode_nal, BitReader};

const WHAT: &str = "AVC decoder configuration record";

/// What an AVC decoder configuration record says about the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcInfo {
    pub codec_string: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    /// Bytes of each length prefix in the samples (1, 2 or 4).
    pub length_size: u8,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
    /// The record as sent, written verbatim into the `avcC` box.
    pub record: Vec<u8>,
}

/// Parses an AVCDecoderConfigurationRecord (the body of an `avcC` box).
pub fn parse_avcc_record(record: &[u8]) -> Result<AvcInfo, CodecError> {
    if record.len() < 7 {
        return Err(CodecError::Truncated { what: WHAT });
    }
    if record[0] != 1 {
        return Err(CodecError::Unsupported {
            what: WHAT,
            reason: format!("configuration version {}", record[0]),
        });
    }
    let length_size = (record[4] & 0x03) + 1;
    if length_size == 3 {
        return Err(CodecError::Invalid {
            what: WHAT,
            reason: "NAL length size of 3 bytes".into(),
        });
    }
    let mut pos = 5;
    let sps = read_param_sets(record, &mut pos, 0x1f)?;
    let pps = read_param_sets(record, &mut pos, 0xff)?;
    let first_sps = sps.first().ok_or(CodecError::Invalid {
        what: WHAT,
        reason: "no sequence parameter set".into(),
    })?;
    let (width, height, frame_rate) = sps_facts(first_sps)?;
    // The muxer re-reads the record (with its optional High-profile extension): a record
    // it would refuse is refused here, at the sequence header, not at every part.
    <mp4_atom::Avcc as mp4_atom::Atom>::decode_body(&mut &record[..]).map_err(|e| {
        CodecError::Invalid {
            what: WHAT,
            reason: e.to_string(),
        }
    })?;
    Ok(AvcInfo {
        codec_string: format!("avc1.{:02x}{:02x}{:02x}", record[1], record[2], record[3]),
        width,
        height,
        frame_rate,
        length_size,
        sps,
        pps,
        record: record.to_vec(),
    })
}

fn read_param_sets(
    record: &[u8],
    pos: &mut usize,
    count_mask: u8,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let truncated = CodecError::Truncated { what: WHAT };
    let count = record.get(*pos).ok_or(truncated.clone())? & count_mask;
    *pos += 1;
    let mut sets = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len_bytes = record.get(*pos..*pos + 2).ok_or(truncated.clone())?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        *pos += 2;
        let set = record.get(*pos..*pos + len).ok_or(truncated.clone())?;
        *pos += len;
        sets.push(set.to_vec());
    }
    Ok(sets)
}

/// Width, height and (when signalled) frame rate from an SPS NAL unit with its header.
pub fn sps_facts(sps_nal: &[u8]) -> Result<(u32, u32, Option<f64>), CodecError> {
    let invalid = |reason: String| CodecError::Invalid {
        what: "H.264 SPS",
        reason,
    };
    if sps_nal.len() < 2 || sps_nal[0] & 0x1f != 7 {
        return Err(invalid("not an SPS NAL unit".into()));
    }
    let rbsp = decode_nal(sps_nal).map_err(|e| invalid(e.to_string()))?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| invalid(format!("{e:?}")))?;
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|e| invalid(format!("{e:?}")))?;
    let fps = sps
        .fps()
        .filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0);
    Ok((width, height, fps))
}

/// Builds an AVCDecoderConfigurationRecord (avcC body) from one SPS and one PPS NAL unit
/// (each with its header, without start code), as an MPEG-TS ingest needs: 4-byte NAL
/// lengths, and the chroma/bit-depth extension that High profiles carry.
pub fn build_avcc_record(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, CodecError> {
    let invalid = |reason: &str| CodecError::Invalid {
        what: "H.264 parameter sets",
        reason: reason.into(),
    };
    if sps.len() < 4 || sps[0] & 0x1f != 7 {
        return Err(invalid("not an SPS NAL unit"));
    }
    if pps.is_empty() || pps[0] & 0x1f != 8 {
        return Err(invalid("not a PPS NAL unit"));
    }
    if sps.len() > usize::from(u16::MAX) || pps.len() > usize::from(u16::MAX) {
        return Err(invalid("parameter set longer than 65535 bytes"));
    }
    let rbsp = decode_nal(sps).map_err(|e| invalid(&e.to_string()))?;
    let parsed = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| invalid(&format!("{e:?}")))?;
    let mut out = Vec::with_capacity(16 + sps.len() + pps.len());
    out.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xff, 0xe1]);
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(pps);
    if !matches!(sps[1], 66 | 77 | 88) {
        use h264_reader::nal::sps::ChromaFormat;
        let chroma = &parsed.chroma_info;
        let idc = match chroma.chroma_format {
            ChromaFormat::Monochrome => 0,
            ChromaFormat::YUV420 => 1,
            ChromaFormat::YUV422 => 2,
            ChromaFormat::YUV444 => 3,
            ChromaFormat::Invalid(_) => return Err(invalid("chroma format")),
        };
        out.push(0xfc | idc);
        out.push(0xf8 | (chroma.bit_depth_luma_minus8 & 0x07));
        out.push(0xf8 | (chroma.bit_depth_chroma_minus8 & 0x07));
        out.push(0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// avcC of 320x180 High@L1.3 x264 output (ffmpeg testsrc2, 30 fps).
    pub(crate) const AVCC_320X180: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x18, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xb4, 0x0a,
        0x0c, 0xfc, 0xf8, 0x08, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x47, 0x8a,
        0x15, 0x50, 0x01, 0x00, 0x04, 0x68, 0xef, 0x0f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
    ];

    #[test]
    fn record_gives_codec_string_and_size() {
        let info = parse_avcc_record(AVCC_320X180).expect("valid record");
        assert_eq!(info.codec_string, "avc1.64000d");
        assert_eq!((info.width, info.height), (320, 180));
        assert_eq!(info.length_size, 4);
        assert_eq!(info.sps.len(), 1);
        assert_eq!(info.pps.len(), 1);
    }

    #[test]
    fn record_built_from_parameter_sets_matches_the_encoders() {
        let info = parse_avcc_record(AVCC_320X180).expect("valid record");
        let built = build_avcc_record(&info.sps[0], &info.pps[0]).expect("builds");
        assert_eq!(built, AVCC_320X180);
        assert!(build_avcc_record(&info.pps[0], &info.sps[0]).is_err());
    }

    #[test]
    fn truncated_record_is_an_error() {
        // The trailing High-profile extension is optional, but not a part of it.
        for len in (0..AVCC_320X180.len() - 4).chain(AVCC_320X180.len() - 3..AVCC_320X180.len()) {
            assert!(
                parse_avcc_record(&AVCC_320X180[..len]).is_err(),
                "len {len}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_avcc_record(&bytes);
            let _ = sps_facts(&bytes);
            let _ = build_avcc_record(&bytes, &[0x68, 0xef]);
        }
    }
}
