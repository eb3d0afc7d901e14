//! `sluice serve`: the node. Configuration (defaults < TOML file < environment < flags),
//! the data dir with its secrets, the Raft member, and the listeners.
//!
//! ```text
//! data dir: node.id, cluster.secret (0600), admin.token (0600), raft.redb
//! cluster listener: /raft/* (Raft RPC), /cluster/* (propose, read-index, join)
//! http listener:    /healthz, /readyz, /api/v1/cluster
//! tasks: lease renewal (every node), supervisor (acts on the leader only)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use openraft::{BasicNode, Config as RaftConfig, Raft};
use sluice_cluster::command::Op;
use sluice_cluster::handle::ClusterHandle;
use sluice_cluster::model::{GenerationState, NodeUrls};
use sluice_cluster::network::{raft_router, Faults, HttpNetwork};
use sluice_cluster::store::{open_database, LogStore, StateMachine, TypeConfig};
use sluice_cluster::supervisor;

use crate::metrics::Metrics;
use crate::origin::{spool, Origins};
use crate::support::{now_ms, random_hex, read_secret, tighten_data_dir, write_secret};

pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod edge;

pub(crate) use config::{Config, ServeArgs};

/// The node's identity and secrets, made on first start.
struct DataDir {
    node_id: u64,
    cluster_secret: String,
    admin_token: String,
    fresh: bool,
}

fn prepare_data_dir(c: &Config) -> Result<DataDir> {
    let id_path = c.data_dir.join("node.id");
    let fresh = !id_path.exists();
    std::fs::create_dir_all(&c.data_dir)
        .with_context(|| format!("creating {}", c.data_dir.display()))?;
    tighten_data_dir(&c.data_dir, fresh)?;
    if fresh {
        // A random id: nodes never agree on ids by accident.
        let id = u64::from_str_radix(&random_hex()?[..15], 16)?.max(1);
        std::fs::write(&id_path, format!("{id}\n"))?;
    }
    let node_id: u64 = read_secret(&id_path)?.parse().context("node.id")?;
    let secret_path = c.data_dir.join("cluster.secret");
    if !secret_path.exists() {
        let secret = match (&c.cluster_secret_file, &c.join) {
            (Some(file), _) => read_secret(file)?,
            (None, Some(_)) => {
                bail!("--join needs --cluster-secret-file (the cluster.secret of a member)")
            }
            (None, None) if !c.bootstrap => {
                bail!("--no-bootstrap needs --cluster-secret-file (the cluster.secret of a member)")
            }
            (None, None) => random_hex()?,
        };
        write_secret(&secret_path, &secret)?;
    }
    let token_path = c.data_dir.join("admin.token");
    if !token_path.exists() {
        write_secret(&token_path, &random_hex()?)?;
    }
    Ok(DataDir {
        node_id,
        cluster_secret: read_secret(&secret_path)?,
        admin_token: read_secret(&token_path)?,
        fresh,
    })
}

/// The listeners, bound before anything else starts (a port in use fails at once).
struct Listeners {
    cluster: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    rtmp: tokio::net::TcpListener,
    rtmps: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    srt: crate::ingest::srt::Bound,
}

/// Where other nodes, the local CLI and encoders reach this node.
struct Addresses {
    http: SocketAddr,
    rtmp: SocketAddr,
    srt: SocketAddr,
    /// The cluster listener's URL as other nodes use it.
    advertise: String,
    /// The HTTP listener's URL as other nodes use it.
    advertise_http: String,
    /// The HTTP host the local CLI uses (written to `http.url`).
    local_http_host: String,
}

