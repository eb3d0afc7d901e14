//! Generations: one live session of a channel, claimed by the node its publisher reached.

use super::{Applied, Op, Refusal};
use std::collections::BTreeMap;

use crate::model::{
    ChannelId, Generation, GenerationState, Ingest, MediaInfo, Node, NodeId, Recording,
    RecordingPiece, RecordingStatus,
};
use crate::state::State;

/// Applies a generation command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::ClaimChannel { channel, node } => claim(state, at, channel, *node),
        Op::MarkLive {
            channel,
            generation,
            node,
            epoch,
        } => mark_live(state, at, channel, *generation, (*node, *epoch)),
        Op::ReportMedia {
            channel,
            generation,
            node,
            last_msn,
            media,
            epoch,
        } => {
            let g = originated(state, channel, *generation, Some((*node, *epoch)))?;
            report_media(g, at, *last_msn, media)
        }
        Op::MarkReconnecting {
            channel,
            generation,
            node,
            epoch,
        } => mark_reconnecting(state, at, channel, *generation, node.map(|n| (n, *epoch))),
        Op::EndGeneration {
            channel,
            generation,
            failed,
        } => end(state, at, channel, *generation, *failed),
        Op::ReportRecording {
            channel,
            generation,
            piece,
        } => report_recording(state, at, channel, *generation, piece),
        Op::DeleteRecording {
            channel,
            generation,
        } => delete_recording(state, at, channel, *generation),
        Op::ForgetGeneration {
            channel,
            generation,
        } => forget(state, *channel, *generation),
        other => unreachable!("not a generation command: {other:?}"),
    }
}

fn channel_id(state: &State, slug: &str) -> Result<ChannelId, Refusal> {
    state
        .channel_by_slug(slug)
        .map(|c| c.id)
        .ok_or_else(|| Refusal::not_found("channel", slug))
}

/// The generation `number` of `channel`, active and, when `fence` names a node and the
/// epoch of its claim, originated there under that claim (epoch 0: not checked).
fn originated<'a>(
    state: &'a mut State,
    slug: &str,
    number: u64,
    fence: Option<(NodeId, u64)>,
) -> Result<&'a mut Generation, Refusal> {
    let id = channel_id(state, slug)?;
    let g = state
        .generation_mut(id, number)
        .ok_or_else(|| Refusal::not_found("generation", number))?;
    if !g.state.is_active() || fence.is_some_and(|(n, _)| n != g.origin) {
        return Err(Refusal::NotTheOrigin {
            channel: slug.into(),
            generation: number,
            node: fence.map(|(n, _)| n).unwrap_or_default(),
        });
    }
    if let Some((_, epoch)) = fence.filter(|(_, e)| *e != 0 && *e != g.epoch) {
        return Err(Refusal::StaleEpoch {
            channel: slug.into(),
            generation: number,
            epoch,
            current: g.epoch,
        });
    }
    Ok(g)
}

