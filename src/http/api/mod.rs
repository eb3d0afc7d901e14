//! The admin API: cluster status, channels, stream keys. JSON in and out; errors are
//! `{"error": message, "field": name}` with 400/401/404/409/422/503.

// Helpers return the refusal response itself as their error, made once per refused
// request; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_cluster::command::{Applied, ChannelPatch, Command, FirstKey, Op, Refusal};
use sluice_cluster::handle::{ClusterError, ClusterHandle};
use sluice_cluster::model::{Channel, Ingest, LlHlsSettings, Placement, Visibility};
use sluice_cluster::State;

use crate::serve::{now_ms, random_hex};

mod endpoints;
mod members;
mod tokens;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) handle: ClusterHandle,
    /// This node's own `admin.token`: accepted here before the cluster knows it (a node
    /// waiting to join), never once the cluster has it revoked.
    pub(crate) admin_token: Arc<str>,
    /// This node's cluster URL, for joining a cluster through the API.
    pub(crate) advertise: Arc<str>,
    /// Whether the spool can be written (`Err` names why not), for `/readyz`.
    pub(crate) spool: Arc<std::sync::Mutex<Result<(), String>>>,
}

pub(crate) fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/cluster", get(cluster_status))
        .route("/api/v1/cluster/members", post(members::add))
        .route("/api/v1/cluster/members/{id}", delete(members::remove))
        .route("/api/v1/cluster/join", post(members::join))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/endpoints", get(endpoints::list))
        .route(
            "/api/v1/endpoints/{name}",
            get(endpoints::show)
                .put(endpoints::put)
                .delete(endpoints::delete),
        )
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route("/api/v1/channels", get(list_channels).post(create_channel))
        .route(
            "/api/v1/channels/{name}",
            get(show_channel)
                .patch(update_channel)
                .delete(delete_channel),
        )
        .route("/api/v1/channels/{name}/keys", post(create_key))
        .route("/api/v1/channels/{name}/stop", post(stop_channel))
        .route("/api/v1/channels/{name}/keys/{key_id}", delete(revoke_key))
        // Every admin route needs the admin token; one check for all of them.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .with_state(state)
}

#[derive(Serialize)]
struct ApiError {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Response {
    let body = ApiError {
        error: message.into(),
        field: field.map(String::from),
    };
    (status, Json(body)).into_response()
}

fn cluster_error(e: ClusterError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let field = match &e {
        ClusterError::Refused(Refusal::InvalidField { field, .. }) => Some(field.as_str()),
        _ => None,
    };
    error(status, e.to_string(), field)
}

/// Admin tokens are checked against the replicated verifiers, so a token works on every
/// node; read-only tokens may only read. A token this replica does not know yet (made a
/// moment ago on another node) is looked up again after a linearizable read.
async fn require_token(
    AxumState(s): AxumState<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(bearer) = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "bearer admin token required",
            None,
        );
    };
    let verifier = verifier_of(bearer.trim());
    let lookup = |st: &State| {
        st.admin_token_for_verifier(&verifier)
            .map(|t| (t.revoked_ms.is_some(), t.read_only))
    };
    let mut known = s.handle.read_local(lookup);
    if known.is_none() {
        known = s.handle.read_linearizable(lookup).await.ok().flatten();
    }
    let own = sluice_cluster::network::constant_time_eq(
        bearer.trim().as_bytes(),
        s.admin_token.as_bytes(),
    );
    let reading = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    match known {
        Some((true, _)) => error(StatusCode::UNAUTHORIZED, "this token was revoked", None),
        Some((false, true)) if !reading => error(
            StatusCode::FORBIDDEN,
            "this token may only read: changes need an admin token",
            None,
        ),
        Some(_) => next.run(request).await,
        None if own => next.run(request).await,
        None => error(
            StatusCode::UNAUTHORIZED,
            "bearer admin token required",
            None,
        ),
    }
}

/// Parses a JSON body; the error names what serde could not read.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
            None,
        )
    })
}

async fn readyz(AxumState(s): AxumState<ApiState>) -> Response {
    if s.handle.raft().metrics().borrow().current_leader.is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not joined to a cluster with a leader\n",
        )
            .into_response();
    }
    let spool = s.spool.lock().map(|r| r.clone()).unwrap_or(Ok(()));
    match spool {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("spool not writable: {why}\n"),
        )
            .into_response(),
    }
}

