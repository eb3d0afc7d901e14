//! The CLI's client side: commands that call a node's admin API.
//!
//! A command reads the node's answer as the API's own response type (the struct its
//! handler serializes, in `http::api`), so the CLI and the API share one definition
//! and an answer without a field the CLI needs is an error, never a blank column.
//! `--json` prints the answer as the node sent it.
//!
//! ```text
//! command ──call──▶ /api/v1 on a node ──JSON──┬─▶ --json: printed as it came
//!                                             └─▶ read as the API's type ─▶ table or sentence
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sluice_cluster::model::{Ingest, LlHlsSettings};

use crate::http::api::channels::{ChannelCreated, ChannelDetail, ChannelList, KeyCreated};
use crate::http::api::endpoints::{EndpointList, EndpointView};
use crate::http::api::members::MemberAdded;
use crate::http::api::tokens::{TokenCreated, TokenList};
use crate::http::api::{ApiError, ClusterStatus};

mod live;
pub(crate) use live::{
    node, playback, port, recording, stream, NodeCommand, PlaybackCommand, PortCommand,
    RecordingCommand, StreamCommand,
};

#[cfg(test)]
mod tests;

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
    let out = match cmd {
        ClusterCommand::Status { json } => cluster_status(api, json).await?,
        ClusterCommand::Join { url, json } => {
            let body = json!({ "member": url });
            let answer = call(api, Method::POST, "/api/v1/cluster/join", Some(body)).await?;
            json_or(json, &answer, || format!("joined the cluster of {url}"))
        }
        ClusterCommand::Add { url, json } => {
            let body = json!({ "addr": url });
            let answer = call(api, Method::POST, "/api/v1/cluster/members", Some(body)).await?;
            output(json, &answer, |added: &MemberAdded| {
                format!("node {} added as a voter", added.id)
            })?
        }
        ClusterCommand::Leave { json } => {
            let status: ClusterStatus =
                read(&call(api, Method::GET, "/api/v1/cluster", None).await?)?;
            let id = status.this_node;
            remove(api, id).await?;
            done(json, json!({ "removed": id }), || {
                format!(
                    "node {id} left the cluster: stop it; to bring it back, wipe its data dir and \
                     start it with --join or --no-bootstrap"
                )
            })
        }
        ClusterCommand::Remove { id, json } => {
            remove(api, id).await?;
            done(json, json!({ "removed": id }), || {
                format!("node {id} removed from the cluster")
            })
        }
    };
    println!("{out}");
    Ok(())
}

async fn remove(api: &ApiArgs, id: u64) -> Result<()> {
    let path = format!("/api/v1/cluster/members/{id}");
    call(api, Method::DELETE, &path, None).await?;
    Ok(())
}

async fn cluster_status(api: &ApiArgs, json: bool) -> Result<String> {
    let status = call(api, Method::GET, "/api/v1/cluster", None).await?;
    // A node waiting to join has no replicated state to read endpoints from yet.
    let endpoints = call(api, Method::GET, "/api/v1/endpoints", None)
        .await
        .unwrap_or_else(|_| json!({ "endpoints": [] }));
    if json {
        return Ok(with_fields_of(status, endpoints).to_string());
    }
    Ok(cluster_text(&read(&status)?, &read(&endpoints)?))
}

