//! Nodes (lease health, capabilities, what each is origin of) and capture ports.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_cluster::command::Op;
use sluice_cluster::model::{CapturePort, Node, NodeUrls};
use sluice_cluster::State;
use utoipa::ToSchema;

use super::{error, not_found, parse, propose, Answer, ApiError, ApiState, Refused};
use crate::support::now_ms;

/// A node as the cluster sees it.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct NodeView {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) urls: NodeUrls,
    /// Lease valid and not marked down.
    pub(crate) healthy: bool,
    /// Time since the node's last heartbeat (ms).
    pub(crate) heartbeat_age_ms: i64,
    pub(crate) lease_ttl_ms: i64,
    pub(crate) voter: bool,
    pub(crate) leader: bool,
    /// Channels whose live generation this node originates.
    pub(crate) origin_of: Vec<String>,
    /// Pulled channels placed on this node.
    pub(crate) pulling: Vec<String>,
    /// Capabilities: the capture ports found on it.
    pub(crate) capture_ports: Vec<CapturePortView>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct NodeList {
    pub(crate) nodes: Vec<NodeView>,
}

/// A capture port with its bound channel's name.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct CapturePortView {
    #[serde(flatten)]
    pub(crate) port: CapturePort,
    pub(crate) channel: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct CapturePortList {
    pub(crate) capture_ports: Vec<CapturePortView>,
}

fn port_view(st: &State, p: &CapturePort) -> CapturePortView {
    CapturePortView {
        port: p.clone(),
        channel: p
            .bound_channel
            .and_then(|id| st.channels.get(&id))
            .map(|c| c.slug.clone()),
    }
}

fn node_view(st: &State, n: &Node, voters: &[u64], leader: Option<u64>, now: i64) -> NodeView {
    let mut origin_of: Vec<String> = st
        .all_generations()
        .filter(|g| g.state.is_active() && g.origin == n.id)
        .filter_map(|g| st.channels.get(&g.channel).map(|c| c.slug.clone()))
        .collect();
    origin_of.sort();
    NodeView {
        id: n.id,
        name: n.name.clone(),
        urls: n.urls.clone(),
        healthy: st.node_up(n.id),
        heartbeat_age_ms: now - n.lease.heartbeat_ms,
        lease_ttl_ms: n.lease.ttl_ms,
        voter: voters.contains(&n.id),
        leader: leader == Some(n.id),
        origin_of,
        pulling: st
            .channels
            .values()
            .filter(|c| c.puller == Some(n.id))
            .map(|c| c.slug.clone())
            .collect(),
        capture_ports: st
            .capture_ports
            .iter()
            .filter(|p| p.node == n.id)
            .map(|p| port_view(st, p))
            .collect(),
    }
}

async fn read_nodes(s: &ApiState) -> Result<Vec<NodeView>, Refused> {
    let metrics = s.handle.raft().metrics().borrow().clone();
    let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
    let leader = metrics.current_leader;
    let now = now_ms();
    s.handle
        .read_linearizable(move |st| {
            st.nodes
                .values()
                .map(|n| node_view(st, n, &voters, leader, now))
                .collect()
        })
        .await
        .map_err(Refused::from)
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, body = NodeList)))]
pub(super) async fn list(AxumState(s): AxumState<ApiState>) -> Answer {
    let nodes = read_nodes(&s).await?;
    Ok(Json(NodeList { nodes }).into_response())
}

fn parse_id(raw: &str, field: &str) -> Result<u64, Refused> {
    raw.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{field}: must be a number"),
            Some(field),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = u64, Path, description = "Node id")),
    responses(
        (status = 200, body = NodeView),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn show(AxumState(s): AxumState<ApiState>, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id, "id")?;
    let nodes = read_nodes(&s).await?;
    match nodes.into_iter().find(|n| n.id == id) {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(not_found("node", &id.to_string())),
    }
}

#[utoipa::path(get, path = "/api/v1/capture-ports", tag = "capture ports",
    responses((status = 200, body = CapturePortList)))]
