//! LL-HLS playlists, written by hand (m3u8-rs cannot write LL-HLS tags).
//!
//! ```text
//! packager::Output --apply--> MediaPlaylist (live window) --render(skip, reports)--> m3u8
//!                                  |--> blocking::decide(query) -> Ready | Wait | BadRequest
//! multivariant::render(variants) -> m3u8
//! ```
//! `tags` writes one tag per function; `names` maps object names to (msn, part) and back.

pub mod blocking;
pub mod datetime;
pub mod multivariant;
pub mod names;
pub mod tags;

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::packager::Output;

/// Fixed facts of one media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSettings {
    pub target_duration_s: u32,
    pub part_target_ms: u32,
    /// Complete segments kept in the live playlist.
    pub window_segments: usize,
    /// Prefix of every object URI, relative to the media playlist (e.g. `"7/"`).
    pub uri_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartEntry {
    pub duration_us: u64,
    pub independent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub msn: u64,
    pub program_date_time_ms: i64,
    pub discontinuity: bool,
    pub init_index: u32,
    pub parts: Vec<PartEntry>,
    /// `None` while the segment is still being written.
    pub duration_us: Option<u64>,
    /// Made by an earlier origin of a resumed generation and not served here: listed
    /// with `EXT-X-GAP` so that a player still before it finds where it is.
    pub gap: bool,
}

impl SegmentEntry {
    fn listed_duration_us(&self) -> u64 {
        self.duration_us
            .unwrap_or_else(|| self.parts.iter().map(|p| p.duration_us).sum())
    }
}

/// A run of segments under one discontinuity number: `number` is what players count
/// (`EXT-X-DISCONTINUITY-SEQUENCE` plus the `EXT-X-DISCONTINUITY` tags up to the
/// segment), `from_msn` the run's first segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discontinuity {
    pub number: u64,
    pub from_msn: u64,
}

/// What an earlier origin of a resumed generation reported of its segments: how long
/// they were and when one of them began, so they are listed (as gaps) where players
/// had them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GapTimes {
    /// Segment `first_known_msn + i` lasted `durations_us[i]`.
    pub first_known_msn: u64,
    pub durations_us: Vec<u64>,
    /// How long the others are taken to be (the earlier origin's open segment, and one
    /// it may have begun); `None`: a target duration.
    pub other_us: Option<u64>,
    /// Segment `.0` began at wall-clock time `.1` (ms since the Unix epoch).
    pub dated: Option<(u64, i64)>,
    /// The init segment the earlier origin's segments named: a player that had it
    /// does not fetch another one for a gap (`None`: the resumed playlist's first).
    pub init_index: Option<u32>,
}

impl GapTimes {
    /// How long segment `msn` is listed.
    pub fn duration_us(&self, msn: u64, target_duration_us: u64) -> u64 {
        msn.checked_sub(self.first_known_msn)
            .and_then(|i| self.durations_us.get(usize::try_from(i).ok()?))
            .copied()
            .or(self.other_us)
            .unwrap_or(target_duration_us)
            .max(1)
    }

    /// When segment `msn` began, counted from the dated one.
    fn dated_ms(&self, msn: u64, target_duration_us: u64) -> Option<i64> {
        let (at, ms) = self.dated?;
        let span_ms = |from: u64, to: u64| -> i64 {
            let us: u64 = (from..to)
                .map(|m| self.duration_us(m, target_duration_us))
                .sum();
            i64::try_from(us / 1000).unwrap_or(i64::MAX)
        };
        Some(if msn >= at {
            ms.saturating_add(span_ms(at, msn))
        } else {
            ms.saturating_sub(span_ms(msn, at))
        })
    }
}

/// A skip request (`_HLS_skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Skip {
    #[default]
    No,
    Yes,
    /// Also skip date ranges (Sluice writes none, so the same as `Yes`).
    V2,
}

/// Another rendition's position, for `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<u32>,
}

/// The live window of one rendition.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    settings: PlaylistSettings,
    segments: VecDeque<SegmentEntry>,
    discontinuity_sequence: u64,
    /// How many segments at the front are gaps (`resuming_at`): they only ever leave.
    leading_gaps: usize,
    /// The gaps have the dates the earlier origin gave them.
    gaps_dated: bool,
    ended: bool,
}

impl MediaPlaylist {
    pub fn new(settings: PlaylistSettings) -> Self {
        Self {
            settings,
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            leading_gaps: 0,
            gaps_dated: false,
            ended: false,
        }
    }

