//! The node's HTTP listener: the viewer interface (`/hls`, `/watch`), the admin API
//! (`/api/v1`), health, readiness and metrics.

pub(crate) mod api;
pub(crate) mod hls;
pub(crate) mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderMap, Method, StatusCode, Version};
use axum::routing::get;
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};

use crate::edge::Edge;
use crate::origin::Origins;

/// Playlists are text worth compressing; media objects are not.
fn is_playlist(_: StatusCode, _: Version, headers: &HeaderMap, _: &axum::http::Extensions) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("mpegurl"))
}

pub(crate) fn app(
    api: api::ApiState,
    origins: Arc<Origins>,
    edge: Arc<Edge>,
    hlsjs_url: Arc<str>,
) -> Router {
    let metrics = origins.metrics().clone();
    let handle = api.handle.clone();
    let render_edge = edge.clone();
    let viewer = hls::router(hls::HlsState {
        origins,
        edge,
        handle,
    })
    .layer(
        CompressionLayer::new()
            .gzip(true)
            .compress_when(is_playlist),
    )
    .layer(
        CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers(Any),
    );
    api::router(api)
        .merge(viewer)
        .merge(watch::router(hlsjs_url))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let edge = render_edge.clone();
                async move {
                    let mut text = metrics.render(Instant::now());
                    crate::metrics::render_edge(&mut text, &edge);
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        )
}
