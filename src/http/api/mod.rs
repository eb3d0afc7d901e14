//! The admin API (`/api/v1`): cluster, nodes, channels, stream keys, generations,
//! tokens, endpoints, capture ports. JSON in and out; errors are
//! `{"error": message, "field": name}` with 400/401/403/404/409/422/502/503/504. The
//! OpenAPI document is generated from these handlers and served at
//! `/api/v1/openapi.json`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sluice_cluster::command::{Applied, Op, Refusal};
use sluice_cluster::handle::{ClusterError, ClusterHandle};
use sluice_cluster::model::verifier_of;
use sluice_cluster::State;
use utoipa::{OpenApi, ToSchema};

use crate::support::{now_ms, random_hex};

pub(crate) mod channels;
pub(crate) mod endpoints;
pub(crate) mod members;
pub(crate) mod nodes;
pub(crate) mod playback;
pub(crate) mod recordings;
pub(crate) mod tokens;

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
    /// This node's capture ports (simulated signal control).
    pub(crate) sdi: Arc<crate::sdi::Control>,
}

pub(crate) fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/cluster", get(cluster_status))
        .route("/api/v1/cluster/members", post(members::add))
        .route("/api/v1/cluster/members/{id}", delete(members::remove))
        .route("/api/v1/cluster/join", post(members::join))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/{id}", get(nodes::show))
        .route("/api/v1/capture-ports", get(nodes::list_ports))
        .route(
            "/api/v1/capture-ports/{node}/{device}",
            patch(nodes::update_port),
        )
        .route(
            "/api/v1/capture-ports/{node}/{device}/channel",
            put(nodes::bind_port),
        )
        .route(
            "/api/v1/capture-ports/{node}/{device}/simulated-signal",
            put(nodes::simulated_signal),
        )
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route(
            "/api/v1/playback-keys",
            get(playback::list_keys).post(playback::rotate),
        )
        .route("/api/v1/playback-keys/{id}", delete(playback::retire))
        .route(
            "/api/v1/channels/{name}/playback-tokens",
            post(playback::create_token),
        )
        .route("/api/v1/endpoints", get(endpoints::list))
        .route(
            "/api/v1/endpoints/{name}",
            get(endpoints::show)
                .put(endpoints::put)
                .delete(endpoints::delete),
        )
        .route(
            "/api/v1/channels",
            get(channels::list).post(channels::create),
        )
        .route(
            "/api/v1/channels/{name}",
            get(channels::show)
                .patch(channels::update)
                .delete(channels::delete),
        )
        .route("/api/v1/channels/{name}/keys", post(channels::create_key))
        .route(
            "/api/v1/channels/{name}/keys/{key_id}",
            delete(channels::revoke_key),
        )
        .route(
            "/api/v1/channels/{name}/generations",
            get(channels::generations),
        )
        .route("/api/v1/channels/{name}/status", get(channels::status))
        .route("/api/v1/channels/{name}/stop", post(channels::stop))
        .route("/api/v1/channels/{name}/recordings", get(recordings::list))
        .route(
            "/api/v1/channels/{name}/recordings/{generation}",
            get(recordings::show).delete(recordings::delete),
        )
        // Every admin route needs a token; one check for all of them.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(api)
        .with_state(state)
}

