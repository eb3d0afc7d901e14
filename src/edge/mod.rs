//! Pull-through: a node that is not a channel's origin serves the channel's URLs by
//! fetching them from upstream, once per object however many viewers ask.
//!
//! ```text
//! viewer --GET--> Edge::fetch(upstream, path?query)
//!   cache hit (immutable object, or a playlist younger than its max-age) --> bytes, Age
//!   in flight --> join the fill: head when it arrives, then every chunk as it arrives
//!   otherwise --> one upstream request (a task of its own, so a viewer leaving does not
//!                 cancel it for the others) --> fill --> cache when complete and cacheable
//! upstream unreachable --> 502, timed out --> 504; both `no-store`, never cached
//! ```

mod cache;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::watch;

use cache::{Cache, Cached};

/// The header an edge sends upstream, so the upstream can count pull-through requests.
pub(crate) const EDGE_HEADER: &str = "x-sluice-edge";
/// An upstream that has not answered by then is given up on (504). Longer than the
/// longest an origin holds a blocking request (3 target durations).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the edge keeps of an upstream response's head.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) cache_control: Option<HeaderValue>,
    pub(crate) content_type: Option<HeaderValue>,
}

/// A fill in progress: the head once known, the chunks so far, and how it ended.
#[derive(Default)]
struct FillState {
    head: Option<Head>,
    chunks: Vec<Bytes>,
    done: bool,
    /// Set when the upstream failed; the waiters answer with it.
    failed: Option<(StatusCode, String)>,
}

type Fill = watch::Sender<FillState>;

#[derive(Default)]
pub(crate) struct EdgeCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) upstream_objects: AtomicU64,
    pub(crate) upstream_playlists: AtomicU64,
    pub(crate) upstream_failures: AtomicU64,
}

pub(crate) struct Edge {
    client: reqwest::Client,
    /// Identifies this edge to its upstreams.
    name: String,
    inflight: Mutex<HashMap<String, Arc<Fill>>>,
    cache: Mutex<Cache>,
    pub(crate) counters: EdgeCounters,
}

impl Edge {
    pub(crate) fn new(name: String, cache_bytes: u64) -> anyhow::Result<Self> {
        let client = sluice_cluster::network::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(UPSTREAM_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            name,
            inflight: Mutex::new(HashMap::new()),
            cache: Mutex::new(Cache::new(cache_bytes)),
            counters: EdgeCounters::default(),
        })
    }

    /// Serves `path_and_query` (e.g. `/hls/news/source/index.m3u8?_HLS_msn=5`, with only
    /// the query the upstream reads: it is the single-flight and cache key) from
    /// `upstream` (a base URL) through the cache and single flight.
    pub(crate) async fn fetch(self: &Arc<Self>, upstream: &str, path_and_query: &str) -> Response {
        // The cache key is the path and query only: every upstream serves the same bytes
        // at the same URL (generation-scoped objects), so a failover keeps the cache.
        let key = path_and_query.to_string();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key, Instant::now()));
        if let Some(hit) = cached {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return cached_response(hit);
        }
        let (fill, started) = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return failure(StatusCode::INTERNAL_SERVER_ERROR, "edge state poisoned");
            };
            match inflight.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(watch::channel(FillState::default()).0);
                    inflight.insert(key.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if started {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            let kind = if key.contains(".m3u8") {
                &self.counters.upstream_playlists
            } else {
                &self.counters.upstream_objects
            };
            kind.fetch_add(1, Ordering::Relaxed);
            let edge = self.clone();
            let url = format!("{}{}", upstream.trim_end_matches('/'), path_and_query);
            let fill = fill.clone();
            tokio::spawn(async move { edge.run_fill(url, key, fill).await });
        } else {
            self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        respond_from_fill(fill).await
    }

    async fn run_fill(self: Arc<Self>, url: String, key: String, fill: Arc<Fill>) {
        let result = self.stream_upstream(&url, &fill).await;
        if let Err((status, why)) = result {
            self.counters
                .upstream_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%url, %why, "upstream fetch failed");
            fill.send_modify(|f| {
                f.failed = Some((status, why));
                f.done = true;
            });
        } else {
            let complete = fill.borrow();
            if let Some(head) = complete.head.clone() {
                let body: Bytes = if complete.chunks.len() == 1 {
                    complete.chunks[0].clone()
                } else {
                    complete.chunks.concat().into()
                };
                drop(complete);
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(key.clone(), head, body, Instant::now());
                }
            }
        }
        // Cached first, then out of flight: a request in between finds one or the other.
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&key);
        }
    }

    async fn stream_upstream(&self, url: &str, fill: &Fill) -> Result<(), (StatusCode, String)> {
        let mut response = self
            .client
            .get(url)
            .header(EDGE_HEADER, &self.name)
            .send()
            .await
            .map_err(upstream_error)?;
        let head = Head {
            status: StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            cache_control: response.headers().get(header::CACHE_CONTROL).cloned(),
            content_type: response.headers().get(header::CONTENT_TYPE).cloned(),
        };
        if head.status.is_server_error() {
            // Passed on as the upstream said it, but never cached.
            let text = response.text().await.unwrap_or_default();
            return Err((head.status, text));
        }
        fill.send_modify(|f| f.head = Some(head));
        while let Some(chunk) = response.chunk().await.map_err(upstream_error)? {
            fill.send_modify(|f| f.chunks.push(chunk));
        }
        fill.send_modify(|f| f.done = true);
        Ok(())
    }

    /// Bytes and entries held by the object cache, for `/metrics`.
    pub(crate) fn cache_usage(&self) -> (u64, usize) {
        self.cache
            .lock()
            .map(|c| (c.bytes(), c.len()))
            .unwrap_or((0, 0))
    }
}