    /// The playlist of a generation resumed (on another node, or after a restart) at
    /// `first_msn`, whose first init segment is `init_index`. `earlier` is the
    /// discontinuity number the origin before gave its last segment (`first_msn - 1`)
    /// and the first segment with that number, when it said.
    ///
    /// With `earlier`, the playlist lists those segments again, up to a window, with
    /// `EXT-X-GAP` and their number (a player that knew them checks that it is the
    /// same): their media went with that origin. A player still before them (it was
    /// behind the live edge) finds the segment after its last one in the playlist,
    /// skips the gap and plays on; without them it finds nothing it knows (hls.js
    /// then waits for ever: it looks for the next sequence number, then for its
    /// discontinuity number, and neither is there). The first own segment carries
    /// `EXT-X-DISCONTINUITY`: its number follows on.
    ///
    /// Without, `EXT-X-DISCONTINUITY-SEQUENCE` starts at `first_msn`, which no earlier
    /// origin's segments can have reached (a segment's discontinuity number is at most
    /// its sequence number plus one), so the first new segment's number is still above
    /// every one a player saw before the move; starting again at 0 gave a third origin
    /// the same number as the second, and a player reused the second's timestamp offset
    /// for media on a restarted clock.
    pub fn resuming_at(
        self,
        first_msn: u64,
        init_index: u32,
        earlier: Option<Discontinuity>,
    ) -> Self {
        self.resuming_after(first_msn, init_index, earlier, &GapTimes::default())
    }

    /// [`MediaPlaylist::resuming_at`], with the gaps listed for as long, and dated as,
    /// `times` says the earlier origin's segments were: a player that played them
    /// finds them where it had them (listed a target duration each, hls.js placed the
    /// segment it was in seconds off and stood still for 25 s).
    pub fn resuming_after(
        mut self,
        first_msn: u64,
        init_index: u32,
        earlier: Option<Discontinuity>,
        times: &GapTimes,
    ) -> Self {
        let Some(earlier) = earlier.filter(|e| e.from_msn < first_msn) else {
            self.discontinuity_sequence = first_msn;
            return self;
        };
        self.discontinuity_sequence = earlier.number;
        let window = u64::try_from(self.settings.window_segments).unwrap_or(u64::MAX);
        let td_us = u64::from(self.settings.target_duration_s) * 1_000_000;
        for msn in earlier.from_msn.max(first_msn.saturating_sub(window))..first_msn {
            self.segments.push_back(SegmentEntry {
                msn,
                // Dated below, or else when the first own segment is (back from it).
                program_date_time_ms: 0,
                discontinuity: false,
                init_index: times.init_index.unwrap_or(init_index),
                parts: Vec::new(),
                duration_us: Some(times.duration_us(msn, td_us)),
                gap: true,
            });
        }
        self.leading_gaps = self.segments.len();
        // From the date the earlier origin reported, when it did.
        let first = self.segments.front().map(|s| s.msn);
        if let Some(mut at_ms) = first.and_then(|m| times.dated_ms(m, td_us)) {
            for gap in &mut self.segments {
                gap.program_date_time_ms = at_ms;
                at_ms += i64::try_from(gap.duration_us.unwrap_or(0) / 1000).unwrap_or(0);
            }
            self.gaps_dated = true;
        }
        self
    }

    /// The discontinuity number of segment `msn` and the first segment in the window
    /// with that number.
    pub fn discontinuity_of(&self, msn: u64) -> Option<Discontinuity> {
        let mut run = Discontinuity {
            number: self.discontinuity_sequence,
            from_msn: self.first_msn()?,
        };
        for seg in &self.segments {
            if seg.discontinuity {
                run = Discontinuity {
                    number: run.number + 1,
                    from_msn: seg.msn,
                };
            }
            if seg.msn == msn {
                return Some(run);
            }
        }
        None
    }

