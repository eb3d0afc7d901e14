//! Cluster membership: add a waiting node, remove a node, make this node join.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{error, parse, Answer, ApiError, ApiState, Refused};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMember {
    /// The new node's cluster URL.
    addr: String,
}

fn check_cluster_url(url: &str, field: &str) -> Result<(), Refused> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 512
        && reqwest::Url::parse(url).is_ok();
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: must be a node's cluster URL, e.g. http://10.0.0.2:7000"),
            Some(field),
        ))
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct MemberAdded {
    pub(crate) id: u64,
    pub(crate) addr: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Joined {
    /// The member asked.
    joined: String,
    /// This node's id in the cluster.
    id: u64,
}

#[utoipa::path(post, path = "/api/v1/cluster/members", tag = "cluster",
    request_body = NewMember,
    responses(
        (status = 201, description = "Added as a voter", body = MemberAdded),
        (status = 400, body = ApiError),
        (status = 409, description = "Membership cannot change now", body = ApiError),
        (status = 422, body = ApiError),
        (status = 502, description = "The node did not answer", body = ApiError),
        (status = 503, description = "No leader", body = ApiError),
        (status = 504, description = "The node did not answer in time", body = ApiError),
    ))]
/// Adds a running node that waits to be added (same cluster secret, empty data dir).
pub(super) async fn add(AxumState(s): AxumState<ApiState>, body: Bytes) -> Answer {
    let req: NewMember = parse(&body)?;
    check_cluster_url(&req.addr, "addr")?;
    let id = s.handle.add_node(&req.addr).await?;
    Ok((
        StatusCode::CREATED,
        Json(MemberAdded { id, addr: req.addr }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "Node id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "Membership cannot change now", body = ApiError),
        (status = 502, body = ApiError),
        (status = 503, body = ApiError),
        (status = 504, body = ApiError),
    ))]
pub(super) async fn remove(AxumState(s): AxumState<ApiState>, Path(id): Path<String>) -> Answer {
    let Ok(id) = id.parse::<u64>() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "id: must be a node id (a number, see GET /api/v1/cluster)",
            Some("id"),
        ));
    };
    match s.handle.remove_node(id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(Refused::from(e)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JoinCluster {
    /// The cluster URL of any member of the cluster to join.
    member: String,
}

#[utoipa::path(post, path = "/api/v1/cluster/join", tag = "cluster",
    request_body = JoinCluster,
    responses(
        (status = 200, body = Joined),
        (status = 400, body = ApiError),
        (status = 409, description = "This node already belongs to a cluster", body = ApiError),
        (status = 422, body = ApiError),
        (status = 502, body = ApiError),
        (status = 504, body = ApiError),
    ))]
/// Makes this node (waiting to be added) join the cluster `member` belongs to.
pub(super) async fn join(AxumState(s): AxumState<ApiState>, body: Bytes) -> Answer {
    let req: JoinCluster = parse(&body)?;
    check_cluster_url(&req.member, "member")?;
    if s.handle.raft().is_initialized().await.unwrap_or(true) {
        return Err(error(
            StatusCode::CONFLICT,
            "this node already belongs to a cluster: to move it, leave (sluice cluster leave), \
             wipe its data dir and start it with --no-bootstrap or --join",
            None,
        ));
    }
    match s.handle.join(&req.member, &s.advertise).await {
        Ok(()) => Ok(Json(Joined {
            joined: req.member,
            id: s.handle.id(),
        })
        .into_response()),
        Err(e) => Err(Refused::from(e)),
    }
}
