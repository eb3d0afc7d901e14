//! Where a channel's ingest runs: one pure function for the first start and for every
//! move after a node died, so the failover path cannot differ from the normal one.

use crate::model::{Channel, Ingest, NodeId, Placement};
use crate::state::State;

/// Why a channel cannot be placed on a healthy node now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error("pinned to node {0}, whose lease is not valid: a pinned channel is not moved")]
    PinnedNodeDown(NodeId),
    #[error("its capture port is on node {0}, whose lease is not valid: SDI cannot move")]
    SdiNodeDown(NodeId),
    #[error("no node holds a valid lease")]
    NoHealthyNode,
}

/// The node the channel's ingest should run on at `now_ms`: a pinned or SDI channel's
/// own node while it is alive; otherwise the healthy node with the fewest channels
/// (pulled or originated), the lowest id on a tie.
pub fn choose(state: &State, channel: &Channel) -> Result<NodeId, Unplaceable> {
    let fixed = match (&channel.ingest, channel.placement) {
        (Ingest::Sdi { node, .. }, _) => Some((*node, Unplaceable::SdiNodeDown(*node))),
        (_, Placement::Pinned(node)) => Some((node, Unplaceable::PinnedNodeDown(node))),
        (_, Placement::Any) => None,
    };
    if let Some((node, down)) = fixed {
        return if state.node_up(node) {
            Ok(node)
        } else {
            Err(down)
        };
    }
    state
        .nodes
        .keys()
        .filter(|id| state.node_up(**id))
        .min_by_key(|id| (load(state, **id, channel.id), **id))
        .copied()
        .ok_or(Unplaceable::NoHealthyNode)
}

/// Channels a node carries, other than `except`: the ones it pulls, and the active
/// generations it originates that it does not pull.
fn load(state: &State, node: NodeId, except: u64) -> usize {
    let pulled = state
        .channels
        .values()
        .filter(|c| c.id != except && c.puller == Some(node))
        .count();
    let originated = state
        .all_generations()
        .filter(|g| g.channel != except && g.origin == node && g.state.is_active())
        .filter(|g| {
            state
                .channels
                .get(&g.channel)
                .is_none_or(|c| c.puller != Some(node))
        })
        .count();
    pulled + originated
}

/// What an operator must know about a channel the cluster will not move: its node is
/// down and it is pinned there or fed by hardware there. `None` when nothing is wrong
/// or the channel is not using a node (a push channel with nothing live).
pub fn alert(state: &State, channel: &Channel) -> Option<String> {
    let uses_node = channel.ingest.is_pulled()
        || matches!(channel.ingest, Ingest::Sdi { .. })
        || state.active_generation(channel.id).is_some();
    if !uses_node {
        return None;
    }
    match choose(state, channel) {
        Err(e @ (Unplaceable::PinnedNodeDown(_) | Unplaceable::SdiNodeDown(_))) => {
            Some(e.to_string())
        }
        Err(Unplaceable::NoHealthyNode) if channel.ingest.is_pulled() => {
            Some(Unplaceable::NoHealthyNode.to_string())
        }
        _ => None,
    }
}
