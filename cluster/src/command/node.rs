//! Nodes and their leases: liveness is per node, one write per renewal.

use super::{Applied, Op, Refusal};
use crate::model::{GenerationState, Lease, Node, NodeId, NodeUrls};
use crate::state::State;

/// Applies a node command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::RegisterNode {
            node,
            name,
            urls,
            lease_ttl_ms,
        } => register(state, at, *node, name, urls, *lease_ttl_ms),
        Op::RenewLease { node } => renew(state, at, *node),
        Op::MarkNodeDown { node, renewals } => mark_down(state, at, *node, *renewals),
        Op::RemoveNode { node } => remove(state, at, *node),
        other => unreachable!("not a node command: {other:?}"),
    }
}

/// Bounds on a lease's time to live: shorter flaps on a slow disk, longer leaves a dead
/// node's channels waiting too long.
const LEASE_TTL_MS: std::ops::RangeInclusive<i64> = 1_000..=120_000;

fn register(
    state: &mut State,
    at: i64,
    id: NodeId,
    name: &str,
    urls: &NodeUrls,
    lease_ttl_ms: i64,
) -> Result<Applied, Refusal> {
    if name.is_empty() || name.len() > 64 {
        return Err(Refusal::invalid("name", "must be 1 to 64 characters"));
    }
    if !LEASE_TTL_MS.contains(&lease_ttl_ms) {
        return Err(Refusal::invalid(
            "lease_ttl_ms",
            format!(
                "must be within {}..={}",
                LEASE_TTL_MS.start(),
                LEASE_TTL_MS.end()
            ),
        ));
    }
    if state.nodes.values().any(|n| n.name == name && n.id != id) {
        return Err(Refusal::AlreadyExists {
            what: "node name".into(),
            name: name.into(),
        });
    }
    // A node registering again (restarted) counts as a renewal.
    let renewals = state.nodes.get(&id).map_or(0, |n| n.lease.renewals + 1);
    state.nodes.insert(
        id,
        Node {
            id,
            name: name.into(),
            urls: urls.clone(),
            lease: Lease {
                heartbeat_ms: at,
                ttl_ms: lease_ttl_ms,
                renewals,
            },
            down: false,
        },
    );
    Ok(Applied::Done)
}

fn renew(state: &mut State, at: i64, id: NodeId) -> Result<Applied, Refusal> {
    let node = state
        .nodes
        .get_mut(&id)
        .ok_or_else(|| Refusal::not_found("node", id))?;
    // Heartbeats never go back (a delayed renewal proposed earlier changes nothing).
    node.lease.heartbeat_ms = node.lease.heartbeat_ms.max(at);
    node.lease.renewals += 1;
    node.down = false;
    Ok(Applied::Done)
}

fn remove(state: &mut State, at: i64, id: NodeId) -> Result<Applied, Refusal> {
    if state.nodes.remove(&id).is_none() {
        return Err(Refusal::not_found("node", id));
    }
    for g in state.generations.values_mut().flat_map(|g| g.values_mut()) {
        if g.origin == id && matches!(g.state, GenerationState::Starting | GenerationState::Live) {
            g.state = GenerationState::Reconnecting;
            g.state_since_ms = at;
            g.abandoned = true;
        }
    }
    // Its capture ports stay (hardware identity, with their bindings), but absent.
    for port in state.capture_ports.iter_mut().filter(|p| p.node == id) {
        port.present = false;
    }
    super::endpoint::forget_node(state, id);
    Ok(Applied::Done)
}

fn mark_down(
    state: &mut State,
    at: i64,
    id: NodeId,
    renewals: Option<u64>,
) -> Result<Applied, Refusal> {
    let node = state
        .nodes
        .get_mut(&id)
        .ok_or_else(|| Refusal::not_found("node", id))?;
    let renewed = match renewals {
        Some(seen) => node.lease.renewals != seen,
        None => node.lease.valid_at(at),
    };
    if renewed {
        // Renewed since the supervisor looked: the node is alive.
        return Err(Refusal::LeaseStillValid { node: id });
    }
    node.down = true;
    // Its generations wait for their publishers to reconnect anywhere.
    for g in state.generations.values_mut().flat_map(|g| g.values_mut()) {
        if g.origin == id && matches!(g.state, GenerationState::Starting | GenerationState::Live) {
            g.state = GenerationState::Reconnecting;
            g.state_since_ms = at;
            g.abandoned = true;
        }
    }
    Ok(Applied::Done)
}
