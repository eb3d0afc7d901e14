//! The leader's supervisor, as a pure decision: from the state and the clock, the
//! commands to propose. The loop that runs it on the leader lives with the node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::command::{Command, Op};
use crate::model::{GenerationState, NodeId, Placement};
use crate::placement;
use crate::state::State;

/// The leader's own view of the leases: when, by its monotonic clock, it last saw each
/// node's renewal count change. Nodes' wall clocks are never compared: a node whose
/// clock runs 10 s behind renews like any other, and one 10 s ahead does not hold its
/// lease 10 s past its death.
///
/// Made afresh when a node becomes leader: every node then has a whole time to live
/// from that moment (a node's renewals may have been failing during the election).
/// A holder that stops renewing is marked down no sooner than `ttl` after the leader
/// last saw it renew, which is after the holder sent that renewal.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    seen: BTreeMap<NodeId, (u64, Instant)>,
}

impl LeaseWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nodes up in `state` whose renewals have not changed for longer than their
    /// lease's time to live, as of `now`, each with the renewal count last seen.
    pub fn expired(&mut self, state: &State, now: Instant) -> Vec<(NodeId, u64)> {
        self.seen.retain(|id, _| state.nodes.contains_key(id));
        let mut out = Vec::new();
        for node in state.nodes.values() {
            let renewals = node.lease.renewals;
            let seen = self.seen.entry(node.id).or_insert((renewals, now));
            if seen.0 != renewals {
                *seen = (renewals, now);
            }
            let ttl = Duration::from_millis(node.lease.ttl_ms.max(0) as u64);
            if !node.down && now.saturating_duration_since(seen.1) > ttl {
                out.push((node.id, renewals));
            }
        }
        out
    }
}

/// How long a claimed generation may go without its first part before it is treated as
/// waiting for its publisher. A publisher sends its first keyframe within seconds (an
/// ingest connection idle for 10 s is closed), so a minute means nobody runs it.
pub const STARTING_LIMIT_MS: i64 = 60_000;

/// Commands for what time has made true: nodes whose lease expired (`expired`, from
/// [`LeaseWatch::expired`]) are marked down (their generations wait for a publisher to
/// reconnect), generations that waited longer than the reconnect grace end, and pulled
/// channels without a live node to pull them are placed (`placement::choose`, the same
/// function as a first start; a pinned channel only on its own node, so it waits there
/// and is flagged, never moved). `now_ms` is the leader's wall clock, which also stamps
/// every command it commits.
pub fn decide(
    state: &State,
    now_ms: i64,
    reconnect_grace_ms: i64,
    expired: &[(NodeId, u64)],
) -> Vec<Command> {
    let mut out = Vec::new();
    for &(node, renewals) in expired {
        out.push(Command {
            at_ms: now_ms,
            op: Op::MarkNodeDown {
                node,
                renewals: Some(renewals),
            },
            request: None,
        });
    }
    for g in state.all_generations() {
        // A claim nobody runs: one that committed after its caller gave up waiting (a
        // proposal past its deadline), or whose publisher left before its first part.
        // It waits for a publisher like any other, and ends after the grace.
        if g.state == GenerationState::Starting && now_ms - g.state_since_ms > STARTING_LIMIT_MS {
            if let Some(channel) = state.channels.get(&g.channel) {
                out.push(Command {
                    at_ms: now_ms,
                    op: Op::MarkReconnecting {
                        channel: channel.slug.clone(),
                        generation: g.number,
                        node: None,
                        epoch: 0,
                    },
                    request: None,
                });
            }
        }
        if g.state == GenerationState::Reconnecting
            && now_ms - g.state_since_ms > reconnect_grace_ms
        {
            if let Some(channel) = state.channels.get(&g.channel) {
                out.push(Command {
                    at_ms: now_ms,
                    op: Op::EndGeneration {
                        channel: channel.slug.clone(),
                        generation: g.number,
                        failed: false,
                    },
                    request: None,
                });
            }
        }
    }
    for channel in state.channels.values().filter(|c| c.ingest.is_pulled()) {
        let held = channel.puller.is_some_and(|n| state.node_up(n));
        let repinned =
            matches!(channel.placement, Placement::Pinned(p) if channel.puller != Some(p));
        if held && !repinned {
            continue;
        }
        if let Ok(node) = placement::choose(state, channel) {
            out.push(Command {
                at_ms: now_ms,
                op: Op::PlaceChannel {
                    channel: channel.slug.clone(),
                    node,
                },
                request: None,
            });
        }
    }
    out
}
