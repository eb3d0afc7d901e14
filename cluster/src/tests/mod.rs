//! `apply` for every command and invariant, and the supervisor's decisions.

use proptest::prelude::*;

use crate::command::{Applied, ChannelPatch, Command, Op, Refusal};
use crate::model::*;
use crate::state::State;
use crate::supervisor;

mod placement;
mod playback;
mod recording;
mod resources;

const TTL: i64 = 5_000;
const VERIFIER_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const VERIFIER_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn cmd(at_ms: i64, op: Op) -> Command {
    Command {
        at_ms,
        op,
        request: None,
    }
}

/// The supervisor as a leader that saw each renewal when it was stamped (the leader
/// stamps every command with its own clock), judging at `now_ms`; 30 s of grace.
fn decide(s: &State, now_ms: i64) -> Vec<Command> {
    let expired: Vec<(NodeId, u64)> = s
        .nodes
        .values()
        .filter(|n| !n.down && !n.lease.valid_at(now_ms))
        .map(|n| (n.id, n.lease.renewals))
        .collect();
    supervisor::decide(s, now_ms, 30_000, &expired)
}

/// The leader's `MarkNodeDown` for `node`, having seen its renewals as they are now.
fn mark_down(s: &State, at: i64, node: NodeId) -> Command {
    cmd(
        at,
        Op::MarkNodeDown {
            node,
            renewals: Some(s.nodes[&node].lease.renewals),
        },
    )
}

fn register(node: NodeId, at: i64) -> Command {
    cmd(
        at,
        Op::RegisterNode {
            node,
            name: format!("node-{node}"),
            urls: NodeUrls::default(),
            lease_ttl_ms: TTL,
        },
    )
}

fn create_channel(slug: &str, at: i64) -> Command {
    cmd(
        at,
        Op::CreateChannel {
            slug: slug.into(),
            title: "A title".into(),
            visibility: Visibility::Public,
            ingest: Ingest::Push,
            ll_hls: LlHlsSettings::default(),
            recording: false,
            retention: Default::default(),
            placement: Placement::Any,
            srt_passphrase: None,
            first_key: None,
        },
    )
}

fn claim(slug: &str, node: NodeId, at: i64) -> Command {
    cmd(
        at,
        Op::ClaimChannel {
            channel: slug.into(),
            node,
        },
    )
}

/// Three registered nodes at t=0 and channel "news".
fn cluster() -> State {
    let mut s = State::default();
    for n in 1..=3 {
        s.apply(&register(n, 0)).expect("register");
    }
    assert_eq!(
        s.apply(&create_channel("news", 0)),
        Ok(Applied::ChannelCreated { id: 1 })
    );
    s
}

#[test]
fn a_lease_is_created_with_its_heartbeat_set() {
    let mut s = State::default();
    s.apply(&register(7, 12_345)).expect("register");
    let lease = s.nodes[&7].lease;
    assert_eq!(lease.heartbeat_ms, 12_345);
    assert!(lease.valid_at(12_345 + TTL));
    assert!(!lease.valid_at(12_345 + TTL + 1));
    // Nothing for the supervisor to do right after registration.
    assert!(decide(&s, 12_345).is_empty());
}

#[test]
fn node_registration_validates_and_renewal_never_goes_back() {
    let mut s = cluster();
    let bad = cmd(
        0,
        Op::RegisterNode {
            node: 9,
            name: String::new(),
            urls: NodeUrls::default(),
            lease_ttl_ms: TTL,
        },
    );
    assert!(matches!(s.apply(&bad), Err(Refusal::InvalidField { field, .. }) if field == "name"));
    let bad = cmd(
        0,
        Op::RegisterNode {
            node: 9,
            name: "x".into(),
            urls: NodeUrls::default(),
            lease_ttl_ms: 10,
        },
    );
    assert!(
        matches!(s.apply(&bad), Err(Refusal::InvalidField { field, .. }) if field == "lease_ttl_ms")
    );
    let dup = cmd(
        0,
        Op::RegisterNode {
            node: 9,
            name: "node-1".into(),
            urls: NodeUrls::default(),
            lease_ttl_ms: TTL,
        },
    );
    assert!(matches!(s.apply(&dup), Err(Refusal::AlreadyExists { .. })));
    s.apply(&cmd(4_000, Op::RenewLease { node: 1 }))
        .expect("renew");
    s.apply(&cmd(3_000, Op::RenewLease { node: 1 }))
        .expect("late renew");
    assert_eq!(s.nodes[&1].lease.heartbeat_ms, 4_000);
    assert!(matches!(
        s.apply(&cmd(0, Op::RenewLease { node: 42 })),
        Err(Refusal::NotFound { .. })
    ));
}

