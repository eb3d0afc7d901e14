//! Endpoints (where viewers and edges fetch from, with their parents for failover) and
//! the snapshots each endpoint reports.

use super::{Applied, Op, Refusal};
use crate::model::{Endpoint, EndpointKind, EndpointSnapshot, HealthThresholds, NodeId};
use crate::state::State;

/// Applies an endpoint command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::PutEndpoint {
            name,
            kind,
            node,
            url,
            upstreams,
            health,
        } => put(
            state,
            at,
            NewEndpoint {
                name,
                kind: *kind,
                node: *node,
                url,
                upstreams,
                health: *health,
            },
        ),
        Op::DeleteEndpoint { name } => delete(state, name),
        Op::ReportSnapshot { endpoint, snapshot } => report(state, endpoint, snapshot),
        other => unreachable!("not an endpoint command: {other:?}"),
    }
}

/// Snapshots kept per endpoint: a few minutes at one every few seconds.
pub const SNAPSHOT_HISTORY: usize = 60;

struct NewEndpoint<'a> {
    name: &'a str,
    kind: EndpointKind,
    node: Option<NodeId>,
    url: &'a str,
    upstreams: &'a [String],
    health: HealthThresholds,
}

/// Creates an endpoint or replaces one of the same name (its creation time stays).
fn put(state: &mut State, at: i64, new: NewEndpoint) -> Result<Applied, Refusal> {
    super::channel::validate_slug(new.name)?;
    if !(new.url.starts_with("http://") || new.url.starts_with("https://"))
        || new.url.len() > 512
        || new.url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Refusal::invalid(
            "url",
            "must be an http:// or https:// URL of at most 512 characters",
        ));
    }
    match (new.kind, new.node) {
        (EndpointKind::Origin, None) => {
            return Err(Refusal::invalid(
                "node",
                "an origin endpoint is a cluster node's spool: name its node",
            ))
        }
        (EndpointKind::ExternalOrigin | EndpointKind::ExternalEdge, Some(_)) => {
            return Err(Refusal::invalid(
                "node",
                "an external endpoint does not run on a cluster node",
            ))
        }
        (_, Some(node)) if !state.nodes.contains_key(&node) => {
            return Err(Refusal::invalid("node", format!("no node has id {node}")))
        }
        _ => {}
    }
    if new.upstreams.len() > 16 {
        return Err(Refusal::invalid("upstreams", "at most 16 parents"));
    }
    for (i, up) in new.upstreams.iter().enumerate() {
        if up == new.name {
            return Err(Refusal::invalid(
                "upstreams",
                "an endpoint cannot pull from itself",
            ));
        }
        if new.upstreams[..i].contains(up) {
            return Err(Refusal::invalid(
                "upstreams",
                format!("{up:?} is listed twice"),
            ));
        }
        // A name in the request body that names nothing is invalid input (422), not
        // a missing resource at the requested URL (404).
        if !state.endpoints.contains_key(up) {
            return Err(Refusal::invalid(
                "upstreams",
                format!("no endpoint is named {up:?}"),
            ));
        }
        // A parent that (through its own parents) pulls from this endpoint makes a loop.
        if reaches(state, up, new.name) {
            return Err(Refusal::invalid(
                "upstreams",
                format!(
                    "{up:?} already pulls from {:?}: that would be a loop",
                    new.name
                ),
            ));
        }
    }
    if new.health.max_playlist_age_ms == 0 || new.health.stale_after_ms == 0 {
        return Err(Refusal::invalid("health", "thresholds must be above zero"));
    }
    let created_ms = state
        .endpoints
        .get(new.name)
        .map(|e| e.created_ms)
        .unwrap_or(at);
    state.endpoints.insert(
        new.name.into(),
        Endpoint {
            name: new.name.into(),
            kind: new.kind,
            node: new.node,
            url: new.url.into(),
            upstreams: new.upstreams.to_vec(),
            health: new.health,
            created_ms,
        },
    );
    Ok(Applied::Done)
}

/// Whether `from` pulls from `target`, directly or through parents.
fn reaches(state: &State, from: &str, target: &str) -> bool {
    let mut stack = vec![from];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = stack.pop() {
        if name == target {
            return true;
        }
        if !seen.insert(name) {
            continue;
        }
        if let Some(e) = state.endpoints.get(name) {
            stack.extend(e.upstreams.iter().map(String::as_str));
        }
    }
    false
}

fn delete(state: &mut State, name: &str) -> Result<Applied, Refusal> {
    if !state.endpoints.contains_key(name) {
        return Err(Refusal::not_found("endpoint", name));
    }
    if let Some(child) = state
        .endpoints
        .values()
        .find(|e| e.upstreams.iter().any(|u| u == name))
    {
        return Err(Refusal::InUse {
            what: "endpoint".into(),
            name: name.into(),
            by: child.name.clone(),
        });
    }
    state.endpoints.remove(name);
    state.endpoint_snapshots.remove(name);
    Ok(Applied::Done)
}

/// Removes a node's own endpoints and drops them from every parent list.
pub(super) fn forget_node(state: &mut State, node: NodeId) {
    let gone: Vec<String> = state
        .endpoints
        .values()
        .filter(|e| e.node == Some(node))
        .map(|e| e.name.clone())
        .collect();
    for name in &gone {
        state.endpoints.remove(name);
        state.endpoint_snapshots.remove(name);
    }
    for e in state.endpoints.values_mut() {
        e.upstreams.retain(|u| !gone.contains(u));
    }
}

/// Bounds what a snapshot may carry: it is replicated and kept in the history.
pub const MAX_CHANNELS_PER_SNAPSHOT: usize = 256;

fn report(
    state: &mut State,
    endpoint: &str,
    snapshot: &EndpointSnapshot,
) -> Result<Applied, Refusal> {
    if !state.endpoints.contains_key(endpoint) {
        return Err(Refusal::not_found("endpoint", endpoint));
    }
    if let Some(r) = snapshot.hit_ratio {
        if !(0.0..=1.0).contains(&r) {
            return Err(Refusal::invalid("hit_ratio", "must be within 0..=1"));
        }
    }
    if snapshot.channel_viewers.len() > MAX_CHANNELS_PER_SNAPSHOT {
        return Err(Refusal::invalid(
            "channel_viewers",
            format!("at most {MAX_CHANNELS_PER_SNAPSHOT} channels per snapshot"),
        ));
    }
    let history = state.endpoint_snapshots.entry(endpoint.into()).or_default();
    if let Some(last) = history.back() {
        if snapshot.at_ms < last.at_ms {
            return Err(Refusal::WentBack {
                what: "snapshot time".into(),
                current: last.at_ms.max(0) as u64,
                proposed: snapshot.at_ms.max(0) as u64,
            });
        }
    }
    history.push_back(snapshot.clone());
    while history.len() > SNAPSHOT_HISTORY {
        history.pop_front();
    }
    Ok(Applied::Done)
}