fn upstream_error(e: reqwest::Error) -> (StatusCode, String) {
    if e.is_timeout() {
        (
            StatusCode::GATEWAY_TIMEOUT,
            format!("upstream timed out: {e}"),
        )
    } else {
        (StatusCode::BAD_GATEWAY, format!("upstream failed: {e}"))
    }
}

fn failure(status: StatusCode, why: &str) -> Response {
    let mut r = (status, format!("{why}\n")).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn with_head(mut r: Response, head: &Head) -> Response {
    *r.status_mut() = head.status;
    let h = r.headers_mut();
    match &head.cache_control {
        Some(v) => h.insert(header::CACHE_CONTROL, v.clone()),
        None => h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    };
    if let Some(v) = &head.content_type {
        h.insert(header::CONTENT_TYPE, v.clone());
    }
    r
}

fn cached_response(hit: Cached) -> Response {
    let mut r = with_head(Body::from(hit.body).into_response(), &hit.head);
    if let Ok(v) = HeaderValue::from_str(&hit.age_s.to_string()) {
        r.headers_mut().insert(header::AGE, v);
    }
    r
}

/// Waits for the head, then streams every chunk as the fill receives it.
async fn respond_from_fill(fill: Arc<Fill>) -> Response {
    let mut rx = fill.subscribe();
    let head = loop {
        {
            let f = rx.borrow_and_update();
            if let Some((status, why)) = &f.failed {
                if f.head.is_none() {
                    return failure(*status, why);
                }
            }
            if let Some(h) = &f.head {
                break h.clone();
            }
        }
        if rx.changed().await.is_err() {
            return failure(StatusCode::BAD_GATEWAY, "upstream fill abandoned");
        }
    };
    let body = futures_util::stream::unfold((rx, 0usize), |(mut rx, next)| async move {
        if next == usize::MAX {
            return None;
        }
        loop {
            {
                let f = rx.borrow_and_update();
                if next < f.chunks.len() {
                    let chunk = f.chunks[next].clone();
                    drop(f);
                    return Some((Ok::<Bytes, std::io::Error>(chunk), (rx, next + 1)));
                }
                if f.failed.is_some() {
                    // The upstream broke mid-body: end this response with an error so
                    // the viewer (and any cache in front) sees a truncated transfer.
                    drop(f);
                    return Some((
                        Err(std::io::Error::other("upstream broke off")),
                        (rx, usize::MAX),
                    ));
                }
                if f.done {
                    return None;
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    });
    // Fused: a body may be polled again after its end (compression does).
    with_head(
        Body::from_stream(futures_util::StreamExt::fuse(body)).into_response(),
        &head,
    )
}