/// Member facts for `GET /api/v1/cluster`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClusterStatus {
    /// The node that answered.
    pub(crate) this_node: u64,
    pub(crate) leader: Option<u64>,
    pub(crate) term: u64,
    pub(crate) members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MemberStatus {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) addr: String,
    pub(crate) voter: bool,
    pub(crate) healthy: bool,
}

async fn cluster_status(AxumState(s): AxumState<ApiState>) -> Response {
    let metrics = s.handle.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let now = now_ms();
    let members = s.handle.read_local(|state| {
        membership
            .nodes()
            .map(|(id, node)| {
                let replicated = state.nodes.get(id);
                MemberStatus {
                    id: *id,
                    name: replicated.map(|n| n.name.clone()).unwrap_or_default(),
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                    healthy: replicated.is_some_and(|n| !n.down && n.lease.valid_at(now)),
                }
            })
            .collect()
    });
    Json(ClusterStatus {
        this_node: s.handle.id(),
        leader: metrics.current_leader,
        term: metrics.current_term,
        members,
    })
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewChannel {
    name: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    visibility: Visibility,
    #[serde(default)]
    recording: bool,
    #[serde(default)]
    ll_hls: LlHlsSettings,
    #[serde(default)]
    placement: Placement,
    /// SRT publishers must encrypt with it (10 to 79 characters).
    #[serde(default)]
    srt_passphrase: Option<String>,
    /// Push (the default: encoders publish with a stream key) or a source the cluster
    /// pulls.
    #[serde(default)]
    ingest: NewIngest,
}

/// The ingests an operator can choose (SDI comes from binding a capture port).
#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
enum NewIngest {
    #[default]
    Push,
    SrtCaller {
        url: String,
    },
}

/// Checks a pull source URL as a node will read it: 422 naming `ingest.url`.
fn check_ingest(ingest: &Ingest) -> Result<(), Response> {
    if let Ingest::HlsPull { .. } = ingest {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ingest.kind: hls_pull is not available; use push or srt_caller",
            Some("ingest.kind"),
        ));
    }
    if let Ingest::SrtCaller { url } = ingest {
        crate::ingest::srt_caller::SrtSource::parse(url).map_err(|why| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("ingest.url: {why}"),
                Some("ingest.url"),
            )
        })?;
    }
    Ok(())
}

/// A channel as the API shows it: the SRT passphrase is write-only (only whether one is
/// set is shown; one in a pull URL is masked), and `alert` says why the cluster will not
/// move it although its node is down (pinned, SDI).
pub(crate) fn channel_view(c: &Channel, state: &State, now_ms: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("srt_passphrase");
        map.insert(
            "srt_passphrase_set".into(),
            serde_json::Value::Bool(c.srt_passphrase.is_some()),
        );
        if let Ingest::SrtCaller { url } = &c.ingest {
            map.insert(
                "ingest".into(),
                serde_json::json!({"kind": "srt_caller", "url": crate::ingest::srt_caller::redacted(url)}),
            );
        }
        map.insert(
            "alert".into(),
            serde_json::to_value(sluice_cluster::placement::alert(state, c, now_ms))
                .unwrap_or_default(),
        );
    }
    v
}

/// A new stream key: the plaintext goes to the caller once, the cluster keeps a SHA-256.
pub(crate) struct NewKey {
    pub(crate) key_id: String,
    pub(crate) plaintext: String,
    pub(crate) verifier: String,
}

pub(crate) fn new_key() -> anyhow::Result<NewKey> {
    let plaintext = format!("sk{}", &random_hex()?[..40]);
    let verifier = verifier_of(&plaintext);
    Ok(NewKey {
        key_id: random_hex()?[..8].to_string(),
        plaintext,
        verifier,
    })
}

/// The replicated form of a secret: lower-case hex SHA-256.
pub(crate) fn verifier_of(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_key_or_500() -> Result<NewKey, Response> {
    new_key().map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))
}

async fn propose(s: &ApiState, op: Op) -> Result<Applied, Response> {
    s.handle
        .propose(Command {
            at_ms: now_ms(),
            op,
        })
        .await
        .map_err(cluster_error)
}

