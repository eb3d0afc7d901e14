//! What the rest of a node uses: propose a command (forwarded to the leader when this
//! node follows), read the local state, read linearizably (the leader confirms its
//! leadership and gives a read index; a follower waits to apply up to it), watch for
//! changes, and join a cluster through any member.
//!
//! ```text
//! propose(cmd) --leader?--> raft.client_write
//!              --follower--> POST {leader}/cluster/propose  (cluster secret)
//! read_linearizable(f) --> index = leader's ensure_linearizable --> wait applied >= index --> f(&State)
//! join(any member URL) --> POST /cluster/join --> leader: add_learner(blocking), add voter
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft};
use serde::{Deserialize, Serialize};

use crate::command::{Applied, Command, Op, Refusal};
use crate::network::authorized;
use crate::state::State;
use crate::store::{NodeId, Response as Answer, StateMachine, TypeConfig};

/// How long a forwarded request or a read-index wait may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a proposal may take to commit before its caller is told it did not.
pub const PROPOSE_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("no leader is known yet")]
    NoLeader,
    #[error("the leader did not answer: {0}")]
    Unavailable(String),
    /// A peer (the leader, or a node asked to join) took too long to answer.
    #[error("no answer in time: {0}")]
    Timeout(String),
    #[error("raft: {0}")]
    Raft(String),
    /// A membership change that would break the cluster, or one already done.
    #[error("{0}")]
    Membership(String),
}

impl ClusterError {
    /// The HTTP status an API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ClusterError::Refused(r) => r.http_status(),
            ClusterError::NoLeader => 503,
            // A peer that did not answer: a gateway error, never a conflict.
            ClusterError::Unavailable(_) => 502,
            ClusterError::Timeout(_) => 504,
            ClusterError::Raft(_) => 502,
            ClusterError::Membership(_) => 409,
        }
    }
}

/// A request to a peer that failed: a timeout is a 504, anything else a 502.
fn peer_error(e: reqwest::Error) -> ClusterError {
    if e.is_timeout() {
        ClusterError::Timeout(e.to_string())
    } else {
        ClusterError::Unavailable(e.to_string())
    }
}

/// Cheap to clone: one per node, shared by every task.
#[derive(Clone)]
pub struct ClusterHandle {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    secret: Arc<str>,
    client: reqwest::Client,
    /// Cluster reads spent on credentials this replica does not know.
    auth_lookups: Arc<std::sync::Mutex<LookupBudget>>,
    /// When this node sent its last lease renewal that committed (and that its replica
    /// has applied everything up to): see [`ClusterHandle::lease_fresh`].
    renewed: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// The share of its lease a holder uses: past 5/6 of `lease_ttl_ms` since it sent its
/// last renewal that committed, it publishes nothing new. The leader marks it down no
/// sooner than a whole `lease_ttl_ms` after it saw that renewal, which is after it was
/// sent; the sixth left over covers scheduling delays and the drift between the two
/// monotonic clocks (parts per million), so a holder stops before any other node can
/// be handed its streams.
pub const LEASE_HOLDER_SHARE: (u32, u32) = (5, 6);

/// Cluster reads a node may spend on credentials it does not know: a token bucket of
/// `AUTH_LOOKUPS_PER_S`, holding at most `AUTH_LOOKUP_BURST`. A flood of wrong tokens or
/// stream keys is then answered from the local replica alone and cannot delay Raft.
pub const AUTH_LOOKUPS_PER_S: f64 = 20.0;
pub const AUTH_LOOKUP_BURST: f64 = 40.0;

#[derive(Debug)]
pub struct LookupBudget {
    tokens: f64,
    at: tokio::time::Instant,
}

impl LookupBudget {
    pub fn new(now: tokio::time::Instant) -> Self {
        Self {
            tokens: AUTH_LOOKUP_BURST,
            at: now,
        }
    }

