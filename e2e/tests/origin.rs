//! The embedded one-node default end to end: real RTMP publishers (ffmpeg, GStreamer)
//! push to `sluice serve`; hls-parser, ffprobe and hls.js in Chromium consume what it
//! serves. Tests here run one at a time (they share two cores with encoders and a
//! browser).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{wait_for, EdgeProcess, Http, Publisher, Reply, Server, TlsFiles};
use sluice_e2e::rtmp_client::RtmpPublisher;
use sluice_e2e::{ffprobe, make_test_stream, play_page, validate_playlists, TempDir};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A player page whose hls.js the test browser answers from the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";

struct Fixtures {
    _dir: TempDir,
    /// OBS-like: x264 veryfast zerolatency, 2 s keyframes, AAC 48 kHz.
    gop60: PathBuf,
    /// OBS's default keyframe interval: 250 frames (8.3 s at 30 fps).
    gop250: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = TempDir::for_process("origin-fixtures").expect("temp dir");
        let gop60 = dir.path().join("gop60.flv");
        let gop250 = dir.path().join("gop250.flv");
        let x264 = |g: &'static str| {
            [
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-g",
                g,
                "-keyint_min",
                g,
                "-b:v",
                "800k",
            ]
        };
        make_test_stream(&gop60, "640x360", 12, &x264("60")).expect("gop60 fixture");
        make_test_stream(&gop250, "640x360", 20, &x264("250")).expect("gop250 fixture");
        Fixtures {
            _dir: dir,
            gop60,
            gop250,
        }
    })
}

/// What a media playlist says, for assertions.
#[derive(Debug, Clone, Default)]
struct Listing {
    media_sequence: u64,
    target_duration: u32,
    /// (msn, EXTINF seconds, preceded by EXT-X-DISCONTINUITY) of complete segments.
    segments: Vec<(u64, f64, bool)>,
    /// Segments listed with EXT-X-GAP (an earlier origin's, in a resumed playlist).
    gaps: Vec<u64>,
    /// The preload-hinted part: (generation/msn.part URI, msn, part).
    hint: Option<(String, u64, u32)>,
    ended: bool,
    skipped: u64,
}

fn parse_part_uri(uri: &str) -> Option<(u64, u32)> {
    let name = uri.rsplit('/').next()?;
    let mut it = name.strip_suffix(".m4s")?.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn listing(text: &str) -> Listing {
    let mut l = Listing::default();
    let mut discontinuity = false;
    let mut gap = false;
    let mut extinf = None;
    let mut msn = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            l.media_sequence = v.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            l.target_duration = v.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            l.skipped = v
                .split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-GAP" {
            gap = true;
        } else if line == "#EXT-X-ENDLIST" {
            l.ended = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = v.trim_end_matches(',').parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"") {
            let uri = v.trim_end_matches('"').to_string();
            if let Some((m, p)) = parse_part_uri(&uri) {
                l.hint = Some((uri, m, p));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let seq = msn.unwrap_or(l.media_sequence + l.skipped);
            match extinf.take() {
                Some(_) if gap => l.gaps.push(seq),
                Some(d) => l.segments.push((seq, d, discontinuity)),
                None => {}
            }
            discontinuity = false;
            gap = false;
            msn = Some(seq + 1);
        }
    }
    l
}

fn media_url(server: &Server, channel: &str) -> String {
    server.url(&format!("/hls/{channel}/source/index.m3u8"))
}

fn get_listing(http: &Http, server: &Server, channel: &str) -> Result<Listing> {
    let r = http.get(&media_url(server, channel), &[])?;
    ensure!(r.status == 200, "media playlist: HTTP {}", r.status);
    Ok(listing(&r.text()))
}

/// Waits until the channel's playlist lists `segments` complete segments.
fn wait_live(http: &Http, server: &Server, channel: &str, segments: usize) -> Result<Listing> {
    wait_for(Duration::from_secs(40), "the stream to be live", || {
        get_listing(http, server, channel)
            .ok()
            .filter(|l| l.segments.len() >= segments)
    })
    .with_context(|| server.log())
}

