//! The segmenter: frames in, CMAF init / parts / segment boundaries out.
//!
//! ```text
//! push(Input::Config | Input::Frame | Input::Discontinuity, now)
//!    -> startup buffer (until every expected track has a config, and video a keyframe)
//!    -> timestamp check (backwards or gap => discontinuity) -> output timeline
//!    -> open part (drive track cuts; other tracks follow by time)
//! poll_output() -> Init | SegmentStart | Part | SegmentEnd      (call until None)
//! ```
//!
//! The drive track is video when there is video, else audio. A part closes when the
//! next drive frame would take it past the part target, and always before a video
//! keyframe, so every keyframe starts an independent part. A segment closes at a part
//! boundary: on a keyframe once it reached the segment target, or, whatever the GOP,
//! before the next part could take it past TARGETDURATION. So TARGETDURATION is fixed
//! for the whole generation: `ceil(1.5 × segment target)`, leaving room for a GOP a
//! little longer than the target to still cut on keyframes.
//!
//! The output timeline never goes back: after a discontinuity (publisher restart,
//! timestamps jumping back or forward) the new frames continue where the old ones
//! ended, and the next segment carries `discontinuity: true`.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::cmaf::{self, MuxError, Sample, TrackRun};
use crate::frame::{Frame, TrackConfig, TrackKind};

/// Bounds on the settings an operator may give.
pub const PART_TARGET_MS_RANGE: std::ops::RangeInclusive<u32> = 50..=5_000;
pub const SEGMENT_TARGET_MS_MAX: u32 = 60_000;

/// How long to wait for every expected track before starting with the ones present.
const STARTUP_WAIT_US: i64 = 2_000_000;
/// Frames held while starting or waiting for a keyframe; the oldest go first. At 60 fps
/// plus 48 kHz AAC that is over 10 s of media, far beyond the startup wait.
const MAX_BUFFERED_FRAMES: usize = 1_500;
/// Media queued for the open part, in bytes (all tracks): far beyond a part of the
/// longest part target at any real bitrate (5 s at 100 Mbit/s is 62.5 MB).
pub const MAX_QUEUED_BYTES: usize = 96 << 20;
/// A forward step between two drive-track frames larger than this is a timestamp jump
/// (discontinuity), not a frame gap: it keeps every segment under TARGETDURATION + 0.5 s.
const MAX_DRIVE_GAP_US: i64 = 400_000;
/// A follower frame (audio beside video) further than this from the drive track's last
/// frame is from another timeline, or runs ahead of a stalled drive track: dropped.
const MAX_FOLLOWER_SKEW_US: i64 = 1_000_000;
/// RTMP rounds each timestamp to the millisecond, so n frames span n × frame ± 1 ms.
/// PART-TARGET is a whole number of frames plus this, so no part exceeds it.
const PART_JITTER_US: i64 = 2_000;
/// A part that is not the last of its segment is at least this share of PART-TARGET
/// (draft-pantos-hls-rfc8216bis §4.4.4.9); percent.
const MIN_PART_SHARE_PCT: i64 = 85;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagerSettings {
    pub part_target_ms: u32,
    pub segment_target_ms: u32,
    /// Media sequence number of the first segment (a continuing generation resumes).
    pub first_msn: u64,
    /// Index of the first init segment (a resumed generation's inits keep counting,
    /// so no URL ever names other bytes).
    pub first_init_index: u32,
    /// The first segment follows another publisher's (a generation resumed elsewhere).
    pub starts_with_discontinuity: bool,
    /// Tracks to wait for at startup (from FLV header flags or RTMP metadata).
    pub expect_video: bool,
    pub expect_audio: bool,
    /// Where the output timeline continues (µs): the end of what another origin made of
    /// this generation, so a resumed stream's times never go back. `None`: the
    /// encoder's own times.
    pub resume_at_us: Option<i64>,
    /// The PART-TARGET (ms) an earlier origin of this generation advertised: advertised
    /// again, with parts fitted at or under it, so the playlist's PART-TARGET never
    /// changes when the generation resumes (`None`: fitted from `part_target_ms`).
    pub advertised_part_target_ms: Option<u32>,
    /// Where an earlier origin's dates of this generation end (ms since the Unix
    /// epoch): the first segment is dated no earlier.
    pub dated_until_ms: Option<i64>,
}

impl Default for PackagerSettings {
    fn default() -> Self {
        Self {
            part_target_ms: 200,
            segment_target_ms: 2_000,
            first_msn: 0,
            first_init_index: 0,
            starts_with_discontinuity: false,
            expect_video: true,
            expect_audio: true,
            resume_at_us: None,
            advertised_part_target_ms: None,
            dated_until_ms: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("part_target_ms must be within {min}..={max}, got {got}", min = PART_TARGET_MS_RANGE.start(), max = PART_TARGET_MS_RANGE.end())]
    PartTarget { got: u32 },
    #[error("segment_target_ms must be at least part_target_ms ({part}) and at most {SEGMENT_TARGET_MS_MAX}, got {got}")]
    SegmentTarget { got: u32, part: u32 },
    #[error(
        "an earlier origin's PART-TARGET must be within 1..={SEGMENT_TARGET_MS_MAX}, got {got}"
    )]
    AdvertisedPartTarget { got: u32 },
    #[error(transparent)]
    Mux(#[from] MuxError),
    #[error("{bytes} bytes of media without the part ending: the publisher's timestamps stopped advancing")]
    Stalled { bytes: usize },
}

