//! The viewer interface (DESIGN §5): playlists with blocking reload and delta updates,
//! generation-scoped objects, preload-hinted parts that block until complete, and the
//! Cache-Control table.
//!
//! ```text
//! GET /hls/{channel}/index.m3u8                                  multivariant
//! GET /hls/{channel}/{rendition}/index.m3u8[?_HLS_msn&_HLS_part&_HLS_skip]
//! GET /hls/{channel}/{rendition}/{generation}/{init.mp4|msn.m4s|msn.part.m4s}
//! ```
//!
//! A held request waits on the channel's watch: one wake-up per new part for every
//! waiter, never a poll each.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sluice_cluster::command::validate_slug;
use sluice_media::playlist::blocking::Directives;
use sluice_media::playlist::multivariant;
use sluice_media::playlist::names::{self, ObjectName};
use sluice_media::playlist::Skip;

use sluice_cluster::handle::ClusterHandle;

use crate::edge::{Edge, Upstream, EDGE_HEADER, ORIGIN_PULL_HEADER};
use crate::origin::spool::{read_from_disk, PlaylistAnswer};
use crate::origin::{ChannelOrigin, Origins, RENDITION};

pub(super) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
pub(super) const IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub(super) const NO_STORE: &str = "no-store";
/// TARGETDURATION assumed before a generation's playlist exists (2 s segments).
const DEFAULT_TD_S: u32 = 3;
/// How often a playlist request held for an unreachable origin looks again.
const ORIGIN_RETRY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub(crate) struct HlsState {
    pub(crate) origins: Arc<Origins>,
    pub(crate) edge: Arc<Edge>,
    pub(crate) handle: ClusterHandle,
    pub(crate) limits: Arc<crate::limits::Limits>,
    /// Verifies other nodes' signed pull-through requests (not limited per address).
    pub(crate) cluster_secret: Arc<str>,
}

/// Whether another node or a trusted edge signed this request with the cluster secret.
fn signed_upstream(s: &HlsState, parts: &Parts) -> bool {
    parts
        .headers
        .get(sluice_cluster::playback::UPSTREAM_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| {
            sluice_cluster::playback::upstream_authorized(
                &s.cluster_secret,
                sig,
                crate::support::now_ms() / 1000,
                parts.uri.path(),
            )
        })
}