    pub fn settings(&self) -> &PlaylistSettings {
        &self.settings
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &SegmentEntry> {
        self.segments.iter()
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Takes one packager output into the window.
    pub fn apply(&mut self, output: &Output) {
        match output {
            Output::Init(_) => {}
            Output::SegmentStart(s) => {
                if self.segments.len() == self.leading_gaps && !self.gaps_dated {
                    let mut at_ms = s.program_date_time_ms;
                    for gap in self.segments.iter_mut().rev() {
                        at_ms -= gap.listed_duration_us().div_ceil(1000) as i64;
                        gap.program_date_time_ms = at_ms;
                    }
                }
                self.segments.push_back(SegmentEntry {
                    msn: s.msn,
                    program_date_time_ms: s.program_date_time_ms,
                    discontinuity: s.discontinuity,
                    init_index: s.init_index,
                    parts: Vec::new(),
                    duration_us: None,
                    gap: false,
                })
            }
            Output::Part(p) => {
                if let Some(seg) = self.segments.back_mut().filter(|s| s.msn == p.msn) {
                    seg.parts.push(PartEntry {
                        duration_us: p.duration_us,
                        independent: p.independent,
                    });
                }
            }
            Output::SegmentEnd(e) => {
                if let Some(seg) = self.segments.back_mut().filter(|s| s.msn == e.msn) {
                    seg.duration_us = Some(e.duration_us);
                }
                self.trim();
            }
        }
    }

    /// Marks the stream ended: `EXT-X-ENDLIST`, no preload hint, blocking requests answer.
    pub fn end(&mut self) {
        // A segment that never got a part is not a segment.
        if self
            .segments
            .back()
            .is_some_and(|s| s.parts.is_empty() && !s.gap)
        {
            self.segments.pop_back();
        }
        self.ended = true;
    }

    /// Drops the oldest segments past the window, but never below three target
    /// durations of whole segments (the draft's floor for a live playlist: a window of
    /// 3 segments of 2 s would list 6 s under a TARGETDURATION of 3).
    fn trim(&mut self) {
        let floor_us = 3 * u64::from(self.settings.target_duration_s) * 1_000_000;
        let (mut complete, mut total_us) = self
            .segments
            .iter()
            .filter_map(|s| s.duration_us)
            .fold((0usize, 0u64), |(n, us), d| (n + 1, us + d));
        while complete > self.settings.window_segments.max(1) {
            let Some(front_us) = self.segments.front().and_then(|s| s.duration_us) else {
                break;
            };
            if total_us - front_us < floor_us {
                break;
            }
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            if s.discontinuity {
                self.discontinuity_sequence += 1;
            }
            if s.gap {
                self.leading_gaps -= 1;
            }
            complete -= 1;
            total_us -= front_us;
        }
    }

    /// The last part listed: (msn, part index), the LAST-MSN/LAST-PART of a report.
    pub fn last_part(&self) -> Option<(u64, u32)> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.parts.is_empty())
            .map(|s| (s.msn, s.parts.len() as u32 - 1))
    }

    /// The segment with this sequence number, if still in the window.
    pub fn segment(&self, msn: u64) -> Option<&SegmentEntry> {
        let first = self.segments.front()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
            .filter(|s| s.msn == msn)
    }

    /// Whether a whole segment of this origin's is listed: players take a live
    /// playlist without one for an error (hls.js: `levelEmptyError`). Only the last
    /// segment can be open, so the first one after the gaps tells, without a walk of
    /// the window on every request.
    pub fn has_whole_segment(&self) -> bool {
        self.segments
            .get(self.leading_gaps)
            .is_some_and(|s| s.duration_us.is_some())
    }

    pub fn first_msn(&self) -> Option<u64> {
        self.segments.front().map(|s| s.msn)
    }

    /// The part the next `EXT-X-PRELOAD-HINT` names.
    pub fn next_part(&self) -> (u64, u32) {
        match self.segments.back() {
            Some(s) if s.duration_us.is_none() => (s.msn, s.parts.len() as u32),
            Some(s) => (s.msn + 1, 0),
            None => (0, 0),
        }
    }

    /// Writes the playlist; `skip` gives a delta update when the client asked for one.
    pub fn render(&self, skip: Skip, reports: &[RenditionReport]) -> String {
        let mut out = String::with_capacity(256 + self.segments.len() * 160);
        // Where the window ends, to decide which segments keep parts or may be skipped.
        let listed: Vec<&SegmentEntry> = self
            .segments
            .iter()
            .filter(|s| !s.parts.is_empty() || s.gap)
            .collect();
        let total_us: u64 = listed.iter().map(|s| s.listed_duration_us()).sum();
        // A delta update is for a player already playing.
        let join = (skip == Skip::No && !self.ended)
            .then(|| self.join_point_us(&listed, total_us))
            .flatten();
        self.write_header(&mut out, join);
        let skipped = self.skipped_segments(skip, &listed, total_us);
        if skipped > 0 {
            tags::skip(&mut out, skipped, skip == Skip::V2);
        }
        self.write_segments(&mut out, &listed, total_us, skipped);
        self.write_end(&mut out, reports);
        out
    }

    fn target_duration_us(&self) -> u64 {
        u64::from(self.settings.target_duration_s) * 1_000_000
    }

