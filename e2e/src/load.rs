//! An LL-HLS load client: N viewers, each on its own HTTP/1.1 connection, doing what
//! hls.js does at the live edge: a blocking playlist reload for the next part
//! (`_HLS_msn`/`_HLS_part`), then the part itself, in order, for as long as asked.
//!
//! Part-delivery delay: for each part a viewer got, the time from the moment the part
//! became available (the earliest blocking reload, across all viewers, that listed it)
//! to the moment this viewer had all of its bytes. It grows when the server serves
//! the crowd one by one, or falls behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// A live LL-HLS media playlist (`http://host:port/...m3u8`).
    pub url: String,
    pub viewers: usize,
    /// How long each viewer plays, after all have started.
    pub duration: Duration,
    /// Viewers join evenly over this time.
    pub ramp: Duration,
    /// Worker threads of the client.
    pub threads: usize,
}

/// What the viewers saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub viewers: usize,
    /// Parts received, all viewers together.
    pub parts: u64,
    /// Different parts seen listed by a blocking reload.
    pub distinct_parts: usize,
    /// Different parts fetched (those above and each viewer's first).
    pub distinct_fetched: usize,
    pub playlists: u64,
    pub bytes: u64,
    pub errors: u64,
    /// The first few errors, for the report.
    pub error_samples: Vec<String>,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    /// Wall time the measured phase lasted.
    pub seconds: f64,
}

struct Target {
    addr: String,
    host: String,
    /// Path of the playlist (no query).
    path: String,
    /// Directory of the playlist, ending in '/', for relative URIs.
    dir: String,
}

fn parse_url(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported, got {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => bail!("the URL has no path to a playlist: {url}"),
    };
    let path = path.split('?').next().unwrap_or(path);
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let dir = path[..=path.rfind('/').unwrap_or(0)].to_string();
    Ok(Target {
        addr,
        host: host.to_string(),
        path: path.to_string(),
        dir,
    })
}

/// One part listed in a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    pub msn: u64,
    pub index: u64,
    pub uri: String,
}

/// The parts of a media playlist, in order, with their segment number and index.
pub fn listed_parts(text: &str) -> Vec<ListedPart> {
    let mut msn = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(skipped) = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
        .and_then(|v| v.split(',').next()?.trim().parse::<u64>().ok())
    {
        msn += skipped;
    }
    let mut index = 0;
    let mut parts = Vec::new();
    let mut after_extinf = false;
    for line in text.lines() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            if let Some(uri) = attrs
                .split("URI=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
            {
                parts.push(ListedPart {
                    msn,
                    index,
                    uri: uri.to_string(),
                });
                index += 1;
            }
        } else if line.starts_with("#EXTINF") {
            after_extinf = true;
        } else if after_extinf && !line.starts_with('#') && !line.trim().is_empty() {
            after_extinf = false;
            msn += 1;
            index = 0;
        }
    }
    parts
}

struct Shared {
    /// Earliest moment each part was seen listed.
    first_listed: Mutex<HashMap<String, Instant>>,
    errors: Mutex<(u64, Vec<String>)>,
}

impl Shared {
    fn error(&self, what: String) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        e.0 += 1;
        if e.1.len() < 5 {
            e.1.push(what);
        }
    }

    fn listed(&self, uri: &str, at: Instant) {
        let mut m = self.first_listed.lock().unwrap_or_else(|p| p.into_inner());
        let t = m.entry(uri.to_string()).or_insert(at);
        if at < *t {
            *t = at;
        }
    }
}

#[derive(Default)]
struct ViewerLog {
    received: Vec<(String, Instant)>,
    joined_with: Vec<String>,
    playlists: u64,
    bytes: u64,
}

struct Conn {
    send: SendRequest<Empty<Bytes>>,
}

const REQUEST_LIMIT: Duration = Duration::from_secs(10);

impl Conn {
    async fn open(addr: &str) -> Result<Self> {
        let stream = tokio::time::timeout(REQUEST_LIMIT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send })
    }

    async fn get(&mut self, host: &str, path_and_query: &str) -> Result<Bytes> {
        let work = async {
            self.send.ready().await?;
            let req = hyper::Request::get(path_and_query)
                .header(hyper::header::HOST, host)
                .body(Empty::<Bytes>::new())?;
            let resp = self.send.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("{path_and_query}: HTTP {status}");
            }
            Ok(body)
        };
        tokio::time::timeout(REQUEST_LIMIT, work)
            .await
            .map_err(|_| anyhow!("{path_and_query}: no answer in {REQUEST_LIMIT:?}"))?
    }
}

async fn viewer(
    target: Arc<Target>,
    shared: Arc<Shared>,
    start_at: Instant,
    until: Instant,
) -> ViewerLog {
    tokio::time::sleep_until(start_at.into()).await;
    let mut log = ViewerLog::default();
    if let Err(e) = play(&target, &shared, until, &mut log).await {
        shared.error(format!("{e:#}"));
    }
    log
}

