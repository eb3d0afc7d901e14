//! MPEG-TS as SRT carries it (and as a `.ts` file stores it), turned into packager
//! inputs: H.264 or H.265 video and AAC audio in ADTS.
//!
//! ```text
//! bytes (any chunking) --sync: whole 188-byte packets--> mpeg2ts-reader Demultiplex
//!   (PAT, PMT, continuity counters, PES headers) --EsCollector--> one PES at a time
//!   --video: Annex B -> parameter sets + length-prefixed NAL units
//!   --audio: ADTS headers -> AudioSpecificConfig + raw AAC frames
//!   --> Input::Config / Input::Frame
//! ```
//!
//! Nothing here fails on bad input: bytes that are not packets are skipped until the next
//! sync byte, a continuity-counter gap drops the PES it broke, a PES without a timestamp
//! or a frame before its parameter sets is dropped; every such loss is counted in
//! `TsStats`. Timestamps are 33-bit at 90 kHz; one unwrapper shared by the tracks carries
//! them across the wrap (every 26.5 hours) so audio and video stay on one timeline.

use bytes::Bytes;
use mpeg2ts_reader::demultiplex::{
    self, DemuxContext, FilterChangeset, FilterRequest, NullPacketFilter, PatPacketFilter,
    PmtPacketFilter,
};
use mpeg2ts_reader::pes::{self, ElementaryStreamConsumer, PesContents, PesHeader, PtsDts};
use mpeg2ts_reader::{packet_filter_switch, psi, StreamType};

use crate::codec::{h264, hevc};
use crate::frame::{AudioConfig, Frame, TrackConfig, TrackKind, VideoCodec, VideoConfig};
use crate::packager::Input;

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// A PES larger than this is dropped (a keyframe of a 4K stream is well under it).
const MAX_PES: usize = 16 << 20;
/// AAC frames are placed by counting samples; the PES timestamp wins only when the two
/// disagree by more than this.
const AUDIO_RESYNC_MS: i64 = 40;
/// The 90 kHz clock of PTS/DTS.
const CLOCK: i64 = 90_000;

/// What the demuxer saw and what it had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TsStats {
    /// Whole 188-byte packets handed to the demultiplexer.
    pub packets: u64,
    /// Bytes skipped while looking for a sync byte (garbage, partial packets).
    pub skipped_bytes: u64,
    /// Gaps in a stream's continuity counter (lost packets); the PES is dropped.
    pub continuity_errors: u64,
    /// PES packets dropped: no timestamp, too large, or unusable contents.
    pub dropped_pes: u64,
    /// Video frames dropped because no parameter sets had been seen yet.
    pub frames_before_config: u64,
    /// Streams listed in the PMT that are not packaged (other codecs, second tracks).
    pub ignored_streams: u64,
    /// Media frames produced.
    pub frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EsKind {
    H264,
    H265,
    Aac,
}

/// One complete PES packet of a stream Sluice packages.
struct Pes {
    kind: EsKind,
    pts: Option<u64>,
    dts: Option<u64>,
    data: Vec<u8>,
}

packet_filter_switch! {
    TsFilter<TsContext> {
        Pes: pes::PesPacketFilter<TsContext, EsCollector>,
        Pat: PatPacketFilter<TsContext>,
        Pmt: PmtPacketFilter<TsContext>,
        Null: NullPacketFilter<TsContext>,
    }
}

/// The demultiplexer's context: it chooses a filter for each stream the PMT announces
/// and collects the PES packets the filters complete.
pub struct TsContext {
    changeset: FilterChangeset<TsFilter>,
    done: Vec<Pes>,
    /// The PES each packaged stream is filling: video, audio.
    open: [Option<Pes>; 2],
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    continuity_errors: u64,
    dropped_pes: u64,
    ignored_streams: u64,
}

impl DemuxContext for TsContext {
    type F = TsFilter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<TsFilter> {
        &mut self.changeset
    }

