//! Channels, their stream keys and their generations (live sessions).

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_cluster::command::{ChannelPatch, FirstKey, Op};
use sluice_cluster::model::{
    Channel, Generation, Health, Ingest, LlHlsSettings, Placement, RetentionPolicy, SdiEncoding,
    Visibility,
};
use sluice_cluster::State;
use utoipa::ToSchema;

use super::{
    error, new_key_or_500, not_found, parse, propose, Answer, ApiError, ApiState, Refused,
};
use crate::support::now_ms;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewChannel {
    /// URL name: lower-case letters, digits and dashes, 1 to 63 characters.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    name: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    visibility: Visibility,
    /// Keep every generation as a recording (VOD). On unless set to false: the show
    /// must be there afterwards even if nobody thought of it before.
    #[serde(default = "recording_on")]
    recording: bool,
    /// How long finished recordings are kept (default: 7 days, no size limit).
    #[serde(default)]
    retention: RetentionPolicy,
    #[serde(default)]
    ll_hls: LlHlsSettings,
    #[serde(default)]
    placement: Placement,
    /// SRT publishers must encrypt with it (10 to 79 characters).
    #[serde(default)]
    #[schema(min_length = 10, max_length = 79)]
    srt_passphrase: Option<String>,
    /// Push (the default: encoders publish with a stream key) or a source the cluster
    /// pulls.
    #[serde(default)]
    ingest: NewIngest,
}

fn recording_on() -> bool {
    true
}

/// The ingests an operator can choose (SDI comes from binding a capture port).
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub(super) enum NewIngest {
    #[default]
    Push,
    SrtCaller {
        /// `srt://HOST:PORT?streamid=..&passphrase=..&pbkeylen=..&latency=..`
        url: String,
    },
}

/// Ingest kinds the API does not offer: 422 naming `ingest.kind`. The kinds it offers
/// are checked where the command is applied (a pull URL as a node will read it).
fn check_ingest(ingest: &Ingest) -> Result<(), Refused> {
    match ingest {
        Ingest::HlsPull { .. } => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ingest.kind: hls_pull is not available; use push or srt_caller",
            Some("ingest.kind"),
        )),
        Ingest::Sdi { .. } => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ingest.kind: an SDI ingest comes from binding a capture port, not from the channel",
            Some("ingest.kind"),
        )),
        Ingest::SrtCaller { .. } | Ingest::Push => Ok(()),
    }
}

/// A channel as the API shows it. The SRT passphrase is write-only (only whether one is
/// set is shown; one in a pull URL is masked).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ChannelView {
    pub(crate) id: u64,
    pub(crate) slug: String,
    pub(crate) title: String,
    pub(crate) visibility: Visibility,
    pub(crate) ingest: Ingest,
    pub(crate) ll_hls: LlHlsSettings,
    pub(crate) recording: bool,
    pub(crate) retention: RetentionPolicy,
    pub(crate) sdi_encoding: SdiEncoding,
    pub(crate) placement: Placement,
    pub(crate) created_ms: i64,
    pub(crate) last_generation: u64,
    pub(crate) srt_passphrase_set: bool,
    /// A pulled channel's node (set by the cluster's placement).
    pub(crate) puller: Option<u64>,
    /// How often the cluster moved the pull to another node.
    pub(crate) restarts: u64,
    pub(crate) last_restart_ms: Option<i64>,
    /// Why the cluster will not move the channel although its node is down (pinned,
    /// SDI).
    pub(crate) alert: Option<String>,
    /// The generation holding the channel (starting, live or reconnecting), if any.
    pub(crate) generation: Option<Generation>,
    /// The name of the live generation's origin node.
    pub(crate) origin_name: Option<String>,
    /// Viewers on every node, from the endpoints' latest (not stale) snapshots.
    pub(crate) viewers: u64,
    /// Age of the newest part at the origin when it last reported (ms).
    pub(crate) playlist_age_ms: Option<u64>,
    /// What the operator should change about the live stream (a long keyframe
    /// interval).
    #[serde(default)]
    pub(crate) warnings: Vec<String>,
}

