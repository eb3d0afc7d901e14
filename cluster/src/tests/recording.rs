//! Recordings: pieces reported by origin nodes, finalization, failure, deletion.

use super::*;

fn piece(node: NodeId, first_msn: u64, segments: u64, finished: bool) -> RecordingPiece {
    RecordingPiece {
        node,
        first_msn,
        last_msn: segments.checked_sub(1).map(|n| first_msn + n),
        first_init: 0,
        last_init: 0,
        segments,
        duration_ms: segments * 2_000,
        bytes: segments * 1_000,
        finished,
        error: None,
    }
}

fn report(at: i64, p: RecordingPiece) -> Command {
    cmd(
        at,
        Op::ReportRecording {
            channel: "news".into(),
            generation: 1,
            piece: p,
        },
    )
}

fn end(at: i64) -> Command {
    cmd(
        at,
        Op::EndGeneration {
            channel: "news".into(),
            generation: 1,
            failed: false,
        },
    )
}

fn recording(s: &State) -> Recording {
    s.generation(1, 1)
        .and_then(|g| g.recording.clone())
        .expect("a recording")
}

#[test]
fn a_recording_is_finalized_when_its_generation_ends_and_its_pieces_close() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&report(20, piece(1, 0, 3, false))).expect("report");
    assert_eq!(recording(&s).status, RecordingStatus::Recording);
    // The publisher came back on node 2: a second piece, after the first.
    s.apply(&report(30, piece(1, 0, 5, true)))
        .expect("close piece 1");
    s.apply(&claim("news", 2, 40)).expect_err("node 1 is live");
    s.apply(&cmd(
        40,
        Op::MarkReconnecting {
            channel: "news".into(),
            generation: 1,
            node: None,
            epoch: 0,
        },
    ))
    .expect("reconnecting");
    s.apply(&claim("news", 2, 41)).expect("resume on node 2");
    s.apply(&report(50, piece(2, 5, 2, false)))
        .expect("piece 2");
    let r = recording(&s);
    assert_eq!((r.segments, r.bytes, r.duration_ms), (7, 7_000, 14_000));
    assert_eq!(r.pieces.iter().map(|p| p.node).collect::<Vec<_>>(), [1, 2]);
    // Ended, but node 2 has not closed its piece yet.
    s.apply(&end(60)).expect("end");
    assert_eq!(recording(&s).status, RecordingStatus::Recording);
    s.apply(&report(61, piece(2, 5, 3, true)))
        .expect("close piece 2");
    let r = recording(&s);
    assert_eq!(r.status, RecordingStatus::Finalized);
    assert_eq!((r.segments, r.closed_ms), (8, Some(61)));
}

#[test]
fn sizes_never_go_back_and_a_failure_sticks_with_its_reason() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&report(20, piece(1, 0, 4, false))).expect("report");
    assert!(matches!(
        s.apply(&report(21, piece(1, 0, 3, false))),
        Err(Refusal::WentBack { .. })
    ));
    let mut broken = piece(1, 0, 5, false);
    broken.error = Some("writing 4.m4s: No space left on device".into());
    s.apply(&report(22, broken)).expect("failure");
    // Writes work again: the recording still misses a segment, so it stays failed.
    s.apply(&report(23, piece(1, 0, 6, true)))
        .expect("later report");
    s.apply(&end(30)).expect("end");
    let r = recording(&s);
    assert_eq!(r.status, RecordingStatus::Failed);
    assert!(r
        .reason
        .as_deref()
        .is_some_and(|why| why.contains("No space left")));
    assert_eq!(r.segments, 6);
}

#[test]
fn a_piece_whose_node_went_down_fails_the_ended_recording() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&report(20, piece(1, 0, 4, false))).expect("report");
    s.apply(&mark_down(&s, TTL + 100, 1)).expect("down");
    s.apply(&end(TTL + 200)).expect("end");
    let r = recording(&s);
    assert_eq!(r.status, RecordingStatus::Failed);
    assert!(r.reason.as_deref().is_some_and(|w| w.contains("node 1")));
}

