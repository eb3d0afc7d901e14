//! One generation's packaging loop: publishers' inputs -> Packager -> spool (memory and
//! disk) -> one wake-up for every waiting viewer request. It outlives a publisher that
//! drops (the generation waits for it to come back, with a discontinuity) and ends when
//! the replicated state says the generation ended (grace over, or stopped).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_cluster::command::Op;
use sluice_cluster::model::{DiscontinuityRun, GenerationState, MediaInfo, PlaylistParams};
use sluice_media::playlist::names::{self, ObjectName};
use sluice_media::playlist::{Discontinuity, GapTimes, MediaPlaylist, PlaylistSettings};
use sluice_media::{
    Input, Output, Packager, PackagerSettings, TrackConfig, TrackKind, PART_TARGET_MS_RANGE,
};
use tokio::sync::mpsc;

use super::recording::{piece_file, PlaylistWrite, Recorder};
use super::spool::{generation_dir, DiskWriter};
use super::{Attached, ChannelOrigin, Feed, Origins, RENDITION};
use crate::support::now_ms;

/// How often the loop looks at the replicated state of its generation.
const STATE_CHECK: Duration = Duration::from_millis(250);
/// How long an ended generation's loop still takes what its publisher sent before the
/// end (a publisher that goes on sending is cut after it).
const STOP_FLUSH: Duration = Duration::from_secs(1);
/// How many of its node's lease lengths a loop holds its output (its lease not renewed,
/// see `Loop::may_publish`) before it lets the generation go: the node is cut off, and
/// its publisher is better off reconnecting to a node that is not.
const HELD_LEASES: u32 = 3;

/// What a packager output leads to once the spool lock is released.
enum After {
    Write(String, Bytes),
    Report(u64),
    /// A segment joined the recording: its playlist is written after it.
    Recorded,
}

pub(super) struct Plan {
    pub(super) generation: u64,
    pub(super) first_msn: u64,
    pub(super) first_init_index: u32,
    pub(super) resumed: bool,
    /// The playlist's parameters: the channel's settings for a new generation, the
    /// generation's own (from the state) for a resumed one.
    pub(super) playlist: PlaylistParams,
    /// `playlist.part_target_ms` is what an earlier origin advertised: advertised
    /// again as it is, not fitted again.
    pub(super) part_target_kept: bool,
    /// Where the generation's timeline goes on after another origin's (a resumed
    /// generation).
    pub(super) resume_at_us: Option<i64>,
    /// How long, and from when, the other origin's segments are listed (as gaps).
    pub(super) gap_times: GapTimes,
    /// Where the other origin's dates end: the own segments are dated no earlier.
    pub(super) dated_until_ms: Option<i64>,
    /// The discontinuity run of the last segment another origin made (a resumed
    /// generation): listed again as gaps.
    pub(super) earlier: Option<Discontinuity>,
    /// The channel records: every segment is kept past the live window.
    pub(super) recording: bool,
}

struct Loop {
    origins: Arc<Origins>,
    origin: Arc<ChannelOrigin>,
    plan: Plan,
    packager: Option<Packager>,
    expect: (bool, bool),
    writer: DiskWriter,
    marked_live: bool,
    last_input_at: Option<Instant>,
    /// Bytes and duration of parts so far: BANDWIDTH before the first whole segment.
    part_bytes: u64,
    part_us: u64,
    /// The last segment reported to the cluster.
    last_reported_msn: Option<u64>,
    recorder: Option<Recorder>,
    /// The first disk write that failed (kept: the recording misses what it lost).
    write_error: Arc<Mutex<Option<String>>>,
    /// This node's lease length, and since when the loop holds its output because the
    /// lease was not renewed in time.
    lease_ttl: Duration,
    held_since: Option<Instant>,
    keyframes: KeyframeWatch,
    /// The codecs each init segment of this loop names.
    init_codecs: BTreeMap<u32, Vec<String>>,
}

/// The whole segments up to segment `msn` (itself once it is whole), the latest last,
/// at most 16, with their durations (µs): a run with no number missing that ends at
/// `msn` or the one before, or nothing.
fn recent_whole(playlist: &MediaPlaylist, msn: u64) -> Vec<(u64, u64)> {
    let mut recent: Vec<(u64, u64)> = playlist
        .segments()
        .rev()
        .skip_while(|seg| seg.msn > msn || (seg.msn == msn && seg.duration_us.is_none()))
        .map_while(|seg| seg.duration_us.map(|d| (seg.msn, d)))
        .take(16)
        .collect();
    recent.reverse();
    let contiguous = recent.windows(2).all(|w| w[1].0 == w[0].0 + 1)
        && recent.last().is_some_and(|(m, _)| *m + 1 >= msn);
    if contiguous {
        recent
    } else {
        Vec::new()
    }
}