    /// Takes one lookup if the budget has one at `now`.
    pub fn take(&mut self, now: tokio::time::Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * AUTH_LOOKUPS_PER_S;
        self.tokens = (self.tokens + earned).min(AUTH_LOOKUP_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Serialize, Deserialize)]
struct JoinRequest {
    id: NodeId,
    addr: String,
}

#[derive(Serialize, Deserialize)]
struct RemoveRequest {
    id: NodeId,
}

/// Who a node is, as its cluster listener answers (`GET /cluster/identity`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub id: NodeId,
    /// Whether it already belongs to a cluster.
    pub initialized: bool,
}

/// An error a forwarded call returns, as JSON.
#[derive(Serialize, Deserialize)]
struct ForwardError {
    message: String,
    refusal: Option<Refusal>,
}

impl ClusterHandle {
    pub fn new(
        id: NodeId,
        raft: Raft<TypeConfig>,
        sm: StateMachine,
        secret: Arc<str>,
    ) -> Result<Self, reqwest::Error> {
        let client = crate::network::cluster_client_builder()
            .timeout(FORWARD_TIMEOUT)
            .build()?;
        Ok(Self {
            id,
            raft,
            sm,
            secret,
            client,
            auth_lookups: Arc::new(std::sync::Mutex::new(LookupBudget::new(
                tokio::time::Instant::now(),
            ))),
            renewed: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Records a lease renewal (or registration) sent at `sent` that committed, once
    /// this replica has applied what was committed by then.
    pub fn lease_renewed(&self, sent: std::time::Instant) {
        let mut renewed = self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *renewed = Some(renewed.map_or(sent, |r| r.max(sent)));
    }

    /// Whether this node may still publish what it originates: its last committed
    /// renewal was sent less than [`LEASE_HOLDER_SHARE`] of `ttl` ago. A node that was
    /// paused or cut off past that holds its output until a renewal commits again and
    /// its replica shows where its streams stand.
    pub fn lease_fresh(&self, ttl: Duration) -> bool {
        let (num, den) = LEASE_HOLDER_SHARE;
        let renewed = *self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        renewed.is_some_and(|at| at.elapsed() < ttl * num / den)
    }

    /// Looks a credential up (an admin token's or a stream key's verifier): in this
    /// replica first; only a miss costs a linearizable read (a credential made a moment
    /// ago on another node), and only while the node's lookup budget lasts. `Ok(None)`:
    /// unknown; `Err`: not looked up (the budget spent, or the cluster did not answer),
    /// which is not the caller's fault.
    pub async fn read_for_auth<T>(
        &self,
        f: impl Fn(&State) -> Option<T>,
    ) -> Result<Option<T>, ClusterError> {
        if let Some(found) = self.read_local(&f) {
            return Ok(Some(found));
        }
        let allowed = self
            .auth_lookups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(tokio::time::Instant::now());
        if !allowed {
            tracing::debug!("unknown credential: not looked up in the cluster (budget spent)");
            return Err(ClusterError::Unavailable(
                "too many unknown credentials to look up just now".into(),
            ));
        }
        self.read_linearizable(&f).await
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Reads this replica's state as applied so far (may lag the leader).
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.sm.read(f)
    }

    /// Waits until this replica's state satisfies `f` (its answer), or `deadline`
    /// passes (`None`). Woken by every entry applied here, and at least every `every`
    /// for conditions that also depend on the clock (a lease running out).
    pub async fn wait_local<T>(
        &self,
        deadline: tokio::time::Instant,
        every: Duration,
        f: impl Fn(&State) -> Option<T>,
    ) -> Option<T> {
        let mut applied = self.raft.metrics();
        loop {
            applied.borrow_and_update();
            if let Some(v) = self.read_local(&f) {
                return Some(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let pause = tokio::time::Instant::now() + every;
            tokio::select! {
                changed = applied.changed() => {
                    // Raft stopped: nothing more will be applied, only the clock moves.
                    if changed.is_err() {
                        tokio::time::sleep_until(pause.min(deadline)).await;
                    }
                }
                _ = tokio::time::sleep_until(pause.min(deadline)) => {}
            }
        }
    }

    /// A receiver that changes whenever this replica applies or the leader changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    fn leader_addr(&self) -> Result<String, ClusterError> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.ok_or(ClusterError::NoLeader)?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.trim_end_matches('/').to_string())
            .ok_or(ClusterError::NoLeader)
    }

    async fn forward<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ClusterError> {
        let addr = self.leader_addr()?;
        let response = self
            .client
            .post(format!("{addr}/cluster/{path}"))
            .bearer_auth(&*self.secret)
            .json(req)
            .send()
            .await
            .map_err(peer_error)?;
        if response.status().is_success() {
            return response.json().await.map_err(peer_error);
        }
        let status = response.status();
        match response.json::<ForwardError>().await {
            Ok(ForwardError {
                refusal: Some(r), ..
            }) => Err(ClusterError::Refused(r)),
            Ok(ForwardError { message, .. }) if status == StatusCode::CONFLICT => {
                Err(ClusterError::Membership(message))
            }
            Ok(ForwardError { message, .. }) => {
                Err(ClusterError::Unavailable(format!("{status}: {message}")))
            }
            Err(_) => Err(ClusterError::Unavailable(format!(
                "leader answered {status}"
            ))),
        }
    }

    /// Proposes a command and waits until it is committed and applied.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, ClusterError> {
        self.propose_within(cmd, PROPOSE_DEADLINE).await
    }

    /// [`ClusterHandle::propose`], given up after `deadline` with
    /// [`ClusterError::Timeout`]: a leader cut off from the majority cannot commit, and
    /// nothing waiting on it may hang. A command given up on may still commit later
    /// (it was sent): what proposes it must be ready to find it applied.
    pub async fn propose_within(
        &self,
        cmd: Command,
        deadline: Duration,
    ) -> Result<Applied, ClusterError> {
        let write = async {
            match self.raft.client_write(cmd.clone()).await {
                Ok(r) => Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    self.forward("propose", &cmd).await
                }
                Err(e) => Err(ClusterError::Raft(e.to_string())),
            }
        };
        let answer = tokio::time::timeout(deadline, write).await.map_err(|_| {
            ClusterError::Timeout(format!(
                "the cluster did not commit the change within {deadline:?}: a majority of \
                 the nodes may be unreachable from this one"
            ))
        })??;
        match answer.0 {
            Some(result) => Ok(result?),
            None => Err(ClusterError::Raft("no answer for a command".into())),
        }
    }

    /// Proposes `op` stamped with this node's clock (what every proposer outside the
    /// state machine does), with a fresh request id, and waits until it is committed
    /// and applied.
    pub async fn propose_op(&self, op: Op) -> Result<Applied, ClusterError> {
        self.propose(self.command(op)).await
    }

    /// `op` stamped with this node's clock, with a fresh request id: proposed again
    /// as it is, it is applied at most once.
    pub fn command(&self, op: Op) -> Command {
        Command::new(self.clock_ms(), op)
    }

    /// What the command with request id `request` answered, once this replica has
    /// applied everything committed so far; `None` if it has not been applied (yet, or
    /// ever, or so long ago that it is forgotten).
    pub async fn request_outcome(
        &self,
        request: u64,
    ) -> Result<Option<Result<Applied, Refusal>>, ClusterError> {
        self.read_linearizable(|s| {
            s.recent_requests
                .iter()
                .find(|(id, _)| *id == request)
                .map(|(_, answer)| answer.clone())
        })
        .await
    }

    /// Reads after everything committed before the call is applied here (ReadIndex).
    pub async fn read_linearizable<T>(
        &self,
        f: impl FnOnce(&State) -> T,
    ) -> Result<T, ClusterError> {
        let index: Option<u64> = match self.raft.ensure_linearizable().await {
            Ok(log_id) => log_id.map(|l| l.index),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_))) => {
                self.forward("read-index", &()).await?
            }
            Err(e) => return Err(ClusterError::Raft(e.to_string())),
        };
        if let Some(index) = index {
            self.raft
                .wait(Some(FORWARD_TIMEOUT))
                .applied_index_at_least(Some(index), "read index applied")
                .await
                .map_err(|e| ClusterError::Timeout(e.to_string()))?;
        }
        Ok(self.sm.read(f))
    }

