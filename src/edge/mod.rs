//! Pull-through: a node that is not a channel's origin (or an external `sluice edge`)
//! serves the channel's URLs by fetching them from upstream, once per object however
//! many viewers ask.
//!
//! ```text
//! viewer --GET--> Edge::fetch(chain, path?query, via)
//!   cache hit (immutable object, or a playlist younger than its max-age) --> bytes, Age
//!   in flight --> join the fill: head when it arrives, then every chunk as it arrives
//!   otherwise --> one upstream request (a task of its own, so a viewer leaving does not
//!                 cancel it for the others) --> fill --> cache when complete and cacheable
//! chain: parents in order, then the origin; an upstream that is unreachable, times out
//!   or answers 5xx (not 503) is skipped for the next and left alone for a second
//! every upstream failed --> 502 (504 for a timeout), `no-store`, never cached
//! ```

mod cache;
pub(crate) mod external;

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

/// The header an edge sends upstream: the names of the edges the request passed, in
/// order, so an upstream can count pull-through requests and refuse a loop.
pub(crate) const EDGE_HEADER: &str = "x-sluice-edge";
/// Sent to a node the sender resolved as the channel's origin (from the replicated
/// state): that node answers from its spool and never pulls through again, so two nodes
/// with different views of the state cannot send a request back and forth.
pub(crate) const ORIGIN_PULL_HEADER: &str = "x-sluice-origin-pull";
/// An upstream that has not answered by then is given up on (504). Longer than the
/// longest an origin holds a blocking request (3 target durations).
pub(crate) const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A failed upstream is skipped this long (then tried again by one request).
const DOWN_FOR: Duration = Duration::from_secs(1);

/// One place the edge may fetch from, in failover order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// Base URL (`http://host:port`).
    pub(crate) url: String,
    /// The channel's origin node as the replicated state names it.
    pub(crate) origin: bool,
}

impl Upstream {
    pub(crate) fn parent(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            origin: false,
        }
    }
}

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
    /// Requests that moved on to the next upstream of their chain.
    pub(crate) failovers: AtomicU64,
}

pub(crate) struct Edge {
    client: reqwest::Client,
    /// Identifies this edge to its upstreams.
    name: String,
    timeout: Duration,
    inflight: Mutex<HashMap<String, Arc<Fill>>>,
    cache: Mutex<Cache>,
    /// Upstreams that failed lately, skipped until then.
    down: Mutex<HashMap<String, Instant>>,
    pub(crate) counters: EdgeCounters,
    /// Signs every upstream request (private channels are served to signed ones only).
    upstream_secret: Option<Arc<str>>,
}

/// Why one upstream gave no usable answer.
enum Attempt {
    /// Try the next upstream of the chain.
    Failover(StatusCode, String),
    /// The body had started: too late to move on.
    Broken(StatusCode, String),
}