/// CODECS for the multivariant playlist: every codec of a segment in the window, not
/// only the current publisher's (one that came back with another profile, or with
/// audio now, left segments in the window a player must be able to decode). The
/// current ones first; init segments that left the window are forgotten.
fn window_codecs(
    current: &[String],
    playlist: &MediaPlaylist,
    init_codecs: &mut BTreeMap<u32, Vec<String>>,
) -> Vec<String> {
    // One init segment (nearly always): nothing to forget, and no walk of the window
    // (a DVR window holds thousands of segments) on every part.
    if init_codecs.len() > 1 {
        // Init indexes only grow through a loop: the window names its oldest segment's
        // and later ones.
        let oldest = playlist.segments().next().map_or(0, |s| s.init_index);
        init_codecs.retain(|index, _| *index >= oldest);
    }
    let mut codecs = current.to_vec();
    for c in init_codecs.values().flatten() {
        if !codecs.contains(c) {
            codecs.push(c.clone());
        }
    }
    codecs
}

/// The longest time between the current publisher's keyframes, and whether the
/// operator was told it is long (once per publish).
#[derive(Default)]
struct KeyframeWatch {
    last_dts: Option<i64>,
    longest_ms: Option<u32>,
    warned: bool,
}

impl KeyframeWatch {
    /// A keyframe at `dts` (video ticks): the warning, the first time the interval is
    /// long. A jump back or of more than a minute is the publisher's clock, not a GOP.
    fn keyframe(&mut self, dts: i64) -> Option<String> {
        let ticks_per_ms = i64::from(sluice_media::frame::VIDEO_TIMESCALE) / 1000;
        let since = self
            .last_dts
            .replace(dts)
            .map(|last| dts.saturating_sub(last) / ticks_per_ms);
        let ms = since.filter(|ms| (1..=60_000).contains(ms))?;
        let ms = u32::try_from(ms).ok()?;
        let longest = self.longest_ms.map_or(ms, |l| l.max(ms));
        self.longest_ms = Some(longest);
        let warning = sluice_cluster::model::keyframe_warning(longest)?;
        (!std::mem::replace(&mut self.warned, true)).then_some(warning)
    }
}

/// Where a packaging loop's generation stands in the replicated state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Standing {
    /// Packaged here (or reconnecting, its origin unchanged).
    Ours,
    /// Another node claimed it: it goes on there.
    Moved,
    /// Ended, failed or forgotten (or its channel deleted).
    Over,
}

pub(super) async fn run(
    origins: Arc<Origins>,
    origin: Arc<ChannelOrigin>,
    plan: Plan,
    mut publishers: mpsc::Receiver<Attached>,
) {
    let mut l = Loop::new(origins, origin, plan);
    let generation = l.plan.generation;
    let mut current: Option<Attached> = None;
    let mut moved = false;
    let mut tick = tokio::time::interval(STATE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            feed = next_feed(&mut current) => match feed {
                Some(feed) => {
                    if let Err(e) = l.feed(feed) {
                        tracing::warn!(channel = %l.origin.slug, generation, error = %e,
                            "publisher's media cannot be packaged: dropping the publisher");
                        if let Some(a) = &current {
                            let _ = a.refused.set(e.to_string());
                        }
                        current = None;
                        l.publisher_left();
                    }
                }
                None => {
                    current = None;
                    l.publisher_left();
                }
            },
            next = publishers.recv() => match next {
                Some(rx) => {
                    if current.is_some() {
                        l.publisher_left();
                    }
                    current = Some(rx);
                    l.publisher_came();
                }
                None => break,
            },
            _ = tick.tick() => {
                let standing = l.standing();
                if standing != Standing::Ours {
                    moved = standing == Standing::Moved;
                    l.flush_stopped(current.as_mut()).await;
                    break;
                }
                if l.held_too_long() {
                    tracing::warn!(channel = %l.origin.slug, generation,
                        "lease not renewed for {HELD_LEASES} leases: letting the stream go \
                         (its publisher can reconnect to another node)");
                    moved = true;
                    break;
                }
                // Output held while the lease was stale goes out once it is renewed.
                l.drain(Instant::now());
                l.live_again_if_marked_away();
            }
        }
    }
    l.end(moved);
    l.close_recording(true).await;
    // Dropping `current` closes the publisher's connection.
}

