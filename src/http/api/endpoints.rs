//! Endpoints (where viewers and edges fetch from, with their parents) and the snapshots
//! they report. Nodes register their own; operators add external edges and origins and
//! set parents (`upstreams`, in failover order).

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_cluster::command::Op;
use sluice_cluster::model::{Endpoint, EndpointKind, EndpointSnapshot, Health, HealthThresholds};
use sluice_cluster::State;
use utoipa::ToSchema;

use super::{not_found, parse, propose, Answer, ApiError, ApiState, Refused};
use crate::support::now_ms;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutEndpoint {
    kind: EndpointKind,
    url: String,
    #[serde(default)]
    node: Option<u64>,
    #[serde(default)]
    upstreams: Vec<String>,
    #[serde(default)]
    health: Option<HealthThresholds>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct EndpointView {
    #[serde(flatten)]
    pub(crate) endpoint: Endpoint,
    /// The latest snapshot's health, or `stale` when it is too old (or there is none).
    pub(crate) status: Health,
    pub(crate) last_snapshot: Option<EndpointSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history: Option<Vec<EndpointSnapshot>>,
}

fn view(st: &State, e: &Endpoint, now: i64, with_history: bool) -> EndpointView {
    let history = st.endpoint_snapshots.get(&e.name);
    let last = history.and_then(|h| h.back());
    EndpointView {
        endpoint: e.clone(),
        status: e.health_at(last, now),
        last_snapshot: last.cloned(),
        history: with_history.then(|| {
            history
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default()
        }),
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct EndpointList {
    pub(crate) endpoints: Vec<EndpointView>,
}

#[utoipa::path(get, path = "/api/v1/endpoints", tag = "endpoints",
    responses((status = 200, body = EndpointList)))]
pub(super) async fn list(AxumState(s): AxumState<ApiState>) -> Answer {
    let now = now_ms();
    let listed = s
        .handle
        .read_linearizable(|st| {
            st.endpoints
                .values()
                .map(|e| view(st, e, now, false))
                .collect::<Vec<_>>()
        })
        .await;
    let endpoints = listed?;
    Ok(Json(EndpointList { endpoints }).into_response())
}

#[utoipa::path(get, path = "/api/v1/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses(
        (status = 200, description = "The endpoint with its snapshot history", body = EndpointView),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn show(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    let now = now_ms();
    let found = s
        .handle
        .read_linearizable(|st| st.endpoints.get(&name).map(|e| view(st, e, now, true)))
        .await;
    match found {
        Ok(Some(v)) => Ok(Json(v).into_response()),
        Ok(None) => Err(not_found("endpoint", &name)),
        Err(e) => Err(Refused::from(e)),
    }
}

#[utoipa::path(put, path = "/api/v1/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    request_body = PutEndpoint,
    responses(
        (status = 200, description = "Replaced", body = EndpointView),
        (status = 201, description = "Created", body = EndpointView),
        (status = 400, body = ApiError),
        (status = 409, description = "Conflicts with another endpoint (a cycle of parents)", body = ApiError),
        (status = 422, body = ApiError),
    ))]
/// Creates or replaces an endpoint (thresholds kept when the request leaves them out).
pub(super) async fn put(
    AxumState(s): AxumState<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    let req: PutEndpoint = parse(&body)?;
    let existing = s.handle.read_local(|st| st.endpoints.get(&name).cloned());
    let health = req
        .health
        .or(existing.as_ref().map(|e| e.health))
        .unwrap_or_default();
    let op = Op::PutEndpoint {
        name: name.clone(),
        kind: req.kind,
        node: req.node,
        url: req.url,
        upstreams: req.upstreams,
        health,
    };
    propose(&s, op).await?;
    let now = now_ms();
    let shown = s
        .handle
        .read_local(|st| st.endpoints.get(&name).map(|e| view(st, e, now, false)));
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    match shown {
        Some(v) => Ok((status, Json(v)).into_response()),
        // Deleted by someone else in between.
        None => Err(not_found("endpoint", &name)),
    }
}

#[utoipa::path(delete, path = "/api/v1/endpoints/{name}", tag = "endpoints",
    params(("name" = String, Path, description = "Endpoint name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ApiError),
        (status = 409, description = "Another endpoint pulls from it", body = ApiError),
    ))]
pub(super) async fn delete(AxumState(s): AxumState<ApiState>, Path(name): Path<String>) -> Answer {
    propose(&s, Op::DeleteEndpoint { name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
