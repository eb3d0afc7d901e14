//! The replicated data model (DESIGN §3).

use serde::{Deserialize, Serialize};

pub type NodeId = u64;
pub type ChannelId = u64;

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct NodeUrls {
    pub http: String,
    pub cluster: String,
    /// What an encoder enters as its RTMP server: `rtmp://HOST:PORT/APP`.
    pub rtmp: String,
    /// `srt://HOST:PORT` (the stream id names the key).
    pub srt: String,
}

/// A node's liveness: renewed by heartbeat. The leader counts the renewals it sees
/// arrive by its own monotonic clock and marks a node down after `ttl_ms` without one
/// (`supervisor::LeaseWatch`); `heartbeat_ms` (the leader's wall clock at the last
/// renewal) is shown to operators, never compared across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub heartbeat_ms: i64,
    pub ttl_ms: i64,
    /// Renewals (and registrations) so far: what the leader watches change.
    #[serde(default)]
    pub renewals: u64,
}

impl Lease {
    /// Judged by one clock only: for a `MarkNodeDown` from before leases were watched
    /// by the leader (it carries no renewal count).
    pub fn valid_at(&self, now_ms: i64) -> bool {
        now_ms - self.heartbeat_ms <= self.ttl_ms
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Node {
    pub id: u64,
    pub name: String,
    pub urls: NodeUrls,
    pub lease: Lease,
    /// Set by the supervisor when the lease expired; cleared by the next renewal.
    pub down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Public,
    /// Playback needs a signed token.
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Ingest {
    /// An encoder pushes RTMP or SRT to any node.
    Push,
    /// The cluster pulls from an SRT listener elsewhere.
    SrtCaller { url: String },
    /// The cluster pulls an HLS stream.
    HlsPull { url: String },
    /// A capture port on one node.
    Sdi { node: u64, device: u32 },
}

impl Ingest {
    /// The cluster fetches the source itself, on a node the supervisor places it on.
    /// (HLS pull is modelled, not yet served: no node runs it.)
    pub fn is_pulled(&self) -> bool {
        matches!(self, Ingest::SrtCaller { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LlHlsSettings {
    #[schema(minimum = 50, maximum = 5000)]
    pub part_target_ms: u32,
    /// At least `part_target_ms`.
    #[schema(minimum = 50, maximum = 60000)]
    pub segment_target_ms: u32,
    #[schema(minimum = 3, maximum = 10000)]
    pub window_segments: u32,
    /// DVR: how far back (seconds) the live playlist reaches, so viewers can scrub
    /// back; 0 = off (`window_segments` alone). Segments behind the hot window are
    /// served from disk, and delta updates (`_HLS_skip`) keep reloads small.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 21600)]
    pub dvr_window_s: u32,
}

impl Default for LlHlsSettings {
    fn default() -> Self {
        Self {
            part_target_ms: 200,
            segment_target_ms: 2_000,
            window_segments: 15,
            dvr_window_s: 0,
        }
    }
}

impl LlHlsSettings {
    /// Most segments a DVR window may list.
    pub const MAX_WINDOW_SEGMENTS: u32 = 20_000;

    /// Whole segments the live playlist lists: the window, or the DVR window if longer.
    pub fn playlist_segments(&self) -> u32 {
        let dvr = (u64::from(self.dvr_window_s) * 1000)
            .div_ceil(u64::from(self.segment_target_ms.max(1)));
        let dvr = u32::try_from(dvr).unwrap_or(u32::MAX);
        self.window_segments
            .max(dvr)
            .min(Self::MAX_WINDOW_SEGMENTS.max(self.window_segments))
    }
}

/// x264's speed presets an SDI capture may use (faster ones cost less CPU per stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncoderPreset {
    Ultrafast,
    Superfast,
    #[default]
    Veryfast,
    Faster,
    Fast,
    Medium,
}

impl EncoderPreset {
    /// The name x264 (and GStreamer's x264enc `speed-preset`) uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
        }
    }
}

/// How an SDI channel's capture is encoded: H.264 (x264, zero-latency tuning) and AAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SdiEncoding {
    #[schema(minimum = 100, maximum = 100000)]
    pub video_bitrate_kbps: u32,
    pub preset: EncoderPreset,
    /// A keyframe every this often: segments start on one (2 s: 2 s segments).
    #[schema(minimum = 250, maximum = 10000)]
    pub keyframe_interval_ms: u32,
}

impl Default for SdiEncoding {
    fn default() -> Self {
        Self {
            video_bitrate_kbps: 6_000,
            preset: EncoderPreset::Veryfast,
            keyframe_interval_ms: 2_000,
        }
    }
}

/// How long a channel's finished recordings are kept; `None`: no limit of that kind.
/// A recording being written is never pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetentionPolicy {
    /// Recordings finished longer ago than this are deleted.
    pub max_age_s: Option<u64>,
    /// The oldest finished recordings are deleted while the channel's exceed this.
    pub max_bytes: Option<u64>,
}

impl Default for RetentionPolicy {
    /// Seven days: a show can be fetched the week after; a byte limit depends on the
    /// disk, so none is guessed.
    fn default() -> Self {
        Self {
            max_age_s: Some(7 * 24 * 3600),
            max_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "node")]
pub enum Placement {
    #[default]
    Any,
    Pinned(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Channel {
    pub id: u64,
    /// URL name: `[a-z0-9][a-z0-9-]{0,62}`.
    pub slug: String,
    pub title: String,
    pub visibility: Visibility,
    pub ingest: Ingest,
    pub ll_hls: LlHlsSettings,
    pub recording: bool,
    /// How long finished recordings are kept.
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// How a capture port bound to it is encoded.
    #[serde(default)]
    pub sdi_encoding: SdiEncoding,
    pub placement: Placement,
    pub created_ms: i64,
    /// Numbers of this channel's generations never go back, even across deletes.
    pub last_generation: u64,
    /// SRT publishers must encrypt with this passphrase (AES); never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<String>,
    /// A pulled channel's node: the one that connects to the source (set by the
    /// supervisor's placement, never by hand).
    #[serde(default)]
    pub puller: Option<u64>,
    /// How often the supervisor moved the pull to another node because its node's
    /// lease expired, and when it last did.
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub last_restart_ms: Option<i64>,
}

/// A stream key: only a verifier is replicated (SHA-256 of the random key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamKey {
    pub key_id: String,
    pub channel: u64,
    /// Lower-case hex SHA-256 of the key.
    pub verifier: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A secret carried in a command: serialized as it is (the log and the state are the
/// node's own, 0600 files), shown as `<redacted>` by `Debug`, so no log line has it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A key that signs playback tokens for private channels. The newest key not retired
/// signs; every key not retired verifies, so tokens survive a rotation until their key is
/// retired. Never shown by the API or in logs after it is made.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackKey {
    pub key_id: String,
    /// 256 random bits, lower-case hex.
    pub secret: String,
    pub created_ms: i64,
    pub retired_ms: Option<i64>,
}

impl std::fmt::Debug for PlaybackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackKey")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .field("retired_ms", &self.retired_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct MediaInfo {
    pub codecs: Vec<String>,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
    /// Set while the origin cannot write the spool (full disk, permissions): live
    /// serving from memory goes on, the archive is incomplete.
    #[serde(default)]
    pub spool_error: Option<String>,
    /// Where the generation's output timeline ended at the report (µs): an origin that
    /// resumes the generation continues from there, so its times never go back.
    #[serde(default)]
    pub timeline_end_us: Option<i64>,
    /// The discontinuity number players were given for segment `last_msn`, and the
    /// first segment that had it: an origin that resumes the generation lists those
    /// segments again (as gaps) under the same number, and continues after it.
    #[serde(default)]
    pub discontinuity: Option<DiscontinuityRun>,
    /// The playlist parameters the generation's first report gave: kept by the state
    /// whatever later reports say, and continued by every origin that resumes it.
    #[serde(default)]
    pub playlist: Option<PlaylistParams>,
    /// Where segment `last_msn` began on the output timeline (µs), and on the wall
    /// clock (ms since the Unix epoch): a resuming origin lists the segments it cannot
    /// have (as gaps) where players had them, and continues its timeline after them.
    #[serde(default)]
    pub segment_start_us: Option<i64>,
    #[serde(default)]
    pub segment_date_ms: Option<i64>,
    /// The init segment segment `last_msn` named.
    #[serde(default)]
    pub segment_init_index: Option<u32>,
    /// How long the whole segments up to `last_msn` were (µs; up to 16, the latest
    /// last, which is segment `recent_last_msn`: `last_msn` once it is whole, else the
    /// one before).
    #[serde(default)]
    pub recent_durations_us: Vec<u64>,
    #[serde(default)]
    pub recent_last_msn: Option<u64>,
    /// The longest time between two keyframes of the current publisher (ms): a
    /// player can only start on one.
    #[serde(default)]
    pub keyframe_interval_ms: Option<u32>,
}

/// Above this a publisher's keyframe interval is worth telling the operator about.
pub const KEYFRAME_WARN_MS: u32 = 4_000;

/// What an operator is told of a publisher's keyframe interval when it is long: a
/// player joins on a keyframe, so viewers start up to that far behind the live edge.
pub fn keyframe_warning(interval_ms: u32) -> Option<String> {
    (interval_ms > KEYFRAME_WARN_MS).then(|| {
        format!(
            "keyframe interval {:.1} s: viewers join up to {} s behind; set the encoder's \
             keyframe interval to 1-2 s",
            f64::from(interval_ms) / 1000.0,
            interval_ms / 1000
        )
    })
}

/// What a generation's media playlist must keep for as long as the generation lives
/// (the channel's settings may change meanwhile; they apply to the next generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaylistParams {
    /// Segment target (EXT-X-TARGETDURATION follows from it).
    pub segment_target_ms: u32,
    /// EXT-X-PART-INF:PART-TARGET as advertised (the configured target fitted to the
    /// frame rate).
    pub part_target_ms: u32,
    /// Segments in the live window.
    pub window_segments: u32,
}

/// A run of segments under one discontinuity number (`EXT-X-DISCONTINUITY-SEQUENCE`
/// plus the `EXT-X-DISCONTINUITY` tags before them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiscontinuityRun {
    /// The segment this run was reported with (the report's `last_msn`).
    pub at_msn: u64,
    pub number: u64,
    pub from_msn: u64,
}

/// One live session of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Generation {
    pub channel: u64,
    pub number: u64,
    pub origin: u64,
    pub state: GenerationState,
    pub started_ms: i64,
    pub last_media_ms: i64,
    /// When the state last changed (reconnect grace counts from here).
    pub state_since_ms: i64,
    pub media: MediaInfo,
    /// Last media sequence number reported: a continuing origin starts after it.
    pub last_msn: Option<u64>,
    /// The generation's recording, when its channel records.
    #[serde(default)]
    pub recording: Option<Recording>,
    /// Which claim of the generation is current: 1 for the first, one more for every
    /// claim that resumes it (on another node, or on the same one again). An origin's
    /// state changes and media reports carry the epoch it claimed; older epochs are
    /// refused, so a paused or cut-off origin that wakes up cannot change a generation
    /// another claim has taken over. 0 in state written before epochs existed.
    #[serde(default)]
    pub epoch: u64,
    /// Waiting because its origin was marked down or removed, not because the origin
    /// said its publisher left: the origin may have published parts past `last_msn`,
    /// so the next claim takes over (resumes a segment further on).
    #[serde(default)]
    pub abandoned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Segments are still being added (the generation is active).
    Recording,
    /// The generation ended and every piece was closed: playable as VOD.
    Finalized,
    /// A write failed (or a node holding a piece went down): `reason` says why. What
    /// was written stays playable.
    Failed,
    /// Deleted by an operator or by retention: every node removes its files.
    Deleted,
}

/// The part of a recording one origin node wrote: a generation that moved to another
/// node (its publisher came back there) has one piece per stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordingPiece {
    pub node: NodeId,
    pub first_msn: u64,
    /// The last whole segment written (`None`: none yet).
    pub last_msn: Option<u64>,
    pub first_init: u32,
    pub last_init: u32,
    pub segments: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Closed by its node: no more segments come.
    pub finished: bool,
    /// Why writing failed, if it did.
    pub error: Option<String>,
}