async fn create_channel(AxumState(s): AxumState<ApiState>, body: Bytes) -> Response {
    let req: NewChannel = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let ingest = match req.ingest {
        NewIngest::Push => Ingest::Push,
        NewIngest::SrtCaller { url } => Ingest::SrtCaller { url },
    };
    if let Err(r) = check_ingest(&ingest) {
        return r;
    }
    let key = match new_key_or_500() {
        Ok(k) => k,
        Err(r) => return r,
    };
    // A pulled channel has no publishers, so no stream key.
    let pushed = ingest == Ingest::Push;
    let op = Op::CreateChannel {
        slug: req.name.clone(),
        title: req.title,
        visibility: req.visibility,
        ingest,
        ll_hls: req.ll_hls,
        recording: req.recording,
        placement: req.placement,
        // One command: the channel never exists without its key.
        srt_passphrase: req.srt_passphrase.clone(),
        first_key: pushed.then(|| FirstKey {
            key_id: key.key_id.clone(),
            verifier: key.verifier,
        }),
    };
    if let Err(r) = propose(&s, op).await {
        return r;
    }
    let now = now_ms();
    let channel = s.handle.read_local(|st| {
        st.channel_by_slug(&req.name)
            .map(|c| channel_view(c, st, now))
    });
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "channel": req.name,
            "stream_key": pushed.then_some(key.plaintext),
            "key_id": pushed.then_some(key.key_id),
            "details": channel,
        })),
    )
        .into_response()
}

async fn list_channels(AxumState(s): AxumState<ApiState>) -> Response {
    match s
        .handle
        .read_linearizable(|st| {
            let now = now_ms();
            st.channels
                .values()
                .map(|c| channel_view(c, st, now))
                .collect::<Vec<_>>()
        })
        .await
    {
        Ok(list) => Json(serde_json::json!({ "channels": list })).into_response(),
        Err(e) => cluster_error(e),
    }
}

async fn show_channel(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Response {
    let found = s
        .handle
        .read_linearizable(|st| {
            st.channel_by_slug(&name).map(|c| {
                let keys: Vec<_> = st.keys.values().filter(|k| k.channel == c.id).map(|k| {
                    serde_json::json!({"key_id": k.key_id, "created_ms": k.created_ms, "revoked_ms": k.revoked_ms})
                }).collect();
                serde_json::json!({"channel": channel_view(c, st, now_ms()), "keys": keys, "generation": st.active_generation(c.id)})
            })
        })
        .await;
    match found {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("channel {name:?} not found"),
            Some("name"),
        ),
        Err(e) => cluster_error(e),
    }
}

async fn update_channel(
    AxumState(s): AxumState<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let patch: ChannelPatch = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(Err(r)) = patch.ingest.as_ref().map(check_ingest) {
        return r;
    }
    match propose(
        &s,
        Op::UpdateChannel {
            slug: name.clone(),
            patch,
        },
    )
    .await
    {
        Ok(_) => {
            let now = now_ms();
            Json(
                s.handle
                    .read_local(|st| st.channel_by_slug(&name).map(|c| channel_view(c, st, now))),
            )
            .into_response()
        }
        Err(r) => r,
    }
}

async fn delete_channel(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Response {
    match propose(&s, Op::DeleteChannel { slug: name }).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn create_key(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Response {
    let key = match new_key_or_500() {
        Ok(k) => k,
        Err(r) => return r,
    };
    let op = Op::CreateKey {
        channel: name.clone(),
        key_id: key.key_id.clone(),
        verifier: key.verifier,
    };
    match propose(&s, op).await {
        Ok(_) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"channel": name, "key_id": key.key_id, "stream_key": key.plaintext})),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn revoke_key(
    AxumState(s): AxumState<ApiState>,
    Path((name, key_id)): Path<(String, String)>,
) -> Response {
    match propose(
        &s,
        Op::RevokeKey {
            channel: name,
            key_id,
        },
    )
    .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// Ends the channel's live generation now (viewers get `EXT-X-ENDLIST`); its origin
/// closes the publisher's connection.
async fn stop_channel(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Response {
    let active = s
        .handle
        .read_linearizable(|st| {
            st.channel_by_slug(&name)
                .map(|c| st.active_generation(c.id).map(|g| g.number))
        })
        .await;
    let generation = match active {
        Ok(Some(Some(g))) => g,
        Ok(Some(None)) => {
            return error(
                StatusCode::CONFLICT,
                format!("channel {name:?} is not live"),
                None,
            )
        }
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("channel {name:?} not found"),
                Some("name"),
            )
        }
        Err(e) => return cluster_error(e),
    };
    let op = Op::EndGeneration {
        channel: name.clone(),
        generation,
        failed: false,
    };
    match propose(&s, op).await {
        Ok(_) => {
            Json(serde_json::json!({"channel": name, "generation": generation, "state": "ended"}))
                .into_response()
        }
        Err(r) => r,
    }
}
