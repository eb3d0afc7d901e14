//! Signed playback for private channels, and the signature nodes put on the requests
//! they pull through from each other. Pure: the clock and the keys are arguments.
//!
//! ```text
//! token = v1.<key id>.<expires unix s>.<allowed origin, hex (may be empty)>.<mac hex>
//! mac   = HMAC-SHA256(key secret, "sluice-playback-v1\n<channel id>\n<expires>\n<origin>")
//!
//! viewer URL   /t/<token>/hls/<channel>/...   (relative URIs in the playlists keep it)
//! upstream     x-sluice-upstream: <unix s>.<HMAC-SHA256(cluster secret, "...\n<s>\n<path>") hex>
//! ```
//!
//! The MAC binds the channel's id, not its name: a channel deleted and created again
//! under the same name does not accept the old channel's tokens.

use ring::hmac;

use crate::model::PlaybackKey;

/// The header a node signs its pull-through requests with.
pub const UPSTREAM_HEADER: &str = "x-sluice-upstream";
/// How far an upstream signature's time may be from the receiver's clock.
pub const UPSTREAM_SKEW_S: i64 = 60;
/// Longest a playback token may be valid for (a year).
pub const MAX_TOKEN_TTL_S: i64 = 366 * 24 * 3600;
/// Longest allowed origin a token may carry.
pub const MAX_ORIGIN_LEN: usize = 256;

/// HMAC-SHA256 (RFC 2104), by ring.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `mac_hex` is the HMAC-SHA256 of `message` under `key`, compared by ring in
/// constant time.
fn mac_matches(key: &[u8], message: &[u8], mac_hex: &str) -> bool {
    unhex(mac_hex).is_some_and(|tag| {
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), message, &tag).is_ok()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex only, as `hex` writes it: one spelling per value.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn playback_message(channel: u64, expires: i64, origin: &str) -> String {
    format!("sluice-playback-v1\n{channel}\n{expires}\n{origin}")
}

fn playback_mac(secret: &str, channel: u64, expires: i64, origin: &str) -> String {
    let message = playback_message(channel, expires, origin);
    hex(&hmac_sha256(secret.as_bytes(), message.as_bytes()))
}

/// A token for `channel` (its id) valid until `expires_s` (unix seconds), for pages
/// served from `origin` only when one is given (`https://site.example`).
pub fn sign(key: &PlaybackKey, channel: u64, expires_s: i64, origin: Option<&str>) -> String {
    let origin = origin.unwrap_or("");
    format!(
        "v1.{}.{expires_s}.{}.{}",
        key.key_id,
        hex(origin.as_bytes()),
        playback_mac(&key.secret, channel, expires_s, origin)
    )
}

/// Why a token does not open a channel (the viewer gets 403 with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a playback token is needed: this channel is private")]
    Missing,
    #[error("the playback token is malformed")]
    Malformed,
    #[error("the playback token was signed by a key that is retired or unknown")]
    UnknownKey,
    #[error("the playback token is not valid for this channel")]
    BadSignature,
    #[error("the playback token expired")]
    Expired,
    #[error("the playback token is only valid on pages of another origin")]
    WrongOrigin,
}

/// A token's parts, checked for shape only.
struct Parsed<'a> {
    key_id: &'a str,
    expires: i64,
    origin: String,
    mac: &'a str,
}

fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > 1024 {
        return Err(TokenError::Malformed);
    }
    let mut fields = token.split('.');
    let (Some("v1"), Some(key_id), Some(expires), Some(origin), Some(mac), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let expires = expires.parse().map_err(|_| TokenError::Malformed)?;
    let origin = unhex(origin)
        .and_then(|o| String::from_utf8(o).ok())
        .ok_or(TokenError::Malformed)?;
    if mac.len() != 64 || key_id.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(Parsed {
        key_id,
        expires,
        origin,
        mac,
    })
}

/// Checks `token` for `channel` at `now_s`. `keys`: every key not retired (a rotated-out
/// key still verifies until it is retired). `request_origin`: the page's origin as the
/// browser named it (`Origin`, else the scheme and host of `Referer`).
pub fn verify<'k>(
    keys: impl IntoIterator<Item = &'k PlaybackKey>,
    token: &str,
    channel: u64,
    now_s: i64,
    request_origin: Option<&str>,
) -> Result<(), TokenError> {
    let t = parse(token)?;
    let key = keys
        .into_iter()
        .find(|k| k.key_id == t.key_id && k.retired_ms.is_none())
        .ok_or(TokenError::UnknownKey)?;
    let message = playback_message(channel, t.expires, &t.origin);
    if !mac_matches(key.secret.as_bytes(), message.as_bytes(), t.mac) {
        return Err(TokenError::BadSignature);
    }
    if now_s > t.expires {
        return Err(TokenError::Expired);
    }
    if !t.origin.is_empty() && request_origin != Some(t.origin.as_str()) {
        return Err(TokenError::WrongOrigin);
    }
    Ok(())
}

/// Checks an allowed origin given at issue time: `scheme://host[:port]`, nothing else.
pub fn validate_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if origin.len() > MAX_ORIGIN_LEN
        || rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(format!(
            "must be scheme://host[:port] with no path, at most {MAX_ORIGIN_LEN} characters"
        ));
    }
    Ok(())
}