/// Object `a` with the fields of object `b` added (two answers printed as one).
fn with_fields_of(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

fn cluster_text(s: &ClusterStatus, endpoints: &EndpointList) -> String {
    let leader = s.leader.map_or_else(|| "none".into(), |l| l.to_string());
    let mut lines = vec![
        format!(
            "leader: {leader}  term: {}  (answered by {})",
            s.term, s.this_node
        ),
        format!(
            "{:<20} {:<16} {:<28} {:<6} healthy",
            "id", "name", "cluster url", "voter"
        ),
    ];
    for m in &s.members {
        lines.push(format!(
            "{:<20} {:<16} {:<28} {:<6} {}",
            m.id, m.name, m.addr, m.voter, m.healthy
        ));
    }
    lines.push(String::new());
    lines.push(endpoint_table(&endpoints.endpoints));
    lines.join("\n")
}

/// One line per endpoint with its latest snapshot.
fn endpoint_table(endpoints: &[EndpointView]) -> String {
    let mut lines = vec![format!(
        "{:<20} {:<15} {:<28} {:<8} {:>7} {:>10} {:>5} {:>9}  parents",
        "endpoint", "kind", "url", "status", "viewers", "egress", "hit", "pl. age"
    )];
    for e in endpoints {
        let snap = e.last_snapshot.as_ref();
        let dash = || "-".to_string();
        let viewers = snap.map_or_else(dash, |s| s.viewers.to_string());
        let egress = snap.map_or_else(dash, |s| format!("{:.1}M", s.egress_bps as f64 / 1e6));
        let hit = snap
            .and_then(|s| s.hit_ratio)
            .map_or_else(dash, |r| format!("{:.0}%", r * 100.0));
        let age = snap
            .and_then(|s| s.playlist_age_ms)
            .map_or_else(dash, |ms| format!("{ms} ms"));
        let upstreams = &e.endpoint.upstreams;
        let parents = if upstreams.is_empty() {
            dash()
        } else {
            upstreams.join(",")
        };
        lines.push(format!(
            "{:<20} {:<15} {:<28} {:<8} {:>7} {:>10} {:>5} {:>9}  {}",
            e.endpoint.name,
            wire_name(&e.endpoint.kind),
            e.endpoint.url,
            wire_name(&e.status),
            viewers,
            egress,
            hit,
            age,
            parents,
        ));
    }
    lines.join("\n")
}

/// An endpoint's line, then its snapshot history.
fn endpoint_text(e: &EndpointView) -> String {
    let mut lines = vec![
        endpoint_table(std::slice::from_ref(e)),
        String::new(),
        format!(
            "{:<14} {:>7} {:>12} {:>12} {:>9}  health",
            "at (ms)", "viewers", "egress bps", "ingress bps", "pl. age"
        ),
    ];
    // The figures print unpadded and a missing age as `null`, as they always have (they
    // were JSON values, which take no width).
    for h in e.history.iter().flatten() {
        lines.push(format!(
            "{} {} {} {} {}  {}",
            h.at_ms,
            h.viewers,
            h.egress_bps,
            h.ingress_bps,
            or_null(h.playlist_age_ms),
            wire_name(&h.health)
        ));
    }
    lines.join("\n")
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
    let out = match cmd {
        EndpointCommand::List { json } => {
            let answer = call(api, Method::GET, "/api/v1/endpoints", None).await?;
            output(json, &answer, |list: &EndpointList| {
                endpoint_table(&list.endpoints)
            })?
        }
        EndpointCommand::Show { name, json } => {
            let path = format!("/api/v1/endpoints/{name}");
            let answer = call(api, Method::GET, &path, None).await?;
            output(json, &answer, endpoint_text)?
        }
        EndpointCommand::Put {
            name,
            kind,
            url,
            node,
            upstreams,
            json,
        } => {
            let body = json!({
                "kind": kind, "url": url, "node": node, "upstreams": upstreams,
            });
            let path = format!("/api/v1/endpoints/{name}");
            let answer = call(api, Method::PUT, &path, Some(body)).await?;
            json_or(json, &answer, || format!("endpoint {name} saved"))
        }
        EndpointCommand::Delete { name, json } => {
            let path = format!("/api/v1/endpoints/{name}");
            call(api, Method::DELETE, &path, None).await?;
            done(json, json!({ "deleted": name }), || {
                format!("endpoint {name} deleted")
            })
        }
    };
    println!("{out}");
    Ok(())
}

/// Calls the API; a non-2xx answer is an error carrying the API's message.
async fn call(api: &ApiArgs, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
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
        let message = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.error);
        bail!("{status}: {message}");
    }
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

/// The node's answer read as the API type its handler serializes.
fn read<T: DeserializeOwned>(answer: &Value) -> Result<T> {
    T::deserialize(answer).context("the node's answer is not what this version of the CLI reads")
}

/// A command's output: with `--json` the node's answer as it came, otherwise what
/// `render` makes of it read as the API's type.
fn output<T: DeserializeOwned>(
    json: bool,
    answer: &Value,
    render: impl FnOnce(&T) -> String,
) -> Result<String> {
    if json {
        return Ok(answer.to_string());
    }
    Ok(render(&read(answer)?))
}