    /// Joins the cluster `member` (any member's cluster URL) belongs to, as `my_addr`.
    pub async fn join(&self, member: &str, my_addr: &str) -> Result<(), ClusterError> {
        let response = self
            .client
            .post(format!("{}/cluster/join", member.trim_end_matches('/')))
            .bearer_auth(&*self.secret)
            .json(&JoinRequest {
                id: self.id,
                addr: my_addr.to_string(),
            })
            .send()
            .await
            .map_err(peer_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let why = format!("{member} answered {status}: {text}");
        if join_refusal_is_final(status) {
            Err(ClusterError::Membership(why))
        } else {
            Err(ClusterError::Unavailable(why))
        }
    }

    /// Whether this node is in the cluster's membership (voter or learner).
    pub fn is_member(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some()
    }

    /// Adds the node whose cluster listener is `addr` (running with this cluster's
    /// secret and not yet in a cluster): first as a learner that catches up, then as a
    /// voter. Any member can be asked; the leader does it.
    pub async fn add_node(&self, addr: &str) -> Result<NodeId, ClusterError> {
        let addr = addr.trim_end_matches('/').to_string();
        let response = self
            .client
            .get(format!("{addr}/cluster/identity"))
            .bearer_auth(&*self.secret)
            .send()
            .await
            .map_err(|e| match peer_error(e) {
                ClusterError::Timeout(why) => ClusterError::Timeout(format!("{addr}: {why}")),
                other => ClusterError::Unavailable(format!("{addr}: {other}")),
            })?;
        if !response.status().is_success() {
            return Err(ClusterError::Unavailable(format!(
                "{addr} answered {} (is it running with this cluster's secret?)",
                response.status()
            )));
        }
        let identity: Identity = response.json().await.map_err(|e| match peer_error(e) {
            ClusterError::Timeout(why) => ClusterError::Timeout(format!("{addr}: {why}")),
            other => ClusterError::Unavailable(format!("{addr}: {other}")),
        })?;
        let members = self.raft.metrics().borrow().membership_config.clone();
        if members.membership().get_node(&identity.id).is_some() {
            return Err(ClusterError::Membership(format!(
                "node {} is already a member",
                identity.id
            )));
        }
        if identity.initialized {
            return Err(ClusterError::Membership(format!(
                "node {} at {addr} already belongs to a cluster: start it on an empty data dir",
                identity.id
            )));
        }
        let req = JoinRequest {
            id: identity.id,
            addr,
        };
        if self.raft.metrics().borrow().current_leader == Some(self.id) {
            self.add_member(req.id, req.addr).await?;
        } else {
            self.forward::<JoinRequest, ()>("join", &req).await?;
        }
        Ok(identity.id)
    }

    /// Removes a node from the cluster (voter or learner) and its record from the
    /// state; its generations wait for their publishers to reconnect elsewhere. The last
    /// voter cannot be removed.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        if self.raft.metrics().borrow().current_leader != Some(self.id) {
            return self.forward("remove", &RemoveRequest { id }).await;
        }
        let membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        if membership.get_node(&id).is_none() {
            return Err(ClusterError::Refused(Refusal::not_found("member", id)));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&id) {
            return Err(ClusterError::Membership(
                "the last voter cannot leave: the cluster would be gone".into(),
            ));
        }
        // The record first, while this leader surely still leads (it may be the one
        // leaving); a node never registered has none.
        match self.propose_op(Op::RemoveNode { node: id }).await {
            Ok(_) | Err(ClusterError::Refused(Refusal::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    fn clock_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    async fn add_member(&self, id: NodeId, addr: String) -> Result<(), ClusterError> {
        let raft_err = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| {
            ClusterError::Raft(e.to_string())
        };
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(raft_err)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(raft_err)?;
        Ok(())
    }

    /// If this node leads, asks the most caught-up other voter to stand for election
    /// and waits (up to `limit`) until a leader other than this node is known: the
    /// cluster has a leader before this node goes, instead of waiting out an election
    /// timeout after it. The vote of this node (whose own vote is older than its
    /// lease) and the candidate's make a majority of three; the others refuse while
    /// they hear from this leader. Returns the new leader.
    pub async fn hand_over_leadership(&self, limit: Duration) -> Option<NodeId> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut metrics = self.raft.metrics();
        let candidates: Vec<(NodeId, String)> = {
            let m = metrics.borrow();
            if m.current_leader != Some(self.id) {
                return None;
            }
            let membership = m.membership_config.membership();
            let matched = |id: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map_or(0, |l| l.index)
            };
            let mut voters: Vec<(u64, NodeId, String)> = membership
                .voter_ids()
                .filter(|id| *id != self.id)
                .filter_map(|id| {
                    let node = membership.get_node(&id)?;
                    Some((matched(&id), id, node.addr.clone()))
                })
                .collect();
            voters.sort_by_key(|v| std::cmp::Reverse(v.0));
            voters.into_iter().map(|(_, id, addr)| (id, addr)).collect()
        };
        for (candidate, addr) in candidates {
            // Its log must be as long as this node's or this node refuses its vote.
            let caught_up = tokio::time::timeout_at(
                deadline,
                metrics.wait_for(|m| {
                    let last = m.last_log_index.unwrap_or(0);
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&candidate).cloned().flatten())
                        .is_some_and(|l| l.index >= last)
                }),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if !caught_up {
                continue;
            }
            let asked = self
                .client
                .post(format!("{addr}/cluster/elect"))
                .bearer_auth(&*self.secret)
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if !matches!(&asked, Ok(r) if r.status().is_success()) {
                tracing::warn!(candidate, "could not ask a node to stand for election");
                continue;
            }
            let elected = tokio::time::timeout_at(
                deadline,
                metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != self.id)),
            )
            .await;
            if let Ok(Ok(m)) = elected {
                let leader = m.current_leader;
                drop(m);
                tracing::info!(leader, "leadership handed over");
                return leader;
            }
        }
        tracing::warn!(
            "leadership not handed over: the others elect a leader when this node is gone"
        );
        None
    }

    /// The routes other nodes call on this node's cluster listener.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/cluster/elect", post(elect_route))
            .route("/cluster/propose", post(propose_route))
            .route("/cluster/read-index", post(read_index_route))
            .route("/cluster/join", post(join_route))
            .route("/cluster/remove", post(remove_route))
            .route("/cluster/identity", axum::routing::get(identity_route))
            .with_state(self.clone())
    }
}

