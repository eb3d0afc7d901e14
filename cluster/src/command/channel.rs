//! Channels: created, changed and deleted by operators.

use serde::{Deserialize, Serialize};

use super::{Applied, Op, Refusal};
use crate::model::{
    Channel, Ingest, LlHlsSettings, NodeId, Placement, RetentionPolicy, SdiEncoding, Visibility,
};
use crate::state::State;

/// Applies a channel command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::CreateChannel {
            slug,
            title,
            visibility,
            ingest,
            ll_hls,
            recording,
            retention,
            placement,
            first_key,
            srt_passphrase,
        } => create(
            state,
            at,
            NewChannel {
                slug,
                title,
                visibility: *visibility,
                ingest,
                ll_hls: *ll_hls,
                recording: *recording,
                retention: *retention,
                placement: *placement,
                srt_passphrase: srt_passphrase.as_deref(),
                first_key: first_key.as_ref(),
            },
        ),
        Op::UpdateChannel { slug, patch } => update(state, slug, patch),
        Op::DeleteChannel { slug } => delete(state, at, slug),
        Op::PlaceChannel { channel, node } => place(state, at, channel, *node),
        other => unreachable!("not a channel command: {other:?}"),
    }
}

/// Fields an operator may change on an existing channel; `None` leaves one as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct ChannelPatch {
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
    pub ll_hls: Option<LlHlsSettings>,
    pub recording: Option<bool>,
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
    /// How a capture port bound to the channel is encoded.
    #[serde(default)]
    pub sdi_encoding: Option<SdiEncoding>,
    pub placement: Option<Placement>,
    /// SRT passphrase (10 to 79 characters); an empty string removes it.
    pub srt_passphrase: Option<String>,
    /// A new ingest (push or a pull source): a pulled channel is placed again.
    #[serde(default)]
    pub ingest: Option<Ingest>,
}

struct NewChannel<'a> {
    slug: &'a str,
    title: &'a str,
    visibility: Visibility,
    ingest: &'a Ingest,
    ll_hls: LlHlsSettings,
    recording: bool,
    retention: RetentionPolicy,
    placement: Placement,
    srt_passphrase: Option<&'a str>,
    first_key: Option<&'a super::FirstKey>,
}

/// A slug is a URL path segment: lower-case letters, digits and dashes.
pub fn validate_slug(slug: &str) -> Result<(), Refusal> {
    let ok = (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "name",
            "must be 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'",
        ))
    }
}

fn validate_title(title: &str) -> Result<(), Refusal> {
    if title.chars().count() > 200 || title.chars().any(char::is_control) {
        return Err(Refusal::invalid(
            "title",
            "must be at most 200 printable characters",
        ));
    }
    Ok(())
}

fn validate_ll_hls(s: &LlHlsSettings) -> Result<(), Refusal> {
    if !(50..=5_000).contains(&s.part_target_ms) {
        return Err(Refusal::invalid(
            "ll_hls.part_target_ms",
            "must be within 50..=5000",
        ));
    }
    if s.segment_target_ms < s.part_target_ms || s.segment_target_ms > 60_000 {
        return Err(Refusal::invalid(
            "ll_hls.segment_target_ms",
            "must be at least part_target_ms and at most 60000",
        ));
    }
    if !(3..=10_000).contains(&s.window_segments) {
        return Err(Refusal::invalid(
            "ll_hls.window_segments",
            "must be within 3..=10000",
        ));
    }
    let dvr_segments = (u64::from(s.dvr_window_s) * 1000).div_ceil(u64::from(s.segment_target_ms));
    if s.dvr_window_s > 21_600 || dvr_segments > u64::from(LlHlsSettings::MAX_WINDOW_SEGMENTS) {
        return Err(Refusal::invalid(
            "ll_hls.dvr_window_s",
            format!(
                "must be at most 21600 (6 h) and {} segments of segment_target_ms",
                LlHlsSettings::MAX_WINDOW_SEGMENTS
            ),
        ));
    }
    Ok(())
}

fn validate_sdi_encoding(e: &SdiEncoding) -> Result<(), Refusal> {
    if !(100..=100_000).contains(&e.video_bitrate_kbps) {
        return Err(Refusal::invalid(
            "sdi_encoding.video_bitrate_kbps",
            "must be within 100..=100000",
        ));
    }
    if !(250..=10_000).contains(&e.keyframe_interval_ms) {
        return Err(Refusal::invalid(
            "sdi_encoding.keyframe_interval_ms",
            "must be within 250..=10000",
        ));
    }
    Ok(())
}