#[test]
fn channels_validate_every_field_and_slugs_are_unique() {
    let mut s = cluster();
    for slug in ["", "UPPER", "-dash", "with space", "a/b", &"x".repeat(64)] {
        assert!(
            matches!(s.apply(&create_channel(slug, 1)), Err(Refusal::InvalidField { ref field, .. }) if field == "name"),
            "{slug:?}"
        );
    }
    assert!(matches!(
        s.apply(&create_channel("news", 1)),
        Err(Refusal::AlreadyExists { .. })
    ));
    let mut bad = create_channel("sport", 1);
    if let Op::CreateChannel { ll_hls, .. } = &mut bad.op {
        ll_hls.part_target_ms = 10;
    }
    assert!(
        matches!(s.apply(&bad), Err(Refusal::InvalidField { field, .. }) if field == "ll_hls.part_target_ms")
    );
    let mut bad = create_channel("sport", 1);
    if let Op::CreateChannel { placement, .. } = &mut bad.op {
        *placement = Placement::Pinned(99);
    }
    assert!(
        matches!(s.apply(&bad), Err(Refusal::InvalidField { field, .. }) if field == "placement.node")
    );
    // Refusals change nothing.
    assert_eq!(s.channels.len(), 1);
    assert_eq!(s.next_channel_id, 1);
    assert_eq!(
        s.apply(&create_channel("sport", 1)),
        Ok(Applied::ChannelCreated { id: 2 })
    );
}

#[test]
fn channel_update_and_delete() {
    let mut s = cluster();
    let patch = ChannelPatch {
        title: Some("Evening news".into()),
        recording: Some(true),
        ..ChannelPatch::default()
    };
    s.apply(&cmd(
        1,
        Op::UpdateChannel {
            slug: "news".into(),
            patch,
        },
    ))
    .expect("update");
    let c = s.channel_by_slug("news").expect("channel");
    assert_eq!((c.title.as_str(), c.recording), ("Evening news", true));
    let bad = ChannelPatch {
        title: Some("bad\u{7}".into()),
        ..ChannelPatch::default()
    };
    assert!(matches!(
        s.apply(&cmd(
            1,
            Op::UpdateChannel {
                slug: "news".into(),
                patch: bad
            }
        )),
        Err(Refusal::InvalidField { .. })
    ));
    assert!(matches!(
        s.apply(&cmd(
            1,
            Op::UpdateChannel {
                slug: "nope".into(),
                patch: ChannelPatch::default()
            }
        )),
        Err(Refusal::NotFound { .. })
    ));
    // A live channel cannot be deleted; an idle one takes its keys with it.
    s.apply(&cmd(
        1,
        Op::CreateKey {
            channel: "news".into(),
            key_id: "k1".into(),
            verifier: VERIFIER_A.into(),
        },
    ))
    .expect("key");
    s.apply(&claim("news", 1, 2)).expect("claim");
    assert!(matches!(
        s.apply(&cmd(
            3,
            Op::DeleteChannel {
                slug: "news".into()
            }
        )),
        Err(Refusal::ChannelBusy { .. })
    ));
    s.apply(&cmd(
        4,
        Op::EndGeneration {
            channel: "news".into(),
            generation: 1,
            failed: false,
        },
    ))
    .expect("end");
    s.apply(&cmd(
        5,
        Op::DeleteChannel {
            slug: "news".into(),
        },
    ))
    .expect("delete");
    assert!(s.channel_for_verifier(VERIFIER_A).is_none());
    assert!(s.keys.is_empty());
}

#[test]
fn keys_verify_against_exactly_one_channel_until_revoked() {
    let mut s = cluster();
    s.apply(&create_channel("sport", 0)).expect("channel");
    let key = |channel: &str, key_id: &str, verifier: &str| {
        cmd(
            1,
            Op::CreateKey {
                channel: channel.into(),
                key_id: key_id.into(),
                verifier: verifier.into(),
            },
        )
    };
    s.apply(&key("news", "k1", VERIFIER_A)).expect("key");
    assert_eq!(
        s.channel_for_verifier(VERIFIER_A).map(|c| c.slug.as_str()),
        Some("news")
    );
    assert_eq!(
        s.apply(&key("sport", "k2", VERIFIER_A)),
        Err(Refusal::VerifierInUse)
    );
    assert!(matches!(
        s.apply(&key("sport", "k1", VERIFIER_B)),
        Err(Refusal::AlreadyExists { .. })
    ));
    assert!(matches!(
        s.apply(&key("gone", "k3", VERIFIER_B)),
        Err(Refusal::NotFound { .. })
    ));
    assert!(
        matches!(s.apply(&key("news", "k3", "ABC")), Err(Refusal::InvalidField { field, .. }) if field == "verifier")
    );
    assert!(
        matches!(s.apply(&key("news", "k/3", VERIFIER_B)), Err(Refusal::InvalidField { field, .. }) if field == "key_id")
    );
    // Revoking through another channel is not found; through its own, it stops verifying.
    assert!(matches!(
        s.apply(&cmd(
            2,
            Op::RevokeKey {
                channel: "sport".into(),
                key_id: "k1".into()
            }
        )),
        Err(Refusal::NotFound { .. })
    ));
    s.apply(&cmd(
        2,
        Op::RevokeKey {
            channel: "news".into(),
            key_id: "k1".into(),
        },
    ))
    .expect("revoke");
    assert!(s.channel_for_verifier(VERIFIER_A).is_none());
    assert_eq!(s.keys["k1"].revoked_ms, Some(2));
}

