//! The CLI's client side: commands that call a node's admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::http::api::ClusterStatus;

mod live;
pub(crate) use live::{
    node, playback, port, recording, stream, NodeCommand, PlaybackCommand, PortCommand,
    RecordingCommand, StreamCommand,
};

/// Where the API is and how to authenticate: `--server` and `--token-file`, or both
/// found in a local `--data-dir`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    #[arg(long, global = true)]
    server: Option<String>,
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl ApiArgs {
    fn resolve(&self) -> Result<(String, String)> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("sluice-data"));
        let server = match &self.server {
            Some(s) => s.clone(),
            None => std::fs::read_to_string(data_dir.join("http.url"))
                .with_context(|| {
                    format!(
                        "no --server, and no running node's http.url in {}",
                        data_dir.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        let token_file = self
            .token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("admin.token"));
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading the admin token from {}", token_file.display()))?
            .trim()
            .to_string();
        Ok((server.trim_end_matches('/').to_string(), token))
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// Leader and members (id, name, voter, healthy).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Make the node at --server (or in --data-dir), started with --no-bootstrap and
    /// the cluster's secret, join the cluster of the member at URL (its cluster URL).
    Join {
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove the node at --server (or in --data-dir) from its cluster.
    Leave {
        #[arg(long)]
        json: bool,
    },
    /// Add a waiting node (started with --no-bootstrap) by its cluster URL.
    Add {
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a node by id (see `cluster status`), e.g. one that is gone for good.
    Remove {
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn cluster(api: &ApiArgs, cmd: ClusterCommand) -> Result<()> {
    use reqwest::Method;
    match cmd {
        ClusterCommand::Status { json } => cluster_status(api, json).await,
        ClusterCommand::Join { url, json } => {
            let v = call(
                api,
                Method::POST,
                "/api/v1/cluster/join",
                Some(serde_json::json!({ "member": url })),
            )
            .await?;
            print_or(json, &v, || format!("joined the cluster of {url}"));
            Ok(())
        }
        ClusterCommand::Add { url, json } => {
            let v = call(
                api,
                Method::POST,
                "/api/v1/cluster/members",
                Some(serde_json::json!({ "addr": url })),
            )
            .await?;
            print_or(json, &v, || format!("node {} added as a voter", v["id"]));
            Ok(())
        }
        ClusterCommand::Leave { json } => {
            let status: ClusterStatus =
                serde_json::from_value(call(api, Method::GET, "/api/v1/cluster", None).await?)?;
            remove(api, status.this_node, json).await?;
            if !json {
                println!(
                    "node {} left the cluster: stop it; to bring it back, wipe its data dir and \
                     start it with --join or --no-bootstrap",
                    status.this_node
                );
            }
            Ok(())
        }
        ClusterCommand::Remove { id, json } => {
            remove(api, id, json).await?;
            if !json {
                println!("node {id} removed from the cluster");
            }
            Ok(())
        }
    }
}

async fn remove(api: &ApiArgs, id: u64, json: bool) -> Result<()> {
    call(
        api,
        reqwest::Method::DELETE,
        &format!("/api/v1/cluster/members/{id}"),
        None,
    )
    .await?;
    if json {
        println!("{}", serde_json::json!({ "removed": id }));
    }
    Ok(())
}

/// For commands whose API answer is empty: `value` for scripts, a sentence otherwise.
fn done(json: bool, value: serde_json::Value, human: impl FnOnce() -> String) {
    print_or(json, &value, human)
}

fn print_or(json: bool, v: &serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        println!("{v}");
    } else {
        println!("{}", human());
    }
}

async fn cluster_status(api: &ApiArgs, json: bool) -> Result<()> {
    let v = call(api, reqwest::Method::GET, "/api/v1/cluster", None).await?;
    // A node waiting to join has no replicated state to read endpoints from yet.
    let endpoints = call(api, reqwest::Method::GET, "/api/v1/endpoints", None)
        .await
        .unwrap_or_else(|_| serde_json::json!({ "endpoints": [] }));
    if json {
        let mut v = v;
        v["endpoints"] = endpoints["endpoints"].clone();
        println!("{v}");
        return Ok(());
    }
    let s: ClusterStatus = serde_json::from_value(v)?;
    println!(
        "leader: {}  term: {}  (answered by {})",
        s.leader
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        s.term,
        s.this_node
    );
    println!(
        "{:<20} {:<16} {:<28} {:<6} healthy",
        "id", "name", "cluster url", "voter"
    );
    for m in s.members {
        println!(
            "{:<20} {:<16} {:<28} {:<6} {}",
            m.id, m.name, m.addr, m.voter, m.healthy
        );
    }
    println!();
    print_endpoints(&endpoints);
    Ok(())
}

/// One line per endpoint with its latest snapshot.
fn print_endpoints(v: &serde_json::Value) {
    println!(
        "{:<20} {:<15} {:<28} {:<8} {:>7} {:>10} {:>5} {:>9}  parents",
        "endpoint", "kind", "url", "status", "viewers", "egress", "hit", "pl. age"
    );
    for e in v["endpoints"].as_array().into_iter().flatten() {
        let snap = &e["last_snapshot"];
        let egress = snap["egress_bps"]
            .as_u64()
            .map(|b| format!("{:.1}M", b as f64 / 1e6))
            .unwrap_or_else(|| "-".into());
        let hit = snap["hit_ratio"]
            .as_f64()
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        let age = snap["playlist_age_ms"]
            .as_u64()
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "-".into());
        let parents: Vec<&str> = e["upstreams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str())
            .collect();
        println!(
            "{:<20} {:<15} {:<28} {:<8} {:>7} {:>10} {:>5} {:>9}  {}",
            e["name"].as_str().unwrap_or_default(),
            e["kind"].as_str().unwrap_or_default(),
            e["url"].as_str().unwrap_or_default(),
            e["status"].as_str().unwrap_or_default(),
            snap["viewers"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            egress,
            hit,
            age,
            if parents.is_empty() {
                "-".to_string()
            } else {
                parents.join(",")
            },
        );
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum EndpointCommand {
    /// Every endpoint with its health and latest snapshot.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One endpoint with its snapshot history.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Create or replace an endpoint: an external edge or origin, or a node's parents.
    Put {
        name: String,
        /// origin | edge | external_origin | external_edge
        #[arg(long)]
        kind: String,
        /// Base URL viewers or child edges use.
        #[arg(long)]
        url: String,
        /// The cluster node it runs on (origin and edge kinds).
        #[arg(long)]
        node: Option<u64>,
        /// A parent endpoint it pulls from; repeat it, first one first.
        #[arg(long = "upstream")]
        upstreams: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn endpoint(api: &ApiArgs, cmd: EndpointCommand) -> Result<()> {
    use reqwest::Method;
    match cmd {
        EndpointCommand::List { json } => {
            let v = call(api, Method::GET, "/api/v1/endpoints", None).await?;
            if json {
                println!("{v}");
            } else {
                print_endpoints(&v);
            }
        }
        EndpointCommand::Show { name, json } => {
            let v = call(api, Method::GET, &format!("/api/v1/endpoints/{name}"), None).await?;
            if json {
                println!("{v}");
            } else {
                print_endpoints(&serde_json::json!({ "endpoints": [v.clone()] }));
                println!();
                println!(
                    "{:<14} {:>7} {:>12} {:>12} {:>9}  health",
                    "at (ms)", "viewers", "egress bps", "ingress bps", "pl. age"
                );
                for h in v["history"].as_array().into_iter().flatten() {
                    println!(
                        "{:<14} {:>7} {:>12} {:>12} {:>9}  {}",
                        h["at_ms"],
                        h["viewers"],
                        h["egress_bps"],
                        h["ingress_bps"],
                        h["playlist_age_ms"],
                        h["health"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        EndpointCommand::Put {
            name,
            kind,
            url,
            node,
            upstreams,
            json,
        } => {
            let body = serde_json::json!({
                "kind": kind, "url": url, "node": node, "upstreams": upstreams,
            });
            let v = call(
                api,
                Method::PUT,
                &format!("/api/v1/endpoints/{name}"),
                Some(body),
            )
            .await?;
            print_or(json, &v, || format!("endpoint {name} saved"));
        }
        EndpointCommand::Delete { name, json } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/endpoints/{name}"),
                None,
            )
            .await?;
            done(json, serde_json::json!({ "deleted": name }), || {
                format!("endpoint {name} deleted")
            });
        }
    }
    Ok(())
}

/// Calls the API; a non-2xx answer is an error carrying the API's message.
async fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let (server, token) = api.resolve()?;
    let client = sluice_cluster::network::client_builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut req = client
        .request(method, format!("{server}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req
        .send()
        .await
        .with_context(|| format!("calling {server}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        bail!("{status}: {message}");
    }
    Ok(if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ChannelCommand {
    /// Create a channel; prints its stream key once (a pulled channel has none).
    Create {
        name: String,
        #[arg(long, default_value = "")]
        title: String,
        /// Pull the stream from an SRT listener (srt://HOST:PORT?streamid=..&passphrase=..)
        /// instead of waiting for a publisher.
        #[arg(long, value_name = "URL")]
        pull: Option<String>,
        /// Run the channel's ingest on this node only (never moved when it is down).
        #[arg(long, value_name = "NODE_ID")]
        pin: Option<u64>,
        /// Do not keep its streams as recordings (recording is on by default).
        #[arg(long)]
        no_recording: bool,
        /// Let viewers scrub back this many seconds in the live playlist (DVR).
        #[arg(long, value_name = "SECONDS")]
        dvr: Option<u32>,
        /// Delete finished recordings older than this many seconds (default 7 days).
        #[arg(long, value_name = "SECONDS")]
        keep_for: Option<u64>,
        /// Delete the oldest finished recordings while the channel's exceed this size.
        #[arg(long, value_name = "BYTES")]
        keep_bytes: Option<u64>,
        /// Viewers need a playback token (`sluice playback token NAME`).
        #[arg(long)]
        private: bool,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// A channel with its keys and live generation.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// A new stream key for a channel; printed once.
    Create {
        channel: String,
        #[arg(long)]
        json: bool,
    },
    Revoke {
        channel: String,
        key_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn channel(api: &ApiArgs, cmd: ChannelCommand) -> Result<()> {
    use reqwest::Method;
    match cmd {
        ChannelCommand::Create {
            name,
            title,
            pull,
            pin,
            no_recording,
            dvr,
            keep_for,
            keep_bytes,
            private,
            json,
        } => {
            let mut body = serde_json::json!({"name": name, "title": title});
            if private {
                body["visibility"] = serde_json::json!("private");
            }
            body["recording"] = serde_json::json!(!no_recording);
            if let Some(seconds) = dvr {
                body["ll_hls"] = serde_json::to_value(sluice_cluster::model::LlHlsSettings {
                    dvr_window_s: seconds,
                    ..Default::default()
                })?;
            }
            if keep_for.is_some() || keep_bytes.is_some() {
                body["retention"] = serde_json::json!({
                    "max_age_s": keep_for.or(Some(7 * 24 * 3600)),
                    "max_bytes": keep_bytes,
                });
            }
            if let Some(url) = &pull {
                body["ingest"] = serde_json::json!({"kind": "srt_caller", "url": url});
            }
            if let Some(node) = pin {
                body["placement"] = serde_json::json!({"kind": "pinned", "node": node});
            }
            let v = call(api, Method::POST, "/api/v1/channels", Some(body)).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"channel": v["channel"], "stream_key": v["stream_key"], "key_id": v["key_id"]})
                );
            } else if pull.is_some() {
                println!("channel {name} created: the cluster pulls it (no stream key)");
            } else {
                println!("channel {} created", name);
                println!(
                    "stream key (shown once): {}",
                    v["stream_key"].as_str().unwrap_or_default()
                );
                println!("key id: {}", v["key_id"].as_str().unwrap_or_default());
            }
        }
        ChannelCommand::List { json } => {
            let v = call(api, Method::GET, "/api/v1/channels", None).await?;
            if json {
                println!("{v}");
            } else {
                println!("NAME\tINGEST\tPULLED BY\tRESTARTS\tTITLE\tALERT");
                for c in v["channels"].as_array().into_iter().flatten() {
                    let puller = c["puller"]
                        .as_u64()
                        .map_or("-".to_string(), |n| n.to_string());
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        c["slug"].as_str().unwrap_or_default(),
                        c["ingest"]["kind"].as_str().unwrap_or_default(),
                        puller,
                        c["restarts"].as_u64().unwrap_or(0),
                        c["title"].as_str().unwrap_or_default(),
                        c["alert"].as_str().unwrap_or("")
                    );
                }
            }
        }
        ChannelCommand::Show { name, json } => {
            let v = call(api, Method::GET, &format!("/api/v1/channels/{name}"), None).await?;
            if json {
                println!("{v}");
            } else {
                let c = &v["channel"];
                let g = &c["generation"];
                println!(
                    "channel:   {} ({})",
                    name,
                    c["title"].as_str().unwrap_or("")
                );
                println!("ingest:    {}", c["ingest"]);
                println!("placement: {}", c["placement"]);
                println!("ll-hls:    {}", c["ll_hls"]);
                println!(
                    "state:     {}",
                    if g.is_null() {
                        "idle".to_string()
                    } else {
                        format!(
                            "{} (generation {}) on {}",
                            g["state"].as_str().unwrap_or_default(),
                            g["number"],
                            c["origin_name"].as_str().unwrap_or("?")
                        )
                    }
                );
                println!("viewers:   {}", c["viewers"]);
                for k in v["keys"].as_array().into_iter().flatten() {
                    println!(
                        "key:       {}{}",
                        k["key_id"].as_str().unwrap_or_default(),
                        if k["revoked_ms"].is_null() {
                            ""
                        } else {
                            " (revoked)"
                        }
                    );
                }
                if let Some(alert) = c["alert"].as_str() {
                    println!("alert:     {alert}");
                }
            }
        }
        ChannelCommand::Delete { name, json } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/channels/{name}"),
                None,
            )
            .await?;
            done(json, serde_json::json!({ "deleted": name }), || {
                format!("channel {name} deleted")
            });
        }
    }
    Ok(())
}

pub(crate) async fn key(api: &ApiArgs, cmd: KeyCommand) -> Result<()> {
    use reqwest::Method;
    match cmd {
        KeyCommand::Create { channel, json } => {
            let v = call(
                api,
                Method::POST,
                &format!("/api/v1/channels/{channel}/keys"),
                None,
            )
            .await?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "stream key (shown once): {}",
                    v["stream_key"].as_str().unwrap_or_default()
                );
                println!("key id: {}", v["key_id"].as_str().unwrap_or_default());
            }
        }
        KeyCommand::Revoke {
            channel,
            key_id,
            json,
        } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/channels/{channel}/keys/{key_id}"),
                None,
            )
            .await?;
            done(
                json,
                serde_json::json!({ "channel": channel, "revoked": key_id }),
                || format!("key {key_id} of {channel} revoked"),
            );
        }
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// A new admin token (valid on every node); printed once.
    Create {
        name: String,
        /// May read everything, change nothing (monitoring).
        #[arg(long)]
        read_only: bool,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        token_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn token(api: &ApiArgs, cmd: TokenCommand) -> Result<()> {
    use reqwest::Method;
    match cmd {
        TokenCommand::Create {
            name,
            read_only,
            json,
        } => {
            let v = call(
                api,
                Method::POST,
                "/api/v1/tokens",
                Some(serde_json::json!({ "name": name, "read_only": read_only })),
            )
            .await?;
            print_or(json, &v, || {
                format!(
                    "token (shown once): {}\ntoken id: {}",
                    v["token"].as_str().unwrap_or_default(),
                    v["token_id"].as_str().unwrap_or_default()
                )
            });
        }
        TokenCommand::List { json } => {
            let v = call(api, Method::GET, "/api/v1/tokens", None).await?;
            if json {
                println!("{v}");
            } else {
                println!("{:<16} {:<10} {:<8} name", "token id", "access", "revoked");
                for t in v["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{:<16} {:<10} {:<8} {}",
                        t["token_id"].as_str().unwrap_or_default(),
                        if t["read_only"] == true {
                            "read"
                        } else {
                            "admin"
                        },
                        if t["revoked_ms"].is_null() {
                            "no"
                        } else {
                            "yes"
                        },
                        t["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        TokenCommand::Revoke { token_id, json } => {
            call(
                api,
                Method::DELETE,
                &format!("/api/v1/tokens/{token_id}"),
                None,
            )
            .await?;
            done(json, serde_json::json!({ "revoked": token_id }), || {
                format!("token {token_id} revoked")
            });
        }
    }
    Ok(())
}
