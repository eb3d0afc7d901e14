//! Pulled channels: placed by the supervisor through `placement::choose`, moved when
//! their node's lease expires, never moved when pinned or fed by hardware.

use super::*;
use crate::placement::{self, Unplaceable};

fn create_pulled(slug: &str, placement: Placement, at: i64) -> Command {
    let mut c = create_channel(slug, at);
    if let Op::CreateChannel {
        ingest,
        placement: p,
        ..
    } = &mut c.op
    {
        *ingest = Ingest::SrtCaller {
            url: "srt://venue.example:9000".into(),
        };
        *p = placement;
    }
    c
}

fn place(slug: &str, node: NodeId, at: i64) -> Command {
    cmd(
        at,
        Op::PlaceChannel {
            channel: slug.into(),
            node,
        },
    )
}

fn renew(s: &mut State, nodes: &[NodeId], at: i64) {
    for n in nodes {
        s.apply(&cmd(at, Op::RenewLease { node: *n }))
            .expect("renew");
    }
}

fn apply_all(s: &mut State, decided: &[Command]) {
    for c in decided {
        s.apply(c).expect("the supervisor's decision applies");
    }
}

#[test]
fn a_pulled_channel_is_placed_on_the_least_loaded_node_and_moved_when_it_dies() {
    let mut s = cluster();
    // Node 1 originates "news": the pull goes to node 2, the lowest id of the idle ones.
    s.apply(&claim("news", 1, 10)).expect("claim news");
    s.apply(&create_pulled("venue", Placement::Any, 20))
        .expect("pulled channel");
    let decided = decide(&s, 100);
    assert_eq!(decided, vec![place("venue", 2, 100)]);
    apply_all(&mut s, &decided);
    let venue = s.channel_by_slug("venue").expect("venue");
    assert_eq!((venue.puller, venue.restarts), (Some(2), 0));
    // Placed and alive: nothing more to decide.
    assert!(decide(&s, 200).is_empty());

    // Only the puller publishes it.
    assert_eq!(
        s.apply(&claim("venue", 3, 300)),
        Err(Refusal::NotThePuller {
            channel: "venue".into(),
            node: 3,
            puller: Some(2)
        })
    );
    assert!(matches!(
        s.apply(&claim("venue", 2, 300)),
        Ok(Applied::Claimed {
            number: 1,
            resumed: false,
            ..
        })
    ));
    s.apply(&cmd(
        400,
        Op::ReportMedia {
            channel: "venue".into(),
            generation: 1,
            node: 2,
            last_msn: 7,
            media: MediaInfo::default(),
            epoch: 0,
        },
    ))
    .expect("media");
    // A second placement while node 2 lives is refused (a stale decision).
    assert_eq!(
        s.apply(&place("venue", 3, 500)),
        Err(Refusal::ChannelAlreadyLive {
            channel: "venue".into(),
            origin: 2
        })
    );

    // Node 2's lease expires: it is marked down and, at the supervisor's next look, the
    // pull moves to node 3 (node 1 still carries "news"), through the same choice as
    // the first start.
    renew(&mut s, &[1, 3], 6_000);
    let decided = decide(&s, 6_000);
    assert_eq!(decided, vec![mark_down(&s, 6_000, 2)]);
    apply_all(&mut s, &decided);
    let decided = decide(&s, 6_000);
    assert_eq!(decided, vec![place("venue", 3, 6_000)]);
    apply_all(&mut s, &decided);
    let venue = s.channel_by_slug("venue").expect("venue");
    assert_eq!(
        (venue.puller, venue.restarts, venue.last_restart_ms),
        (Some(3), 1, Some(6_000))
    );
    // Node 3 resumes the same generation after the last reported segment, taking over
    // (node 2 was marked down: it may have published parts past it).
    assert_eq!(
        s.apply(&claim("venue", 3, 6_100)),
        Ok(Applied::Claimed {
            number: 1,
            resumed: true,
            last_msn: Some(7),
            epoch: 2,
            took_over: true,
        })
    );
    // Node 2 comes back: the pull stays where it is.
    renew(&mut s, &[1, 2, 3], 7_000);
    assert!(decide(&s, 7_000).is_empty());
    assert_eq!(s.channel_by_slug("venue").expect("venue").puller, Some(3));
}