/// Exactly one claim wins: a channel has at most one active generation, whose origin
/// holds a valid lease. A generation waiting for its publisher, or whose origin's lease
/// has expired, resumes on the claimer.
fn claim(state: &mut State, at: i64, slug: &str, node: NodeId) -> Result<Applied, Refusal> {
    let id = channel_id(state, slug)?;
    if !state.node_up(node) {
        return Err(Refusal::LeaseInvalid { node });
    }
    // A pulled channel is published by the node placed to pull it, and no other.
    if let Some(c) = state
        .channels
        .get(&id)
        .filter(|c| c.ingest.is_pulled() && c.puller != Some(node))
    {
        return Err(Refusal::NotThePuller {
            channel: slug.into(),
            node,
            puller: c.puller,
        });
    }
    // An SDI channel is captured on its port's node, and nowhere else.
    if let Some(Ingest::Sdi {
        node: port_node, ..
    }) = state.channels.get(&id).map(|c| &c.ingest)
    {
        if *port_node != node {
            return Err(Refusal::NotThePortsNode {
                channel: slug.into(),
                node,
                port_node: *port_node,
            });
        }
    }
    if let Some(active) = state.active_generation(id) {
        let key = (id, active.number);
        // An origin whose lease has expired is gone, whether or not the supervisor has
        // said so yet: its publisher may come back here at once. The origin itself may
        // claim again (its loop ended early, or its publisher came back to it): a node
        // arbitrates between its own publishers.
        if active.state != GenerationState::Reconnecting
            && active.origin != node
            && state.node_up(active.origin)
        {
            return Err(Refusal::ChannelAlreadyLive {
                channel: slug.into(),
                origin: active.origin,
            });
        }
        let took_over = active.abandoned
            || (active.state != GenerationState::Reconnecting && active.origin != node);
        let Some(g) = state.generation_mut(key.0, key.1) else {
            return Err(Refusal::not_found("generation", key.1));
        };
        g.origin = node;
        g.state = GenerationState::Starting;
        g.state_since_ms = at;
        g.epoch += 1;
        g.abandoned = false;
        return Ok(Applied::Claimed {
            number: g.number,
            resumed: true,
            last_msn: g.last_msn,
            epoch: g.epoch,
            took_over,
        });
    }
    let Some(channel) = state.channels.get_mut(&id) else {
        return Err(Refusal::not_found("channel", slug));
    };
    channel.last_generation += 1;
    let number = channel.last_generation;
    state.generations.entry(id).or_default().insert(
        number,
        Generation {
            channel: id,
            number,
            origin: node,
            state: GenerationState::Starting,
            started_ms: at,
            last_media_ms: at,
            state_since_ms: at,
            media: MediaInfo::default(),
            last_msn: None,
            recording: None,
            epoch: 1,
            abandoned: false,
        },
    );
    Ok(Applied::Claimed {
        number,
        resumed: false,
        last_msn: None,
        epoch: 1,
        took_over: false,
    })
}

fn mark_live(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    fence: (NodeId, u64),
) -> Result<Applied, Refusal> {
    // A removed node's generations wait for a new claim instead. (A node marked down
    // that still sends this is alive: its next renewal clears the mark.)
    let node = fence.0;
    if !state.nodes.contains_key(&node) {
        return Err(Refusal::LeaseInvalid { node });
    }
    let g = originated(state, slug, number, Some(fence))?;
    if g.state != GenerationState::Live {
        g.state = GenerationState::Live;
        g.state_since_ms = at;
    }
    // Its origin is back under its claim and goes on from where it is.
    g.abandoned = false;
    g.last_media_ms = g.last_media_ms.max(at);
    Ok(Applied::Done)
}

fn report_media(
    g: &mut Generation,
    at: i64,
    last_msn: u64,
    media: &MediaInfo,
) -> Result<Applied, Refusal> {
    // Media sequence numbers never go back: a resumed origin continues after them.
    if let Some(current) = g.last_msn.filter(|c| *c > last_msn) {
        return Err(Refusal::WentBack {
            what: "last_msn".into(),
            current,
            proposed: last_msn,
        });
    }
    g.last_msn = Some(last_msn);
    // The generation owns its playlist parameters: the first report's stay.
    let playlist = g.media.playlist.or(media.playlist);
    g.media = media.clone();
    g.media.playlist = playlist;
    g.last_media_ms = g.last_media_ms.max(at);
    Ok(Applied::Done)
}

fn mark_reconnecting(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    fence: Option<(NodeId, u64)>,
) -> Result<Applied, Refusal> {
    let g = originated(state, slug, number, fence)?;
    if g.state != GenerationState::Reconnecting {
        g.state = GenerationState::Reconnecting;
        g.state_since_ms = at;
    }
    Ok(Applied::Done)
}

fn end(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    failed: bool,
) -> Result<Applied, Refusal> {
    let down = down_nodes(&state.nodes);
    let g = originated(state, slug, number, None)?;
    g.state = if failed {
        GenerationState::Failed
    } else {
        GenerationState::Ended
    };
    g.state_since_ms = at;
    if let Some(r) = g.recording.as_mut() {
        settle(r, false, &down, at);
    }
    Ok(Applied::Done)
}

fn down_nodes(nodes: &BTreeMap<NodeId, Node>) -> Vec<NodeId> {
    nodes.values().filter(|n| n.down).map(|n| n.id).collect()
}

