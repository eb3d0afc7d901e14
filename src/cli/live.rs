//! CLI commands for live state: streams (a channel's generations), nodes and capture
//! ports. Human tables by default, `--json` for scripts (the API's own JSON).

use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};
use sluice_cluster::model::Generation;

use super::{call, done, output, wire_name, ApiArgs};
use crate::http::api::channels::{GenerationList, Stopped, StreamStatus};
use crate::http::api::nodes::{CapturePortList, CapturePortView, NodeList, NodeView};
use crate::http::api::playback::{PlaybackKeyList, PlaybackKeyView, PlaybackToken};
use crate::http::api::recordings::{RecordingList, RecordingView};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum StreamCommand {
    /// Whether a channel is live, where, with what media and how many viewers.
    Status {
        channel: String,
        #[arg(long)]
        json: bool,
    },
    /// End a channel's live stream now (viewers get the end; the publisher is cut).
    Stop {
        channel: String,
        #[arg(long)]
        json: bool,
    },
    /// A channel's generations (live sessions), newest first.
    History {
        channel: String,
        #[arg(long)]
        json: bool,
    },
}

fn bitrate(bps: u64) -> String {
    if bps > 0 {
        format!("{:.2} Mbit/s", bps as f64 / 1e6)
    } else {
        "-".into()
    }
}

fn media(g: &Generation) -> String {
    let m = &g.media;
    format!(
        "{}x{} {} {}",
        m.width,
        m.height,
        m.codecs.join(","),
        bitrate(m.bitrate_bps)
    )
}

pub(crate) async fn stream(api: &ApiArgs, cmd: StreamCommand) -> Result<()> {
    let out = match cmd {
        StreamCommand::Status { channel, json } => {
            let path = format!("/api/v1/channels/{channel}/status");
            let answer = call(api, Method::GET, &path, None).await?;
            output(json, &answer, |s: &StreamStatus| status_text(&channel, s))?
        }
        StreamCommand::Stop { channel, json } => {
            let path = format!("/api/v1/channels/{channel}/stop");
            let answer = call(api, Method::POST, &path, None).await?;
            output(json, &answer, |s: &Stopped| {
                format!("{channel}: generation {} ended", s.generation)
            })?
        }
        StreamCommand::History { channel, json } => {
            let path = format!("/api/v1/channels/{channel}/generations");
            let answer = call(api, Method::GET, &path, None).await?;
            output(json, &answer, generation_table)?
        }
    };
    println!("{out}");
    Ok(())
}

pub(super) fn status_text(channel: &str, s: &StreamStatus) -> String {
    let Some(g) = &s.generation else {
        return format!("{channel}: idle (no live stream)");
    };
    format!(
        "{channel}: {} (generation {}) on {}\nmedia: {}\nviewers: {}  playlist age: {}\nplay: {}",
        s.state,
        g.number,
        s.origin_name.as_deref().unwrap_or("?"),
        media(g),
        s.viewers,
        s.playlist_age_ms
            .map_or("-".to_string(), |ms| format!("{ms} ms")),
        s.playlist_path
    )
}