#[test]
fn two_nodes_claim_one_channel_exactly_one_wins() {
    let mut s = cluster();
    let first = s.apply(&claim("news", 1, 10));
    let second = s.apply(&claim("news", 2, 10));
    assert_eq!(
        first,
        Ok(Applied::Claimed {
            number: 1,
            resumed: false,
            last_msn: None,
            epoch: 1,
            took_over: false,
        })
    );
    assert_eq!(
        second,
        Err(Refusal::ChannelAlreadyLive {
            channel: "news".into(),
            origin: 1
        })
    );
    assert_eq!(s.all_generations().count(), 1);
}

#[test]
fn the_origin_itself_may_claim_its_live_generation_again() {
    let mut s = cluster();
    assert!(s.apply(&claim("news", 1, 10)).is_ok());
    assert_eq!(
        s.apply(&claim("news", 1, 20)),
        Ok(Applied::Claimed {
            number: 1,
            resumed: true,
            last_msn: None,
            epoch: 2,
            took_over: false,
        })
    );
    assert_eq!(
        s.apply(&claim("news", 2, 30)),
        Err(Refusal::ChannelAlreadyLive {
            channel: "news".into(),
            origin: 1
        })
    );
    assert_eq!(s.all_generations().count(), 1);
}

#[test]
fn srt_passphrases_are_checked_and_can_be_removed() {
    let mut s = cluster();
    let patch = |p: &str| {
        cmd(
            6,
            Op::UpdateChannel {
                slug: "news".into(),
                patch: ChannelPatch {
                    srt_passphrase: Some(p.into()),
                    ..Default::default()
                },
            },
        )
    };
    for bad in ["short", &"x".repeat(80)] {
        match s.apply(&patch(bad)) {
            Err(Refusal::InvalidField { field, .. }) => assert_eq!(field, "srt_passphrase"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(s.apply(&patch("ten chars!")).is_ok());
    let passphrase = |s: &State| {
        s.channel_by_slug("news")
            .and_then(|c| c.srt_passphrase.clone())
    };
    assert_eq!(passphrase(&s).as_deref(), Some("ten chars!"));
    assert!(s.apply(&patch("")).is_ok());
    assert_eq!(passphrase(&s), None);
}

#[test]
fn a_claim_takes_over_from_an_origin_whose_lease_expired() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&cmd(
        20,
        Op::ReportMedia {
            channel: "news".into(),
            generation: 1,
            node: 1,
            last_msn: 41,
            media: MediaInfo::default(),
            epoch: 0,
        },
    ))
    .expect("report");
    // Node 2 renews; node 1 does not. Until the leader marks node 1 down it holds
    // the channel (whatever the clocks say); once it has, node 2 resumes the same
    // generation after msn 41.
    s.apply(&cmd(TTL, Op::RenewLease { node: 2 }))
        .expect("renew");
    assert!(matches!(
        s.apply(&claim("news", 2, TTL + 60_000)),
        Err(Refusal::ChannelAlreadyLive { origin: 1, .. })
    ));
    s.apply(&mark_down(&s, TTL + 1, 1)).expect("down");
    assert_eq!(
        s.apply(&claim("news", 2, TTL + 1)),
        Ok(Applied::Claimed {
            number: 1,
            resumed: true,
            last_msn: Some(41),
            epoch: 2,
            took_over: true,
        })
    );
    let g = s.all_generations().next().expect("generation");
    assert_eq!((g.origin, g.state), (2, GenerationState::Starting));
    // The old origin, back from the dead, is no longer the origin of anything.
    assert!(matches!(
        s.apply(&cmd(
            TTL + 2,
            Op::MarkLive {
                channel: "news".into(),
                generation: 1,
                node: 1,
                epoch: 0,
            }
        )),
        Err(Refusal::NotTheOrigin { .. })
    ));
}

/// A generation owns its playlist parameters: the first report's stay whatever later
/// reports (an origin that resumed it with other channel settings) say.
#[test]
fn a_generations_playlist_parameters_are_the_first_reported() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    let report = |msn, part_target_ms| {
        cmd(
            20,
            Op::ReportMedia {
                channel: "news".into(),
                generation: 1,
                node: 1,
                last_msn: msn,
                media: MediaInfo {
                    playlist: Some(PlaylistParams {
                        segment_target_ms: 2000,
                        part_target_ms,
                        window_segments: 6,
                    }),
                    ..MediaInfo::default()
                },
                epoch: 0,
            },
        )
    };
    s.apply(&report(1, 201)).expect("report");
    s.apply(&report(2, 501)).expect("report");
    let kept = s.generation(1, 1).and_then(|g| g.media.playlist);
    assert_eq!(kept.map(|p| p.part_target_ms), Some(201));
}