/// The API's reference, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice admin API",
        description = "Channels, stream keys, generations, nodes, cluster membership, \
            endpoints, capture ports, recordings, playback tokens and API tokens of a Sluice cluster. Every route needs \
            `Authorization: Bearer TOKEN`; read-only tokens may only GET."
    ),
    paths(
        cluster_status,
        members::add,
        members::remove,
        members::join,
        nodes::list,
        nodes::show,
        nodes::list_ports,
        nodes::update_port,
        nodes::bind_port,
        nodes::simulated_signal,
        tokens::list,
        tokens::create,
        tokens::revoke,
        endpoints::list,
        endpoints::show,
        endpoints::put,
        endpoints::delete,
        channels::list,
        channels::create,
        channels::show,
        channels::update,
        channels::delete,
        channels::create_key,
        channels::revoke_key,
        channels::generations,
        channels::status,
        channels::stop,
        recordings::list,
        recordings::show,
        recordings::delete,
        playback::create_token,
        playback::list_keys,
        playback::rotate,
        playback::retire,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// Every refusal: a message, and the request field it is about when there is one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ApiError {
    pub(crate) error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// A refused admin request: its status and the body every refusal has. Handlers
/// return it with `?`.
#[derive(Debug)]
pub(crate) struct Refused {
    status: StatusCode,
    body: ApiError,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The cluster's refusals keep their status and name the field they are about.
impl From<ClusterError> for Refused {
    fn from(e: ClusterError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let field = match &e {
            ClusterError::Refused(Refusal::InvalidField { field, .. }) => Some(field.as_str()),
            _ => None,
        };
        error(status, e.to_string(), field)
    }
}

/// What an admin handler answers: its response, or why the request was refused.
type Answer = Result<Response, Refused>;

fn error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Refused {
    Refused {
        status,
        body: ApiError {
            error: message.into(),
            field: field.map(String::from),
        },
    }
}

fn not_found(what: &str, name: &str) -> Refused {
    error(
        StatusCode::NOT_FOUND,
        format!("{what} {name:?} not found"),
        None,
    )
}

/// Admin tokens are checked against the replicated verifiers, so a token works on every
/// node; read-only tokens may only read. A token this replica does not know yet (made a
/// moment ago on another node) is looked up again after a linearizable read, within the
/// node's lookup budget (`ClusterHandle::read_for_auth`).
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
        )
        .into_response();
    };
    let verifier = verifier_of(bearer.trim());
    let lookup = |st: &State| {
        st.admin_token_for_verifier(&verifier)
            .map(|t| (t.revoked_ms.is_some(), t.read_only))
    };
    let known = s.handle.read_for_auth(lookup).await.ok().flatten();
    let own = sluice_cluster::network::constant_time_eq(
        bearer.trim().as_bytes(),
        s.admin_token.as_bytes(),
    );
    let reading = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    match known {
        Some((true, _)) => {
            error(StatusCode::UNAUTHORIZED, "this token was revoked", None).into_response()
        }
        Some((false, true)) if !reading => error(
            StatusCode::FORBIDDEN,
            "this token may only read: changes need an admin token",
            None,
        )
        .into_response(),
        Some(_) => next.run(request).await,
        None if own => next.run(request).await,
        None => error(
            StatusCode::UNAUTHORIZED,
            "bearer admin token required",
            None,
        )
        .into_response(),
    }
}

/// Parses a JSON body; the error names what serde could not read.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
            None,
        )
    })
}

/// Ready when the node has a leader and its spool is writable; otherwise 503 naming
/// every reason, one a line (an operator sees them all at once).
async fn readyz(AxumState(s): AxumState<ApiState>) -> Response {
    let mut reasons = Vec::new();
    let metrics = s.handle.raft().metrics().borrow().clone();
    if let Err(fatal) = &metrics.running_state {
        reasons.push(format!(
            "the cluster state store failed ({fatal}): this node no longer takes part in \
             the cluster and takes no publishers; restart it once its disk is fixed"
        ));
    } else if metrics.current_leader.is_none() {
        reasons.push("not joined to a cluster with a leader".to_string());
    }
    if let Err(why) = s.spool.lock().map(|r| r.clone()).unwrap_or(Ok(())) {
        reasons.push(format!("spool not writable: {why}"));
    }
    if reasons.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n").into_response()
}

/// Member facts for `GET /api/v1/cluster`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ClusterStatus {
    /// The node that answered.
    pub(crate) this_node: u64,
    pub(crate) leader: Option<u64>,
    pub(crate) term: u64,
    pub(crate) members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct MemberStatus {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) addr: String,
    pub(crate) voter: bool,
    pub(crate) healthy: bool,
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, description = "Leader, term and members", body = ClusterStatus)))]
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

fn new_key_or_500() -> Result<NewKey, Refused> {
    new_key().map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))
}

async fn propose(s: &ApiState, op: Op) -> Result<Applied, Refused> {
    Ok(s.handle.propose_op(op).await?)
}
