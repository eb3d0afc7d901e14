//! Writes FLV files, so tests can feed the packager what no encoder here sends: an
//! HEVC elementary stream wrapped into Enhanced RTMP (`hvc1`) tags; and reads the tags
//! of one, so a test can send them itself.

use anyhow::{bail, Result};
use sluice_media::codec::hevc::build_hvcc_record;

pub struct FlvWriter {
    out: Vec<u8>,
}

impl FlvWriter {
    pub fn new(has_audio: bool, has_video: bool) -> Self {
        let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
        let mut out = b"FLV\x01".to_vec();
        out.push(flags);
        out.extend_from_slice(&9u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // PreviousTagSize0
        Self { out }
    }

    /// Appends a tag: 8 audio, 9 video, 18 script data.
    pub fn tag(&mut self, tag_type: u8, timestamp_ms: u32, body: &[u8]) {
        let size = body.len() as u32;
        self.out.push(tag_type);
        self.out.extend_from_slice(&size.to_be_bytes()[1..]);
        self.out.extend_from_slice(&timestamp_ms.to_be_bytes()[1..]);
        self.out.push((timestamp_ms >> 24) as u8);
        self.out.extend_from_slice(&[0, 0, 0]);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(&(size + 11).to_be_bytes());
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Wraps an HEVC Annex B stream with no B-frames at `fps` into an FLV of Enhanced RTMP
/// tags: one SequenceStart (hvcC) and one CodedFrames tag per access unit.
pub fn hevc_annexb_to_enhanced_flv(annexb: &[u8], fps: u32) -> Result<(Vec<u8>, usize)> {
    let nal_type = |n: &[u8]| n.first().map(|b| (b >> 1) & 0x3f).unwrap_or(63);
    let nalus = sluice_media::ts::annexb_nal_units(annexb);
    let find = |t: u8| nalus.iter().find(|n| nal_type(n) == t).copied();
    let (Some(vps), Some(sps), Some(pps)) = (find(32), find(33), find(34)) else {
        bail!("no VPS/SPS/PPS in the HEVC stream");
    };
    let record = build_hvcc_record(vps, sps, pps)?;

    // Access units: a new one starts at a slice with first_slice_segment_in_pic_flag set.
    let mut units: Vec<Vec<&[u8]>> = Vec::new();
    let mut has_vcl = false;
    for nal in nalus {
        let t = nal_type(nal);
        let first_slice = t < 32 && nal.get(2).is_some_and(|b| b & 0x80 != 0);
        if units.is_empty() || (has_vcl && (first_slice || t >= 32)) {
            units.push(Vec::new());
            has_vcl = false;
        }
        if t < 32 {
            has_vcl = true;
        }
        // Parameter sets live in the sample entry (hvc1); AUDs are not carried in MP4.
        if !matches!(t, 32..=35) {
            if let Some(u) = units.last_mut() {
                u.push(nal);
            }
        }
    }
    units.retain(|u| u.iter().any(|n| nal_type(n) < 32));

    let mut flv = FlvWriter::new(false, true);
    let mut body = vec![0x90]; // ExHeader | key frame | SequenceStart
    body.extend_from_slice(b"hvc1");
    body.extend_from_slice(&record);
    flv.tag(9, 0, &body);
    for (i, unit) in units.iter().enumerate() {
        let key = unit.iter().any(|n| (16..=23).contains(&nal_type(n)));
        let mut body = vec![0x80 | (if key { 1 } else { 2 } << 4) | 1]; // CodedFrames
        body.extend_from_slice(b"hvc1");
        body.extend_from_slice(&[0, 0, 0]); // composition time offset
        for nal in unit {
            body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            body.extend_from_slice(nal);
        }
        flv.tag(9, (i as u64 * 1000 / u64::from(fps)) as u32, &body);
    }
    Ok((flv.finish(), units.len()))
}

/// The FLV tags of a file: (type, timestamp in ms, body).
pub fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut tags = Vec::new();
    let mut at = 9 + 4;
    while at + 11 <= file.len() {
        let kind = file[at];
        let size = u32::from_be_bytes([0, file[at + 1], file[at + 2], file[at + 3]]) as usize;
        let ts = u32::from_be_bytes([file[at + 7], file[at + 4], file[at + 5], file[at + 6]]);
        let Some(body) = file.get(at + 11..at + 11 + size) else {
            break;
        };
        tags.push((kind, ts, body.to_vec()));
        at += 11 + size + 4;
    }
    tags
}
