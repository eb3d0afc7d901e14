//! The viewer side of `sluice edge` (an external edge, not a cluster member): the
//! viewer routes pulled through from its upstreams, the access gate kept current from
//! them, the player page, health and metrics, and its listener.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sluice_cluster::command::validate_slug;
use sluice_media::playlist::blocking::Directives;
use sluice_media::playlist::names;

use super::access::{keys_router, protect, AccessSnapshot, EdgeAccess, Gate, ACCESS_PATH};
use super::hls::playlist_key;
use crate::edge::{Edge, Upstream, EDGE_HEADER};
use crate::origin::RENDITION;

/// How often an edge with the cluster secret refreshes which channels are private.
const ACCESS_REFRESH: Duration = Duration::from_secs(2);

/// Keeps `access` current from the first upstream that answers.
async fn refresh_access(edge: Arc<Edge>, upstreams: Arc<[Upstream]>, access: Arc<EdgeAccess>) {
    let Ok(client) = sluice_cluster::network::client_builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let mut failing = false;
    loop {
        let mut got = None;
        for up in upstreams.iter() {
            let url = format!("{}{ACCESS_PATH}", up.url);
            let mut request = client.get(&url);
            if let Some(signature) = edge.sign(&url) {
                request = request.header(sluice_cluster::playback::UPSTREAM_HEADER, signature);
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    if let Ok(snapshot) = r.json::<AccessSnapshot>().await {
                        got = Some(snapshot);
                        break;
                    }
                }
                Ok(r) => {
                    tracing::warn!(%url, status = r.status().as_u16(), "access snapshot refused (is the cluster secret right?)")
                }
                Err(e) => tracing::debug!(%url, error = %e, "access snapshot not fetched"),
            }
        }
        match got {
            Some(snapshot) => {
                if failing {
                    tracing::info!("access snapshot fetched again");
                }
                failing = false;
                access.set(snapshot);
            }
            // The last snapshot stays: a channel made private meanwhile is still refused
            // by its origin, which checks every unsigned request.
            None if !failing => {
                failing = true;
                tracing::warn!("no upstream gave the access snapshot; keeping the last one");
            }
            None => {}
        }
        tokio::time::sleep(ACCESS_REFRESH).await;
    }
}

#[derive(Clone)]
struct EdgeState {
    edge: Arc<Edge>,
    upstreams: Arc<[Upstream]>,
}

/// The viewer routes (behind the access gate), the player page, health and metrics.
pub(crate) fn app(
    hlsjs_url: &str,
    edge: Arc<Edge>,
    upstreams: Arc<[Upstream]>,
    secret: Option<Arc<str>>,
) -> Router {
    let state = EdgeState {
        edge: edge.clone(),
        upstreams: upstreams.clone(),
    };
    let viewer = crate::http::ViewerRoutes {
        multivariant: get(multivariant),
        media_playlist: get(media_playlist),
        object: get(object),
        vod_file: get(recorded),
        vod_object: get(recorded),
    }
    .router()
    .with_state(state);
    let access = Arc::new(EdgeAccess::default());
    if secret.is_none() {
        // Nothing to learn: its requests are unsigned, so upstreams refuse it every
        // private channel, and it serves public ones.
        access.set(AccessSnapshot::default());
    }
    let gate = Gate::new(access.clone(), secret.clone());
    let denials = gate.denials.clone();
    let mut viewer = protect(viewer, gate);
    if let Some(secret) = secret {
        tokio::spawn(refresh_access(edge.clone(), upstreams, access.clone()));
        let source = access.clone();
        viewer = viewer.merge(keys_router(move || source.get(), secret));
    }
    crate::http::viewer_layers(viewer)
        .merge(crate::http::watch::router(Arc::from(hlsjs_url)))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let edge = edge.clone();
                let denials = denials.clone();
                async move {
                    let mut text = String::new();
                    edge.render_metrics(&mut text);
                    denials.render(&mut text);
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        )
        .layer(axum::middleware::from_fn(crate::http::access_log))
}

fn via(parts: &Parts) -> Option<&str> {
    parts.headers.get(EDGE_HEADER).and_then(|v| v.to_str().ok())
}

fn bad_request(why: impl std::fmt::Display) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=1"),
    );
    r
}

fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "not found\n").into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Recordings (VOD playlists, objects, the MP4 download): pulled through as they are.
async fn recorded(
    State(s): State<EdgeState>,
    Path(path): Path<Vec<(String, String)>>,
    parts: Parts,
) -> Response {
    let channel = path
        .iter()
        .find(|(k, _)| k == "channel")
        .map(|(_, v)| v.as_str());
    if channel.is_none_or(|c| validate_slug(c).is_err()) {
        return not_found();
    }
    s.edge
        .fetch(&s.upstreams, parts.uri.path(), via(&parts))
        .await
        .into_response()
}

async fn multivariant(
    State(s): State<EdgeState>,
    Path(channel): Path<String>,
    parts: Parts,
) -> Response {
    if validate_slug(&channel).is_err() {
        return not_found();
    }
    s.edge
        .fetch(&s.upstreams, parts.uri.path(), via(&parts))
        .await
        .into_response()
}

async fn media_playlist(
    State(s): State<EdgeState>,
    Path((channel, rendition)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Response {
    if validate_slug(&channel).is_err() || rendition != RENDITION {
        return not_found();
    }
    let directives = match Directives::parse(query.as_deref().unwrap_or("")) {
        Ok(d) => d,
        Err(e) => return bad_request(e),
    };
    let key = playlist_key(parts.uri.path(), &directives);
    s.edge
        .fetch(&s.upstreams, &key, via(&parts))
        .await
        .into_response()
}

async fn object(
    State(s): State<EdgeState>,
    Path((channel, rendition, generation, object)): Path<(String, String, String, String)>,
    parts: Parts,
) -> Response {
    if validate_slug(&channel).is_err()
        || rendition != RENDITION
        || generation.parse::<u64>().is_err()
        || names::parse(&object).is_none()
    {
        return not_found();
    }
    s.edge
        .fetch(&s.upstreams, parts.uri.path(), via(&parts))
        .await
        .into_response()
}