impl PackagerSettings {
    pub fn validate(&self) -> Result<(), PackagerError> {
        if !PART_TARGET_MS_RANGE.contains(&self.part_target_ms) {
            return Err(PackagerError::PartTarget {
                got: self.part_target_ms,
            });
        }
        if self.segment_target_ms < self.part_target_ms
            || self.segment_target_ms > SEGMENT_TARGET_MS_MAX
        {
            return Err(PackagerError::SegmentTarget {
                got: self.segment_target_ms,
                part: self.part_target_ms,
            });
        }
        if let Some(got) = self
            .advertised_part_target_ms
            .filter(|ms| *ms == 0 || *ms > SEGMENT_TARGET_MS_MAX)
        {
            return Err(PackagerError::AdvertisedPartTarget { got });
        }
        Ok(())
    }

    /// EXT-X-TARGETDURATION in seconds, fixed for the generation.
    pub fn target_duration_s(&self) -> u32 {
        (self.segment_target_ms * 3 / 2).div_ceil(1000).max(1)
    }
}

/// What the packager is fed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Config(TrackConfig),
    Frame(Frame),
    /// The publisher changed (reconnect): start a new timeline at the next keyframe.
    Discontinuity,
}

/// An init segment; parts that follow a `SegmentStart` naming its index use it.
#[derive(Debug, Clone, PartialEq)]
pub struct InitSegment {
    pub index: u32,
    pub data: Bytes,
    pub tracks: Vec<TrackConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStart {
    pub msn: u64,
    /// Wall-clock time of the segment's first frame, ms since the Unix epoch.
    pub program_date_time_ms: i64,
    pub discontinuity: bool,
    pub init_index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub msn: u64,
    pub index: u32,
    pub duration_us: u64,
    /// Starts with a keyframe (or is audio only).
    pub independent: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEnd {
    pub msn: u64,
    pub duration_us: u64,
    pub parts: u32,
    pub bytes: u64,
}

/// What the packager produced, in order. Call `poll_output` until it returns `None`.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Init(InitSegment),
    SegmentStart(SegmentStart),
    Part(Part),
    SegmentEnd(SegmentEnd),
}

/// Counters a caller may export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagerStats {
    pub frames_in: u64,
    pub frames_dropped: u64,
    pub discontinuities: u64,
    pub bytes_out: u64,
    /// Largest bit rate of one closed segment.
    pub peak_segment_bps: u64,
    /// Bytes and duration of all closed segments.
    pub segments_bytes: u64,
    pub segments_us: u64,
    pub video_frames: u64,
    pub video_us: u64,
}

#[derive(Debug)]
struct Track {
    id: u32,
    config: TrackConfig,
    timescale: i64,
    /// Input dts of the last frame taken, for jump detection.
    last_in_dts: Option<i64>,
    /// Output dts of the last frame queued in this epoch and its duration.
    last_out_dts: Option<i64>,
    /// Output times below this were already written (the end of earlier epochs).
    floor_out_dts: i64,
    last_duration: i64,
    /// Added to input dts to get output dts, in this track's ticks.
    offset: i64,
    /// Frames (output times) waiting for the part that will carry them.
    queue: VecDeque<Frame>,
    /// Bytes of media in `queue`.
    queued_bytes: usize,
}

impl Track {
    fn enqueue(&mut self, frame: Frame) {
        self.queued_bytes += frame.data.len();
        self.queue.push_back(frame);
    }

    fn dequeue(&mut self) -> Option<Frame> {
        let frame = self.queue.pop_front()?;
        self.queued_bytes -= frame.data.len();
        Some(frame)
    }

    fn to_us(&self, ticks: i64) -> i64 {
        (i128::from(ticks) * 1_000_000 / i128::from(self.timescale)) as i64
    }

    /// Ticks at or after `us`: where a resumed timeline may start without overlap.
    fn ticks_at_or_after_us(&self, us: i64) -> i64 {
        let t = i128::from(self.timescale);
        (i128::from(us) * t).div_euclid(1_000_000) as i64
            + i64::from((i128::from(us) * t).rem_euclid(1_000_000) != 0)
    }

    fn ticks_of_us(&self, us: i64) -> i64 {
        (i128::from(us) * i128::from(self.timescale) / 1_000_000) as i64
    }

    /// Notes a frame queued at `out_dts`: the step from the one before is the last
    /// frame's duration.
    fn advance_to(&mut self, out_dts: i64) {
        if let Some(prev) = self.last_out_dts {
            self.last_duration = out_dts - prev;
        }
        self.last_out_dts = Some(out_dts);
    }