    fn construct(&mut self, req: FilterRequest<'_, '_>) -> TsFilter {
        match req {
            FilterRequest::ByPid(psi::pat::PAT_PID) => TsFilter::Pat(PatPacketFilter::default()),
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => {
                TsFilter::Null(NullPacketFilter::default())
            }
            FilterRequest::Pmt {
                pid,
                program_number,
            } => TsFilter::Pmt(PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream {
                stream_type,
                stream_info,
                ..
            } => {
                let pid = u16::from(stream_info.elementary_pid());
                let kind = match stream_type {
                    StreamType::H264 => Some(EsKind::H264),
                    StreamType::H265 => Some(EsKind::H265),
                    StreamType::ADTS => Some(EsKind::Aac),
                    _ => None,
                };
                let slot = match kind {
                    Some(EsKind::Aac) => &mut self.audio_pid,
                    Some(_) => &mut self.video_pid,
                    None => {
                        self.ignored_streams += 1;
                        return TsFilter::Null(NullPacketFilter::default());
                    }
                };
                // The first stream of each kind is packaged; a PMT repeated with the
                // same streams keeps it.
                if slot.is_some_and(|p| p != pid) {
                    self.ignored_streams += 1;
                    return TsFilter::Null(NullPacketFilter::default());
                }
                *slot = Some(pid);
                let kind = kind.unwrap_or(EsKind::Aac);
                let slot = usize::from(kind == EsKind::Aac);
                TsFilter::Pes(pes::PesPacketFilter::new(EsCollector { kind, slot }))
            }
        }
    }
}

/// Gathers one stream's PES packets, whole, into the context (which holds the open
/// one, so that the end of the input can complete it).
pub struct EsCollector {
    kind: EsKind,
    slot: usize,
}

impl TsContext {
    fn finish(&mut self, slot: usize) {
        if let Some(pes) = self.open[slot].take() {
            self.done.push(pes);
        }
    }
}

impl ElementaryStreamConsumer<TsContext> for EsCollector {
    fn start_stream(&mut self, _ctx: &mut TsContext) {}

    fn begin_packet(&mut self, ctx: &mut TsContext, header: PesHeader<'_>) {
        ctx.finish(self.slot);
        let PesContents::Parsed(Some(parsed)) = header.contents() else {
            ctx.dropped_pes += 1;
            return;
        };
        let (pts, dts) = match parsed.pts_dts() {
            Ok(PtsDts::PtsOnly(Ok(pts))) => (Some(pts.value()), None),
            Ok(PtsDts::Both {
                pts: Ok(pts),
                dts: Ok(dts),
            }) => (Some(pts.value()), Some(dts.value())),
            _ => (None, None),
        };
        ctx.open[self.slot] = Some(Pes {
            kind: self.kind,
            pts,
            dts,
            data: parsed.payload().to_vec(),
        });
    }

    fn continue_packet(&mut self, ctx: &mut TsContext, data: &[u8]) {
        if let Some(pes) = ctx.open[self.slot].as_mut() {
            if pes.data.len() + data.len() > MAX_PES {
                ctx.open[self.slot] = None;
                ctx.dropped_pes += 1;
            } else {
                pes.data.extend_from_slice(data);
            }
        }
    }

    fn end_packet(&mut self, ctx: &mut TsContext) {
        ctx.finish(self.slot);
    }

    fn continuity_error(&mut self, ctx: &mut TsContext) {
        ctx.continuity_errors += 1;
        if ctx.open[self.slot].take().is_some() {
            ctx.dropped_pes += 1;
        }
    }
}

/// Extends 33-bit 90 kHz timestamps across their wrap: a step of more than half the
/// range is read as a wrap, not a jump.
#[derive(Debug, Default, Clone)]
struct Unwrap33 {
    last: Option<i64>,
}

impl Unwrap33 {
    const RANGE: i64 = 1 << 33;

    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw as i64) & (Self::RANGE - 1);
        let Some(last) = self.last else {
            self.last = Some(raw);
            return raw;
        };
        let epoch = last.div_euclid(Self::RANGE);
        let best = [epoch - 1, epoch, epoch + 1]
            .map(|e| e * Self::RANGE + raw)
            .into_iter()
            .min_by_key(|c| (c - last).abs())
            .unwrap_or(raw);
        self.last = Some(best);
        best
    }

    /// `a - b` for two raw 33-bit values, taken the short way round.
    fn diff(a: u64, b: u64) -> i64 {
        let d = (a as i64 - b as i64).rem_euclid(Self::RANGE);
        if d >= Self::RANGE / 2 {
            d - Self::RANGE
        } else {
            d
        }
    }
}

#[derive(Debug, Default)]
struct VideoEs {
    vps: Option<Vec<u8>>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    config: Option<VideoConfig>,
}