fn assert_cache(r: &Reply, expected: &str, what: &str) -> Result<()> {
    ensure!(
        r.header("cache-control") == expected,
        "{what}: Cache-Control {:?}, expected {expected:?} (HTTP {})",
        r.header("cache-control"),
        r.status
    );
    Ok(())
}

#[test]
fn obs_like_rtmp_push_plays_on_the_watch_page_and_decodes() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-play")?;
    // The player page loads the node's own hls.js (Chromium here has no internet).
    let server = Server::start(&tmp.path().join("node"), &[])?;
    let key = server.main_key()?;
    let _publisher =
        Publisher::ffmpeg_loop(&f.gop60, &server.rtmp_url(&key), &tmp.path().join("ff.log"))?;
    let http = Http::new(None)?;
    let live = wait_live(&http, &server, "main", 3)?;

    // Every kind of playlist the server writes passes hls-parser's strict mode.
    let (_, msn, part) = live.hint.clone().context("a preload hint")?;
    let media = media_url(&server, "main");
    validate_playlists(&[
        server.url("/hls/main/index.m3u8"),
        media.clone(),
        format!("{media}?_HLS_msn={msn}&_HLS_part={part}"),
        format!("{media}?_HLS_msn={}", msn + 1),
        format!("{media}?_HLS_skip=YES"),
    ])?;

    // The node serves its own player script: hls.js 1.7.4 as the npm package has it,
    // kept for a year under its versioned URL.
    let page = http.get(&server.url("/watch/main"), &[])?.text();
    ensure!(
        page.contains("src=\"/assets/hls-1.7.4.min.js\""),
        "the watch page does not load the node's hls.js:\n{page}"
    );
    let script = http.get(&server.url("/assets/hls-1.7.4.min.js"), &[])?;
    let npm = std::fs::read(sluice_e2e::js_dir()?.join("node_modules/hls.js/dist/hls.min.js"))?;
    ensure!(
        script.status == 200 && script.body == npm,
        "the node's hls.js: HTTP {}, {} bytes, not the npm package's {} bytes",
        script.status,
        script.body.len(),
        npm.len()
    );
    ensure!(
        script.header("cache-control") == "public, max-age=31536000, immutable"
            && script.header("content-type").starts_with("text/javascript"),
        "the node's hls.js: {:?}",
        script.headers
    );

    // hls.js on the player page plays 10 s of the live stream.
    let watch = server.url("/watch/main");
    let played = play_page(&watch, 10, Duration::from_secs(90))?;
    ensure!(played.ok, "the watch page did not play: {}", played.report);
    eprintln!(
        "watch page: played {:.1} s, live latency reported by the page {:?} s",
        played.report["played"].as_f64().unwrap_or(0.0),
        played.latency
    );

    // The node told the operator how to point OBS at it and where to watch.
    let log = server.log();
    ensure!(
        log.contains(&format!("rtmp://127.0.0.1:{}/live", server.rtmp))
            && log.contains("/watch/main")
            && log.contains("main.stream-key"),
        "no OBS settings printed:\n{log}"
    );
    let metrics = http.get(&server.url("/metrics"), &[])?.text();
    for family in [
        "sluice_ingest_bytes_total{channel=\"main\"}",
        "sluice_ingest_frames_total{channel=\"main\"}",
        "sluice_part_publish_delay_seconds_count",
        "sluice_playlist_requests_total{kind=\"blocking\"}",
        "sluice_viewers{channel=\"main\"}",
    ] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(family))
            .and_then(|v| v.trim().parse::<f64>().ok());
        ensure!(
            value.is_some_and(|v| v > 0.0),
            "{family} not counted:\n{metrics}"
        );
    }

    // Stopped through the API, the playlist ends and ffprobe decodes it whole.
    let token = server.admin_token()?;
    let stop = http.post(&server.url("/api/v1/channels/main/stop"), &token)?;
    ensure!(
        stop.status == 200,
        "stop: HTTP {} {}",
        stop.status,
        stop.text()
    );
    let ended = wait_for(Duration::from_secs(10), "EXT-X-ENDLIST", || {
        get_listing(&http, &server, "main").ok().filter(|l| l.ended)
    })?;
    let listed: f64 = ended.segments.iter().map(|s| s.1).sum();
    let probe = ffprobe(&media)?;
    let video = probe.frames.get("video").copied().unwrap_or(0);
    let expected = (listed * 30.0).round() as i64;
    ensure!(
        (video as i64 - expected).abs() <= 2,
        "ffprobe decoded {video} video frames; the playlist lists {listed:.3} s = {expected} frames"
    );
    ensure!(
        probe.frames.get("audio").copied().unwrap_or(0) > 0,
        "no audio decoded"
    );
    ensure!(
        probe.width == Some(640) && probe.height == Some(360),
        "size {:?}x{:?}",
        probe.width,
        probe.height
    );
    Ok(())
}

