//! The node's HTTP listener: the viewer interface (`/hls`, `/watch`), the admin API
//! (`/api/v1`), the dashboard (`/`), health, readiness and metrics.

pub(crate) mod api;
pub(crate) mod hls;
pub(crate) mod ui;
mod vod;
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

/// Counts the body bytes of a viewer response as they are sent.
async fn count_egress(
    metrics: Arc<crate::metrics::Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::{Body, HttpBody as _};
    use futures_util::StreamExt as _;
    let response = next.run(request).await;
    if let Some(n) = response.body().size_hint().exact() {
        metrics.sent(n);
        return response;
    }
    let (parts, body) = response.into_parts();
    let counted = body.into_data_stream().inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            metrics.sent(bytes.len() as u64);
        }
    });
    axum::response::Response::from_parts(parts, Body::from_stream(counted))
}

/// What every viewer route gets, on a node and on an external edge: gzip for playlists
/// and open CORS.
pub(crate) fn viewer_layers(router: Router) -> Router {
    router
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
        )
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
    let alerts_from = api.handle.clone();
    let counted = metrics.clone();
    let viewer = viewer_layers(
        hls::router(hls::HlsState {
            origins,
            edge,
            handle,
        })
        .layer(axum::middleware::from_fn(move |request, next| {
            count_egress(counted.clone(), request, next)
        })),
    );
    api::router(api)
        .merge(viewer)
        .merge(watch::router(hlsjs_url))
        .merge(ui::router())
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let edge = render_edge.clone();
                let cluster = alerts_from.clone();
                async move {
                    let mut text = metrics.render(Instant::now());
                    crate::metrics::render_edge(&mut text, &edge);
                    cluster.read_local(|s| {
                        crate::metrics::render_alerts(&mut text, s, crate::serve::now_ms())
                    });
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        )
}