#[test]
fn a_recording_being_written_cannot_be_deleted_and_a_deleted_one_is_a_tombstone() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&report(20, piece(1, 0, 4, false))).expect("report");
    let delete = cmd(
        30,
        Op::DeleteRecording {
            channel: "news".into(),
            generation: 1,
        },
    );
    assert_eq!(
        s.apply(&delete),
        Err(Refusal::ChannelBusy {
            channel: "news".into()
        })
    );
    s.apply(&end(40)).expect("end");
    s.apply(&report(41, piece(1, 0, 4, true))).expect("close");
    s.apply(&delete).expect("delete");
    let r = recording(&s);
    assert_eq!(
        (r.status, r.bytes, r.pieces.len()),
        (RecordingStatus::Deleted, 0, 0)
    );
    // Gone for good: a late report does not bring it back, a second delete is a 404.
    assert!(matches!(
        s.apply(&report(50, piece(1, 0, 4, true))),
        Err(Refusal::NotFound { .. })
    ));
    assert!(matches!(s.apply(&delete), Err(Refusal::NotFound { .. })));
}

#[test]
fn retention_and_dvr_settings_are_checked() {
    let mut s = cluster();
    let patch = |p: ChannelPatch| {
        cmd(
            1,
            Op::UpdateChannel {
                slug: "news".into(),
                patch: p,
            },
        )
    };
    let zero_age = ChannelPatch {
        retention: Some(RetentionPolicy {
            max_age_s: Some(0),
            max_bytes: None,
        }),
        ..Default::default()
    };
    assert!(matches!(
        s.apply(&patch(zero_age)),
        Err(Refusal::InvalidField { field, .. }) if field == "retention.max_age_s"
    ));
    let two_hours = LlHlsSettings {
        dvr_window_s: 7_200,
        ..Default::default()
    };
    s.apply(&patch(ChannelPatch {
        ll_hls: Some(two_hours),
        ..Default::default()
    }))
    .expect("a 2 h DVR window");
    assert_eq!(two_hours.playlist_segments(), 3_600);
    let too_long = LlHlsSettings {
        dvr_window_s: 7_200,
        segment_target_ms: 200,
        ..Default::default()
    };
    assert!(matches!(
        s.apply(&patch(ChannelPatch { ll_hls: Some(too_long), ..Default::default() })),
        Err(Refusal::InvalidField { field, .. }) if field == "ll_hls.dvr_window_s"
    ));
}

/// Channel "news" with recordings 1..=3 finalized at 1 s, 2 s, 3 s of 1000, 2000, 3000
/// bytes, and recording 4 being written (4000 bytes).
fn four_recordings(retention: RetentionPolicy) -> State {
    let mut s = cluster();
    s.apply(&cmd(
        0,
        Op::UpdateChannel {
            slug: "news".into(),
            patch: ChannelPatch {
                retention: Some(retention),
                ..Default::default()
            },
        },
    ))
    .expect("retention");
    for g in 1..=4u64 {
        let at = g as i64 * 1_000;
        s.apply(&claim("news", 1, at)).expect("claim");
        let mut p = piece(1, g * 100, g, g < 4);
        p.bytes = g * 1_000;
        s.apply(&cmd(
            at,
            Op::ReportRecording {
                channel: "news".into(),
                generation: g,
                piece: p,
            },
        ))
        .expect("report");
        if g < 4 {
            s.apply(&cmd(
                at,
                Op::EndGeneration {
                    channel: "news".into(),
                    generation: g,
                    failed: false,
                },
            ))
            .expect("end");
        }
    }
    s
}

