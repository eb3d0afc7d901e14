//! Commands: what a proposer asks of the replicated state. One file per group, whose
//! `apply` takes that group's ops; each checks its invariants against the state, then
//! changes it, or refuses with a reason (and changes nothing).

mod admin;
mod channel;
mod endpoint;
mod generation;
mod key;
mod node;
mod playback;
mod port;

pub use channel::{validate_slug, ChannelPatch};
pub use endpoint::{MAX_CHANNELS_PER_SNAPSHOT, SNAPSHOT_HISTORY};
pub use playback::MAX_PLAYBACK_KEYS;
pub use port::DeviceSeen;

use serde::{Deserialize, Serialize};

use crate::model::{
    ChannelId, EndpointKind, EndpointSnapshot, HealthThresholds, Ingest, LlHlsSettings, MediaInfo,
    NodeId, NodeUrls, Placement, RecordingPiece, RetentionPolicy, Secret, Visibility,
};
use crate::state::State;

/// A command with the proposer's clock (the leader's, once committed: the leader
/// stamps what it commits): `apply` never reads one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub at_ms: i64,
    pub op: Op,
    /// The proposer's id for this request: a command proposed again with the same id
    /// (its answer was lost: a timeout, a leader change) is not applied twice; it
    /// answers what the first one did (`State::recent_requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

impl Command {
    /// `op` at `at_ms`, with a fresh random request id.
    pub fn new(at_ms: i64, op: Op) -> Self {
        Self {
            at_ms,
            op,
            request: Some(new_request_id()),
        }
    }
}

/// A random request id (64 bits: ids are remembered for the last
/// `RECENT_REQUESTS` commands only, so a collision is out of reach).
pub fn new_request_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system's random source failing is not something to go on without.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source failed");
    u64::from_le_bytes(bytes)
}