    /// Where a player that joins now can start: the start of the last independent part
    /// that ends the playlist at least PART-HOLD-BACK (three part targets) later, in
    /// microseconds from the start of the playlist.
    ///
    /// A player can only start on a keyframe. hls.js looks back for an independent part
    /// itself; Video.js (VHS) looks back one part only, and when its live point fell
    /// further into a GOP it appended parts that decode to nothing until it gave the
    /// playlist up. Written as `EXT-X-START` (hls.js, VHS, Shaka and native players
    /// honour it), it is where hls.js would have started anyway.
    fn join_point_us(&self, listed: &[&SegmentEntry], total_us: u64) -> Option<u64> {
        let hold_back_us = 3_000 * u64::from(self.settings.part_target_ms);
        let latest_us = total_us.checked_sub(hold_back_us)?;
        // From the end back: only the last segments are looked at, however long the
        // window (a DVR window holds hours of segments).
        let mut seg_end_us = total_us;
        for seg in listed.iter().rev() {
            let seg_start_us = seg_end_us - seg.listed_duration_us();
            seg_end_us = seg_start_us;
            if seg.gap || seg_start_us > latest_us {
                continue;
            }
            let mut part_start_us = seg_start_us;
            let mut join = None;
            for part in &seg.parts {
                if part_start_us > latest_us {
                    break;
                }
                if part.independent {
                    join = Some(part_start_us);
                }
                part_start_us += part.duration_us;
            }
            if join.is_some() {
                return join;
            }
        }
        None
    }

    /// The tags before the first segment; `join_us`, where a joining player starts.
    fn write_header(&self, out: &mut String, join_us: Option<u64>) {
        let s = &self.settings;
        let _ = writeln!(out, "#EXTM3U");
        tags::version(out, 9);
        tags::target_duration(out, s.target_duration_s);
        if let Some(us) = join_us {
            // A millisecond into the part: a player rounding the offset must not land
            // in the part before.
            tags::start(out, us.div_ceil(1000) + 1);
        }
        tags::server_control(out, s.part_target_ms, s.target_duration_s);
        tags::part_inf(out, s.part_target_ms);
        tags::media_sequence(out, self.first_msn().unwrap_or(0));
        tags::discontinuity_sequence(out, self.discontinuity_sequence);
    }

    /// How many of the first listed segments a delta update leaves out: the leading
    /// complete ones, up to the first gap, that end at least six target durations
    /// before the end of the window. A full playlist, or one that has ended, skips none.
    fn skipped_segments(&self, skip: Skip, listed: &[&SegmentEntry], total_us: u64) -> usize {
        let mut skipped = 0usize;
        if skip != Skip::No && !self.ended {
            let skip_until_us = 6 * self.target_duration_us();
            let mut end_us = 0u64;
            for seg in listed {
                end_us += seg.listed_duration_us();
                // Gaps are never skipped: a player that knew them as the earlier
                // origin's segments would fill them in from its copy, without the gap.
                if seg.gap || seg.duration_us.is_none() || total_us - end_us < skip_until_us {
                    break;
                }
                skipped += 1;
            }
        }
        skipped
    }

    /// The listed segments after the `skipped` ones, with their parts near the end.
    fn write_segments(
        &self,
        out: &mut String,
        listed: &[&SegmentEntry],
        total_us: u64,
        skipped: usize,
    ) {
        let s = &self.settings;
        // Parts are listed for the last three target durations, and on no more than the
        // last three segments (what strict validators such as hls-parser require). A
        // preload hint that opens the next segment takes one of the three.
        let parts_from_us = total_us.saturating_sub(3 * self.target_duration_us());
        let hint_opens_segment =
            !self.ended && listed.last().is_some_and(|s| s.duration_us.is_some());
        let parts_from_index = (listed.len() + usize::from(hint_opens_segment)).saturating_sub(3);
        let mut start_us = 0u64;
        let mut current_init = None;
        for (i, seg) in listed.iter().enumerate() {
            let seg_end_us = start_us + seg.listed_duration_us();

            start_us = seg_end_us;
            if i < skipped {
                continue;
            }
            // Also on the first segment listed: the sequence counts only removed tags.
            if seg.discontinuity {
                tags::discontinuity(out);
            }
            if current_init != Some(seg.init_index) {
                tags::map(out, &s.uri_prefix, seg.init_index);
                current_init = Some(seg.init_index);
            }

            tags::program_date_time(out, seg.program_date_time_ms);
            if seg.gap {
                tags::gap(out);
            }
            if (seg_end_us > parts_from_us && i >= parts_from_index) || seg.duration_us.is_none() {
                for (p, part) in seg.parts.iter().enumerate() {
                    tags::part(out, &s.uri_prefix, seg.msn, p as u32, part);
                }
            }
            if let Some(d) = seg.duration_us {
                tags::segment(out, &s.uri_prefix, seg.msn, d);
            }
        }
    }

    /// `EXT-X-ENDLIST` once ended; else where the next part will be, and the reports
    /// on the other renditions.
    fn write_end(&self, out: &mut String, reports: &[RenditionReport]) {
        if self.ended {
            tags::endlist(out);
        } else {
            let (msn, part) = self.next_part();
            tags::preload_hint(out, &self.settings.uri_prefix, msn, part);
            for r in reports {
                tags::rendition_report(out, r);
            }
        }
    }
}

#[cfg(test)]
mod tests;