/// The signature a node puts on a request it pulls through from another node.
pub fn upstream_signature(cluster_secret: &str, now_s: i64, path: &str) -> String {
    let message = upstream_message(now_s, path);
    format!(
        "{now_s}.{}",
        hex(&hmac_sha256(cluster_secret.as_bytes(), message.as_bytes()))
    )
}

fn upstream_message(at_s: i64, path: &str) -> String {
    format!("sluice-upstream-v1\n{at_s}\n{path}")
}

/// Whether `signature` was made with the cluster secret for `path`, recently.
pub fn upstream_authorized(cluster_secret: &str, signature: &str, now_s: i64, path: &str) -> bool {
    let Some((at, mac)) = signature.split_once('.') else {
        return false;
    };
    let Ok(at) = at.parse::<i64>() else {
        return false;
    };
    if (now_s - at).abs() > UPSTREAM_SKEW_S {
        return false;
    }
    // The time as written must be the time signed: `+5` or `05` are not.
    at.to_string().len() == signature.len() - mac.len() - 1
        && mac_matches(
            cluster_secret.as_bytes(),
            upstream_message(at, path).as_bytes(),
            mac,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str) -> PlaybackKey {
        PlaybackKey {
            key_id: id.into(),
            secret: secret.into(),
            created_ms: 0,
            retired_ms: None,
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1, 2 and 6 (a key longer than the block).
        let case1 = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            hex(&case1),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let case2 = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&case2),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let case6 = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&case6),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_token_opens_its_channel_until_it_expires() {
        let k = key("k1", "secret-one");
        let token = sign(&k, 7, 1_000, None);
        assert_eq!(verify([&k], &token, 7, 999, None), Ok(()));
        assert_eq!(verify([&k], &token, 7, 1_000, Some("https://x")), Ok(()));
        assert_eq!(
            verify([&k], &token, 7, 1_001, None),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify([&k], &token, 8, 999, None),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let k = key("k1", "secret-one");
        let token = sign(&k, 7, 1_000, None);
        // Moving the expiry breaks the MAC.
        let later = token.replace(".1000.", ".9000.");
        assert_eq!(
            verify([&k], &later, 7, 0, None),
            Err(TokenError::BadSignature)
        );
        // Signed with another secret under the same key id.
        let forged = sign(&key("k1", "guess"), 7, 1_000, None);
        assert_eq!(
            verify([&k], &forged, 7, 0, None),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v2.k1.1..",
            "v1.k1.x..00",
            "v1.k1.1.zz.00",
            "v1..1..00",
        ] {
            assert_eq!(
                verify([&k], bad, 7, 0, None),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify([&key("k2", "secret-one")], &token, 7, 0, None),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_until_the_key_is_retired() {
        let old = key("old", "a");
        let new = key("new", "b");
        let token = sign(&old, 1, 100, None);
        assert_eq!(verify([&new, &old], &token, 1, 0, None), Ok(()));
        let retired = PlaybackKey {
            retired_ms: Some(5),
            ..old
        };
        assert_eq!(
            verify([&new, &retired], &token, 1, 0, None),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn an_origin_bound_token_needs_that_origin() {
        let k = key("k", "s");
        let token = sign(&k, 1, 100, Some("https://site.example"));
        assert_eq!(
            verify([&k], &token, 1, 0, Some("https://site.example")),
            Ok(())
        );
        assert_eq!(
            verify([&k], &token, 1, 0, Some("https://evil.example")),
            Err(TokenError::WrongOrigin)
        );
        assert_eq!(
            verify([&k], &token, 1, 0, None),
            Err(TokenError::WrongOrigin)
        );
        assert!(validate_origin("https://site.example:8443").is_ok());
        for bad in [
            "site.example",
            "https://",
            "https://a/b",
            "ftp://a",
            "https://a b",
        ] {
            assert!(validate_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_signatures_bind_the_path_and_the_time() {
        let sig = upstream_signature("cs", 1_000, "/hls/a/source/1/2.m4s");
        assert!(upstream_authorized(
            "cs",
            &sig,
            1_030,
            "/hls/a/source/1/2.m4s"
        ));
        assert!(!upstream_authorized(
            "cs",
            &sig,
            1_030,
            "/hls/b/source/1/2.m4s"
        ));
        assert!(!upstream_authorized(
            "other",
            &sig,
            1_030,
            "/hls/a/source/1/2.m4s"
        ));
        assert!(!upstream_authorized(
            "cs",
            &sig,
            1_100,
            "/hls/a/source/1/2.m4s"
        ));
        assert!(!upstream_authorized("cs", "garbage", 1_000, "/"));
        // The time signed is the time as written: another spelling of it is refused,
        // as is a MAC in capitals or cut short.
        let mac = sig
            .split_once('.')
            .map(|(_, m)| m.to_string())
            .unwrap_or_default();
        let path = "/hls/a/source/1/2.m4s";
        for forged in [
            format!("+1000.{mac}"),
            format!("01000.{mac}"),
            format!("1000.{}", mac.to_uppercase()),
            format!("1000.{}", &mac[..62]),
            "1000.".to_string(),
        ] {
            assert!(!upstream_authorized("cs", &forged, 1_030, path), "{forged}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        use crate::network::constant_time_eq;
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-and-more"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
