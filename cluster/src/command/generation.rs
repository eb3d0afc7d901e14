//! Generations: one live session of a channel, claimed by the node its publisher reached.

use super::{Applied, Refusal};
use crate::model::{ChannelId, Generation, GenerationState, MediaInfo, NodeId};
use crate::state::State;

fn channel_id(state: &State, slug: &str) -> Result<ChannelId, Refusal> {
    state
        .channel_by_slug(slug)
        .map(|c| c.id)
        .ok_or_else(|| Refusal::not_found("channel", slug))
}

/// The generation `number` of `channel`, active and originated on `node`.
fn originated<'a>(
    state: &'a mut State,
    slug: &str,
    number: u64,
    node: Option<NodeId>,
) -> Result<&'a mut Generation, Refusal> {
    let id = channel_id(state, slug)?;
    let not_origin = || Refusal::NotTheOrigin {
        channel: slug.into(),
        generation: number,
        node: node.unwrap_or_default(),
    };
    let g = state
        .generation_mut(id, number)
        .ok_or_else(|| Refusal::not_found("generation", number))?;
    if !g.state.is_active() || node.is_some_and(|n| n != g.origin) {
        return Err(not_origin());
    }
    Ok(g)
}

/// Exactly one claim wins: a channel has at most one active generation, whose origin
/// holds a valid lease. A generation waiting for its publisher, or whose origin's lease
/// has expired, resumes on the claimer.
pub(super) fn claim(
    state: &mut State,
    at: i64,
    slug: &str,
    node: NodeId,
) -> Result<Applied, Refusal> {
    let id = channel_id(state, slug)?;
    if !state.lease_valid(node, at) {
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
    if let Some(active) = state.active_generation(id) {
        let key = (id, active.number);
        // An origin whose lease has expired is gone, whether or not the supervisor has
        // said so yet: its publisher may come back here at once. The origin itself may
        // claim again (its loop ended early, or its publisher came back to it): a node
        // arbitrates between its own publishers.
        if active.state != GenerationState::Reconnecting
            && active.origin != node
            && state.lease_valid(active.origin, at)
        {
            return Err(Refusal::ChannelAlreadyLive {
                channel: slug.into(),
                origin: active.origin,
            });
        }
        let Some(g) = state.generation_mut(key.0, key.1) else {
            return Err(Refusal::not_found("generation", key.1));
        };
        g.origin = node;
        g.state = GenerationState::Starting;
        g.state_since_ms = at;
        return Ok(Applied::Claimed {
            number: g.number,
            resumed: true,
            last_msn: g.last_msn,
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
        },
    );
    Ok(Applied::Claimed {
        number,
        resumed: false,
        last_msn: None,
    })
}

pub(super) fn mark_live(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    node: NodeId,
) -> Result<Applied, Refusal> {
    // A removed node's generations wait for a new claim instead. (A node marked down
    // that still sends this is alive: its next renewal clears the mark.)
    if !state.nodes.contains_key(&node) {
        return Err(Refusal::LeaseInvalid { node });
    }
    let g = originated(state, slug, number, Some(node))?;
    if g.state != GenerationState::Live {
        g.state = GenerationState::Live;
        g.state_since_ms = at;
    }
    g.last_media_ms = g.last_media_ms.max(at);
    Ok(Applied::Done)
}

pub(super) fn report_media(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    node: NodeId,
    last_msn: u64,
    media: &MediaInfo,
) -> Result<Applied, Refusal> {
    let g = originated(state, slug, number, Some(node))?;
    // Media sequence numbers never go back: a resumed origin continues after them.
    if let Some(current) = g.last_msn.filter(|c| *c > last_msn) {
        return Err(Refusal::WentBack {
            what: "last_msn".into(),
            current,
            proposed: last_msn,
        });
    }
    g.last_msn = Some(last_msn);
    g.media = media.clone();
    g.last_media_ms = g.last_media_ms.max(at);
    Ok(Applied::Done)
}

pub(super) fn mark_reconnecting(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
) -> Result<Applied, Refusal> {
    let g = originated(state, slug, number, None)?;
    if g.state != GenerationState::Reconnecting {
        g.state = GenerationState::Reconnecting;
        g.state_since_ms = at;
    }
    Ok(Applied::Done)
}

pub(super) fn end(
    state: &mut State,
    at: i64,
    slug: &str,
    number: u64,
    failed: bool,
) -> Result<Applied, Refusal> {
    let g = originated(state, slug, number, None)?;
    g.state = if failed {
        GenerationState::Failed
    } else {
        GenerationState::Ended
    };
    g.state_since_ms = at;
    Ok(Applied::Done)
}
