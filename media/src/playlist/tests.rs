use super::blocking::{decide, Decision, Directives};
use super::*;
use crate::packager::{Part, SegmentEnd, SegmentStart};

fn settings() -> PlaylistSettings {
    PlaylistSettings {
        target_duration_s: 3,
        part_target_ms: 200,
        window_segments: 10,
        uri_prefix: "1/".into(),
    }
}

fn start(msn: u64, disc: bool) -> Output {
    Output::SegmentStart(SegmentStart {
        msn,
        program_date_time_ms: 1_795_249_986_000 + msn as i64 * 2000,
        discontinuity: disc,
        init_index: 0,
    })
}

fn part(msn: u64, index: u32) -> Output {
    Output::Part(Part {
        msn,
        index,
        duration_us: 200_000,
        independent: index == 0,
        data: bytes::Bytes::new(),
    })
}

fn end(msn: u64) -> Output {
    Output::SegmentEnd(SegmentEnd {
        msn,
        duration_us: 2_000_000,
        parts: 10,
        bytes: 0,
    })
}

/// `segments` complete 2 s segments of ten 200 ms parts, then `open_parts` parts of the next.
fn playlist(segments: u64, open_parts: u32) -> MediaPlaylist {
    let mut pl = MediaPlaylist::new(settings());
    for msn in 0..segments {
        pl.apply(&start(msn, false));
        for p in 0..10 {
            pl.apply(&part(msn, p));
        }
        pl.apply(&end(msn));
    }
    pl.apply(&start(segments, false));
    for p in 0..open_parts {
        pl.apply(&part(segments, p));
    }
    pl
}

#[test]
fn live_playlist_exact_text() {
    let mut pl = MediaPlaylist::new(settings());
    pl.apply(&start(0, false));
    pl.apply(&part(0, 0));
    pl.apply(&part(0, 1));
    pl.apply(&end(0));
    pl.apply(&start(1, true));
    pl.apply(&part(1, 0));
    let text = pl.render(
        Skip::No,
        &[RenditionReport {
            uri: "../low/index.m3u8".into(),
            last_msn: 1,
            last_part: Some(0),
        }],
    );
    assert_eq!(
        text,
        "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:3
#EXT-X-START:TIME-OFFSET=0.001,PRECISE=YES
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=18.000,PART-HOLD-BACK=0.600,HOLD-BACK=9.000
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI=\"1/init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T08:33:06.000Z
#EXT-X-PART:DURATION=0.20000,URI=\"1/0.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI=\"1/0.1.m4s\"
#EXTINF:2.00000,
1/0.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T08:33:08.000Z
#EXT-X-PART:DURATION=0.20000,URI=\"1/1.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1/1.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../low/index.m3u8\",LAST-MSN=1,LAST-PART=0
"
    );
}

#[test]
fn parts_only_for_the_last_three_target_durations() {
    let text = playlist(8, 3).render(Skip::No, &[]);
    // 8 × 2 s complete + 0.6 s open: 3 TD would allow parts from 7.6 s on, but parts are
    // listed on the last three segments only (the open one counts).
    for msn in 0..6 {
        assert!(
            !text.contains(&format!("URI=\"1/{msn}.0.m4s\"")),
            "msn {msn}\n{text}"
        );
    }
    for msn in 6..9 {
        assert!(
            text.contains(&format!("URI=\"1/{msn}.0.m4s\"")),
            "msn {msn}\n{text}"
        );
    }
}

#[test]
fn a_hint_that_opens_the_next_segment_takes_one_of_the_three_part_slots() {
    // Segment 7 just ended and no part of 8 exists yet: the hint names 8.0.
    let mut pl = playlist(7, 10);
    pl.apply(&end(7));
    let text = pl.render(Skip::No, &[]);
    assert!(
        text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1/8.0.m4s\""),
        "{text}"
    );
    assert!(!text.contains("URI=\"1/5.0.m4s\""), "{text}");
    for msn in 6..8 {
        assert!(
            text.contains(&format!("URI=\"1/{msn}.0.m4s\"")),
            "msn {msn}\n{text}"
        );
    }
}

#[test]
fn window_drops_old_segments_and_counts_discontinuities() {
    // A window of 2 segments, but never under 3 target durations (9 s): 5 of 2 s.
    let mut pl = MediaPlaylist::new(PlaylistSettings {
        window_segments: 2,
        ..settings()
    });
    for msn in 0..8 {
        pl.apply(&start(msn, msn == 1));
        pl.apply(&part(msn, 0));
        pl.apply(&end(msn));
    }
    let text = pl.render(Skip::No, &[]);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"));
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
}

