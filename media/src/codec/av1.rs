//! AV1: the AV1CodecConfigurationRecord (`av1C` body) that Enhanced RTMP sends as the
//! `av01` SequenceStart.
//!
//! The record's fixed fields give the codec string of the AV1 ISOBMFF binding
//! (`av01.P.LLT.DD`, what HLS `CODECS` and MSE need); the picture size is only in the
//! sequence header OBU the record may carry in `configOBUs`, so it is read from there
//! (`max_frame_width_minus_1` / `max_frame_height_minus_1`).

use super::bits::BitReader;
use super::CodecError;
use mp4_atom::{Atom, Av1c};

const RECORD: &str = "AV1 codec configuration record";
const OBU: &str = "AV1 configOBUs";
const SEQUENCE_HEADER: &str = "AV1 sequence header";

const OBU_SEQUENCE_HEADER: u8 = 1;

/// What an AV1 codec configuration record says about the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Av1Info {
    /// `av01.P.LLT.DD`, e.g. `av01.0.04M.08`.
    pub codec_string: String,
    /// `max_frame_width_minus_1 + 1` from the sequence header in `configOBUs`; `None`
    /// when the record carries no sequence header.
    pub width: Option<u32>,
    /// `max_frame_height_minus_1 + 1`, as `width`.
    pub height: Option<u32>,
    /// The decoded record, ready to be written into the `av1C` box.
    pub av1c: Av1c,
}

/// From an AV1CodecConfigurationRecord (av1C body bytes, as Enhanced RTMP's SequenceStart for av01 carries it). Width/height come from the sequence header OBU in configOBUs when present (parse max_frame_width_minus_1/height; None when absent).
pub fn parse_av1c_record(record: &[u8]) -> Result<Av1Info, CodecError> {
    match record.first() {
        None => return Err(CodecError::Truncated { what: RECORD }),
        Some(0x81) => {}
        Some(byte) if byte & 0x80 == 0 => {
            return Err(CodecError::Invalid {
                what: RECORD,
                reason: "marker bit is not set".into(),
            })
        }
        Some(byte) => {
            return Err(CodecError::Unsupported {
                what: RECORD,
                reason: format!("version {}", byte & 0x7f),
            })
        }
    }
    let mut buf = record;
    let av1c = Av1c::decode_body(&mut buf).map_err(atom_error)?;
    if av1c.seq_profile > 2 {
        return Err(CodecError::Unsupported {
            what: RECORD,
            reason: format!("seq_profile {}", av1c.seq_profile),
        });
    }
    let size = find_max_frame_size(&av1c.config_obus)?;
    Ok(Av1Info {
        codec_string: codec_string(&av1c),
        width: size.map(|(w, _)| w),
        height: size.map(|(_, h)| h),
        av1c,
    })
}

/// `av01.` + seq_profile, two-digit seq_level_idx_0 and tier letter, two-digit bit
/// depth (the short form of the AV1 ISOBMFF binding's codecs parameter).
fn codec_string(av1c: &Av1c) -> String {
    let bit_depth = match (av1c.seq_profile, av1c.high_bitdepth, av1c.twelve_bit) {
        (2, true, true) => 12,
        (_, true, _) => 10,
        _ => 8,
    };
    let tier = if av1c.seq_tier_0 { 'H' } else { 'M' };
    format!(
        "av01.{}.{:02}{tier}.{bit_depth:02}",
        av1c.seq_profile, av1c.seq_level_idx_0
    )
}

/// Walks the OBUs of `configOBUs` and reads the maximum frame size from the first
/// sequence header, if any.
fn find_max_frame_size(mut obus: &[u8]) -> Result<Option<(u32, u32)>, CodecError> {
    while let [header, rest @ ..] = obus {
        if header & 0x80 != 0 {
            return Err(CodecError::Invalid {
                what: OBU,
                reason: "obu_forbidden_bit is set".into(),
            });
        }
        let obu_type = (header >> 3) & 0x0f;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut rest = rest;
        if has_extension {
            rest = rest.get(1..).ok_or(CodecError::Truncated { what: OBU })?;
        }
        let (payload, next) = if has_size {
            let (size, after) = read_leb128(rest)?;
            let size = usize::try_from(size).map_err(|_| CodecError::Truncated { what: OBU })?;
            if after.len() < size {
                return Err(CodecError::Truncated { what: OBU });
            }
            after.split_at(size)
        } else {
            (rest, &[][..])
        };
        if obu_type == OBU_SEQUENCE_HEADER {
            return read_sequence_header(payload).map(Some);
        }
        obus = next;
    }
    Ok(None)
}