/// A node's report of the recording piece it writes: created on the first one, replaced
/// by later ones (its sizes only grow), sticky once failed.
fn report_recording(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    piece: &RecordingPiece,
) -> Result<Applied, Refusal> {
    let id = channel_id(state, slug)?;
    if !state.nodes.contains_key(&piece.node) {
        return Err(Refusal::not_found("node", piece.node));
    }
    if piece.last_init < piece.first_init || piece.last_msn.is_some_and(|l| l < piece.first_msn) {
        return Err(Refusal::invalid("piece", "ranges go backwards"));
    }
    let down = down_nodes(&state.nodes);
    let g = state
        .generation_mut(id, number)
        .ok_or_else(|| Refusal::not_found("generation", number))?;
    let active = g.state.is_active();
    let r = g.recording.get_or_insert_with(|| Recording {
        status: RecordingStatus::Recording,
        reason: None,
        duration_ms: 0,
        bytes: 0,
        segments: 0,
        pieces: Vec::new(),
        closed_ms: None,
    });
    if r.status == RecordingStatus::Deleted {
        return Err(Refusal::not_found("recording", number));
    }
    match r
        .pieces
        .iter_mut()
        .find(|p| p.node == piece.node && p.first_msn == piece.first_msn)
    {
        Some(p) => {
            if p.segments > piece.segments {
                return Err(Refusal::WentBack {
                    what: "recording segments".into(),
                    current: p.segments,
                    proposed: piece.segments,
                });
            }
            let error = p.error.take();
            *p = piece.clone();
            p.error = error.or_else(|| piece.error.clone());
        }
        None => r.pieces.push(piece.clone()),
    }
    r.pieces.sort_by_key(|p| p.first_msn);
    settle(r, active, &down, at);
    Ok(Applied::Done)
}

/// Sums the pieces and decides the status: failed once any piece failed (or its node
/// went down before closing it after the generation ended), finalized when the
/// generation ended and every piece is closed.
fn settle(r: &mut Recording, active: bool, down: &[NodeId], at: i64) {
    if r.status == RecordingStatus::Deleted {
        return;
    }
    r.duration_ms = r.pieces.iter().map(|p| p.duration_ms).sum();
    r.bytes = r.pieces.iter().map(|p| p.bytes).sum();
    r.segments = r.pieces.iter().map(|p| p.segments).sum();
    let failed = r.pieces.iter().find_map(|p| p.error.clone()).or_else(|| {
        (!active)
            .then(|| {
                r.pieces
                    .iter()
                    .find(|p| !p.finished && down.contains(&p.node))
                    .map(|p| format!("node {} went down before closing its piece", p.node))
            })
            .flatten()
    });
    if let Some(reason) = failed {
        r.status = RecordingStatus::Failed;
        r.reason.get_or_insert(reason);
    } else if !active && r.pieces.iter().all(|p| p.finished) {
        r.status = RecordingStatus::Finalized;
    }
    if !active && r.status != RecordingStatus::Recording && r.closed_ms.is_none() {
        r.closed_ms = Some(at);
    }
}

/// Deletes a finished recording: the record becomes a tombstone (status `deleted`,
/// no pieces) and every node removes the generation's files. One being written (its
/// generation is active) is refused.
fn delete_recording(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
) -> Result<Applied, Refusal> {
    let id = channel_id(state, slug)?;
    let g = state
        .generation_mut(id, number)
        .ok_or_else(|| Refusal::not_found("generation", number))?;
    if g.state.is_active() {
        return Err(Refusal::ChannelBusy {
            channel: slug.into(),
        });
    }
    match g.recording.as_mut() {
        Some(r) if r.status != RecordingStatus::Deleted => {
            *r = Recording {
                status: RecordingStatus::Deleted,
                reason: None,
                duration_ms: 0,
                bytes: 0,
                segments: 0,
                pieces: Vec::new(),
                closed_ms: Some(at),
            };
            Ok(Applied::Done)
        }
        _ => Err(Refusal::not_found("recording", number)),
    }
}

/// Removes an ended generation nothing can be played from (`State::forgettable`).
fn forget(state: &mut State, channel: ChannelId, number: u64) -> Result<Applied, Refusal> {
    let g = state
        .generation(channel, number)
        .ok_or_else(|| Refusal::not_found("generation", number))?;
    if !state.forgettable(g) {
        return Err(Refusal::InUse {
            what: "generation".into(),
            name: number.to_string(),
            by: "its channel (active, recorded, or the channel's last)".into(),
        });
    }
    if let Some(all) = state.generations.get_mut(&channel) {
        all.remove(&number);
        if all.is_empty() {
            state.generations.remove(&channel);
        }
    }
    Ok(Applied::Done)
}