#[test]
fn delta_update_skips_only_segments_older_than_can_skip_until() {
    let pl = playlist(10, 2);
    let full = pl.render(Skip::No, &[]);
    let delta = pl.render(Skip::Yes, &[]);
    // 20.4 s listed, CAN-SKIP-UNTIL 18 s: the first segment (ending 18.4 s from the end) goes.
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n"),
        "{delta}"
    );
    assert!(!delta.contains("\n1/0.m4s\n"));
    assert!(delta.contains("\n1/1.m4s\n"));
    assert!(delta.contains("#EXT-X-MAP:URI=\"1/init.mp4\""));
    // Everything after the skipped segment is the same as in the full playlist.
    let tail = |t: &str| t[t.find("1/1.m4s").unwrap_or(0)..].to_string();
    assert_eq!(tail(&full), tail(&delta));
    // Too short to skip anything: no SKIP tag.
    assert!(!playlist(3, 1).render(Skip::V2, &[]).contains("EXT-X-SKIP"));
}

#[test]
fn ended_playlist_has_endlist_and_no_hint() {
    let mut pl = playlist(2, 0);
    pl.end();
    let text = pl.render(Skip::No, &[]);
    assert!(text.ends_with("1/1.m4s\n#EXT-X-ENDLIST\n"), "{text}");
    assert!(!text.contains("PRELOAD-HINT"));
}

fn q(s: &str) -> Directives {
    Directives::parse(s).expect("valid query")
}

#[test]
fn blocking_decisions() {
    let pl = playlist(3, 2); // segments 0..=2 complete, segment 3 has parts 0 and 1
    assert_eq!(decide(&pl, &q("")), Decision::Ready);
    assert_eq!(decide(&pl, &q("_HLS_msn=2")), Decision::Ready);
    assert_eq!(decide(&pl, &q("_HLS_msn=3")), Decision::Wait);
    assert_eq!(decide(&pl, &q("_HLS_msn=3&_HLS_part=1")), Decision::Ready);
    assert_eq!(decide(&pl, &q("_HLS_msn=3&_HLS_part=2")), Decision::Wait);
    assert_eq!(decide(&pl, &q("_HLS_msn=4&_HLS_part=0")), Decision::Wait);
    assert_eq!(decide(&pl, &q("_HLS_msn=5")), Decision::Wait);
    assert!(matches!(
        decide(&pl, &q("_HLS_msn=6")),
        Decision::BadRequest(_)
    ));
    assert!(matches!(
        decide(&pl, &q("_HLS_part=1")),
        Decision::BadRequest(_)
    ));
    // 200 ms parts: the advance part limit is 15.
    assert_eq!(decide(&pl, &q("_HLS_msn=3&_HLS_part=16")), Decision::Wait);
    assert!(matches!(
        decide(&pl, &q("_HLS_msn=3&_HLS_part=17")),
        Decision::BadRequest(_)
    ));
    // A part index past the end of a finished segment means the next segment's first part.
    assert_eq!(decide(&pl, &q("_HLS_msn=2&_HLS_part=10")), Decision::Ready);
    let pl = playlist(3, 0);
    assert_eq!(decide(&pl, &q("_HLS_msn=2&_HLS_part=10")), Decision::Wait);
}

#[test]
fn nothing_is_served_before_the_first_whole_segment() {
    // A new stream, or a generation resumed elsewhere: parts of its first segment only.
    let mut pl = MediaPlaylist::new(settings());
    pl.apply(&start(21, true));
    pl.apply(&part(21, 0));
    pl.apply(&part(21, 1));
    assert!(!pl.has_whole_segment());
    assert_eq!(decide(&pl, &q("")), Decision::Wait);
    assert_eq!(decide(&pl, &q("_HLS_msn=21&_HLS_part=0")), Decision::Wait);
    assert_eq!(decide(&pl, &q("_HLS_msn=20")), Decision::Wait);
    pl.apply(&end(21));
    assert_eq!(decide(&pl, &q("")), Decision::Ready);
    assert_eq!(decide(&pl, &q("_HLS_msn=21&_HLS_part=0")), Decision::Ready);
    // Ended before a whole segment: answered at once.
    let mut pl = MediaPlaylist::new(settings());
    pl.apply(&start(0, false));
    pl.apply(&part(0, 0));
    pl.end();
    assert_eq!(decide(&pl, &q("")), Decision::Ready);
}