    fn nominal_duration(&self) -> i64 {
        match &self.config {
            TrackConfig::Audio(a) => i64::from(a.samples_per_frame),
            TrackConfig::Video(_) => self.last_duration,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct OpenSegment {
    msn: u64,
    start: i64,
    parts: u32,
    bytes: u64,
    /// Its EXT-X-PROGRAM-DATE-TIME (ms since the Unix epoch).
    date_ms: i64,
}

/// How the next frame taken maps input times to the output timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// Keep the encoder's times (shifted only if negative).
    KeepInputTimes,
    /// Continue right after the end of what was already written.
    ResumeAtUs(i64),
}

#[derive(Debug, Clone, Copy)]
struct OpenPart {
    start: i64,
}

/// One track's frames for the part being written, and where its last frame ends.
struct PartFrames {
    track_id: u32,
    frames: Vec<Frame>,
    last_end: i64,
}

impl PartFrames {
    /// The track's run in the fragment: each frame lasts until the next one, the last
    /// until `last_end`.
    fn run(&self) -> TrackRun<'_> {
        let frames = &self.frames;
        TrackRun {
            track_id: self.track_id,
            base_decode_time: frames.first().map(|f| f.dts.max(0) as u64).unwrap_or(0),
            samples: frames
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    let end = frames.get(j + 1).map(|n| n.dts).unwrap_or(self.last_end);
                    Sample {
                        duration: (end - f.dts).clamp(0, i64::from(u32::MAX)) as u32,
                        cts: f.cts,
                        sync: f.keyframe,
                        data: &f.data,
                    }
                })
                .collect(),
        }
    }
}

/// Per-channel segmenter. Time comes in as arguments; it never reads a clock.
#[derive(Debug)]
pub struct Packager {
    settings: PackagerSettings,
    video_config: Option<TrackConfig>,
    audio_config: Option<TrackConfig>,
    started: bool,
    finished: bool,
    /// Frames waiting for the start, each with the wall clock it arrived at.
    startup: VecDeque<(Frame, i64)>,
    /// Bytes of media in `startup`.
    startup_bytes: usize,
    /// Active tracks (video first), and which one drives the cuts.
    tracks: Vec<Track>,
    drive: usize,
    init_dirty: bool,
    next_init_index: u32,
    segment: Option<OpenSegment>,
    part: Option<OpenPart>,
    next_msn: u64,
    fragment_sequence: u32,
    discontinuity_pending: bool,
    /// Set at start and after a discontinuity: the next frame fixes the offset.
    reanchor: Option<Anchor>,
    /// After a publisher change: video frames wait for a keyframe.
    need_keyframe: bool,
    /// End of everything written so far (µs of output time): only grows.
    timeline_end_us: i64,
    /// PART-TARGET as advertised: the configured target fitted to the frame duration
    /// seen at the start, fixed for the generation.
    part_target_us: Option<i64>,
    pdt_anchor: Option<(i64, i64)>,
    /// Where the last whole segment ends on the EXT-X-PROGRAM-DATE-TIME clock (ms): a
    /// segment after a discontinuity is dated no earlier.
    dated_until_ms: Option<i64>,
    outputs: VecDeque<Output>,
    stats: PackagerStats,
}

impl Packager {
    pub fn new(settings: PackagerSettings) -> Result<Self, PackagerError> {
        settings.validate()?;
        let first_init_index = settings.first_init_index;
        let starts_with_discontinuity = settings.starts_with_discontinuity;
        let resume_at_us = settings.resume_at_us.map(|us| us.max(0));
        let dated_until_ms = settings.dated_until_ms;
        Ok(Self {
            next_msn: settings.first_msn,
            settings,
            video_config: None,
            audio_config: None,
            started: false,
            finished: false,
            startup: VecDeque::new(),
            startup_bytes: 0,
            tracks: Vec::new(),
            drive: 0,
            init_dirty: true,
            next_init_index: first_init_index,
            segment: None,
            part: None,
            fragment_sequence: 0,
            discontinuity_pending: starts_with_discontinuity,
            reanchor: Some(match resume_at_us {
                Some(us) => Anchor::ResumeAtUs(us),
                None => Anchor::KeepInputTimes,
            }),
            need_keyframe: false,
            part_target_us: None,
            timeline_end_us: resume_at_us.unwrap_or(0),
            pdt_anchor: None,
            dated_until_ms,
            outputs: VecDeque::new(),
            stats: PackagerStats::default(),
        })
    }

    pub fn settings(&self) -> &PackagerSettings {
        &self.settings
    }

    /// Where the output timeline ends so far (µs): the end of the last frame of any
    /// track, never before where it started or last resumed.
    pub fn output_end_us(&self) -> i64 {
        self.tracks
            .iter()
            .filter_map(|t| {
                t.last_out_dts
                    .map(|d| t.to_us(d + t.nominal_duration().max(0)))
            })
            .fold(self.timeline_end_us, i64::max)
    }

    pub fn stats(&self) -> &PackagerStats {
        &self.stats
    }

    /// PART-TARGET in milliseconds as the playlist must advertise it: an earlier
    /// origin's, or known once the first init segment is out (the configured target
    /// until then).
    pub fn part_target_ms(&self) -> u32 {
        match (self.settings.advertised_part_target_ms, self.part_target_us) {
            (Some(ms), _) => ms,
            (None, Some(us)) => (us as u64).div_ceil(1000) as u32,
            (None, None) => self.settings.part_target_ms,
        }
    }

    /// The configs of the tracks being packaged (empty before the start).
    pub fn track_configs(&self) -> Vec<&TrackConfig> {
        self.tracks.iter().map(|t| &t.config).collect()
    }