#[test]
fn a_claim_needs_a_valid_lease() {
    let mut s = cluster();
    s.apply(&mark_down(&s, TTL + 1, 1)).expect("down");
    assert_eq!(
        s.apply(&claim("news", 1, TTL + 1)),
        Err(Refusal::LeaseInvalid { node: 1 })
    );
    assert_eq!(
        s.apply(&claim("news", 99, 1)),
        Err(Refusal::LeaseInvalid { node: 99 })
    );
    assert!(matches!(
        s.apply(&claim("gone", 1, 1)),
        Err(Refusal::NotFound { .. })
    ));
}

#[test]
fn generation_lifecycle_and_media_sequence_never_goes_back() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    let live = |node| {
        cmd(
            20,
            Op::MarkLive {
                channel: "news".into(),
                generation: 1,
                node,
                epoch: 0,
            },
        )
    };
    assert!(matches!(
        s.apply(&live(2)),
        Err(Refusal::NotTheOrigin { .. })
    ));
    s.apply(&live(1)).expect("live");
    let report = |msn, node| {
        cmd(
            30,
            Op::ReportMedia {
                channel: "news".into(),
                generation: 1,
                node,
                last_msn: msn,
                media: MediaInfo::default(),
                epoch: 0,
            },
        )
    };
    s.apply(&report(5, 1)).expect("report");
    assert_eq!(
        s.apply(&report(4, 1)),
        Err(Refusal::WentBack {
            what: "last_msn".into(),
            current: 5,
            proposed: 4
        })
    );
    assert!(matches!(
        s.apply(&report(6, 2)),
        Err(Refusal::NotTheOrigin { .. })
    ));
    // The publisher drops, comes back on node 2 within the grace: same generation, after MSN 5.
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
    assert_eq!(
        s.apply(&claim("news", 2, 50)),
        Ok(Applied::Claimed {
            number: 1,
            resumed: true,
            last_msn: Some(5),
            epoch: 2,
            took_over: false,
        })
    );
    assert_eq!(s.generation(1, 1).expect("generation").origin, 2);
    s.apply(&cmd(
        60,
        Op::EndGeneration {
            channel: "news".into(),
            generation: 1,
            failed: false,
        },
    ))
    .expect("end");
    assert_eq!(
        s.generation(1, 1).expect("generation").state,
        GenerationState::Ended
    );
    // The next session is a new generation with a higher number.
    assert_eq!(
        s.apply(&claim("news", 3, 70)),
        Ok(Applied::Claimed {
            number: 2,
            resumed: false,
            last_msn: None,
            epoch: 1,
            took_over: false,
        })
    );
    // Ended generations cannot be touched again.
    assert!(matches!(
        s.apply(&cmd(
            80,
            Op::MarkLive {
                channel: "news".into(),
                generation: 1,
                node: 2,
                epoch: 0,
            }
        )),
        Err(Refusal::NotTheOrigin { .. })
    ));
}

#[test]
fn generation_numbers_never_go_back_across_channel_recreation_of_state() {
    let mut s = cluster();
    for at in [10, 20, 30] {
        s.apply(&claim("news", 1, at)).expect("claim");
        let number = s.active_generation(1).map(|g| g.number).expect("active");
        s.apply(&cmd(
            at + 1,
            Op::EndGeneration {
                channel: "news".into(),
                generation: number,
                failed: true,
            },
        ))
        .expect("end");
    }
    let numbers: Vec<u64> = s.all_generations().map(|g| g.number).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(
        s.generation(1, 3).expect("generation").state,
        GenerationState::Failed
    );
}

/// A channel deleted and made again under its name numbers its generations on from
/// the old one's, so no object URL (`/hls/news/source/{generation}/...`) repeats.
#[test]
fn a_channel_made_again_under_its_name_never_reuses_a_generation_number() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&cmd(
        11,
        Op::EndGeneration {
            channel: "news".into(),
            generation: 1,
            failed: false,
        },
    ))
    .expect("end");
    s.apply(&cmd(
        12,
        Op::DeleteChannel {
            slug: "news".into(),
        },
    ))
    .expect("delete");
    s.apply(&create_channel("news", 13)).expect("create again");
    s.apply(&claim("news", 1, 14)).expect("claim");
    let id = s.channel_by_slug("news").map(|c| c.id).expect("channel");
    assert_eq!(s.active_generation(id).map(|g| g.number), Some(2));
    assert!(s.retired_slugs.is_empty(), "carried by the channel again");
    // Another name starts at 1.
    s.apply(&create_channel("sports", 15)).expect("create");
    s.apply(&claim("sports", 2, 16)).expect("claim");
    let sports = s.channel_by_slug("sports").map(|c| c.id).expect("channel");
    assert_eq!(s.active_generation(sports).map(|g| g.number), Some(1));
}

