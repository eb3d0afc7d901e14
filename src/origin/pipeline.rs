//! One generation's packaging loop: publishers' inputs -> Packager -> spool (memory and
//! disk) -> one wake-up for every waiting viewer request. It outlives a publisher that
//! drops (the generation waits for it to come back, with a discontinuity) and ends when
//! the replicated state says the generation ended (grace over, or stopped).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_cluster::command::Op;
use sluice_cluster::model::{GenerationState, LlHlsSettings, MediaInfo};
use sluice_media::playlist::names::{self, ObjectName};
use sluice_media::playlist::{MediaPlaylist, PlaylistSettings};
use sluice_media::{Input, Output, Packager, PackagerSettings, TrackConfig};
use tokio::sync::mpsc;

use super::spool::{generation_dir, DiskWriter};
use super::{ChannelOrigin, Feed, Origins, RENDITION};
use crate::serve::now_ms;

/// How often the loop looks at the replicated state of its generation.
const STATE_CHECK: Duration = Duration::from_millis(250);

/// What a packager output leads to once the spool lock is released.
enum After {
    Write(String, Bytes),
    Report(u64),
}

pub(super) struct Plan {
    pub(super) generation: u64,
    pub(super) first_msn: u64,
    pub(super) first_init_index: u32,
    pub(super) resumed: bool,
    pub(super) ll_hls: LlHlsSettings,
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
}

pub(super) async fn run(
    origins: Arc<Origins>,
    origin: Arc<ChannelOrigin>,
    plan: Plan,
    mut publishers: mpsc::Receiver<mpsc::Receiver<Feed>>,
) {
    let dir = generation_dir(
        origins.spool_root(),
        &origin.slug,
        plan.generation,
        RENDITION,
    );
    let status_origin = Arc::downgrade(&origin);
    let writer = DiskWriter::spawn(
        dir,
        Arc::new(move |error| {
            if let Some(o) = status_origin.upgrade() {
                o.write(|s| s.degraded = error);
            }
        }),
        origins.metrics().clone(),
    );
    let generation = plan.generation;
    let mut l = Loop {
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
    };
    let mut current: Option<mpsc::Receiver<Feed>> = None;
    let mut tick = tokio::time::interval(STATE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            feed = next_feed(&mut current) => match feed {
                Some(feed) => {
                    if let Err(e) = l.feed(feed) {
                        tracing::warn!(channel = %l.origin.slug, generation, error = %e,
                            "publisher's media cannot be packaged: dropping the publisher");
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
                }
                None => break,
            },
            _ = tick.tick() => {
                if !l.still_ours() {
                    break;
                }
            }
        }
    }
    l.end();
    // Dropping `current` closes the publisher's connection.
}

