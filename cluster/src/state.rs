//! The state machine every replica holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{self, Applied, Command, Refusal};
use std::collections::VecDeque;

use crate::model::{
    AdminToken, CapturePort, Channel, ChannelId, Endpoint, EndpointSnapshot, Generation, Node,
    NodeId, PlaybackKey, RecordingStatus, StreamKey,
};

fn age_ms(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    pub nodes: BTreeMap<NodeId, Node>,
    pub channels: BTreeMap<ChannelId, Channel>,
    /// Stream keys by key id.
    pub keys: BTreeMap<String, StreamKey>,
    /// Generations by channel, then number.
    pub generations: BTreeMap<ChannelId, BTreeMap<u64, Generation>>,
    pub next_channel_id: ChannelId,
    /// Admin API tokens by token id.
    #[serde(default)]
    pub admin_tokens: BTreeMap<String, AdminToken>,
    /// Endpoints by name.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Recent snapshots by endpoint name, oldest first (bounded).
    #[serde(default)]
    pub endpoint_snapshots: BTreeMap<String, VecDeque<EndpointSnapshot>>,
    /// Capture ports ordered by (node, device), each pair at most once.
    #[serde(default)]
    pub capture_ports: Vec<CapturePort>,
    /// Keys that sign playback tokens, by key id.
    #[serde(default)]
    pub playback_keys: BTreeMap<String, PlaybackKey>,
    /// The last generation number a deleted channel used, by its name: a channel made
    /// again under that name numbers on from there, so its object URLs (cached for a
    /// year as immutable) never name an earlier channel's bytes.
    #[serde(default)]
    pub retired_slugs: BTreeMap<String, u64>,
    /// The last `command::RECENT_REQUESTS` request ids applied, oldest first, with
    /// what each answered: the same request proposed again answers the same.
    #[serde(default)]
    pub recent_requests: VecDeque<(u64, Result<Applied, Refusal>)>,
}

impl State {
    /// Applies a command. Deterministic: the same commands give the same state on every
    /// replica. A refused command leaves the state as it was.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, Refusal> {
        command::apply(self, cmd)
    }

    /// The key new playback tokens are signed with: the newest one not retired.
    pub fn signing_key(&self) -> Option<&PlaybackKey> {
        self.playback_keys
            .values()
            .filter(|k| k.retired_ms.is_none())
            .max_by(|a, b| (a.created_ms, &a.key_id).cmp(&(b.created_ms, &b.key_id)))
    }

    pub fn channel_by_slug(&self, slug: &str) -> Option<&Channel> {
        self.channels.values().find(|c| c.slug == slug)
    }

    /// The channel a stream key verifier belongs to (not revoked).
    pub fn channel_for_verifier(&self, verifier: &str) -> Option<&Channel> {
        self.keys
            .values()
            .find(|k| k.verifier == verifier && k.revoked_ms.is_none())
            .and_then(|k| self.channels.get(&k.channel))
    }

    /// The channel's generation that holds it (starting, live or reconnecting).
    pub fn active_generation(&self, channel: ChannelId) -> Option<&Generation> {
        self.generations
            .get(&channel)?
            .values()
            .find(|g| g.state.is_active())
    }

    pub fn generation(&self, channel: ChannelId, number: u64) -> Option<&Generation> {
        self.generations.get(&channel)?.get(&number)
    }

    pub(crate) fn generation_mut(
        &mut self,
        channel: ChannelId,
        number: u64,
    ) -> Option<&mut Generation> {
        self.generations.get_mut(&channel)?.get_mut(&number)
    }

    /// The finished recordings (generation numbers) of `channel` its retention policy
    /// deletes at `now_ms`: closed longer ago than `max_age_s`, then the oldest while
    /// the channel's recordings (those being written included) exceed `max_bytes`. A
    /// recording being written is never chosen.
    pub fn recordings_to_prune(&self, channel: ChannelId, now_ms: i64) -> Vec<u64> {
        let Some(policy) = self.channels.get(&channel).map(|c| c.retention) else {
            return Vec::new();
        };
        let kept: Vec<(u64, &crate::model::Recording)> = self
            .generations
            .get(&channel)
            .into_iter()
            .flat_map(|g| g.values())
            .filter_map(|g| g.recording.as_ref().map(|r| (g.number, r)))
            .filter(|(_, r)| r.status != RecordingStatus::Deleted)
            .collect();
        let mut total: u64 = kept.iter().map(|(_, r)| r.bytes).sum();
        let mut prune = Vec::new();
        // Oldest first (generation numbers only grow).
        for (number, r) in kept {
            let Some(closed) = r
                .closed_ms
                .filter(|_| r.status != RecordingStatus::Recording)
            else {
                continue;
            };
            let too_old = policy
                .max_age_s
                .is_some_and(|age| now_ms.saturating_sub(closed) > age_ms(age));
            let too_big = policy.max_bytes.is_some_and(|max| total > max);
            if too_old || too_big {
                total = total.saturating_sub(r.bytes);
                prune.push(number);
            }
        }
        prune
    }

    /// Whether `g` may leave the state: it ended, and nothing can be played from it
    /// (no recording, a deleted one, or its channel is gone); an existing channel's
    /// newest generation stays, for when it was last live.
    pub fn forgettable(&self, g: &Generation) -> bool {
        if g.state.is_active() {
            return false;
        }
        let Some(channel) = self.channels.get(&g.channel) else {
            return true;
        };
        g.number != channel.last_generation
            && g.recording
                .as_ref()
                .is_none_or(|r| r.status == RecordingStatus::Deleted)
    }

    /// The generations retention removes at `now_ms`: forgettable, and ended (or their
    /// recording deleted) longer than `keep_ms` ago, so a late viewer of one still
    /// finds which node holds its objects for as long as nodes keep them. Oldest
    /// first, at most `limit`.
    pub fn generations_to_forget(
        &self,
        now_ms: i64,
        keep_ms: i64,
        limit: usize,
    ) -> Vec<(ChannelId, u64)> {
        self.all_generations()
            .filter(|g| self.forgettable(g))
            .filter(|g| {
                let deleted = g.recording.as_ref().and_then(|r| r.closed_ms);
                let since = g.state_since_ms.max(deleted.unwrap_or(i64::MIN));
                now_ms.saturating_sub(since) > keep_ms
            })
            .map(|g| (g.channel, g.number))
            .take(limit)
            .collect()
    }

    pub fn all_generations(&self) -> impl Iterator<Item = &Generation> {
        self.generations.values().flat_map(|g| g.values())
    }

    /// The token a verifier belongs to (revoked ones included: the caller checks).
    pub fn admin_token_for_verifier(&self, verifier: &str) -> Option<&AdminToken> {
        self.admin_tokens.values().find(|t| t.verifier == verifier)
    }

    pub fn capture_port(&self, node: NodeId, device: u32) -> Option<&CapturePort> {
        self.capture_ports
            .iter()
            .find(|p| p.node == node && p.device == device)
    }

    pub(crate) fn port_mut(&mut self, node: NodeId, device: u32) -> Option<&mut CapturePort> {
        self.capture_ports
            .iter_mut()
            .find(|p| p.node == node && p.device == device)
    }

    /// A registered node the leader has not marked down: liveness is the leader's
    /// judgement (`supervisor::LeaseWatch`, by its own monotonic clock), never a
    /// comparison of wall clocks from different nodes.
    pub fn node_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| !n.down)
    }
}