/// Blocking reload, preload-hinted parts, delta updates and the Cache-Control table,
/// against a live stream on `server`.
fn check_viewer_protocol(server: &Server, http: &Http, fixture: &Path, log: &Path) -> Result<()> {
    let key = server.main_key()?;
    let mut publisher = Publisher::ffmpeg_loop(fixture, &server.rtmp_url(&key), log)?;
    let live = wait_live(http, server, "main", 3)?;
    let media = media_url(server, "main");
    let td = live.target_duration;
    ensure!(td == 3, "TARGETDURATION {td}, expected 3 for 2 s segments");

    let multivariant = http.get(&server.url("/hls/main/index.m3u8"), &[])?;
    ensure!(multivariant.status == 200);
    assert_cache(&multivariant, "public, max-age=1", "multivariant")?;
    let plain = http.get(&media, &[("accept-encoding", "gzip")])?;
    assert_cache(
        &plain,
        &format!("public, max-age={}", td / 2),
        "plain media playlist",
    )?;
    ensure!(
        plain.header("content-encoding") == "gzip",
        "playlist not gzipped"
    );
    ensure!(plain.body.starts_with(&[0x1f, 0x8b]), "gzip body expected");
    ensure!(
        plain.header("access-control-allow-origin") == "*",
        "no CORS header"
    );

    // The hinted part: the request is held until the part is complete.
    let now = get_listing(http, server, "main")?;
    let (uri, msn, part) = now.hint.context("a preload hint")?;
    let hinted = http.get(&server.url(&format!("/hls/main/source/{uri}")), &[])?;
    ensure!(hinted.status == 200, "hinted part: HTTP {}", hinted.status);
    assert_cache(&hinted, "public, max-age=31536000, immutable", "part")?;
    ensure!(
        hinted.elapsed < Duration::from_secs(2),
        "hinted part took {:?}",
        hinted.elapsed
    );
    // The next part's playlist: answered within about a part after the part exists.
    let (next_msn, next_part) = (msn, part + 1);
    let blocked = http.get(
        &format!("{media}?_HLS_msn={next_msn}&_HLS_part={next_part}"),
        &[],
    )?;
    ensure!(
        blocked.status == 200,
        "blocking reload: HTTP {}",
        blocked.status
    );
    let after = listing(&blocked.text());
    let (_, hm, hp) = after.hint.context("hint after blocking")?;
    // Kept for 6 target durations, unless the answer ends with a whole segment and only
    // the hint of the next one's first part (Video.js asks for the same state again).
    let kept = format!("public, max-age={}", 6 * td);
    assert_cache(
        &blocked,
        if hp == 0 { "no-cache" } else { &kept },
        "blocking playlist",
    )?;
    ensure!(
        blocked.elapsed < Duration::from_millis(1500),
        "blocking reload took {:?}",
        blocked.elapsed
    );
    // A whole next segment: answered as it completes, ending there.
    let whole = http.get(&format!("{media}?_HLS_msn={}", hm + 1), &[])?;
    ensure!(whole.status == 200, "segment reload: HTTP {}", whole.status);
    let (_, wm, wp) = listing(&whole.text())
        .hint
        .context("hint after a segment")?;
    assert_cache(
        &whole,
        if wp == 0 { "no-cache" } else { &kept },
        &format!("blocking playlist ending at {wm}.{wp}"),
    )?;
    ensure!(
        (hm, hp) > (next_msn, next_part) || after.segments.iter().any(|s| s.0 == next_msn),
        "the blocking answer does not contain part {next_msn}.{next_part}"
    );
    let segment = http.get(
        &server.url(&format!("/hls/main/source/1/{}.m4s", live.segments[0].0)),
        &[],
    )?;
    ensure!(segment.status == 200, "segment: HTTP {}", segment.status);
    assert_cache(&segment, "public, max-age=31536000, immutable", "segment")?;
    let init = http.get(&server.url("/hls/main/source/1/init.mp4"), &[])?;
    ensure!(init.status == 200, "init: HTTP {}", init.status);
    assert_cache(&init, "public, max-age=31536000, immutable", "init")?;
    let future = http.get(
        &server.url(&format!("/hls/main/source/1/{}.m4s", msn + 50)),
        &[],
    )?;
    ensure!(
        future.status == 404,
        "a far future segment: HTTP {}",
        future.status
    );
    assert_cache(&future, "no-store", "404 object")?;

    // A channel name that is not one never reaches the disk spool.
    let escape = http.get(&server.url("/hls/%2E%2E/source/1/init.mp4"), &[])?;
    ensure!(
        escape.status == 404,
        "dot-dot channel: HTTP {}",
        escape.status
    );

    // Requests the spec refuses at once.
    let too_far = http.get(&format!("{media}?_HLS_msn={}", wm + 3), &[])?;
    ensure!(
        too_far.status == 400,
        "_HLS_msn past last+2: HTTP {}",
        too_far.status
    );
    assert_cache(&too_far, "public, max-age=1", "400")?;
    let part_alone = http.get(&format!("{media}?_HLS_part=1"), &[])?;
    ensure!(
        part_alone.status == 400,
        "_HLS_part alone: HTTP {}",
        part_alone.status
    );

    // The publisher leaves (the generation waits for it): the playlist holds still, so
    // a delta update can be compared with the full playlist, and a request for the
    // next segment can never be satisfied: 503 after 3 target durations.
    // Long enough for segments older than CAN-SKIP-UNTIL (6 × TD = 18 s).
    wait_live(http, server, "main", 11)?;
    publisher.kill();
    std::thread::sleep(Duration::from_millis(800));
    let full = http.get(&media, &[])?.text();
    let delta = http.get(&format!("{media}?_HLS_skip=YES"), &[])?.text();
    let (lf, ld) = (listing(&full), listing(&delta));
    ensure!(
        ld.skipped > 0,
        "no EXT-X-SKIP in the delta update:\n{delta}"
    );
    ensure!(
        lf.segments.ends_with(&ld.segments)
            && lf.segments.len() == ld.segments.len() + ld.skipped as usize,
        "the delta update does not match the full playlist:\nfull:\n{full}\ndelta:\n{delta}"
    );
    // After EXT-X-SKIP the delta repeats the tail of the full playlist line for line
    // (it restates EXT-X-MAP for the first segment it lists).
    let lines = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("#EXT-X-MAP"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let delta_tail: Vec<String> = lines(&delta)
        .into_iter()
        .skip_while(|l| !l.starts_with("#EXT-X-SKIP"))
        .skip(1)
        .collect();
    ensure!(
        lines(&full).ends_with(&delta_tail),
        "delta tail differs:\nfull:\n{full}\ndelta:\n{delta}"
    );
    let last = lf.segments.last().map(|s| s.0).unwrap_or(0);
    let never = http.get(&format!("{media}?_HLS_msn={}", last + 2), &[])?;
    ensure!(
        never.status == 503,
        "unsatisfiable blocking request: HTTP {}",
        never.status
    );
    ensure!(
        never.elapsed >= Duration::from_secs(u64::from(td) * 3 - 1),
        "503 came after {:?}, before 3 target durations",
        never.elapsed
    );
    assert_cache(&never, "public, max-age=1", "503")?;
    Ok(())
}

#[test]
fn blocking_reload_delta_updates_and_cache_headers() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-protocol")?;
    let server = Server::start(&tmp.path().join("node"), &[])?;
    check_viewer_protocol(
        &server,
        &Http::new(None)?,
        &f.gop60,
        &tmp.path().join("ff.log"),
    )
    .with_context(|| server.log())
}