    /// The multivariant entry for what was packaged so far: codecs, size, bit rates.
    pub fn variant(&self, uri: String) -> Option<crate::playlist::multivariant::Variant> {
        if self.tracks.is_empty() {
            return None;
        }
        let stats = &self.stats;
        let average = (u128::from(stats.segments_bytes) * 8_000_000)
            .checked_div(u128::from(stats.segments_us))
            .map(|bps| u64::try_from(bps).unwrap_or(u64::MAX));
        let video = self.tracks.iter().find_map(|t| match &t.config {
            TrackConfig::Video(v) => Some(v),
            TrackConfig::Audio(_) => None,
        });
        let measured_fps = (stats.video_frames as f64 * 1e6 / stats.video_us as f64).round();
        Some(crate::playlist::multivariant::Variant {
            uri,
            bandwidth: stats.peak_segment_bps.max(average.unwrap_or(0)),
            average_bandwidth: average,
            codecs: self
                .tracks
                .iter()
                .map(|t| t.config.codec_string().to_string())
                .collect(),
            resolution: video.map(|v| (v.width, v.height)),
            frame_rate: video.and_then(|v| v.frame_rate).or_else(|| {
                (stats.video_us > 0 && measured_fps.is_finite()).then_some(measured_fps)
            }),
        })
    }

    /// The next output; call until `None` after each `push`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Feeds one input. `now_unix_ms` is the wall clock at ingest (program date-time).
    pub fn push(&mut self, input: Input, now_unix_ms: i64) -> Result<(), PackagerError> {
        if self.finished {
            return Ok(());
        }
        match input {
            Input::Config(config) => self.push_config(config),
            Input::Frame(frame) => {
                self.stats.frames_in += 1;
                if self.started {
                    self.push_running(frame, now_unix_ms)
                } else {
                    self.push_startup(frame, now_unix_ms)
                }
            }
            Input::Discontinuity => {
                if self.started {
                    self.discontinuity()?;
                    self.need_keyframe = true;
                }
                Ok(())
            }
        }
    }

    /// Closes the open part and segment: the stream ended.
    pub fn finish(&mut self) -> Result<(), PackagerError> {
        if self.started && !self.finished {
            self.close_epoch()?;
        }
        self.finished = true;
        Ok(())
    }

    fn push_config(&mut self, config: TrackConfig) -> Result<(), PackagerError> {
        let slot = match config.kind() {
            TrackKind::Video => &mut self.video_config,
            TrackKind::Audio => &mut self.audio_config,
        };
        if slot.as_ref() == Some(&config) {
            return Ok(());
        }
        *slot = Some(config.clone());
        if !self.started {
            return Ok(());
        }
        let same_clock = self.tracks.iter().any(|t| {
            t.config.kind() == config.kind() && t.config.timescale() == config.timescale()
        });
        if !same_clock {
            // A new track, or a new audio clock: start again with the tracks there are.
            return self.restart();
        }
        // A new decoder configuration needs a new init segment, from a new segment on,
        // starting at a keyframe (a player resets its decoder on a new init).
        self.close_epoch()?;
        if let Some(track) = self
            .tracks
            .iter_mut()
            .find(|t| t.config.kind() == config.kind())
        {
            track.config = config;
        }
        self.init_dirty = true;
        self.discontinuity_pending = true;
        self.need_keyframe = self.has_video();
        Ok(())
    }

    fn has_video(&self) -> bool {
        self.tracks
            .iter()
            .any(|t| t.config.kind() == TrackKind::Video)
    }

    /// Ends the epoch and goes back to startup, to begin again with another set of
    /// tracks (one joined late, or changed its clock). The timeline continues.
    fn restart(&mut self) -> Result<(), PackagerError> {
        self.discontinuity()?;
        for t in &mut self.tracks {
            self.stats.frames_dropped += t.queue.len() as u64;
            t.queue.clear();
            t.queued_bytes = 0;
        }
        self.tracks.clear();
        self.started = false;
        self.init_dirty = true;
        Ok(())
    }

    fn push_startup(&mut self, frame: Frame, now_unix_ms: i64) -> Result<(), PackagerError> {
        let has_config = match frame.track {
            TrackKind::Video => self.video_config.is_some(),
            TrackKind::Audio => self.audio_config.is_some(),
        };
        if !has_config {
            self.stats.frames_dropped += 1;
            return Ok(());
        }
        // Bounded in frames and in bytes; the oldest go first.
        while self.startup.len() >= MAX_BUFFERED_FRAMES
            || (!self.startup.is_empty()
                && self.startup_bytes + frame.data.len() > MAX_QUEUED_BYTES)
        {
            if let Some((old, _)) = self.startup.pop_front() {
                self.startup_bytes -= old.data.len();
            }
            self.stats.frames_dropped += 1;
        }
        self.startup_bytes += frame.data.len();
        self.startup.push_back((frame, now_unix_ms));

        // Video starts at a keyframe with one more frame after it, to see the frame rate.
        let has_key = self
            .startup
            .iter()
            .filter(|(f, _)| f.track == TrackKind::Video)
            .skip_while(|(f, _)| !f.keyframe)
            .nth(1)
            .is_some();
        let has_audio = self
            .startup
            .iter()
            .any(|(f, _)| f.track == TrackKind::Audio);
        let ready = (!self.settings.expect_video || has_key)
            && (!self.settings.expect_audio || has_audio)
            && (has_key || has_audio);
        let times = self
            .startup
            .iter()
            .map(|(f, _)| us_of(f, &self.video_config, &self.audio_config));
        let (min, max) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let waited = max.saturating_sub(min) >= STARTUP_WAIT_US;
        if !(ready || waited) || !(has_key || has_audio) {
            return Ok(());
        }
        self.start(has_key, has_audio);
        let buffered: Vec<(Frame, i64)> = self.startup.drain(..).collect();
        self.startup_bytes = 0;
        for (frame, arrived_unix_ms) in buffered {
            self.push_running(frame, arrived_unix_ms)?;
        }
        Ok(())
    }