/// `leb128()`: at most 8 bytes, 7 bits each, least significant group first.
fn read_leb128(data: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    let mut value = 0u64;
    for i in 0..8 {
        let byte = *data.get(i).ok_or(CodecError::Truncated { what: OBU })?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let rest = data.get(i + 1..).unwrap_or_default();
            return Ok((value, rest));
        }
    }
    Err(CodecError::Invalid {
        what: OBU,
        reason: "leb128 longer than 8 bytes".into(),
    })
}

/// `sequence_header_obu()` up to `max_frame_height_minus_1` (AV1 spec 5.5.1).
fn read_sequence_header(payload: &[u8]) -> Result<(u32, u32), CodecError> {
    let r = &mut BitReader::new(payload, SEQUENCE_HEADER);
    r.skip_bits(3)?; // seq_profile
    r.read_bit()?; // still_picture
    let reduced_still_picture_header = r.read_bit()?;
    if reduced_still_picture_header {
        r.skip_bits(5)?; // seq_level_idx[0]
    } else {
        let mut buffer_delay_length = 0;
        let timing_info_present = r.read_bit()?;
        let decoder_model_info_present = if timing_info_present {
            r.skip_bits(32 + 32)?; // num_units_in_display_tick, time_scale
            if r.read_bit()? {
                // equal_picture_interval
                read_uvlc(r)?; // num_ticks_per_picture_minus_1
            }
            let present = r.read_bit()?;
            if present {
                buffer_delay_length = r.read_bits(5)? as usize + 1;
                r.skip_bits(32 + 5 + 5)?; // num_units_in_decoding_tick, length fields
            }
            present
        } else {
            false
        };
        let initial_display_delay_present = r.read_bit()?;
        let operating_points = r.read_bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip_bits(12)?; // operating_point_idc
            let seq_level_idx = r.read_bits(5)?;
            if seq_level_idx > 7 {
                r.read_bit()?; // seq_tier
            }
            if decoder_model_info_present && r.read_bit()? {
                // decoder_model_present_for_this_op: operating_parameters_info()
                r.skip_bits(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay_present && r.read_bit()? {
                r.skip_bits(4)?; // initial_display_delay_minus_1
            }
        }
    }
    let width_bits = r.read_bits(4)? as u32 + 1;
    let height_bits = r.read_bits(4)? as u32 + 1;
    let width = r.read_bits(width_bits)? as u32 + 1;
    let height = r.read_bits(height_bits)? as u32 + 1;
    Ok((width, height))
}

/// `uvlc()`: leading zeros, a one, then as many value bits (none past 32 zeros).
fn read_uvlc(r: &mut BitReader<'_>) -> Result<u32, CodecError> {
    let mut leading_zeros = 0u32;
    while !r.read_bit()? {
        leading_zeros += 1;
    }
    if leading_zeros >= 32 {
        return Ok(u32::MAX);
    }
    let value = r.read_bits(leading_zeros)?;
    Ok((value + (1u64 << leading_zeros) - 1) as u32)
}

fn atom_error(err: mp4_atom::Error) -> CodecError {
    match err {
        mp4_atom::Error::OutOfBounds
        | mp4_atom::Error::ShortRead
        | mp4_atom::Error::UnexpectedEof => CodecError::Truncated { what: RECORD },
        other => CodecError::Invalid {
            what: RECORD,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::testing::hex;

    /// libaom through FFmpeg 5.1's mp4 muxer: testsrc2 320x240, yuv420p.
    const LIBAOM_320X240: &str = "81000c00 0a0b0000 00043cff bcdaf900 40";
    /// SVT-AV1 1.4.1 through FFmpeg 5.1's mp4 muxer: testsrc2 1918x1078, yuv420p10le.
    const SVTAV1_1080P_10BIT: &str = "81084c00 0a0b0000 0042abbe c3500be1 01";

    /// MSB-first bit writer for hand-built sequence headers.
    #[derive(Default)]
    struct Bits {
        bytes: Vec<u8>,
        len: usize,
    }

    impl Bits {
        fn put(&mut self, n: u32, value: u64) -> &mut Self {
            for i in (0..n).rev() {
                if self.bytes.len() * 8 == self.len {
                    self.bytes.push(0);
                }
                if (value >> i) & 1 == 1 {
                    let last = self.bytes.last_mut().expect("pushed above");
                    *last |= 0x80 >> (self.len % 8);
                }
                self.len += 1;
            }
            self
        }
    }

    /// An av1C record (profile 0, level 8, 8-bit 4:2:0) around `obus`.
    fn record(obus: &[u8]) -> Vec<u8> {
        let mut r = vec![0x81, 0x08, 0x0c, 0x00];
        r.extend_from_slice(obus);
        r
    }

    /// A sequence header OBU with a size field around `payload`.
    fn sequence_header_obu(payload: &[u8]) -> Vec<u8> {
        let mut obu = vec![0x0a, payload.len() as u8];
        obu.extend_from_slice(payload);
        obu
    }

    /// The frame size fields and the rest of a minimal sequence header.
    fn put_frame_size(b: &mut Bits, width: u64, height: u64) {
        b.put(4, 15).put(4, 15); // 16 bits each
        b.put(16, width - 1).put(16, height - 1);
        b.put(1, 0).put(1, 0).put(1, 0).put(1, 0); // frame_id_numbers_present .. enable_intra_edge_filter
        b.put(8, 0); // padding, never read
    }

    #[test]
    fn libaom_record() {
        let info = parse_av1c_record(&hex(LIBAOM_320X240)).expect("record");
        assert_eq!(info.codec_string, "av01.0.00M.08");
        assert_eq!((info.width, info.height), (Some(320), Some(240)));
        assert_eq!(info.av1c.seq_level_idx_0, 0);
        assert!(info.av1c.chroma_subsampling_x && info.av1c.chroma_subsampling_y);
        let mut out = Vec::new();
        info.av1c.encode_body(&mut out).expect("encode");
        assert_eq!(out, hex(LIBAOM_320X240));
    }

    #[test]
    fn svtav1_10bit_record() {
        let info = parse_av1c_record(&hex(SVTAV1_1080P_10BIT)).expect("record");
        assert_eq!(info.codec_string, "av01.0.08M.10");
        assert_eq!((info.width, info.height), (Some(1918), Some(1078)));
    }

    #[test]
    fn codec_string_forms() {
        let av1c = |seq_profile, seq_level_idx_0, seq_tier_0, high_bitdepth, twelve_bit| Av1c {
            seq_profile,
            seq_level_idx_0,
            seq_tier_0,
            high_bitdepth,
            twelve_bit,
            ..Av1c::default()
        };
        assert_eq!(
            codec_string(&av1c(0, 4, false, false, false)),
            "av01.0.04M.08"
        );
        assert_eq!(
            codec_string(&av1c(0, 13, true, true, false)),
            "av01.0.13H.10"
        );
        assert_eq!(
            codec_string(&av1c(1, 9, false, false, false)),
            "av01.1.09M.08"
        );
        assert_eq!(
            codec_string(&av1c(2, 12, false, true, true)),
            "av01.2.12M.12"
        );
        assert_eq!(
            codec_string(&av1c(2, 12, false, true, false)),
            "av01.2.12M.10"
        );
        assert_eq!(
            codec_string(&av1c(0, 31, false, false, false)),
            "av01.0.31M.08"
        );
    }

    #[test]
    fn no_config_obus() {
        let info = parse_av1c_record(&record(&[])).expect("record");
        assert_eq!(info.codec_string, "av01.0.08M.08");
        assert_eq!((info.width, info.height), (None, None));
    }

    #[test]
    fn reduced_still_picture_header() {
        let mut b = Bits::default();
        b.put(3, 0).put(1, 1).put(1, 1).put(5, 8); // profile, still, reduced, level
        put_frame_size(&mut b, 4000, 3000);
        let info = parse_av1c_record(&record(&sequence_header_obu(&b.bytes))).expect("record");
        assert_eq!((info.width, info.height), (Some(4000), Some(3000)));
    }

    #[test]
    fn timing_decoder_model_and_operating_points() {
        let mut b = Bits::default();
        b.put(3, 0).put(1, 0).put(1, 0); // profile, still, reduced
        b.put(1, 1); // timing_info_present_flag
        b.put(32, 1001).put(32, 60000); // num_units_in_display_tick, time_scale
        b.put(1, 1).put(5, 0b00101); // equal_picture_interval, uvlc() = 4
        b.put(1, 1); // decoder_model_info_present_flag
        b.put(5, 9).put(32, 90000).put(5, 31).put(5, 31); // buffer_delay_length_minus_1 = 9
        b.put(1, 1); // initial_display_delay_present_flag
        b.put(5, 2); // operating_points_cnt_minus_1
        for (idc, level, model, delay) in [
            (0x301u64, 9u64, true, true),
            (0x101, 5, false, true),
            (0x103, 12, true, false),
        ] {
            b.put(12, idc).put(5, level);
            if level > 7 {
                b.put(1, 1); // seq_tier
            }
            b.put(1, u64::from(model));
            if model {
                b.put(10, 1000).put(10, 2000).put(1, 0);
            }
            b.put(1, u64::from(delay));
            if delay {
                b.put(4, 9);
            }
        }
        put_frame_size(&mut b, 1280, 720);
        let info = parse_av1c_record(&record(&sequence_header_obu(&b.bytes))).expect("record");
        assert_eq!((info.width, info.height), (Some(1280), Some(720)));
    }

    #[test]
    fn obu_framing_variants() {
        let mut b = Bits::default();
        b.put(3, 0).put(1, 1).put(1, 1).put(5, 8);
        put_frame_size(&mut b, 640, 480);
        let payload = b.bytes;

        // A metadata OBU first, then a sequence header with an extension byte and a
        // two-byte leb128 size.
        let mut obus = vec![0x2a, 0x02, 0x01, 0x80];
        obus.extend_from_slice(&[0x0e, 0x00, 0x80 | payload.len() as u8, 0x00]);
        obus.extend_from_slice(&payload);
        let info = parse_av1c_record(&record(&obus)).expect("record");
        assert_eq!((info.width, info.height), (Some(640), Some(480)));

        // A sequence header without a size field runs to the end.
        let mut obus = vec![0x08];
        obus.extend_from_slice(&payload);
        let info = parse_av1c_record(&record(&obus)).expect("record");
        assert_eq!((info.width, info.height), (Some(640), Some(480)));

        // Only a metadata OBU: no size.
        let info = parse_av1c_record(&record(&[0x2a, 0x02, 0x01, 0x80])).expect("record");
        assert_eq!(info.width, None);
    }

    #[test]
    fn uvlc_values() {
        for (bits, len, want) in [
            (0b1u64, 1u32, 0u32),
            (0b010, 3, 1),
            (0b011, 3, 2),
            (0b00101, 5, 4),
        ] {
            let mut b = Bits::default();
            b.put(len, bits).put(8, 0xff);
            let r = &mut BitReader::new(&b.bytes, "test");
            assert_eq!(read_uvlc(r), Ok(want));
        }
        let mut b = Bits::default();
        b.put(32, 0).put(1, 1);
        assert_eq!(
            read_uvlc(&mut BitReader::new(&b.bytes, "test")),
            Ok(u32::MAX)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_av1c_record(&[]),
            Err(CodecError::Truncated { what: RECORD })
        );
        assert!(matches!(
            parse_av1c_record(&[0x01, 0, 0, 0]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            parse_av1c_record(&[0x82, 0, 0, 0]),
            Err(CodecError::Unsupported { .. })
        ));
        // seq_profile 3.
        assert!(matches!(
            parse_av1c_record(&[0x81, 0x60, 0, 0]),
            Err(CodecError::Unsupported { .. })
        ));
        // Reserved bits set.
        assert!(parse_av1c_record(&[0x81, 0, 0, 0x80]).is_err());
        // Forbidden bit.
        assert!(matches!(
            parse_av1c_record(&record(&[0x8a, 0])),
            Err(CodecError::Invalid { .. })
        ));
        // OBU size past the end.
        assert!(matches!(
            parse_av1c_record(&record(&[0x0a, 0x20, 0])),
            Err(CodecError::Truncated { .. })
        ));
        // leb128 that never ends.
        assert!(matches!(
            parse_av1c_record(&record(&[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])),
            Err(CodecError::Invalid { .. })
        ));
        let full = hex(LIBAOM_320X240);
        for len in 0..full.len() {
            // Four bytes is a whole record without configOBUs.
            assert_eq!(
                parse_av1c_record(&full[..len]).is_ok(),
                len == 4,
                "prefix of {len} bytes"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_record_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_av1c_record(&data);
        }

        #[test]
        fn arbitrary_config_obus_never_panic(obus in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_av1c_record(&record(&obus));
            // And behind a sequence header OBU header, to reach the bit walk.
            let mut seq = vec![0x0a, obus.len() as u8];
            seq.extend_from_slice(&obus);
            let _ = parse_av1c_record(&record(&seq));
        }
    }
}