impl Loop {
    /// A loop over a new spool directory, writing through its own disk writer.
    fn new(origins: Arc<Origins>, origin: Arc<ChannelOrigin>, plan: Plan) -> Self {
        let dir = generation_dir(
            origins.spool_root(),
            &origin.slug,
            plan.generation,
            RENDITION,
        );
        let status_origin = Arc::downgrade(&origin);
        let write_error = Arc::new(Mutex::new(None::<String>));
        let first_error = write_error.clone();
        let writer = DiskWriter::spawn(
            dir,
            Arc::new(move |error: Option<String>| {
                if let (Some(why), Ok(mut first)) = (&error, first_error.lock()) {
                    first.get_or_insert_with(|| why.clone());
                }
                if let Some(o) = status_origin.upgrade() {
                    o.write(|s| s.degraded = error);
                }
            }),
            origins.metrics().clone(),
        );
        let recorder = plan
            .recording
            .then(|| Recorder::new(origins.handle.id(), plan.first_msn, plan.first_init_index));
        let me = origins.handle.id();
        let lease_ttl_ms = origins
            .handle
            .read_local(|s| s.nodes.get(&me).map(|n| n.lease.ttl_ms))
            .unwrap_or(6_000);
        Loop {
            origins,
            origin,
            plan,
            packager: None,
            expect: (true, true),
            writer,
            marked_live: false,
            last_input_at: None,
            part_bytes: 0,
            part_us: 0,
            last_reported_msn: None,
            recorder,
            write_error,
            lease_ttl: Duration::from_millis(lease_ttl_ms.max(0) as u64),
            held_since: None,
            keyframes: KeyframeWatch::default(),
            init_codecs: BTreeMap::new(),
        }
    }

    /// Fencing on the holder's side: whether what the packager made may be published
    /// now. Not while this node's lease is stale (its last committed renewal was sent
    /// more than `LEASE_HOLDER_SHARE` of the lease ago: it was paused or cut off, and the
    /// leader may be about to mark it down and hand the generation to another node).
    /// The packager keeps its output meanwhile. Once a renewal commits again, output is
    /// published only if this node's replica, which has then applied everything
    /// committed before the renewal, still shows the generation as this node's.
    fn may_publish(&mut self) -> bool {
        if !self.origins.handle.lease_fresh(self.lease_ttl) {
            if self.held_since.is_none() {
                self.held_since = Some(Instant::now());
                tracing::warn!(channel = %self.origin.slug, generation = self.plan.generation,
                    "this node's lease was not renewed in time: holding the stream's output \
                     until it is");
            }
            return false;
        }
        if self.held_since.is_some() {
            if self.standing() != Standing::Ours {
                return false;
            }
            self.held_since = None;
            tracing::info!(channel = %self.origin.slug, generation = self.plan.generation,
                "lease renewed: publishing the stream's output again");
        }
        true
    }

    /// Held for longer than `HELD_LEASES` leases: the node is cut off.
    fn held_too_long(&self) -> bool {
        self.held_since
            .is_some_and(|at| at.elapsed() > self.lease_ttl * HELD_LEASES)
    }

    /// A publisher attached (again).
    fn publisher_came(&mut self) {
        // The claim made the generation `starting` again: its first part makes it
        // live again.
        self.marked_live = false;
        // Open again: a stop from now on waits for this loop to close it.
        self.report_recording(false);
    }

    /// What the publisher sent before the end (a stop right after its last frames,
    /// still on their way through its connection) belongs to the generation: it is
    /// packaged first, for at most STOP_FLUSH.
    async fn flush_stopped(&mut self, current: Option<&mut Attached>) {
        let Some(Attached { rx, .. }) = current else {
            return;
        };
        let until = tokio::time::Instant::now() + STOP_FLUSH;
        while let Ok(Some(queued)) = tokio::time::timeout_at(until, rx.recv()).await {
            if self.feed(queued.feed).is_err() {
                break;
            }
        }
    }
}

/// The next input of the attached publisher (its share of the queue's byte budget
/// given back); pending forever while none is attached.
async fn next_feed(current: &mut Option<Attached>) -> Option<Feed> {
    match current {
        Some(a) => a.rx.recv().await.map(|q| q.feed),
        None => std::future::pending().await,
    }
}