/// With `--json` the node's answer as it came, otherwise a sentence that needs nothing
/// from it.
fn json_or(json: bool, answer: &Value, sentence: impl FnOnce() -> String) -> String {
    if json {
        answer.to_string()
    } else {
        sentence()
    }
}

/// For commands whose API answer is empty: `value` for scripts, a sentence otherwise.
fn done(json: bool, value: Value, sentence: impl FnOnce() -> String) -> String {
    json_or(json, &value, sentence)
}

/// How the API spells a unit variant (`live`, `external_edge`): the string it
/// serializes to.
fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A value as compact JSON with its keys sorted, the way a parsed answer prints.
fn as_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A number as JSON prints it: `null` when there is none.
fn or_null(n: Option<u64>) -> String {
    n.map_or_else(|| "null".into(), |n| n.to_string())
}

/// The `kind` the API gives a channel's ingest (a test keeps it the serde tag).
fn ingest_kind(ingest: &Ingest) -> &'static str {
    match ingest {
        Ingest::Push => "push",
        Ingest::SrtCaller { .. } => "srt_caller",
        Ingest::HlsPull { .. } => "hls_pull",
        Ingest::Sdi { .. } => "sdi",
    }
}

// The flags of `channel create` (its help is the variant's doc comment).
#[derive(Debug, clap::Args)]
pub(crate) struct NewChannelArgs {
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
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ChannelCommand {
    /// Create a channel; prints its stream key once (a pulled channel has none).
    Create(NewChannelArgs),
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
    let out = match cmd {
        ChannelCommand::Create(args) => create_channel(api, &args).await?,
        ChannelCommand::List { json } => list_channels(api, json).await?,
        ChannelCommand::Show { name, json } => show_channel(api, &name, json).await?,
        ChannelCommand::Delete { name, json } => delete_channel(api, &name, json).await?,
    };
    println!("{out}");
    Ok(())
}

impl NewChannelArgs {
    /// The API's new-channel body: what the flags set, the API's defaults for the rest.
    fn body(&self) -> Result<Value> {
        let mut body = json!({"name": self.name, "title": self.title});
        if self.private {
            body["visibility"] = json!("private");
        }
        body["recording"] = json!(!self.no_recording);
        if let Some(seconds) = self.dvr {
            body["ll_hls"] = serde_json::to_value(LlHlsSettings {
                dvr_window_s: seconds,
                ..Default::default()
            })?;
        }
        if self.keep_for.is_some() || self.keep_bytes.is_some() {
            body["retention"] = json!({
                "max_age_s": self.keep_for.or(Some(7 * 24 * 3600)),
                "max_bytes": self.keep_bytes,
            });
        }
        if let Some(url) = &self.pull {
            body["ingest"] = json!({"kind": "srt_caller", "url": url});
        }
        if let Some(node) = self.pin {
            body["placement"] = json!({"kind": "pinned", "node": node});
        }
        Ok(body)
    }
}

async fn create_channel(api: &ApiArgs, args: &NewChannelArgs) -> Result<String> {
    let answer = call(api, Method::POST, "/api/v1/channels", Some(args.body()?)).await?;
    let created: ChannelCreated = read(&answer)?;
    if args.json {
        // The name and the key, without the channel's details.
        let out = json!({
            "channel": created.channel,
            "stream_key": created.stream_key,
            "key_id": created.key_id,
        });
        return Ok(out.to_string());
    }
    let name = &args.name;
    if args.pull.is_some() {
        return Ok(format!(
            "channel {name} created: the cluster pulls it (no stream key)"
        ));
    }
    Ok(format!(
        "channel {name} created\nstream key (shown once): {}\nkey id: {}",
        created.stream_key.as_deref().unwrap_or_default(),
        created.key_id.as_deref().unwrap_or_default()
    ))
}

async fn list_channels(api: &ApiArgs, json: bool) -> Result<String> {
    let answer = call(api, Method::GET, "/api/v1/channels", None).await?;
    output(json, &answer, channel_table)
}

fn channel_table(list: &ChannelList) -> String {
    let mut lines = vec!["NAME\tINGEST\tPULLED BY\tRESTARTS\tTITLE\tALERT".to_string()];
    for c in &list.channels {
        let puller = c.puller.map_or("-".to_string(), |n| n.to_string());
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            c.slug,
            ingest_kind(&c.ingest),
            puller,
            c.restarts,
            c.title,
            c.alert.as_deref().unwrap_or("")
        ));
    }
    lines.join("\n")
}