#[test]
fn supervisor_marks_expired_nodes_down_and_their_generations_reconnecting() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    for n in [2, 3] {
        s.apply(&cmd(6_000, Op::RenewLease { node: n }))
            .expect("renew");
    }
    let decided = decide(&s, 6_000);
    assert_eq!(decided, vec![mark_down(&s, 6_000, 1)]);
    for c in &decided {
        s.apply(c).expect("apply decision");
    }
    assert!(s.nodes[&1].down);
    assert_eq!(
        s.generation(1, 1).expect("generation").state,
        GenerationState::Reconnecting
    );
    // A node that renewed after the supervisor looked is not marked down.
    let looked = mark_down(&s, 6_600, 1);
    s.apply(&cmd(6_500, Op::RenewLease { node: 1 }))
        .expect("renew");
    assert_eq!(s.apply(&looked), Err(Refusal::LeaseStillValid { node: 1 }));
    assert!(!s.nodes[&1].down);
    // Past the grace, the waiting generation ends.
    let decided = decide(&s, 6_000 + 30_001);
    assert!(decided.contains(&cmd(
        36_001,
        Op::EndGeneration {
            channel: "news".into(),
            generation: 1,
            failed: false
        }
    )));
}

/// Leases as the leader sees them, by its own monotonic clock: the wall-clock stamps
/// of the renewals (a node 10 s behind, one 10 s ahead) play no part. A node expires
/// a whole time to live after the leader last saw it renew; a new leader's watch gives
/// every node a whole time to live; a node already down is not marked again; a mark
/// that a renewal overtook is refused.
#[test]
fn leases_expire_by_the_leaders_own_clock_whatever_the_nodes_clocks_say() {
    use std::time::{Duration, Instant};
    let mut s = cluster();
    let ttl = Duration::from_millis(TTL as u64);
    let ms = Duration::from_millis(1);
    let t0 = Instant::now();
    let mut watch = supervisor::LeaseWatch::new();
    assert!(watch.expired(&s, t0).is_empty());
    // Halfway, node 2 renews with its clock 10 s behind, node 3 with its clock 10 s
    // ahead; node 1 says nothing.
    s.apply(&cmd(-10_000, Op::RenewLease { node: 2 }))
        .expect("renew");
    s.apply(&cmd(10_000 + TTL, Op::RenewLease { node: 3 }))
        .expect("renew");
    assert!(watch.expired(&s, t0 + ttl / 2).is_empty());
    assert!(
        watch.expired(&s, t0 + ttl).is_empty(),
        "a whole ttl is valid"
    );
    assert_eq!(watch.expired(&s, t0 + ttl + ms), vec![(1, 0)]);
    // Node 3's stamp 10 s ahead holds nothing: a ttl after it was seen, it expires.
    let late = t0 + ttl / 2 + ttl + ms;
    assert_eq!(watch.expired(&s, late), vec![(1, 0), (2, 1), (3, 1)]);

    // A new leader: everyone gets a whole ttl from its first look.
    let mut fresh = supervisor::LeaseWatch::new();
    assert!(fresh.expired(&s, late).is_empty());
    assert!(fresh.expired(&s, late + ttl).is_empty());
    let decided = supervisor::decide(&s, 0, 30_000, &fresh.expired(&s, late + ttl + ms));
    assert_eq!(decided.len(), 3);
    // Node 1 renews after the leader looked: its mark is refused, the others apply.
    s.apply(&cmd(0, Op::RenewLease { node: 1 })).expect("renew");
    for c in &decided {
        let marked = s.apply(c);
        match &c.op {
            Op::MarkNodeDown { node: 1, .. } => {
                assert_eq!(marked, Err(Refusal::LeaseStillValid { node: 1 }))
            }
            _ => assert_eq!(marked, Ok(Applied::Done)),
        }
    }
    assert!(!s.node_up(2) && !s.node_up(3) && s.node_up(1));
    // Down nodes are not marked again; node 1's renewal restarted its time to live.
    assert!(fresh.expired(&s, late + ttl + ms * 2).is_empty());
    assert_eq!(
        fresh.expired(&s, late + ttl * 2 + ms * 3),
        vec![(1, 1)],
        "node 1 expires a ttl after its renewal was seen"
    );
}