#[test]
fn the_same_over_http2_with_tls() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-tls")?;
    let tls = TlsFiles::create(tmp.path())?;
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let server = Server::start(
        &tmp.path().join("node"),
        &["--tls-cert", &cert, "--tls-key", &key],
    )?;
    let http = Http::new(Some(&tls.cert_pem))?;
    let health = http.get(&server.url("/healthz"), &[])?;
    ensure!(
        health.status == 200,
        "healthz over TLS: HTTP {}",
        health.status
    );
    ensure!(
        health.version == reqwest::Version::HTTP_2,
        "expected HTTP/2 by ALPN, got {:?}",
        health.version
    );
    check_viewer_protocol(&server, &http, &f.gop60, &tmp.path().join("ff.log"))
        .with_context(|| server.log())
}

/// `sluice edge` with a certificate speaks TLS with HTTP/2 by ALPN, as a node does
/// (Safari needs HTTP/2 for low-latency HLS): playlists, parts and the player script.
#[test]
fn an_edge_serves_over_http2_with_tls() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("edge-tls")?;
    let tls = TlsFiles::create(tmp.path())?;
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let server = Server::start(&tmp.path().join("node"), &[])?;
    let key_of_main = server.main_key()?;
    let _publisher = Publisher::ffmpeg_loop(
        &f.gop60,
        &server.rtmp_url(&key_of_main),
        &tmp.path().join("ff.log"),
    )?;
    let plain = Http::new(None)?;
    wait_live(&plain, &server, "main", 2)?;
    let edge = EdgeProcess::start(
        &tmp.path().join("edge.log"),
        &[server.base()],
        &["--tls-cert", &cert, "--tls-key", &key],
    )?;
    let http = Http::new(Some(&tls.cert_pem))?;
    let playlist = http.get(&edge.url("/hls/main/source/index.m3u8"), &[])?;
    ensure!(
        playlist.status == 200 && playlist.version == reqwest::Version::HTTP_2,
        "the media playlist through the TLS edge: HTTP {} over {:?}\n{}",
        playlist.status,
        playlist.version,
        edge.log()
    );
    let part = sluice_e2e::hinted_part(&playlist.text()).context("a preload hint")?;
    let part = http.get(&edge.url(&format!("/hls/main/source/{part}")), &[])?;
    ensure!(
        part.status == 200 && !part.body.is_empty() && part.version == reqwest::Version::HTTP_2,
        "the hinted part through the TLS edge: HTTP {} over {:?}",
        part.status,
        part.version
    );
    let script = http.get(&edge.url("/assets/hls-1.7.4.min.js"), &[])?;
    ensure!(
        script.status == 200 && script.body.len() > 100_000,
        "the player script from the TLS edge: HTTP {}",
        script.status
    );
    Ok(())
}

