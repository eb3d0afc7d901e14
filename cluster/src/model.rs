//! The replicated data model (DESIGN §3).

use serde::{Deserialize, Serialize};

pub type NodeId = u64;
pub type ChannelId = u64;

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeUrls {
    pub http: String,
    pub cluster: String,
    pub rtmp: String,
    pub srt: String,
}

/// A node's liveness: renewed by heartbeat, expired = down. Created with its heartbeat
/// set to its creation time: an empty heartbeat would read as infinitely old.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub heartbeat_ms: i64,
    pub ttl_ms: i64,
}

impl Lease {
    pub fn valid_at(&self, now_ms: i64) -> bool {
        now_ms - self.heartbeat_ms <= self.ttl_ms
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub urls: NodeUrls,
    pub lease: Lease,
    /// Set by the supervisor when the lease expired; cleared by the next renewal.
    pub down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Public,
    /// Playback needs a signed token.
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Ingest {
    /// An encoder pushes RTMP or SRT to any node.
    Push,
    /// The cluster pulls from an SRT listener elsewhere.
    SrtCaller { url: String },
    /// The cluster pulls an HLS stream.
    HlsPull { url: String },
    /// A capture port on one node.
    Sdi { node: NodeId, device: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlHlsSettings {
    pub part_target_ms: u32,
    pub segment_target_ms: u32,
    pub window_segments: u32,
}

impl Default for LlHlsSettings {
    fn default() -> Self {
        Self {
            part_target_ms: 200,
            segment_target_ms: 2_000,
            window_segments: 15,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind", content = "node")]
pub enum Placement {
    #[default]
    Any,
    Pinned(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    /// URL name: `[a-z0-9][a-z0-9-]{0,62}`.
    pub slug: String,
    pub title: String,
    pub visibility: Visibility,
    pub ingest: Ingest,
    pub ll_hls: LlHlsSettings,
    pub recording: bool,
    pub placement: Placement,
    pub created_ms: i64,
    /// Numbers of this channel's generations never go back, even across deletes.
    pub last_generation: u64,
}

/// A stream key: only a verifier is replicated (SHA-256 of the random key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamKey {
    pub key_id: String,
    pub channel: ChannelId,
    /// Lower-case hex SHA-256 of the key.
    pub verifier: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    Starting,
    Live,
    Reconnecting,
    Ended,
    Failed,
}

impl GenerationState {
    /// Holds the channel: at most one such generation per channel.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Live | Self::Reconnecting)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MediaInfo {
    pub codecs: Vec<String>,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
    /// Set while the origin cannot write the spool (full disk, permissions): live
    /// serving from memory goes on, the archive is incomplete.
    #[serde(default)]
    pub spool_error: Option<String>,
}

/// One live session of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub channel: ChannelId,
    pub number: u64,
    pub origin: NodeId,
    pub state: GenerationState,
    pub started_ms: i64,
    pub last_media_ms: i64,
    /// When the state last changed (reconnect grace counts from here).
    pub state_since_ms: i64,
    pub media: MediaInfo,
    /// Last media sequence number reported: a continuing origin starts after it.
    pub last_msn: Option<u64>,
}
