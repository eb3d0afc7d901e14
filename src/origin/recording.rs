//! The recording of one generation on this origin node: every segment it writes is kept
//! past the live window, and a playlist of them (`recording-{first msn}.m3u8`, one per
//! stay of the generation on this node: a *piece*) grows on disk by what each segment
//! adds (appended: the work per segment does not grow with the recording). Progress
//! goes to the replicated Generation record; the first write that fails makes the
//! recording `failed` with the reason, and the live stream goes on from memory.
//!
//! ```text
//! packager output --> Recorder (segment lines) --> DiskWriter (after the segment itself)
//!                         \--> ReportRecording (first segment, every 10 s, failure, close)
//! /vod/{channel}/{generation}/index.m3u8 = the pieces' playlists, in MSN order
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sluice_cluster::model::{NodeId, RecordingPiece};
use sluice_media::packager::SegmentStart;
use sluice_media::playlist::tags;

/// How often a growing recording reports its sizes to the cluster.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The file name of the piece that starts at `first_msn`.
pub(crate) fn piece_file(first_msn: u64) -> String {
    format!("recording-{first_msn}.m3u8")
}

/// What to put on disk for a piece's playlist since it was last written.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PlaylistWrite {
    /// The file, made anew (the first time).
    Whole(String),
    /// Lines to add at its end.
    Append(String),
    Nothing,
}

pub(super) struct Recorder {
    pub(super) piece: RecordingPiece,
    target_duration_s: u32,
    /// Playlist lines of closed segments not yet on disk.
    lines: String,
    /// Whether the file exists (its header written), the target duration it says, and
    /// whether it ends with `EXT-X-ENDLIST`.
    on_disk: bool,
    target_on_disk: u32,
    ended_on_disk: bool,
    /// The open segment: whether it starts a discontinuity, its init, its date.
    open: Option<SegmentStart>,
    current_init: Option<u32>,
    last_report: Option<Instant>,
}

impl Recorder {
    pub(super) fn new(node: NodeId, first_msn: u64, first_init: u32) -> Self {
        Self {
            piece: RecordingPiece {
                node,
                first_msn,
                last_msn: None,
                first_init,
                last_init: first_init,
                segments: 0,
                duration_ms: 0,
                bytes: 0,
                finished: false,
                error: None,
            },
            target_duration_s: 1,
            lines: String::new(),
            on_disk: false,
            target_on_disk: 0,
            ended_on_disk: false,
            open: None,
            current_init: None,
            last_report: None,
        }
    }

    pub(super) fn init(&mut self, index: u32, bytes: usize) {
        self.piece.last_init = self.piece.last_init.max(index);
        self.piece.bytes += bytes as u64;
    }

    pub(super) fn segment_start(&mut self, start: &SegmentStart, target_duration_s: u32) {
        self.target_duration_s = self.target_duration_s.max(target_duration_s);
        self.open = Some(start.clone());
    }

    /// A segment was closed: it joins the playlist.
    pub(super) fn segment_end(&mut self, msn: u64, duration_us: u64, bytes: usize) {
        let Some(start) = self.open.take() else {
            return;
        };
        // The first segment of a piece that continues a generation starts a
        // discontinuity, as the live playlist says.
        if start.discontinuity && (self.piece.segments > 0 || self.piece.first_msn > 0) {
            tags::discontinuity(&mut self.lines);
        }
        if self.current_init != Some(start.init_index) {
            tags::map(&mut self.lines, "", start.init_index);
            self.current_init = Some(start.init_index);
        }
        tags::program_date_time(&mut self.lines, start.program_date_time_ms);
        tags::segment(&mut self.lines, "", msn, duration_us);
        self.piece.last_msn = Some(msn);
        self.piece.segments += 1;
        self.piece.duration_ms += duration_us / 1000;
        self.piece.bytes += bytes as u64;
    }

