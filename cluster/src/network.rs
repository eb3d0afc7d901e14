//! Raft RPC over HTTP on the node's cluster listener. Every request carries the cluster
//! secret as a bearer token; a request without it is refused with 401 and logged.
//!
//! ```text
//! openraft --append_entries/vote/install_snapshot--> HttpPeer --POST /raft/{rpc}--> peer
//! peer: router(raft, secret) --check secret--> raft.append_entries(...) --> JSON Result
//! ```
//! `Faults` lets tests drop, delay or partition traffic between chosen nodes; the
//! product runs with none.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{NodeId, TypeConfig};

/// Longest a single RPC may take on the wire, whatever openraft allows.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest Raft RPC body accepted: a snapshot chunk (`SNAPSHOT_CHUNK_BYTES`) or a batch
/// of entries, JSON-encoded (bytes become arrays of numbers, about 4x), with room.
pub const MAX_RPC_BODY_BYTES: usize = 16 << 20;
/// Snapshot chunk size for the node's Raft config: well inside `MAX_RPC_BODY_BYTES`
/// once JSON-encoded (openraft's default, 3 MiB, is not).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Faults injected into outgoing traffic (tests only set them).
#[derive(Debug, Default)]
pub struct Faults {
    /// Pairs (from, to) whose messages are dropped.
    blocked: RwLock<BTreeSet<(NodeId, NodeId)>>,
    /// Delay added to every message from a node.
    delays: RwLock<BTreeMap<NodeId, Duration>>,
}

impl Faults {
    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut blocked = self.blocked.write().unwrap_or_else(PoisonError::into_inner);
        for x in a {
            for y in b {
                blocked.insert((*x, *y));
                blocked.insert((*y, *x));
            }
        }
    }

    /// Cuts one node off from everybody.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        self.partition(&[node], others);
    }

    pub fn heal(&self) {
        self.blocked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.delays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn delay(&self, from: NodeId, by: Duration) {
        self.delays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(from, by);
    }

    fn check(&self, from: NodeId, to: NodeId) -> (bool, Duration) {
        let blocked = self
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(from, to));
        let delay = self
            .delays
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&from)
            .copied()
            .unwrap_or_default();
        (blocked, delay)
    }
}

/// Creates clients to the other nodes.
#[derive(Clone)]
pub struct HttpNetwork {
    from: NodeId,
    client: reqwest::Client,
    secret: Arc<str>,
    faults: Arc<Faults>,
}

/// A reqwest client builder with the process's one TLS crypto provider (ring) in
/// place: reqwest is built without a provider of its own, so none is ever picked twice.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The cluster CA and this node's certificate and key (PEM), when the cluster
/// listener speaks mutual TLS: every client of another node's cluster listener trusts
/// that CA only and presents this node's certificate.
pub struct ClusterTls {
    pub ca_pem: Vec<u8>,
    /// The certificate chain, then the private key.
    pub identity_pem: Vec<u8>,
}

static CLUSTER_TLS: std::sync::OnceLock<ClusterTls> = std::sync::OnceLock::new();

/// Set once at start, before any cluster client is made.
pub fn set_cluster_tls(tls: ClusterTls) -> Result<(), String> {
    reqwest::Certificate::from_pem(&tls.ca_pem).map_err(|e| format!("cluster CA: {e}"))?;
    reqwest::Identity::from_pem(&tls.identity_pem)
        .map_err(|e| format!("cluster certificate and key: {e}"))?;
    CLUSTER_TLS
        .set(tls)
        .map_err(|_| "the cluster TLS is already set".to_string())
}

/// A client builder for other nodes' cluster listeners (with the cluster's mutual TLS
/// when it is configured).
pub fn cluster_client_builder() -> reqwest::ClientBuilder {
    let builder = client_builder();
    let Some(tls) = CLUSTER_TLS.get() else {
        return builder;
    };
    let (Ok(ca), Ok(identity)) = (
        reqwest::Certificate::from_pem(&tls.ca_pem),
        reqwest::Identity::from_pem(&tls.identity_pem),
    ) else {
        // Checked in set_cluster_tls.
        return builder;
    };
    builder.tls_certs_only([ca]).identity(identity)
}

impl HttpNetwork {
    pub fn new(
        from: NodeId,
        secret: Arc<str>,
        faults: Arc<Faults>,
    ) -> Result<Self, reqwest::Error> {
        let client = cluster_client_builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(RPC_TIMEOUT)
            .build()?;
        Ok(Self {
            from,
            client,
            secret,
            faults,
        })
    }
}

pub struct HttpPeer {
    net: HttpNetwork,
    target: NodeId,
    /// The peer's cluster listener, e.g. `http://10.0.0.2:7000`.
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> HttpPeer {
        HttpPeer {
            net: self.clone(),
            target,
            addr: node.addr.trim_end_matches('/').to_string(),
        }
    }
}