impl Loop {
    fn packager_settings(&self) -> PackagerSettings {
        PackagerSettings {
            part_target_ms: self.plan.playlist.part_target_ms.clamp(
                *PART_TARGET_MS_RANGE.start(),
                (*PART_TARGET_MS_RANGE.end()).min(self.plan.playlist.segment_target_ms),
            ),
            segment_target_ms: self.plan.playlist.segment_target_ms,
            advertised_part_target_ms: self
                .plan
                .part_target_kept
                .then_some(self.plan.playlist.part_target_ms),
            first_msn: self.plan.first_msn,
            first_init_index: self.plan.first_init_index,
            starts_with_discontinuity: self.plan.resumed,
            expect_video: self.expect.0,
            expect_audio: self.expect.1,
            resume_at_us: self.plan.resume_at_us,
            dated_until_ms: self.plan.dated_until_ms,
        }
    }

    fn feed(&mut self, feed: Feed) -> Result<(), sluice_media::PackagerError> {
        match feed {
            Feed::Tracks { video, audio } => {
                if self.packager.is_none() && (video || audio) {
                    self.expect = (video, audio);
                }
                Ok(())
            }
            Feed::Input { input, bytes } => {
                let now = Instant::now();
                if let Input::Frame(f) = &input {
                    self.origins.metrics().ingest(&self.origin.slug, bytes, now);
                    if f.keyframe && f.track == TrackKind::Video {
                        if let Some(warning) = self.keyframes.keyframe(f.dts) {
                            tracing::warn!(channel = %self.origin.slug, "{warning}");
                        }
                    }
                }
                if self.packager.is_none() {
                    self.packager = Some(Packager::new(self.packager_settings())?);
                }
                if let Some(p) = self.packager.as_mut() {
                    p.push(input, now_ms())?;
                }
                self.drain(now);
                self.last_input_at = Some(now);
                Ok(())
            }
        }
    }

    /// The publisher left: close what is open (viewers get every frame that came) and
    /// wait for it to come back.
    fn publisher_left(&mut self) {
        self.origin
            .publisher_attached
            .store(false, Ordering::SeqCst);
        // The next publisher's keyframes are its own.
        self.keyframes = KeyframeWatch::default();
        if let Some(p) = self.packager.as_mut() {
            if let Err(e) = p.push(Input::Discontinuity, now_ms()) {
                tracing::warn!(channel = %self.origin.slug, error = %e, "closing the open part failed");
            }
        }
        self.drain(Instant::now());
        // Where the timeline ended, for an origin that resumes the generation elsewhere.
        if let (Some(p), Some(msn)) = (self.packager.as_ref(), self.last_reported_msn) {
            self.report(p, msn);
        }
        // Closed for now: a generation that ends while it waits is finalized at once.
        self.report_recording(true);
        tracing::info!(channel = %self.origin.slug, generation = self.plan.generation,
            "publisher left: waiting for it to come back");
        self.origin.tell(Op::MarkReconnecting {
            channel: self.origin.slug.clone(),
            generation: self.plan.generation,
            node: Some(self.origins.handle.id()),
            epoch: self.epoch(),
        });
    }

    /// Moves the packager's output into the spool and the playlist; one wake-up. Held
    /// in the packager while the node may not publish (`may_publish`).
    fn drain(&mut self, now: Instant) {
        if self.packager.is_none() || !self.may_publish() {
            return;
        }
        let Some(mut packager) = self.packager.take() else {
            return;
        };
        let p = &mut packager;
        let mut changed = false;
        let origin = self.origin.clone();
        while let Some(output) = p.poll_output() {
            changed = true;
            let after = origin.write(|spool| self.spool_output(spool, p, &output, now));
            self.after_spool(p, after);
            if matches!(output, Output::Part(_)) && !self.marked_live {
                self.marked_live = true;
                self.origin.tell(Op::MarkLive {
                    channel: self.origin.slug.clone(),
                    generation: self.plan.generation,
                    node: self.origins.handle.id(),
                    epoch: self.epoch(),
                });
            }
        }
        self.packager = Some(packager);
        if changed {
            self.origin.notify();
        }
    }

