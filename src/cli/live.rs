//! CLI commands for live state: streams (a channel's generations), nodes and capture
//! ports. Human tables by default, `--json` for scripts (the API's own JSON).

use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

use super::{call, print_or, ApiArgs};

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

fn bitrate(bps: &Value) -> String {
    match bps.as_u64() {
        Some(b) if b > 0 => format!("{:.2} Mbit/s", b as f64 / 1e6),
        _ => "-".into(),
    }
}

fn media(g: &Value) -> String {
    let m = &g["media"];
    let codecs: Vec<&str> = m["codecs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{}x{} {} {}",
        m["width"],
        m["height"],
        codecs.join(","),
        bitrate(&m["bitrate_bps"])
    )
}

pub(crate) async fn stream(api: &ApiArgs, cmd: StreamCommand) -> Result<()> {
    match cmd {
        StreamCommand::Status { channel, json } => {
            let v = call(
                api,
                Method::GET,
                &format!("/api/v1/channels/{channel}/status"),
                None,
            )
            .await?;
            print_or(json, &v, || {
                let g = &v["generation"];
                if g.is_null() {
                    return format!("{channel}: idle (no live stream)");
                }
                format!(
                    "{channel}: {} (generation {}) on {}\nmedia: {}\nviewers: {}  playlist age: {}\nplay: {}",
                    v["state"].as_str().unwrap_or_default(),
                    g["number"],
                    v["origin_name"].as_str().unwrap_or("?"),
                    media(g),
                    v["viewers"],
                    v["playlist_age_ms"]
                        .as_u64()
                        .map_or("-".to_string(), |ms| format!("{ms} ms")),
                    v["playlist_path"].as_str().unwrap_or_default()
                )
            });
        }
        StreamCommand::Stop { channel, json } => {
            let v = call(
                api,
                Method::POST,
                &format!("/api/v1/channels/{channel}/stop"),
                None,
            )
            .await?;
            print_or(json, &v, || {
                format!("{channel}: generation {} ended", v["generation"])
            });
        }
        StreamCommand::History { channel, json } => {
            let v = call(
                api,
                Method::GET,
                &format!("/api/v1/channels/{channel}/generations"),
                None,
            )
            .await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!("{:<6} {:<13} {:<20} media", "gen", "state", "origin");
            for g in v["generations"].as_array().into_iter().flatten() {
                println!(
                    "{:<6} {:<13} {:<20} {}",
                    g["number"],
                    g["state"].as_str().unwrap_or_default(),
                    g["origin"],
                    media(g)
                );
            }
        }
    }
    Ok(())
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

fn names(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn print_node_row(n: &Value) {
    println!(
        "{:<20} {:<16} {:<8} {:<7} {:<16} {:<16} {}",
        n["id"],
        n["name"].as_str().unwrap_or_default(),
        if n["healthy"] == true {
            "healthy"
        } else {
            "down"
        },
        if n["leader"] == true {
            "leader"
        } else if n["voter"] == true {
            "voter"
        } else {
            "learner"
        },
        names(&n["origin_of"]),
        names(&n["pulling"]),
        n["capture_ports"].as_array().map_or(0, Vec::len)
    );
}

fn print_node_header() {
    println!(
        "{:<20} {:<16} {:<8} {:<7} {:<16} {:<16} capture ports",
        "id", "name", "lease", "role", "origin of", "pulling"
    );
}

pub(crate) async fn node(api: &ApiArgs, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::List { json } => {
            let v = call(api, Method::GET, "/api/v1/nodes", None).await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            print_node_header();
            for n in v["nodes"].as_array().into_iter().flatten() {
                print_node_row(n);
            }
        }
        NodeCommand::Show { id, json } => {
            let v = call(api, Method::GET, &format!("/api/v1/nodes/{id}"), None).await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            print_node_header();
            print_node_row(&v);
            println!(
                "http {}  rtmp {}  srt {}  cluster {}",
                v["urls"]["http"].as_str().unwrap_or_default(),
                v["urls"]["rtmp"].as_str().unwrap_or_default(),
                v["urls"]["srt"].as_str().unwrap_or_default(),
                v["urls"]["cluster"].as_str().unwrap_or_default()
            );
        }
    }
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

fn print_port(p: &Value) {
    let signal = match (&p["signal"], p["video_mode"].as_str(), p["error"].as_str()) {
        (Value::Bool(true), Some(mode), _) => mode.to_string(),
        (Value::Bool(true), None, _) => "yes".into(),
        (_, _, Some(why)) => format!("no ({why})"),
        _ => "-".into(),
    };
    println!(
        "{:<20} {:<6} {:<24} {:<16} {:<8} {:<8} {:<14} {}",
        p["node"],
        p["device"],
        p["model"].as_str().unwrap_or_default(),
        p["label"].as_str().unwrap_or_default(),
        if p["enabled"] == true { "yes" } else { "no" },
        if p["present"] == true { "yes" } else { "no" },
        p["channel"].as_str().unwrap_or("-"),
        signal
    );
}

async fn patch_port(api: &ApiArgs, node: u64, device: u32, body: Value) -> Result<Value> {
    call(
        api,
        Method::PATCH,
        &format!("/api/v1/capture-ports/{node}/{device}"),
        Some(body),
    )
    .await
}

pub(crate) async fn port(api: &ApiArgs, cmd: PortCommand) -> Result<()> {
    let header = || {
        println!(
            "{:<20} {:<6} {:<24} {:<16} {:<8} {:<8} {:<14} signal",
            "node", "device", "model", "label", "enabled", "present", "channel"
        )
    };
    let (v, json) = match cmd {
        PortCommand::List { json } => {
            let v = call(api, Method::GET, "/api/v1/capture-ports", None).await?;
            if !json {
                header();
                for p in v["capture_ports"].as_array().into_iter().flatten() {
                    print_port(p);
                }
                return Ok(());
            }
            (v, json)
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
            let body = serde_json::json!({"label": label, "enabled": enabled});
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Label {
            node,
            device,
            label,
            json,
        } => {
            let body = serde_json::json!({ "label": label });
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Enable { node, device, json } => {
            let body = serde_json::json!({ "enabled": true });
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Disable { node, device, json } => {
            let body = serde_json::json!({ "enabled": false });
            (patch_port(api, node, device, body).await?, json)
        }
        PortCommand::Bind {
            node,
            device,
            channel,
            unbind: _,
            json,
        } => {
            let v = call(
                api,
                Method::PUT,
                &format!("/api/v1/capture-ports/{node}/{device}/channel"),
                Some(serde_json::json!({ "channel": channel })),
            )
            .await?;
            (v, json)
        }
    };
    if json {
        println!("{v}");
    } else {
        header();
        print_port(&v);
    }
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

fn recording_line(r: &Value) -> String {
    let mb = r["bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
    let seconds = r["duration_ms"].as_u64().unwrap_or(0) as f64 / 1e3;
    format!(
        "{:<6} {:<10} {:>9.1} s {:>9.1} MB  {}{}",
        r["generation"],
        r["status"].as_str().unwrap_or_default(),
        seconds,
        mb,
        r["playlist_path"].as_str().unwrap_or_default(),
        r["reason"]
            .as_str()
            .map(|why| format!("  ({why})"))
            .unwrap_or_default(),
    )
}

pub(crate) async fn recording(api: &ApiArgs, cmd: RecordingCommand) -> Result<()> {
    match cmd {
        RecordingCommand::List { channel, json } => {
            let v = call(
                api,
                Method::GET,
                &format!("/api/v1/channels/{channel}/recordings"),
                None,
            )
            .await?;
            print_or(json, &v, || {
                let mut out = format!(
                    "{:<6} {:<10} {:>11} {:>12}  playlist",
                    "gen", "status", "duration", "size"
                );
                for r in v["recordings"].as_array().into_iter().flatten() {
                    out.push('\n');
                    out.push_str(&recording_line(r));
                }
                out
            });
        }
        RecordingCommand::Show {
            channel,
            generation,
            json,
        } => {
            let v = call(
                api,
                Method::GET,
                &format!("/api/v1/channels/{channel}/recordings/{generation}"),
                None,
            )
            .await?;
            print_or(json, &v, || {
                format!(
                    "{}\ndownload: {}",
                    recording_line(&v),
                    v["download_path"].as_str().unwrap_or_default()
                )
            });
        }
        RecordingCommand::Delete {
            channel,
            generation,
            json,
        } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/channels/{channel}/recordings/{generation}"),
                None,
            )
            .await?;
            let v = serde_json::json!({ "channel": channel, "deleted": generation });
            print_or(json, &v, || {
                format!("recording {generation} of {channel} deleted")
            });
        }
    }
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
    match cmd {
        PlaybackCommand::Token {
            channel,
            ttl,
            origin,
            json,
        } => {
            let mut body = serde_json::json!({ "ttl_s": ttl });
            if let Some(origin) = origin {
                body["origin"] = Value::String(origin);
            }
            let v = call(
                api,
                Method::POST,
                &format!("/api/v1/channels/{channel}/playback-tokens"),
                Some(body),
            )
            .await?;
            print_or(json, &v, || {
                format!(
                    "token: {}\nplaylist: {}\nplayer: {}",
                    v["token"].as_str().unwrap_or_default(),
                    v["hls_path"].as_str().unwrap_or_default(),
                    v["watch_path"].as_str().unwrap_or_default(),
                )
            });
        }
        PlaybackCommand::Keys { json } => {
            let v = call(api, Method::GET, "/api/v1/playback-keys", None).await?;
            print_or(json, &v, || {
                let mut out = format!(
                    "{:<14} {:<8} {:>15} {:>15}",
                    "key", "signing", "created_ms", "retired_ms"
                );
                for k in v["keys"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<14} {:<8} {:>15} {:>15}",
                        k["key_id"].as_str().unwrap_or_default(),
                        if k["signing"].as_bool().unwrap_or(false) {
                            "yes"
                        } else {
                            ""
                        },
                        k["created_ms"],
                        k["retired_ms"]
                            .as_i64()
                            .map_or("-".to_string(), |t| t.to_string()),
                    ));
                }
                out
            });
        }
        PlaybackCommand::Rotate { json } => {
            let v = call(api, Method::POST, "/api/v1/playback-keys", None).await?;
            print_or(json, &v, || {
                format!(
                    "key {} signs new tokens; retire older keys once their tokens have expired",
                    v["key_id"].as_str().unwrap_or_default()
                )
            });
        }
        PlaybackCommand::Retire { key_id, json } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/playback-keys/{key_id}"),
                None,
            )
            .await?;
            let v = serde_json::json!({ "retired": key_id });
            print_or(json, &v, || format!("key {key_id} retired"));
        }
    }
    Ok(())
}