/// A running node: what its tasks share, and the tasks.
struct Node {
    c: Config,
    dir: DataDir,
    name: String,
    raft: Raft<TypeConfig>,
    handle: ClusterHandle,
    secret: Arc<str>,
    metrics: Arc<Metrics>,
    limits: Arc<crate::limits::Limits>,
    spool_status: SpoolStatus,
    sdi_control: Arc<crate::sdi::Control>,
    origins: Arc<Origins>,
    edge: Arc<crate::edge::Edge>,
    addresses: Addresses,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

type SpoolStatus = Arc<std::sync::Mutex<std::result::Result<(), String>>>;

/// `sluice serve`: starts the node in phases (data dir, listeners, Raft member, the
/// shared parts, the listeners' servers, joining or bootstrapping, the background
/// loops), then serves until SIGTERM or Ctrl-C and hands its streams over.
pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    let c = args.resolve()?;
    let dir = prepare_data_dir(&c)?;
    let cluster_tls = cluster_tls(&c)?;
    let limits = Arc::new(crate::limits::Limits::new(c.limits.clone()));
    let srt_settings = crate::ingest::srt::SrtSettings {
        latency: Duration::from_millis(c.srt_latency_ms),
        idle_timeout: Duration::from_millis(c.publisher_timeout_ms.max(1_000)),
        limits: limits.clone(),
    };
    let listeners = bind(&c, &srt_settings).await?;
    let addresses = addresses(&c, &listeners, cluster_tls.is_some())?;
    std::fs::write(
        c.data_dir.join("http.url"),
        format!(
            "http://{}:{}\n",
            addresses.local_http_host,
            addresses.http.port()
        ),
    )?;
    let (raft, handle, secret) = open_member(&c, &dir).await?;
    let mut node = Node::new(c, dir, raft, handle, secret, limits, addresses)?;
    node.serve_cluster(listeners.cluster, cluster_tls)?;
    node.serve_http(listeners.http).await?;
    node.start_ingest(listeners.rtmp, listeners.rtmps, listeners.srt, srt_settings);
    node.start_spool_sweep();
    let created_cluster = node.join_or_bootstrap().await?;
    node.start_liveness();
    node.tasks
        .spawn(node.reporter().run(node.shutdown.subscribe()));
    node.welcome(created_cluster).await;
    crate::support::wait_for_signal().await;
    node.stop().await;
    Ok(())
}

/// The cluster listener's mutual TLS, when its certificate, key and CA are configured
/// (the cluster's own client side is set up here too).
fn cluster_tls(c: &Config) -> Result<Option<rustls::ServerConfig>> {
    let (Some(cert), Some(key), Some(ca)) =
        (&c.cluster_tls_cert, &c.cluster_tls_key, &c.cluster_ca)
    else {
        return Ok(None);
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut identity = read(cert)?;
    identity.push(b'\n');
    identity.extend(read(key)?);
    sluice_cluster::network::set_cluster_tls(sluice_cluster::network::ClusterTls {
        ca_pem: read(ca)?,
        identity_pem: identity,
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(crate::support::tls::cluster_server_config(
        cert, key, ca,
    )?))
}

async fn bind(c: &Config, srt: &crate::ingest::srt::SrtSettings) -> Result<Listeners> {
    let tcp = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {what} listener {addr}"))
    };
    let cluster = tcp(c.cluster, "cluster").await?;
    let http = tcp(c.http, "http").await?;
    let rtmp = tcp(c.rtmp, "rtmp").await?;
    // RTMPS: the HTTP listener's certificate, in front of the same RTMP ingest.
    let rtmps = match (c.rtmps, &c.tls_cert, &c.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let config = crate::support::tls::server_config(cert, key)?;
            let listener = tcp(addr, "rtmps").await?;
            tracing::info!(addr = %listener.local_addr()?, "rtmps listening");
            Some((listener, tokio_rustls::TlsAcceptor::from(Arc::new(config))))
        }
        (Some(_), _, _) => bail!("rtmps needs tls_cert and tls_key"),
        _ => None,
    };
    let srt = crate::ingest::srt::bind(c.srt, srt).await?;
    Ok(Listeners {
        cluster,
        http,
        rtmp,
        rtmps,
        srt,
    })
}

/// The host of `addr`, or `fallback` when it listens on every address.
fn host_or(addr: SocketAddr, fallback: impl FnOnce() -> String) -> String {
    if addr.ip().is_unspecified() {
        fallback()
    } else {
        addr.ip().to_string()
    }
}

fn url_host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn addresses(c: &Config, l: &Listeners, cluster_tls: bool) -> Result<Addresses> {
    let cluster = l.cluster.local_addr()?;
    let http = l.http.local_addr()?;
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let advertise = c.advertise_cluster.clone().unwrap_or_else(|| {
        let host = host_or(cluster, || "127.0.0.1".into());
        format!("{}://{host}:{}", scheme(cluster_tls), cluster.port())
    });
    let advertise_http = c.advertise_http.clone().unwrap_or_else(|| {
        let host = host_or(http, || url_host(&advertise));
        format!("{}://{host}:{}", scheme(c.tls_cert.is_some()), http.port())
    });
    Ok(Addresses {
        http,
        rtmp: l.rtmp.local_addr()?,
        srt: l.srt.local_addr()?,
        local_http_host: host_or(http, || "127.0.0.1".into()),
        advertise,
        advertise_http,
    })
}