#[test]
fn pinned_and_sdi_channels_are_flagged_never_moved() {
    let mut s = cluster();
    s.apply(&create_pulled("venue", Placement::Pinned(2), 1))
        .expect("pinned pull");
    let decided = decide(&s, 100);
    assert_eq!(decided, vec![place("venue", 2, 100)]);
    apply_all(&mut s, &decided);
    assert_eq!(
        s.apply(&place("venue", 1, 150)),
        Err(Refusal::Pinned {
            channel: "venue".into(),
            pinned: 2
        })
    );
    // An SDI channel on node 3.
    s.apply(&cmd(
        200,
        Op::ReportCapturePorts {
            node: 3,
            devices: vec![crate::command::DeviceSeen {
                device: 0,
                model: "DeckLink".into(),
            }],
        },
    ))
    .expect("scan");
    s.apply(&create_channel("studio", 200)).expect("studio");
    s.apply(&cmd(
        201,
        Op::BindCapturePort {
            node: 3,
            device: 0,
            channel: Some("studio".into()),
        },
    ))
    .expect("bind");
    for slug in ["venue", "studio", "news"] {
        let c = s.channel_by_slug(slug).expect("channel");
        assert_eq!(placement::alert(&s, c), None, "{slug}");
    }

    // Nodes 2 and 3 die: they are marked down, nothing is placed elsewhere, both
    // channels are flagged.
    renew(&mut s, &[1], 6_000);
    let decided = decide(&s, 6_000);
    assert_eq!(
        decided,
        vec![mark_down(&s, 6_000, 2), mark_down(&s, 6_000, 3)]
    );
    apply_all(&mut s, &decided);
    assert!(decide(&s, 6_100).is_empty());
    let venue = s.channel_by_slug("venue").expect("venue");
    assert_eq!((venue.puller, venue.restarts), (Some(2), 0));
    let flagged = placement::alert(&s, venue).expect("pinned flagged");
    assert!(flagged.contains("pinned to node 2"), "{flagged}");
    let studio = s.channel_by_slug("studio").expect("studio");
    assert_eq!(
        placement::choose(&s, studio),
        Err(Unplaceable::SdiNodeDown(3))
    );
    assert!(placement::alert(&s, studio).is_some());
    // A push channel with nothing live uses no node: no alert.
    let news = s.channel_by_slug("news").expect("news");
    assert_eq!(placement::alert(&s, news), None);
    // Node 2 is back: the flag clears, the pull stays on it.
    renew(&mut s, &[1, 2], 7_000);
    let venue = s.channel_by_slug("venue").expect("venue");
    assert_eq!(placement::alert(&s, venue), None);
    assert!(decide(&s, 7_000).is_empty());
}

#[test]
fn a_new_pin_moves_the_pull_without_counting_a_restart() {
    let mut s = cluster();
    s.apply(&create_pulled("venue", Placement::Any, 1))
        .expect("pull");
    let decided = decide(&s, 100);
    apply_all(&mut s, &decided);
    assert_eq!(s.channel_by_slug("venue").expect("venue").puller, Some(1));
    s.apply(&cmd(
        200,
        Op::UpdateChannel {
            slug: "venue".into(),
            patch: ChannelPatch {
                placement: Some(Placement::Pinned(3)),
                ..Default::default()
            },
        },
    ))
    .expect("pin");
    let decided = decide(&s, 300);
    assert_eq!(decided, vec![place("venue", 3, 300)]);
    apply_all(&mut s, &decided);
    let venue = s.channel_by_slug("venue").expect("venue");
    assert_eq!((venue.puller, venue.restarts), (Some(3), 0));
}

#[test]
fn changing_or_deleting_a_pulled_channel() {
    let mut s = cluster();
    s.apply(&create_pulled("venue", Placement::Any, 1))
        .expect("pull");
    let decided = decide(&s, 100);
    apply_all(&mut s, &decided);
    s.apply(&claim("venue", 1, 200)).expect("claim");
    // Only pulled channels are placed; a push channel is published, not placed.
    assert!(matches!(
        s.apply(&place("news", 1, 250)),
        Err(Refusal::InvalidField { field, .. }) if field == "ingest"
    ));
    // A new source: the puller lets go, the supervisor places the channel again.
    let patch = |ingest| {
        cmd(
            300,
            Op::UpdateChannel {
                slug: "venue".into(),
                patch: ChannelPatch {
                    ingest: Some(ingest),
                    ..Default::default()
                },
            },
        )
    };
    s.apply(&patch(Ingest::SrtCaller {
        url: "srt://other.example:9000".into(),
    }))
    .expect("new source");
    assert_eq!(s.channel_by_slug("venue").expect("venue").puller, None);
    assert!(matches!(
        s.apply(&patch(Ingest::SrtCaller { url: "http://x".into() })),
        Err(Refusal::InvalidField { field, .. }) if field == "ingest.url"
    ));
    // Deleting it ends its generation: the cluster was its publisher.
    s.apply(&cmd(
        400,
        Op::DeleteChannel {
            slug: "venue".into(),
        },
    ))
    .expect("delete");
    assert!(s.channel_by_slug("venue").is_none());
    assert_eq!(
        s.generation(2, 1).expect("generation").state,
        GenerationState::Ended
    );
}