fn failure(status: StatusCode, e: ClusterError) -> Response {
    let refusal = match &e {
        ClusterError::Refused(r) => Some(r.clone()),
        _ => None,
    };
    let body = ForwardError {
        message: e.to_string(),
        refusal,
    };
    (status, Json(body)).into_response()
}

fn unauthorized(route: &str) -> Response {
    tracing::warn!(
        route,
        "cluster request refused: missing or wrong cluster secret"
    );
    (StatusCode::UNAUTHORIZED, "cluster secret required\n").into_response()
}

/// Only the leader answers forwarded calls: a follower would forward again.
fn not_leader(h: &ClusterHandle) -> Option<Response> {
    let leader = h.raft.metrics().borrow().current_leader;
    (leader != Some(h.id)).then(|| failure(StatusCode::SERVICE_UNAVAILABLE, ClusterError::NoLeader))
}

async fn propose_route(
    AxumState(h): AxumState<ClusterHandle>,
    headers: HeaderMap,
    Json(cmd): Json<Command>,
) -> Response {
    if !authorized(&headers, &h.secret) {
        return unauthorized("propose");
    }
    if let Some(r) = not_leader(&h) {
        return r;
    }
    // Every command committed is stamped with the leader's clock: the grace and start
    // limits the supervisor measures compare times from one clock, not a proposer's
    // (which may be 10 s off) against the leader's.
    let cmd = Command {
        at_ms: h.clock_ms(),
        ..cmd
    };
    // Within the forwarder's own wait: a leader that lost its majority answers instead
    // of holding the request.
    match tokio::time::timeout(PROPOSE_DEADLINE, h.raft.client_write(cmd)).await {
        Ok(Ok(r)) => Json::<Answer>(r.data).into_response(),
        Ok(Err(e)) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Raft(e.to_string()),
        ),
        Err(_) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Timeout(format!(
                "the cluster did not commit the change within {PROPOSE_DEADLINE:?}"
            )),
        ),
    }
}