/// How many request ids the state remembers with their answers.
pub const RECENT_REQUESTS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    RegisterNode {
        node: NodeId,
        name: String,
        urls: NodeUrls,
        lease_ttl_ms: i64,
    },
    RenewLease {
        node: NodeId,
    },
    /// The leader saw no renewal from `node` for its lease's time to live, the last it
    /// saw being number `renewals`: refused if another has applied since.
    MarkNodeDown {
        node: NodeId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        renewals: Option<u64>,
    },
    /// The node left the cluster: its record and its own endpoints go; its generations
    /// wait for their publishers to reconnect elsewhere.
    RemoveNode {
        node: NodeId,
    },
    CreateAdminToken {
        token_id: String,
        name: String,
        verifier: String,
        #[serde(default)]
        read_only: bool,
    },
    RevokeAdminToken {
        token_id: String,
    },
    /// Creates or replaces an endpoint.
    PutEndpoint {
        name: String,
        kind: EndpointKind,
        node: Option<NodeId>,
        url: String,
        upstreams: Vec<String>,
        #[serde(default)]
        health: HealthThresholds,
    },
    DeleteEndpoint {
        name: String,
    },
    ReportSnapshot {
        endpoint: String,
        snapshot: EndpointSnapshot,
    },
    /// A node's hardware scan of capture devices.
    ReportCapturePorts {
        node: NodeId,
        devices: Vec<DeviceSeen>,
    },
    UpdateCapturePort {
        node: NodeId,
        device: u32,
        label: Option<String>,
        enabled: Option<bool>,
    },
    /// A node's view of one of its capture ports' input.
    ReportPortStatus {
        node: NodeId,
        device: u32,
        signal: bool,
        video_mode: Option<String>,
        error: Option<String>,
    },
    /// Binds a capture port to a channel, or unbinds it (`channel: None`).
    BindCapturePort {
        node: NodeId,
        device: u32,
        channel: Option<String>,
    },
    CreateChannel {
        slug: String,
        title: String,
        visibility: Visibility,
        ingest: Ingest,
        ll_hls: LlHlsSettings,
        recording: bool,
        #[serde(default)]
        retention: RetentionPolicy,
        placement: Placement,
        /// The channel's first stream key, created with it in the same command.
        #[serde(default)]
        first_key: Option<FirstKey>,
        #[serde(default)]
        srt_passphrase: Option<String>,
    },
    UpdateChannel {
        slug: String,
        patch: ChannelPatch,
    },
    DeleteChannel {
        slug: String,
    },
    /// The supervisor places a pulled channel on `node` (first start, or a move after
    /// its node's lease expired).
    PlaceChannel {
        channel: String,
        node: NodeId,
    },
    CreateKey {
        channel: String,
        key_id: String,
        verifier: String,
    },
    RevokeKey {
        channel: String,
        key_id: String,
    },
    /// A publisher was accepted on `node`: start a generation, or resume the one
    /// waiting for its publisher to come back.
    ClaimChannel {
        channel: String,
        node: NodeId,
    },
    /// From the origin: its publisher is sending. `epoch`: the claim it holds (0, in
    /// entries written before epochs, is not checked).
    MarkLive {
        channel: String,
        generation: u64,
        node: NodeId,
        #[serde(default)]
        epoch: u64,
    },
    ReportMedia {
        channel: String,
        generation: u64,
        node: NodeId,
        last_msn: u64,
        media: MediaInfo,
        #[serde(default)]
        epoch: u64,
    },
    /// The generation waits for its publisher. From its origin (`node`, `epoch`: its
    /// claim, checked), or without a node from a decision that the origin is gone.
    MarkReconnecting {
        channel: String,
        generation: u64,
        #[serde(default)]
        node: Option<NodeId>,
        #[serde(default)]
        epoch: u64,
    },
    EndGeneration {
        channel: String,
        generation: u64,
        failed: bool,
    },
    /// A node's progress on the recording piece it writes (sizes so far, closed, or
    /// failed with a reason).
    ReportRecording {
        channel: String,
        generation: u64,
        piece: RecordingPiece,
    },
    /// Deletes a finished recording (an operator, or retention).
    DeleteRecording {
        channel: String,
        generation: u64,
    },
    /// Removes an ended generation that nothing can be played from any more (no
    /// recording, or a deleted one, or its channel is gone) from the state (retention).
    /// By channel id: the channel may have been deleted.
    ForgetGeneration {
        channel: ChannelId,
        generation: u64,
    },
    /// A new key that signs playback tokens from now on (rotation).
    CreatePlaybackKey {
        key_id: String,
        secret: Secret,
    },
    /// The key verifies no token any more.
    RetirePlaybackKey {
        key_id: String,
    },
}

/// A stream key created together with its channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstKey {
    pub key_id: String,
    pub verifier: String,
}

/// What an applied command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "applied")]
pub enum Applied {
    Done,
    ChannelCreated {
        id: ChannelId,
    },
    /// A claim won: package as generation `number`, continuing after `last_msn`.
    Claimed {
        number: u64,
        resumed: bool,
        last_msn: Option<u64>,
        /// The generation's epoch under this claim.
        epoch: u64,
        /// Taken from an origin that had not let it go (its lease lapsed while the
        /// generation was live): its last segment may be one it had begun and not yet
        /// reported, so the claimer starts a segment further on.
        #[serde(default)]
        took_over: bool,
    },
}