/// A request proposed again with the same id (its answer was lost to a timeout or a
/// leader change) is applied once and answers the same: a retried claim never makes a
/// second generation or a second epoch, a retried create is not "already exists".
#[test]
fn a_request_proposed_again_is_applied_once() {
    let mut s = cluster();
    let first = Command::new(
        10,
        Op::ClaimChannel {
            channel: "news".into(),
            node: 1,
        },
    );
    let answer = s.apply(&first);
    assert!(matches!(answer, Ok(Applied::Claimed { epoch: 1, .. })));
    let before = s.clone();
    assert_eq!(
        s.apply(&Command {
            at_ms: 99,
            ..first.clone()
        }),
        answer
    );
    assert_eq!(s, before, "the retry changed the state");
    // Another request (a new id) is a new claim: the same node claims again.
    let again = Command::new(
        20,
        Op::ClaimChannel {
            channel: "news".into(),
            node: 1,
        },
    );
    assert!(matches!(
        s.apply(&again),
        Ok(Applied::Claimed { epoch: 2, .. })
    ));

    let create = Command::new(30, create_channel("sports", 30).op);
    let created = s.apply(&create);
    assert!(matches!(created, Ok(Applied::ChannelCreated { .. })));
    assert_eq!(s.apply(&create), created);
    // A refusal is remembered too: the same request is refused the same way even
    // after the state changed in a way that would let it through.
    let early = Command::new(
        40,
        Op::ClaimChannel {
            channel: "weather".into(),
            node: 1,
        },
    );
    assert!(matches!(s.apply(&early), Err(Refusal::NotFound { .. })));
    s.apply(&create_channel("weather", 41)).expect("create");
    assert!(matches!(s.apply(&early), Err(Refusal::NotFound { .. })));
    // Commands without an id (older log entries) apply as they always did.
    assert!(matches!(
        s.apply(&create_channel("sports", 50)),
        Err(Refusal::AlreadyExists { .. })
    ));
    // Only the last RECENT_REQUESTS are remembered.
    for n in 0..crate::command::RECENT_REQUESTS as i64 {
        s.apply(&Command::new(100 + n, Op::RenewLease { node: 2 }))
            .expect("renew");
    }
    assert_eq!(s.recent_requests.len(), crate::command::RECENT_REQUESTS);
    assert!(s
        .recent_requests
        .iter()
        .all(|(id, _)| Some(*id) != first.request));
}

#[test]
fn refusals_map_to_http_statuses() {
    assert_eq!(Refusal::invalid("name", "x").http_status(), 422);
    assert_eq!(Refusal::not_found("channel", "x").http_status(), 404);
    assert_eq!(Refusal::VerifierInUse.http_status(), 409);
    assert_eq!(
        Refusal::ChannelAlreadyLive {
            channel: "x".into(),
            origin: 1
        }
        .http_status(),
        409
    );
}

#[test]
fn commands_and_state_round_trip_through_serde() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    let json = serde_json::to_string(&s).expect("serialize");
    let back: State = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, s);
    let c = claim("news", 2, 11);
    let back: Command = serde_json::from_str(&serde_json::to_string(&c).expect("ser")).expect("de");
    assert_eq!(back, c);
}

fn arbitrary_op() -> impl Strategy<Value = Op> {
    let slug = prop::sample::select(vec!["news", "sport", "music"]).prop_map(String::from);
    let node = 1u64..=3;
    let number = 1u64..=4;
    prop_oneof![
        (node.clone()).prop_map(|node| Op::RenewLease { node }),
        (node.clone(), proptest::option::of(0u64..4))
            .prop_map(|(node, renewals)| Op::MarkNodeDown { node, renewals }),
        (slug.clone(), node.clone()).prop_map(|(channel, node)| Op::ClaimChannel { channel, node }),
        (slug.clone(), number.clone(), node.clone()).prop_map(|(channel, generation, node)| {
            Op::MarkLive {
                channel,
                generation,
                node,
                epoch: 0,
            }
        }),
        (slug.clone(), number.clone(), node.clone(), 0u64..20).prop_map(
            |(channel, generation, node, last_msn)| Op::ReportMedia {
                channel,
                generation,
                node,
                last_msn,
                media: MediaInfo::default(),
                epoch: 0,
            }
        ),
        (slug.clone(), number.clone()).prop_map(|(channel, generation)| Op::MarkReconnecting {
            channel,
            generation,
            node: None,
            epoch: 0,
        }),
        (slug.clone(), number, any::<bool>()).prop_map(|(channel, generation, failed)| {
            Op::EndGeneration {
                channel,
                generation,
                failed,
            }
        }),
        slug.clone().prop_map(|slug| Op::DeleteChannel { slug }),
        (node.clone()).prop_map(|node| Op::RemoveNode { node }),
        (slug.clone(), node.clone()).prop_map(|(channel, node)| Op::PlaceChannel { channel, node }),
        (slug.clone(), any::<bool>()).prop_map(|(slug, pulled)| Op::UpdateChannel {
            slug,
            patch: ChannelPatch {
                ingest: Some(if pulled {
                    Ingest::SrtCaller {
                        url: "srt://source:9000".into(),
                    }
                } else {
                    Ingest::Push
                }),
                ..Default::default()
            }
        }),
        (node.clone(), 0u32..2, prop::option::of(slug)).prop_map(|(node, device, channel)| {
            Op::BindCapturePort {
                node,
                device,
                channel,
            }
        }),
        (node).prop_map(|node| Op::ReportCapturePorts {
            node,
            devices: vec![
                crate::command::DeviceSeen {
                    device: 0,
                    model: "DeckLink".into()
                },
                crate::command::DeviceSeen {
                    device: 1,
                    model: "DeckLink".into()
                }
            ]
        }),
    ]
}