pub(crate) fn channel_view(c: &Channel, st: &State, now: i64) -> ChannelView {
    let generation = st.active_generation(c.id).cloned();
    let origin = generation.as_ref().map(|g| g.origin);
    let mut viewers = 0;
    let mut playlist_age_ms = None;
    for e in st.endpoints.values() {
        let Some(last) = st.endpoint_snapshots.get(&e.name).and_then(|h| h.back()) else {
            continue;
        };
        if e.health_at(Some(last), now) == Health::Stale {
            continue;
        }
        viewers += last.channel_viewers.get(&c.slug).copied().unwrap_or(0);
        if origin.is_some() && e.node == origin {
            playlist_age_ms = last.playlist_age_ms;
        }
    }
    let ingest = match &c.ingest {
        Ingest::SrtCaller { url } => Ingest::SrtCaller {
            url: crate::ingest::srt_caller::redacted(url),
        },
        other => other.clone(),
    };
    ChannelView {
        id: c.id,
        slug: c.slug.clone(),
        title: c.title.clone(),
        visibility: c.visibility,
        ingest,
        ll_hls: c.ll_hls,
        recording: c.recording,
        retention: c.retention,
        sdi_encoding: c.sdi_encoding,
        placement: c.placement,
        created_ms: c.created_ms,
        last_generation: c.last_generation,
        srt_passphrase_set: c.srt_passphrase.is_some(),
        puller: c.puller,
        restarts: c.restarts,
        last_restart_ms: c.last_restart_ms,
        alert: sluice_cluster::placement::alert(st, c),
        origin_name: origin
            .and_then(|o| st.nodes.get(&o))
            .map(|n| n.name.clone()),
        warnings: generation
            .as_ref()
            .and_then(|g| g.media.keyframe_interval_ms)
            .and_then(sluice_cluster::model::keyframe_warning)
            .into_iter()
            .collect(),
        generation,
        viewers,
        playlist_age_ms,
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct ChannelCreated {
    pub(crate) channel: String,
    /// The stream key, shown this once (none for a pulled channel).
    pub(crate) stream_key: Option<String>,
    pub(crate) key_id: Option<String>,
    pub(crate) details: Option<ChannelView>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct ChannelList {
    pub(crate) channels: Vec<ChannelView>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyView {
    pub(crate) key_id: String,
    pub(crate) created_ms: i64,
    pub(crate) revoked_ms: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct ChannelDetail {
    pub(crate) channel: ChannelView,
    pub(crate) keys: Vec<KeyView>,
    pub(crate) generation: Option<Generation>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyCreated {
    pub(crate) channel: String,
    pub(crate) key_id: String,
    /// Shown this once; the cluster keeps only a SHA-256.
    pub(crate) stream_key: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct Stopped {
    pub(crate) channel: String,
    pub(crate) generation: u64,
    pub(crate) state: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct GenerationList {
    pub(crate) channel: String,
    /// Newest first.
    pub(crate) generations: Vec<Generation>,
}

/// Whether a channel is live, where, with what media and how many viewers.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct StreamStatus {
    pub(crate) channel: String,
    /// `idle` when no generation holds the channel, else the generation's state.
    pub(crate) state: String,
    pub(crate) generation: Option<Generation>,
    pub(crate) origin_name: Option<String>,
    pub(crate) viewers: u64,
    pub(crate) playlist_age_ms: Option<u64>,
    /// Where viewers play it, on any node.
    pub(crate) playlist_path: String,
}

#[utoipa::path(post, path = "/api/v1/channels", tag = "channels",
    request_body = NewChannel,
    responses(
        (status = 201, description = "Created; the stream key is shown this once", body = ChannelCreated),
        (status = 400, description = "Malformed JSON", body = ApiError),
        (status = 409, description = "A channel with this name exists", body = ApiError),
        (status = 422, description = "A field is invalid (named in `field`)", body = ApiError),
    ))]
pub(super) async fn create(AxumState(s): AxumState<ApiState>, body: Bytes) -> Answer {
    let req: NewChannel = parse(&body)?;
    let ingest = match req.ingest {
        NewIngest::Push => Ingest::Push,
        NewIngest::SrtCaller { url } => Ingest::SrtCaller { url },
    };
    check_ingest(&ingest)?;
    let key = new_key_or_500()?;
    // A pulled channel has no publishers, so no stream key.
    let pushed = ingest == Ingest::Push;
    let op = Op::CreateChannel {
        slug: req.name.clone(),
        title: req.title,
        visibility: req.visibility,
        ingest,
        ll_hls: req.ll_hls,
        recording: req.recording,
        retention: req.retention,
        placement: req.placement,
        // One command: the channel never exists without its key.
        srt_passphrase: req.srt_passphrase.clone(),
        first_key: pushed.then(|| FirstKey {
            key_id: key.key_id.clone(),
            verifier: key.verifier,
        }),
    };
    propose(&s, op).await?;
    let now = now_ms();
    let details = s.handle.read_local(|st| {
        st.channel_by_slug(&req.name)
            .map(|c| channel_view(c, st, now))
    });
    let created = ChannelCreated {
        channel: req.name,
        stream_key: pushed.then_some(key.plaintext),
        key_id: pushed.then_some(key.key_id),
        details,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "channels",
    responses((status = 200, body = ChannelList)))]
pub(super) async fn list(AxumState(s): AxumState<ApiState>) -> Answer {
    let listed = s
        .handle
        .read_linearizable(|st| {
            let now = now_ms();
            st.channels
                .values()
                .map(|c| channel_view(c, st, now))
                .collect::<Vec<_>>()
        })
        .await;
    let channels = listed?;
    Ok(Json(ChannelList { channels }).into_response())
}

/// Reads one channel (linearizable), or answers 404 naming it.
pub(super) async fn with_channel<T: Send + 'static>(
    s: &ApiState,
    name: &str,
    f: impl FnOnce(&State, &Channel) -> T + Send + 'static,
) -> Result<T, Refused> {
    let slug = name.to_string();
    let found = s
        .handle
        .read_linearizable(move |st| st.channel_by_slug(&slug).map(|c| f(st, c)))
        .await;
    match found {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(not_found("channel", name)),
        Err(e) => Err(Refused::from(e)),
    }
}

#[utoipa::path(get, path = "/api/v1/channels/{name}", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 200, body = ChannelDetail),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn show(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    let detail = with_channel(&s, &name, |st, c| ChannelDetail {
        channel: channel_view(c, st, now_ms()),
        keys: st
            .keys
            .values()
            .filter(|k| k.channel == c.id)
            .map(|k| KeyView {
                key_id: k.key_id.clone(),
                created_ms: k.created_ms,
                revoked_ms: k.revoked_ms,
            })
            .collect(),
        generation: st.active_generation(c.id).cloned(),
    })
    .await;
    let d = detail?;
    Ok(Json(d).into_response())
}

#[utoipa::path(patch, path = "/api/v1/channels/{name}", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    request_body = ChannelPatch,
    responses(
        (status = 200, body = ChannelView),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "The change conflicts with the channel's state", body = ApiError),
        (status = 422, body = ApiError),
    ))]