/// The Raft member over this node's data dir, and the handle the rest of the node uses.
async fn open_member(
    c: &Config,
    dir: &DataDir,
) -> Result<(Raft<TypeConfig>, ClusterHandle, Arc<str>)> {
    // A follower that knew a leader waits out the leader's lease (election_timeout_max)
    // plus a random election timeout before it campaigns: a dead leader is replaced
    // after 1.3 to 1.6 s. Heartbeats every 150 ms keep five of them inside that window,
    // so a busy machine does not start elections by mistake.
    let raft_config = RaftConfig {
        heartbeat_interval: 150,
        snapshot_max_chunk_size: sluice_cluster::network::SNAPSHOT_CHUNK_BYTES,
        election_timeout_min: 500,
        election_timeout_max: 800,
        ..Default::default()
    };
    let raft_config = Arc::new(raft_config.validate().context("raft config")?);
    let db = open_database(&c.data_dir.join("raft.redb")).context("opening raft.redb")?;
    // A new raft.redb (and the files written above) get the umask's mode.
    tighten_data_dir(&c.data_dir, dir.fresh)?;
    let sm = StateMachine::open(db.clone()).map_err(|e| anyhow::anyhow!("state machine: {e}"))?;
    let secret: Arc<str> = Arc::from(dir.cluster_secret.as_str());
    let net = HttpNetwork::new(dir.node_id, secret.clone(), Arc::new(Faults::default()))?;
    let raft = Raft::new(dir.node_id, raft_config, net, LogStore::new(db), sm.clone()).await?;
    let handle = ClusterHandle::new(dir.node_id, raft.clone(), sm, secret.clone())?;
    Ok((raft, handle, secret))
}

