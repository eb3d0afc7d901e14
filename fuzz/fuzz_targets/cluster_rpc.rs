//! A body on the cluster port, past the secret (a member whose secret leaked, or a
//! bug in one): parsed as the Raft routes parse it (`AppendEntriesRequest`,
//! `VoteRequest` as JSON, as the routes' extractors do), and every command it carries
//! applied to a state with nodes, channels, keys and generations, as each replica's
//! state machine applies a committed entry. A panic in either is a crash: a command is
//! refused, never fatal, since every replica would crash on the same entry.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::EntryPayload;
use sluice_cluster::command::Command;
use sluice_cluster::state::State;
use sluice_cluster::store::TypeConfig;

/// A state with something in every table, made once from well-formed commands.
fn seeded() -> &'static State {
    static SEEDED: OnceLock<State> = OnceLock::new();
    SEEDED.get_or_init(|| {
        let mut state = State::default();
        for line in include_str!("../seeds/cluster_rpc/state.jsonl").lines() {
            if let Ok(cmd) = serde_json::from_str::<Command>(line) {
                let _ = state.apply(&cmd);
            }
        }
        state
    })
}

fuzz_target!(|data: &[u8]| {
    let mut state = seeded().clone();
    if let Ok(req) = serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(data) {
        for entry in &req.entries {
            if let EntryPayload::Normal(cmd) = &entry.payload {
                let _ = state.apply(cmd);
            }
        }
    }
    let _ = serde_json::from_slice::<VoteRequest<u64>>(data);
    // Commands one per line, as a run of entries.
    for line in data.split(|b| *b == b'\n') {
        if let Ok(cmd) = serde_json::from_slice::<Command>(line) {
            let _ = state.apply(&cmd);
        }
    }
});