#[test]
fn blocking_on_an_ended_playlist_answers_at_once() {
    let mut pl = playlist(3, 2);
    pl.end();
    assert_eq!(decide(&pl, &q("_HLS_msn=4")), Decision::Ready);
}

#[test]
fn directive_parse_errors_name_the_parameter() {
    assert_eq!(
        Directives::parse("_HLS_msn=x").map_err(|e| e.to_string()),
        Err("_HLS_msn must be a non-negative integer, got \"x\"".to_string())
    );
    assert!(Directives::parse("_HLS_skip=NO").is_err());
    assert_eq!(q("token=abc&_HLS_skip=v2").skip, Skip::V2);
}

/// The draft's floor: a live playlist is never cut below three target durations, so
/// a window of 3 segments of 2 s under a TARGETDURATION of 3 lists 5 of them.
#[test]
fn a_short_window_keeps_three_target_durations() {
    let mut pl = MediaPlaylist::new(PlaylistSettings {
        window_segments: 3,
        ..settings()
    });
    for msn in 0..12 {
        pl.apply(&start(msn, false));
        pl.apply(&part(msn, 0));
        pl.apply(&end(msn));
    }
    let listed: u64 = pl.segments().filter_map(|s| s.duration_us).sum();
    assert_eq!((pl.first_msn(), listed), (Some(7), 10_000_000));
    // A long window is the window.
    let mut long = MediaPlaylist::new(settings());
    for msn in 0..30 {
        long.apply(&start(msn, false));
        long.apply(&part(msn, 0));
        long.apply(&end(msn));
    }
    assert_eq!(long.first_msn(), Some(20));
}

#[test]
fn a_discontinuity_first_in_the_window_keeps_its_tag() {
    let mut pl = MediaPlaylist::new(PlaylistSettings {
        window_segments: 2,
        ..settings()
    });
    // 12 s: 10 s are kept (at least 3 target durations).
    for msn in 0..6 {
        pl.apply(&start(msn, msn == 1));
        pl.apply(&part(msn, 0));
        pl.apply(&end(msn));
    }
    let text = pl.render(Skip::No, &[]);
    // Segment 1 (discontinuity sequence 1) is first: the count stays 0, the tag stays.
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
}

#[test]
fn skip_v2_says_no_date_range_was_removed() {
    let text = playlist(10, 2).render(Skip::V2, &[]);
    assert!(
        text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=1,RECENTLY-REMOVED-DATERANGES=\"\"\n"),
        "{text}"
    );
}

/// (msn, discontinuity number) of each segment, counted as players do: the playlist's
/// DISCONTINUITY-SEQUENCE, plus one for each EXT-X-DISCONTINUITY up to the segment.
fn discontinuity_numbers(text: &str) -> Vec<(u64, u64)> {
    let mut msn = 0;
    let mut cc = 0;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().expect("msn");
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            cc = v.parse().expect("cc");
        } else if line == "#EXT-X-DISCONTINUITY" {
            cc += 1;
        } else if line.starts_with("#EXTINF") {
            out.push((msn, cc));
            msn += 1;
        }
    }
    out
}

/// A generation that moves from origin to origin (each resumed playlist starting after
/// the last segment served before) gives every origin's first segment a discontinuity
/// number above all earlier ones, however many reconnects each origin had.
#[test]
fn a_resumed_generation_never_repeats_a_discontinuity_number() {
    let origins: [(u64, u64, &[u64]); 3] = [(0, 9, &[3, 4, 7]), (10, 14, &[11, 12]), (15, 20, &[])];
    let mut seen_max = None;
    let mut earlier = None;
    for (first, last, reconnects) in origins {
        let mut pl = MediaPlaylist::new(PlaylistSettings {
            window_segments: 30,
            ..settings()
        });
        if first > 0 {
            pl = pl.resuming_at(first, first as u32, earlier);
        }
        for msn in first..=last {
            pl.apply(&start(
                msn,
                msn == first && first > 0 || reconnects.contains(&msn),
            ));
            pl.apply(&part(msn, 0));
            pl.apply(&end(msn));
        }
        // The earlier origins' segments listed as gaps come first.
        let own: Vec<(u64, u64)> = discontinuity_numbers(&pl.render(Skip::No, &[]))
            .into_iter()
            .filter(|(msn, _)| *msn >= first)
            .collect();
        let (msn, cc) = own[0];
        assert_eq!(msn, first);
        if let Some(before) = seen_max {
            assert!(cc > before, "origin at {first}: cc {cc} not above {before}");
        }
        seen_max = own.iter().map(|(_, c)| *c).max();
        earlier = pl.discontinuity_of(last);
        assert_eq!(earlier.map(|e| e.number), seen_max);
    }
}

