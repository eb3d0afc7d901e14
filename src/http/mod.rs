//! The node's HTTP listener: the viewer interface (`/hls`, `/watch`), the admin API
//! (`/api/v1`), the dashboard (`/`), health, readiness and metrics.

pub(crate) mod accept;
pub(crate) mod access;
pub(crate) mod api;
pub(crate) mod canonical;
pub(crate) mod external;
pub(crate) mod hls;
pub(crate) mod probe;
pub(crate) mod serve;
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

/// One line per request at debug level (`RUST_LOG=sluice::access=debug`), with any
/// playback token taken out of the path.
pub(crate) async fn access_log(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !tracing::enabled!(target: "sluice::access", tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = access::loggable_path(request.uri().path());
    let via = request
        .headers()
        .get(crate::edge::EDGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = next.run(request).await;
    tracing::debug!(
        target: "sluice::access",
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        via,
        "request"
    );
    response
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
    cluster_secret: Arc<str>,
    limits: Arc<crate::limits::Limits>,
) -> Router {
    let metrics = origins.metrics().clone();
    let handle = api.handle.clone();
    let render_edge = edge.clone();
    let alerts_from = api.handle.clone();
    let counted = metrics.clone();
    let gate = access::Gate::new(Arc::new(handle.clone()), Some(cluster_secret.clone()));
    let denials = gate.denials.clone();
    let viewer = viewer_layers(
        access::protect(
            hls::router(hls::HlsState {
                origins,
                edge,
                handle: handle.clone(),
                limits: limits.clone(),
                cluster_secret: cluster_secret.clone(),
            }),
            gate,
        )
        .layer(axum::middleware::from_fn(move |request, next| {
            count_egress(counted.clone(), request, next)
        })),
    );
    let body_limit = limits.config.http_max_body_bytes as usize;
    let render_limits = limits.clone();
    api::router(api)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .merge(viewer)
        .merge(watch::router(hlsjs_url))
        .merge(ui::router())
        .merge(access::keys_router(
            move || access::snapshot_of(&handle),
            cluster_secret,
        ))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let edge = render_edge.clone();
                let cluster = alerts_from.clone();
                let denials = denials.clone();
                let limits = render_limits.clone();
                async move {
                    cluster.read_local(|s| {
                        metrics.retain_channels(|slug| s.channel_by_slug(slug).is_some())
                    });
                    let mut text = metrics.render(Instant::now());
                    denials.render(&mut text);
                    limits.render(&mut text);
                    edge.render_metrics(&mut text);
                    cluster.read_local(|s| crate::metrics::render_alerts(&mut text, s));
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        )
        .layer(axum::middleware::from_fn(access_log))
}

/// Slow or silent HTTP clients cannot hold a connection forever.
pub(crate) fn tune_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: &crate::limits::LimitsConfig,
) {
    use std::time::Duration;
    // hyper answers a head larger than its read buffer with 431.
    let head = (limits.http_max_header_bytes as usize).max(8192);
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_buf_size(head)
        .header_read_timeout(Duration::from_millis(limits.http_idle_timeout_ms.max(1)));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(head as u32)
        .keep_alive_interval(Duration::from_secs(20));
}

/// The viewer URLs, one table for a node and for an external edge; each gives its own
/// handlers (and state).
pub(crate) struct ViewerRoutes<S> {
    pub(crate) multivariant: axum::routing::MethodRouter<S>,
    pub(crate) media_playlist: axum::routing::MethodRouter<S>,
    pub(crate) object: axum::routing::MethodRouter<S>,
    /// `/vod/{channel}/{file}`: a recording's MP4, or a piece's playlist.
    pub(crate) vod_file: axum::routing::MethodRouter<S>,
    pub(crate) vod_object: axum::routing::MethodRouter<S>,
}

impl<S: Clone + Send + Sync + 'static> ViewerRoutes<S> {
    pub(crate) fn router(self) -> Router<S> {
        Router::new()
            .route("/hls/{channel}/index.m3u8", self.multivariant)
            .route("/hls/{channel}/{rendition}/index.m3u8", self.media_playlist)
            .route(
                "/hls/{channel}/{rendition}/{generation}/{object}",
                self.object,
            )
            .route("/vod/{channel}/{file}", self.vod_file)
            .route("/vod/{channel}/{generation}/{object}", self.vod_object)
    }
}

/// A pull-through answer as an HTTP response: its status and kept headers (`no-store`
/// when it has no Cache-Control), `Age` for a cached one, `Retry-After` for a 503, the
/// body whole or streamed.
impl axum::response::IntoResponse for crate::edge::Fetched {
    fn into_response(self) -> axum::response::Response {
        use axum::http::HeaderValue;
        let body = match self.body {
            crate::edge::FetchedBody::Whole(bytes) => axum::body::Body::from(bytes),
            crate::edge::FetchedBody::Streamed(stream) => axum::body::Body::from_stream(stream),
        };
        let mut r = body.into_response();
        *r.status_mut() = self.head.status;
        let h = r.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            self.head
                .cache_control
                .unwrap_or_else(|| HeaderValue::from_static("no-store")),
        );
        if let Some(v) = self.head.content_type {
            h.insert(header::CONTENT_TYPE, v);
        }
        // Every 503 of the origin's says to ask again in a second; so does its relay.
        if self.head.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(v) = self
            .age_s
            .and_then(|a| HeaderValue::from_str(&a.to_string()).ok())
        {
            h.insert(header::AGE, v);
        }
        r
    }
}