#[test]
fn a_publisher_back_within_the_grace_continues_the_playlist() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-reconnect")?;
    let server = Server::start(
        &tmp.path().join("node"),
        &["--hlsjs-url", HLSJS_URL, "--reconnect-grace-ms", "8000"],
    )?;
    let key = server.main_key()?;
    let url = server.rtmp_url(&key);
    let mut publisher = Publisher::ffmpeg_loop(&f.gop60, &url, &tmp.path().join("ff1.log"))?;
    let http = Http::new(None)?;
    wait_live(&http, &server, "main", 2)?;
    let before = get_listing(&http, &server, "main")?;

    // A viewer plays through the publisher's drop and return.
    let watch = server.url("/watch/main");
    let viewer = std::thread::spawn(move || play_page(&watch, 16, Duration::from_secs(90)));
    std::thread::sleep(Duration::from_secs(6));
    publisher.kill();
    std::thread::sleep(Duration::from_secs(2));
    let _back = Publisher::ffmpeg_loop(&f.gop60, &url, &tmp.path().join("ff2.log"))?;
    let played = viewer
        .join()
        .map_err(|_| anyhow::anyhow!("viewer thread"))??;
    ensure!(
        played.ok,
        "hls.js stopped across the reconnect: {}",
        played.report
    );
    eprintln!(
        "played {:.1} s across the reconnect",
        played.report["played"].as_f64().unwrap_or(0.0)
    );

    let after = wait_for(Duration::from_secs(20), "a discontinuity", || {
        get_listing(&http, &server, "main")
            .ok()
            .filter(|l| l.segments.iter().any(|s| s.2))
    })?;
    ensure!(
        after.media_sequence >= before.media_sequence,
        "media sequence went back"
    );
    ensure!(
        after.segments.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "segment numbers not consecutive: {:?}",
        after.segments
    );
    let uris_same_generation = http.get(&media_url(&server, "main"), &[])?.text();
    ensure!(
        !uris_same_generation.contains("\n2/"),
        "the returning publisher started a new generation"
    );

    // Gone for longer than the grace: the playlist ends.
    drop(_back);
    let ended = wait_for(
        Duration::from_secs(25),
        "EXT-X-ENDLIST after the grace",
        || get_listing(&http, &server, "main").ok().filter(|l| l.ended),
    )?;
    ensure!(
        ended.hint.is_none(),
        "an ended playlist keeps a preload hint"
    );
    validate_playlists(&[media_url(&server, "main")])?;
    Ok(())
}

