//! The node's configuration: defaults < TOML file < environment < flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Every key of the configuration file, with its default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) name: Option<String>,
    pub(crate) http: SocketAddr,
    pub(crate) cluster: SocketAddr,
    pub(crate) rtmp: SocketAddr,
    pub(crate) srt: SocketAddr,
    /// The cluster listener of any member, to join its cluster on first start.
    pub(crate) join: Option<String>,
    pub(crate) cluster_secret_file: Option<PathBuf>,
    /// A fresh data dir with no `join` starts a one-node cluster; with `false` it waits
    /// to be added (`sluice cluster join URL`, or `POST /api/v1/cluster/members`).
    pub(crate) bootstrap: bool,
    /// URL other nodes use to reach this one's cluster listener (default from `cluster`).
    pub(crate) advertise_cluster: Option<String>,
    /// URL other nodes pull this node's HLS objects and playlists from (default from
    /// `http`, with the host of `advertise_cluster` when `http` listens on all addresses).
    pub(crate) advertise_http: Option<String>,
    /// Bytes of upstream objects and playlists a node keeps for pull-through (LRU).
    pub(crate) edge_cache_bytes: u64,
    /// How long an upstream may take to answer a pull-through request (and to send each
    /// chunk) before the next upstream is tried; above 3 target durations, which is how
    /// long an origin holds a blocking playlist request.
    pub(crate) edge_upstream_timeout_ms: u64,
    pub(crate) lease_ttl_ms: i64,
    /// How long a live stream whose publisher dropped waits for it to come back.
    pub(crate) reconnect_grace_ms: i64,
    /// The RTMP application encoders publish to (`rtmp://host/<app>/<stream key>`).
    pub(crate) rtmp_app: String,
    /// A publisher that sends nothing for this long is disconnected.
    pub(crate) publisher_timeout_ms: u64,
    /// SRT receive latency: how long lost packets may take to be sent again. Longer
    /// survives worse links, and delays every frame by as much.
    pub(crate) srt_latency_ms: u64,
    /// Spooled objects older than this, and out of the live window, are deleted
    /// (recordings are kept by their channel's retention instead).
    pub(crate) spool_retention_s: u64,
    /// How often the disk spool is pruned and recording retention enforced.
    pub(crate) spool_prune_interval_s: u64,
    /// Where the player page loads hls.js from.
    pub(crate) hlsjs_url: String,
    /// With both, the HTTP listener speaks TLS (HTTP/2 and HTTP/1.1).
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    /// RTMPS ingest (RTMP over TLS with `tls_cert`/`tls_key`): `rtmps://host:PORT/app`.
    pub(crate) rtmps: Option<SocketAddr>,
    /// Mutual TLS on the cluster listener: this node's certificate and key (signed by
    /// `cluster_ca`), and the CA every node's certificate must be signed by. All three or
    /// none; with them, cluster URLs are https://.
    pub(crate) cluster_tls_cert: Option<PathBuf>,
    pub(crate) cluster_tls_key: Option<PathBuf>,
    pub(crate) cluster_ca: Option<PathBuf>,
    /// Host name printed in the OBS and watch URLs (default: the listener's address,
    /// or 127.0.0.1 when it listens on all addresses).
    pub(crate) public_host: Option<String>,
    /// SDI capture (a build with the `sdi` feature).
    pub(crate) sdi: SdiConfig,
    /// What one client address may hold or try (the `[limits]` table).
    pub(crate) limits: crate::limits::LimitsConfig,
}

/// The `[sdi]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SdiConfig {
    /// Capture ports this node simulates with GStreamer's test sources (device numbers
    /// from 1000), so the whole SDI path runs without a card.
    pub(crate) simulated_ports: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("sluice-data"),
            name: None,
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            cluster: SocketAddr::from(([0, 0, 0, 0], 7000)),
            rtmp: SocketAddr::from(([0, 0, 0, 0], 1935)),
            srt: SocketAddr::from(([0, 0, 0, 0], 9000)),
            join: None,
            cluster_secret_file: None,
            bootstrap: true,
            advertise_cluster: None,
            advertise_http: None,
            edge_cache_bytes: 256 * 1024 * 1024,
            edge_upstream_timeout_ms: 30_000,
            lease_ttl_ms: 6_000,
            reconnect_grace_ms: 30_000,
            rtmp_app: "live".into(),
            publisher_timeout_ms: 10_000,
            srt_latency_ms: 200,
            spool_retention_s: 600,
            spool_prune_interval_s: 30,
            hlsjs_url: crate::http::watch::DEFAULT_HLSJS_URL.into(),
            tls_cert: None,
            tls_key: None,
            public_host: None,
            rtmps: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_ca: None,
            limits: Default::default(),
            sdi: SdiConfig::default(),
        }
    }
}

