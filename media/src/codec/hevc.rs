//! HEVC (H.265): the HEVCDecoderConfigurationRecord (`hvcC` body) that Enhanced RTMP
//! sends as the `hvc1` SequenceStart, and the SPS inside it.
//!
//! The record's general profile/tier/level fields give the codec string of
//! ISO/IEC 14496-15 Annex E (what HLS `CODECS` and MSE need); the SPS gives the
//! displayed picture size (after the conformance window) and, when the VUI has
//! timing info, the frame rate. `build_hvcc_record` goes the other way, for sources
//! that carry bare VPS/SPS/PPS NAL units (Annex B test streams, MPEG-TS).

use super::bits::{unescape_rbsp, BitReader};
use super::CodecError;
use mp4_atom::{Atom, HvcCArray, Hvcc};

const RECORD: &str = "HEVC decoder configuration record";
const SPS: &str = "HEVC SPS";
const VPS: &str = "HEVC VPS";
const PPS: &str = "HEVC PPS";

const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;

/// What an HEVC decoder configuration record says about the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct HevcInfo {
    /// ISO/IEC 14496-15 Annex E codec string, e.g. `hvc1.1.6.L93.B0`.
    pub codec_string: String,
    /// Displayed luma width (after the SPS conformance window).
    pub width: u32,
    /// Displayed luma height (after the SPS conformance window).
    pub height: u32,
    /// From the SPS VUI timing info, when present.
    pub frame_rate: Option<f64>,
    /// The decoded record, ready to be written into the `hvcC` box. When the record
    /// left its general profile fields unset (profile_idc 0), they are filled from
    /// the SPS.
    pub hvcc: Hvcc,
    /// Bytes of each NAL unit length prefix in the samples (1, 2 or 4).
    pub length_size: u8,
}

/// What an HEVC sequence parameter set says (the parts a muxer or playlist needs).
#[derive(Debug, Clone, PartialEq)]
pub struct HevcSps {
    pub sps_id: u32,
    /// `sps_max_sub_layers_minus1 + 1` (1..=7).
    pub max_sub_layers: u8,
    pub temporal_id_nesting: bool,
    pub profile_space: u8,
    /// `false` = Main tier, `true` = High tier.
    pub tier_flag: bool,
    pub profile_idc: u8,
    /// As in the bitstream and in `hvcC`: `general_profile_compatibility_flag[0]` is
    /// the most significant bit.
    pub profile_compatibility_flags: u32,
    /// The 48 bits from `general_progressive_source_flag` on, as in `hvcC`.
    pub constraint_indicator_flags: [u8; 6],
    /// 30 × the level number (e.g. 93 for level 3.1).
    pub level_idc: u8,
    /// 0 = monochrome, 1 = 4:2:0, 2 = 4:2:2, 3 = 4:4:4.
    pub chroma_format_idc: u8,
    pub separate_colour_plane: bool,
    /// `pic_width_in_luma_samples`, before the conformance window.
    pub coded_width: u32,
    /// `pic_height_in_luma_samples`, before the conformance window.
    pub coded_height: u32,
    /// Displayed width, after the conformance window.
    pub width: u32,
    /// Displayed height, after the conformance window.
    pub height: u32,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// From the VUI bitstream restriction; 0 when absent.
    pub min_spatial_segmentation_idc: u16,
    /// `vui_time_scale / vui_num_units_in_tick`, when the VUI has timing info.
    pub frame_rate: Option<f64>,
}

/// From an HEVCDecoderConfigurationRecord (the body of an hvcC box, as Enhanced RTMP's SequenceStart carries it).
pub fn parse_hvcc_record(record: &[u8]) -> Result<HevcInfo, CodecError> {
    match record {
        [] => return Err(CodecError::Truncated { what: RECORD }),
        [1, ..] => {}
        [0, 0, 1, ..] | [0, 0, 0, 1, ..] => {
            return Err(CodecError::Unsupported {
                what: RECORD,
                reason: "Annex B start code instead of a configuration record".into(),
            })
        }
        [version, ..] => {
            return Err(CodecError::Unsupported {
                what: RECORD,
                reason: format!("configuration version {version}"),
            })
        }
    }
    let mut buf = record;
    let mut hvcc = Hvcc::decode_body(&mut buf).map_err(|e| atom_error(RECORD, e))?;
    let length_size = hvcc.length_size_minus_one + 1;
    if length_size == 3 {
        return Err(CodecError::Invalid {
            what: RECORD,
            reason: "NAL length size of 3 bytes".into(),
        });
    }
    let sps_nal = hvcc
        .arrays
        .iter()
        .filter(|a| a.nal_unit_type == NAL_SPS)
        .flat_map(|a| a.nalus.iter())
        .next()
        .ok_or_else(|| CodecError::Invalid {
            what: RECORD,
            reason: "no sequence parameter set".into(),
        })?;
    let sps = parse_sps(sps_nal)?;
    if hvcc.general_profile_idc == 0 {
        // profile_idc 0 is no profile at all: the sender did not fill the record in.
        fill_from_sps(&mut hvcc, &sps);
    }
    Ok(HevcInfo {
        codec_string: codec_string(&hvcc),
        width: sps.width,
        height: sps.height,
        frame_rate: sps.frame_rate,
        hvcc,
        length_size,
    })
}