#[derive(Debug, Default)]
struct AudioEs {
    asc: Option<[u8; 2]>,
    config: Option<AudioConfig>,
    next_dts: Option<i64>,
}

/// A muxer may send one track well behind the other (ffmpeg's packs AAC into PES
/// packets up to 0.7 s late). The packager cuts parts as the video arrives, so the
/// demuxer hands frames on in time order across tracks: a frame waits until the other
/// track has reached its time, or until it is this far behind the newest frame.
const MAX_INTERLEAVE_WAIT_US: i64 = 1_000_000;
/// Frames a track may hold back while waiting for the other (a track whose clock went
/// back never catches up in time): past this, the oldest goes on regardless.
const MAX_INTERLEAVE_QUEUE: usize = 600;

/// Puts the two tracks' inputs back in time order.
#[derive(Debug, Default)]
struct Interleaver {
    /// Video, audio: inputs waiting, each frame with its time in µs.
    queues: [std::collections::VecDeque<(Input, i64)>; 2],
    /// The newest frame time pushed on each track.
    newest: [Option<i64>; 2],
}

impl Interleaver {
    /// Queues one input of track `slot` (video 0, audio 1) at `at` µs; a config goes
    /// with `i64::MIN` (it passes as soon as the frames before it have).
    fn queue(&mut self, slot: usize, input: Input, at: i64) {
        if at != i64::MIN {
            self.newest[slot] = Some(self.newest[slot].map_or(at, |n| n.max(at)));
        }
        self.queues[slot].push_back((input, at));
    }

    /// Hands on what may go: `present` says which tracks the stream has.
    fn release(&mut self, present: [bool; 2], out: &mut Vec<Input>) {
        let newest = self.newest.iter().flatten().copied().max();
        loop {
            let heads = [0, 1].map(|i| self.queues[i].front().map(|(_, at)| *at));
            let pick = match heads {
                [Some(v), Some(a)] => usize::from(a < v),
                [Some(t), None] | [None, Some(t)] => {
                    let mine = usize::from(heads[0].is_none());
                    let other = 1 - mine;
                    let other_is_ahead = self.newest[other].is_some_and(|n| n >= t);
                    let stale = newest.is_some_and(|n| t < n - MAX_INTERLEAVE_WAIT_US)
                        || self.queues[mine].len() > MAX_INTERLEAVE_QUEUE;
                    if t == i64::MIN || !present[other] || other_is_ahead || stale {
                        mine
                    } else {
                        return;
                    }
                }
                [None, None] => return,
            };
            if let Some((input, _)) = self.queues[pick].pop_front() {
                out.push(input);
            }
        }
    }

    fn drain_all(&mut self, out: &mut Vec<Input>) {
        self.release([false, false], out);
    }
}