/// A resumed playlist lists the earlier origin's last segments of its last
/// discontinuity run, up to its window, as gaps under their number: dated
/// back from its first own segment, a target duration each, under its first init
/// segment; they are not a whole segment to serve, a gap before the end survives
/// `end`, and they leave the window as own segments come.
#[test]
fn a_resumed_playlist_lists_the_earlier_origins_segments_as_gaps() {
    let mut pl = MediaPlaylist::new(PlaylistSettings {
        window_segments: 4,
        ..settings()
    })
    .resuming_at(
        12,
        12,
        Some(Discontinuity {
            number: 5,
            from_msn: 7,
        }),
    );
    assert!(!pl.has_whole_segment());
    assert_eq!(pl.next_part(), (12, 0));
    assert_eq!(decide(&pl, &q("")), Decision::Wait);
    let mut first = start(12, true);
    if let Output::SegmentStart(s) = &mut first {
        s.init_index = 12;
    }
    pl.apply(&first);
    pl.apply(&part(12, 0));
    assert!(!pl.has_whole_segment());
    pl.apply(&end(12));
    assert!(pl.has_whole_segment());
    // A request for a gap's segment or one of its parts is answered at once: no part
    // of it will come (a player that knew the earlier origin's playlist asks for one).
    assert_eq!(decide(&pl, &q("_HLS_msn=9")), Decision::Ready);
    assert_eq!(decide(&pl, &q("_HLS_msn=10&_HLS_part=3")), Decision::Ready);
    assert_eq!(decide(&pl, &q("_HLS_msn=11&_HLS_part=0")), Decision::Ready);
    let text = pl.render(Skip::No, &[]);
    let expected_head = "#EXT-X-MEDIA-SEQUENCE:9
#EXT-X-DISCONTINUITY-SEQUENCE:5
#EXT-X-MAP:URI=\"1/init-12.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T08:33:21.000Z
#EXT-X-GAP
#EXTINF:3.00000,
1/9.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T08:33:24.000Z
#EXT-X-GAP
#EXTINF:3.00000,
1/10.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T08:33:27.000Z
#EXT-X-GAP
#EXTINF:3.00000,
1/11.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T08:33:30.000Z
";
    assert!(text.contains(expected_head), "{text}");
    assert_eq!(
        discontinuity_numbers(&text),
        [(9, 5), (10, 5), (11, 5), (12, 6)]
    );
    assert_eq!(
        pl.discontinuity_of(12),
        Some(Discontinuity {
            number: 6,
            from_msn: 12
        })
    );
    // Own segments push the gaps out; the count of discontinuities follows only own.
    for msn in 13..18 {
        pl.apply(&start(msn, false));
        pl.apply(&part(msn, 0));
        pl.apply(&end(msn));
    }
    let text = pl.render(Skip::No, &[]);
    assert!(!text.contains("#EXT-X-GAP"), "{text}");
    assert_eq!(pl.first_msn(), Some(13));
    // Only the earlier origin's last run is listed; a playlist that ends before its
    // first own segment keeps the gaps.
    let run = Some(Discontinuity {
        number: 3,
        from_msn: 1,
    });
    let mut ended = MediaPlaylist::new(settings()).resuming_at(4, 4, run);
    ended.end();
    assert_eq!(ended.first_msn(), Some(1));
    assert_eq!(ended.segments().count(), 3);
    // Not told: no gaps, and a number no earlier origin reached.
    let blind = MediaPlaylist::new(settings()).resuming_at(4, 4, None);
    assert_eq!(blind.first_msn(), None);
    assert_eq!(blind.discontinuity_sequence, 4);
}