impl Node {
    /// The parts every listener shares: metrics, limits, the spool and its status, SDI
    /// control, the packaging origins and the pull-through edge.
    fn new(
        c: Config,
        dir: DataDir,
        raft: Raft<TypeConfig>,
        handle: ClusterHandle,
        secret: Arc<str>,
        limits: Arc<crate::limits::Limits>,
        addresses: Addresses,
    ) -> Result<Self> {
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("node-{:x}", dir.node_id & 0xffff));
        let metrics = Arc::new(Metrics::default());
        let spool_root = c.data_dir.join("spool");
        let spool_status = Arc::new(std::sync::Mutex::new(spool::check_writable(&spool_root)));
        if let Ok(Err(why)) = spool_status.lock().as_deref() {
            tracing::error!(%why, "the spool is not writable: live serving works from memory, /readyz says not ready");
        }
        let origins = Arc::new(Origins::new(handle.clone(), spool_root, metrics.clone()));
        let edge = Arc::new(crate::edge::Edge::new(
            format!("node-{:x}", dir.node_id),
            c.edge_cache_bytes,
            Duration::from_millis(c.edge_upstream_timeout_ms),
            Some(secret.clone()),
        )?);
        Ok(Self {
            sdi_control: Arc::new(crate::sdi::Control::new(c.sdi.simulated_ports)),
            c,
            dir,
            name,
            raft,
            handle,
            secret,
            metrics,
            limits,
            spool_status,
            origins,
            edge,
            addresses,
            shutdown: tokio::sync::watch::channel(false).0,
            tasks: tokio::task::JoinSet::new(),
        })
    }

    /// Raft RPC and the cluster API; behind mutual TLS when it is configured.
    fn serve_cluster(
        &mut self,
        listener: tokio::net::TcpListener,
        tls: Option<rustls::ServerConfig>,
    ) -> Result<()> {
        let app = sluice_cluster::network::guarded(
            raft_router(self.raft.clone(), self.secret.clone()).merge(self.handle.router()),
            self.secret.clone(),
            sluice_cluster::network::CLUSTER_REQUEST_DEADLINE,
        );
        let serving =
            crate::http::serve::cluster_listener(listener, app, tls, self.shutdown.subscribe())?;
        self.tasks.spawn(serving);
        Ok(())
    }

    /// The viewer routes, admin API and dashboard; HTTPS when a certificate is set.
    async fn serve_http(&mut self, listener: tokio::net::TcpListener) -> Result<()> {
        let c = &self.c;
        let app = crate::http::app(
            crate::http::api::ApiState {
                handle: self.handle.clone(),
                admin_token: Arc::from(self.dir.admin_token.as_str()),
                advertise: Arc::from(self.addresses.advertise.as_str()),
                spool: self.spool_status.clone(),
                sdi: self.sdi_control.clone(),
            },
            self.origins.clone(),
            self.edge.clone(),
            Arc::from(c.hlsjs_url.as_str()),
            self.secret.clone(),
            self.limits.clone(),
        );
        let tls_files = c.tls_cert.as_deref().zip(c.tls_key.as_deref());
        let serving = crate::http::serve::viewer_listener(
            listener,
            app,
            tls_files,
            self.limits.clone(),
            self.shutdown.subscribe(),
        )
        .await?;
        self.tasks.spawn(serving);
        Ok(())
    }

    /// RTMP (and RTMPS), the SRT listener and callers, and SDI capture.
    fn start_ingest(
        &mut self,
        rtmp: tokio::net::TcpListener,
        rtmps: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
        srt: crate::ingest::srt::Bound,
        srt_settings: crate::ingest::srt::SrtSettings,
    ) {
        let settings = crate::ingest::rtmp::RtmpSettings {
            app: self.c.rtmp_app.clone(),
            idle_timeout: Duration::from_millis(self.c.publisher_timeout_ms.max(1_000)),
            handshake_timeout: Duration::from_secs(10),
            limits: self.limits.clone(),
        };
        let origins = &self.origins;
        if let Some((listener, acceptor)) = rtmps {
            self.tasks.spawn(crate::ingest::rtmp::serve(
                listener,
                origins.clone(),
                settings.clone(),
                Some(acceptor),
                self.shutdown.subscribe(),
            ));
        }
        self.tasks.spawn(crate::sdi::run(
            self.handle.clone(),
            origins.clone(),
            self.sdi_control.clone(),
            self.shutdown.subscribe(),
        ));
        self.tasks.spawn(crate::ingest::rtmp::serve(
            rtmp,
            origins.clone(),
            settings,
            None,
            self.shutdown.subscribe(),
        ));
        self.tasks.spawn(crate::ingest::srt_caller::run(
            origins.clone(),
            self.handle.clone(),
            srt_settings.clone(),
            self.shutdown.subscribe(),
        ));
        self.tasks.spawn(crate::ingest::srt::serve(
            srt,
            origins.clone(),
            srt_settings,
            self.shutdown.subscribe(),
        ));
    }

    /// Retention, pruning of old spool objects and the spool's writability check.
    fn start_spool_sweep(&mut self) {
        let origins = self.origins.clone();
        let handle = self.handle.clone();
        let spool_status = self.spool_status.clone();
        let retention = Duration::from_secs(self.c.spool_retention_s);
        let every = Duration::from_secs(self.c.spool_prune_interval_s.max(1));
        let mut rx = self.shutdown.subscribe();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
                crate::origin::retention::enforce(&handle, retention).await;
                let active = origins.active();
                let decide = crate::origin::retention::disk_plan(&handle, &active, retention);
                let root = origins.spool_root().to_path_buf();
                let checked = tokio::task::spawn_blocking(move || {
                    spool::prune_disk(&root, retention, &decide);
                    spool::check_writable(&root)
                })
                .await
                .unwrap_or(Ok(()));
                if let Err(why) = &checked {
                    tracing::error!(%why, "the spool is not writable");
                }
                if let Ok(mut status) = spool_status.lock() {
                    *status = checked;
                }
            }
        });
    }

    /// A fresh node starts a one-node cluster, joins the one it was told, or waits to
    /// be added; whether it started a new cluster.
    async fn join_or_bootstrap(&self) -> Result<bool> {
        if self.raft.is_initialized().await.unwrap_or(false) {
            return Ok(false);
        }
        let (advertise, node_id) = (&self.addresses.advertise, self.dir.node_id);
        match &self.c.join {
            None if self.dir.fresh && self.c.bootstrap => {
                self.raft
                    .initialize(BTreeMap::from([(node_id, BasicNode::new(advertise))]))
                    .await?;
                tracing::info!(node = node_id, "started a new one-node cluster");
                return Ok(true);
            }
            None => tracing::warn!(
                cluster = %advertise,
                "this node is not in a cluster: waiting to be added (sluice cluster join URL)"
            ),
            Some(member) => {
                join_with_retries(&self.handle, member, advertise).await?;
                tracing::info!(node = node_id, member, "joined the cluster");
            }
        }
        Ok(false)
    }

    /// Registers the node, then renews its lease; the leader also runs the supervisor.
    fn start_liveness(&mut self) {
        let a = &self.addresses;
        // Where encoders reach this node: the listener's address, or (listening on
        // all addresses) the public host or the host other nodes reach it at.
        let ingest_host = |addr: SocketAddr| {
            host_or(addr, || {
                self.c
                    .public_host
                    .clone()
                    .unwrap_or_else(|| url_host(&a.advertise_http))
            })
        };
        let urls = NodeUrls {
            http: a.advertise_http.clone(),
            cluster: a.advertise.clone(),
            rtmp: format!(
                "rtmp://{}:{}/{}",
                ingest_host(a.rtmp),
                a.rtmp.port(),
                self.c.rtmp_app
            ),
            srt: format!("srt://{}:{}", ingest_host(a.srt), a.srt.port()),
        };
        self.tasks.spawn(liveness_loop(
            self.handle.clone(),
            self.name.clone(),
            self.dir.admin_token.clone(),
            urls,
            self.c.lease_ttl_ms,
            self.c.reconnect_grace_ms,
            self.shutdown.subscribe(),
        ));
        self.tasks.spawn(stop_ingest_if_storage_fails(
            self.handle.clone(),
            self.origins.clone(),
            self.shutdown.subscribe(),
        ));
    }

    /// What this node reports of itself as an endpoint.
    fn reporter(&self) -> crate::endpoint::Reporter {
        crate::endpoint::Reporter {
            handle: self.handle.clone(),
            name: self.name.clone(),
            http_url: self.addresses.advertise_http.clone(),
            metrics: self.metrics.clone(),
            edge: self.edge.clone(),
            origins: self.origins.clone(),
            spool: self.spool_status.clone(),
        }
    }

    /// The first channel of a new cluster, the getting-started lines, and readiness.
    async fn welcome(&mut self, created_cluster: bool) {
        let c = &self.c;
        if created_cluster {
            if let Err(e) = create_first_channel(&self.handle, &c.data_dir).await {
                tracing::warn!(error = %format!("{e:#}"), "could not create the first channel");
            }
        }
        let a = &self.addresses;
        let host = c
            .public_host
            .clone()
            .unwrap_or_else(|| a.local_http_host.clone());
        let scheme = if c.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        println!(
            "sluice node {} serving: http {} rtmp {} srt {} cluster {}",
            self.dir.node_id, a.http, a.rtmp, a.srt, a.advertise
        );
        print_getting_started(c, &host, scheme, a.http.port(), a.rtmp.port());
        self.tasks.spawn(notify_ready_when_joined(
            self.raft.clone(),
            self.handle.clone(),
            self.shutdown.subscribe(),
        ));
    }

    /// Hands the live streams and leadership over, stops every task and the member.
    async fn stop(mut self) {
        crate::support::notify::notify("STOPPING=1");
        tracing::info!("shutting down: handing live streams over");
        let handed = self.origins.drain(DRAIN_LIMIT).await;
        tracing::info!(
            handed,
            "drained: live streams continue where their publishers reconnect"
        );
        // The publishers' claims elsewhere were committed by this node if it leads;
        // now the cluster gets its next leader before this node goes.
        self.handle
            .hand_over_leadership(Duration::from_secs(3))
            .await;
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.raft.shutdown().await.ok();
    }
}