fn validate_retention(r: &RetentionPolicy) -> Result<(), Refusal> {
    if r.max_age_s == Some(0) {
        return Err(Refusal::invalid(
            "retention.max_age_s",
            "must be at least 1 (null: no age limit)",
        ));
    }
    if r.max_bytes == Some(0) {
        return Err(Refusal::invalid(
            "retention.max_bytes",
            "must be at least 1 (null: no size limit)",
        ));
    }
    Ok(())
}

/// SRT's own bounds on a passphrase (libsrt refuses others).
fn validate_srt_passphrase(p: &str) -> Result<(), Refusal> {
    if !(10..=79).contains(&p.len()) {
        return Err(Refusal::invalid(
            "srt_passphrase",
            "must be 10 to 79 characters (empty removes it)",
        ));
    }
    Ok(())
}

fn validate_placement(state: &State, p: Placement) -> Result<(), Refusal> {
    match p {
        Placement::Pinned(node) if !state.nodes.contains_key(&node) => Err(Refusal::invalid(
            "placement.node",
            format!("no node {node}"),
        )),
        _ => Ok(()),
    }
}

fn validate_ingest(ingest: &Ingest) -> Result<(), Refusal> {
    let url_ok = |url: &str, schemes: &[&str]| {
        url.len() <= 1024
            && !url.chars().any(|c| c.is_whitespace() || c.is_control())
            && schemes
                .iter()
                .any(|s| url.starts_with(s) && url.len() > s.len())
    };
    match ingest {
        Ingest::Push => Ok(()),
        Ingest::SrtCaller { url } if !url_ok(url, &["srt://"]) => Err(Refusal::invalid(
            "ingest.url",
            "must be an srt:// URL without spaces",
        )),
        // What the pulling node will read: a URL it could not call is refused here.
        Ingest::SrtCaller { url } => crate::srt_source::SrtSource::parse(url)
            .map(|_| ())
            .map_err(|why| Refusal::invalid("ingest.url", why)),
        Ingest::HlsPull { url } if url_ok(url, &["http://", "https://"]) => Ok(()),
        Ingest::HlsPull { .. } => Err(Refusal::invalid(
            "ingest.url",
            "must be an http:// or https:// URL without spaces",
        )),
        // A capture port is discovered on hardware: bind one to the channel instead.
        Ingest::Sdi { .. } => Err(Refusal::invalid(
            "ingest",
            "an SDI channel is made by binding a capture port to it",
        )),
    }
}

fn create(state: &mut State, at: i64, new: NewChannel<'_>) -> Result<Applied, Refusal> {
    validate_slug(new.slug)?;
    validate_title(new.title)?;
    validate_ll_hls(&new.ll_hls)?;
    validate_retention(&new.retention)?;
    validate_placement(state, new.placement)?;
    validate_ingest(new.ingest)?;
    if let Some(p) = new.srt_passphrase {
        validate_srt_passphrase(p)?;
    }
    if state.channel_by_slug(new.slug).is_some() {
        return Err(Refusal::AlreadyExists {
            what: "channel".into(),
            name: new.slug.into(),
        });
    }
    if let Some(k) = new.first_key {
        super::key::check_new(state, &k.key_id, &k.verifier)?;
    }
    state.next_channel_id += 1;
    let id = state.next_channel_id;
    let last_generation = state.retired_slugs.remove(new.slug).unwrap_or(0);
    state.channels.insert(
        id,
        Channel {
            id,
            slug: new.slug.into(),
            title: new.title.into(),
            visibility: new.visibility,
            ingest: new.ingest.clone(),
            ll_hls: new.ll_hls,
            recording: new.recording,
            retention: new.retention,
            sdi_encoding: SdiEncoding::default(),
            placement: new.placement,
            created_ms: at,
            last_generation,
            srt_passphrase: new.srt_passphrase.map(String::from),
            puller: None,
            restarts: 0,
            last_restart_ms: None,
        },
    );
    if let Some(k) = new.first_key {
        super::key::insert(state, at, id, &k.key_id, &k.verifier);
    }
    Ok(Applied::ChannelCreated { id })
}