pub(super) fn generation_table(list: &GenerationList) -> String {
    let mut lines = vec![format!(
        "{:<6} {:<13} {:<20} media",
        "gen", "state", "origin"
    )];
    // `gen` and `origin` print unpadded, as they always have (a JSON value takes no
    // width).
    for g in &list.generations {
        lines.push(format!(
            "{} {:<13} {} {}",
            g.number,
            wire_name(&g.state),
            g.origin,
            media(g)
        ));
    }
    lines.join("\n")
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum NodeCommand {
    /// Every node: lease health, role, what it originates and pulls, capture ports.
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn node_header() -> String {
    format!(
        "{:<20} {:<16} {:<8} {:<7} {:<16} {:<16} capture ports",
        "id", "name", "lease", "role", "origin of", "pulling"
    )
}

/// `id` prints unpadded, as it always has (a JSON value takes no width).
fn node_row(n: &NodeView) -> String {
    let role = if n.leader {
        "leader"
    } else if n.voter {
        "voter"
    } else {
        "learner"
    };
    format!(
        "{} {:<16} {:<8} {:<7} {:<16} {:<16} {}",
        n.id,
        n.name,
        if n.healthy { "healthy" } else { "down" },
        role,
        names(&n.origin_of),
        names(&n.pulling),
        n.capture_ports.len()
    )
}

pub(super) fn node_table(list: &NodeList) -> String {
    let mut lines = vec![node_header()];
    lines.extend(list.nodes.iter().map(node_row));
    lines.join("\n")
}

pub(super) fn node_text(n: &NodeView) -> String {
    let urls = &n.urls;
    format!(
        "{}\n{}\nhttp {}  rtmp {}  srt {}  cluster {}",
        node_header(),
        node_row(n),
        urls.http,
        urls.rtmp,
        urls.srt,
        urls.cluster
    )
}

pub(crate) async fn node(api: &ApiArgs, cmd: NodeCommand) -> Result<()> {
    let out = match cmd {
        NodeCommand::List { json } => {
            let answer = call(api, Method::GET, "/api/v1/nodes", None).await?;
            output(json, &answer, node_table)?
        }
        NodeCommand::Show { id, json } => {
            let path = format!("/api/v1/nodes/{id}");
            let answer = call(api, Method::GET, &path, None).await?;
            output(json, &answer, node_text)?
        }
    };
    println!("{out}");
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PortCommand {
    /// Capture ports found on the nodes' hardware.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Label, enable or disable a capture port.
    Set {
        node: u64,
        device: u32,
        #[arg(long)]
        label: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[arg(long)]
        json: bool,
    },
    /// Name a capture port (what operators call the input).
    Label {
        node: u64,
        device: u32,
        label: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a capture port: its node watches the input (signal, video mode).
    Enable {
        node: u64,
        device: u32,
        #[arg(long)]
        json: bool,
    },
    /// Disable a capture port: its node stops capturing it.
    Disable {
        node: u64,
        device: u32,
        #[arg(long)]
        json: bool,
    },
    /// Make a capture port feed a channel (or none, with --unbind).
    Bind {
        node: u64,
        device: u32,
        #[arg(required_unless_present = "unbind")]
        channel: Option<String>,
        #[arg(long, conflicts_with = "channel")]
        unbind: bool,
        #[arg(long)]
        json: bool,
    },
}

/// `node` and `device` print unpadded, as they always have (a JSON value takes no
/// width).
fn port_row(p: &CapturePortView) -> String {
    let port = &p.port;
    let signal = match (
        port.signal,
        port.video_mode.as_deref(),
        port.error.as_deref(),
    ) {
        (true, Some(mode), _) => mode.to_string(),
        (true, None, _) => "yes".into(),
        (_, _, Some(why)) => format!("no ({why})"),
        _ => "-".into(),
    };
    format!(
        "{} {} {:<24} {:<16} {:<8} {:<8} {:<14} {}",
        port.node,
        port.device,
        port.model,
        port.label,
        if port.enabled { "yes" } else { "no" },
        if port.present { "yes" } else { "no" },
        p.channel.as_deref().unwrap_or("-"),
        signal
    )
}

pub(super) fn port_table(ports: &[CapturePortView]) -> String {
    let mut lines = vec![format!(
        "{:<20} {:<6} {:<24} {:<16} {:<8} {:<8} {:<14} signal",
        "node", "device", "model", "label", "enabled", "present", "channel"
    )];
    lines.extend(ports.iter().map(port_row));
    lines.join("\n")
}

async fn patch_port(api: &ApiArgs, node: u64, device: u32, body: Value) -> Result<Value> {
    let path = format!("/api/v1/capture-ports/{node}/{device}");
    call(api, Method::PATCH, &path, Some(body)).await
}

pub(crate) async fn port(api: &ApiArgs, cmd: PortCommand) -> Result<()> {
    let (answer, json) = match cmd {
        PortCommand::List { json } => {
            let answer = call(api, Method::GET, "/api/v1/capture-ports", None).await?;
            let out = output(json, &answer, |list: &CapturePortList| {
                port_table(&list.capture_ports)
            })?;
            println!("{out}");
            return Ok(());
        }
        PortCommand::Set {
            node,
            device,
            label,
            enable,
            disable,
            json,
        } => {
            let enabled = (enable || disable).then_some(enable);
            let body = json!({"label": label, "enabled": enabled});
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Label {
            node,
            device,
            label,
            json,
        } => {
            let body = json!({ "label": label });
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Enable { node, device, json } => {
            let body = json!({ "enabled": true });
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Disable { node, device, json } => {
            let body = json!({ "enabled": false });
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Bind {
            node,
            device,
            channel,
            unbind: _,
            json,
        } => {
            let path = format!("/api/v1/capture-ports/{node}/{device}/channel");
            let body = json!({ "channel": channel });
            (call(api, Method::PUT, &path, Some(body)).await?, json)
        }
    };
    let out = output(json, &answer, |p: &CapturePortView| {
        port_table(std::slice::from_ref(p))
    })?;
    println!("{out}");
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum RecordingCommand {
    /// A channel's recordings, newest first: status, duration, size, where to play.
    List {
        channel: String,
        #[arg(long)]
        json: bool,
    },
    /// One recording (by generation number).
    Show {
        channel: String,
        generation: u64,
        #[arg(long)]
        json: bool,
    },
    /// Delete a finished recording: every node removes its files.
    Delete {
        channel: String,
        generation: u64,
        #[arg(long)]
        json: bool,
    },
}

/// `gen` prints unpadded, as it always has (a JSON value takes no width).
fn recording_line(r: &RecordingView) -> String {
    let rec = &r.recording;
    let mb = rec.bytes as f64 / 1e6;
    let seconds = rec.duration_ms as f64 / 1e3;
    format!(
        "{} {:<10} {:>9.1} s {:>9.1} MB  {}{}",
        r.generation,
        wire_name(&rec.status),
        seconds,
        mb,
        r.playlist_path,
        rec.reason
            .as_deref()
            .map(|why| format!("  ({why})"))
            .unwrap_or_default(),
    )
}

pub(super) fn recording_table(list: &RecordingList) -> String {
    let mut lines = vec![format!(
        "{:<6} {:<10} {:>11} {:>12}  playlist",
        "gen", "status", "duration", "size"
    )];
    lines.extend(list.recordings.iter().map(recording_line));
    lines.join("\n")
}

pub(crate) async fn recording(api: &ApiArgs, cmd: RecordingCommand) -> Result<()> {
    let out = match cmd {
        RecordingCommand::List { channel, json } => {
            let path = format!("/api/v1/channels/{channel}/recordings");
            let answer = call(api, Method::GET, &path, None).await?;
            output(json, &answer, recording_table)?
        }
        RecordingCommand::Show {
            channel,
            generation,
            json,
        } => {
            let path = format!("/api/v1/channels/{channel}/recordings/{generation}");
            let answer = call(api, Method::GET, &path, None).await?;
            output(json, &answer, |r: &RecordingView| {
                format!("{}\ndownload: {}", recording_line(r), r.download_path)
            })?
        }
        RecordingCommand::Delete {
            channel,
            generation,
            json,
        } => {
            let path = format!("/api/v1/channels/{channel}/recordings/{generation}");
            call(api, Method::DELETE, &path, None).await?;
            done(
                json,
                json!({ "channel": channel, "deleted": generation }),
                || format!("recording {generation} of {channel} deleted"),
            )
        }
    };
    println!("{out}");
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PlaybackCommand {
    /// A playback token for a private channel: prints the token and the URLs to give
    /// players (on any node or edge).
    Token {
        channel: String,
        /// Seconds the token is valid for.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Only pages of this origin (https://site.example) may play with it.
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The signing keys (ids and dates; never the secrets).
    Keys {
        #[arg(long)]
        json: bool,
    },
    /// A new key signs tokens from now on; tokens of older keys work until retired.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// Tokens this key signed stop working on every node.
    Retire {
        key_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn playback(api: &ApiArgs, cmd: PlaybackCommand) -> Result<()> {
    let out = match cmd {
        PlaybackCommand::Token {
            channel,
            ttl,
            origin,
            json,
        } => {
            let mut body = json!({ "ttl_s": ttl });
            if let Some(origin) = origin {
                body["origin"] = Value::String(origin);
            }
            let path = format!("/api/v1/channels/{channel}/playback-tokens");
            let answer = call(api, Method::POST, &path, Some(body)).await?;
            output(json, &answer, |t: &PlaybackToken| {
                format!(
                    "token: {}\nplaylist: {}\nplayer: {}",
                    t.token, t.hls_path, t.watch_path
                )
            })?
        }
        PlaybackCommand::Keys { json } => {
            let answer = call(api, Method::GET, "/api/v1/playback-keys", None).await?;
            output(json, &answer, playback_key_table)?
        }
        PlaybackCommand::Rotate { json } => {
            let answer = call(api, Method::POST, "/api/v1/playback-keys", None).await?;
            output(json, &answer, |k: &PlaybackKeyView| {
                format!(
                    "key {} signs new tokens; retire older keys once their tokens have expired",
                    k.key_id
                )
            })?
        }
        PlaybackCommand::Retire { key_id, json } => {
            let path = format!("/api/v1/playback-keys/{key_id}");
            call(api, Method::DELETE, &path, None).await?;
            done(json, json!({ "retired": key_id }), || {
                format!("key {key_id} retired")
            })
        }
    };
    println!("{out}");
    Ok(())
}

/// `created_ms` prints unpadded, as it always has (a JSON value takes no width).
pub(super) fn playback_key_table(list: &PlaybackKeyList) -> String {
    let mut lines = vec![format!(
        "{:<14} {:<8} {:>15} {:>15}",
        "key", "signing", "created_ms", "retired_ms"
    )];
    for k in &list.keys {
        lines.push(format!(
            "{:<14} {:<8} {} {:>15}",
            k.key_id,
            if k.signing { "yes" } else { "" },
            k.created_ms,
            k.retired_ms.map_or("-".to_string(), |t| t.to_string()),
        ));
    }
    lines.join("\n")
}