impl RecordingPiece {
    /// Whether segment `msn` is in this piece.
    pub fn holds_segment(&self, msn: u64) -> bool {
        msn >= self.first_msn && self.last_msn.is_some_and(|l| msn <= l)
    }

    pub fn holds_init(&self, index: u32) -> bool {
        (self.first_init..=self.last_init).contains(&index)
    }
}

/// The archive of one generation, kept past the live window (DESIGN §3 Generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recording {
    pub status: RecordingStatus,
    /// Why it failed.
    pub reason: Option<String>,
    pub duration_ms: u64,
    pub bytes: u64,
    pub segments: u64,
    /// In media sequence order.
    pub pieces: Vec<RecordingPiece>,
    /// When it was finalized, failed for good, or deleted.
    pub closed_ms: Option<i64>,
}

/// An admin API token: only a verifier (SHA-256 of the token) is replicated, so a token
/// made on one node is accepted by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdminToken {
    pub token_id: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub verifier: String,
    /// Monitoring tokens may read but not change anything.
    #[serde(default)]
    pub read_only: bool,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// A cluster node's spool, for the channels it ingests.
    Origin,
    /// A cluster node or an external Sluice edge serving by pull-through.
    Edge,
    /// An origin outside the cluster (another HLS server).
    ExternalOrigin,
    /// An edge outside the cluster (a CDN or a cache Sluice does not run).
    ExternalEdge,
}