/// Builds an HEVCDecoderConfigurationRecord (hvcC body bytes) from VPS, SPS, PPS NAL units (each without start code, with the 2-byte NAL header), filling profile/tier/level/chroma/bit depth from the SPS. Used by tests that wrap an Annex B HEVC stream into Enhanced RTMP and by a future MPEG-TS ingest.
///
/// The record has 4-byte NAL lengths, complete parameter set arrays (as `hvc1`
/// requires), no average/constant frame rate, and `parallelismType` derived from the
/// PPS the way FFmpeg does (unknown unless the VUI sets `min_spatial_segmentation_idc`).
pub fn build_hvcc_record(vps: &[u8], sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, CodecError> {
    check_nal(vps, NAL_VPS, VPS)?;
    check_nal(sps, NAL_SPS, SPS)?;
    check_nal(pps, NAL_PPS, PPS)?;
    for (nal, what) in [(vps, VPS), (sps, SPS), (pps, PPS)] {
        if nal.len() > usize::from(u16::MAX) {
            return Err(invalid(what, "longer than 65535 bytes"));
        }
    }
    let info = parse_sps(sps)?;
    let parallelism_type = if info.min_spatial_segmentation_idc == 0 {
        0
    } else {
        pps_parallelism_type(pps).unwrap_or(0)
    };
    let array = |nal_unit_type: u8, nal: &[u8]| HvcCArray {
        completeness: true,
        nal_unit_type,
        nalus: vec![nal.to_vec()],
    };
    let mut hvcc = Hvcc {
        configuration_version: 1,
        min_spatial_segmentation_idc: info.min_spatial_segmentation_idc,
        parallelism_type,
        avg_frame_rate: 0,
        constant_frame_rate: 0,
        num_temporal_layers: info.max_sub_layers,
        temporal_id_nested: info.temporal_id_nesting,
        length_size_minus_one: 3,
        arrays: vec![
            array(NAL_VPS, vps),
            array(NAL_SPS, sps),
            array(NAL_PPS, pps),
        ],
        ..Hvcc::default()
    };
    fill_from_sps(&mut hvcc, &info);
    let mut out = Vec::with_capacity(23 + 3 * 5 + vps.len() + sps.len() + pps.len());
    hvcc.encode_body(&mut out)
        .map_err(|e| atom_error(RECORD, e))?;
    Ok(out)
}

/// Parses an HEVC SPS NAL unit (with its 2-byte header): width/height after the conformance window, chroma format, bit depths, profile_tier_level (general fields), frame rate from VUI timing info when present.
///
/// A VUI that cannot be walked to its end does not fail the SPS: what was read
/// before the problem (e.g. the frame rate) is kept.
pub fn parse_sps(nal: &[u8]) -> Result<HevcSps, CodecError> {
    parse_sps_walk(nal).map(|(sps, _vui)| sps)
}

/// The SPS, and how the walk past the VUI went: `Ok(true)` when the SPS ends right
/// after it (no extensions, then exactly the RBSP trailing bits), which shows every
/// field before was read in step.
///
/// Walks `seq_parameter_set_rbsp()` in bitstream order; each syntax structure the spec
/// names, and each run of fields only skipped, has its own function below.
fn parse_sps_walk(nal: &[u8]) -> Result<(HevcSps, Result<bool, CodecError>), CodecError> {
    let rbsp = sps_rbsp(nal)?;
    let r = &mut BitReader::new(&rbsp, SPS);

    r.skip_bits(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.read_bits(3)? as u8;
    if max_sub_layers_minus1 > 6 {
        return Err(invalid(SPS, "sps_max_sub_layers_minus1 is 7"));
    }
    let temporal_id_nesting = r.read_bit()?;
    let ptl = read_profile_tier_level(r, max_sub_layers_minus1)?;

    let sps_id = r.read_ue()?;
    if sps_id > 15 {
        return Err(invalid(SPS, format!("sps_seq_parameter_set_id {sps_id}")));
    }
    let format = read_picture_format(r)?;
    let log2_max_poc_lsb_minus4 = r.read_ue()?;
    if log2_max_poc_lsb_minus4 > 12 {
        return Err(invalid(SPS, "log2_max_pic_order_cnt_lsb_minus4 above 12"));
    }
    skip_sub_layer_ordering_info(r, max_sub_layers_minus1)?;
    skip_coding_tools(r)?;
    skip_short_term_ref_pic_sets(r)?;
    skip_long_term_ref_pics(r, log2_max_poc_lsb_minus4)?;
    r.read_bit()?; // sps_temporal_mvp_enabled_flag
    r.read_bit()?; // strong_intra_smoothing_enabled_flag
    let mut vui = Vui::default();
    let vui_present = r.read_bit()?;
    let walk = if vui_present {
        read_vui(r, max_sub_layers_minus1, &mut vui)
    } else {
        Ok(())
    }
    .and_then(|()| ends_cleanly(r));

    let sps = HevcSps {
        sps_id,
        max_sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nesting,
        profile_space: ptl.profile_space,
        tier_flag: ptl.tier_flag,
        profile_idc: ptl.profile_idc,
        profile_compatibility_flags: ptl.compatibility_flags,
        constraint_indicator_flags: ptl.constraint_flags,
        level_idc: ptl.level_idc,
        chroma_format_idc: format.chroma_format_idc,
        separate_colour_plane: format.separate_colour_plane,
        coded_width: format.coded_width,
        coded_height: format.coded_height,
        width: format.width,
        height: format.height,
        bit_depth_luma: format.bit_depth_luma,
        bit_depth_chroma: format.bit_depth_chroma,
        min_spatial_segmentation_idc: vui.min_spatial_segmentation_idc,
        frame_rate: vui.frame_rate,
    };
    Ok((sps, walk))
}

/// The SPS payload with emulation prevention removed, after checking its NAL header.
/// Only the base layer is understood: a multi-layer SPS is refused, not misread.
fn sps_rbsp(nal: &[u8]) -> Result<Vec<u8>, CodecError> {
    let payload = check_nal(nal, NAL_SPS, SPS)?;
    let layer_id = nal_layer_id(nal);
    if layer_id != 0 {
        return Err(CodecError::Unsupported {
            what: SPS,
            reason: format!("nuh_layer_id {layer_id} (multi-layer HEVC)"),
        });
    }
    Ok(unescape_rbsp(payload))
}

/// The SPS fields from `chroma_format_idc` to `bit_depth_chroma_minus8`: sampling,
/// coded size, the conformance window and bit depths.
struct PictureFormat {
    chroma_format_idc: u8,
    separate_colour_plane: bool,
    coded_width: u32,
    coded_height: u32,
    /// After the conformance window.
    width: u32,
    height: u32,
    bit_depth_luma: u8,
    bit_depth_chroma: u8,
}

fn read_picture_format(r: &mut BitReader<'_>) -> Result<PictureFormat, CodecError> {
    let chroma_format_idc = r.read_ue()?;
    if chroma_format_idc > 3 {
        return Err(invalid(
            SPS,
            format!("chroma_format_idc {chroma_format_idc}"),
        ));
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.read_bit()?;
    let coded_width = r.read_ue()?;
    let coded_height = r.read_ue()?;
    if coded_width == 0 || coded_height == 0 {
        return Err(invalid(SPS, "zero picture size"));
    }
    // SubWidthC / SubHeightC (H.265 Table 6-1), by ChromaArrayType.
    let (sub_width, sub_height) = match (separate_colour_plane, chroma_format_idc) {
        (false, 1) => (2, 2),
        (false, 2) => (2, 1),
        _ => (1, 1),
    };
    let (mut width, mut height) = (coded_width, coded_height);
    if r.read_bit()? {
        let left = r.read_ue()?;
        let right = r.read_ue()?;
        let top = r.read_ue()?;
        let bottom = r.read_ue()?;
        width = crop(coded_width, sub_width, left, right)
            .ok_or_else(|| invalid(SPS, "conformance window wider than the picture"))?;
        height = crop(coded_height, sub_height, top, bottom)
            .ok_or_else(|| invalid(SPS, "conformance window taller than the picture"))?;
    }
    let bit_depth_luma_minus8 = r.read_ue()?;
    let bit_depth_chroma_minus8 = r.read_ue()?;
    if bit_depth_luma_minus8 > 8 || bit_depth_chroma_minus8 > 8 {
        return Err(invalid(SPS, "bit depth above 16"));
    }
    Ok(PictureFormat {
        chroma_format_idc: chroma_format_idc as u8,
        separate_colour_plane,
        coded_width,
        coded_height,
        width,
        height,
        bit_depth_luma: bit_depth_luma_minus8 as u8 + 8,
        bit_depth_chroma: bit_depth_chroma_minus8 as u8 + 8,
    })
}

/// Skips the `sps_max_dec_pic_buffering_minus1` .. `sps_max_latency_increase_plus1`
/// loop: for the highest sub-layer only, or for every one.
fn skip_sub_layer_ordering_info(
    r: &mut BitReader<'_>,
    max_sub_layers_minus1: u8,
) -> Result<(), CodecError> {
    let ordering_info_for_all = r.read_bit()?;
    let first = if ordering_info_for_all {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        r.read_ue()?; // sps_max_dec_pic_buffering_minus1
        r.read_ue()?; // sps_max_num_reorder_pics
        r.read_ue()?; // sps_max_latency_increase_plus1
    }
    Ok(())
}

/// Skips the block and transform sizes, scaling lists, AMP, SAO and PCM settings:
/// nothing a muxer needs, but they stand between the sizes and the reference sets.
fn skip_coding_tools(r: &mut BitReader<'_>) -> Result<(), CodecError> {
    for _ in 0..6 {
        // log2_min_luma_coding_block_size_minus3 .. max_transform_hierarchy_depth_intra
        r.read_ue()?;
    }
    if r.read_bit()? && r.read_bit()? {
        // scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        skip_scaling_list_data(r)?;
    }
    r.read_bit()?; // amp_enabled_flag
    r.read_bit()?; // sample_adaptive_offset_enabled_flag
    if r.read_bit()? {
        // pcm_enabled_flag
        r.skip_bits(8)?; // pcm sample bit depths
        r.read_ue()?;
        r.read_ue()?;
        r.read_bit()?;
    }
    Ok(())
}

/// Skips `num_short_term_ref_pic_sets` and the `st_ref_pic_set(i)` that follow.
fn skip_short_term_ref_pic_sets(r: &mut BitReader<'_>) -> Result<(), CodecError> {
    let num_short_term_ref_pic_sets = r.read_ue()?;
    if num_short_term_ref_pic_sets > 64 {
        return Err(invalid(
            SPS,
            "more than 64 short-term reference picture sets",
        ));
    }
    // Each set may be predicted from the one before, whose size it needs to be read.
    let mut num_delta_pocs: Vec<u32> = Vec::with_capacity(num_short_term_ref_pic_sets as usize);
    for _ in 0..num_short_term_ref_pic_sets {
        let n = skip_st_ref_pic_set(r, &num_delta_pocs)?;
        num_delta_pocs.push(n);
    }
    Ok(())
}

/// Skips `long_term_ref_pics_present_flag` and, when set, the long-term pictures.
fn skip_long_term_ref_pics(
    r: &mut BitReader<'_>,
    log2_max_poc_lsb_minus4: u32,
) -> Result<(), CodecError> {
    if r.read_bit()? {
        // long_term_ref_pics_present_flag
        let num_long_term = r.read_ue()?;
        if num_long_term > 32 {
            return Err(invalid(SPS, "more than 32 long-term reference pictures"));
        }
        for _ in 0..num_long_term {
            r.skip_bits(log2_max_poc_lsb_minus4 as usize + 4)?; // lt_ref_pic_poc_lsb_sps
            r.read_bit()?; // used_by_curr_pic_lt_sps_flag
        }
    }
    Ok(())
}

/// After the VUI: no `sps_extension_present_flag`, then `rbsp_trailing_bits()`.
fn ends_cleanly(r: &mut BitReader<'_>) -> Result<bool, CodecError> {
    if r.read_bit()? || !r.read_bit()? {
        return Ok(false);
    }
    while let Ok(bit) = r.read_bit() {
        if bit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `hvc1.` + profile space letter and profile_idc, bit-reversed compatibility flags in
/// hex, tier letter and level_idc, then the constraint bytes in hex without the
/// trailing zero ones (ISO/IEC 14496-15 Annex E.3).
fn codec_string(hvcc: &Hvcc) -> String {
    let space = match hvcc.general_profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let compatibility = u32::from_be_bytes(hvcc.general_profile_compatibility_flags).reverse_bits();
    let tier = if hvcc.general_tier_flag { 'H' } else { 'L' };
    let mut parts = vec![
        "hvc1".to_string(),
        format!("{space}{}", hvcc.general_profile_idc),
        format!("{compatibility:X}"),
        format!("{tier}{}", hvcc.general_level_idc),
    ];
    let flags = &hvcc.general_constraint_indicator_flags;
    let kept = flags
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    parts.extend(flags.iter().take(kept).map(|b| format!("{b:X}")));
    parts.join(".")
}

fn fill_from_sps(hvcc: &mut Hvcc, sps: &HevcSps) {
    hvcc.general_profile_space = sps.profile_space;
    hvcc.general_tier_flag = sps.tier_flag;
    hvcc.general_profile_idc = sps.profile_idc;
    hvcc.general_profile_compatibility_flags = sps.profile_compatibility_flags.to_be_bytes();
    hvcc.general_constraint_indicator_flags = sps.constraint_indicator_flags;
    hvcc.general_level_idc = sps.level_idc;
    hvcc.chroma_format_idc = sps.chroma_format_idc;
    hvcc.bit_depth_luma_minus8 = sps.bit_depth_luma - 8;
    hvcc.bit_depth_chroma_minus8 = sps.bit_depth_chroma - 8;
}

/// Checks the 2-byte NAL header's type and returns the bytes after it.
fn check_nal<'a>(nal: &'a [u8], nal_type: u8, what: &'static str) -> Result<&'a [u8], CodecError> {
    let [first, _second, payload @ ..] = nal else {
        return Err(CodecError::Truncated { what });
    };
    if first & 0x80 != 0 {
        return Err(invalid(what, "forbidden_zero_bit is set"));
    }
    let found = (first >> 1) & 0x3f;
    if found != nal_type {
        return Err(invalid(
            what,
            format!("nal_unit_type {found}, expected {nal_type}"),
        ));
    }
    Ok(payload)
}

fn nal_layer_id(nal: &[u8]) -> u8 {
    match nal {
        [first, second, ..] => ((first & 1) << 5) | (second >> 3),
        _ => 0,
    }
}

fn crop(coded: u32, sub: u32, start: u32, end: u32) -> Option<u32> {
    let cut = start.checked_add(end)?.checked_mul(sub)?;
    coded.checked_sub(cut).filter(|&v| v > 0)
}

/// The general part of `profile_tier_level(1, max_sub_layers_minus1)`.
struct ProfileTierLevel {
    profile_space: u8,
    tier_flag: bool,
    profile_idc: u8,
    compatibility_flags: u32,
    constraint_flags: [u8; 6],
    level_idc: u8,
}

fn read_profile_tier_level(
    r: &mut BitReader<'_>,
    max_sub_layers_minus1: u8,
) -> Result<ProfileTierLevel, CodecError> {
    let profile_space = r.read_bits(2)? as u8;
    let tier_flag = r.read_bit()?;
    let profile_idc = r.read_bits(5)? as u8;
    let compatibility_flags = r.read_bits(32)? as u32;
    let mut constraint_flags = [0u8; 6];
    for byte in &mut constraint_flags {
        *byte = r.read_bits(8)? as u8;
    }
    let level_idc = r.read_bits(8)? as u8;

    let sub_layers = usize::from(max_sub_layers_minus1);
    let mut present = [(false, false); 7];
    for flags in present.iter_mut().take(sub_layers) {
        *flags = (r.read_bit()?, r.read_bit()?);
    }
    if sub_layers > 0 {
        r.skip_bits(2 * (8 - sub_layers))?; // reserved_zero_2bits
    }
    for &(profile_present, level_present) in present.iter().take(sub_layers) {
        if profile_present {
            r.skip_bits(88)?;
        }
        if level_present {
            r.skip_bits(8)?;
        }
    }
    Ok(ProfileTierLevel {
        profile_space,
        tier_flag,
        profile_idc,
        compatibility_flags,
        constraint_flags,
        level_idc,
    })
}

fn skip_scaling_list_data(r: &mut BitReader<'_>) -> Result<(), CodecError> {
    for size_id in 0..4u32 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _matrix_id in (0..6).step_by(step) {
            if !r.read_bit()? {
                r.read_ue()?; // scaling_list_pred_matrix_id_delta
            } else {
                let coef_num = 64.min(1u32 << (4 + (size_id << 1)));
                if size_id > 1 {
                    r.read_se()?; // scaling_list_dc_coef_minus8
                }
                for _ in 0..coef_num {
                    r.read_se()?; // scaling_list_delta_coef
                }
            }
        }
    }
    Ok(())
}

/// Skips `st_ref_pic_set(idx)` as found in an SPS (idx = the sets read so far) and
/// returns its NumDeltaPocs.
fn skip_st_ref_pic_set(r: &mut BitReader<'_>, previous: &[u32]) -> Result<u32, CodecError> {
    let inter_ref_pic_set_prediction = !previous.is_empty() && r.read_bit()?;
    if inter_ref_pic_set_prediction {
        // In an SPS there is no delta_idx_minus1: the reference is the previous set.
        let reference = previous.last().copied().unwrap_or(0);
        r.read_bit()?; // delta_rps_sign
        r.read_ue()?; // abs_delta_rps_minus1
        let mut count = 0;
        for _ in 0..=reference {
            let used_by_curr_pic = r.read_bit()?;
            let use_delta = used_by_curr_pic || r.read_bit()?;
            if use_delta {
                count += 1;
            }
        }
        Ok(count)
    } else {
        let negative = r.read_ue()?;
        let positive = r.read_ue()?;
        if negative > 16 || positive > 16 || negative + positive > 16 {
            return Err(invalid(
                SPS,
                "more than 16 pictures in a reference picture set",
            ));
        }
        for _ in 0..negative + positive {
            r.read_ue()?; // delta_poc_sX_minus1
            r.read_bit()?; // used_by_curr_pic_sX_flag
        }
        Ok(negative + positive)
    }
}

#[derive(Default)]
struct Vui {
    frame_rate: Option<f64>,
    min_spatial_segmentation_idc: u16,
}

/// Walks `vui_parameters()`, storing what it needs in `out` as soon as it is read.
fn read_vui(
    r: &mut BitReader<'_>,
    max_sub_layers_minus1: u8,
    out: &mut Vui,
) -> Result<(), CodecError> {
    if r.read_bit()? {
        // aspect_ratio_info_present_flag
        if r.read_bits(8)? == 255 {
            r.skip_bits(32)?; // sar_width, sar_height
        }
    }
    if r.read_bit()? {
        r.read_bit()?; // overscan_appropriate_flag
    }
    if r.read_bit()? {
        // video_signal_type_present_flag
        r.skip_bits(4)?; // video_format, video_full_range_flag
        if r.read_bit()? {
            r.skip_bits(24)?; // colour_primaries, transfer_characteristics, matrix_coeffs
        }
    }
    if r.read_bit()? {
        // chroma_loc_info_present_flag
        r.read_ue()?;
        r.read_ue()?;
    }
    r.skip_bits(3)?; // neutral_chroma_indication, field_seq, frame_field_info_present
    if r.read_bit()? {
        // default_display_window_flag
        for _ in 0..4 {
            r.read_ue()?;
        }
    }
    if r.read_bit()? {
        // vui_timing_info_present_flag
        let num_units_in_tick = r.read_bits(32)?;
        let time_scale = r.read_bits(32)?;
        if num_units_in_tick > 0 && time_scale > 0 {
            out.frame_rate = Some(time_scale as f64 / num_units_in_tick as f64);
        }
        if r.read_bit()? {
            r.read_ue()?; // vui_num_ticks_poc_diff_one_minus1
        }
        if r.read_bit()? {
            skip_hrd_parameters(r, max_sub_layers_minus1)?;
        }
    }
    if r.read_bit()? {
        // bitstream_restriction_flag
        r.skip_bits(3)?; // tiles_fixed_structure, motion_vectors_over_pic_boundaries, restricted_ref_pic_lists
        let idc = r.read_ue()?;
        if idc > 4095 {
            return Err(invalid(SPS, "min_spatial_segmentation_idc above 4095"));
        }
        out.min_spatial_segmentation_idc = idc as u16;
        for _ in 0..4 {
            // max_bytes_per_pic_denom .. log2_max_mv_length_vertical
            r.read_ue()?;
        }
    }
    Ok(())
}

/// Skips `hrd_parameters(1, max_sub_layers_minus1)`.
fn skip_hrd_parameters(r: &mut BitReader<'_>, max_sub_layers_minus1: u8) -> Result<(), CodecError> {
    let nal_hrd = r.read_bit()?;
    let vcl_hrd = r.read_bit()?;
    let mut sub_pic_hrd_params = false;
    if nal_hrd || vcl_hrd {
        sub_pic_hrd_params = r.read_bit()?;
        if sub_pic_hrd_params {
            r.skip_bits(8 + 5 + 1 + 5)?;
        }
        r.skip_bits(4 + 4)?; // bit_rate_scale, cpb_size_scale
        if sub_pic_hrd_params {
            r.skip_bits(4)?; // cpb_size_du_scale
        }
        r.skip_bits(5 + 5 + 5)?; // delay lengths
    }
    for _ in 0..=max_sub_layers_minus1 {
        let fixed_pic_rate_general = r.read_bit()?;
        let fixed_pic_rate_within_cvs = fixed_pic_rate_general || r.read_bit()?;
        let mut low_delay_hrd = false;
        if fixed_pic_rate_within_cvs {
            r.read_ue()?; // elemental_duration_in_tc_minus1
        } else {
            low_delay_hrd = r.read_bit()?;
        }
        let mut cpb_cnt = 1;
        if !low_delay_hrd {
            let cpb_cnt_minus1 = r.read_ue()?;
            if cpb_cnt_minus1 > 31 {
                return Err(invalid(SPS, "cpb_cnt_minus1 above 31"));
            }
            cpb_cnt = cpb_cnt_minus1 + 1;
        }
        for present in [nal_hrd, vcl_hrd] {
            if !present {
                continue;
            }
            for _ in 0..cpb_cnt {
                r.read_ue()?; // bit_rate_value_minus1
                r.read_ue()?; // cpb_size_value_minus1
                if sub_pic_hrd_params {
                    r.read_ue()?; // cpb_size_du_value_minus1
                    r.read_ue()?; // bit_rate_du_value_minus1
                }
                r.read_bit()?; // cbr_flag
            }
        }
    }
    Ok(())
}

/// `parallelismType` of the record from a PPS, as FFmpeg derives it: 0 mixed (WPP
/// and tiles), 3 wavefront, 2 tiles, 1 slices.
fn pps_parallelism_type(pps: &[u8]) -> Result<u8, CodecError> {
    let payload = check_nal(pps, NAL_PPS, PPS)?;
    let rbsp = unescape_rbsp(payload);
    let r = &mut BitReader::new(&rbsp, PPS);
    r.read_ue()?; // pps_pic_parameter_set_id
    r.read_ue()?; // pps_seq_parameter_set_id
    r.skip_bits(1 + 1 + 3 + 1 + 1)?; // dependent_slice_segments .. cabac_init_present
    r.read_ue()?; // num_ref_idx_l0_default_active_minus1
    r.read_ue()?; // num_ref_idx_l1_default_active_minus1
    r.read_se()?; // init_qp_minus26
    r.skip_bits(2)?; // constrained_intra_pred, transform_skip_enabled
    if r.read_bit()? {
        r.read_ue()?; // diff_cu_qp_delta_depth
    }
    r.read_se()?; // pps_cb_qp_offset
    r.read_se()?; // pps_cr_qp_offset
    r.skip_bits(4)?; // slice_chroma_qp_offsets_present .. transquant_bypass_enabled
    let tiles = r.read_bit()?;
    let wavefront = r.read_bit()?;
    Ok(match (wavefront, tiles) {
        (true, true) => 0,
        (true, false) => 3,
        (false, true) => 2,
        (false, false) => 1,
    })
}

fn invalid(what: &'static str, reason: impl Into<String>) -> CodecError {
    CodecError::Invalid {
        what,
        reason: reason.into(),
    }
}

fn atom_error(what: &'static str, err: mp4_atom::Error) -> CodecError {
    match err {
        mp4_atom::Error::OutOfBounds
        | mp4_atom::Error::ShortRead
        | mp4_atom::Error::UnexpectedEof => CodecError::Truncated { what },
        other => invalid(what, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::testing::hex;

    // libx265 3.5 through FFmpeg 5.1, testsrc2 320x240 at 30 fps, yuv420p (Main).
    const MAIN_VPS: &str = "40010c01ffff01600000030090000003000003003c959809";
    const MAIN_SPS: &str =
        "42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003c10";
    const MAIN_PPS: &str = "4401c172b46240";
    /// The `hvcC` FFmpeg's mp4 muxer wrote for that stream, minus its x265 SEI array.
    const MAIN_HVCC: &str = "0101600000009000000000003cf000fcfdf8f800000f03\
        a00001001840010c01ffff01600000030090000003000003003c959809\
        a10001002a42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003c10\
        a2000100074401c172b46240";

    // Same, 1918x1078 at 25 fps, yuv420p10le (Main 10): coded 1920x1080 with a
    // conformance window.
    const MAIN10_VPS: &str = "40010c01ffff022000000300900000030000030078959809";
    const MAIN10_SPS: &str = "420101022000000300900000030000030078a003c08010e754d96566924caf016808000003000800000300c840";
    const MAIN10_PPS: &str = "4401c172b46240";
    const MAIN10_HVCC: &str = "01022000000090000000000078f000fcfdfafa00000f03\
        a00001001840010c01ffff022000000300900000030000030078959809\
        a10001002d420101022000000300900000030000030078a003c08010e754d96566924caf016808000003000800000300c840\
        a2000100074401c172b46240";

    // Same, 1918x1078 at 50 fps, yuv422p10le (Format range extensions, Main 4:2:2 10).
    const REXT_VPS: &str = "40010c01ffff0408000003009d0800000300007b959809";
    const REXT_SPS: &str =
        "4201010408000003009d0800000300007bb003c08010e756d96566924caf0168080000030008000003019040";
    const REXT_PPS: &str = "4401c172b46240";
    const REXT_HVCC: &str = "0104080000009d08000000007bf000fcfefafa00000f03\
        a00001001740010c01ffff0408000003009d0800000300007b959809\
        a10001002c4201010408000003009d0800000300007bb003c08010e756d96566924caf0168080000030008000003019040\
        a2000100074401c172b46240";

    // Same, 640x360 at 30000/1001 fps with HRD parameters (fixed_pic_rate_general_flag
    // set) and two temporal sub-layers. FFmpeg 5.1 wrote `f002 ff` for
    // min_spatial_segmentation_idc/parallelismType here: it does not infer
    // fixed_pic_rate_within_cvs_flag = 1 (H.265 E.3.2), misreads the HRD parameters and
    // takes bits of sps_extension_present_flag/rbsp_trailing_bits for a bitstream
    // restriction. This record has the values the SPS really gives, `f000 fc`.
    const HRD_VPS: &str = "40010c02ffff01600000030090000003000003003f00009598acc048";
    const HRD_SPS: &str = "42010201600000030090000003000003003f0000a005020169659598acd24995e02d0100000303e9000075306014966e000f424001e84b8003d090007a1220";
    const HRD_PPS: &str = "4401c172b46240";
    const HRD_HVCC: &str = "0101600000009000000000003ff000fcfdf8f800001303\
        a00001001c40010c02ffff01600000030090000003000003003f00009598acc048\
        a10001003f42010201600000030090000003000003003f0000a005020169659598acd24995e02d0100000303e9000075306014966e000f424001e84b8003d090007a1220\
        a2000100074401c172b46240";

    struct Sample {
        vps: &'static str,
        sps: &'static str,
        pps: &'static str,
        hvcc: &'static str,
        codec: &'static str,
        width: u32,
        height: u32,
        fps: f64,
    }

    const SAMPLES: [Sample; 4] = [
        Sample {
            vps: MAIN_VPS,
            sps: MAIN_SPS,
            pps: MAIN_PPS,
            hvcc: MAIN_HVCC,
            codec: "hvc1.1.6.L60.90",
            width: 320,
            height: 240,
            fps: 30.0,
        },
        Sample {
            vps: MAIN10_VPS,
            sps: MAIN10_SPS,
            pps: MAIN10_PPS,
            hvcc: MAIN10_HVCC,
            codec: "hvc1.2.4.L120.90",
            width: 1918,
            height: 1078,
            fps: 25.0,
        },
        Sample {
            vps: REXT_VPS,
            sps: REXT_SPS,
            pps: REXT_PPS,
            hvcc: REXT_HVCC,
            codec: "hvc1.4.10.L123.9D.8",
            width: 1918,
            height: 1078,
            fps: 50.0,
        },
        Sample {
            vps: HRD_VPS,
            sps: HRD_SPS,
            pps: HRD_PPS,
            hvcc: HRD_HVCC,
            codec: "hvc1.1.6.L63.90",
            width: 640,
            height: 360,
            fps: 30000.0 / 1001.0,
        },
    ];

    #[test]
    fn sps_main() {
        let sps = parse_sps(&hex(MAIN_SPS)).expect("sps");
        assert_eq!(
            sps,
            HevcSps {
                sps_id: 0,
                max_sub_layers: 1,
                temporal_id_nesting: true,
                profile_space: 0,
                tier_flag: false,
                profile_idc: 1,
                profile_compatibility_flags: 0x6000_0000,
                constraint_indicator_flags: [0x90, 0, 0, 0, 0, 0],
                level_idc: 60,
                chroma_format_idc: 1,
                separate_colour_plane: false,
                coded_width: 320,
                coded_height: 240,
                width: 320,
                height: 240,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                min_spatial_segmentation_idc: 0,
                frame_rate: Some(30.0),
            }
        );
    }

    #[test]
    fn sps_main10_conformance_window() {
        let sps = parse_sps(&hex(MAIN10_SPS)).expect("sps");
        assert_eq!((sps.coded_width, sps.coded_height), (1920, 1080));
        assert_eq!((sps.width, sps.height), (1918, 1078));
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
        assert_eq!((sps.profile_idc, sps.level_idc), (2, 120));
        assert_eq!(sps.frame_rate, Some(25.0));
    }

    #[test]
    fn sps_422_crops_by_chroma_units() {
        // 4:2:2: SubWidthC 2, SubHeightC 1.
        let sps = parse_sps(&hex(REXT_SPS)).expect("sps");
        assert_eq!(sps.chroma_format_idc, 2);
        assert_eq!((sps.coded_width, sps.coded_height), (1920, 1080));
        assert_eq!((sps.width, sps.height), (1918, 1078));
        assert_eq!(sps.profile_idc, 4);
        assert_eq!(sps.constraint_indicator_flags, [0x9d, 0x08, 0, 0, 0, 0]);
    }

    #[test]
    fn sps_hrd_and_sub_layers() {
        let (sps, walk) = parse_sps_walk(&hex(HRD_SPS)).expect("sps");
        // Ends exactly after the VUI: the HRD parameters were walked in step.
        assert_eq!(walk, Ok(true));
        assert_eq!(sps.max_sub_layers, 2);
        assert!(!sps.temporal_id_nesting);
        assert_eq!((sps.width, sps.height), (640, 360));
        assert_eq!(sps.frame_rate, Some(30000.0 / 1001.0));
        assert_eq!(sps.min_spatial_segmentation_idc, 0);
    }

    #[test]
    fn every_sample_sps_is_walked_to_the_end() {
        for s in &SAMPLES {
            let (_, walk) = parse_sps_walk(&hex(s.sps)).expect("sps");
            assert_eq!(walk, Ok(true), "{}", s.codec);
        }
    }

    #[test]
    fn build_matches_ffmpeg() {
        for s in &SAMPLES {
            let built = build_hvcc_record(&hex(s.vps), &hex(s.sps), &hex(s.pps)).expect("build");
            assert_eq!(built, hex(s.hvcc), "{}", s.codec);
        }
    }

    #[test]
    fn parse_records() {
        for s in &SAMPLES {
            let info = parse_hvcc_record(&hex(s.hvcc)).expect("record");
            assert_eq!(info.codec_string, s.codec);
            assert_eq!(
                (info.width, info.height),
                (s.width, s.height),
                "{}",
                s.codec
            );
            assert_eq!(info.frame_rate, Some(s.fps), "{}", s.codec);
            assert_eq!(info.length_size, 4);
            assert_eq!(info.hvcc.arrays.len(), 3);
            // Written back unchanged.
            let mut out = Vec::new();
            info.hvcc.encode_body(&mut out).expect("encode");
            assert_eq!(out, hex(s.hvcc));
        }
    }

    #[test]
    fn parse_record_with_sei_array_and_trailing_bytes() {
        // FFmpeg's record carries a fourth array (prefix SEI, not complete).
        let mut record = hex(MAIN10_HVCC);
        record[22] = 4;
        record.extend_from_slice(&hex("27 0001 0008 4e01 05 04 00000000"));
        record.extend_from_slice(&[0xff, 0xff]); // unknown extension data
        let info = parse_hvcc_record(&record).expect("record");
        assert_eq!(info.codec_string, "hvc1.2.4.L120.90");
        assert_eq!((info.width, info.height), (1918, 1078));
        assert_eq!(info.hvcc.arrays.len(), 4);
        assert_eq!(info.hvcc.arrays[3].nal_unit_type, 39);
    }

    #[test]
    fn unfilled_general_fields_come_from_the_sps() {
        let mut record = hex(MAIN10_HVCC);
        record[1..13].fill(0);
        record[18] = 0xfc; // chroma_format_idc 0
        let info = parse_hvcc_record(&record).expect("record");
        assert_eq!(info.codec_string, "hvc1.2.4.L120.90");
        assert_eq!(info.hvcc.chroma_format_idc, 1);
        assert_eq!(info.hvcc.bit_depth_luma_minus8, 2);
    }

    #[test]
    fn two_byte_lengths() {
        let mut record = hex(MAIN_HVCC);
        record[21] = (record[21] & !3) | 1;
        assert_eq!(parse_hvcc_record(&record).expect("record").length_size, 2);
    }

    #[test]
    fn codec_string_forms() {
        let hvcc = |space, tier, idc, compat: u32, level, flags| Hvcc {
            general_profile_space: space,
            general_tier_flag: tier,
            general_profile_idc: idc,
            general_profile_compatibility_flags: compat.to_be_bytes(),
            general_constraint_indicator_flags: flags,
            general_level_idc: level,
            ..Hvcc::new()
        };
        let b0 = [0xb0, 0, 0, 0, 0, 0];
        let cases = [
            (hvcc(0, false, 1, 0x6000_0000, 93, b0), "hvc1.1.6.L93.B0"),
            (hvcc(0, false, 2, 0x2000_0000, 120, b0), "hvc1.2.4.L120.B0"),
            (hvcc(0, true, 2, 0x2000_0000, 153, b0), "hvc1.2.4.H153.B0"),
            (hvcc(1, false, 1, 0x6000_0000, 93, b0), "hvc1.A1.6.L93.B0"),
            (hvcc(3, false, 1, 0x6000_0000, 93, b0), "hvc1.C1.6.L93.B0"),
            (hvcc(0, false, 1, 0x6000_0000, 93, [0; 6]), "hvc1.1.6.L93"),
            (hvcc(0, false, 1, 0, 93, [0; 6]), "hvc1.1.0.L93"),
            (
                hvcc(0, false, 4, 0x0800_0000, 123, [0x9d, 0x08, 0, 0x01, 0, 0]),
                "hvc1.4.10.L123.9D.8.0.1",
            ),
            (
                hvcc(0, false, 1, 0xffff_fffe, 186, [0xff; 6]),
                "hvc1.1.7FFFFFFF.L186.FF.FF.FF.FF.FF.FF",
            ),
        ];
        for (h, want) in cases {
            assert_eq!(codec_string(&h), want);
        }
    }

    #[test]
    fn record_errors() {
        assert_eq!(
            parse_hvcc_record(&[]),
            Err(CodecError::Truncated { what: RECORD })
        );
        assert!(matches!(
            parse_hvcc_record(&hex("00000001 40010c01")),
            Err(CodecError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_hvcc_record(&[2, 0, 0]),
            Err(CodecError::Unsupported { .. })
        ));
        let full = hex(MAIN_HVCC);
        for len in 1..full.len() {
            assert!(
                parse_hvcc_record(&full[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        // No SPS array.
        let mut no_sps = full[..22].to_vec();
        no_sps.push(0);
        assert!(matches!(
            parse_hvcc_record(&no_sps),
            Err(CodecError::Invalid { .. })
        ));
        // 3-byte NAL lengths.
        let mut three = full.clone();
        three[21] = (three[21] & !3) | 2;
        assert!(matches!(
            parse_hvcc_record(&three),
            Err(CodecError::Invalid { .. })
        ));
    }

    #[test]
    fn sps_errors() {
        assert_eq!(parse_sps(&[0x42]), Err(CodecError::Truncated { what: SPS }));
        // A PPS is not an SPS.
        assert!(matches!(
            parse_sps(&hex(MAIN_PPS)),
            Err(CodecError::Invalid { .. })
        ));
        // nuh_layer_id 1.
        let mut layered = hex(MAIN_SPS);
        layered[1] = 0x09;
        assert!(matches!(
            parse_sps(&layered),
            Err(CodecError::Unsupported { .. })
        ));
        // Truncated before the VUI: an error, not a guess.
        let sps = hex(MAIN_SPS);
        assert!(matches!(
            parse_sps(&sps[..20]),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn build_checks_nal_types() {
        let (vps, sps, pps) = (hex(MAIN_VPS), hex(MAIN_SPS), hex(MAIN_PPS));
        assert!(build_hvcc_record(&sps, &sps, &pps).is_err());
        assert!(build_hvcc_record(&vps, &pps, &pps).is_err());
        assert!(build_hvcc_record(&vps, &sps, &vps).is_err());
        assert!(build_hvcc_record(&vps, &sps, &[]).is_err());
        let mut huge = pps.clone();
        huge.resize(70_000, 0x55);
        assert!(build_hvcc_record(&vps, &sps, &huge).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_record_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_hvcc_record(&data);
        }

        #[test]
        fn arbitrary_sps_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_sps(&data);
            let mut nal = vec![0x42, 0x01];
            nal.extend_from_slice(&data);
            let _ = parse_sps(&nal);
        }

        #[test]
        fn arbitrary_build_never_panics(
            vps in proptest::collection::vec(any::<u8>(), 0..40),
            sps in proptest::collection::vec(any::<u8>(), 0..80),
            pps in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let _ = build_hvcc_record(&vps, &sps, &pps);
        }

        #[test]
        fn mutated_samples_never_panic(
            which in 0..SAMPLES.len(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let s = &SAMPLES[which];
            let mut record = hex(s.hvcc);
            let mut sps = hex(s.sps);
            for &(at, value) in &edits {
                let len = record.len();
                record[at % len] = value;
                // Keep the SPS NAL header so the walk gets past it.
                let len = sps.len();
                sps[2 + at % (len - 2)] = value;
            }
            let _ = parse_hvcc_record(&record);
            let _ = parse_hvcc_record(&record[..cut % (record.len() + 1)]);
            let _ = parse_sps(&sps);
            let _ = parse_sps(&sps[..cut % (sps.len() + 1)]);
            let _ = build_hvcc_record(&hex(s.vps), &sps, &hex(s.pps));
        }
    }
}