async fn show_channel(api: &ApiArgs, name: &str, json: bool) -> Result<String> {
    let path = format!("/api/v1/channels/{name}");
    let answer = call(api, Method::GET, &path, None).await?;
    output(json, &answer, |detail: &ChannelDetail| {
        channel_text(name, detail)
    })
}

fn channel_text(name: &str, detail: &ChannelDetail) -> String {
    let c = &detail.channel;
    let state = match &c.generation {
        None => "idle".to_string(),
        Some(g) => format!(
            "{} (generation {}) on {}",
            wire_name(&g.state),
            g.number,
            c.origin_name.as_deref().unwrap_or("?")
        ),
    };
    let mut lines = vec![
        format!("channel:   {name} ({})", c.title),
        format!("ingest:    {}", as_json(&c.ingest)),
        format!("placement: {}", as_json(&c.placement)),
        format!("ll-hls:    {}", as_json(&c.ll_hls)),
        format!("state:     {state}"),
        format!("viewers:   {}", c.viewers),
    ];
    for k in &detail.keys {
        let revoked = if k.revoked_ms.is_some() {
            " (revoked)"
        } else {
            ""
        };
        lines.push(format!("key:       {}{revoked}", k.key_id));
    }
    if let Some(alert) = &c.alert {
        lines.push(format!("alert:     {alert}"));
    }
    for warning in &c.warnings {
        lines.push(format!("warning:   {warning}"));
    }
    lines.join("\n")
}

async fn delete_channel(api: &ApiArgs, name: &str, json: bool) -> Result<String> {
    let path = format!("/api/v1/channels/{name}");
    call(api, Method::DELETE, &path, None).await?;
    Ok(done(json, json!({ "deleted": name }), || {
        format!("channel {name} deleted")
    }))
}

pub(crate) async fn key(api: &ApiArgs, cmd: KeyCommand) -> Result<()> {
    let out = match cmd {
        KeyCommand::Create { channel, json } => {
            let path = format!("/api/v1/channels/{channel}/keys");
            let answer = call(api, Method::POST, &path, None).await?;
            output(json, &answer, |k: &KeyCreated| {
                format!(
                    "stream key (shown once): {}\nkey id: {}",
                    k.stream_key, k.key_id
                )
            })?
        }
        KeyCommand::Revoke {
            channel,
            key_id,
            json,
        } => {
            let path = format!("/api/v1/channels/{channel}/keys/{key_id}");
            call(api, Method::DELETE, &path, None).await?;
            done(
                json,
                json!({ "channel": channel, "revoked": key_id }),
                || format!("key {key_id} of {channel} revoked"),
            )
        }
    };
    println!("{out}");
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
    let out = match cmd {
        TokenCommand::Create {
            name,
            read_only,
            json,
        } => {
            let body = json!({ "name": name, "read_only": read_only });
            let answer = call(api, Method::POST, "/api/v1/tokens", Some(body)).await?;
            output(json, &answer, |t: &TokenCreated| {
                format!("token (shown once): {}\ntoken id: {}", t.token, t.token_id)
            })?
        }
        TokenCommand::List { json } => {
            let answer = call(api, Method::GET, "/api/v1/tokens", None).await?;
            output(json, &answer, token_table)?
        }
        TokenCommand::Revoke { token_id, json } => {
            let path = format!("/api/v1/tokens/{token_id}");
            call(api, Method::DELETE, &path, None).await?;
            done(json, json!({ "revoked": token_id }), || {
                format!("token {token_id} revoked")
            })
        }
    };
    println!("{out}");
    Ok(())
}

fn token_table(list: &TokenList) -> String {
    let mut lines = vec![format!(
        "{:<16} {:<10} {:<8} name",
        "token id", "access", "revoked"
    )];
    for t in &list.tokens {
        lines.push(format!(
            "{:<16} {:<10} {:<8} {}",
            t.token_id,
            if t.read_only { "read" } else { "admin" },
            if t.revoked_ms.is_some() { "yes" } else { "no" },
            t.name
        ));
    }
    lines.join("\n")
}
