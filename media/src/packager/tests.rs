use proptest::prelude::*;

use super::*;
use crate::testing::*;

const NOW_MS: i64 = 1_795_249_986_000;

fn run(
    settings: PackagerSettings,
    configs: &[TrackConfig],
    frames: Vec<Frame>,
) -> (Vec<Output>, Packager) {
    let mut p = Packager::new(settings).expect("valid settings");
    for c in configs {
        p.push(Input::Config(c.clone()), NOW_MS).expect("config");
    }
    let mut out = Vec::new();
    for f in frames {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
        while let Some(o) = p.poll_output() {
            out.push(o);
        }
    }
    p.finish().expect("finish");
    while let Some(o) = p.poll_output() {
        out.push(o);
    }
    (out, p)
}

fn video_only() -> PackagerSettings {
    PackagerSettings {
        expect_audio: false,
        ..PackagerSettings::default()
    }
}

/// A compact trace: `I0`, `S3`, `S3d` (discontinuity), `P3.1:200000k` (k = independent), `E3:2000000`.
fn trace(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Init(i) => format!("I{}", i.index),
            Output::SegmentStart(s) => {
                format!("S{}{}", s.msn, if s.discontinuity { "d" } else { "" })
            }
            Output::Part(p) => format!(
                "P{}.{}:{}{}",
                p.msn,
                p.index,
                p.duration_us,
                if p.independent { "k" } else { "" }
            ),
            Output::SegmentEnd(e) => format!("E{}:{}", e.msn, e.duration_us),
        })
        .collect()
}

fn segment_durations(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::SegmentEnd(e) => Some(e.duration_us),
            _ => None,
        })
        .collect()
}

#[test]
fn two_second_gop_gives_ten_parts_per_segment() {
    let (out, _) = run(video_only(), &[video_config()], video_frames(30, 60, 120));
    let mut expected = vec!["I0".to_string(), "S0".to_string()];
    for msn in 0..2 {
        if msn == 1 {
            expected.push("S1".into());
        }
        for part in 0..10 {
            expected.push(format!(
                "P{msn}.{part}:200000{}",
                if part == 0 { "k" } else { "" }
            ));
        }
        expected.push(format!("E{msn}:2000000"));
    }
    assert_eq!(trace(&out), expected);
}

