//! CMAF / fragmented MP4 writing with `mp4-atom`: the init segment (ftyp + moov with
//! mvex) and one fragment (moof + mdat) per part. A segment is the concatenation of its
//! parts' fragments, so a part's bytes are never rewritten.

use crate::frame::{TrackConfig, VideoCodec};
use mp4_atom::{
    Atom, Audio, Av01, Av1c, Avc1, Avcc, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd,
    Mdia, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak,
    Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("decoder configuration record rejected by the muxer: {0}")]
    Record(String),
    #[error("fragment could not be encoded: {0}")]
    Encode(String),
}

/// Sample flags (ISO 14496-12 8.8.3.1): a sync sample depends on nothing ...
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// ... a non-sync sample depends on others and is marked `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// Builds the init segment for tracks numbered 1.. in the order given.
pub fn init_segment(tracks: &[TrackConfig]) -> Result<Vec<u8>, MuxError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let mut trak = Vec::with_capacity(tracks.len());
    let mut trex = Vec::with_capacity(tracks.len());
    for (i, config) in tracks.iter().enumerate() {
        let track_id = i as u32 + 1;
        trak.push(build_trak(track_id, config)?);
        trex.push(Trex {
            track_id,
            default_sample_description_index: 1,
            default_sample_duration: 0,
            default_sample_size: 0,
            default_sample_flags: 0,
        });
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: tracks.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)
        .map_err(|e| MuxError::Encode(e.to_string()))?;
    moov.encode(&mut out)
        .map_err(|e| MuxError::Encode(e.to_string()))?;
    Ok(out)
}

fn record_err(e: mp4_atom::Error) -> MuxError {
    MuxError::Record(e.to_string())
}

fn build_trak(track_id: u32, config: &TrackConfig) -> Result<Trak, MuxError> {
    let (tkhd, hdlr, minf) = match config {
        TrackConfig::Video(v) => {
            let visual = Visual {
                data_reference_index: 1,
                width: v.width.min(u32::from(u16::MAX)) as u16,
                height: v.height.min(u32::from(u16::MAX)) as u16,
                ..Default::default()
            };
            let mut record = &v.record[..];
            let codec: mp4_atom::Codec = match v.codec {
                VideoCodec::H264 => Avc1 {
                    visual,
                    avcc: Avcc::decode_body(&mut record).map_err(record_err)?,
                    ..Default::default()
                }
                .into(),
                VideoCodec::H265 => Hvc1 {
                    visual,
                    hvcc: Hvcc::decode_body(&mut record).map_err(record_err)?,
                    ..Default::default()
                }
                .into(),
                VideoCodec::Av1 => Av01 {
                    visual,
                    av1c: Av1c::decode_body(&mut record).map_err(record_err)?,
                    ..Default::default()
                }
                .into(),
            };
            (
                Tkhd {
                    track_id,
                    enabled: true,
                    in_movie: true,
                    width: (v.width.min(u32::from(u16::MAX)) as u16).into(),
                    height: (v.height.min(u32::from(u16::MAX)) as u16).into(),
                    ..Default::default()
                },
                Hdlr {
                    handler: b"vide".into(),
                    name: "Sluice video".into(),
                },
                Minf {
                    vmhd: Some(Vmhd::default()),
                    dinf: data_info(),
                    stbl: sample_table(codec),
                    ..Default::default()
                },
            )
        }
        TrackConfig::Audio(a) => {
            let codec: mp4_atom::Codec = Mp4a {
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: u16::from(a.channels.max(1)),
                    sample_size: 16,
                    sample_rate: (a.sample_rate.min(u32::from(u16::MAX)) as u16).into(),
                },
                esds: esds(track_id, &a.asc),
                btrt: None,
                taic: None,
            }
            .into();
            (
                Tkhd {
                    track_id,
                    enabled: true,
                    in_movie: true,
                    alternate_group: 1,
                    volume: 1.into(),
                    ..Default::default()
                },
                Hdlr {
                    handler: b"soun".into(),
                    name: "Sluice audio".into(),
                },
                Minf {
                    smhd: Some(Smhd::default()),
                    dinf: data_info(),
                    stbl: sample_table(codec),
                    ..Default::default()
                },
            )
        }
    };
    Ok(Trak {
        tkhd,
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: config.timescale(),
                language: "und".into(),
                ..Default::default()
            },
            hdlr,
            minf,
        },
        ..Default::default()
    })
}