/// The gaps a resumed generation lists are as long as the earlier origin said its
/// segments were, and dated from the date it gave the last one; the first own segment
/// keeps its own date.
#[test]
fn gaps_are_listed_as_long_and_dated_as_the_earlier_origin_reported() {
    let run = Some(Discontinuity {
        number: 2,
        from_msn: 3,
    });
    // Segments 4 and 5 were whole (1.5 s, 2.5 s); 6 was open when reported, 7 taken
    // over: as long as the latest whole one.
    let times = GapTimes {
        first_known_msn: 4,
        durations_us: vec![1_500_000, 2_500_000],
        other_us: Some(2_500_000),
        dated: Some((6, 1_000_000)),
        init_index: Some(5),
    };
    let mut pl = MediaPlaylist::new(settings()).resuming_after(8, 8, run, &times);
    pl.apply(&start(8, true));
    pl.apply(&part(8, 0));
    let listed: Vec<_> = pl
        .segments()
        .map(|s| (s.msn, s.duration_us, s.program_date_time_ms, s.gap))
        .collect();
    assert_eq!(
        listed,
        [
            // Before the known ones, as long as the others.
            (3, Some(2_500_000), 1_000_000 - 4_000 - 2_500, true),
            (4, Some(1_500_000), 1_000_000 - 4_000, true),
            (5, Some(2_500_000), 1_000_000 - 2_500, true),
            (6, Some(2_500_000), 1_000_000, true),
            (7, Some(2_500_000), 1_002_500, true),
            (8, None, 1_795_249_986_000 + 16_000, false),
        ]
    );
    let text = pl.render(Skip::No, &[]);
    assert!(
        text.contains("#EXT-X-GAP\n#EXTINF:1.50000,\n1/4.m4s"),
        "{text}"
    );
    // Under the init segment the earlier origin named, then the own one.
    let (gaps, own) = text
        .split_once("#EXT-X-DISCONTINUITY\n")
        .expect("a discontinuity");
    assert!(gaps.contains("#EXT-X-MAP:URI=\"1/init-5.mp4\""), "{text}");
    assert!(own.contains("#EXT-X-MAP:URI=\"1/init.mp4\""), "{text}");
}

/// A delta update never skips a gap: the player would fill it in from its copy of the
/// earlier origin's playlist, where the segment was not a gap, and fetch it.
#[test]
fn a_delta_update_lists_the_gaps() {
    let run = Some(Discontinuity {
        number: 0,
        from_msn: 0,
    });
    let mut pl = MediaPlaylist::new(PlaylistSettings {
        window_segments: 20,
        ..settings()
    })
    .resuming_at(12, 12, run);
    for msn in 12..14 {
        pl.apply(&start(msn, msn == 12));
        pl.apply(&part(msn, 0));
        pl.apply(&end(msn));
    }
    let delta = pl.render(Skip::Yes, &[]);
    assert!(!delta.contains("#EXT-X-SKIP"), "{delta}");
    assert_eq!(delta.matches("#EXT-X-GAP").count(), 12, "{delta}");
    assert!(pl.has_whole_segment());
    // Once the gaps left the window, old segments are skipped again.
    for msn in 14..40 {
        pl.apply(&start(msn, false));
        pl.apply(&part(msn, 0));
        pl.apply(&end(msn));
    }
    let delta = pl.render(Skip::Yes, &[]);
    assert!(delta.contains("#EXT-X-SKIP"), "{delta}");
    assert!(!delta.contains("#EXT-X-GAP"), "{delta}");
    assert!(pl.has_whole_segment());
}

#[test]
fn a_joining_player_is_sent_to_the_last_keyframe_part_a_hold_back_before_the_end() {
    // Three whole 2 s segments (a keyframe on each part 0), then 4 parts: 6.8 s. A
    // hold-back (3 x 200 ms) before the end is 6.2 s; the last keyframe part at or
    // before it starts at 6.0 s.
    let pl = playlist(3, 4);
    let text = pl.render(Skip::No, &[]);
    assert!(
        text.contains("#EXT-X-START:TIME-OFFSET=6.001,PRECISE=YES\n"),
        "{text}"
    );
    // Exactly a hold-back after it still counts; one part less does not.
    assert!(playlist(3, 3)
        .render(Skip::No, &[])
        .contains("TIME-OFFSET=6.001,"));
    assert!(playlist(3, 2)
        .render(Skip::No, &[])
        .contains("TIME-OFFSET=4.001,"));
    // A delta update is for a player already playing; an ended playlist starts at 0.
    assert!(!pl.render(Skip::Yes, &[]).contains("EXT-X-START"));
    let mut ended = playlist(3, 4);
    ended.end();
    assert!(!ended.render(Skip::No, &[]).contains("EXT-X-START"));
    // Counted from the first segment still in the window (10 of 30 here).
    assert!(playlist(30, 4)
        .render(Skip::No, &[])
        .contains("TIME-OFFSET=20.001,"));
    // Too short to hold back a whole hold-back: none.
    assert!(!playlist(0, 2).render(Skip::No, &[]).contains("EXT-X-START"));
}
