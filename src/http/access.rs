//! Private channels at every node and external edge: the playback token is checked on
//! every viewer request, then taken out of the URL, so the cache, the single flight and
//! the upstream request never see it.
//!
//! ```text
//! GET /t/{token}/hls/{channel}/...   token checked for the channel -> served as /hls/{channel}/...
//! GET /t/{token}/vod/{channel}/...   the same for recordings
//! GET /hls/{channel}/... (private)   403, unless signed by a node with the cluster secret
//!                                    (x-sluice-upstream: a pull-through between nodes)
//! ```
//!
//! The token is a path prefix rather than a query parameter: playlists list relative
//! URIs, which a player resolves against the playlist's own URL, so every playlist,
//! part, segment and rendition report a tokenized viewer asks for carries the token with
//! no rewriting, and one rendering and one cached object serve every viewer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use sluice_cluster::handle::ClusterHandle;
use sluice_cluster::model::{PlaybackKey, Visibility};
use sluice_cluster::playback::{self, TokenError, UPSTREAM_HEADER};
use tower::ServiceExt as _;

use super::hls::{respond, NO_STORE};

/// A private channel as a verifier needs it: its id (what tokens are signed for) and
/// the keys that verify.
pub(crate) struct PrivateChannel {
    pub(crate) id: u64,
    pub(crate) keys: Vec<PlaybackKey>,
}

/// Where the gate learns which channels are private: the replicated state on a node,
/// the copy an external edge keeps.
pub(crate) trait AccessView: Send + Sync + 'static {
    /// `Some` when `slug` names a private channel.
    fn private_channel(&self, slug: &str) -> Option<PrivateChannel>;

    /// Whether the view is known at all (an external edge before its first snapshot
    /// is not: it serves nothing rather than treat every channel as public).
    fn ready(&self) -> bool {
        true
    }
}

impl AccessView for ClusterHandle {
    fn private_channel(&self, slug: &str) -> Option<PrivateChannel> {
        self.read_local(|st| {
            let c = st.channel_by_slug(slug)?;
            (c.visibility == Visibility::Private).then(|| PrivateChannel {
                id: c.id,
                keys: st.playback_keys.values().cloned().collect(),
            })
        })
    }
}

/// Refusals by reason, for `/metrics`.
#[derive(Default)]
pub(crate) struct Denials(Mutex<BTreeMap<&'static str, u64>>);

impl Denials {
    fn count(&self, reason: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("# HELP sluice_playback_denied_total Viewer requests for private channels refused, by reason.\n");
        out.push_str("# TYPE sluice_playback_denied_total counter\n");
        if let Ok(m) = self.0.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "sluice_playback_denied_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct Gate {
    view: Arc<dyn AccessView>,
    /// Verifies the signature other nodes put on their pull-through requests.
    cluster_secret: Option<Arc<str>>,
    pub(crate) denials: Arc<Denials>,
}

impl Gate {
    pub(crate) fn new(view: Arc<dyn AccessView>, cluster_secret: Option<Arc<str>>) -> Self {
        Self {
            view,
            cluster_secret,
            denials: Arc::default(),
        }
    }
}

fn reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Missing => "missing",
        TokenError::Malformed => "malformed",
        TokenError::UnknownKey => "unknown_key",
        TokenError::BadSignature => "bad_signature",
        TokenError::Expired => "expired",
        TokenError::WrongOrigin => "wrong_origin",
    }
}

fn forbidden(gate: &Gate, e: &TokenError) -> Response {
    gate.denials.count(reason(e));
    respond(
        StatusCode::FORBIDDEN,
        NO_STORE,
        "text/plain; charset=utf-8",
        format!("{e}\n"),
    )
}

fn not_ready() -> Response {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        NO_STORE,
        "text/plain; charset=utf-8",
        "this edge has not yet learned which channels are private from its upstreams\n",
    )
}