    /// The playlist this loop starts (resumed after an earlier origin's segments).
    fn new_playlist(&self, p: &Packager) -> MediaPlaylist {
        let playlist = MediaPlaylist::new(PlaylistSettings {
            target_duration_s: p.settings().target_duration_s(),
            part_target_ms: p.part_target_ms(),
            window_segments: self.plan.playlist.window_segments as usize,
            uri_prefix: format!("{}/", self.plan.generation),
        });
        if self.plan.resumed {
            playlist.resuming_after(
                self.plan.first_msn,
                self.plan.first_init_index,
                self.plan.earlier,
                &self.plan.gap_times,
            )
        } else {
            playlist
        }
    }

    /// One packager output into the spool (under its lock); what to do after it is
    /// released is returned.
    fn spool_output(
        &mut self,
        spool: &mut super::spool::Spool,
        p: &Packager,
        output: &Output,
        now: Instant,
    ) -> Vec<After> {
        let mut after = Vec::new();
        spool.playlist_mut(|| self.new_playlist(p)).apply(output);
        match output {
            Output::Init(init) => {
                self.init_codecs.insert(
                    init.index,
                    init.tracks
                        .iter()
                        .map(|t| t.codec_string().to_string())
                        .collect(),
                );
                if let Some(r) = self.recorder.as_mut() {
                    r.init(init.index, init.data.len());
                }
                spool.insert(ObjectName::Init(init.index), init.data.clone());
                after.push(After::Write(names::init(init.index), init.data.clone()));
            }
            Output::SegmentStart(start) => {
                if let Some(r) = self.recorder.as_mut() {
                    r.segment_start(start, p.settings().target_duration_s());
                }
                spool.start_segment();
            }
            Output::Part(part) => {
                // A segment's number is reported with its first part, the first of it
                // viewers can see: a resumed origin continues after it, so no URL a
                // viewer fetched means other bytes later, and a segment no viewer saw
                // is not skipped (players stall on a gap in MSNs).
                if part.index == 0 {
                    after.push(After::Report(part.msn));
                }
                // Parts live in memory only: a playlist lists them for the last few
                // target durations, and memory keeps them longer than that. On disk
                // their bytes are in the segment (a file per part cost more CPU than
                // packaging).
                spool.insert(ObjectName::Part(part.msn, part.index), part.data.clone());
                self.part_bytes += part.data.len() as u64;
                self.part_us += part.duration_us;
                if let Some(at) = self.last_input_at {
                    self.origins
                        .metrics()
                        .part_published(now.duration_since(at));
                }
            }
            Output::SegmentEnd(end) => {
                let data = spool.end_segment(end.msn);
                let recorded = self.recorder.as_mut().map(|r| {
                    r.segment_end(end.msn, end.duration_us, data.len());
                });
                after.push(After::Write(names::segment(end.msn), data));
                if recorded.is_some() {
                    after.push(After::Recorded);
                }
            }
        }
        if matches!(output, Output::Part(_) | Output::SegmentEnd(_)) {
            let estimate = (self.part_bytes * 8_000_000).checked_div(self.part_us);
            let init_codecs = &mut self.init_codecs;
            spool.variant = p.variant(format!("{RENDITION}/index.m3u8")).map(|mut v| {
                v.bandwidth = v.bandwidth.max(estimate.unwrap_or(0));
                if let Some(playlist) = spool.playlist() {
                    v.codecs = window_codecs(&v.codecs, playlist, init_codecs);
                }
                v
            });
        }
        after
    }

    /// What an output needs once the spool is released: reports, disk writes and the
    /// recording's playlist.
    fn after_spool(&mut self, p: &Packager, after: Vec<After>) {
        for step in after {
            let (name, data) = match step {
                // A segment's first part: a resumed origin continues after it.
                After::Report(msn) => {
                    self.last_reported_msn = Some(msn);
                    self.report(p, msn);
                    continue;
                }
                After::Write(name, data) => (name, data),
                After::Recorded => {
                    self.write_recording(false);
                    continue;
                }
            };
            if let Err(e) = self.writer.write(name, data) {
                if let Ok(mut first) = self.write_error.lock() {
                    first.get_or_insert_with(|| e.clone());
                }
                self.origins.metrics().spool_error();
                self.origin.write(|s| s.degraded = Some(e.clone()));
                tracing::error!(channel = %self.origin.slug, error = %e, "spool write dropped");
            }
        }
    }

