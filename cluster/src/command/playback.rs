//! Playback signing keys: made when first needed or on rotation, retired by an operator.

use super::{Applied, Op, Refusal};
use crate::model::PlaybackKey;
use crate::state::State;

/// Applies a playback key command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::CreatePlaybackKey { key_id, secret } => create(state, at, key_id, &secret.0),
        Op::RetirePlaybackKey { key_id } => retire(state, at, key_id),
        other => unreachable!("not a playback key command: {other:?}"),
    }
}

/// Most keys kept (retired ones included): rotation is an operator's act, not a loop.
pub const MAX_PLAYBACK_KEYS: usize = 64;

fn create(state: &mut State, at: i64, key_id: &str, secret: &str) -> Result<Applied, Refusal> {
    if key_id.is_empty()
        || key_id.len() > 32
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Refusal::invalid(
            "key_id",
            "must be 1 to 32 letters, digits or '-'",
        ));
    }
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal::invalid("secret", "must be 256 bits in hex"));
    }
    if state.playback_keys.contains_key(key_id) {
        return Err(Refusal::AlreadyExists {
            what: "playback key".into(),
            name: key_id.into(),
        });
    }
    if state.playback_keys.len() >= MAX_PLAYBACK_KEYS {
        // The oldest retired key goes; with none retired, the operator must retire one.
        let oldest_retired = state
            .playback_keys
            .values()
            .filter(|k| k.retired_ms.is_some())
            .min_by_key(|k| k.created_ms)
            .map(|k| k.key_id.clone());
        let Some(gone) = oldest_retired else {
            return Err(Refusal::invalid(
                "key_id",
                format!("{MAX_PLAYBACK_KEYS} playback keys are in use: retire one first"),
            ));
        };
        state.playback_keys.remove(&gone);
    }
    state.playback_keys.insert(
        key_id.into(),
        PlaybackKey {
            key_id: key_id.into(),
            secret: secret.into(),
            created_ms: at,
            retired_ms: None,
        },
    );
    Ok(Applied::Done)
}

fn retire(state: &mut State, at: i64, key_id: &str) -> Result<Applied, Refusal> {
    let key = state
        .playback_keys
        .get_mut(key_id)
        .ok_or_else(|| Refusal::not_found("playback key", key_id))?;
    key.retired_ms.get_or_insert(at);
    Ok(Applied::Done)
}