/// When an endpoint's snapshot reads as degraded or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthThresholds {
    /// A playlist older than this is degraded.
    pub max_playlist_age_ms: u64,
    /// No snapshot for this long reads as stale.
    pub stale_after_ms: u64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            max_playlist_age_ms: 6_000,
            stale_after_ms: 15_000,
        }
    }
}

/// The replicated form of a secret (a stream key, an admin token): lower-case hex
/// SHA-256. The state keeps only this; a presented secret is hashed and looked up.
pub fn verifier_of(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A place viewers or edges fetch from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// Name: `[a-z0-9][a-z0-9-]{0,62}`.
    pub name: String,
    pub kind: EndpointKind,
    /// The cluster node it runs on, if it is one.
    pub node: Option<u64>,
    /// Base HTTP URL viewers or child edges use.
    pub url: String,
    /// Parents it pulls from, in failover order (endpoint names).
    pub upstreams: Vec<String>,
    pub health: HealthThresholds,
    pub created_ms: i64,
}

impl Endpoint {
    /// How its last snapshot reads at `now_ms`: `stale` once it is older than the
    /// endpoint allows, or when there is none.
    pub fn health_at(&self, last: Option<&EndpointSnapshot>, now_ms: i64) -> Health {
        match last {
            Some(s) if now_ms - s.at_ms <= self.health.stale_after_ms as i64 => s.health,
            _ => Health::Stale,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Degraded,
    Stale,
}

/// An endpoint's figures at one time; a short history is kept per endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointSnapshot {
    pub at_ms: i64,
    pub viewers: u64,
    pub egress_bps: u64,
    pub ingress_bps: u64,
    /// Age of the newest playlist it served, if any.
    pub playlist_age_ms: Option<u64>,
    /// Share of requests answered from its cache (edges), 0..=1.
    pub hit_ratio: Option<f64>,
    pub health: Health,
    /// Viewers by channel name (the channels with any), summed into `viewers`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub channel_viewers: std::collections::BTreeMap<String, u64>,
}

// Snapshots hold finite ratios only (validated in `apply`), so equality is total.
impl Eq for EndpointSnapshot {}

/// A DeckLink input on a node: discovered from the hardware, never created or deleted
/// by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CapturePort {
    pub node: u64,
    pub device: u32,
    /// What the hardware calls it.
    pub model: String,
    pub label: String,
    pub enabled: bool,
    pub bound_channel: Option<u64>,
    /// False once the device is no longer found on its node (kept, not deleted).
    pub present: bool,
    pub first_seen_ms: i64,
    /// Whether its node sees a signal on it (reported while it is enabled).
    #[serde(default)]
    pub signal: bool,
    /// The video mode detected on the input (e.g. `1280x720@30`), while it has a signal.
    #[serde(default)]
    pub video_mode: Option<String>,
    /// Why its capture pipeline is not running (no card, driver missing, input lost).
    #[serde(default)]
    pub error: Option<String>,
}