    /// What the piece's playlist on disk lacks: the whole file the first time, then
    /// the lines of the segments closed since, a larger target duration when one grew
    /// (a later `EXT-X-TARGETDURATION` line: [`combine`] takes the largest), and
    /// `EXT-X-ENDLIST` when `closed` (a piece whose publisher came back goes on after
    /// it; [`combine`] reads past it).
    pub(super) fn take_playlist(&mut self, closed: bool) -> PlaylistWrite {
        let mut out = String::new();
        if !self.on_disk {
            out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:EVENT\n");
            let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.piece.first_msn);
        }
        if self.target_duration_s > self.target_on_disk {
            let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_s);
            self.target_on_disk = self.target_duration_s;
        }
        if !self.lines.is_empty() {
            out.push_str(&self.lines);
            self.lines.clear();
            self.ended_on_disk = false;
        }
        if closed && !self.ended_on_disk {
            out.push_str("#EXT-X-ENDLIST\n");
            self.ended_on_disk = true;
        }
        if !self.on_disk {
            self.on_disk = true;
            PlaylistWrite::Whole(out)
        } else if out.is_empty() {
            PlaylistWrite::Nothing
        } else {
            PlaylistWrite::Append(out)
        }
    }

    /// Records the first failure; true if it is new (to be reported at once).
    pub(super) fn fail(&mut self, reason: String) -> bool {
        if self.piece.error.is_some() {
            return false;
        }
        self.piece.error = Some(reason);
        true
    }

    /// Whether the sizes are due to be reported (the first segment, then every 10 s).
    pub(super) fn report_due(&mut self, now: Instant) -> bool {
        let due = self
            .last_report
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY);
        if due {
            self.last_report = Some(now);
        }
        due
    }
}