/// The channel a viewer path names: `/hls/{channel}/...` or `/vod/{channel}...`.
fn channel_of(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/hls/")
        .or_else(|| path.strip_prefix("/vod/"))?;
    let end = rest.find(['/', '.']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The page's origin as the browser gave it: `Origin`, else the origin of `Referer`.
fn request_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        return Some(o.to_string());
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let url = reqwest::Url::parse(referer).ok()?;
    Some(url.origin().ascii_serialization())
}

/// Wraps the viewer routes (`/hls`, `/vod`) of a node or an external edge.
pub(crate) fn protect(inner: Router, gate: Gate) -> Router {
    let plain = inner
        .clone()
        .route_layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            require_access,
        ));
    Router::new()
        .route(
            "/t/{token}/{*rest}",
            axum::routing::get(move |request: Request| tokenized(gate, inner, request)),
        )
        .merge(plain)
}

/// `/t/{token}/...`: the token is checked, then the request goes on without it.
async fn tokenized(gate: Gate, inner: Router, request: Request) -> Response {
    let uri = request.uri().clone();
    let Some((token, rest)) = uri
        .path()
        .strip_prefix("/t/")
        .and_then(|p| p.split_once('/'))
    else {
        return super::hls::not_found("path");
    };
    let path = format!("/{rest}");
    let Some(channel) = channel_of(&path) else {
        return super::hls::not_found("path");
    };
    if !gate.view.ready() {
        return not_ready();
    }
    if let Some(private) = gate.view.private_channel(channel) {
        let origin = request_origin(request.headers());
        if let Err(e) = playback::verify(
            &private.keys,
            token,
            private.id,
            crate::support::now_ms() / 1000,
            origin.as_deref(),
        ) {
            return forbidden(&gate, &e);
        }
    }
    let inner_uri = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(inner_uri) = inner_uri.parse::<Uri>() else {
        return super::hls::not_found("path");
    };
    // A new request: the outer route's matched path parameters must not reach the
    // inner routes' extractors. Only the peer address is carried over.
    let (parts, body) = request.into_parts();
    let mut inner_request = Request::new(body);
    *inner_request.method_mut() = parts.method;
    *inner_request.uri_mut() = inner_uri;
    *inner_request.version_mut() = parts.version;
    *inner_request.headers_mut() = parts.headers;
    if let Some(peer) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        inner_request.extensions_mut().insert(*peer);
    }
    inner_request.extensions_mut().insert(Authorized);
    match inner.oneshot(inner_request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Marks a request whose token was checked.
#[derive(Clone, Copy)]
struct Authorized;

/// A private channel's URL without a token: only another node may ask for it.
async fn require_access(
    axum::extract::State(gate): axum::extract::State<Gate>,
    request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<Authorized>().is_some() {
        return next.run(request).await;
    }
    if !gate.view.ready() {
        return not_ready();
    }
    let path = request.uri().path();
    let private = channel_of(path).and_then(|c| gate.view.private_channel(c));
    if private.is_some() {
        let signed = gate.cluster_secret.as_deref().is_some_and(|secret| {
            request
                .headers()
                .get(UPSTREAM_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|sig| {
                    playback::upstream_authorized(
                        secret,
                        sig,
                        crate::support::now_ms() / 1000,
                        path,
                    )
                })
        });
        if !signed {
            return forbidden(&gate, &TokenError::Missing);
        }
    }
    next.run(request).await
}

/// What an external edge needs to check tokens itself: the private channels and the
/// keys that verify. Served to holders of the cluster secret only, never cached.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
pub(crate) struct AccessSnapshot {
    /// Private channels: slug -> id.
    pub(crate) private: BTreeMap<String, u64>,
    pub(crate) keys: Vec<PlaybackKey>,
}

/// Where external edges fetch [`AccessSnapshot`] from.
pub(crate) const ACCESS_PATH: &str = "/edge/v1/access";

/// The snapshot of the replicated state.
pub(crate) fn snapshot_of(handle: &ClusterHandle) -> AccessSnapshot {
    handle.read_local(|st| AccessSnapshot {
        private: st
            .channels
            .values()
            .filter(|c| c.visibility == Visibility::Private)
            .map(|c| (c.slug.clone(), c.id))
            .collect(),
        keys: st
            .playback_keys
            .values()
            .filter(|k| k.retired_ms.is_none())
            .cloned()
            .collect(),
    })
}

/// `GET /edge/v1/access` for the edges below this node or edge.
pub(crate) fn keys_router(
    source: impl Fn() -> AccessSnapshot + Clone + Send + Sync + 'static,
    cluster_secret: Arc<str>,
) -> Router {
    Router::new().route(
        ACCESS_PATH,
        axum::routing::get(move |headers: HeaderMap| async move {
            let signed = headers
                .get(UPSTREAM_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|sig| {
                    playback::upstream_authorized(
                        &cluster_secret,
                        sig,
                        crate::support::now_ms() / 1000,
                        ACCESS_PATH,
                    )
                });
            if !signed {
                tracing::warn!(
                    "access snapshot refused: request not signed with the cluster secret"
                );
                return respond(
                    StatusCode::FORBIDDEN,
                    NO_STORE,
                    "text/plain; charset=utf-8",
                    "signed with the cluster secret only\n",
                );
            }
            let body = serde_json::to_vec(&source()).unwrap_or_default();
            respond(StatusCode::OK, NO_STORE, "application/json", body)
        }),
    )
}

/// An external edge's copy of the access snapshot, refreshed from its upstreams.
#[derive(Default)]
pub(crate) struct EdgeAccess(std::sync::RwLock<AccessSnapshot>, AtomicBool);

impl EdgeAccess {
    pub(crate) fn set(&self, snapshot: AccessSnapshot) {
        if let Ok(mut s) = self.0.write() {
            *s = snapshot;
        }
        self.1.store(true, Ordering::Release);
    }

    /// A copy to serve to edges below this one.
    pub(crate) fn get(&self) -> AccessSnapshot {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }
}

impl AccessView for EdgeAccess {
    fn ready(&self) -> bool {
        self.1.load(Ordering::Acquire)
    }

    fn private_channel(&self, slug: &str) -> Option<PrivateChannel> {
        let s = self.0.read().ok()?;
        let id = *s.private.get(slug)?;
        Some(PrivateChannel {
            id,
            keys: s.keys.clone(),
        })
    }
}

/// A path as it may be logged: a playback token replaced by `<token>`.
pub(crate) fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/t/").and_then(|p| p.split_once('/')) {
        Some((_, rest)) => format!("/t/<token>/{rest}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_is_read_from_viewer_paths() {
        assert_eq!(channel_of("/hls/news/index.m3u8"), Some("news"));
        assert_eq!(channel_of("/hls/news/source/3/7.2.m4s"), Some("news"));
        assert_eq!(channel_of("/vod/news/3.mp4"), Some("news"));
        assert_eq!(channel_of("/vod/news/3/index.m3u8"), Some("news"));
        assert_eq!(channel_of("/watch/news"), None);
    }

    #[test]
    fn tokens_never_reach_a_log_line() {
        assert_eq!(
            loggable_path("/t/v1.k.1.00.abcdef/hls/news/index.m3u8"),
            "/t/<token>/hls/news/index.m3u8"
        );
        assert_eq!(
            loggable_path("/hls/news/index.m3u8"),
            "/hls/news/index.m3u8"
        );
    }

    #[test]
    fn the_page_origin_comes_from_origin_or_referer() {
        let mut h = HeaderMap::new();
        assert_eq!(request_origin(&h), None);
        h.insert(
            header::REFERER,
            "https://site.example:8443/live/page?x=1"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            request_origin(&h).as_deref(),
            Some("https://site.example:8443")
        );
        h.insert(
            header::ORIGIN,
            "https://other.example".parse().expect("header"),
        );
        assert_eq!(request_origin(&h).as_deref(), Some("https://other.example"));
    }
}