pub(super) async fn update(
    AxumState(s): AxumState<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    let patch: ChannelPatch = parse(&body)?;
    if let Some(ingest) = &patch.ingest {
        check_ingest(ingest)?;
    }
    let op = Op::UpdateChannel {
        slug: name.clone(),
        patch,
    };
    propose(&s, op).await?;
    let now = now_ms();
    match s
        .handle
        .read_local(|st| st.channel_by_slug(&name).map(|c| channel_view(c, st, now)))
    {
        Some(v) => Ok(Json(v).into_response()),
        // Deleted by someone else in between.
        None => Err(not_found("channel", &name)),
    }
}

#[utoipa::path(delete, path = "/api/v1/channels/{name}", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ApiError),
        (status = 409, description = "The channel is live", body = ApiError),
    ))]
pub(super) async fn delete(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    propose(&s, Op::DeleteChannel { slug: name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/v1/channels/{name}/keys", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 201, body = KeyCreated),
        (status = 404, body = ApiError),
        (status = 409, description = "A pulled channel has no stream keys", body = ApiError),
    ))]
pub(super) async fn create_key(
    AxumState(s): AxumState<ApiState>,
    Path(name): Path<String>,
) -> Answer {
    let key = new_key_or_500()?;
    let op = Op::CreateKey {
        channel: name.clone(),
        key_id: key.key_id.clone(),
        verifier: key.verifier,
    };
    propose(&s, op).await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            channel: name,
            key_id: key.key_id,
            stream_key: key.plaintext,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/channels/{name}/keys/{key_id}", tag = "channels",
    params(
        ("name" = String, Path, description = "Channel name"),
        ("key_id" = String, Path, description = "Key id"),
    ),
    responses(
        (status = 204, description = "Revoked: publishers using it are refused from now on"),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn revoke_key(
    AxumState(s): AxumState<ApiState>,
    Path((name, key_id)): Path<(String, String)>,
) -> Answer {
    let op = Op::RevokeKey {
        channel: name,
        key_id,
    };
    propose(&s, op).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/channels/{name}/generations", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 200, body = GenerationList),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn generations(
    AxumState(s): AxumState<ApiState>,
    Path(name): Path<String>,
) -> Answer {
    let listed = with_channel(&s, &name, |st, c| GenerationList {
        channel: c.slug.clone(),
        generations: st
            .generations
            .get(&c.id)
            .map(|g| g.values().rev().cloned().collect())
            .unwrap_or_default(),
    })
    .await;
    let l = listed?;
    Ok(Json(l).into_response())
}

#[utoipa::path(get, path = "/api/v1/channels/{name}/status", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 200, body = StreamStatus),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn status(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    let status = with_channel(&s, &name, |st, c| {
        let v = channel_view(c, st, now_ms());
        StreamStatus {
            state: v.generation.as_ref().map_or("idle".to_string(), |g| {
                serde_json::to_value(g.state)
                    .ok()
                    .and_then(|s| s.as_str().map(String::from))
                    .unwrap_or_default()
            }),
            playlist_path: format!("/hls/{}/index.m3u8", c.slug),
            channel: v.slug,
            generation: v.generation,
            origin_name: v.origin_name,
            viewers: v.viewers,
            playlist_age_ms: v.playlist_age_ms,
        }
    })
    .await;
    let st = status?;
    Ok(Json(st).into_response())
}

/// Ends the channel's live generation now (viewers get `EXT-X-ENDLIST`); its origin
/// closes the publisher's connection.
#[utoipa::path(post, path = "/api/v1/channels/{name}/stop", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 200, body = Stopped),
        (status = 404, body = ApiError),
        (status = 409, description = "The channel is not live", body = ApiError),
    ))]
pub(super) async fn stop(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    let active = with_channel(&s, &name, |st, c| {
        st.active_generation(c.id).map(|g| g.number)
    })
    .await?;
    let Some(generation) = active else {
        return Err(error(
            StatusCode::CONFLICT,
            format!("channel {name:?} is not live"),
            None,
        ));
    };
    let op = Op::EndGeneration {
        channel: name.clone(),
        generation,
        failed: false,
    };
    propose(&s, op).await?;
    Ok(Json(Stopped {
        channel: name,
        generation,
        state: "ended".into(),
    })
    .into_response())
}
