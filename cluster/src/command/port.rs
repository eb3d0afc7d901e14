//! Capture ports: found on a node's hardware and created once; operators label,
//! enable/disable and bind them, never create or delete them.

use serde::{Deserialize, Serialize};

use super::{Applied, Op, Refusal};
use crate::model::{CapturePort, Ingest, NodeId};
use crate::state::State;

/// Applies a capture port command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::ReportCapturePorts { node, devices } => report(state, at, *node, devices),
        Op::UpdateCapturePort {
            node,
            device,
            label,
            enabled,
        } => update(state, *node, *device, label.as_deref(), *enabled),
        Op::BindCapturePort {
            node,
            device,
            channel,
        } => bind(state, *node, *device, channel.as_deref()),
        Op::ReportPortStatus {
            node,
            device,
            signal,
            video_mode,
            error,
        } => report_status(
            state,
            *node,
            *device,
            *signal,
            video_mode.as_deref(),
            error.as_deref(),
        ),
        other => unreachable!("not a capture port command: {other:?}"),
    }
}

/// A device a node found in its latest hardware scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSeen {
    pub device: u32,
    pub model: String,
}

/// A node's scan: new devices become ports (disabled, unlabelled); known ones are
/// present again with the hardware's name, keeping what operators set; ones missing
/// from the scan are marked absent.
fn report(
    state: &mut State,
    at: i64,
    node: NodeId,
    devices: &[DeviceSeen],
) -> Result<Applied, Refusal> {
    if !state.nodes.contains_key(&node) {
        return Err(Refusal::not_found("node", node));
    }
    if devices.len() > 64 {
        return Err(Refusal::invalid("devices", "at most 64 devices per node"));
    }
    for (i, d) in devices.iter().enumerate() {
        if devices[..i].iter().any(|o| o.device == d.device) {
            return Err(Refusal::invalid(
                "devices",
                format!("device {} is listed twice", d.device),
            ));
        }
    }
    for port in state.capture_ports.iter_mut().filter(|p| p.node == node) {
        port.present = false;
    }
    let seen = |device: u32| devices.iter().any(|d| d.device == device);
    for port in state
        .capture_ports
        .iter_mut()
        .filter(|p| p.node == node && !seen(p.device))
    {
        port.signal = false;
        port.video_mode = None;
    }
    for d in devices {
        let model: String = d
            .model
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        match state.port_mut(node, d.device) {
            Some(port) => {
                port.present = true;
                port.model = model;
            }
            None => state.capture_ports.push(CapturePort {
                node,
                device: d.device,
                model,
                label: String::new(),
                enabled: false,
                bound_channel: None,
                present: true,
                first_seen_ms: at,
                signal: false,
                video_mode: None,
                error: None,
            }),
        }
    }
    state.capture_ports.sort_by_key(|p| (p.node, p.device));
    Ok(Applied::Done)
}

fn update(
    state: &mut State,
    node: NodeId,
    device: u32,
    label: Option<&str>,
    enabled: Option<bool>,
) -> Result<Applied, Refusal> {
    if let Some(label) = label {
        if label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(Refusal::invalid(
                "label",
                "must be at most 64 printable characters",
            ));
        }
    }
    let port = state
        .port_mut(node, device)
        .ok_or_else(|| Refusal::not_found("capture port", format!("{node}/{device}")))?;
    if let Some(label) = label {
        port.label = label.into();
    }
    if let Some(enabled) = enabled {
        port.enabled = enabled;
    }
    Ok(Applied::Done)
}

/// A node's view of one of its ports' input: signal, video mode, or why its capture
/// pipeline does not run.
fn report_status(
    state: &mut State,
    node: NodeId,
    device: u32,
    signal: bool,
    video_mode: Option<&str>,
    error: Option<&str>,
) -> Result<Applied, Refusal> {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(256).collect() };
    let port = state
        .port_mut(node, device)
        .ok_or_else(|| Refusal::not_found("capture port", format!("{node}/{device}")))?;
    port.signal = signal;
    port.video_mode = video_mode.map(clean);
    port.error = error.map(clean);
    Ok(Applied::Done)
}

/// Binds a port to a channel (the channel's ingest becomes this port), or unbinds it
/// (`channel: None`; the channel goes back to push ingest). A port feeds at most one
/// channel and a channel has one ingest at a time.
fn bind(
    state: &mut State,
    node: NodeId,
    device: u32,
    channel: Option<&str>,
) -> Result<Applied, Refusal> {
    let port_name = format!("{node}/{device}");
    let port = state
        .capture_ports
        .iter()
        .find(|p| p.node == node && p.device == device)
        .ok_or_else(|| Refusal::not_found("capture port", &port_name))?;
    let previous = port.bound_channel;
    let target = match channel {
        Some(slug) => {
            // A name in the request body, not the resource asked for: invalid input.
            let c = state
                .channel_by_slug(slug)
                .ok_or_else(|| Refusal::invalid("channel", format!("no channel named {slug:?}")))?;
            Some((c.id, c.slug.clone(), c.ingest.clone()))
        }
        None => None,
    };
    if previous == target.as_ref().map(|t| t.0) {
        return Ok(Applied::Done);
    }
    if let (Some(prev), Some(_)) = (previous, &target) {
        let slug = state
            .channels
            .get(&prev)
            .map(|c| c.slug.clone())
            .unwrap_or_default();
        return Err(Refusal::PortInUse {
            port: port_name,
            channel: slug,
        });
    }
    // The channel that changes ingest must not be live on its old one.
    let changing = target.as_ref().map(|t| t.0).or(previous);
    if let Some(id) = changing {
        if state.active_generation(id).is_some() {
            let slug = state
                .channels
                .get(&id)
                .map(|c| c.slug.clone())
                .unwrap_or_default();
            return Err(Refusal::ChannelBusy { channel: slug });
        }
    }
    if let Some((id, slug, ingest)) = &target {
        if !matches!(ingest, Ingest::Push) {
            return Err(Refusal::IngestInUse {
                channel: slug.clone(),
            });
        }
        if let Some(c) = state.channels.get_mut(id) {
            c.ingest = Ingest::Sdi { node, device };
        }
    }
    if let Some(prev) = previous {
        if let Some(c) = state.channels.get_mut(&prev) {
            c.ingest = Ingest::Push;
        }
    }
    if let Some(port) = state.port_mut(node, device) {
        port.bound_channel = target.map(|t| t.0);
    }
    Ok(Applied::Done)
}