/// Why a command changed nothing. The HTTP layer maps these to 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum Refusal {
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{what} {name:?} not found")]
    NotFound { what: String, name: String },
    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: String, name: String },
    #[error("channel {channel:?} is already live on node {origin}")]
    ChannelAlreadyLive { channel: String, origin: NodeId },
    #[error("node {node} has no valid lease")]
    LeaseInvalid { node: NodeId },
    #[error("node {node} renewed its lease: it is not down")]
    LeaseStillValid { node: NodeId },
    #[error("generation {generation} of {channel:?} is not active on node {node}")]
    NotTheOrigin {
        channel: String,
        generation: u64,
        node: NodeId,
    },
    #[error(
        "generation {generation} of {channel:?} was claimed again (epoch {current}): \
         epoch {epoch} no longer produces it"
    )]
    StaleEpoch {
        channel: String,
        generation: u64,
        epoch: u64,
        current: u64,
    },
    #[error("{what} would go back from {current} to {proposed}")]
    WentBack {
        what: String,
        current: u64,
        proposed: u64,
    },
    #[error("channel {channel:?} has an active generation: stop it first")]
    ChannelBusy { channel: String },
    #[error("this verifier already belongs to another key or token")]
    VerifierInUse,
    #[error("{what} {name:?} is in use by {by:?}")]
    InUse {
        what: String,
        name: String,
        by: String,
    },
    #[error("capture port {port} already feeds channel {channel:?}")]
    PortInUse { port: String, channel: String },
    #[error("channel {channel:?} already has another ingest: unbind it first")]
    IngestInUse { channel: String },
    #[error("channel {channel:?} is pulled by node {puller:?}, not published to node {node}")]
    NotThePuller {
        channel: String,
        node: NodeId,
        puller: Option<NodeId>,
    },
    #[error("channel {channel:?} is pinned to node {pinned}")]
    Pinned { channel: String, pinned: NodeId },
    #[error("channel {channel:?} is fed by a capture port on node {port_node}, not node {node}")]
    NotThePortsNode {
        channel: String,
        node: NodeId,
        port_node: NodeId,
    },
}

impl Refusal {
    /// The HTTP status an API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::InvalidField { .. } => 422,
            Refusal::NotFound { .. } => 404,
            _ => 409,
        }
    }

    pub(crate) fn not_found(what: &str, name: impl ToString) -> Self {
        Refusal::NotFound {
            what: what.into(),
            name: name.to_string(),
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Refusal::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Applies one command; on refusal the state is unchanged.
///
/// Each group's file applies its own ops. This match only routes them, so adding an
/// `Op` fails to compile until it is given a group.
pub fn apply(state: &mut State, cmd: &Command) -> Result<Applied, Refusal> {
    let Some(request) = cmd.request else {
        return apply_op(state, cmd);
    };
    if let Some((_, answer)) = state.recent_requests.iter().find(|(id, _)| *id == request) {
        return answer.clone();
    }
    let answer = apply_op(state, cmd);
    if state.recent_requests.len() >= RECENT_REQUESTS {
        state.recent_requests.pop_front();
    }
    state.recent_requests.push_back((request, answer.clone()));
    answer
}

fn apply_op(state: &mut State, cmd: &Command) -> Result<Applied, Refusal> {
    let at = cmd.at_ms;
    match &cmd.op {
        op @ (Op::RegisterNode { .. }
        | Op::RenewLease { .. }
        | Op::MarkNodeDown { .. }
        | Op::RemoveNode { .. }) => node::apply(state, at, op),
        op @ (Op::CreateAdminToken { .. } | Op::RevokeAdminToken { .. }) => {
            admin::apply(state, at, op)
        }
        op @ (Op::PutEndpoint { .. } | Op::DeleteEndpoint { .. } | Op::ReportSnapshot { .. }) => {
            endpoint::apply(state, at, op)
        }
        op @ (Op::ReportCapturePorts { .. }
        | Op::UpdateCapturePort { .. }
        | Op::BindCapturePort { .. }
        | Op::ReportPortStatus { .. }) => port::apply(state, at, op),
        op @ (Op::CreateChannel { .. }
        | Op::UpdateChannel { .. }
        | Op::DeleteChannel { .. }
        | Op::PlaceChannel { .. }) => channel::apply(state, at, op),
        op @ (Op::CreateKey { .. } | Op::RevokeKey { .. }) => key::apply(state, at, op),
        op @ (Op::ClaimChannel { .. }
        | Op::MarkLive { .. }
        | Op::ReportMedia { .. }
        | Op::MarkReconnecting { .. }
        | Op::EndGeneration { .. }
        | Op::ReportRecording { .. }
        | Op::DeleteRecording { .. }
        | Op::ForgetGeneration { .. }) => generation::apply(state, at, op),
        op @ (Op::CreatePlaybackKey { .. } | Op::RetirePlaybackKey { .. }) => {
            playback::apply(state, at, op)
        }
    }
}