fn data_info() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn sample_table(codec: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn esds(track_id: u32, asc: &[u8]) -> Esds {
    use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
    let (profile, freq_index, chan_conf) = match asc {
        [a, b, ..] => (a >> 3, ((a & 0x07) << 1) | (b >> 7), (b >> 3) & 0x0f),
        _ => (2, 3, 2),
    };
    Esds {
        es_desc: EsDescriptor {
            es_id: track_id as u16,
            depends_on_es_id: None,
            url: None,
            ocr_es_id: None,
            stream_priority: 0,
            dec_config: DecoderConfig {
                object_type_indication: 0x40, // MPEG-4 Audio
                stream_type: 5,               // audio stream
                up_stream: 0,
                buffer_size_db: Default::default(),
                max_bitrate: 0,
                avg_bitrate: 0,
                dec_specific: Some(DecoderSpecific {
                    profile,
                    freq_index,
                    chan_conf,
                    raw: asc.to_vec(),
                }),
            },
            sl_config: SLConfig::default(),
        },
    }
}

/// One sample of a fragment, times in its track's timescale.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub duration: u32,
    pub cts: i32,
    pub sync: bool,
    pub data: &'a [u8],
}

/// The samples of one track within a fragment.
#[derive(Debug, Clone)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: Vec<Sample<'a>>,
}

/// Writes one fragment (`moof` + `mdat`) into `out`; track runs with no samples are left out.
pub fn write_fragment(
    sequence_number: u32,
    runs: &[TrackRun<'_>],
    out: &mut Vec<u8>,
) -> Result<(), MuxError> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut moof = Moof {
        mfhd: mp4_atom::Mfhd { sequence_number },
        traf: runs
            .iter()
            .map(|run| Traf {
                tfhd: Tfhd {
                    track_id: run.track_id,
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: run.base_decode_time,
                }),
                trun: vec![Trun {
                    data_offset: Some(0),
                    samples: run
                        .samples
                        .iter()
                        .map(|s| TrunEntry {
                            duration: Some(s.duration),
                            size: Some(s.data.len() as u32),
                            flags: Some(if s.sync {
                                SYNC_SAMPLE_FLAGS
                            } else {
                                NON_SYNC_SAMPLE_FLAGS
                            }),
                            cts: Some(i64::from(s.cts)),
                        })
                        .collect::<Vec<_>>()
                        .into(),
                }],
                ..Default::default()
            })
            .collect(),
    };
    // The data offsets are fixed-width fields: encode once to learn the moof's size.
    let mut probe = Vec::new();
    moof.encode(&mut probe)
        .map_err(|e| MuxError::Encode(e.to_string()))?;
    let mdat_header_len = 8usize;
    let mut offset = probe.len() + mdat_header_len;
    for (traf, run) in moof.traf.iter_mut().zip(&runs) {
        traf.trun[0].data_offset = Some(offset as i32);
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let start = out.len();
    moof.encode(out)
        .map_err(|e| MuxError::Encode(e.to_string()))?;
    debug_assert_eq!(out.len() - start, probe.len());
    let mdat_len = offset - probe.len();
    let mdat_len32 =
        u32::try_from(mdat_len).map_err(|_| MuxError::Encode("fragment over 4 GiB".into()))?;
    out.reserve(mdat_len);
    out.extend_from_slice(&mdat_len32.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for run in &runs {
        for s in &run.samples {
            out.extend_from_slice(s.data);
        }
    }
    Ok(())
}