proptest! {
    /// Whatever commands arrive, in any order and with any clock: never two active
    /// generations for a channel, generation numbers and MSNs never go back, every
    /// starting or live generation's origin is a node that exists, capture ports and SDI
    /// channels match one to one, and replicas agree.
    #[test]
    fn invariants_hold_under_arbitrary_commands(ops in prop::collection::vec((arbitrary_op(), 0i64..20_000), 1..200)) {
        let mut s = State::default();
        for n in 1..=3 {
            s.apply(&register(n, 0)).expect("register");
        }
        for slug in ["news", "sport", "music"] {
            s.apply(&create_channel(slug, 0)).expect("channel");
        }
        let mut replica = s.clone();
        let mut last_msn = std::collections::HashMap::new();
        for (op, at) in ops {
            let c = cmd(at, op);
            let before = s.clone();
            let result = s.apply(&c);
            // A pulled channel is claimed by its puller only.
            if let (Op::ClaimChannel { channel, node }, Ok(_)) = (&c.op, &result) {
                let ch = s.channel_by_slug(channel).expect("claimed channel");
                prop_assert!(!ch.ingest.is_pulled() || ch.puller == Some(*node), "a node that does not pull it claimed {}", channel);
            }
            prop_assert_eq!(&replica.apply(&c), &result, "replicas disagree");
            if result.is_err() {
                prop_assert_eq!(&s, &before, "a refusal changed the state");
            }
            for channel in s.channels.keys() {
                let active = s.all_generations().filter(|g| g.channel == *channel && g.state.is_active()).count();
                prop_assert!(active <= 1, "{} active generations", active);
            }
            for port in &s.capture_ports {
                if let Some(id) = port.bound_channel {
                    let c = s.channels.get(&id);
                    prop_assert!(c.is_some(), "a port bound to a deleted channel");
                    prop_assert_eq!(&c.map(|c| c.ingest.clone()), &Some(Ingest::Sdi { node: port.node, device: port.device }));
                }
            }
            for c in s.channels.values() {
                let feeding = s.capture_ports.iter().filter(|p| p.bound_channel == Some(c.id)).count();
                prop_assert!(feeding <= 1, "{} ports feed one channel", feeding);
                prop_assert_eq!(feeding == 1, matches!(c.ingest, Ingest::Sdi { .. }));
            }
            for g in s.all_generations() {
                if matches!(g.state, GenerationState::Starting | GenerationState::Live) {
                    prop_assert!(s.nodes.contains_key(&g.origin));
                }
                if let Some(msn) = g.last_msn {
                    let prev = last_msn.insert((g.channel, g.number), msn).unwrap_or(0);
                    prop_assert!(msn >= prev);
                }
            }
        }
        prop_assert_eq!(s, replica);
    }
}

#[test]
fn a_channel_and_its_first_key_are_created_together_or_not_at_all() {
    let mut s = cluster();
    s.apply(&cmd(
        1,
        Op::CreateKey {
            channel: "news".into(),
            key_id: "k1".into(),
            verifier: VERIFIER_A.into(),
        },
    ))
    .expect("key");
    let with_key = |slug: &str, key_id: &str, verifier: &str| {
        let mut c = create_channel(slug, 2);
        if let Op::CreateChannel { first_key, .. } = &mut c.op {
            *first_key = Some(crate::command::FirstKey {
                key_id: key_id.into(),
                verifier: verifier.into(),
            });
        }
        c
    };
    // The key's verifier is taken: neither channel nor key is created.
    assert_eq!(
        s.apply(&with_key("sport", "k2", VERIFIER_A)),
        Err(Refusal::VerifierInUse)
    );
    assert!(s.channel_by_slug("sport").is_none());
    assert!(!s.keys.contains_key("k2"));
    assert_eq!(
        s.apply(&with_key("sport", "k2", VERIFIER_B)),
        Ok(Applied::ChannelCreated { id: 2 })
    );
    assert_eq!(
        s.channel_for_verifier(VERIFIER_B).map(|c| c.slug.as_str()),
        Some("sport")
    );
}

fn live(node: NodeId, epoch: u64, at: i64) -> Command {
    cmd(
        at,
        Op::MarkLive {
            channel: "news".into(),
            generation: 1,
            node,
            epoch,
        },
    )
}

fn reconnecting(node: NodeId, epoch: u64, at: i64) -> Command {
    cmd(
        at,
        Op::MarkReconnecting {
            channel: "news".into(),
            generation: 1,
            node: Some(node),
            epoch,
        },
    )
}

fn media(node: NodeId, epoch: u64, last_msn: u64, at: i64) -> Command {
    cmd(
        at,
        Op::ReportMedia {
            channel: "news".into(),
            generation: 1,
            node,
            last_msn,
            media: MediaInfo::default(),
            epoch,
        },
    )
}

