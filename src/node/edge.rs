//! `sluice edge`: an external edge, not a cluster member, serving the viewer URLs by
//! pull-through from a static, ordered list of upstreams (cluster nodes or other edges).
//!
//! ```text
//! GET /hls/...        pulled through (single flight, cache, failover in list order)
//! GET /watch/{name}   the player page
//! GET /healthz, /metrics
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sluice_cluster::command::validate_slug;
use sluice_media::playlist::blocking::Directives;
use sluice_media::playlist::names;

use crate::edge::{Edge, Upstream, DEFAULT_UPSTREAM_TIMEOUT, EDGE_HEADER};
use crate::http::access::{keys_router, protect, AccessSnapshot, EdgeAccess, Gate, ACCESS_PATH};
use crate::http::hls::playlist_key;
use crate::origin::RENDITION;

#[derive(clap::Args, Debug)]
pub(crate) struct EdgeArgs {
    /// An upstream to pull from (a Sluice node or another edge), by base URL; repeat it
    /// for failover, first one first.
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<String>,
    /// Address of the viewer listener.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// How this edge names itself to its upstreams (their metrics, loop detection).
    #[arg(long)]
    name: Option<String>,
    /// Bytes of objects and playlists kept (least recently used out first).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    cache_bytes: u64,
    /// How long an upstream may take to answer (and to send each chunk) before the next
    /// is tried; keep it above 3 target durations (blocking playlist requests).
    #[arg(long, default_value_t = DEFAULT_UPSTREAM_TIMEOUT.as_millis() as u64)]
    upstream_timeout_ms: u64,
    /// Where the player page loads hls.js from.
    #[arg(long, default_value = crate::http::watch::DEFAULT_HLSJS_URL)]
    hlsjs_url: String,
    /// The cluster secret (a member's data_dir/cluster.secret): this edge then checks
    /// playback tokens of private channels itself and signs its upstream requests.
    /// Without it, private channels get 403 here. Use https upstreams with it.
    #[arg(long)]
    cluster_secret_file: Option<std::path::PathBuf>,
}

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

/// Checks an upstream URL: `http(s)://host[:port]`, no path, query or fragment.
fn upstream(url: &str) -> Result<Upstream> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--upstream {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("--upstream {url:?}: must be an http:// or https:// URL with a host");
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        bail!("--upstream {url:?}: give the base URL only (no path or query)");
    }
    Ok(Upstream::parent(url.trim_end_matches('/')))
}

pub(crate) async fn run(args: EdgeArgs) -> Result<()> {
    let upstreams = args
        .upstreams
        .iter()
        .map(|u| upstream(u))
        .collect::<Result<Vec<_>>>()?;
    let name = match &args.name {
        Some(n) => {
            validate_slug(n).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            n.clone()
        }
        None => format!("edge-{}", &crate::support::random_hex()?[..8]),
    };
    let secret: Option<Arc<str>> = match &args.cluster_secret_file {
        Some(path) => Some(Arc::from(crate::support::read_secret(path)?.as_str())),
        None => None,
    };
    let edge = Arc::new(Edge::new(
        name.clone(),
        args.cache_bytes,
        Duration::from_millis(args.upstream_timeout_ms.max(1)),
        secret.clone(),
    )?);
    let app = app(&args, edge, upstreams.into(), secret);
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding http listener {}", args.http))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %name, upstreams = ?args.upstreams, "edge listening");
    println!(
        "Sluice edge {name} on http://{addr}, pulling from {}",
        args.upstreams.join(", ")
    );
    serve(listener, app).await
}

/// The viewer routes (behind the access gate), the player page, health and metrics.
fn app(
    args: &EdgeArgs,
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
        .merge(crate::http::watch::router(Arc::from(
            args.hlsjs_url.as_str(),
        )))
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

/// Serves `app` until SIGTERM or Ctrl-C, with the same limits, slow-client guard and
/// TCP_NODELAY as a node's listener.
async fn serve(listener: tokio::net::TcpListener, app: Router) -> Result<()> {
    let limits = Arc::new(crate::limits::Limits::new(Default::default()));
    let mut server = axum_server::from_tcp(listener.into_std()?)?.acceptor(
        crate::http::accept::LimitedAcceptor {
            limits: limits.clone(),
            plain: true,
        },
    );
    crate::http::tune_http(server.http_builder(), &limits.config);
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        crate::support::wait_for_signal().await;
        stopping.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    let app = crate::http::canonical::outside(app);
    server.handle(handle).serve(app.into_make_service()).await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_base_urls() {
        assert_eq!(
            upstream("http://10.0.0.1:8080/").expect("valid").url,
            "http://10.0.0.1:8080"
        );
        assert!(upstream("https://edge.example").is_ok());
        for bad in [
            "10.0.0.1:8080",
            "ftp://x",
            "http://x/hls",
            "http://x?a=1",
            "http://",
        ] {
            assert!(upstream(bad).is_err(), "{bad} accepted");
        }
    }
}
