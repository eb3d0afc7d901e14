//! Sluice's control plane: the state every node agrees on through Raft.
//!
//! ```text
//! proposer (any node) --Command{at_ms, ...}--> Raft log --apply--> State (every replica)
//!                                                          \--> Ok(Applied) | Err(Refusal)
//! leader: supervisor::decide(&State, now_ms) -> Vec<Command>  (expired leases, grace ends,
//!         pulled channels placed through placement::choose)
//! ```
//!
//! Layout: `model` (nodes, channels, keys, generations), `command/` (one file per command
//! group, each with its checks and its effect), `state` (the state machine: `apply`),
//! `supervisor` (the leader's pure decisions). `apply` never reads a clock: every command
//! carries its proposer's timestamp, so every replica reaches the same state and the
//! invariants of DESIGN §3 hold everywhere, like constraints in a database.

pub mod command;
pub mod handle;
pub mod model;
pub mod network;
pub mod placement;
pub mod playback;
pub mod srt_source;
pub mod state;
pub mod store;
pub mod supervisor;

#[cfg(test)]
mod tests;

pub use command::{Applied, Command, Refusal};
pub use state::State;