/// Tells the service manager the node is ready once it belongs to a cluster with a
/// leader (a node waiting to be added becomes ready when it is); its listeners are up
/// before this task starts.
async fn notify_ready_when_joined(
    raft: Raft<TypeConfig>,
    handle: ClusterHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    loop {
        let leader = metrics.borrow().current_leader;
        if let (Some(leader), true) = (leader, handle.is_member()) {
            tracing::info!(leader, "ready: in a cluster with a leader");
            crate::support::notify::notify("READY=1\nSTATUS=serving");
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// How long a stopping node waits for its live streams to be handed over.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How long a starting node keeps asking a member that cannot take it yet (no leader
/// elected, not reachable: nodes started together).
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

async fn join_with_retries(handle: &ClusterHandle, member: &str, advertise: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut pause = Duration::from_millis(200);
    loop {
        match handle.join(member, advertise).await {
            Ok(()) => return Ok(()),
            Err(e @ sluice_cluster::handle::ClusterError::Membership(_)) => {
                return Err(e).with_context(|| format!("joining through {member}"))
            }
            Err(e) if tokio::time::Instant::now() + pause >= deadline => {
                return Err(e).with_context(|| {
                    format!("joining through {member}: no success for {JOIN_PATIENCE:?}")
                })
            }
            Err(e) => {
                tracing::warn!(%member, error = %e, "the cluster cannot take this node yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(3));
            }
        }
    }
}

/// How often old spool objects are pruned (and the spool's writability checked).
/// The channel a fresh one-node cluster starts with, so OBS can publish at once.
const FIRST_CHANNEL: &str = "main";

/// Creates channel `main` with a stream key written to `<data-dir>/main.stream-key`.
async fn create_first_channel(handle: &ClusterHandle, data_dir: &Path) -> Result<()> {
    let key = crate::http::api::new_key()?;
    let op = Op::CreateChannel {
        slug: FIRST_CHANNEL.into(),
        title: "Main".into(),
        visibility: Default::default(),
        ingest: sluice_cluster::model::Ingest::Push,
        ll_hls: Default::default(),
        recording: true,
        retention: Default::default(),
        placement: Default::default(),
        srt_passphrase: None,
        first_key: Some(sluice_cluster::command::FirstKey {
            key_id: key.key_id,
            verifier: key.verifier,
        }),
    };
    // The new cluster elects its leader first.
    let mut last = None;
    for _ in 0..40 {
        match handle.propose_op(op.clone()).await {
            Ok(_) => {
                write_secret(
                    &data_dir.join(format!("{FIRST_CHANNEL}.stream-key")),
                    &key.plaintext,
                )?;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no leader: {last:?}")
}

fn print_getting_started(c: &Config, host: &str, scheme: &str, http_port: u16, rtmp_port: u16) {
    let rtmp_port = if rtmp_port == 1935 {
        String::new()
    } else {
        format!(":{rtmp_port}")
    };
    let key_file = c.data_dir.join(format!("{FIRST_CHANNEL}.stream-key"));
    let data_dir = c.data_dir.display();
    println!("\nOBS settings (Settings > Stream > Custom):");
    println!("  Server:     rtmp://{host}{rtmp_port}/{}", c.rtmp_app);
    if key_file.exists() {
        println!("  Stream Key: the contents of {}", key_file.display());
        println!("Watch:        {scheme}://{host}:{http_port}/watch/{FIRST_CHANNEL}");
    } else {
        println!(
            "  Stream Key: create a channel: sluice channel create NAME --data-dir {data_dir}"
        );
        println!("Watch:        {scheme}://{host}:{http_port}/watch/NAME");
    }
    println!(
        "Dashboard:    {scheme}://{host}:{http_port}/ (log in with the contents of {})",
        c.data_dir.join("admin.token").display()
    );
    println!("More channels: sluice channel create NAME --data-dir {data_dir}\n");
}

/// After a restart this node holds no publisher: generations the state still shows as
/// starting or live here wait for their publisher instead, so it can come back at once
/// (to this node or another) rather than after the lease expires.
async fn release_own_generations(handle: &ClusterHandle) {
    let me = handle.id();
    let held: Vec<(String, u64, u64)> = handle.read_local(|s| {
        s.all_generations()
            .filter(|g| g.origin == me)
            .filter(|g| matches!(g.state, GenerationState::Starting | GenerationState::Live))
            .filter_map(|g| {
                s.channels
                    .get(&g.channel)
                    .map(|c| (c.slug.clone(), g.number, g.epoch))
            })
            .collect()
    });
    for (channel, generation, epoch) in held {
        tracing::info!(%channel, generation, "left live by the previous run: waiting for its publisher");
        // Fenced: refused if another node (or a publisher here) claimed it meanwhile.
        let op = Op::MarkReconnecting {
            channel,
            generation,
            node: Some(me),
            epoch,
        };
        if let Err(e) = handle.propose_op(op).await {
            tracing::warn!(error = %e, "could not mark a generation reconnecting");
        }
    }
}

/// This node's Raft stops for good when its storage fails (a full disk, a broken
/// file). The node can then neither renew its lease nor report its streams: it stops
/// its ingest at once, so its publishers reconnect to nodes that can take the streams
/// over, and keeps serving what it has. `/readyz` says why. Ends at `shutdown`.
async fn stop_ingest_if_storage_fails(
    handle: ClusterHandle,
    origins: Arc<Origins>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut metrics = handle.raft().metrics();
    loop {
        let failed = match &metrics.borrow_and_update().running_state {
            Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        };
        if let Some(error) = failed {
            tracing::error!(%error, "the cluster state store failed: this node stops its ingest \
                so its streams continue on other nodes; /readyz says not ready");
            origins.drain(Duration::from_secs(2)).await;
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() {
                return;
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Makes this node's `admin.token` valid on every node (only its verifier is
/// replicated). A token an operator revoked stays revoked: the same verifier again
/// changes nothing.
async fn register_admin_token(handle: &ClusterHandle, name: &str, token: &str) {
    let op = Op::CreateAdminToken {
        token_id: format!("node-{:x}", handle.id()),
        name: format!("admin.token of {name}"),
        verifier: sluice_cluster::model::verifier_of(token),
        read_only: false,
    };
    if let Err(e) = handle.propose_op(op).await {
        tracing::warn!(error = %e, "this node's admin.token is not valid on other nodes");
    }
}

async fn liveness_loop(
    handle: ClusterHandle,
    name: String,
    admin_token: String,
    urls: NodeUrls,
    lease_ttl_ms: i64,
    reconnect_grace_ms: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_millis((lease_ttl_ms / 3).max(200) as u64);
    let mut registered = false;
    // While this node leads: the term it leads in, and its own view of the leases.
    let mut watch: Option<(u64, supervisor::LeaseWatch)> = None;
    loop {
        // A node waiting to be added, or one that left, holds no lease.
        if !handle.is_member() {
            tokio::select! {
                _ = tokio::time::sleep(every) => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let op = if registered {
            Op::RenewLease { node: handle.id() }
        } else {
            Op::RegisterNode {
                node: handle.id(),
                name: name.clone(),
                urls: urls.clone(),
                lease_ttl_ms,
            }
        };
        let sent = std::time::Instant::now();
        match handle.propose_op(op).await {
            Ok(_) => {
                // Published output is fenced by the lease (`ClusterHandle::lease_fresh`):
                // fresh again only once this replica has applied what was committed by
                // then (a claim of its streams by another node included).
                match handle.read_linearizable(|_| ()).await {
                    Ok(()) => handle.lease_renewed(sent),
                    Err(e) => tracing::debug!(error = %e, "lease renewed, replica not read"),
                }
                if !registered {
                    register_admin_token(&handle, &name, &admin_token).await;
                    release_own_generations(&handle).await;
                }
                registered = true;
            }
            Err(e) => tracing::debug!(error = %e, "lease write failed; retrying"),
        }
        let term = {
            let m = handle.raft().metrics().borrow().clone();
            (m.current_leader == Some(handle.id())).then_some(m.current_term)
        };
        // A new term (or leadership lost and won back) starts the watch afresh.
        match (term, &watch) {
            (Some(t), Some((held, _))) if *held == t => {}
            (Some(t), _) => watch = Some((t, supervisor::LeaseWatch::new())),
            (None, _) => watch = None,
        }
        if let Some((_, leases)) = watch.as_mut() {
            let decided = handle.read_local(|s| {
                let expired = leases.expired(s, std::time::Instant::now());
                supervisor::decide(s, now_ms(), reconnect_grace_ms, &expired)
            });
            for cmd in decided {
                if let Err(e) = handle.propose(cmd).await {
                    tracing::debug!(error = %e, "supervisor command refused");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