#[test]
fn long_gops_and_a_gstreamer_publisher() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-gop")?;
    let server = Server::start(&tmp.path().join("node"), &[])?;
    let key = server.main_key()?;
    let _ffmpeg = Publisher::ffmpeg_loop(
        &f.gop250,
        &server.rtmp_url(&key),
        &tmp.path().join("ff.log"),
    )?;
    // A second channel, published by GStreamer's own RTMP client.
    let created = server.cli(&["channel", "create", "gst", "--json"])?;
    let created: serde_json::Value = serde_json::from_str(&created)?;
    let gst_key = created["stream_key"]
        .as_str()
        .context("stream_key")?
        .to_string();
    let gst = Publisher::gstreamer(&server.rtmp_url(&gst_key), &tmp.path().join("gst.log"))?;
    let http = Http::new(None)?;
    let long = wait_live(&http, &server, "main", 5)?;
    ensure!(
        long.target_duration == 3,
        "TARGETDURATION {}",
        long.target_duration
    );
    for (msn, d, _) in &long.segments {
        ensure!(
            *d <= 3.0 + 0.5,
            "segment {msn} lasts {d} s, over TARGETDURATION"
        );
    }
    validate_playlists(&[
        server.url("/hls/main/index.m3u8"),
        media_url(&server, "main"),
    ])?;
    // The operator is told that viewers join up to 8 s behind: in the channel's API
    // answer (and so on the dashboard and in `sluice channel show`), and in the log,
    // once for the publish.
    let warning = wait_for(Duration::from_secs(30), "the keyframe warning", || {
        let (status, v) = server
            .api(
                &http,
                reqwest::Method::GET,
                "/api/v1/channels/main",
                serde_json::Value::Null,
            )
            .ok()?;
        let first = v["channel"]["warnings"].as_array()?.first()?.as_str()?;
        (status == 200).then(|| first.to_string())
    })?;
    ensure!(
        warning
            == "keyframe interval 8.3 s: viewers join up to 8 s behind; set the encoder's \
                   keyframe interval to 1-2 s",
        "warning: {warning}"
    );
    std::thread::sleep(Duration::from_secs(9));
    let logged = server
        .log()
        .lines()
        .filter(|l| l.contains("keyframe interval 8.3 s") && l.contains("channel=main"))
        .count();
    ensure!(
        logged == 1,
        "the warning was logged {logged} times:\n{}",
        server.log()
    );
    wait_live(&http, &server, "gst", 2).with_context(|| gst.output())?;
    validate_playlists(&[server.url("/hls/gst/index.m3u8"), media_url(&server, "gst")])?;
    let mv = http.get(&server.url("/hls/gst/index.m3u8"), &[])?.text();
    ensure!(
        mv.contains("avc1.") && mv.contains("mp4a.40.2"),
        "codecs: {mv}"
    );
    Ok(())
}

