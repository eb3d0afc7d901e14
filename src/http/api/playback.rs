//! Playback tokens for private channels, and the keys that sign them.
//!
//! ```text
//! POST   /api/v1/channels/{name}/playback-tokens   {ttl_s, origin?} -> token, paths
//! GET    /api/v1/playback-keys                     ids and dates (never the secrets)
//! POST   /api/v1/playback-keys                     rotate: a new key signs from now on
//! DELETE /api/v1/playback-keys/{id}                retire: its tokens stop working
//! ```

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_cluster::command::Op;
use sluice_cluster::model::{PlaybackKey, Secret};
use sluice_cluster::playback::{self, MAX_TOKEN_TTL_S};
use utoipa::ToSchema;

use super::channels::with_channel;
use super::{error, parse, propose, Answer, ApiState, Refused};
use crate::support::{now_ms, random_hex};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPlaybackToken {
    /// Seconds the token is valid for (default 3600, at most a year).
    #[serde(default = "default_ttl")]
    #[schema(minimum = 1, maximum = 31622400)]
    ttl_s: i64,
    /// Only pages of this origin (`https://site.example[:port]`, as the browser sends
    /// it in `Origin` or `Referer`) may play with the token.
    #[serde(default)]
    origin: Option<String>,
}

fn default_ttl() -> i64 {
    3600
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct PlaybackToken {
    pub(crate) channel: String,
    pub(crate) token: String,
    pub(crate) expires_ms: i64,
    /// The multivariant playlist with the token: give players this URL (on any node or
    /// edge); every URL it leads to keeps the token.
    pub(crate) hls_path: String,
    /// The player page with the token.
    pub(crate) watch_path: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct PlaybackKeyView {
    pub(crate) key_id: String,
    pub(crate) created_ms: i64,
    pub(crate) retired_ms: Option<i64>,
    /// This key signs new tokens (the newest key not retired).
    pub(crate) signing: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct PlaybackKeyList {
    pub(crate) keys: Vec<PlaybackKeyView>,
}

/// Proposes a new signing key.
async fn new_key(s: &ApiState) -> Result<String, Refused> {
    let (Ok(id), Ok(secret)) = (random_hex(), random_hex()) else {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a key",
            None,
        ));
    };
    let key_id = format!("pk{}", &id[..10]);
    propose(
        s,
        Op::CreatePlaybackKey {
            key_id: key_id.clone(),
            secret: Secret(secret),
        },
    )
    .await?;
    Ok(key_id)
}

#[utoipa::path(post, path = "/api/v1/channels/{name}/playback-tokens", tag = "playback",
    params(("name" = String, Path, description = "Channel name")),
    request_body = NewPlaybackToken,
    responses(
        (status = 201, body = PlaybackToken),
        (status = 400, body = super::ApiError),
        (status = 404, body = super::ApiError),
        (status = 422, body = super::ApiError),
    ))]
pub(super) async fn create_token(
    AxumState(s): AxumState<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    let req: NewPlaybackToken = parse(&body)?;
    if !(1..=MAX_TOKEN_TTL_S).contains(&req.ttl_s) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("ttl_s: must be 1 to {MAX_TOKEN_TTL_S} seconds"),
            Some("ttl_s"),
        ));
    }
    if let Some(origin) = &req.origin {
        if let Err(why) = playback::validate_origin(origin) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("origin: {why}"),
                Some("origin"),
            ));
        }
    }
    let pick = |st: &sluice_cluster::State, c: &sluice_cluster::model::Channel| {
        (c.id, st.signing_key().cloned())
    };
    let (channel, key) = match with_channel(&s, &name, pick).await? {
        (channel, Some(key)) => (channel, key),
        (_, None) => {
            // The first token of the cluster: make its first key.
            new_key(&s).await?;
            match with_channel(&s, &name, pick).await? {
                (channel, Some(key)) => (channel, key),
                (_, None) => {
                    return Err(error(
                        StatusCode::CONFLICT,
                        "no playback key to sign with",
                        None,
                    ))
                }
            }
        }
    };
    let expires_s = now_ms() / 1000 + req.ttl_s;
    let token = playback::sign(&key, channel, expires_s, req.origin.as_deref());
    tracing::info!(channel = %name, key = %key.key_id, expires_s, "playback token issued");
    Ok((
        StatusCode::CREATED,
        Json(PlaybackToken {
            hls_path: format!("/t/{token}/hls/{name}/index.m3u8"),
            watch_path: format!("/watch/{name}?token={token}"),
            channel: name,
            token,
            expires_ms: expires_s * 1000,
        }),
    )
        .into_response())
}

fn views(keys: &[PlaybackKey], signing: Option<&str>) -> Vec<PlaybackKeyView> {
    keys.iter()
        .map(|k| PlaybackKeyView {
            key_id: k.key_id.clone(),
            created_ms: k.created_ms,
            retired_ms: k.retired_ms,
            signing: Some(k.key_id.as_str()) == signing,
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/playback-keys", tag = "playback",
    responses((status = 200, body = PlaybackKeyList)))]
pub(super) async fn list_keys(AxumState(s): AxumState<ApiState>) -> Answer {
    let listed = s
        .handle
        .read_linearizable(|st| {
            let keys: Vec<PlaybackKey> = st.playback_keys.values().cloned().collect();
            let signing = st.signing_key().map(|k| k.key_id.clone());
            views(&keys, signing.as_deref())
        })
        .await;
    let keys = listed?;
    Ok(Json(PlaybackKeyList { keys }).into_response())
}

#[utoipa::path(post, path = "/api/v1/playback-keys", tag = "playback",
    responses(
        (status = 201, description = "The new key signs from now on; older keys still verify until retired", body = PlaybackKeyView),
        (status = 422, body = super::ApiError),
    ))]
pub(super) async fn rotate(AxumState(s): AxumState<ApiState>) -> Answer {
    let key_id = new_key(&s).await?;
    tracing::info!(key = %key_id, "playback key rotated");
    Ok((
        StatusCode::CREATED,
        Json(PlaybackKeyView {
            key_id,
            created_ms: now_ms(),
            retired_ms: None,
            signing: true,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/playback-keys/{id}", tag = "playback",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Retired: tokens it signed stop working on every node"),
        (status = 404, body = super::ApiError),
    ))]
pub(super) async fn retire(AxumState(s): AxumState<ApiState>, Path(id): Path<String>) -> Answer {
    propose(&s, Op::RetirePlaybackKey { key_id: id.clone() }).await?;
    tracing::info!(key = %id, "playback key retired");
    Ok(StatusCode::NO_CONTENT.into_response())
}
