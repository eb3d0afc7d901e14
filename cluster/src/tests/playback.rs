//! Playback signing keys: creation, rotation, retirement, and what signs.

use super::cmd;
use crate::command::{Op, Refusal, MAX_PLAYBACK_KEYS};
use crate::model::Secret;
use crate::playback;
use crate::state::State;

fn key_op(id: &str, secret_byte: char) -> Op {
    Op::CreatePlaybackKey {
        key_id: id.into(),
        secret: Secret(secret_byte.to_string().repeat(64)),
    }
}

#[test]
fn the_newest_key_not_retired_signs_and_retired_keys_verify_nothing() {
    let mut s = State::default();
    assert!(s.signing_key().is_none());
    s.apply(&cmd(10, key_op("old", 'a'))).expect("old key");
    s.apply(&cmd(20, key_op("new", 'b'))).expect("new key");
    assert_eq!(s.signing_key().map(|k| k.key_id.as_str()), Some("new"));
    let token = playback::sign(&s.playback_keys["old"], 7, 1_000, None);
    assert_eq!(
        playback::verify(s.playback_keys.values(), &token, 7, 0, None),
        Ok(())
    );
    s.apply(&cmd(
        30,
        Op::RetirePlaybackKey {
            key_id: "old".into(),
        },
    ))
    .expect("retire");
    assert_eq!(
        playback::verify(s.playback_keys.values(), &token, 7, 0, None),
        Err(playback::TokenError::UnknownKey)
    );
    s.apply(&cmd(
        40,
        Op::RetirePlaybackKey {
            key_id: "new".into(),
        },
    ))
    .expect("retire");
    assert!(s.signing_key().is_none(), "every key retired: none signs");
    assert!(matches!(
        s.apply(&cmd(
            50,
            Op::RetirePlaybackKey {
                key_id: "gone".into()
            }
        )),
        Err(Refusal::NotFound { .. })
    ));
}

#[test]
fn keys_are_validated_unique_and_bounded() {
    let mut s = State::default();
    for (id, secret, field) in [
        ("", "a".repeat(64), "key_id"),
        ("has space", "a".repeat(64), "key_id"),
        ("k", "a".repeat(63), "secret"),
        ("k", "z".repeat(64), "secret"),
    ] {
        let r = s.apply(&cmd(
            1,
            Op::CreatePlaybackKey {
                key_id: id.into(),
                secret: Secret(secret),
            },
        ));
        assert!(
            matches!(&r, Err(Refusal::InvalidField { field: f, .. }) if f == field),
            "{id:?}: {r:?}"
        );
    }
    s.apply(&cmd(1, key_op("k", 'a'))).expect("k");
    assert!(matches!(
        s.apply(&cmd(2, key_op("k", 'b'))),
        Err(Refusal::AlreadyExists { .. })
    ));
    for i in 1..MAX_PLAYBACK_KEYS {
        s.apply(&cmd(10 + i as i64, key_op(&format!("k{i}"), 'c')))
            .expect("key");
    }
    // Full of keys in use: refused until one is retired; then the oldest retired goes.
    assert!(s.apply(&cmd(500, key_op("extra", 'd'))).is_err());
    s.apply(&cmd(501, Op::RetirePlaybackKey { key_id: "k".into() }))
        .expect("retire");
    s.apply(&cmd(502, key_op("extra", 'd'))).expect("room made");
    assert!(!s.playback_keys.contains_key("k"));
    assert_eq!(s.playback_keys.len(), MAX_PLAYBACK_KEYS);
}

#[test]
fn a_secret_never_shows_in_debug_output() {
    let op = key_op("k", 'a');
    let text = format!("{op:?}");
    assert!(!text.contains("aaaa"), "{text}");
    let mut s = State::default();
    s.apply(&cmd(1, op)).expect("key");
    let text = format!("{s:?}");
    assert!(!text.contains("aaaa"), "{text}");
}