async fn play(target: &Target, shared: &Shared, until: Instant, log: &mut ViewerLog) -> Result<()> {
    let mut conn = Conn::open(&target.addr).await.context("connecting")?;
    let text = conn.get(&target.host, &target.path).await?;
    log.playlists += 1;
    let parts = listed_parts(&String::from_utf8_lossy(&text));
    let Some(mut last) = parts.last().cloned() else {
        bail!("the playlist lists no parts (not an LL-HLS stream?)");
    };
    let mut first = true;
    while Instant::now() < until {
        let query = format!(
            "{}?_HLS_msn={}&_HLS_part={}",
            target.path,
            last.msn,
            last.index + 1
        );
        let wanted = if first {
            // The newest part, right away, as a player joining at the live edge.
            first = false;
            vec![last.clone()]
        } else {
            let text = conn.get(&target.host, &query).await?;
            let at = Instant::now();
            log.playlists += 1;
            let parts = listed_parts(&String::from_utf8_lossy(&text));
            let newer: Vec<ListedPart> = parts
                .into_iter()
                .filter(|p| (p.msn, p.index) > (last.msn, last.index))
                .collect();
            if newer.is_empty() {
                bail!("a blocking reload for {query} answered without a newer part");
            }
            for p in &newer {
                shared.listed(&p.uri, at);
            }
            newer
        };
        let joining = wanted.len() == 1 && log.playlists == 1;
        for p in wanted {
            let path = if p.uri.starts_with('/') {
                p.uri.clone()
            } else {
                format!("{}{}", target.dir, p.uri)
            };
            let body = conn.get(&target.host, &path).await?;
            log.bytes += body.len() as u64;
            if joining {
                // Listed before this viewer joined: no delay to measure.
                log.joined_with.push(p.uri.clone());
            } else {
                log.received.push((p.uri.clone(), Instant::now()));
            }
            last = p;
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the viewers and reports what they saw.
pub fn run(settings: &LoadSettings) -> Result<LoadReport> {
    let target = Arc::new(parse_url(&settings.url)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads.max(1))
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        first_listed: Mutex::new(HashMap::new()),
        errors: Mutex::new((0, Vec::new())),
    });
    let n = settings.viewers.max(1);
    let logs = runtime.block_on(async {
        let begin = Instant::now() + Duration::from_millis(50);
        let until = begin + settings.ramp + settings.duration;
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let start_at = begin + settings.ramp.mul_f64(i as f64 / n as f64);
            tasks.push(tokio::spawn(viewer(
                target.clone(),
                shared.clone(),
                start_at,
                until,
            )));
        }
        let mut logs = Vec::with_capacity(n);
        for t in tasks {
            logs.push(t.await.unwrap_or_default());
        }
        (logs, begin.elapsed())
    });
    let (logs, elapsed) = logs;
    let first_listed = shared
        .first_listed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut delays = Vec::new();
    let mut report = LoadReport {
        viewers: n,
        seconds: elapsed.as_secs_f64(),
        ..LoadReport::default()
    };
    let mut fetched = std::collections::HashSet::new();
    for log in &logs {
        report.playlists += log.playlists;
        report.bytes += log.bytes;
        report.parts += (log.received.len() + log.joined_with.len()) as u64;
        fetched.extend(log.joined_with.iter().map(String::as_str));
        fetched.extend(log.received.iter().map(|(uri, _)| uri.as_str()));
        for (uri, at) in &log.received {
            if let Some(listed) = first_listed.get(uri) {
                delays.push(at.saturating_duration_since(*listed).as_secs_f64() * 1000.0);
            }
        }
    }
    report.distinct_fetched = fetched.len();
    delays.sort_by(f64::total_cmp);
    report.distinct_parts = first_listed.len();
    report.delay_p50_ms = percentile(&delays, 0.5);
    report.delay_p99_ms = percentile(&delays, 0.99);
    report.delay_max_ms = delays.last().copied().unwrap_or(0.0);
    let errors = shared.errors.lock().unwrap_or_else(|p| p.into_inner());
    report.errors = errors.0;
    report.error_samples = errors.1.clone();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_by_segment_and_index() {
        let text = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-PART:DURATION=0.2,URI=\"a.0.m4s\"\n#EXT-X-PART:DURATION=0.2,URI=\"a.1.m4s\"\n\
            #EXTINF:0.4,\nseg7.m4s\n\
            #EXT-X-PART:DURATION=0.2,URI=\"b.0.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"b.1.m4s\"\n";
        let parts = listed_parts(text);
        let got: Vec<(u64, u64, &str)> = parts
            .iter()
            .map(|p| (p.msn, p.index, p.uri.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(7, 0, "a.0.m4s"), (7, 1, "a.1.m4s"), (8, 0, "b.0.m4s")]
        );
    }

    #[test]
    fn urls_name_an_address_and_a_playlist() -> Result<()> {
        let t = parse_url("http://127.0.0.1:8080/hls/main/source/index.m3u8?x=1")?;
        assert_eq!(t.addr, "127.0.0.1:8080");
        assert_eq!(t.path, "/hls/main/source/index.m3u8");
        assert_eq!(t.dir, "/hls/main/source/");
        assert!(parse_url("https://example.com/a.m3u8").is_err());
        assert!(parse_url("http://example.com").is_err());
        Ok(())
    }
}