/// Sends bytes to the RTMP port and closes.
fn send_raw(port: u16, bytes: &[u8]) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(bytes)?;
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
    Ok(())
}

/// An RTMP client that connects, publishes, then sends `@setDataFrame` with no
/// arguments (which the session library cannot handle).
fn publish_empty_set_data_frame(port: u16, key: &str) -> Result<()> {
    use rml_rtmp::rml_amf0::Amf0Value;
    let mut publisher = RtmpPublisher::publish(port, "live", key)?;
    publisher.send_amf0_data(vec![Amf0Value::Utf8String("@setDataFrame".into())])?;
    // The server ends this connection.
    ensure!(
        publisher.closed_within(Duration::from_secs(10))?,
        "the server did not close the session"
    );
    Ok(())
}

#[test]
fn bad_input_ends_its_own_connection_and_the_live_stream_plays_on() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-bad")?;
    let mut server = Server::start(&tmp.path().join("node"), &["--hlsjs-url", HLSJS_URL])?;
    let key = server.main_key()?;
    let _live =
        Publisher::ffmpeg_loop(&f.gop60, &server.rtmp_url(&key), &tmp.path().join("ff.log"))?;
    let http = Http::new(None)?;
    let before = wait_live(&http, &server, "main", 2)?;

    // A wrong key, and a second publisher for the live channel: each refused, with
    // the reason logged.
    for (name, key, reason) in [
        ("wrong", "sk-not-a-key", "unknown or revoked stream key"),
        ("second", key.as_str(), "already live"),
    ] {
        let mut refused =
            Publisher::ffmpeg_loop(&f.gop60, &server.rtmp_url(key), &tmp.path().join(name))?;
        let code = refused.wait_exit(Duration::from_secs(15));
        ensure!(code.is_some_and(|c| c != 0), "{name} publisher not refused");
        ensure!(server.log().contains(reason), "no logged reason {reason:?}");
    }

    // Garbage, a truncated handshake, and @setDataFrame with no arguments.
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    send_raw(server.rtmp, &noise)?;
    send_raw(server.rtmp, &[3u8; 700])?; // C0 + part of C1, then gone
    let gst_like = server.cli(&["channel", "create", "victim", "--json"])?;
    let victim: serde_json::Value = serde_json::from_str(&gst_like)?;
    publish_empty_set_data_frame(server.rtmp, victim["stream_key"].as_str().context("key")?)?;

    // A slow-loris client trickles a request that never ends.
    let mut loris = TcpStream::connect(("127.0.0.1", server.http))?;
    loris.write_all(b"GET /hls/main/index.m3u8 HTTP/1.1\r\nHost: x\r\n")?;
    let watch = server.url("/watch/main");
    let viewer = std::thread::spawn(move || play_page(&watch, 5, Duration::from_secs(60)));
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let _ = loris.write_all(b"X-a: b\r\n");
    }
    let played = viewer
        .join()
        .map_err(|_| anyhow::anyhow!("viewer thread"))??;
    ensure!(
        played.ok,
        "the live stream stopped playing: {}",
        played.report
    );
    ensure!(server.is_running(), "the server died");
    let after = get_listing(&http, &server, "main")?;
    ensure!(
        after.segments.last().map(|s| s.0) > before.segments.last().map(|s| s.0),
        "the live playlist stopped advancing"
    );
    Ok(())
}