/// A leader that is leaving asks this node to stand for election now.
async fn elect_route(AxumState(h): AxumState<ClusterHandle>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &h.secret) {
        return unauthorized("elect");
    }
    match h.raft.trigger().elect().await {
        Ok(()) => {
            tracing::info!("standing for election: the leader is leaving");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Raft(e.to_string()),
        ),
    }
}

async fn read_index_route(AxumState(h): AxumState<ClusterHandle>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &h.secret) {
        return unauthorized("read-index");
    }
    match h.raft.ensure_linearizable().await {
        Ok(log_id) => Json(log_id.map(|l| l.index)).into_response(),
        Err(e) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Raft(e.to_string()),
        ),
    }
}

/// A refusal (wrong secret, already in another cluster) will not change by asking
/// again; a member without a leader yet (5xx) will, and so will a join cut off by the
/// cluster listener's deadline (408: catching up a large state took longer) or one
/// turned away for now (429): the leader takes a node it already added again.
fn join_refusal_is_final(status: StatusCode) -> bool {
    status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

async fn join_route(
    AxumState(h): AxumState<ClusterHandle>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> Response {
    if !authorized(&headers, &h.secret) {
        return unauthorized("join");
    }
    // Any member accepts a join; a follower passes it to the leader.
    if h.raft.metrics().borrow().current_leader != Some(h.id) {
        return match h.forward::<JoinRequest, ()>("join", &req).await {
            Ok(()) => Json(()).into_response(),
            Err(e) => failure(StatusCode::BAD_GATEWAY, e),
        };
    }
    match h.add_member(req.id, req.addr).await {
        Ok(()) => Json(()).into_response(),
        Err(e) => failure(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn remove_route(
    AxumState(h): AxumState<ClusterHandle>,
    headers: HeaderMap,
    Json(req): Json<RemoveRequest>,
) -> Response {
    if !authorized(&headers, &h.secret) {
        return unauthorized("remove");
    }
    if let Some(r) = not_leader(&h) {
        return r;
    }
    match h.remove_node(req.id).await {
        Ok(()) => Json(()).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            failure(status, e)
        }
    }
}

async fn identity_route(AxumState(h): AxumState<ClusterHandle>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &h.secret) {
        return unauthorized("identity");
    }
    let initialized = h.raft.is_initialized().await.unwrap_or(true);
    Json(Identity {
        id: h.id,
        initialized,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_cut_off_or_turned_away_for_now_is_asked_again() {
        for again in [
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(!join_refusal_is_final(again), "{again}");
        }
        for fin in [
            StatusCode::UNAUTHORIZED,
            StatusCode::CONFLICT,
            StatusCode::BAD_REQUEST,
        ] {
            assert!(join_refusal_is_final(fin), "{fin}");
        }
    }

    #[test]
    fn a_flood_of_unknown_credentials_gets_only_the_budgeted_cluster_reads() {
        let start = tokio::time::Instant::now();
        let mut budget = LookupBudget::new(start);
        // 1000 wrong tokens at once: the burst is looked up, the rest are not.
        let granted = (0..1000).filter(|_| budget.take(start)).count();
        assert_eq!(granted, AUTH_LOOKUP_BURST as usize);
        // One second later: the rate's worth again, never more than the burst.
        let later = start + Duration::from_secs(1);
        let granted = (0..1000).filter(|_| budget.take(later)).count();
        assert_eq!(granted, AUTH_LOOKUPS_PER_S as usize);
        let much_later = later + Duration::from_secs(3600);
        let granted = (0..1000).filter(|_| budget.take(much_later)).count();
        assert_eq!(granted, AUTH_LOOKUP_BURST as usize);
    }
}