fn update(state: &mut State, slug: &str, patch: &ChannelPatch) -> Result<Applied, Refusal> {
    if let Some(t) = &patch.title {
        validate_title(t)?;
    }
    if let Some(s) = &patch.ll_hls {
        validate_ll_hls(s)?;
    }
    if let Some(p) = patch.placement {
        validate_placement(state, p)?;
    }
    if let Some(r) = &patch.retention {
        validate_retention(r)?;
    }
    if let Some(e) = &patch.sdi_encoding {
        validate_sdi_encoding(e)?;
    }
    if let Some(p) = patch.srt_passphrase.as_deref().filter(|p| !p.is_empty()) {
        validate_srt_passphrase(p)?;
    }
    if let Some(i) = &patch.ingest {
        validate_ingest(i)?;
    }
    let id = state
        .channel_by_slug(slug)
        .map(|c| c.id)
        .ok_or_else(|| Refusal::not_found("channel", slug))?;
    let Some(channel) = state.channels.get_mut(&id) else {
        return Err(Refusal::not_found("channel", slug));
    };
    // A capture port feeds it: its ingest changes by unbinding the port.
    if patch.ingest.is_some() && matches!(channel.ingest, Ingest::Sdi { .. }) {
        return Err(Refusal::IngestInUse {
            channel: slug.into(),
        });
    }
    if let Some(t) = &patch.title {
        channel.title = t.clone();
    }
    if let Some(v) = patch.visibility {
        channel.visibility = v;
    }
    if let Some(s) = patch.ll_hls {
        channel.ll_hls = s;
    }
    if let Some(r) = patch.recording {
        channel.recording = r;
    }
    if let Some(r) = patch.retention {
        channel.retention = r;
    }
    if let Some(e) = patch.sdi_encoding {
        channel.sdi_encoding = e;
    }
    if let Some(p) = patch.placement {
        channel.placement = p;
    }
    if let Some(p) = &patch.srt_passphrase {
        channel.srt_passphrase = (!p.is_empty()).then(|| p.clone());
    }
    if let Some(i) = patch.ingest.as_ref().filter(|i| **i != channel.ingest) {
        channel.ingest = i.clone();
        // The node pulling the old source stops; the supervisor places the new one.
        channel.puller = None;
    }
    Ok(Applied::Done)
}

/// The supervisor's placement of a pulled channel. Refused unless the channel is
/// pulled, the node holds a valid lease, the placement honours a pin, and the node
/// pulling it now (if any) is gone: two live nodes never pull one channel.
fn place(state: &mut State, at: i64, slug: &str, node: NodeId) -> Result<Applied, Refusal> {
    let channel = state
        .channel_by_slug(slug)
        .ok_or_else(|| Refusal::not_found("channel", slug))?;
    if !channel.ingest.is_pulled() {
        return Err(Refusal::invalid(
            "ingest",
            "only pulled channels are placed",
        ));
    }
    if !state.node_up(node) {
        return Err(Refusal::LeaseInvalid { node });
    }
    if let Placement::Pinned(pinned) = channel.placement {
        if pinned != node {
            return Err(Refusal::Pinned {
                channel: slug.into(),
                pinned,
            });
        }
    }
    let moved_from_dead = match channel.puller {
        Some(current) if current == node => return Ok(Applied::Done),
        // A pin moved elsewhere: the old node lets go (it reads the new puller).
        Some(current) if state.node_up(current) => {
            if channel.placement != Placement::Pinned(node) {
                return Err(Refusal::ChannelAlreadyLive {
                    channel: slug.into(),
                    origin: current,
                });
            }
            false
        }
        Some(_) => true,
        None => false,
    };
    let id = channel.id;
    let Some(channel) = state.channels.get_mut(&id) else {
        return Err(Refusal::not_found("channel", slug));
    };
    channel.puller = Some(node);
    if moved_from_dead {
        channel.restarts += 1;
        channel.last_restart_ms = Some(at);
    }
    Ok(Applied::Done)
}

/// A pushed channel with a publisher on it is refused (stop it first); a pulled one
/// ends its generation with it: the cluster is its publisher.
fn delete(state: &mut State, at: i64, slug: &str) -> Result<Applied, Refusal> {
    let (id, pulled) = state
        .channel_by_slug(slug)
        .map(|c| (c.id, c.ingest.is_pulled()))
        .ok_or_else(|| Refusal::not_found("channel", slug))?;
    if let Some(number) = state.active_generation(id).map(|g| g.number) {
        if !pulled {
            return Err(Refusal::ChannelBusy {
                channel: slug.into(),
            });
        }
        if let Some(g) = state.generation_mut(id, number) {
            g.state = crate::model::GenerationState::Ended;
            g.state_since_ms = at;
        }
    }
    if let Some(gone) = state.channels.remove(&id) {
        state.retired_slugs.insert(gone.slug, gone.last_generation);
    }
    // Its keys go with it: a key never verifies against a deleted channel.
    state.keys.retain(|_, k| k.channel != id);
    // A port bound to it is free again.
    for port in state.capture_ports.iter_mut() {
        if port.bound_channel == Some(id) {
            port.bound_channel = None;
        }
    }
    Ok(Applied::Done)
}