    fn report(&self, p: &Packager, msn: u64) {
        // Segment `msn` and the whole ones before it: reported with its first part, or
        // again, whole, when the publisher left.
        let (elapsed_us, segment_date_ms, segment_init_index, recent) = self.origin.read(|s| {
            let Some(pl) = s.playlist() else {
                return (None, None, None, Vec::new());
            };
            let this = pl.segments().rev().find(|seg| seg.msn == msn);
            // How much of segment `msn` is out: all of it, or its first part.
            let elapsed = this.and_then(|seg| {
                seg.duration_us
                    .or_else(|| seg.parts.first().map(|part| part.duration_us))
            });
            (
                elapsed,
                this.map(|seg| seg.program_date_time_ms),
                this.map(|seg| seg.init_index),
                recent_whole(pl, msn),
            )
        });
        let mut media = MediaInfo {
            segment_start_us: elapsed_us
                .and_then(|us| i64::try_from(us).ok())
                .map(|us| p.output_end_us() - us),
            segment_date_ms,
            segment_init_index,
            recent_last_msn: recent.last().map(|(m, _)| *m),
            recent_durations_us: recent.iter().map(|(_, d)| *d).collect(),
            keyframe_interval_ms: self.keyframes.longest_ms,
            timeline_end_us: Some(p.output_end_us()),
            codecs: p
                .track_configs()
                .iter()
                .map(|c| c.codec_string().to_string())
                .collect(),
            spool_error: self.origin.read(|s| s.degraded.clone()),
            discontinuity: self
                .origin
                .read(|s| s.playlist().and_then(|pl| pl.discontinuity_of(msn)))
                .map(|d| DiscontinuityRun {
                    at_msn: msn,
                    number: d.number,
                    from_msn: d.from_msn,
                }),
            playlist: Some(PlaylistParams {
                segment_target_ms: p.settings().segment_target_ms,
                part_target_ms: p.part_target_ms(),
                window_segments: self.plan.playlist.window_segments,
            }),
            ..Default::default()
        };
        for c in p.track_configs() {
            if let TrackConfig::Video(v) = c {
                media.width = v.width;
                media.height = v.height;
            }
        }
        media.bitrate_bps = (self.part_bytes * 8_000_000)
            .checked_div(self.part_us)
            .unwrap_or(0);
        self.origin.tell(Op::ReportMedia {
            channel: self.origin.slug.clone(),
            generation: self.plan.generation,
            node: self.origins.handle.id(),
            last_msn: msn,
            media,
            epoch: self.epoch(),
        });
    }

    /// The epoch of this node's claim, which every state change and report carries.
    fn epoch(&self) -> u64 {
        self.origin.epoch.load(Ordering::SeqCst)
    }

    /// The state says the generation waits for its publisher while the publisher is
    /// here and sending (this node missed a lease renewal and was marked down, say):
    /// it is live again. Without this the generation would end when the reconnect
    /// grace ran out, with its publisher still connected.
    fn live_again_if_marked_away(&mut self) {
        if !self.marked_live || !self.origin.publisher_attached.load(Ordering::SeqCst) {
            return;
        }
        let (me, epoch, id, number) = (
            self.origins.handle.id(),
            self.epoch(),
            self.origin.id,
            self.plan.generation,
        );
        let marked_away = self.origins.handle.read_local(|s| {
            s.generation(id, number).is_some_and(|g| {
                g.state == GenerationState::Reconnecting && g.origin == me && g.epoch == epoch
            })
        });
        if marked_away {
            tracing::info!(channel = %self.origin.slug, generation = number,
                "marked as waiting for its publisher while it is here: live again");
            self.origin.tell(Op::MarkLive {
                channel: self.origin.slug.clone(),
                generation: number,
                node: me,
                epoch,
            });
        }
    }

    /// Where the replicated state says this generation stands. A state that lags
    /// behind this node's own claim reads as ours.
    fn standing(&self) -> Standing {
        let me = self.origins.handle.id();
        let epoch = self.epoch();
        let generation = self.plan.generation;
        let id = self.origin.id;
        self.origins
            .handle
            .read_local(|s| match s.generation(id, generation) {
                // A state that has not applied this node's claim yet; but a generation
                // the channel already counted is gone (ended and forgotten), as is the
                // channel itself.
                None if s
                    .channels
                    .get(&id)
                    .is_some_and(|c| c.last_generation < generation) =>
                {
                    Standing::Ours
                }
                None => Standing::Over,
                Some(g) if !g.state.is_active() => Standing::Over,
                // A copy that has not applied this node's claim yet.
                Some(g) if g.epoch < epoch => Standing::Ours,
                // Claimed since by another node (waiting for its publisher, or not).
                Some(g) if g.origin != me => Standing::Moved,
                Some(_) => Standing::Ours,
            })
    }