/// Every claim of a generation is a new epoch; what an origin sends under an older
/// claim (its own, before it claimed again) is refused, and changes nothing.
#[test]
fn an_origins_changes_under_an_older_claim_are_refused() {
    let mut s = cluster();
    assert!(matches!(
        s.apply(&claim("news", 1, 10)),
        Ok(Applied::Claimed { epoch: 1, .. })
    ));
    s.apply(&live(1, 1, 11)).expect("live under epoch 1");
    s.apply(&media(1, 1, 3, 12)).expect("report under epoch 1");
    // The publisher came back to node 1: a second claim, epoch 2.
    assert!(matches!(
        s.apply(&claim("news", 1, 20)),
        Ok(Applied::Claimed {
            epoch: 2,
            resumed: true,
            ..
        })
    ));
    let stale = |r: Result<Applied, Refusal>| {
        matches!(
            r,
            Err(Refusal::StaleEpoch {
                epoch: 1,
                current: 2,
                ..
            })
        )
    };
    assert!(stale(s.apply(&live(1, 1, 21))));
    assert!(stale(s.apply(&media(1, 1, 9, 22))));
    assert!(stale(s.apply(&reconnecting(1, 1, 23))));
    let g = s.generation(1, 1).expect("generation");
    assert_eq!((g.state, g.last_msn), (GenerationState::Starting, Some(3)));
    s.apply(&live(1, 2, 24)).expect("live under epoch 2");
    s.apply(&reconnecting(1, 2, 25))
        .expect("reconnecting under epoch 2");
}

/// The first fault: node 1 is paused past its lease, its encoder reconnects to
/// node 2, which resumes the generation (epoch 2); node 1 wakes up and says its
/// publisher left. That must not touch node 2's generation.
#[test]
fn a_paused_origin_that_wakes_cannot_mark_the_new_origins_generation() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&live(1, 1, 20)).expect("live");
    s.apply(&cmd(TTL, Op::RenewLease { node: 2 }))
        .expect("renew");
    s.apply(&mark_down(&s, TTL + 1, 1)).expect("down");
    assert!(matches!(
        s.apply(&claim("news", 2, TTL + 1)),
        Ok(Applied::Claimed {
            epoch: 2,
            resumed: true,
            ..
        })
    ));
    s.apply(&live(2, 2, TTL + 2)).expect("live on node 2");
    // Node 1 wakes up (its lease renewed again) and reports its publisher gone.
    s.apply(&cmd(TTL + 3, Op::RenewLease { node: 1 }))
        .expect("renew");
    assert!(matches!(
        s.apply(&reconnecting(1, 1, TTL + 4)),
        Err(Refusal::NotTheOrigin { node: 1, .. })
    ));
    assert!(matches!(
        s.apply(&media(1, 1, 50, TTL + 5)),
        Err(Refusal::NotTheOrigin { .. })
    ));
    let g = s.generation(1, 1).expect("generation");
    assert_eq!((g.origin, g.state), (2, GenerationState::Live));
}

/// A node marked down (one missed renewal) has its generations wait for their
/// publishers; its publisher never left, so it marks the generation live again under
/// the same claim, and the supervisor has nothing to end.
#[test]
fn an_origin_marked_down_while_its_publisher_stayed_makes_it_live_again() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&live(1, 1, 20)).expect("live");
    s.apply(&mark_down(&s, TTL + 10, 1)).expect("down");
    assert_eq!(
        s.generation(1, 1).expect("generation").state,
        GenerationState::Reconnecting
    );
    s.apply(&cmd(TTL + 20, Op::RenewLease { node: 1 }))
        .expect("renew");
    s.apply(&live(1, 1, TTL + 30))
        .expect("live again under the same claim");
    let g = s.generation(1, 1).expect("generation");
    assert_eq!((g.origin, g.state), (1, GenerationState::Live));
    assert!(decide(&s, TTL + 30 + 60_000)
        .iter()
        .all(|c| !matches!(c.op, Op::EndGeneration { .. })));
}

/// A claim that committed after its caller gave up leaves a `starting` generation that
/// no node runs: past the starting limit the supervisor has it wait for its publisher,
/// and the reconnect grace ends it; a generation that went live is left alone.
#[test]
fn a_claim_nobody_runs_waits_for_its_publisher_and_then_ends() {
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    let renew_all = |s: &mut State, at: i64| {
        for n in 1..=3 {
            s.apply(&cmd(at, Op::RenewLease { node: n }))
                .expect("renew");
        }
    };
    let early = 10 + supervisor::STARTING_LIMIT_MS;
    renew_all(&mut s, early);
    assert!(decide(&s, early).is_empty());
    let late = early + 1;
    renew_all(&mut s, late);
    let decided = decide(&s, late);
    assert_eq!(decided.len(), 1, "{decided:?}");
    for c in &decided {
        s.apply(c).expect("apply decision");
    }
    assert_eq!(
        s.generation(1, 1).expect("generation").state,
        GenerationState::Reconnecting
    );
    let ended = late + 30_001;
    renew_all(&mut s, ended);
    assert!(decide(&s, ended)
        .iter()
        .any(|c| matches!(c.op, Op::EndGeneration { generation: 1, .. })));
    // A live generation is never touched by the starting limit.
    let mut s = cluster();
    s.apply(&claim("news", 1, 10)).expect("claim");
    s.apply(&live(1, 1, 20)).expect("live");
    renew_all(&mut s, late);
    assert!(decide(&s, late).is_empty());
}
