//! Stream keys: only a verifier (SHA-256 of the key) is replicated.

use super::{Applied, Op, Refusal};
use crate::model::StreamKey;
use crate::state::State;

/// Applies a stream key command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::CreateKey {
            channel,
            key_id,
            verifier,
        } => create(state, at, channel, key_id, verifier),
        Op::RevokeKey { channel, key_id } => revoke(state, at, channel, key_id),
        other => unreachable!("not a stream key command: {other:?}"),
    }
}

fn create(
    state: &mut State,
    at: i64,
    channel: &str,
    key_id: &str,
    verifier: &str,
) -> Result<Applied, Refusal> {
    check_new(state, key_id, verifier)?;
    let channel_id = state
        .channel_by_slug(channel)
        .map(|c| c.id)
        .ok_or_else(|| Refusal::not_found("channel", channel))?;
    insert(state, at, channel_id, key_id, verifier);
    Ok(Applied::Done)
}

/// A new key's id and verifier are well formed and unused.
pub(super) fn check_new(state: &State, key_id: &str, verifier: &str) -> Result<(), Refusal> {
    if key_id.is_empty() || key_id.len() > 32 || !key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(Refusal::invalid(
            "key_id",
            "must be 1 to 32 letters or digits",
        ));
    }
    check_verifier(verifier)?;
    if state.keys.contains_key(key_id) {
        return Err(Refusal::AlreadyExists {
            what: "key".into(),
            name: key_id.into(),
        });
    }
    // A key verifies against exactly one channel.
    if state.keys.values().any(|k| k.verifier == verifier) {
        return Err(Refusal::VerifierInUse);
    }
    Ok(())
}

/// A verifier is a lower-case hex SHA-256.
pub(super) fn check_verifier(verifier: &str) -> Result<(), Refusal> {
    if verifier.len() != 64
        || !verifier
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Refusal::invalid(
            "verifier",
            "must be a lower-case hex SHA-256",
        ));
    }
    Ok(())
}

pub(super) fn insert(
    state: &mut State,
    at: i64,
    channel_id: crate::model::ChannelId,
    key_id: &str,
    verifier: &str,
) {
    state.keys.insert(
        key_id.into(),
        StreamKey {
            key_id: key_id.into(),
            channel: channel_id,
            verifier: verifier.into(),
            created_ms: at,
            revoked_ms: None,
        },
    );
}

fn revoke(state: &mut State, at: i64, channel: &str, key_id: &str) -> Result<Applied, Refusal> {
    let channel_id = state
        .channel_by_slug(channel)
        .map(|c| c.id)
        .ok_or_else(|| Refusal::not_found("channel", channel))?;
    let key = state
        .keys
        .get_mut(key_id)
        .filter(|k| k.channel == channel_id)
        .ok_or_else(|| Refusal::not_found("key", key_id))?;
    key.revoked_ms.get_or_insert(at);
    Ok(Applied::Done)
}