impl HttpPeer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (blocked, delay) = self.net.faults.check(self.net.from, self.target);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if blocked {
            let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "partitioned");
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let response = self
            .net
            .client
            .post(format!("{}/raft/{path}", self.addr))
            .bearer_auth(&*self.net.secret)
            .timeout(option.hard_ttl().min(RPC_TIMEOUT))
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        if !response.status().is_success() {
            let e = std::io::Error::other(format!("{} answered {}", self.addr, response.status()));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

#[derive(Clone)]
struct RpcState {
    raft: Raft<TypeConfig>,
    secret: Arc<str>,
}

/// Whether two secrets are equal, in time independent of where they differ and of
/// their lengths: ring compares their HMACs under a key drawn once per process.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .unwrap_or_else(|_| panic!("the system random source failed"))
    });
    ring::hmac::verify(key, a, ring::hmac::sign(key, b).as_ref()).is_ok()
}

/// Whether a request carries the cluster secret.
pub fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| constant_time_eq(token.as_bytes(), secret.as_bytes()))
}

fn refuse(rpc: &str) -> Response {
    tracing::warn!(rpc, "Raft RPC refused: missing or wrong cluster secret");
    (StatusCode::UNAUTHORIZED, "cluster secret required\n").into_response()
}

/// How long a request on the cluster listener may take, body included (a snapshot
/// chunk is well inside it; a sender that trickles bytes is cut off).
pub const CLUSTER_REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// Every route of the cluster listener behind one guard: the secret is checked from the
/// headers before anything reads the body (a stranger's 16 MiB body is never read, let
/// alone parsed), and the whole request must finish within `deadline` (408 otherwise).
pub fn guarded(router: Router, secret: Arc<str>, deadline: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let secret = secret.clone();
            async move {
                if !authorized(request.headers(), &secret) {
                    let path = request.uri().path();
                    match path.strip_prefix("/raft/") {
                        Some(rpc) => return refuse(rpc),
                        None => tracing::warn!(%path,
                            "cluster request refused: missing or wrong cluster secret"),
                    }
                    return (StatusCode::UNAUTHORIZED, "cluster secret required\n").into_response();
                }
                match tokio::time::timeout(deadline, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        tracing::warn!(?deadline, "cluster request took too long: cut off");
                        (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response()
                    }
                }
            }
        },
    ))
}

/// The Raft RPC routes of the cluster listener.
pub fn raft_router(raft: Raft<TypeConfig>, secret: Arc<str>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_RPC_BODY_BYTES))
        .with_state(RpcState { raft, secret })
}

async fn append(
    AxumState(s): AxumState<RpcState>,
    headers: HeaderMap,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    if !authorized(&headers, &s.secret) {
        return refuse("append");
    }
    Json(s.raft.append_entries(req).await).into_response()
}

async fn vote(
    AxumState(s): AxumState<RpcState>,
    headers: HeaderMap,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Response {
    if !authorized(&headers, &s.secret) {
        return refuse("vote");
    }
    Json(s.raft.vote(req).await).into_response()
}

async fn snapshot(
    AxumState(s): AxumState<RpcState>,
    headers: HeaderMap,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    if !authorized(&headers, &s.secret) {
        return refuse("snapshot");
    }
    Json(s.raft.install_snapshot(req).await).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A JSON route behind the guard, served on loopback.
    async fn serve(deadline: Duration) -> std::net::SocketAddr {
        let app = Router::new().route(
            "/cluster/propose",
            post(|Json(v): Json<serde_json::Value>| async move { Json(v) }),
        );
        let app = guarded(app, Arc::from("s3cret"), deadline);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Sends `head` (and nothing more) and returns the status line of the answer.
    async fn status_after_head(addr: std::net::SocketAddr, head: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(head.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    #[tokio::test]
    async fn a_stranger_is_refused_before_its_body_is_read() {
        let addr = serve(CLUSTER_REQUEST_DEADLINE).await;
        // 16 MB announced, none sent: the answer comes from the headers alone.
        let line = status_after_head(
            addr,
            "POST /cluster/propose HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 16000000\r\nAuthorization: Bearer wrong\r\n\r\n",
        )
        .await;
        assert!(line.contains("401"), "{line}");
    }

    #[tokio::test]
    async fn a_member_trickling_its_body_is_cut_off() {
        let addr = serve(Duration::from_millis(300)).await;
        let line = status_after_head(
            addr,
            "POST /cluster/propose HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nAuthorization: Bearer s3cret\r\n\r\n{\"a\":",
        )
        .await;
        assert!(line.contains("408"), "{line}");
    }
}
