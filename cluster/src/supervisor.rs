//! The leader's supervisor, as a pure decision: from the state and the clock, the
//! commands to propose. The loop that runs it on the leader lives with the node.

use crate::command::{Command, Op};
use crate::model::{GenerationState, Placement};
use crate::placement;
use crate::state::State;

/// How long a claimed generation may go without its first part before it is treated as
/// waiting for its publisher. A publisher sends its first keyframe within seconds (an
/// ingest connection idle for 10 s is closed), so a minute means nobody runs it.
pub const STARTING_LIMIT_MS: i64 = 60_000;

/// Commands for what time has made true: nodes whose lease expired are marked down
/// (their generations wait for a publisher to reconnect), generations that waited
/// longer than the reconnect grace end, and pulled channels without a live node to pull
/// them are placed (`placement::choose`, the same function as a first start; a pinned
/// channel only on its own node, so it waits there and is flagged, never moved).
pub fn decide(state: &State, now_ms: i64, reconnect_grace_ms: i64) -> Vec<Command> {
    let mut out = Vec::new();
    for node in state.nodes.values() {
        if !node.down && !node.lease.valid_at(now_ms) {
            out.push(Command {
                at_ms: now_ms,
                op: Op::MarkNodeDown { node: node.id },
            });
        }
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
                });
            }
        }
    }
    for channel in state.channels.values().filter(|c| c.ingest.is_pulled()) {
        let held = channel.puller.is_some_and(|n| state.lease_valid(n, now_ms));
        let repinned =
            matches!(channel.placement, Placement::Pinned(p) if channel.puller != Some(p));
        if held && !repinned {
            continue;
        }
        if let Ok(node) = placement::choose(state, channel, now_ms) {
            out.push(Command {
                at_ms: now_ms,
                op: Op::PlaceChannel {
                    channel: channel.slug.clone(),
                    node,
                },
            });
        }
    }
    out
}