    fn start(&mut self, video: bool, audio: bool) {
        self.tracks.clear();
        let mut configs = Vec::new();
        if video {
            configs.extend(self.video_config.clone());
        }
        if audio {
            configs.extend(self.audio_config.clone());
        }
        // Track ids follow the init segment's order: 1, 2, ...
        for (id, config) in (1..).zip(configs) {
            self.tracks.push(Track {
                id,
                timescale: i64::from(config.timescale().max(1)),
                config,
                last_in_dts: None,
                last_out_dts: None,
                floor_out_dts: 0,
                last_duration: 0,
                offset: 0,
                queue: VecDeque::new(),
                queued_bytes: 0,
            });
        }
        self.drive = 0;
        self.started = true;
        if self.part_target_us.is_none() {
            let fitted = self.fitted_part_target_us();
            self.part_target_us = Some(match self.settings.advertised_part_target_ms {
                Some(ms) => fitted.min(i64::from(ms) * 1000),
                None => fitted,
            });
        }
        self.need_keyframe = video;
        self.init_dirty = true;
        if let Some(Anchor::ResumeAtUs(us)) = self.reanchor {
            for t in &mut self.tracks {
                t.floor_out_dts = t.ticks_at_or_after_us(us);
            }
        }
    }

    /// The configured part target as a whole number of drive frames, plus jitter.
    fn fitted_part_target_us(&self) -> i64 {
        let configured = i64::from(self.settings.part_target_ms) * 1000;
        let frame_us = match self.tracks.first().map(|t| &t.config) {
            Some(TrackConfig::Audio(a)) => {
                i64::from(a.samples_per_frame) * 1_000_000 / i64::from(a.sample_rate.max(1))
            }
            Some(TrackConfig::Video(v)) => {
                let times: Vec<i64> = self
                    .startup
                    .iter()
                    .filter(|(f, _)| f.track == TrackKind::Video)
                    .map(|(f, _)| f.dts)
                    .collect();
                let mut steps: Vec<i64> = times
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .filter(|d| *d > 0)
                    .collect();
                steps.sort_unstable();
                match steps.get(steps.len() / 2) {
                    Some(ticks) => snap_to_common_rate(
                        ticks * 1_000_000 / i64::from(crate::frame::VIDEO_TIMESCALE),
                    ),
                    None => v.frame_rate.map(|fps| (1e6 / fps) as i64).unwrap_or(33_333),
                }
            }
            None => configured,
        }
        .clamp(1_000, 10_000_000);
        let frames = ((configured + PART_JITTER_US) / frame_us).max(1);
        frames * frame_us + PART_JITTER_US
    }

    /// Takes one frame once packaging has started: checks its time, maps it to the
    /// output timeline, ends the open part where needed and queues the frame.
    fn push_running(&mut self, frame: Frame, now_unix_ms: i64) -> Result<(), PackagerError> {
        let Some(ti) = self
            .tracks
            .iter()
            .position(|t| t.config.kind() == frame.track)
        else {
            return self.join_track(frame, now_unix_ms);
        };
        let is_drive = ti == self.drive;
        if is_drive && !self.take_drive_input(&frame)? {
            return self.drop_frame();
        }
        if !self.anchor_timeline(ti, &frame) {
            return self.drop_frame();
        }
        let Some(out_dts) = self.output_dts(ti, &frame) else {
            return self.drop_frame();
        };
        self.tracks[ti].last_in_dts = Some(frame.dts);
        let frame = Frame {
            dts: out_dts,
            ..frame
        };
        if !is_drive {
            return self.queue_follower(ti, frame);
        }
        if frame.keyframe {
            self.need_keyframe = false;
        }
        let next_start = self.end_part_before(&frame)?;
        if self.part.is_none() {
            self.open_part(next_start, now_unix_ms)?;
        }
        self.queue_drive(frame)
    }

    /// Counts a frame that is not packaged.
    fn drop_frame(&mut self) -> Result<(), PackagerError> {
        self.stats.frames_dropped += 1;
        Ok(())
    }

    /// A frame of a track that was not there at the start: the track joins at its first
    /// keyframe (any audio frame), by starting again with it; until then it is dropped.
    fn join_track(&mut self, frame: Frame, now_unix_ms: i64) -> Result<(), PackagerError> {
        let joins = frame.track == TrackKind::Audio || frame.keyframe;
        if joins && !self.tracks.is_empty() {
            self.restart()?;
            return self.push_startup(frame, now_unix_ms);
        }
        self.drop_frame()
    }