#[test]
fn retention_prunes_by_age_and_by_bytes_never_what_is_being_written() {
    // By age (2 s): closed at 1, 2 and 3 s.
    let by_age = four_recordings(RetentionPolicy {
        max_age_s: Some(2),
        max_bytes: None,
    });
    assert_eq!(by_age.recordings_to_prune(1, 2_900), Vec::<u64>::new());
    assert_eq!(by_age.recordings_to_prune(1, 4_500), vec![1, 2]);
    // Much later the one being written is still not chosen.
    assert_eq!(by_age.recordings_to_prune(1, 1_000_000), vec![1, 2, 3]);
    // By bytes: 10000 in all, at most 7500: the oldest go until it fits (1 and 2);
    // with a limit below the one being written, every finished one goes but it stays.
    let by_bytes = four_recordings(RetentionPolicy {
        max_age_s: None,
        max_bytes: Some(7_500),
    });
    assert_eq!(by_bytes.recordings_to_prune(1, 5_000), vec![1, 2]);
    let tiny = four_recordings(RetentionPolicy {
        max_age_s: None,
        max_bytes: Some(10),
    });
    assert_eq!(tiny.recordings_to_prune(1, 5_000), vec![1, 2, 3]);
}

fn forget(channel: ChannelId, generation: u64) -> Command {
    cmd(
        0,
        Op::ForgetGeneration {
            channel,
            generation,
        },
    )
}

fn end_number(at: i64, generation: u64) -> Command {
    cmd(
        at,
        Op::EndGeneration {
            channel: "news".into(),
            generation,
            failed: false,
        },
    )
}

/// Ended generations leave the state once nothing can be played from them and nodes
/// no longer keep their objects; numbering goes on; a channel's last generation, an
/// active one and a kept recording stay.
#[test]
fn ended_generations_are_forgotten_after_retention() {
    const KEEP: i64 = 600_000;
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim 1");
    s.apply(&end_number(100, 1)).expect("end 1");
    s.apply(&claim("news", 1, 200)).expect("claim 2");
    s.apply(&cmd(
        210,
        Op::ReportRecording {
            channel: "news".into(),
            generation: 2,
            piece: piece(1, 0, 3, true),
        },
    ))
    .expect("recording of 2");
    s.apply(&end_number(300, 2)).expect("end 2");
    s.apply(&claim("news", 1, 400)).expect("claim 3");
    // Generation 3 is active, 2 has a recording, 1 ended at 100.
    assert!(s.generations_to_forget(100 + KEEP, KEEP, 10).is_empty());
    assert_eq!(s.generations_to_forget(101 + KEEP, KEEP, 10), [(1, 1)]);
    s.apply(&forget(1, 3)).expect_err("generation 3 is active");
    s.apply(&forget(1, 2))
        .expect_err("generation 2 has a recording");
    s.apply(&forget(1, 1)).expect("forget 1");
    assert!(s.generation(1, 1).is_none());
    s.apply(&forget(1, 1)).expect_err("already gone");
    s.apply(&end_number(500, 3)).expect("end 3");
    // The channel's last generation stays (when it was last live), however old.
    assert!(s
        .generations_to_forget(500 + 10 * KEEP, KEEP, 10)
        .is_empty());
    // A deleted recording goes a retention after its deletion.
    s.apply(&cmd(
        1_000,
        Op::DeleteRecording {
            channel: "news".into(),
            generation: 2,
        },
    ))
    .expect("delete recording 2");
    assert!(s.generations_to_forget(1_000 + KEEP, KEEP, 10).is_empty());
    assert_eq!(s.generations_to_forget(1_001 + KEEP, KEEP, 10), [(1, 2)]);
    s.apply(&forget(1, 2)).expect("forget 2");
    // Numbering goes on after forgotten generations.
    s.apply(&claim("news", 1, 2_000)).expect("claim 4");
    assert_eq!(s.active_generation(1).map(|g| g.number), Some(4));
    s.apply(&end_number(2_100, 4)).expect("end 4");
    // A deleted channel's generations all go, its last one too.
    s.apply(&cmd(
        3_000,
        Op::DeleteChannel {
            slug: "news".into(),
        },
    ))
    .expect("delete channel");
    assert_eq!(
        s.generations_to_forget(2_101 + KEEP, KEEP, 10),
        [(1, 3), (1, 4)]
    );
    assert_eq!(s.generations_to_forget(2_101 + KEEP, KEEP, 1), [(1, 3)]);
    s.apply(&forget(1, 3)).expect("forget 3");
    s.apply(&forget(1, 4)).expect("forget 4");
    assert!(s.generations.is_empty(), "{:?}", s.generations);
}