    /// Queues the recording's playlist after the segments written so far, and reports
    /// its progress when due (at once when a write failed).
    fn write_recording(&mut self, closed: bool) {
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        let name = piece_file(r.piece.first_msn);
        let queued = match r.take_playlist(closed) {
            PlaylistWrite::Whole(text) => self.writer.write(name, Bytes::from(text)),
            PlaylistWrite::Append(text) => self.writer.append(name, Bytes::from(text)),
            PlaylistWrite::Nothing => Ok(()),
        };
        if let Err(e) = queued {
            if let Ok(mut first) = self.write_error.lock() {
                first.get_or_insert_with(|| e.clone());
            }
        }
        let failed = self.check_write_error();
        let due = self
            .recorder
            .as_mut()
            .is_some_and(|r| r.report_due(Instant::now()));
        if failed || due {
            self.report_recording(false);
        }
    }

    /// Turns the first failed write into the recording's failure: logged, counted and
    /// reported once. True if it is new.
    fn check_write_error(&mut self) -> bool {
        let error = self.write_error.lock().ok().and_then(|e| e.clone());
        let (Some(why), Some(r)) = (error, self.recorder.as_mut()) else {
            return false;
        };
        if !r.fail(why.clone()) {
            return false;
        }
        self.origins.metrics().recording_failed();
        tracing::error!(channel = %self.origin.slug, generation = self.plan.generation,
            error = %why, "recording failed: the live stream goes on from memory");
        true
    }

    /// Tells the cluster the recording's sizes; `closed`: no more segments come unless
    /// the publisher comes back here.
    fn report_recording(&mut self, closed: bool) {
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        r.piece.finished = closed;
        self.origin.tell(Op::ReportRecording {
            channel: self.origin.slug.clone(),
            generation: self.plan.generation,
            piece: r.piece.clone(),
        });
    }

    /// The generation ended here: the recording's last playlist is written and put on
    /// stable storage (fsync), then the piece is reported closed (with the first write
    /// failure, if any): a recording reported finished survives a power cut.
    async fn close_recording(&mut self, closed: bool) {
        if self.recorder.is_none() {
            return;
        }
        self.write_recording(closed);
        if let Err(e) = self.writer.sync().await {
            if let Ok(mut error) = self.write_error.lock() {
                error.get_or_insert_with(|| format!("syncing the recording: {e}"));
            }
        }
        self.check_write_error();
        self.report_recording(closed);
    }