#[test]
fn part_bytes_are_fragments_with_the_frames_in_order() {
    let (out, _) = run(video_only(), &[video_config()], video_frames(30, 60, 12));
    let parts: Vec<&Part> = out
        .iter()
        .filter_map(|o| match o {
            Output::Part(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 2);
    let first = read_fragment(&parts[0].data);
    assert_eq!(
        first,
        vec![TrafFacts {
            track_id: 1,
            base_decode_time: 0,
            durations: vec![3000; 6],
            sizes: vec![6; 6],
        }]
    );
    assert_eq!(read_fragment(&parts[1].data)[0].base_decode_time, 18_000);
}

#[test]
fn obs_auto_gop_keeps_segments_within_target_duration() {
    // 250-frame GOP at 30 fps: 8.33 s between keyframes, TARGETDURATION 3.
    let (out, p) = run(video_only(), &[video_config()], video_frames(30, 250, 500));
    assert_eq!(p.settings().target_duration_s(), 3);
    assert_eq!(
        segment_durations(&out),
        vec![2_800_000, 2_800_000, 2_733_333, 2_800_000, 2_800_000, 2_733_333]
    );
    let t = trace(&out);
    // The segment after the keyframe starts with an independent part.
    let at = t
        .iter()
        .position(|s| s == "E2:2733333")
        .expect("segment 2 ends at the keyframe");
    assert_eq!(t[at - 1], "P2.13:133333");
    assert_eq!(t[at + 1], "S3");
    assert_eq!(t[at + 2], "P3.0:200000k");
    // Forced cuts mid-GOP start segments with a dependent part.
    assert!(t.contains(&"P1.0:200000".to_string()));
}

#[test]
fn audio_and_video_share_fragments() {
    let frames = interleave(video_frames(30, 60, 60), audio_frames(94));
    let (out, p) = run(
        PackagerSettings::default(),
        &[video_config(), audio_config()],
        frames,
    );
    let Output::Init(init) = &out[0] else {
        panic!("init first, got {:?}", out[0]);
    };
    assert_eq!(init.tracks.len(), 2);
    let mut audio_samples = 0;
    let mut video_samples = 0;
    let mut last_audio_end = None;
    for o in &out {
        if let Output::Part(part) = o {
            for traf in read_fragment(&part.data) {
                match traf.track_id {
                    1 => video_samples += traf.durations.len(),
                    2 => {
                        if let Some(end) = last_audio_end {
                            assert_eq!(traf.base_decode_time, end, "audio runs are contiguous");
                        }
                        last_audio_end = Some(
                            traf.base_decode_time
                                + traf.durations.iter().map(|d| u64::from(*d)).sum::<u64>(),
                        );
                        audio_samples += traf.durations.len();
                    }
                    id => panic!("unexpected track {id}"),
                }
            }
        }
    }
    assert_eq!((video_samples, audio_samples), (60, 94));
    assert_eq!(p.stats().frames_dropped, 0);
}

#[test]
fn audio_only_parts_are_independent_and_below_target() {
    let settings = PackagerSettings {
        expect_video: false,
        ..PackagerSettings::default()
    };
    let (out, _) = run(settings, &[audio_config()], audio_frames(470));
    let t = trace(&out);
    // Nine 1024-sample frames (192 ms) fit a 200 ms part.
    assert_eq!(t[2], "P0.0:192000k");
    for o in &out {
        if let Output::Part(p) = o {
            assert!(p.independent && p.duration_us <= 200_000, "{p:?}");
            // The only track is track 1, as in the init segment.
            assert_eq!(read_fragment(&p.data)[0].track_id, 1);
        }
    }
    assert!(segment_durations(&out)
        .iter()
        .all(|d| (2_000_000..=2_200_000).contains(d) || *d < 2_000_000));
}

#[test]
fn video_before_the_first_keyframe_is_dropped() {
    let mut frames = video_frames(30, 60, 70);
    frames.drain(0..5); // the stream starts mid-GOP
    let (out, p) = run(video_only(), &[video_config()], frames);
    assert_eq!(p.stats().frames_dropped, 55);
    assert_eq!(trace(&out)[2], "P0.0:200000k");
}

#[test]
fn backwards_timestamps_start_a_discontinuity_and_keep_output_monotonic() {
    let mut frames = video_frames(30, 30, 60);
    frames.extend(video_frames(30, 30, 30)); // encoder restarted at 0
    let (out, _) = run(video_only(), &[video_config()], frames);
    let t = trace(&out);
    assert!(
        t.contains(&"S1d".to_string()) || t.contains(&"S2d".to_string()),
        "{t:?}"
    );
    let mut last = 0;
    for o in &out {
        if let Output::Part(p) = o {
            let tfdt = read_fragment(&p.data)[0].base_decode_time;
            assert!(tfdt >= last, "tfdt {tfdt} after {last}");
            last = tfdt;
        }
    }
    assert_eq!(
        last,
        89 * 3000 - 6 * 3000 + 3000,
        "continues right after 2 s"
    );
}

#[test]
fn forward_jump_is_a_discontinuity() {
    let mut frames = video_frames(30, 30, 30);
    frames.extend(video_frames(30, 30, 30).into_iter().map(|f| Frame {
        dts: f.dts + 90_000 * 3600,
        ..f
    }));
    let (out, p) = run(video_only(), &[video_config()], frames);
    assert_eq!(p.stats().discontinuities, 1);
    assert!(trace(&out).iter().any(|s| s.ends_with('d')));
}

#[test]
fn explicit_discontinuity_waits_for_a_keyframe() {
    let mut p = Packager::new(video_only()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    for f in video_frames(30, 30, 20) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.push(Input::Discontinuity, NOW_MS + 1000)
        .expect("discontinuity");
    let mut restarted = video_frames(30, 30, 40);
    restarted.drain(0..3); // the new publisher's first frames are not a keyframe
    for f in restarted {
        p.push(Input::Frame(f), NOW_MS + 2000).expect("frame");
    }
    let mut out = Vec::new();
    while let Some(o) = p.poll_output() {
        out.push(o);
    }
    let start = out
        .iter()
        .find_map(|o| match o {
            Output::SegmentStart(s) if s.discontinuity => Some(s.clone()),
            _ => None,
        })
        .expect("a segment after the discontinuity");
    assert_eq!(start.program_date_time_ms, NOW_MS + 2000);
    assert_eq!(p.stats().frames_dropped, 27);
}

#[test]
fn a_new_decoder_config_gives_a_new_init_and_discontinuity() {
    let mut p = Packager::new(video_only()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    for f in video_frames(30, 30, 20) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    let TrackConfig::Video(mut v) = video_config() else {
        unreachable!()
    };
    v.width = 640;
    p.push(Input::Config(TrackConfig::Video(v)), NOW_MS)
        .expect("config");
    for f in video_frames(30, 30, 40).into_iter().skip(20) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    let mut t = Vec::new();
    while let Some(o) = p.poll_output() {
        t.push(o);
    }
    let t = trace(&t);
    let i1 = t.iter().position(|s| s == "I1").expect("second init");
    assert!(t[i1 + 1].ends_with('d'), "{t:?}");
}

#[test]
fn first_msn_is_honoured() {
    let settings = PackagerSettings {
        first_msn: 41,
        ..video_only()
    };
    let (out, _) = run(settings, &[video_config()], video_frames(30, 60, 61));
    assert_eq!(trace(&out)[1], "S41");
}

#[test]
fn a_resumed_generation_continues_the_timeline_where_the_last_origin_ended() {
    // Another origin made 30 s of this generation; this encoder starts again at 0.
    let settings = PackagerSettings {
        first_msn: 15,
        starts_with_discontinuity: true,
        resume_at_us: Some(30_000_000),
        ..video_only()
    };
    let (out, p) = run(settings, &[video_config()], video_frames(30, 60, 61));
    let tfdts = part_tfdts(&out);
    // 90 kHz video: 30 s = 2_700_000 ticks.
    assert_eq!(tfdts.first(), Some(&2_700_000), "{tfdts:?}");
    assert!(tfdts.windows(2).all(|w| w[0] < w[1]));
    assert!(p.output_end_us() >= 32_000_000);
    assert!(trace(&out)[1].ends_with('d'));
}

#[test]
fn bad_settings_are_refused() {
    assert!(Packager::new(PackagerSettings {
        part_target_ms: 10,
        ..PackagerSettings::default()
    })
    .is_err());
    assert!(Packager::new(PackagerSettings {
        segment_target_ms: 100,
        ..PackagerSettings::default()
    })
    .is_err());
}

/// Invariants over any output sequence.
fn check_invariants(out: &[Output], p: &Packager, cfr: bool) -> Result<(), TestCaseError> {
    let td_us = u64::from(p.settings().target_duration_s()) * 1_000_000;
    // What the playlist advertises: the configured target fitted to the frame rate.
    let part_target_us = u64::from(p.part_target_ms()) * 1000;
    let mut previous_part: Option<u64> = None;
    let mut expected_msn: Option<u64> = None;
    let mut open: Option<(u64, u32)> = None;
    for o in out {
        match o {
            Output::Init(_) => {}
            Output::SegmentStart(s) => {
                prop_assert!(open.is_none(), "segment started inside another");
                if let Some(m) = expected_msn {
                    prop_assert_eq!(s.msn, m);
                }
                open = Some((s.msn, 0));
                previous_part = None;
            }
            Output::Part(p) => {
                let (msn, next) =
                    open.ok_or_else(|| TestCaseError::fail("part outside a segment"))?;
                prop_assert_eq!((p.msn, p.index), (msn, next));
                open = Some((msn, next + 1));
                // A part runs past the target only when the encoder left a gap longer than
                // a part (at most the 400 ms that is not yet a discontinuity) and the
                // frame after it is the last of its epoch.
                let limit = if cfr {
                    part_target_us
                } else {
                    part_target_us + 2 * 400_000
                };
                prop_assert!(p.duration_us <= limit, "part {} us", p.duration_us);
                // Only the last part of a segment may be shorter than 85 % of the target.
                if let (true, Some(previous)) = (cfr, previous_part) {
                    prop_assert!(
                        previous * 100 >= part_target_us * 85,
                        "short part {} us inside a segment",
                        previous
                    );
                }
                previous_part = Some(p.duration_us);
            }
            Output::SegmentEnd(e) => {
                let (msn, parts) = open
                    .take()
                    .ok_or_else(|| TestCaseError::fail("end outside a segment"))?;
                prop_assert_eq!((e.msn, e.parts), (msn, parts));
                // EXTINF rounded to the nearest second never exceeds TARGETDURATION.
                prop_assert!(
                    (e.duration_us + 500_000) / 1_000_000 <= td_us / 1_000_000,
                    "segment {} us",
                    e.duration_us
                );
                expected_msn = Some(msn + 1);
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn constant_frame_rates_and_any_gop_keep_every_invariant(
        fps in prop::sample::select(vec![24i64, 25, 30, 50, 60]),
        gop in 1i64..400,
        count in 1i64..600,
        part_target_ms in prop::sample::select(vec![100u32, 200, 333, 500, 1000]),
        segment_factor in 1u32..8,
    ) {
        let settings = PackagerSettings {
            part_target_ms,
            segment_target_ms: part_target_ms * segment_factor,
            expect_audio: false,
            ..PackagerSettings::default()
        };
        let (out, p) = run(settings.clone(), &[video_config()], video_frames(fps, gop, count));
        check_invariants(&out, &p, true)?;
        prop_assert_eq!(p.stats().frames_dropped, 0);
    }

    #[test]
    fn arbitrary_timings_never_panic_and_keep_the_invariants(
        steps in prop::collection::vec((-200_000i64..200_000, any::<bool>(), any::<bool>()), 1..300),
    ) {
        let settings = PackagerSettings::default();
        let mut video_dts = 0i64;
        let mut audio_dts = 0i64;
        let mut frames = Vec::new();
        for (step, key, is_audio) in steps {
            if is_audio {
                audio_dts += step * 48 / 90;
                frames.push(Frame { track: TrackKind::Audio, dts: audio_dts, cts: 0, keyframe: true, data: Bytes::from_static(&[1]) });
            } else {
                video_dts += step;
                frames.push(Frame { dts: video_dts, ..video_at_ticks(0, key) });
            }
        }
        let (out, p) = run(settings.clone(), &[video_config(), audio_config()], frames);
        check_invariants(&out, &p, false)?;
        // Every output timeline is monotonic per kind of track, in time (track ids and
        // timescales follow the init segment in force).
        let mut last_us = std::collections::HashMap::new();
        let mut tracks: Vec<TrackConfig> = Vec::new();
        for o in &out {
            match o {
                Output::Init(init) => tracks = init.tracks.clone(),
                Output::Part(part) => {
                    for traf in read_fragment(&part.data) {
                        let config = &tracks[traf.track_id as usize - 1];
                        let us = traf.base_decode_time as i64 * 1_000_000 / i64::from(config.timescale());
                        let prev = last_us.insert(config.kind(), us).unwrap_or(0);
                        prop_assert!(us >= prev, "{:?} went back from {} to {} us", config.kind(), prev, us);
                    }
                }
                _ => {}
            }
        }
        prop_assert!(p.stats().frames_in >= p.stats().frames_dropped);
    }
}

fn drain_all(p: &mut Packager) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn part_tfdts(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Part(p) => Some(read_fragment(&p.data)[0].base_decode_time),
            _ => None,
        })
        .collect()
}

/// A publisher that sent 10 s of media within a second of wall clock, then reconnected:
/// the segment after the discontinuity is dated by the wall clock, but not before the
/// segment before it ends (their dates would overlap).
#[test]
fn a_segment_after_a_discontinuity_is_not_dated_before_the_last_one_ends() {
    let mut p = Packager::new(video_only()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    for f in video_frames(30, 60, 300) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.push(Input::Discontinuity, NOW_MS + 1000)
        .expect("discontinuity");
    for f in video_frames(30, 60, 120) {
        p.push(Input::Frame(f), NOW_MS + 1000).expect("frame");
    }
    p.finish().expect("finish");
    let out = drain_all(&mut p);
    let mut until = None;
    let mut checked = 0;
    for o in &out {
        match o {
            Output::SegmentStart(s) => {
                if let Some(until) = until {
                    assert!(
                        s.program_date_time_ms >= until,
                        "segment {} dated {} before the last one ended at {until}",
                        s.msn,
                        s.program_date_time_ms
                    );
                    checked += 1;
                }
                until = Some(s.program_date_time_ms);
            }
            Output::SegmentEnd(e) => {
                until = until.map(|d| d + (e.duration_us / 1000) as i64);
            }
            _ => {}
        }
    }
    assert!(checked >= 5, "{checked} segments checked");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SegmentStart(s) if s.discontinuity)));
}

/// A resumed generation's first segment is dated after the earlier origin's last one
/// (listed as gaps), even when this node's clock is behind.
#[test]
fn a_resumed_generation_is_dated_after_the_earlier_origins_segments() {
    let settings = PackagerSettings {
        dated_until_ms: Some(NOW_MS + 60_000),
        ..video_only()
    };
    let (out, _) = run(settings, &[video_config()], video_frames(30, 60, 120));
    let dates: Vec<i64> = out
        .iter()
        .filter_map(|o| match o {
            Output::SegmentStart(s) => Some(s.program_date_time_ms),
            _ => None,
        })
        .collect();
    assert_eq!(dates, [NOW_MS + 60_000, NOW_MS + 62_000]);
}

#[test]
fn two_discontinuities_in_a_row_keep_the_timeline_and_the_new_publisher() {
    let mut p = Packager::new(video_only()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    for f in video_frames(30, 30, 300) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.push(Input::Discontinuity, NOW_MS).expect("first");
    p.push(Input::Discontinuity, NOW_MS).expect("second");
    for f in video_frames(30, 30, 60) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.finish().expect("finish");
    let tfdts = part_tfdts(&drain_all(&mut p));
    assert!(tfdts.windows(2).all(|w| w[0] <= w[1]), "{tfdts:?}");
    // The new publisher's frames continue after 10 s, none dropped.
    assert!(*tfdts.last().unwrap_or(&0) > 10 * 90_000, "{tfdts:?}");
    assert_eq!(p.stats().frames_dropped, 0);
}

#[test]
fn video_that_misses_the_start_joins_at_its_first_keyframe() {
    let mut p = Packager::new(PackagerSettings::default()).expect("settings");
    p.push(Input::Config(audio_config()), NOW_MS)
        .expect("config");
    // Three seconds of audio alone: the packager starts without video.
    for f in audio_frames(141) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    let video = video_frames(30, 60, 150).into_iter().map(|f| Frame {
        dts: f.dts + 3 * 90_000,
        ..f
    });
    let audio = audio_frames(141 + 235).into_iter().skip(141);
    for f in interleave(video.collect(), audio.collect()) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.finish().expect("finish");
    let out = drain_all(&mut p);
    let inits: Vec<usize> = out
        .iter()
        .filter_map(|o| match o {
            Output::Init(i) => Some(i.tracks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(inits, vec![1, 2], "audio alone, then audio with video");
    let video_samples: usize = out
        .iter()
        .filter_map(|o| match o {
            Output::Part(p) => Some(read_fragment(&p.data)),
            _ => None,
        })
        .flatten()
        .filter(|t| t.sizes.first() == Some(&6))
        .map(|t| t.sizes.len())
        .sum();
    assert!(
        video_samples >= 140,
        "video packaged: {video_samples} frames"
    );
}

#[test]
fn the_new_publishers_keyframe_survives_audio_arriving_first() {
    let mut p = Packager::new(PackagerSettings::default()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    p.push(Input::Config(audio_config()), NOW_MS)
        .expect("config");
    for f in interleave(video_frames(30, 30, 60), audio_frames(94)) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.push(Input::Discontinuity, NOW_MS).expect("discontinuity");
    let mut restarted = audio_frames(2);
    restarted[0].dts = 960; // 20 ms, before the keyframe at 0 ms
    restarted.extend(video_frames(30, 30, 30));
    for f in restarted {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.finish().expect("finish");
    let out = drain_all(&mut p);
    let after: Vec<&Output> = out
        .iter()
        .skip_while(|o| !matches!(o, Output::SegmentStart(s) if s.discontinuity))
        .collect();
    let first_part = after.iter().find_map(|o| match o {
        Output::Part(p) => Some(p),
        _ => None,
    });
    assert!(
        first_part.is_some_and(|p| p.independent),
        "{:?}",
        trace(&out)
    );
}

#[test]
fn a_video_stall_with_audio_going_on_makes_no_giant_part() {
    let mut p = Packager::new(PackagerSettings::default()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    p.push(Input::Config(audio_config()), NOW_MS)
        .expect("config");
    let video: Vec<Frame> = video_frames(30, 30, 30)
        .into_iter()
        .chain(video_frames(30, 30, 30).into_iter().map(|f| Frame {
            dts: f.dts + 40 * 90_000,
            ..f
        }))
        .collect();
    for f in interleave(video, audio_frames(48_000 * 41 / 1024)) {
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    p.finish().expect("finish");
    for o in drain_all(&mut p) {
        if let Output::Part(part) = o {
            assert!(
                part.duration_us <= u64::from(p.part_target_ms()) * 1000,
                "{part:?}"
            );
            let audio: usize = read_fragment(&part.data)
                .iter()
                .filter(|t| t.track_id == 2)
                .map(|t| t.sizes.len())
                .sum();
            assert!(audio < 100, "{audio} audio frames in one part");
        }
    }
}

#[test]
fn dropped_frames_do_not_make_a_part_longer_than_part_target() {
    let mut frames = video_frames(30, 60, 120);
    frames.remove(6);
    frames.remove(40);
    let (out, p) = run(video_only(), &[video_config()], frames);
    let target_us = u64::from(p.part_target_ms()) * 1000;
    for o in &out {
        if let Output::Part(part) = o {
            assert!(part.duration_us <= target_us, "{part:?} over {target_us}");
        }
    }
    // Segments still add up to the media: 4 s.
    assert_eq!(segment_durations(&out).iter().sum::<u64>(), 4_000_000);
}

#[test]
fn program_date_time_is_when_the_first_frame_arrived() {
    let mut p = Packager::new(PackagerSettings::default()).expect("settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    p.push(Input::Config(audio_config()), NOW_MS)
        .expect("config");
    // Video arrives first; the audio that completes the start comes 500 ms later.
    for (i, f) in video_frames(30, 30, 15).into_iter().enumerate() {
        p.push(Input::Frame(f), NOW_MS + i as i64 * 33)
            .expect("frame");
    }
    for f in audio_frames(30) {
        p.push(Input::Frame(f), NOW_MS + 500).expect("frame");
    }
    let start = drain_all(&mut p).into_iter().find_map(|o| match o {
        Output::SegmentStart(s) => Some(s),
        _ => None,
    });
    assert_eq!(start.map(|s| s.program_date_time_ms), Some(NOW_MS));
}

#[test]
fn a_resumed_generation_keeps_counting_inits_and_starts_discontinuous() {
    let settings = PackagerSettings {
        first_msn: 12,
        first_init_index: 2,
        starts_with_discontinuity: true,
        ..video_only()
    };
    let (out, _) = run(settings, &[video_config()], video_frames(30, 60, 30));
    assert_eq!(trace(&out)[..2], ["I2".to_string(), "S12d".to_string()]);
}

/// A generation resumed on another node advertises the PART-TARGET its playlist had,
/// whatever the channel is set to now: the same encoder gets the same parts, one at
/// another frame rate gets parts under that target.
#[test]
fn a_resumed_generation_advertises_the_earlier_part_target() {
    let (first_out, first) = run(video_only(), &[video_config()], video_frames(30, 60, 120));
    let advertised = first.part_target_ms();
    assert_ne!(advertised, 200, "fitted to 30 fps");
    let parts = |out: &[Output]| -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::Part(p) => Some(p.duration_us),
                _ => None,
            })
            .collect()
    };
    for fps in [30, 25, 24, 60] {
        let settings = PackagerSettings {
            part_target_ms: 500,
            advertised_part_target_ms: Some(advertised),
            ..video_only()
        };
        let (out, p) = run(
            settings,
            &[video_config()],
            video_frames(fps, 2 * fps, 4 * fps),
        );
        assert_eq!(p.part_target_ms(), advertised, "{fps} fps");
        let durations = parts(&out);
        assert!(durations.len() >= 16, "{fps} fps: {durations:?}");
        assert!(
            durations.iter().all(|d| *d <= u64::from(advertised) * 1000),
            "{fps} fps: {durations:?} over {advertised} ms"
        );
        if fps == 30 {
            assert_eq!(
                durations[..6],
                parts(&first_out)[..6],
                "the same parts again"
            );
        }
    }
    assert!(Packager::new(PackagerSettings {
        advertised_part_target_ms: Some(0),
        ..PackagerSettings::default()
    })
    .is_err());
}

/// A publisher whose timestamps stop advancing never ends a part: past
/// MAX_QUEUED_BYTES the packager writes what it holds and refuses the publisher,
/// instead of growing one part without bound.
#[test]
fn a_publisher_with_stuck_timestamps_is_refused_with_bounded_memory() {
    let mut p = Packager::new(video_only()).expect("valid settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    let big = Bytes::from(vec![0u8; 1 << 20]);
    let mut refused = None;
    for i in 0..400 {
        let mut f = video_at_ticks(if i < 30 { i * 3000 } else { 90_000 }, i == 0);
        f.data = big.clone();
        match p.push(Input::Frame(f), NOW_MS) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        while p.poll_output().is_some() {}
        let queued: usize = p.tracks.iter().map(|t| t.queued_bytes).sum();
        assert!(
            queued <= MAX_QUEUED_BYTES + (1 << 20),
            "{queued} bytes queued"
        );
    }
    let (at, e) = refused.expect("refused");
    assert!(matches!(e, PackagerError::Stalled { .. }), "{e}");
    assert!(
        at < 30 + (MAX_QUEUED_BYTES >> 20) as i64 + 2,
        "refused only at frame {at}"
    );
    assert_eq!(p.tracks.iter().map(|t| t.queued_bytes).sum::<usize>(), 0);
}

/// Frames waiting for the start (no keyframe yet) are bounded in bytes too.
#[test]
fn the_startup_buffer_is_bounded_in_bytes() {
    let mut p = Packager::new(video_only()).expect("valid settings");
    p.push(Input::Config(video_config()), NOW_MS)
        .expect("config");
    let big = Bytes::from(vec![0u8; 4 << 20]);
    for i in 0..200 {
        // No keyframe ever, all at one time: the packager never starts.
        let mut f = video_at_ticks(i, false);
        f.data = big.clone();
        p.push(Input::Frame(f), NOW_MS).expect("frame");
    }
    let held: usize = p.startup.iter().map(|(f, _)| f.data.len()).sum();
    assert!(
        held <= MAX_QUEUED_BYTES,
        "{held} bytes held before the start"
    );
    assert_eq!(held, p.startup_bytes);
}