/// Turns an MPEG-TS byte stream into packager inputs.
pub struct TsDemuxer {
    ctx: TsContext,
    demux: demultiplex::Demultiplex<TsContext>,
    carry: Vec<u8>,
    clock: Unwrap33,
    video: VideoEs,
    audio: AudioEs,
    interleave: Interleaver,
    stats: TsStats,
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsDemuxer {
    pub fn new() -> Self {
        let mut ctx = TsContext {
            changeset: FilterChangeset::default(),
            done: Vec::new(),
            open: [None, None],
            video_pid: None,
            audio_pid: None,
            continuity_errors: 0,
            dropped_pes: 0,
            ignored_streams: 0,
        };
        let demux = demultiplex::Demultiplex::new(&mut ctx);
        Self {
            ctx,
            demux,
            carry: Vec::with_capacity(PACKET * 8),
            clock: Unwrap33::default(),
            video: VideoEs::default(),
            audio: AudioEs::default(),
            interleave: Interleaver::default(),
            stats: TsStats::default(),
        }
    }

    pub fn stats(&self) -> TsStats {
        TsStats {
            continuity_errors: self.ctx.continuity_errors,
            dropped_pes: self.stats.dropped_pes + self.ctx.dropped_pes,
            ignored_streams: self.ctx.ignored_streams,
            ..self.stats
        }
    }

    /// The packaged tracks the stream's PMT lists (video, audio), once one was read.
    pub fn tracks(&self) -> Option<(bool, bool)> {
        let (video, audio) = (self.ctx.video_pid.is_some(), self.ctx.audio_pid.is_some());
        (video || audio).then_some((video, audio))
    }

    /// Feeds bytes as they arrive (any chunking); returns the inputs they completed.
    /// A video PES completes when the next one starts, so a frame comes out one frame
    /// late.
    pub fn push(&mut self, data: &[u8]) -> Vec<Input> {
        self.carry.extend_from_slice(data);
        let buf = std::mem::take(&mut self.carry);
        let mut pos = 0;
        loop {
            while pos < buf.len() && buf[pos] != SYNC {
                pos += 1;
                self.stats.skipped_bytes += 1;
            }
            // A run of whole packets, each followed by a sync byte (or by the end of
            // what has arrived): a stray 0x47 inside garbage rarely passes both.
            let mut end = pos;
            while end + PACKET <= buf.len()
                && buf[end] == SYNC
                && buf.get(end + PACKET).is_none_or(|b| *b == SYNC)
            {
                end += PACKET;
            }
            if end > pos {
                self.stats.packets += ((end - pos) / PACKET) as u64;
                self.demux.push(&mut self.ctx, &buf[pos..end]);
                pos = end;
            }
            if pos + PACKET > buf.len() {
                break;
            }
            // A sync byte not followed by another after 188 bytes: not a packet start.
            pos += 1;
            self.stats.skipped_bytes += 1;
        }
        self.carry = buf[pos..].to_vec();
        self.drain()
    }

    /// The end of the input: the PES packets still open are complete.
    pub fn flush(&mut self) -> Vec<Input> {
        let mut out = self.push(&[]);
        self.stats.skipped_bytes += self.carry.len() as u64;
        self.carry.clear();
        self.ctx.finish(0);
        self.ctx.finish(1);
        out.extend(self.drain());
        self.interleave.drain_all(&mut out);
        out
    }

    fn drain(&mut self) -> Vec<Input> {
        for pes in std::mem::take(&mut self.ctx.done) {
            match pes.kind {
                EsKind::H264 | EsKind::H265 => self.video_pes(pes),
                EsKind::Aac => self.audio_pes(pes),
            }
        }
        let present = [self.ctx.video_pid.is_some(), self.ctx.audio_pid.is_some()];
        let mut out = Vec::new();
        self.interleave.release(present, &mut out);
        out
    }

    fn video_pes(&mut self, pes: Pes) {
        let Some(pts) = pes.pts else {
            self.stats.dropped_pes += 1;
            return;
        };
        let raw_dts = pes.dts.unwrap_or(pts);
        let h264 = pes.kind == EsKind::H264;
        let mut frame = Vec::with_capacity(pes.data.len() + 16);
        let mut keyframe = false;
        for nal in annexb_nal_units(&pes.data) {
            let Some(&first) = nal.first() else { continue };
            let (kind, param) = if h264 {
                let t = first & 0x1f;
                (t, matches!(t, 7 | 8 | 9 | 12))
            } else {
                let t = (first >> 1) & 0x3f;
                (t, matches!(t, 32..=35 | 38))
            };
            match (h264, kind) {
                (true, 7) | (false, 33) => self.video.sps = Some(nal.to_vec()),
                (true, 8) | (false, 34) => self.video.pps = Some(nal.to_vec()),
                (false, 32) => self.video.vps = Some(nal.to_vec()),
                _ => {}
            }
            if param {
                continue;
            }
            keyframe |= if h264 {
                kind == 5
            } else {
                (16..=21).contains(&kind)
            };
            frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            frame.extend_from_slice(nal);
        }
        self.update_video_config(h264);
        if frame.is_empty() {
            return;
        }
        let Some(config) = &self.video.config else {
            self.stats.frames_before_config += 1;
            return;
        };
        let wanted = if h264 {
            VideoCodec::H264
        } else {
            VideoCodec::H265
        };
        if config.codec != wanted {
            self.stats.frames_before_config += 1;
            return;
        }
        let dts = self.clock.unwrap(raw_dts);
        let cts = Unwrap33::diff(pts, raw_dts).clamp(0, i64::from(i32::MAX)) as i32;
        self.stats.frames += 1;
        let at = dts * 1_000_000 / CLOCK;
        self.interleave.queue(
            0,
            Input::Frame(Frame {
                track: TrackKind::Video,
                dts,
                cts,
                keyframe,
                data: Bytes::from(frame),
            }),
            at,
        );
    }

    /// A complete, new set of parameter sets becomes a new video config.
    fn update_video_config(&mut self, h264: bool) {
        let (Some(sps), Some(pps)) = (&self.video.sps, &self.video.pps) else {
            return;
        };
        let record = if h264 {
            h264::build_avcc_record(sps, pps)
        } else {
            let Some(vps) = &self.video.vps else { return };
            hevc::build_hvcc_record(vps, sps, pps)
        };
        let codec = if h264 {
            VideoCodec::H264
        } else {
            VideoCodec::H265
        };
        let Ok(record) = record else {
            // Unusable parameter sets: forget them and wait for the next ones.
            self.video.sps = None;
            self.stats.dropped_pes += 1;
            return;
        };
        if self
            .video
            .config
            .as_ref()
            .is_some_and(|c| c.codec == codec && c.record[..] == record[..])
        {
            return;
        }
        match VideoConfig::from_record(codec, Bytes::from(record)) {
            Ok(config) => {
                self.video.config = Some(config.clone());
                self.interleave
                    .queue(0, Input::Config(TrackConfig::Video(config)), i64::MIN);
            }
            Err(_) => {
                self.video.sps = None;
                self.stats.dropped_pes += 1;
            }
        }
    }

    fn audio_pes(&mut self, pes: Pes) {
        let Some(pts) = pes.pts else {
            self.stats.dropped_pes += 1;
            return;
        };
        let start = self.clock.unwrap(pts);
        let data = Bytes::from(pes.data);
        let mut pos = 0;
        let mut index = 0i64;
        while pos + 7 <= data.len() {
            let h = &data[pos..pos + 7];
            if h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
                // Not an ADTS header: the rest of this PES cannot be framed.
                self.stats.dropped_pes += 1;
                return;
            }
            let header_len = if h[1] & 0x01 == 1 { 7 } else { 9 };
            let profile = h[2] >> 6;
            let rate_index = (h[2] >> 2) & 0x0f;
            let channels = ((h[2] & 0x01) << 2) | (h[3] >> 6);
            let len = (usize::from(h[3] & 0x03) << 11)
                | (usize::from(h[4]) << 3)
                | usize::from(h[5] >> 5);
            let blocks = h[6] & 0x03;
            if len <= header_len || pos + len > data.len() || blocks != 0 {
                self.stats.dropped_pes += 1;
                return;
            }
            let asc = [
                ((profile + 1) << 3) | (rate_index >> 1),
                ((rate_index & 1) << 7) | (channels << 3),
            ];
            if self.audio.asc != Some(asc) {
                match AudioConfig::from_aac_config(Bytes::copy_from_slice(&asc)) {
                    Ok(config) => {
                        self.audio.asc = Some(asc);
                        self.audio.config = Some(config.clone());
                        self.audio.next_dts = None;
                        self.interleave.queue(
                            1,
                            Input::Config(TrackConfig::Audio(config)),
                            i64::MIN,
                        );
                    }
                    Err(_) => {
                        self.stats.dropped_pes += 1;
                        return;
                    }
                }
            }
            let Some(config) = &self.audio.config else {
                return;
            };
            let rate = i64::from(config.sample_rate);
            let spf = i64::from(config.samples_per_frame);
            let measured = start * rate / CLOCK + index * spf;
            let dts = match self.audio.next_dts {
                Some(expected) if (expected - measured).abs() <= AUDIO_RESYNC_MS * rate / 1000 => {
                    expected
                }
                _ => measured,
            };
            self.audio.next_dts = Some(dts + spf);
            self.stats.frames += 1;
            let frame = Frame {
                track: TrackKind::Audio,
                dts,
                cts: 0,
                keyframe: true,
                data: data.slice(pos + header_len..pos + len),
            };
            self.interleave
                .queue(1, Input::Frame(frame), dts * 1_000_000 / rate);
            pos += len;
            index += 1;
        }
    }
}

/// The NAL units of an Annex B byte stream (start codes `00 00 01` / `00 00 00 01`),
/// without their start codes; empty ones are left out.
pub fn annexb_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        // Trailing zeros belong to the next start code (`00 00 00 01`).
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(&data[start..end]);
        }
    }
    nals
}

#[cfg(test)]
mod tests;
