//! Cluster-wide serving: a stream published to one node plays from every node, which
//! pull through from the origin once per object however many viewers ask.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{load_test_config, three_nodes, wait_for, Http, Publisher, Server};
use sluice_e2e::{make_small_stream, play_page, validate_playlists, TempDir};

/// A player page whose hls.js the test browser answers from the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";

fn media_url(server: &Server) -> String {
    server.url("/hls/main/source/index.m3u8")
}

/// (media sequence, preload hint URI with its msn and part, ended).
fn summary(text: &str) -> (u64, Option<(String, u64, u32)>) {
    let mut msn = 0;
    let mut hint = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"") {
            let uri = v.trim_end_matches('"').to_string();
            let name = uri.rsplit('/').next().unwrap_or_default();
            let mut it = name.trim_end_matches(".m4s").split('.');
            if let (Some(Ok(m)), Some(Ok(p))) = (
                it.next().map(str::parse::<u64>),
                it.next().map(str::parse::<u32>),
            ) {
                hint = Some((uri, m, p));
            }
        }
    }
    (msn, hint)
}

/// Viewers that reload like hls.js: a blocking request for the hinted part, then the part.
struct Load {
    errors: AtomicU64,
    requests: AtomicU64,
    objects: Mutex<HashSet<String>>,
}

/// `tag`: a query parameter of the viewer's own (as some players add), which must not
/// split the edge's single flight.
fn viewer(http: &Http, base: &str, load: &Load, until: Instant, tag: Option<usize>) {
    let media = format!("{base}/hls/main/source/index.m3u8");
    let own = tag.map(|t| format!("&player={t}")).unwrap_or_default();
    let mut next: Option<(u64, u32)> = None;
    while Instant::now() < until {
        let url = match next {
            Some((m, p)) => format!("{media}?_HLS_msn={m}&_HLS_part={p}{own}"),
            None => media.clone(),
        };
        load.requests.fetch_add(1, Ordering::Relaxed);
        let Some(r) = http.get(&url, &[]).ok().filter(|r| r.status == 200) else {
            load.errors.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let Some((uri, m, p)) = summary(&r.text()).1 else {
            load.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let object = format!("{base}/hls/main/source/{uri}");
        load.requests.fetch_add(1, Ordering::Relaxed);
        match http.get(&object, &[]) {
            Ok(o) if o.status == 200 && !o.body.is_empty() => {
                if let Ok(mut seen) = load.objects.lock() {
                    seen.insert(uri);
                }
            }
            _ => {
                load.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        next = Some((m, p));
    }
}

#[test]
fn a_stream_published_to_one_node_plays_from_every_node() -> Result<()> {
    let tmp = TempDir::new("serving")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let config = load_test_config(tmp.path())?;
    let nodes = three_nodes(tmp.path(), &["--hlsjs-url", HLSJS_URL, "--config", &config])?;
    let key = nodes[0].main_key()?;
    let _publisher = Publisher::ffmpeg_loop(
        &fixture,
        &nodes[0].rtmp_url(&key),
        &tmp.path().join("ff1.log"),
    )?;
    let http = Http::new(None)?;
    wait_for(Duration::from_secs(40), "the stream live on node 1", || {
        let r = http.get(&media_url(&nodes[0]), &[]).ok()?;
        (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
    })
    .with_context(|| nodes[0].log())?;

    // Node 3 serves the same playlist: same media sequence as the origin's (read
    // before and after), and it validates in strict mode.
    let before = summary(&http.get(&media_url(&nodes[0]), &[])?.text()).0;
    let r3 = http.get(&media_url(&nodes[2]), &[])?;
    ensure!(
        r3.status == 200,
        "node 3 playlist: HTTP {}\n{}",
        r3.status,
        nodes[2].log()
    );
    let at3 = summary(&r3.text()).0;
    let after = summary(&http.get(&media_url(&nodes[0]), &[])?.text()).0;
    ensure!(
        (before..=after).contains(&at3),
        "node 3 media sequence {at3} outside the origin's {before}..={after}"
    );
    validate_playlists(&[
        nodes[2].url("/hls/main/index.m3u8"),
        media_url(&nodes[2]),
        format!("{}?_HLS_skip=YES", media_url(&nodes[2])),
    ])?;

    // A second publisher with the same key, on another node: refused there.
    let mut second = Publisher::ffmpeg_loop(
        &fixture,
        &nodes[1].rtmp_url(&key),
        &tmp.path().join("ff2.log"),
    )?;
    ensure!(
        second.wait_exit(Duration::from_secs(20)).is_some(),
        "a second publisher for a live channel was not refused"
    );
    ensure!(
        nodes[1].log().contains("refused") || nodes[1].log().contains("already live"),
        "node 2 logged no refusal:\n{}",
        nodes[1].log()
    );

    // 500 viewers on node 3 (half adding a query parameter of their own): one upstream
    // request per object, no errors, and blocking reloads coalesced.
    const PULLED_OBJECTS: &str = "sluice_pulled_requests_total{kind=\"object\"}";
    const PULLED_PLAYLISTS: &str = "sluice_pulled_requests_total{kind=\"playlist\"}";
    let pulled_before = http.metric(&nodes[0].base(), PULLED_OBJECTS)?;
    let playlists_before = http.metric(&nodes[0].base(), PULLED_PLAYLISTS)?;
    let load = Arc::new(Load {
        errors: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        objects: Mutex::new(HashSet::new()),
    });
    let until = Instant::now() + Duration::from_secs(8);
    let base = nodes[2].base();
    let threads: Vec<_> = (0..500)
        .map(|i| {
            let (http, load, base) = (http.clone(), load.clone(), base.clone());
            let tag = (i % 2 == 1).then_some(i);
            std::thread::spawn(move || viewer(&http, &base, &load, until, tag))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let pulled = http.metric(&nodes[0].base(), PULLED_OBJECTS)? - pulled_before;
    let playlists = http.metric(&nodes[0].base(), PULLED_PLAYLISTS)? - playlists_before;
    let distinct = load.objects.lock().map(|s| s.len()).unwrap_or(0) as u64;
    let coalesced = http.metric(&nodes[2].base(), "sluice_edge_coalesced_total")?;
    eprintln!(
        "500 viewers on node 3: {} requests, {} errors, {distinct} distinct parts, \
         {pulled} object and {playlists} playlist requests reached the origin, \
         {coalesced} coalesced",
        load.requests.load(Ordering::Relaxed),
        load.errors.load(Ordering::Relaxed),
    );
    ensure!(
        load.errors.load(Ordering::Relaxed) == 0,
        "viewers saw errors"
    );
    ensure!(distinct >= 5, "viewers fetched only {distinct} parts");
    ensure!(
        pulled <= distinct,
        "{pulled} object requests reached the origin for {distinct} objects"
    );
    ensure!(coalesced > 0, "no request joined a fetch in flight");
    // One blocking reload per part state, plus a plain reload per viewer start and a few
    // for parts that were already there: far fewer than the viewers' own.
    ensure!(
        playlists < 4 * distinct + 500,
        "{playlists} playlist requests reached the origin for {distinct} parts"
    );

    // hls.js in Chromium plays from node 2 and from node 3.
    for n in [1, 2] {
        let played = play_page(&nodes[n].url("/watch/main"), 8, Duration::from_secs(60))?;
        ensure!(
            played.ok,
            "hls.js on node {}: {}\n{}",
            n + 1,
            played.report,
            nodes[n].log()
        );
        eprintln!(
            "node {}: played {:.1} s, latency {:?}",
            n + 1,
            played.current_time,
            played.latency
        );
    }
    Ok(())
}