    /// The generation ended, or `moved` on to another node: close the last part and
    /// segment; end the playlist only when the generation ended (a moved one goes on
    /// elsewhere, and requests held here follow it there).
    fn end(&mut self, moved: bool) {
        if let Some(p) = self.packager.as_mut() {
            if let Err(e) = p.finish() {
                tracing::warn!(channel = %self.origin.slug, error = %e, "closing the last part failed");
            }
        }
        self.drain(Instant::now());
        self.origin.write(|s| {
            if !moved {
                s.end_playlist();
            }
            s.ended = true;
        });
        self.origin
            .publisher_attached
            .store(false, Ordering::SeqCst);
        self.origin.notify();
        if moved {
            tracing::info!(channel = %self.origin.slug, generation = self.plan.generation,
                "generation moved to another node: packaging stopped here");
        } else {
            tracing::info!(channel = %self.origin.slug, generation = self.plan.generation, "generation ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{recent_whole, window_codecs, KeyframeWatch};
    use sluice_media::packager::{Part, SegmentEnd, SegmentStart};
    use sluice_media::playlist::{MediaPlaylist, PlaylistSettings};
    use sluice_media::Output;
    use std::collections::BTreeMap;

    /// What a report says of the whole segments before its own: reported with its first
    /// part, the open segment is not one of them; reported again when the publisher
    /// left, it is.
    #[test]
    fn a_report_names_the_whole_segments_up_to_its_own() {
        let mut playlist = MediaPlaylist::new(PlaylistSettings {
            target_duration_s: 3,
            part_target_ms: 200,
            window_segments: 40,
            uri_prefix: "1/".into(),
        });
        let start = |msn| {
            Output::SegmentStart(SegmentStart {
                msn,
                program_date_time_ms: 0,
                discontinuity: false,
                init_index: 0,
            })
        };
        let part = |msn| {
            Output::Part(Part {
                msn,
                index: 0,
                duration_us: 200_000,
                independent: true,
                data: bytes::Bytes::new(),
            })
        };
        let end = |msn, duration_us| {
            Output::SegmentEnd(SegmentEnd {
                msn,
                duration_us,
                parts: 1,
                bytes: 0,
            })
        };
        for msn in 0..20 {
            playlist.apply(&start(msn));
            playlist.apply(&part(msn));
            playlist.apply(&end(msn, 2_000_000 + msn));
        }
        playlist.apply(&start(20));
        playlist.apply(&part(20));
        let open = recent_whole(&playlist, 20);
        assert_eq!(open.len(), 16);
        assert_eq!(open.first(), Some(&(4, 2_000_004)));
        assert_eq!(open.last(), Some(&(19, 2_000_019)));
        playlist.apply(&end(20, 1_500_000));
        assert_eq!(recent_whole(&playlist, 20).last(), Some(&(20, 1_500_000)));
        // Nothing whole before the first segment.
        let mut fresh = MediaPlaylist::new(PlaylistSettings {
            target_duration_s: 3,
            part_target_ms: 200,
            window_segments: 40,
            uri_prefix: "1/".into(),
        });
        fresh.apply(&start(0));
        fresh.apply(&part(0));
        assert!(recent_whole(&fresh, 0).is_empty());
    }

    /// A publisher that came back with another H.264 profile left segments of the
    /// first in the window: CODECS names both, until they leave it.
    #[test]
    fn codecs_name_every_init_segment_in_the_window() {
        let mut playlist = MediaPlaylist::new(PlaylistSettings {
            target_duration_s: 3,
            part_target_ms: 200,
            window_segments: 2,
            uri_prefix: "1/".into(),
        });
        let segment = |playlist: &mut MediaPlaylist, msn: u64, init_index: u32| {
            for output in [
                Output::SegmentStart(SegmentStart {
                    msn,
                    program_date_time_ms: 0,
                    discontinuity: msn > 0,
                    init_index,
                }),
                Output::Part(Part {
                    msn,
                    index: 0,
                    duration_us: 2_000_000,
                    independent: true,
                    data: bytes::Bytes::new(),
                }),
                Output::SegmentEnd(SegmentEnd {
                    msn,
                    duration_us: 2_000_000,
                    parts: 1,
                    bytes: 0,
                }),
            ] {
                playlist.apply(&output);
            }
        };
        segment(&mut playlist, 0, 0);
        segment(&mut playlist, 1, 1);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut inits = BTreeMap::from([
            (0, names(&["avc1.42c01e", "mp4a.40.2"])),
            (1, names(&["avc1.64001f", "mp4a.40.2"])),
        ]);
        let current = names(&["avc1.64001f", "mp4a.40.2"]);
        assert_eq!(
            window_codecs(&current, &playlist, &mut inits),
            names(&["avc1.64001f", "mp4a.40.2", "avc1.42c01e"])
        );
        // Segment 0 leaves the window (3 target durations: 5 of 2 s are kept).
        for msn in 2..7 {
            segment(&mut playlist, msn, 1);
        }
        assert_eq!(window_codecs(&current, &playlist, &mut inits), current);
        assert_eq!(inits.len(), 1);
    }

    const TICKS_PER_S: i64 = sluice_media::frame::VIDEO_TIMESCALE as i64;

    /// OBS's default: a keyframe every 250 frames at 30 fps. Told once per publish, with
    /// the longest interval; a clock that jumps is not a GOP.
    #[test]
    fn a_long_keyframe_interval_is_told_once() {
        let mut watch = KeyframeWatch::default();
        let gop = 250 * TICKS_PER_S / 30;
        assert_eq!(watch.keyframe(0), None);
        assert_eq!(watch.keyframe(2 * TICKS_PER_S), None, "2 s is fine");
        let told = watch.keyframe(2 * TICKS_PER_S + gop);
        assert_eq!(
            told.as_deref(),
            Some(
                "keyframe interval 8.3 s: viewers join up to 8 s behind; set the encoder's \
                 keyframe interval to 1-2 s"
            )
        );
        assert_eq!(watch.keyframe(2 * TICKS_PER_S + 2 * gop), None, "once");
        assert_eq!(watch.longest_ms, Some(8333));
        let mut jumped = KeyframeWatch::default();
        assert_eq!(jumped.keyframe(0), None);
        assert_eq!(jumped.keyframe(3600 * TICKS_PER_S), None);
        assert_eq!(jumped.keyframe(TICKS_PER_S), None);
        assert_eq!(jumped.longest_ms, None);
    }
}