impl Edge {
    /// `timeout`: how long an upstream may take to answer, and to send each chunk.
    /// `upstream_secret`: the cluster secret, when this edge may pull private channels.
    pub(crate) fn new(
        name: String,
        cache_bytes: u64,
        timeout: Duration,
        upstream_secret: Option<Arc<str>>,
    ) -> anyhow::Result<Self> {
        let client = sluice_cluster::network::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            name,
            timeout,
            inflight: Mutex::new(HashMap::new()),
            cache: Mutex::new(Cache::new(cache_bytes)),
            down: Mutex::new(HashMap::new()),
            counters: EdgeCounters::default(),
            upstream_secret,
        })
    }

    /// Serves `path_and_query` (e.g. `/hls/news/source/index.m3u8?_HLS_msn=5`, with only
    /// the query the upstream reads: it is the single-flight and cache key) from the
    /// first upstream of `chain` that answers, through the cache and single flight.
    /// `via`: the edges the request already passed (the [`EDGE_HEADER`] it came with);
    /// one naming this edge is a loop and gets 508.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        chain: &[Upstream],
        path_and_query: &str,
        via: Option<&str>,
    ) -> Response {
        if via.is_some_and(|v| v.split(',').any(|n| n.trim() == self.name)) {
            return failure(
                StatusCode::LOOP_DETECTED,
                &format!(
                    "pull-through loop: this edge ({}) is already in {via:?}",
                    self.name
                ),
            );
        }
        if chain.is_empty() {
            return failure(StatusCode::BAD_GATEWAY, "no upstream to pull from");
        }
        // The cache key is the path and query only: every upstream serves the same bytes
        // at the same URL (generation-scoped objects), so a failover keeps the cache.
        let key = path_and_query.to_string();
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        let (fill, started) = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return failure(StatusCode::INTERNAL_SERVER_ERROR, "edge state poisoned");
            };
            match inflight.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    // A fill may have ended since the cache was read: it caches before it
                    // leaves the flight, so look again before asking upstream twice.
                    if let Some(hit) = self.cached(&key) {
                        return hit;
                    }
                    let f = Arc::new(watch::channel(FillState::default()).0);
                    inflight.insert(key.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if started {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            let edge = self.clone();
            let chain = chain.to_vec();
            let via = match via {
                Some(v) => format!("{v},{}", self.name),
                None => self.name.clone(),
            };
            let fill = fill.clone();
            tokio::spawn(async move { edge.run_fill(chain, via, key, fill).await });
        } else {
            self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        respond_from_fill(fill).await
    }

    /// The upstream signature for `url`'s path, when this edge holds the cluster secret.
    pub(crate) fn sign(&self, url: &str) -> Option<String> {
        let secret = self.upstream_secret.as_deref()?;
        let path = reqwest::Url::parse(url).ok()?.path().to_string();
        Some(sluice_cluster::playback::upstream_signature(
            secret,
            crate::serve::now_ms() / 1000,
            &path,
        ))
    }

    /// A response from the cache, counted as a hit.
    fn cached(&self, key: &str) -> Option<Response> {
        let hit = self.cache.lock().ok()?.get(key, Instant::now())?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(cached_response(hit))
    }

    fn is_down(&self, url: &str, now: Instant) -> bool {
        self.down
            .lock()
            .map(|d| d.get(url).is_some_and(|until| *until > now))
            .unwrap_or(false)
    }

    fn set_down(&self, url: &str, down: bool) {
        if let Ok(mut d) = self.down.lock() {
            if down {
                d.insert(url.to_string(), Instant::now() + DOWN_FOR);
            } else {
                d.remove(url);
            }
        }
    }

    async fn run_fill(
        self: Arc<Self>,
        chain: Vec<Upstream>,
        via: String,
        key: String,
        fill: Arc<Fill>,
    ) {
        let now = Instant::now();
        let mut last = (
            StatusCode::BAD_GATEWAY,
            "every upstream failed a moment ago; retried within a second".to_string(),
        );
        let mut outcome = Err(());
        let available = chain.iter().filter(|u| !self.is_down(&u.url, now));
        for (tried, up) in available.enumerate() {
            if tried > 0 {
                self.counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            let kind = if key.contains(".m3u8") {
                &self.counters.upstream_playlists
            } else {
                &self.counters.upstream_objects
            };
            kind.fetch_add(1, Ordering::Relaxed);
            let url = format!("{}{}", up.url.trim_end_matches('/'), key);
            match self.stream_upstream(&url, up.origin, &via, &fill).await {
                Ok(()) => {
                    self.set_down(&up.url, false);
                    outcome = Ok(());
                    break;
                }
                Err(attempt) => {
                    self.counters
                        .upstream_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.set_down(&up.url, true);
                    match attempt {
                        Attempt::Failover(status, why) => {
                            tracing::warn!(%url, %why, "upstream failed; trying the next");
                            last = (status, why);
                        }
                        Attempt::Broken(status, why) => {
                            tracing::warn!(%url, %why, "upstream broke off mid-body");
                            last = (status, why);
                            break;
                        }
                    }
                }
            }
        }
        match outcome {
            Err(()) => fill.send_modify(|f| {
                f.failed = Some(last);
                f.done = true;
            }),
            Ok(()) => {
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
        }
        // Cached first, then out of flight: a request that missed the cache while this
        // was in flight finds it in the cache when it looks again under the flight lock.
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&key);
        }
    }

    async fn stream_upstream(
        &self,
        url: &str,
        origin: bool,
        via: &str,
        fill: &Fill,
    ) -> Result<(), Attempt> {
        let mut request = self.client.get(url).header(EDGE_HEADER, via);
        if let Some(signature) = self.sign(url) {
            request = request.header(sluice_cluster::playback::UPSTREAM_HEADER, signature);
        }
        if origin {
            request = request.header(ORIGIN_PULL_HEADER, "1");
        }
        let mut response = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => {
                return Err(Attempt::Failover(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("upstream sent no answer within {:?}", self.timeout),
                ))
            }
            Ok(Err(e)) => {
                let (status, why) = upstream_error(e);
                return Err(Attempt::Failover(status, why));
            }
            Ok(Ok(r)) => r,
        };
        let head = Head {
            status: StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            cache_control: response.headers().get(header::CACHE_CONTROL).cloned(),
            content_type: response.headers().get(header::CONTENT_TYPE).cloned(),
        };
        // 503 is an answer (a blocking request whose part did not come in time), passed
        // on as it is; other server errors mean this upstream cannot serve: move on.
        if head.status.is_server_error() && head.status != StatusCode::SERVICE_UNAVAILABLE {
            let text = tokio::time::timeout(CONNECT_TIMEOUT, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let status = if head.status == StatusCode::GATEWAY_TIMEOUT {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            return Err(Attempt::Failover(
                status,
                format!("upstream answered {}: {}", head.status, text.trim()),
            ));
        }
        fill.send_modify(|f| f.head = Some(head));
        loop {
            match tokio::time::timeout(self.timeout, response.chunk()).await {
                Err(_) => {
                    return Err(Attempt::Broken(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("upstream stalled mid-body for {:?}", self.timeout),
                    ))
                }
                Ok(Err(e)) => {
                    let (status, why) = upstream_error(e);
                    return Err(Attempt::Broken(status, why));
                }
                Ok(Ok(Some(chunk))) => fill.send_modify(|f| f.chunks.push(chunk)),
                Ok(Ok(None)) => break,
            }
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