/// Flags given on the command line; each overrides the file and the environment.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct ServeArgs {
    /// TOML file with the same keys as the flags (see config/sluice.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    http: Option<SocketAddr>,
    #[arg(long)]
    cluster: Option<SocketAddr>,
    #[arg(long)]
    rtmp: Option<SocketAddr>,
    #[arg(long)]
    srt: Option<SocketAddr>,
    /// Cluster URL of any member (e.g. http://10.0.0.1:7000) to join on first start.
    #[arg(long)]
    join: Option<String>,
    /// File with the cluster secret (needed with --join; a new cluster makes one).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// On a fresh data dir without --join, wait to be added to a cluster instead of
    /// starting a new one.
    #[arg(long)]
    no_bootstrap: bool,
    #[arg(long)]
    advertise_cluster: Option<String>,
    /// URL other nodes pull HLS from (default from --http).
    #[arg(long)]
    advertise_http: Option<String>,
    /// Node lease time to live in milliseconds (default 6000): a node silent this long
    /// is down and its streams wait for their publishers elsewhere.
    #[arg(long)]
    lease_ttl_ms: Option<i64>,
    /// Reconnect grace in milliseconds (default 30000).
    #[arg(long)]
    reconnect_grace_ms: Option<i64>,
    /// Certificate chain (PEM) for TLS on the HTTP listener.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for TLS on the HTTP listener.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// RTMPS ingest address (uses --tls-cert / --tls-key).
    #[arg(long)]
    rtmps: Option<SocketAddr>,
    /// This node's certificate (PEM) for mutual TLS on the cluster listener.
    #[arg(long)]
    cluster_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    cluster_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers must present a certificate it signed.
    #[arg(long)]
    cluster_ca: Option<PathBuf>,
    /// URL the player page loads hls.js from.
    #[arg(long)]
    hlsjs_url: Option<String>,
    /// Host name to print in the OBS and watch URLs.
    #[arg(long)]
    public_host: Option<String>,
    /// Simulate N SDI capture ports with GStreamer test sources (a build with the
    /// `sdi` feature).
    #[arg(long, value_name = "N")]
    sdi_simulated_ports: Option<u32>,
}

impl ServeArgs {
    /// defaults < file < SLUICE_* environment < flags.
    pub(crate) fn resolve(&self) -> Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?
            }
            None => Config::default(),
        };
        apply_environment(&mut c)?;
        self.apply_flags(&mut c);
        if c.sdi.simulated_ports > 0 && !crate::sdi::AVAILABLE {
            bail!("sdi.simulated_ports: this build has no SDI capture (build with --features sdi)");
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            bail!("TLS needs both --tls-cert and --tls-key");
        }
        let problems = super::check::check(&c, true);
        if !problems.is_empty() {
            let list: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect();
            bail!("the configuration cannot be used:\n  {}", list.join("\n  "));
        }
        Ok(c)
    }

    /// Every flag given replaces what the file and the environment said.
    fn apply_flags(&self, c: &mut Config) {
        macro_rules! flag {
            ($field:ident) => {
                if let Some(v) = &self.$field {
                    c.$field = v.clone().into();
                }
            };
        }
        macro_rules! optional {
            ($($field:ident),*) => {
                $(if self.$field.is_some() {
                    c.$field = self.$field.clone();
                })*
            };
        }
        flag!(data_dir);
        flag!(http);
        flag!(cluster);
        flag!(rtmp);
        flag!(srt);
        optional!(
            name,
            join,
            cluster_secret_file,
            advertise_cluster,
            advertise_http,
            tls_cert,
            tls_key,
            public_host,
            rtmps,
            cluster_tls_cert,
            cluster_tls_key,
            cluster_ca
        );
        if self.no_bootstrap {
            c.bootstrap = false;
        }
        if let Some(v) = self.lease_ttl_ms {
            c.lease_ttl_ms = v;
        }
        if let Some(v) = self.reconnect_grace_ms {
            c.reconnect_grace_ms = v;
        }
        if let Some(v) = &self.hlsjs_url {
            c.hlsjs_url = v.clone();
        }
        if let Some(n) = self.sdi_simulated_ports {
            c.sdi.simulated_ports = n;
        }
    }
}

/// `SLUICE_*` variables replace what the file said.
fn apply_environment(c: &mut Config) -> Result<()> {
    let env = |key: &str| std::env::var(format!("SLUICE_{key}")).ok();
    let parse_addr = |key: &str, v: String| -> Result<SocketAddr> {
        v.parse()
            .with_context(|| format!("SLUICE_{key}: not an address: {v}"))
    };
    if let Some(v) = env("DATA_DIR") {
        c.data_dir = v.into();
    }
    if let Some(v) = env("NAME") {
        c.name = Some(v);
    }
    if let Some(v) = env("HTTP") {
        c.http = parse_addr("HTTP", v)?;
    }
    if let Some(v) = env("CLUSTER") {
        c.cluster = parse_addr("CLUSTER", v)?;
    }
    if let Some(v) = env("JOIN") {
        c.join = Some(v);
    }
    if let Some(v) = env("CLUSTER_SECRET_FILE") {
        c.cluster_secret_file = Some(v.into());
    }
    if let Some(v) = env("RTMP") {
        c.rtmp = parse_addr("RTMP", v)?;
    }
    if let Some(v) = env("HLSJS_URL") {
        c.hlsjs_url = v;
    }
    if let Some(v) = env("PUBLIC_HOST") {
        c.public_host = Some(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file lists every key with its default: it parses (unknown keys are
    /// refused) to exactly the built-in defaults, and names every key.
    #[test]
    fn the_example_config_is_the_defaults_and_names_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.toml");
        let text = std::fs::read_to_string(path).expect("config/sluice.toml");
        let parsed: Config = toml::from_str(&text).expect("parses");
        assert_eq!(parsed, Config::default());
        let keys = toml::to_string(&Config {
            name: Some(String::new()),
            join: Some(String::new()),
            cluster_secret_file: Some(PathBuf::new()),
            advertise_cluster: Some(String::new()),
            tls_cert: Some(PathBuf::new()),
            tls_key: Some(PathBuf::new()),
            public_host: Some(String::new()),
            ..Config::default()
        })
        .expect("serializes");
        for line in keys.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with('[') {
                assert!(
                    text.lines().any(|l| l == line),
                    "config/sluice.toml has no {line} table"
                );
                continue;
            }
            let key = line.split(" = ").next().unwrap_or_default();
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
                "config/sluice.toml does not mention {key}"
            );
        }
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = toml::from_str::<Config>("lease_ttl = 5").expect_err("unknown key");
        assert!(err.to_string().contains("lease_ttl"), "{err}");
    }
}