/// The playlist of a whole recording from its pieces' playlists, in MSN order: one
/// header (the longest target duration), every piece's segments, a discontinuity where
/// a piece continues another; `EXT-X-ENDLIST` and type VOD when `finalized`, else an
/// EVENT playlist of what is written so far.
///
/// A piece whose last append was cut off (a full disk) ends with part of an entry:
/// what follows its last whole segment is left out.
pub(crate) fn combine(pieces: &[String], finalized: bool) -> String {
    let mut target = 1u32;
    let mut first_sequence = None;
    let mut body = String::new();
    for (i, text) in pieces.iter().enumerate() {
        let mut started = false;
        for line in whole_entries(text).lines() {
            if let Some(td) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                target = target.max(td.trim().parse().unwrap_or(1));
                continue;
            }
            if let Some(seq) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                if first_sequence.is_none() {
                    first_sequence = seq.trim().parse::<u64>().ok();
                }
                continue;
            }
            let header = line.is_empty()
                || line == "#EXTM3U"
                || line == "#EXT-X-ENDLIST"
                || line.starts_with("#EXT-X-VERSION:")
                || line.starts_with("#EXT-X-PLAYLIST-TYPE:");
            if header {
                continue;
            }
            if !started && i > 0 && line != "#EXT-X-DISCONTINUITY" {
                body.push_str("#EXT-X-DISCONTINUITY\n");
            }
            started = true;
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut out = String::with_capacity(body.len() + 200);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let kind = if finalized { "VOD" } else { "EVENT" };
    let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:{kind}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first_sequence.unwrap_or(0));
    out.push_str(&body);
    if finalized {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// `text` up to the end of its last whole segment (its URI line and newline), plus a
/// closing `EXT-X-ENDLIST` or target duration after it; the header alone when it
/// lists none.
fn whole_entries(text: &str) -> &str {
    let mut end = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        let whole = line.ends_with('\n');
        let tag = line.starts_with('#');
        let closing =
            line.starts_with("#EXT-X-ENDLIST") || line.starts_with("#EXT-X-TARGETDURATION");
        let header = line.starts_with("#EXTM3U")
            || line.starts_with("#EXT-X-VERSION")
            || line.starts_with("#EXT-X-PLAYLIST-TYPE")
            || line.starts_with("#EXT-X-MEDIA-SEQUENCE");
        if whole && (!tag || closing || (header && end == at - line.len())) {
            end = at;
        }
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(msn: u64, discontinuity: bool, init_index: u32) -> SegmentStart {
        SegmentStart {
            msn,
            program_date_time_ms: 1_700_000_000_000 + msn as i64 * 2_000,
            discontinuity,
            init_index,
        }
    }

    #[test]
    fn a_piece_lists_its_segments_and_closes_as_vod() {
        let mut r = Recorder::new(1, 0, 0);
        r.init(0, 700);
        r.segment_start(&start(0, false, 0), 2);
        r.segment_end(0, 2_000_000, 1_000);
        // The publisher came back: a discontinuity and a new init.
        let PlaylistWrite::Whole(first) = r.take_playlist(false) else {
            panic!("the first write makes the file");
        };
        assert!(first.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !first.contains("ENDLIST"));
        r.init(1, 700);
        r.segment_start(&start(1, true, 1), 3);
        r.segment_end(1, 1_500_000, 800);
        // Only what the second segment adds, whatever came before.
        let PlaylistWrite::Append(added) = r.take_playlist(true) else {
            panic!("then appends");
        };
        assert!(
            !added.contains("0.m4s") && added.contains("1.m4s"),
            "{added}"
        );
        assert!(added.contains("#EXT-X-TARGETDURATION:3"), "{added}");
        assert_eq!(r.take_playlist(true), PlaylistWrite::Nothing);
        let vod = combine(&[format!("{first}{added}")], true);
        let expected_order = [
            "#EXT-X-MAP:URI=\"init.mp4\"",
            "0.m4s",
            "#EXT-X-DISCONTINUITY",
            "#EXT-X-MAP:URI=\"init-1.mp4\"",
            "1.m4s",
            "#EXT-X-ENDLIST",
        ];
        let mut at = 0;
        for needle in expected_order {
            let found = vod[at..].find(needle).unwrap_or(usize::MAX);
            assert!(
                found != usize::MAX,
                "{needle} missing or out of order in\n{vod}"
            );
            at += found + needle.len();
        }
        assert_eq!(
            (r.piece.segments, r.piece.duration_ms, r.piece.bytes),
            (2, 3_500, 3_200)
        );
        assert_eq!((r.piece.last_msn, r.piece.last_init), (Some(1), 1));
    }

    #[test]
    fn pieces_combine_into_one_playlist_with_a_discontinuity_between() {
        let file = |r: &mut Recorder, closed| match r.take_playlist(closed) {
            PlaylistWrite::Whole(text) => text,
            other => panic!("{other:?}"),
        };
        let mut a = Recorder::new(1, 0, 0);
        a.segment_start(&start(0, false, 0), 2);
        a.segment_end(0, 2_000_000, 10);
        let mut b = Recorder::new(2, 1, 1);
        b.segment_start(&start(1, false, 1), 3);
        b.segment_end(1, 2_500_000, 10);
        let text = combine(&[file(&mut a, true), file(&mut b, false)], true);
        assert_eq!(text.matches("#EXT-X-TARGETDURATION:3").count(), 1);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 1);
        assert_eq!(text.matches("#EXT-X-ENDLIST").count(), 1);
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        let zero = text.find("\n0.m4s").unwrap_or(usize::MAX);
        let one = text.find("\n1.m4s").unwrap_or(0);
        assert!(zero < one, "{text}");
    }

    /// An append cut off by a full disk leaves part of an entry at the end of the file:
    /// the recording plays up to its last whole segment.
    #[test]
    fn a_cut_off_append_leaves_the_whole_segments_playable() {
        let mut r = Recorder::new(1, 0, 0);
        r.segment_start(&start(0, false, 0), 2);
        r.segment_end(0, 2_000_000, 10);
        let PlaylistWrite::Whole(first) = r.take_playlist(false) else {
            panic!("the first write makes the file");
        };
        r.segment_start(&start(1, false, 0), 2);
        r.segment_end(1, 2_000_000, 10);
        let PlaylistWrite::Append(added) = r.take_playlist(false) else {
            panic!("then appends");
        };
        for cut in 0..added.len() {
            let text = combine(&[format!("{first}{}", &added[..cut])], true);
            assert!(text.contains("\n0.m4s\n"), "{text}");
            assert!(!text.contains("\n1.m4"), "cut at {cut}: {text}");
            let tail = text.trim_end().lines().rev().nth(1).unwrap_or_default();
            assert_eq!(tail, "0.m4s", "cut at {cut}: {text}");
        }
        let whole = combine(&[format!("{first}{added}")], true);
        assert!(whole.contains("\n1.m4s\n"), "{whole}");
    }
}