/// The next input of the attached publisher; pending forever while none is attached.
async fn next_feed(current: &mut Option<mpsc::Receiver<Feed>>) -> Option<Feed> {
    match current {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Loop {
    fn packager_settings(&self) -> PackagerSettings {
        PackagerSettings {
            part_target_ms: self.plan.ll_hls.part_target_ms,
            segment_target_ms: self.plan.ll_hls.segment_target_ms,
            first_msn: self.plan.first_msn,
            first_init_index: self.plan.first_init_index,
            starts_with_discontinuity: self.plan.resumed,
            expect_video: self.expect.0,
            expect_audio: self.expect.1,
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
                if let Input::Frame(_) = input {
                    self.origins.metrics().ingest(&self.origin.slug, bytes, now);
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
        if let Some(p) = self.packager.as_mut() {
            if let Err(e) = p.push(Input::Discontinuity, now_ms()) {
                tracing::warn!(channel = %self.origin.slug, error = %e, "closing the open part failed");
            }
        }
        self.drain(Instant::now());
        tracing::info!(channel = %self.origin.slug, generation = self.plan.generation,
            "publisher left: waiting for it to come back");
        self.origin.tell(Op::MarkReconnecting {
            channel: self.origin.slug.clone(),
            generation: self.plan.generation,
        });
    }

    /// Moves the packager's output into the spool and the playlist; one wake-up.
    fn drain(&mut self, now: Instant) {
        let Some(mut packager) = self.packager.take() else {
            return;
        };
        let p = &mut packager;
        let mut changed = false;
        let generation = self.plan.generation;
        while let Some(output) = p.poll_output() {
            changed = true;
            let mut after = Vec::new();
            self.origin.write(|spool| {
                let playlist = spool.playlist_mut(|| {
                    MediaPlaylist::new(PlaylistSettings {
                        target_duration_s: p.settings().target_duration_s(),
                        part_target_ms: p.part_target_ms(),
                        window_segments: self.plan.ll_hls.window_segments.max(3) as usize,
                        uri_prefix: format!("{generation}/"),
                    })
                });
                playlist.apply(&output);
                match &output {
                    Output::Init(init) => {
                        spool.insert(ObjectName::Init(init.index), init.data.clone());
                        after.push(After::Write(names::init(init.index), init.data.clone()));
                    }
                    Output::SegmentStart(_) => spool.start_segment(),
                    Output::Part(part) => {
                        // A segment's number is reported with its first part, the first
                        // of it viewers can see: a resumed origin continues after it, so
                        // no URL a viewer fetched means other bytes later, and a segment
                        // no viewer saw is not skipped (players stall on a gap in MSNs).
                        if part.index == 0 {
                            after.push(After::Report(part.msn));
                        }
                        // Parts live in memory only: a playlist lists them for the last
                        // few target durations, and memory keeps them longer than that.
                        // On disk their bytes are in the segment (a file per part cost
                        // more CPU than packaging).
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
                        after.push(After::Write(names::segment(end.msn), data));
                    }
                }
                if matches!(output, Output::Part(_) | Output::SegmentEnd(_)) {
                    let estimate = (self.part_bytes * 8_000_000).checked_div(self.part_us);
                    spool.variant = p.variant(format!("{RENDITION}/index.m3u8")).map(|mut v| {
                        v.bandwidth = v.bandwidth.max(estimate.unwrap_or(0));
                        v
                    });
                }
            });
            for step in after {
                let (name, data) = match step {
                    // A segment's first part: a resumed origin continues after it.
                    After::Report(msn) => {
                        self.report(p, msn);
                        continue;
                    }
                    After::Write(name, data) => (name, data),
                };
                if let Err(e) = self.writer.write(name, data) {
                    self.origins.metrics().spool_error();
                    self.origin.write(|s| s.degraded = Some(e.clone()));
                    tracing::error!(channel = %self.origin.slug, error = %e, "spool write dropped");
                }
            }
            if matches!(output, Output::Part(_)) && !self.marked_live {
                self.marked_live = true;
                self.origin.tell(Op::MarkLive {
                    channel: self.origin.slug.clone(),
                    generation,
                    node: self.origins.handle.id(),
                });
            }
        }
        self.packager = Some(packager);
        if changed {
            self.origin.notify();
        }
    }

    fn report(&self, p: &Packager, msn: u64) {
        let mut media = MediaInfo {
            codecs: p
                .track_configs()
                .iter()
                .map(|c| c.codec_string().to_string())
                .collect(),
            spool_error: self.origin.read(|s| s.degraded.clone()),
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
        });
    }

    /// False once the replicated state says this generation ended, or another node
    /// took it over. A state that lags behind this node's own claim is not read as
    /// either.
    fn still_ours(&self) -> bool {
        let me = self.origins.handle.id();
        let generation = self.plan.generation;
        let id = self.origin.id;
        self.origins
            .handle
            .read_local(|s| match s.generation(id, generation) {
                None => true,
                Some(g) => match g.state {
                    GenerationState::Ended | GenerationState::Failed => false,
                    GenerationState::Reconnecting => true,
                    GenerationState::Starting | GenerationState::Live => g.origin == me,
                },
            })
    }

    /// The generation ended: close the last part and segment, and end the playlist.
    fn end(&mut self) {
        if let Some(p) = self.packager.as_mut() {
            if let Err(e) = p.finish() {
                tracing::warn!(channel = %self.origin.slug, error = %e, "closing the last part failed");
            }
        }
        self.drain(Instant::now());
        self.origin.write(|s| {
            s.end_playlist();
            s.ended = true;
        });
        self.origin
            .publisher_attached
            .store(false, Ordering::SeqCst);
        self.origin.notify();
        tracing::info!(channel = %self.origin.slug, generation = self.plan.generation, "generation ended");
    }
}
