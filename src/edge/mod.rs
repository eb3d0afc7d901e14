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
mod metrics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use reqwest::header::HeaderValue;
use reqwest::StatusCode;
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

/// What a pull-through answers, for the HTTP layer to send: the head the cache keeps
/// (`no-store` when it has no Cache-Control), the seconds a cached answer spent in the
/// cache, and the body, whole or streamed as the upstream sends it (an error item
/// means the upstream broke off: the transfer must end truncated).
pub(crate) struct Fetched {
    pub(crate) head: Head,
    pub(crate) age_s: Option<u64>,
    pub(crate) body: FetchedBody,
}

pub(crate) enum FetchedBody {
    Whole(Bytes),
    Streamed(BoxStream<'static, std::io::Result<Bytes>>),
}

/// A fill in progress: the head once known, the chunks so far, and how it ended.
///
/// A body that fits the cache's object limit is kept whole (late viewers join from its
/// start, and it is cached when complete). One that grows past it is *oversized*: it is
/// taken out of the flight (later viewers start their own), never cached, and its
/// chunks go as soon as every reader has them; the upstream is read at most
/// [`OVERSIZED_WINDOW`] ahead of the slowest reader, and given up when the last leaves.
#[derive(Default)]
struct FillState {
    head: Option<Head>,
    /// Chunks from index `first` on.
    chunks: std::collections::VecDeque<Bytes>,
    first: usize,
    /// Bytes in `chunks`.
    held: usize,
    /// Bytes of body received so far.
    total: u64,
    oversized: bool,
    /// The next chunk index each reader (viewer response) wants, by reader id.
    readers: HashMap<u64, usize>,
    next_reader: u64,
    done: bool,
    /// Set when the upstream failed; the waiters answer with it.
    failed: Option<(StatusCode, String)>,
}

impl FillState {
    fn push(&mut self, chunk: Bytes) {
        self.held += chunk.len();
        self.total += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    fn chunk(&self, index: usize) -> Option<&Bytes> {
        self.chunks.get(index.checked_sub(self.first)?)
    }

    /// Oversized: lets go of the chunks every reader has.
    fn trim(&mut self) {
        if !self.oversized {
            return;
        }
        let wanted = self.readers.values().copied().min().unwrap_or(usize::MAX);
        while self.first < wanted {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            self.held -= c.len();
            self.first += 1;
        }
    }
}

/// How far an oversized fill may read ahead of its slowest reader.
const OVERSIZED_WINDOW: usize = 4 << 20;

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
    /// The largest body kept whole (the cache's object limit).
    max_object: u64,
}

/// Why one upstream gave no usable answer.
enum Attempt {
    /// Try the next upstream of the chain.
    Failover(StatusCode, String),
    /// The body had started: too late to move on.
    Broken(StatusCode, String),
    /// An oversized body every viewer left: not read further.
    Abandoned,
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
            max_object: cache::max_object(cache_bytes),
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
    ) -> Fetched {
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
            crate::support::now_ms() / 1000,
            &path,
        ))
    }

    /// An answer from the cache, counted as a hit.
    fn cached(&self, key: &str) -> Option<Fetched> {
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
            match self
                .stream_upstream(&url, up.origin, &via, &key, &fill)
                .await
            {
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
                        Attempt::Abandoned => {
                            self.set_down(&up.url, false);
                            last = (StatusCode::BAD_GATEWAY, "every viewer left".into());
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
                if let (Some(head), false) = (complete.head.clone(), complete.oversized) {
                    let body: Bytes = if complete.chunks.len() == 1 {
                        complete.chunks[0].clone()
                    } else {
                        let mut whole = Vec::with_capacity(complete.held);
                        for c in &complete.chunks {
                            whole.extend_from_slice(c);
                        }
                        whole.into()
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
        self.leave_flight(&key, &fill);
    }

    /// Takes `fill` out of the flight, unless another fill took its place already.
    fn leave_flight(&self, key: &str, fill: &Arc<Fill>) {
        if let Ok(mut inflight) = self.inflight.lock() {
            if inflight.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
                inflight.remove(key);
            }
        }
    }

    /// Sends the request upstream (signed, marked as a pull to the origin when it is
    /// one) and reads the head of its answer: a usable answer, or why to fail over.
    async fn ask_upstream(
        &self,
        url: &str,
        origin: bool,
        via: &str,
    ) -> Result<(reqwest::Response, Head), Attempt> {
        let mut request = self.client.get(url).header(EDGE_HEADER, via);
        if let Some(signature) = self.sign(url) {
            request = request.header(sluice_cluster::playback::UPSTREAM_HEADER, signature);
        }
        if origin {
            request = request.header(ORIGIN_PULL_HEADER, "1");
        }
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
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
            cache_control: response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .cloned(),
            content_type: response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .cloned(),
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
        Ok((response, head))
    }

    /// Fetches `url` into `fill`: its head, then every chunk as it comes, holding an
    /// oversized body to the pace of its slowest reader.
    async fn stream_upstream(
        &self,
        url: &str,
        origin: bool,
        via: &str,
        key: &str,
        fill: &Arc<Fill>,
    ) -> Result<(), Attempt> {
        let (mut response, head) = self.ask_upstream(url, origin, via).await?;
        // A body announced larger than the object limit is oversized from its start.
        let announced_large = response
            .content_length()
            .is_some_and(|n| n > self.max_object);
        fill.send_modify(|f| {
            f.head = Some(head);
            f.oversized = announced_large;
        });
        if announced_large {
            self.leave_flight(key, fill);
        }
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
                Ok(Ok(Some(chunk))) => {
                    let mut oversized_now = false;
                    fill.send_modify(|f| {
                        f.push(chunk);
                        if !f.oversized && f.total > self.max_object {
                            f.oversized = true;
                            oversized_now = true;
                        }
                        f.trim();
                    });
                    if oversized_now {
                        // Later viewers start a fill of their own.
                        self.leave_flight(key, fill);
                    }
                    if fill.borrow().oversized {
                        self.wait_for_readers(fill).await?;
                    }
                }
                Ok(Ok(None)) => break,
            }
        }
        fill.send_modify(|f| f.done = true);
        Ok(())
    }

    /// Holds an oversized fill until its slowest reader is within the window; gives up
    /// when every reader left, or the slowest did not move for the upstream timeout.
    async fn wait_for_readers(&self, fill: &Fill) -> Result<(), Attempt> {
        let mut rx = fill.subscribe();
        loop {
            {
                let f = rx.borrow_and_update();
                if f.readers.is_empty() {
                    return Err(Attempt::Abandoned);
                }
                if f.held <= OVERSIZED_WINDOW {
                    return Ok(());
                }
            }
            // Woken when the slowest reader lets chunks go (or a reader leaves).
            match tokio::time::timeout(self.timeout, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Attempt::Abandoned),
                Err(_) => return Err(Attempt::Abandoned),
            }
        }
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

fn failure(status: StatusCode, why: &str) -> Fetched {
    Fetched {
        head: Head {
            status,
            cache_control: None,
            content_type: Some(HeaderValue::from_static("text/plain; charset=utf-8")),
        },
        age_s: None,
        body: FetchedBody::Whole(Bytes::from(format!("{why}\n"))),
    }
}

fn cached_response(hit: Cached) -> Fetched {
    Fetched {
        head: hit.head,
        age_s: Some(hit.age_s),
        body: FetchedBody::Whole(hit.body),
    }
}

/// One viewer's place in a fill; leaving (drop) lets the fill let go of what it read.
struct Reader {
    fill: Arc<Fill>,
    id: u64,
    next: usize,
    ended: bool,
}

impl Reader {
    /// A reader from the body's start; `None` if the start is already let go of (an
    /// oversized fill joined at the moment it left the flight).
    fn join(fill: Arc<Fill>) -> Option<Self> {
        let mut id = None;
        fill.send_modify(|f| {
            if f.first == 0 {
                id = Some(f.next_reader);
                f.readers.insert(f.next_reader, 0);
                f.next_reader += 1;
            }
        });
        Some(Reader {
            fill,
            id: id?,
            next: 0,
            ended: false,
        })
    }

    fn advance(&mut self) {
        self.next += 1;
        let (id, next) = (self.id, self.next);
        self.fill.send_if_modified(|f| {
            f.readers.insert(id, next);
            let held = f.held;
            f.trim();
            // Only the fill task waits on this: wake it when it may read on.
            f.oversized && held != f.held
        });
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let id = self.id;
        self.fill.send_modify(|f| {
            f.readers.remove(&id);
            f.trim();
        });
    }
}

/// Waits for the head, then streams every chunk as the fill receives it.
async fn respond_from_fill(fill: Arc<Fill>) -> Fetched {
    let mut rx = fill.subscribe();
    // Joined before the head comes, so the start of the body is kept for this viewer.
    let Some(reader) = Reader::join(fill) else {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "a large object's transfer had moved on: ask again",
        );
    };
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
    let body = futures_util::stream::unfold((rx, reader), |(mut rx, mut reader)| async move {
        if reader.ended {
            return None;
        }
        loop {
            {
                let f = rx.borrow_and_update();
                if let Some(chunk) = f.chunk(reader.next).cloned() {
                    drop(f);
                    reader.advance();
                    return Some((Ok::<Bytes, std::io::Error>(chunk), (rx, reader)));
                }
                if f.failed.is_some() {
                    // The upstream broke mid-body: end this response with an error so
                    // the viewer (and any cache in front) sees a truncated transfer.
                    drop(f);
                    reader.ended = true;
                    return Some((
                        Err(std::io::Error::other("upstream broke off")),
                        (rx, reader),
                    ));
                }
                if f.done || reader.next < f.first {
                    return None;
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    });
    // Fused: a body may be polled again after its end (compression does).
    Fetched {
        head,
        age_s: None,
        body: FetchedBody::Streamed(Box::pin(futures_util::StreamExt::fuse(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header;
    use axum::response::IntoResponse;
    use futures_util::StreamExt;

    const CHUNK: usize = 64 << 10;

    /// An upstream serving `/big.mp4`: `chunks` chunks of 64 KiB, made as they are
    /// sent; `sent` counts the bytes handed to the socket.
    async fn upstream(chunks: usize, sent: Arc<AtomicU64>) -> String {
        let app = axum::Router::new().route(
            "/big.mp4",
            axum::routing::get(move || {
                let sent = sent.clone();
                async move {
                    let body = futures_util::stream::iter(0..chunks).map(move |_| {
                        sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
                        Ok::<Bytes, std::io::Error>(Bytes::from(vec![7u8; CHUNK]))
                    });
                    (
                        [(header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
                        Body::from_stream(body),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn edge() -> Arc<Edge> {
        // Objects up to 1 MiB are kept whole.
        Arc::new(
            Edge::new("test-edge".into(), 8 << 20, Duration::from_secs(5), None).expect("edge"),
        )
    }

    /// A body far larger than the cache's object limit, read by a viewer that stops
    /// for a while: the edge reads the upstream only a window ahead of the viewer
    /// (before, it read and held the whole body), and the viewer still gets every byte.
    #[tokio::test]
    async fn a_large_body_is_read_only_a_window_ahead_of_its_viewer() {
        let sent = Arc::new(AtomicU64::new(0));
        let total = 1024; // 64 MiB
        let url = upstream(total, sent.clone()).await;
        let edge = edge();
        let response = edge
            .fetch(&[Upstream::parent(url)], "/big.mp4", None)
            .await
            .into_response();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body().into_data_stream();
        let mut got = 0usize;
        while got < (2 << 20) {
            got += body.next().await.expect("chunk").expect("data").len();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let ahead = sent.load(Ordering::Relaxed);
        // 1 MiB kept whole, the 4 MiB window, and the sockets' buffers in between.
        assert!(
            ahead < 24 << 20,
            "the upstream was read {} MiB ahead",
            ahead >> 20
        );
        while let Some(chunk) = body.next().await {
            got += chunk.expect("data").len();
        }
        assert_eq!(got, total * CHUNK, "the viewer got the whole body");
        assert_eq!(edge.cache_usage().1, 0, "too large to cache");
    }

    /// A viewer leaving a large body stops the upstream transfer.
    #[tokio::test]
    async fn a_large_body_every_viewer_left_is_not_read_further() {
        let sent = Arc::new(AtomicU64::new(0));
        let url = upstream(4096, sent.clone()).await; // 256 MiB
        let edge = edge();
        let response = edge
            .fetch(&[Upstream::parent(url)], "/big.mp4", None)
            .await
            .into_response();
        let mut body = response.into_body().into_data_stream();
        let mut got = 0usize;
        while got < (2 << 20) {
            got += body.next().await.expect("chunk").expect("data").len();
        }
        drop(body);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let after_leaving = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(sent.load(Ordering::Relaxed), after_leaving, "still reading");
        assert!(after_leaving < 24 << 20, "read {} MiB", after_leaving >> 20);
        assert!(edge.inflight.lock().map(|m| m.is_empty()).unwrap_or(false));
    }

    /// A body within the limit is still fetched once for every viewer and cached.
    #[tokio::test]
    async fn a_small_body_is_shared_and_cached() {
        let sent = Arc::new(AtomicU64::new(0));
        let url = upstream(8, sent.clone()).await; // 512 KiB
        let edge = edge();
        let chain = [Upstream::parent(url)];
        let (a, b) = tokio::join!(
            edge.fetch(&chain, "/big.mp4", None),
            edge.fetch(&chain, "/big.mp4", None)
        );
        for r in [a, b] {
            let bytes = axum::body::to_bytes(r.into_response().into_body(), usize::MAX)
                .await
                .expect("body");
            assert_eq!(bytes.len(), 8 * CHUNK);
        }
        assert_eq!(
            sent.load(Ordering::Relaxed),
            8 * CHUNK as u64,
            "fetched once"
        );
        assert_eq!(edge.cache_usage().1, 1);
    }
}