pub(super) async fn list_ports(AxumState(s): AxumState<ApiState>) -> Answer {
    let listed = s
        .handle
        .read_linearizable(|st| {
            st.capture_ports
                .iter()
                .map(|p| port_view(st, p))
                .collect::<Vec<_>>()
        })
        .await;
    let capture_ports = listed?;
    Ok(Json(CapturePortList { capture_ports }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PortPatch {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PortBinding {
    /// The channel this port feeds, or null to unbind it.
    channel: Option<String>,
}

fn port_path(raw: &(String, String)) -> Result<(u64, u32), Refused> {
    let node = parse_id(&raw.0, "node")?;
    let device = parse_id(&raw.1, "device")?;
    let device = u32::try_from(device).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "device: must be a device index",
            Some("device"),
        )
    })?;
    Ok((node, device))
}

async fn show_port(s: &ApiState, node: u64, device: u32) -> Answer {
    match s
        .handle
        .read_local(|st| st.capture_port(node, device).map(|p| port_view(st, p)))
    {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(not_found("capture port", &format!("{node}/{device}"))),
    }
}

#[utoipa::path(patch, path = "/api/v1/capture-ports/{node}/{device}", tag = "capture ports",
    params(
        ("node" = u64, Path, description = "Node id"),
        ("device" = u32, Path, description = "Device index on the node"),
    ),
    request_body = PortPatch,
    responses(
        (status = 200, body = CapturePortView),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
        (status = 422, body = ApiError),
    ))]
pub(super) async fn update_port(
    AxumState(s): AxumState<ApiState>,
    Path(raw): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let (node, device) = port_path(&raw)?;
    let patch: PortPatch = parse(&body)?;
    let op = Op::UpdateCapturePort {
        node,
        device,
        label: patch.label,
        enabled: patch.enabled,
    };
    propose(&s, op).await?;
    show_port(&s, node, device).await
}

#[utoipa::path(put, path = "/api/v1/capture-ports/{node}/{device}/channel", tag = "capture ports",
    params(
        ("node" = u64, Path, description = "Node id"),
        ("device" = u32, Path, description = "Device index on the node"),
    ),
    request_body = PortBinding,
    responses(
        (status = 200, body = CapturePortView),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "The port or the channel is in use", body = ApiError),
    ))]
pub(super) async fn bind_port(
    AxumState(s): AxumState<ApiState>,
    Path(raw): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let (node, device) = port_path(&raw)?;
    let binding: PortBinding = parse(&body)?;
    let op = Op::BindCapturePort {
        node,
        device,
        channel: binding.channel,
    };
    propose(&s, op).await?;
    show_port(&s, node, device).await
}

/// A simulated port's signal, cut or restored (for tests and demos).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SimulatedSignal {
    present: bool,
}

/// Cuts or restores the signal of a simulated capture port. Only the port's own node
/// answers (the signal is a local thing): another node says which one to ask.
#[utoipa::path(put, path = "/api/v1/capture-ports/{node}/{device}/simulated-signal", tag = "capture ports",
    params(
        ("node" = u64, Path, description = "Node id"),
        ("device" = u32, Path, description = "Device index on the node"),
    ),
    request_body = SimulatedSignal,
    responses(
        (status = 200, body = CapturePortView),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "Not a simulated port, or not this node's", body = ApiError),
    ))]
pub(super) async fn simulated_signal(
    AxumState(s): AxumState<ApiState>,
    Path(raw): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let (node, device) = port_path(&raw)?;
    let wanted: SimulatedSignal = parse(&body)?;
    let holder = s.handle.read_local(|st| {
        st.capture_port(node, device)
            .map(|_| st.nodes.get(&node).map(|n| n.urls.http.clone()))
    });
    let Some(url) = holder else {
        return Err(not_found("capture port", &format!("{node}/{device}")));
    };
    if node != s.handle.id() {
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "capture port {node}/{device} is on node {node}: ask it ({})",
                url.unwrap_or_default()
            ),
            None,
        ));
    }
    if let Err(why) = s.sdi.set_simulated_signal(device, wanted.present) {
        return Err(error(StatusCode::CONFLICT, why, None));
    }
    show_port(&s, node, device).await
}
