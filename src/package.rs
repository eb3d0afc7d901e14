//! `sluice package`: an FLV or MPEG-TS file through the same demuxers, packager and
//! playlist writer as the live origin, written to a folder laid out like the viewer URLs:
//!
//! ```text
//! OUT/index.m3u8                         multivariant
//! OUT/source/index.m3u8                  media playlist (with EXT-X-ENDLIST)
//! OUT/source/1/init.mp4, 0.m4s, 0.0.m4s  generation 1's objects
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use sluice_media::flv::{FlvDemuxer, FlvError, FlvFile};
use sluice_media::playlist::{multivariant, names, MediaPlaylist, PlaylistSettings, Skip};
use sluice_media::ts::TsDemuxer;
use sluice_media::{Input, Output, Packager, PackagerSettings, TrackKind};

/// The one rendition an ingest becomes: Sluice repackages, it does not transcode.
pub(crate) const RENDITION: &str = "source";
const GENERATION: u64 = 1;

pub(crate) struct Options {
    pub(crate) input: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) part_target_ms: u32,
    pub(crate) segment_target_ms: u32,
}

pub(crate) struct Summary {
    segments: u64,
    parts: u64,
    frames: u64,
    dropped: u64,
    skipped_tags: u64,
    out: PathBuf,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "packaged {} frames into {} segments ({} parts) in {}; {} frames dropped, {} tags or packets skipped",
            self.frames,
            self.segments,
            self.parts,
            self.out.display(),
            self.dropped,
            self.skipped_tags
        )
    }
}

/// A file's media as packager inputs, with the tracks it holds.
struct Media {
    inputs: Vec<Input>,
    has_video: bool,
    has_audio: bool,
    /// FLV tags in codecs Sluice does not package, or TS bytes/PES that could not be used.
    skipped: u64,
}

/// An FLV file (starts `FLV`) or an MPEG-TS file (sync bytes every 188 bytes).
fn read_media(path: &Path) -> Result<Media> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.first() == Some(&0x47) && data.get(188).is_none_or(|b| *b == 0x47) {
        let mut demuxer = TsDemuxer::new();
        let mut inputs = demuxer.push(&data);
        inputs.extend(demuxer.flush());
        let stats = demuxer.stats();
        let has = |kind| {
            inputs
                .iter()
                .any(|i| matches!(i, Input::Config(c) if c.kind() == kind))
        };
        return Ok(Media {
            has_video: has(TrackKind::Video),
            has_audio: has(TrackKind::Audio),
            skipped: stats.dropped_pes + stats.frames_before_config,
            inputs,
        });
    }
    let mut file = FlvFile::new(Bytes::from(data))
        .with_context(|| format!("{}: neither FLV nor MPEG-TS", path.display()))?;
    let mut demuxer = FlvDemuxer::new();
    let mut inputs = Vec::new();
    let mut skipped = 0u64;
    while let Some(tag) = file.next_tag().context("reading FLV tags")? {
        let input = match tag.tag_type {
            8 => demuxer.push_audio(tag.timestamp_ms, &tag.body),
            9 => demuxer.push_video(tag.timestamp_ms, &tag.body),
            _ => Ok(None), // script data (onMetaData): nothing to package
        };
        match input {
            Ok(input) => inputs.extend(input),
            // A track in a codec Sluice does not package is left out; the rest goes on.
            Err(FlvError::UnsupportedAudioFormat(_) | FlvError::UnsupportedVideoCodec(_)) => {
                skipped += 1;
            }
            Err(e) => bail!("FLV tag at {} ms: {e}", tag.timestamp_ms),
        }
    }
    Ok(Media {
        inputs,
        has_video: file.header.has_video,
        has_audio: file.header.has_audio,
        skipped,
    })
}

pub(crate) fn run(opts: &Options) -> Result<Summary> {
    let media = read_media(&opts.input)?;
    let settings = PackagerSettings {
        resume_at_us: None,
        part_target_ms: opts.part_target_ms,
        segment_target_ms: opts.segment_target_ms,
        first_msn: 0,
        first_init_index: 0,
        starts_with_discontinuity: false,
        expect_video: media.has_video,
        expect_audio: media.has_audio,
        advertised_part_target_ms: None,
        dated_until_ms: None,
    };
    let mut packager = Packager::new(settings.clone())?;
    // Made at the first init segment, when the packager has fitted PART-TARGET.
    let mut playlist: Option<MediaPlaylist> = None;
    let rendition_dir = opts.out.join(RENDITION);
    let objects = rendition_dir.join(GENERATION.to_string());
    std::fs::create_dir_all(&objects).with_context(|| format!("creating {}", objects.display()))?;

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut writer = ObjectWriter {
        dir: &objects,
        segment: Vec::new(),
        segments: 0,
        parts: 0,
    };
    let skipped_tags = media.skipped;
    for input in media.inputs {
        packager.push(input, now_ms)?;
        drain(&mut packager, &mut playlist, &mut writer)?;
    }
    packager.finish()?;
    drain(&mut packager, &mut playlist, &mut writer)?;
    let Some(mut playlist) = playlist else {
        bail!(
            "{}: no audio or video the packager could use",
            opts.input.display()
        );
    };
    playlist.end();

    let Some(variant) = packager.variant(format!("{RENDITION}/index.m3u8")) else {
        bail!(
            "{}: no audio or video the packager could use",
            opts.input.display()
        );
    };
    write(
        &rendition_dir.join("index.m3u8"),
        playlist.render(Skip::No, &[]).as_bytes(),
    )?;
    write(
        &opts.out.join("index.m3u8"),
        multivariant::render(&[variant]).as_bytes(),
    )?;
    let stats = packager.stats();
    Ok(Summary {
        segments: writer.segments,
        parts: writer.parts,
        frames: stats.frames_in,
        dropped: stats.frames_dropped,
        skipped_tags,
        out: opts.out.clone(),
    })
}

/// Writes each object as it is produced; a segment is its parts' bytes concatenated.
struct ObjectWriter<'a> {
    dir: &'a Path,
    segment: Vec<u8>,
    segments: u64,
    parts: u64,
}

fn drain(
    packager: &mut Packager,
    playlist: &mut Option<MediaPlaylist>,
    w: &mut ObjectWriter<'_>,
) -> Result<()> {
    while let Some(output) = packager.poll_output() {
        let playlist = playlist.get_or_insert_with(|| {
            MediaPlaylist::new(PlaylistSettings {
                target_duration_s: packager.settings().target_duration_s(),
                part_target_ms: packager.part_target_ms(),
                window_segments: usize::MAX,
                uri_prefix: format!("{GENERATION}/"),
            })
        });
        match &output {
            Output::Init(init) => write(&w.dir.join(names::init(init.index)), &init.data)?,
            Output::SegmentStart(_) => w.segment.clear(),
            Output::Part(part) => {
                write(&w.dir.join(names::part(part.msn, part.index)), &part.data)?;
                w.segment.extend_from_slice(&part.data);
                w.parts += 1;
            }
            Output::SegmentEnd(end) => {
                write(&w.dir.join(names::segment(end.msn)), &w.segment)?;
                w.segments += 1;
            }
        }
        playlist.apply(&output);
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