#[test]
fn an_unwritable_spool_degrades_the_stream_and_serving_goes_on() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-spool")?;
    let dir = tmp.path().join("node");
    std::fs::create_dir_all(&dir)?;
    // A file where the spool folder should be: every write under it fails (even as root).
    std::fs::write(dir.join("spool"), b"not a folder")?;
    let server = Server::start(&dir, &[])?;
    let http = Http::new(None)?;
    let ready = http.get(&server.url("/readyz"), &[])?;
    ensure!(
        ready.status == 503 && ready.text().contains("spool"),
        "readyz: {} {}",
        ready.status,
        ready.text()
    );
    let key = server.main_key()?;
    let _p = Publisher::ffmpeg_loop(&f.gop60, &server.rtmp_url(&key), &tmp.path().join("ff.log"))?;
    wait_live(&http, &server, "main", 2)?;
    let token = server.admin_token()?;
    let degraded = wait_for(Duration::from_secs(20), "spool_error in the API", || {
        let r = http
            .get(
                &server.url("/api/v1/channels/main"),
                &[("authorization", &format!("Bearer {token}"))],
            )
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["generation"]["media"]["spool_error"]
            .as_str()
            .map(String::from)
    })?;
    eprintln!("degraded: {degraded}");
    ensure!(
        server.log().contains("spool write failed"),
        "no error logged"
    );
    let m = http.get(&server.url("/metrics"), &[])?.text();
    ensure!(
        !m.contains("sluice_spool_errors_total 0\n"),
        "spool errors not counted:\n{m}"
    );
    Ok(())
}

#[test]
fn a_node_restarted_mid_stream_takes_its_publisher_back() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("origin-restart")?;
    let dir = tmp.path().join("node");
    let flags = ["--reconnect-grace-ms", "30000"];
    let server = Server::start(&dir, &flags)?;
    let key = server.main_key()?;
    let publisher = Publisher::ffmpeg_loop(
        &f.gop60,
        &server.rtmp_url(&key),
        &tmp.path().join("ff1.log"),
    )?;
    let http = Http::new(None)?;
    let before = wait_live(&http, &server, "main", 3)?;
    drop(publisher);
    drop(server); // kill -9

    // The restarted node releases the generation it held, and the returning publisher
    // continues it: after every sequence number served before, with a discontinuity,
    // and an init segment whose name no earlier URL used.
    let server = Server::start(&dir, &flags)?;
    let _back = Publisher::ffmpeg_loop(
        &f.gop60,
        &server.rtmp_url(&key),
        &tmp.path().join("ff2.log"),
    )?;
    let after = wait_live(&http, &server, "main", 2)?;
    let last_before = before.segments.last().map(|s| s.0).unwrap_or(0);
    let first_after = after.segments.first().context("segments")?;
    ensure!(
        first_after.0 > last_before,
        "sequence went back: {} after {last_before}",
        first_after.0
    );
    ensure!(first_after.2, "no discontinuity at the resumed start");
    // The segments before it, whose media a player behind the edge may not have had,
    // are listed again as gaps, up to the first own one.
    ensure!(
        after.gaps.last().map(|g| g + 1) == Some(first_after.0)
            && after.gaps.windows(2).all(|w| w[1] == w[0] + 1),
        "gaps {:?} before the first own segment {}",
        after.gaps,
        first_after.0
    );
    let text = http.get(&media_url(&server, "main"), &[])?.text();
    let map_in = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
            .map(|u| u.trim_end_matches('"').to_string())
    };
    // The gaps under the init segment the node named before the restart; its own
    // segments under a new one.
    let (gaps, own) = text
        .split_once("#EXT-X-DISCONTINUITY\n")
        .context("no discontinuity")?;
    ensure!(
        map_in(gaps).as_deref() == Some("1/init.mp4"),
        "the gaps are not under the earlier init segment:\n{text}"
    );
    let map = map_in(own).context("EXT-X-MAP of the own segments")?;
    ensure!(
        map.starts_with("1/init-"),
        "the resumed generation reuses an init name: {map}"
    );
    let init = http.get(&server.url(&format!("/hls/main/source/{map}")), &[])?;
    ensure!(init.status == 200, "resumed init: HTTP {}", init.status);
    // Objects served before the restart are still there, from the disk spool.
    let old = http.get(
        &server.url(&format!("/hls/main/source/1/{}.m4s", before.segments[0].0)),
        &[],
    )?;
    ensure!(
        old.status == 200,
        "a segment from before the restart: HTTP {}",
        old.status
    );
    validate_playlists(&[media_url(&server, "main")])?;
    Ok(())
}