    /// Whether a drive frame is taken. Video waits for a keyframe after a publisher
    /// change. Jumps in the drive track's input timeline end the epoch, and the next one
    /// starts at a keyframe. A follower's jumps do not: its frames are held to the
    /// drive's position by `output_dts`.
    fn take_drive_input(&mut self, frame: &Frame) -> Result<bool, PackagerError> {
        let is_video = frame.track == TrackKind::Video;
        if is_video && self.need_keyframe && !frame.keyframe {
            return Ok(false);
        }
        let drive = &self.tracks[self.drive];
        if let Some(last) = drive.last_in_dts {
            if frame.dts < last || drive.to_us(frame.dts - last) > MAX_DRIVE_GAP_US {
                self.discontinuity()?;
                if is_video && !frame.keyframe {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// After a discontinuity the drive track's first frame fixes where the new frames
    /// go; followers wait for it (the few that come first are dropped: `false`). At the
    /// very start encoder times are kept, so any track's first frame will do.
    fn anchor_timeline(&mut self, ti: usize, frame: &Frame) -> bool {
        let Some(anchor) = self.reanchor else {
            return true;
        };
        if ti != self.drive && anchor != Anchor::KeepInputTimes {
            return false;
        }
        let frame_us = self.tracks[ti].to_us(frame.dts);
        let offset_us = match anchor {
            Anchor::KeepInputTimes => (-frame_us).max(0),
            Anchor::ResumeAtUs(resume_us) => resume_us - frame_us,
        };
        for t in &mut self.tracks {
            t.offset = t.ticks_of_us(offset_us);
        }
        // Rounding to ticks must not put the drive's first frame before the floor.
        let drive = &mut self.tracks[ti];
        drive.offset = drive.offset.max(drive.floor_out_dts - frame.dts);
        self.reanchor = None;
        true
    }

    /// The frame's output dts, or `None` when it must be dropped: it would overlap what
    /// its track already has (or fall before zero), or it is a follower far from the
    /// drive's position, so from another timeline (late frames from before a jump) or
    /// running ahead of a stalled drive track.
    fn output_dts(&self, ti: usize, frame: &Frame) -> Option<i64> {
        let track = &self.tracks[ti];
        let out_dts = frame.dts + track.offset;
        let out_us = track.to_us(out_dts);
        let overlaps = out_dts < track.last_out_dts.unwrap_or(track.floor_out_dts) || out_dts < 0;
        let drive = &self.tracks[self.drive];
        let skewed = ti != self.drive
            && drive
                .last_out_dts
                .is_some_and(|d| (out_us - drive.to_us(d)).abs() > MAX_FOLLOWER_SKEW_US);
        (!overlaps && !skewed).then_some(out_dts)
    }

    /// A follower frame (output times) waits for the part that will carry it; past
    /// `MAX_BUFFERED_FRAMES` the oldest waiting one is dropped.
    fn queue_follower(&mut self, ti: usize, frame: Frame) -> Result<(), PackagerError> {
        let track = &mut self.tracks[ti];
        track.advance_to(frame.dts);
        if track.queue.len() >= MAX_BUFFERED_FRAMES {
            track.dequeue();
            self.stats.frames_dropped += 1;
        }
        track.enqueue(frame);
        self.check_queued_bytes()
    }

    /// A drive frame (output times) goes into the open part.
    fn queue_drive(&mut self, frame: Frame) -> Result<(), PackagerError> {
        let track = &mut self.tracks[self.drive];
        track.advance_to(frame.dts);
        if track.config.kind() == TrackKind::Video {
            self.stats.video_frames += 1;
        }
        track.enqueue(frame);
        self.check_queued_bytes()
    }

    /// Ends the open part before a drive frame (output times) when it has to: the frame
    /// would take it past PART-TARGET, or it is a keyframe that may start a part or a
    /// segment. Returns where the next part starts.
    fn end_part_before(&mut self, frame: &Frame) -> Result<i64, PackagerError> {
        let (Some(part), Some(segment)) = (self.part, self.segment) else {
            return Ok(frame.dts);
        };
        let drive = &self.tracks[self.drive];
        let elapsed = frame.dts - part.start;
        let part_target = drive.ticks_of_us(self.part_target_us.unwrap_or(0));
        if elapsed + drive.last_duration > part_target {
            return self.end_part_at_target(part, part_target, frame);
        }
        let drive_is_video = drive.config.kind() == TrackKind::Video;
        if drive_is_video && frame.keyframe && elapsed > 0 {
            self.end_part_at_keyframe(segment, elapsed, part_target, frame.dts)?;
        }
        Ok(frame.dts)
    }

    /// The next drive frame would take the part past PART-TARGET: it ends here. A gap
    /// (dropped frames) never makes a part longer than PART-TARGET: the part ends at the
    /// target, and the next one starts with the gap. (Unless the part's frames already
    /// reach past the target: a gap longer than a part cannot be split.) Returns where
    /// the next part starts.
    fn end_part_at_target(
        &mut self,
        part: OpenPart,
        part_target: i64,
        frame: &Frame,
    ) -> Result<i64, PackagerError> {
        let limit = part.start + part_target;
        let last = self.tracks[self.drive].last_out_dts.unwrap_or(part.start);
        let boundary = if last < limit {
            frame.dts.min(limit)
        } else {
            frame.dts
        };
        self.close_part(
            boundary,
            frame.keyframe && boundary == frame.dts,
            false,
            false,
        )?;
        Ok(boundary)
    }

    /// A keyframe starts an independent part when the part before it is long enough, or
    /// ends the segment when that one is, so a short part is only ever the last of its
    /// segment. Otherwise it stays inside its part.
    fn end_part_at_keyframe(
        &mut self,
        segment: OpenSegment,
        elapsed: i64,
        part_target: i64,
        out_dts: i64,
    ) -> Result<(), PackagerError> {
        let half_segment =
            self.tracks[self.drive].ticks_of_us(i64::from(self.settings.segment_target_ms) * 500);
        if elapsed * 100 >= part_target * MIN_PART_SHARE_PCT {
            self.close_part(out_dts, true, false, false)?;
        } else if out_dts - segment.start >= half_segment {
            self.close_part(out_dts, true, false, true)?;
        }
        Ok(())
    }

    /// Media waiting for its part is bounded in bytes: a publisher whose timestamps stop
    /// advancing (or crawl) never ends a part. Past `MAX_QUEUED_BYTES` what is queued is
    /// written out, the epoch ends, and the publisher is refused with the reason.
    fn check_queued_bytes(&mut self) -> Result<(), PackagerError> {
        let bytes: usize = self.tracks.iter().map(|t| t.queued_bytes).sum();
        if bytes <= MAX_QUEUED_BYTES {
            return Ok(());
        }
        self.discontinuity()?;
        Err(PackagerError::Stalled { bytes })
    }

    fn open_part(&mut self, start: i64, now_unix_ms: i64) -> Result<(), PackagerError> {
        if self.segment.is_none() {
            if self.init_dirty {
                let tracks: Vec<TrackConfig> =
                    self.tracks.iter().map(|t| t.config.clone()).collect();
                let data = Bytes::from(cmaf::init_segment(&tracks)?);
                self.outputs.push_back(Output::Init(InitSegment {
                    index: self.next_init_index,
                    data,
                    tracks,
                }));
                self.next_init_index += 1;
                self.init_dirty = false;
            }
            let start_us = self.tracks[self.drive].to_us(start);
            let discontinuity = std::mem::take(&mut self.discontinuity_pending);
            if discontinuity || self.pdt_anchor.is_none() {
                // Dated by the wall clock, but never before the segment before it ends
                // (an encoder that sent faster than real time before it reconnected):
                // dates that overlap tell a player two segments play at once.
                let at_ms = self
                    .dated_until_ms
                    .map_or(now_unix_ms, |until| now_unix_ms.max(until));
                self.pdt_anchor = Some((at_ms, start_us));
            }
            let (anchor_ms, anchor_us) = self.pdt_anchor.unwrap_or((now_unix_ms, start_us));
            let date_ms = anchor_ms + (start_us - anchor_us) / 1000;
            self.outputs.push_back(Output::SegmentStart(SegmentStart {
                msn: self.next_msn,
                program_date_time_ms: date_ms,
                discontinuity,
                init_index: self.next_init_index.saturating_sub(1),
            }));
            self.segment = Some(OpenSegment {
                msn: self.next_msn,
                start,
                parts: 0,
                bytes: 0,
                date_ms,
            });
        }
        self.part = Some(OpenPart { start });
        Ok(())
    }

    /// Writes the open part, ending at `boundary` (drive ticks), then decides whether the
    /// segment ends there too.
    /// `take_all` puts every queued follower frame in this part (the epoch ends here);
    /// `end_segment` ends the segment with it whatever its length.
    fn close_part(
        &mut self,
        boundary: i64,
        next_is_key: bool,
        take_all: bool,
        end_segment: bool,
    ) -> Result<(), PackagerError> {
        let (Some(part), Some(mut segment)) = (self.part.take(), self.segment) else {
            return Ok(());
        };
        let taken = self.take_part_frames(boundary, take_all);
        let runs: Vec<TrackRun<'_>> = taken.iter().map(PartFrames::run).collect();
        let independent = taken
            .get(self.drive)
            .and_then(|t| t.frames.first())
            .is_some_and(|f| f.keyframe);
        self.fragment_sequence = self.fragment_sequence.wrapping_add(1);
        let mut data = Vec::new();
        cmaf::write_fragment(self.fragment_sequence, &runs, &mut data)?;
        let drive = &self.tracks[self.drive];
        let duration_us = (drive.to_us(boundary) - drive.to_us(part.start)).max(0) as u64;
        self.stats.bytes_out += data.len() as u64;
        if drive.config.kind() == TrackKind::Video {
            self.stats.video_us += duration_us;
        }
        segment.bytes += data.len() as u64;
        self.outputs.push_back(Output::Part(Part {
            msn: segment.msn,
            index: segment.parts,
            duration_us,
            independent,
            data: Bytes::from(data),
        }));
        segment.parts += 1;
        self.segment = Some(segment);

        if end_segment || self.segment_full_at(boundary, segment.start, next_is_key) {
            self.close_segment(boundary);
        }
        Ok(())
    }

    /// Takes each track's queued frames for the part ending at `boundary` (drive
    /// ticks): all of the drive's, and the followers' up to the same time (or all of
    /// them with `take_all`).
    fn take_part_frames(&mut self, boundary: i64, take_all: bool) -> Vec<PartFrames> {
        let boundary_us = self.tracks[self.drive].to_us(boundary);
        let mut taken = Vec::with_capacity(self.tracks.len());
        for (i, track) in self.tracks.iter_mut().enumerate() {
            let mut frames = Vec::new();
            while let Some(f) = track.queue.front() {
                if i != self.drive && !take_all && track.to_us(f.dts) >= boundary_us {
                    break;
                }
                frames.extend(track.dequeue());
            }
            // Duration of the last frame: up to the boundary for the drive track, up to
            // the next queued frame, else the nominal frame duration.
            let last_end = if i == self.drive {
                boundary
            } else if let Some(next) = track.queue.front() {
                next.dts
            } else {
                frames
                    .last()
                    .map(|f| f.dts + track.nominal_duration())
                    .unwrap_or(0)
            };
            taken.push(PartFrames {
                track_id: track.id,
                frames,
                last_end,
            });
        }
        taken
    }

    /// Whether a segment that started at `segment_start` is full at a part boundary:
    /// on a keyframe once it reached the segment target, or, whatever the GOP, when the
    /// next part could take it past TARGETDURATION.
    fn segment_full_at(&self, boundary: i64, segment_start: i64, next_is_key: bool) -> bool {
        let seg_ticks = boundary - segment_start;
        let drive = &self.tracks[self.drive];
        let segment_target = drive.ticks_of_us(i64::from(self.settings.segment_target_ms) * 1000);
        let part_target = drive.ticks_of_us(self.part_target_us.unwrap_or(0));
        let max_segment =
            drive.ticks_of_us(i64::from(self.settings.target_duration_s()) * 1_000_000);
        (next_is_key && seg_ticks >= segment_target) || seg_ticks + part_target > max_segment
    }

    fn close_segment(&mut self, boundary: i64) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        let drive = &self.tracks[self.drive];
        let duration_us = (drive.to_us(boundary) - drive.to_us(segment.start)).max(0) as u64;
        self.stats.segments_bytes += segment.bytes;
        self.stats.segments_us += duration_us;
        if let Some(bps) = (segment.bytes.saturating_mul(8_000_000)).checked_div(duration_us) {
            self.stats.peak_segment_bps = self.stats.peak_segment_bps.max(bps);
        }
        self.dated_until_ms =
            Some(segment.date_ms + i64::try_from(duration_us.div_ceil(1000)).unwrap_or(0));
        self.outputs.push_back(Output::SegmentEnd(SegmentEnd {
            msn: segment.msn,
            duration_us,
            parts: segment.parts,
            bytes: segment.bytes,
        }));
        self.next_msn += 1;
    }

    /// Ends the open part and segment where the media ends.
    fn close_epoch(&mut self) -> Result<(), PackagerError> {
        let drive = &self.tracks[self.drive];
        let part_end = self
            .part
            .map(|p| p.start + drive.ticks_of_us(self.part_target_us.unwrap_or(0)));
        // The last frame lasts as long as the one before it, within the part target.
        let end = drive.last_out_dts.map(|d| {
            let estimate = d + drive.nominal_duration().max(0);
            match part_end {
                Some(limit) if d < limit => estimate.min(limit),
                _ => estimate,
            }
        });
        if let Some(end) = end {
            if self.part.is_some() {
                self.close_part(end, false, true, true)?;
            }
            self.close_segment(end);
        }
        Ok(())
    }

    /// The timeline breaks here: close what is open; the next drive frame continues the
    /// output timeline after the end of everything written so far, from a keyframe.
    fn discontinuity(&mut self) -> Result<(), PackagerError> {
        self.close_epoch()?;
        let ends = self.tracks.iter().filter_map(|t| {
            t.last_out_dts
                .map(|d| t.to_us(d + t.nominal_duration().max(0)))
        });
        // Never back: two discontinuities in a row resume where the first one did.
        self.timeline_end_us = ends.fold(self.timeline_end_us, i64::max);
        for t in &mut self.tracks {
            t.last_in_dts = None;
            t.last_out_dts = None;
            t.floor_out_dts = t.ticks_at_or_after_us(self.timeline_end_us);
        }
        self.reanchor = Some(Anchor::ResumeAtUs(self.timeline_end_us));
        self.discontinuity_pending = true;
        self.need_keyframe = self.has_video() || self.video_config.is_some();
        self.stats.discontinuities += 1;
        Ok(())
    }
}

/// Frame rates encoders use; a measured frame duration within RTMP's millisecond
/// rounding of one of them is taken to be it.
const COMMON_FRAME_RATES: [f64; 8] = [
    24_000.0 / 1001.0,
    24.0,
    25.0,
    30_000.0 / 1001.0,
    30.0,
    50.0,
    60_000.0 / 1001.0,
    60.0,
];

fn snap_to_common_rate(frame_us: i64) -> i64 {
    COMMON_FRAME_RATES
        .iter()
        .map(|fps| 1e6 / fps)
        .filter(|std_us| (std_us - frame_us as f64).abs() <= 1_100.0)
        .min_by(|a, b| {
            (a - frame_us as f64)
                .abs()
                .total_cmp(&(b - frame_us as f64).abs())
        })
        .map(|us| us.round() as i64)
        .unwrap_or(frame_us)
}

fn us_of(frame: &Frame, video: &Option<TrackConfig>, audio: &Option<TrackConfig>) -> i64 {
    let config = match frame.track {
        TrackKind::Video => video,
        TrackKind::Audio => audio,
    };
    let timescale = config.as_ref().map(|c| c.timescale()).unwrap_or(1).max(1);
    (i128::from(frame.dts) * 1_000_000 / i128::from(timescale)) as i64
}

#[cfg(test)]
mod tests;