fn too_many(why: &str) -> Response {
    let mut r = respond(
        StatusCode::TOO_MANY_REQUESTS,
        NO_STORE,
        "text/plain; charset=utf-8",
        format!("{why}\n"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Where a channel's bytes come from, as this replica of the state says.
enum Source {
    /// This node is the origin (or nobody is known to be).
    Local,
    /// Another node is: pull through this node's parents, then the origin's HTTP URL.
    Remote(Vec<Upstream>),
}

/// The source of a generation (`None`: the channel's active one, else its latest).
/// A request whose sender resolved this node as the origin is always answered locally,
/// so two nodes with different views of the state cannot send it back and forth.
fn source(s: &HlsState, parts: &Parts, channel: &str, generation: Option<u64>) -> Source {
    if parts.headers.contains_key(ORIGIN_PULL_HEADER) {
        return Source::Local;
    }
    let me = s.handle.id();
    s.handle.read_local(|st| {
        let Some(c) = st.channel_by_slug(channel) else {
            return Source::Local;
        };
        let g = match generation {
            Some(n) => st.generation(c.id, n),
            None => st.active_generation(c.id).or_else(|| {
                st.generations
                    .get(&c.id)
                    .and_then(|gens| gens.values().next_back())
            }),
        };
        let Some(origin) =
            g.and_then(|g| (g.origin != me).then(|| st.nodes.get(&g.origin)).flatten())
        else {
            return Source::Local;
        };
        // This node's configured parents (its endpoint's upstream links), then the origin.
        let mut chain: Vec<Upstream> = st
            .endpoints
            .values()
            .find(|e| e.node == Some(me))
            .map(|mine| {
                mine.upstreams
                    .iter()
                    .filter_map(|name| st.endpoints.get(name))
                    .filter(|parent| parent.node != Some(me))
                    .map(|parent| Upstream::parent(parent.url.clone()))
                    .collect()
            })
            .unwrap_or_default();
        chain.retain(|u| u.url != origin.urls.http);
        chain.push(Upstream {
            url: origin.urls.http.clone(),
            origin: true,
        });
        Source::Remote(chain)
    })
}

/// The edges a pull-through request passed, as its sender listed them.
fn via(parts: &Parts) -> Option<&str> {
    parts.headers.get(EDGE_HEADER).and_then(|v| v.to_str().ok())
}

/// What a media playlist request is pulled through as: its path and only the HLS
/// directives, in one order. Other query parameters (a cache buster, a player's own)
/// change nothing at the origin, so they must not split the single flight or the cache.
pub(crate) fn playlist_key(path: &str, d: &Directives) -> String {
    let mut q = Vec::new();
    if let Some(m) = d.msn {
        q.push(format!("_HLS_msn={m}"));
    }
    if let Some(p) = d.part {
        q.push(format!("_HLS_part={p}"));
    }
    match d.skip {
        Skip::No => {}
        Skip::Yes => q.push("_HLS_skip=YES".into()),
        Skip::V2 => q.push("_HLS_skip=v2".into()),
    }
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

pub(crate) fn router(state: HlsState) -> Router {
    super::ViewerRoutes {
        multivariant: get(multivariant_playlist),
        media_playlist: get(media_playlist),
        object: get(object),
        vod_file: get(super::vod::download),
        vod_object: get(super::vod::object),
    }
    .router()
    .with_state(state)
}

pub(super) fn respond(
    status: StatusCode,
    cache: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> Response {
    let mut r = (status, body.into()).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn not_found(what: &str) -> Response {
    respond(
        StatusCode::NOT_FOUND,
        NO_STORE,
        "text/plain; charset=utf-8",
        format!("{what} not found\n"),
    )
}

/// One viewer session: the client's address and user agent.
fn session_of(parts: &Parts) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    match forwarded {
        Some(f) => f.hash(&mut h),
        None => parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .hash(&mut h),
    }
    parts
        .headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .hash(&mut h);
    h.finish()
}

/// Whether this replica of the state names this node the origin of `channel`'s active
/// generation: a node that has just restarted still reads what it held before it
/// stopped, until the cluster's newer state reaches it (or it releases the channel).
fn active_here(s: &HlsState, channel: &str) -> bool {
    let me = s.handle.id();
    s.handle.read_local(|st| {
        st.channel_by_slug(channel)
            .and_then(|c| st.active_generation(c.id))
            .is_some_and(|g| g.origin == me)
    })
}

/// Where a playlist request is answered from: pulled through (`Err`, the response), or
/// this node's packaging loop of the channel. While the state names this node the
/// origin of an active generation it does not package (it has just restarted), the
/// request is held until that changes, as long as a blocking request is: viewers see a
/// stall while the stream moves, not a 404 that players give up on.
async fn local_or_pulled(
    s: &HlsState,
    parts: &Parts,
    channel: &str,
    key: &str,
) -> Result<Option<Arc<ChannelOrigin>>, Response> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(DEFAULT_TD_S) * 3);
    loop {
        if let Some(pulled) = pull_playlist(s, parts, channel, key).await {
            return Err(pulled);
        }
        if let Some(origin) = s.origins.get(channel) {
            return Ok(Some(origin));
        }
        if parts.headers.contains_key(ORIGIN_PULL_HEADER)
            || !active_here(s, channel)
            || tokio::time::Instant::now() + ORIGIN_RETRY >= deadline
        {
            return Ok(None);
        }
        tokio::time::sleep(ORIGIN_RETRY).await;
    }
}

async fn multivariant_playlist(
    State(s): State<HlsState>,
    Path(channel): Path<String>,
    parts: Parts,
) -> Response {
    if parts.headers.contains_key(EDGE_HEADER) {
        s.origins.metrics().pulled(true);
    }
    // The origin ignores any query here.
    let origin = match local_or_pulled(&s, &parts, &channel, parts.uri.path()).await {
        Err(pulled) => return pulled,
        Ok(origin) => origin,
    };
    let Some(origin) = origin else {
        return unavailable(&s, &channel, "channel");
    };
    // A channel going live has no variant until its first segment: the request is
    // held for it, as long as a blocking playlist request would be.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(DEFAULT_TD_S) * 3);
    let mut changes = origin.subscribe();
    let variant = loop {
        if let Some(v) = origin.read(|sp| sp.variant.clone()) {
            break v;
        }
        if !matches!(
            tokio::time::timeout_at(deadline, changes.changed()).await,
            Ok(Ok(()))
        ) {
            return unavailable(&s, &channel, "stream (nothing packaged yet)");
        }
    };
    respond(
        StatusCode::OK,
        "public, max-age=1",
        PLAYLIST_TYPE,
        multivariant::render(&[variant]),
    )
}

/// Whether `channel` exists and has a generation that is starting, live or
/// reconnecting, in this node's replica of the state.
fn goes_live(s: &HlsState, channel: &str) -> bool {
    s.handle.read_local(|st| {
        st.channel_by_slug(channel)
            .and_then(|c| st.active_generation(c.id))
            .is_some()
    })
}

/// The answer for a playlist that cannot be given yet. While its channel is starting,
/// live or reconnecting that is 503 with a short cache lifetime: players retry a 5xx
/// and give up on a 4xx, and the stream is coming. Otherwise 404.
fn unavailable(s: &HlsState, channel: &str, what: &str) -> Response {
    if !goes_live(s, channel) {
        return not_found(what);
    }
    service_unavailable(&format!(
        "{what}: the channel is going live or moving to another node; ask again"
    ))
}

/// 503, kept a second, and asked again after one.
fn service_unavailable(why: &str) -> Response {
    let mut r = respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "public, max-age=1",
        "text/plain; charset=utf-8",
        format!("{why}\n"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn target_duration(origin: &ChannelOrigin) -> u32 {
    origin.read(|s| {
        s.playlist()
            .map_or(DEFAULT_TD_S, |p| p.settings().target_duration_s)
    })
}

/// `public, max-age=⌊TD/2⌋` for a plain reload (no-cache under 2 s).
fn plain_playlist_cache(td: u32) -> String {
    if td >= 2 {
        format!("public, max-age={}", td / 2)
    } else {
        "no-cache".into()
    }
}

async fn media_playlist(
    State(s): State<HlsState>,
    Path((channel, rendition)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Response {
    let directives = match Directives::parse(query.as_deref().unwrap_or("")) {
        Ok(d) => d,
        Err(e) => return bad_request(&e.to_string()),
    };
    count_playlist_request(&s, &parts, &channel, &directives);
    // Held requests are limited per address (other nodes' signed pulls are not: one
    // of them stands for many viewers).
    let _held = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(peer) if directives.is_blocking() && !signed_upstream(&s, &parts) => {
            match s.limits.blocking_request(peer.0.ip()) {
                Some(held) => Some(held),
                None => return too_many("too many blocking playlist requests from this address"),
            }
        }
        _ => None,
    };
    let key = playlist_key(parts.uri.path(), &directives);
    let origin = match local_or_pulled(&s, &parts, &channel, &key).await {
        Err(pulled) => return pulled,
        Ok(origin) => origin,
    };
    if rendition != RENDITION {
        return not_found("playlist");
    }
    let Some(origin) = origin else {
        return unavailable(&s, &channel, "playlist");
    };
    local_playlist(&s, &parts, &channel, &key, &origin, &directives).await
}

fn bad_request(why: &str) -> Response {
    respond(
        StatusCode::BAD_REQUEST,
        "public, max-age=1",
        "text/plain; charset=utf-8",
        format!("{why}\n"),
    )
}

/// Counts a media playlist request, and the viewer behind it (not another node's pull).
fn count_playlist_request(s: &HlsState, parts: &Parts, channel: &str, directives: &Directives) {
    let metrics = s.origins.metrics();
    if parts.headers.contains_key(EDGE_HEADER) {
        metrics.pulled(true);
        return;
    }
    metrics.playlist_request(directives.is_blocking());
    // Only a channel that exists gets a series: a name is the viewer's to choose.
    if s.handle
        .read_local(|st| st.channel_by_slug(channel).is_some())
    {
        metrics.viewer(channel, session_of(parts), Instant::now());
    }
}

/// A playlist this node packages: at once, or held until what the request asks for
/// exists (at most 3 target durations), or pulled from where the generation moved.
async fn local_playlist(
    s: &HlsState,
    parts: &Parts,
    channel: &str,
    key: &str,
    origin: &ChannelOrigin,
    directives: &Directives,
) -> Response {
    let td = target_duration(origin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(td) * 3);
    let mut changes = origin.subscribe();
    let mut waiting_guard = None;
    loop {
        match origin.read(|sp| sp.playlist_answer(directives)) {
            PlaylistAnswer::Moved => {
                if let Some(pulled) = pull_playlist(s, parts, channel, key).await {
                    return pulled;
                }
                // Back here already: wait for this node's new packaging loop.
            }
            PlaylistAnswer::Missing => return unavailable(s, channel, "playlist"),
            PlaylistAnswer::Bad(why) => return bad_request(why),
            PlaylistAnswer::Render { text, at_boundary } => {
                let td = target_duration(origin);
                let cache = if at_boundary && directives.is_blocking() {
                    // A blocking answer that ends with a whole segment and only a hint
                    // of the next part is not kept: Video.js (VHS) merges its hint-only
                    // preload segment with the parts it had, asks for the same part
                    // again, and a kept answer held it there for 6 target durations.
                    // Asked again, the node answers with the playlist as it is then,
                    // which soon lists the next part.
                    "no-cache".to_string()
                } else if directives.is_blocking() {
                    format!("public, max-age={}", td * 6)
                } else {
                    plain_playlist_cache(td)
                };
                return respond(StatusCode::OK, &cache, PLAYLIST_TYPE, text);
            }
            // A plain request also waits for the first whole segment (a stream that
            // just started or resumed here), as long as a blocking one would.
            PlaylistAnswer::Wait => {}
        }
        if waiting_guard.is_none() {
            waiting_guard = Some(s.origins.metrics().waiting());
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ if !directives.is_blocking() => {
                return unavailable(s, channel, "playlist (nothing packaged yet)");
            }
            _ => {
                return service_unavailable(
                    "the requested segment or part did not appear within 3 target durations",
                )
            }
        }
    }
}

/// A playlist of a channel another node originates, pulled through; `None` when
/// this node is (or has become) the origin. While the origin cannot be reached (it died
/// and its publisher has not come back on another node yet) the request is held, for as
/// long as an origin would hold a blocking one, and follows the channel to its new
/// origin: viewers see a stall, not an error.
async fn pull_playlist(s: &HlsState, parts: &Parts, channel: &str, key: &str) -> Option<Response> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(DEFAULT_TD_S) * 3);
    loop {
        let Source::Remote(chain) = source(s, parts, channel, None) else {
            return None;
        };
        let fetched = s.edge.fetch(&chain, key, via(parts)).await;
        let unreachable = matches!(
            fetched.head.status,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        );
        if !unreachable || tokio::time::Instant::now() + ORIGIN_RETRY >= deadline {
            return Some(fetched.into_response());
        }
        tokio::time::sleep(ORIGIN_RETRY).await;
    }
}

async fn object(
    State(s): State<HlsState>,
    Path((channel, rendition, generation, object)): Path<(String, String, String, String)>,
    parts: Parts,
) -> Response {
    // The channel names a folder of the disk spool: only a valid channel name may.
    let (Some(name), Ok(generation), true, true) = (
        names::parse(&object),
        generation.parse::<u64>(),
        rendition == RENDITION,
        validate_slug(&channel).is_ok(),
    ) else {
        return not_found("object");
    };
    if parts.headers.contains_key(EDGE_HEADER) {
        s.origins.metrics().pulled(false);
    }
    if let Source::Remote(upstream) = source(&s, &parts, &channel, Some(generation)) {
        // Objects this node made before the generation moved are still here.
        let in_memory = s
            .origins
            .get(&channel)
            .and_then(|o| o.read(|sp| sp.spooled(generation, name)));
        let local = match in_memory {
            Some(bytes) => Some(bytes),
            None => from_disk(&s, &channel, generation, name).await,
        };
        return match local {
            Some(bytes) => media_object(bytes),
            None => s
                .edge
                .fetch(&upstream, parts.uri.path(), via(&parts))
                .await
                .into_response(),
        };
    }
    if let Some(origin) = s.origins.get(&channel) {
        let td = target_duration(&origin);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(td) * 3);
        let mut changes = origin.subscribe();
        let mut waiting_guard = None;
        loop {
            let found = origin.read(|sp| sp.spooled(generation, name));
            if let Some(bytes) = found {
                return media_object(bytes);
            }
            if !origin.read(|sp| sp.may_come(generation, name)) {
                break;
            }
            if waiting_guard.is_none() {
                waiting_guard = Some(s.origins.metrics().waiting());
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
    }
    match from_disk(&s, &channel, generation, name).await {
        Some(bytes) => media_object(bytes),
        // The generation may have moved on while the request waited here.
        None => match source(&s, &parts, &channel, Some(generation)) {
            Source::Remote(upstream) => s
                .edge
                .fetch(&upstream, parts.uri.path(), via(&parts))
                .await
                .into_response(),
            Source::Local => not_found("object"),
        },
    }
}

async fn from_disk(
    s: &HlsState,
    channel: &str,
    generation: u64,
    name: ObjectName,
) -> Option<Bytes> {
    read_from_disk(s.origins.spool_root(), channel, generation, RENDITION, name).await
}

fn media_object(bytes: Bytes) -> Response {
    respond(StatusCode::OK, IMMUTABLE, "video/mp4", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulled_playlist_is_keyed_by_its_directives_alone() {
        let path = "/hls/news/source/index.m3u8";
        let key = |q: &str| playlist_key(path, &Directives::parse(q).expect("valid"));
        let canonical = format!("{path}?_HLS_msn=7&_HLS_part=2&_HLS_skip=YES");
        assert_eq!(key("_HLS_msn=7&_HLS_part=2&_HLS_skip=YES"), canonical);
        assert_eq!(key("_HLS_skip=YES&_HLS_part=2&_HLS_msn=7"), canonical);
        assert_eq!(
            key("cb=123&_HLS_msn=7&x&_HLS_part=2&_HLS_skip=YES"),
            canonical
        );
        assert_eq!(key(""), path);
        assert_eq!(key("cb=1"), path);
        assert_eq!(key("_HLS_skip=v2"), format!("{path}?_HLS_skip=v2"));
    }
}
