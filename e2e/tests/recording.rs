//! Recordings and DVR end to end: ffmpeg publishes over RTMP; the recording is read
//! back as HLS VOD (hls-parser strict, ffprobe, hls.js in Chromium) and as one MP4
//! from a node that is not the origin; a failing disk fails the recording, not the live
//! stream; retention deletes a finished recording on every node and never the one being
//! written; a 5-minute DVR window answers delta updates; a 1 GiB recording downloads
//! through an external edge whose memory stays bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use sluice_e2e::node::{three_nodes, wait_for, EdgeProcess, Http, Publisher, RssSampler, Server};
use sluice_e2e::{ffprobe, make_test_stream, play_url, run_ok, validate_playlists, TempDir};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

struct Fixtures {
    _dir: TempDir,
    /// 30 s, 2 s keyframes: one publisher session.
    show: PathBuf,
    /// 330 s of tiny video with 1 s keyframes, pushed faster than real time.
    long: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = TempDir::for_process("recording-fixtures").expect("temp dir");
        let show = dir.path().join("show.flv");
        let long = dir.path().join("long.flv");
        let x264 = |g: &'static str, preset: &'static str| {
            ["-preset", preset, "-g", g, "-keyint_min", g, "-b:v", "300k"]
        };
        make_test_stream(&show, "320x180", 30, &x264("60", "veryfast")).expect("show fixture");
        make_test_stream(&long, "160x90", 330, &x264("30", "ultrafast")).expect("long fixture");
        Fixtures {
            _dir: dir,
            show,
            long,
        }
    })
}

/// ffmpeg pushing a whole file as fast as it reads it (no `-re`), until it ends.
fn push_once(file: &Path, url: &str) -> Result<()> {
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "flv", url]),
        Duration::from_secs(120),
    )
    .map(|_| ())
}

/// A config file whose disk sweep (and retention) runs every second, and whose nodes
/// keep an ended generation's objects (and its record in the state) for 10 s only.
fn fast_sweep(dir: &Path) -> Result<String> {
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        "spool_prune_interval_s = 1\nspool_retention_s = 10\n",
    )?;
    Ok(path.to_str().context("path")?.to_string())
}

fn recording(http: &Http, node: &Server, channel: &str, generation: u64) -> Result<(u16, Value)> {
    node.api(
        http,
        reqwest::Method::GET,
        &format!("/api/v1/channels/{channel}/recordings/{generation}"),
        Value::Null,
    )
}

#[test]
fn a_stream_with_a_reconnect_is_one_recording_played_as_vod_from_another_node() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("recording-vod")?;
    let config = fast_sweep(tmp.path())?;
    let nodes = three_nodes(tmp.path(), &["--config", &config])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let url = nodes[0].rtmp_url(&key);
    let pushed = ffprobe(f.show.to_str().context("path")?)?;

    // The encoder drops after 30 s and comes back within the grace: one generation.
    push_once(&f.show, &url)?;
    push_once(&f.show, &url)?;
    let stopped = nodes[0].cli(&["stream", "stop", "main", "--json"])?;
    ensure!(stopped.contains("\"generation\":1"), "stop: {stopped}");
    let finalized = wait_for(Duration::from_secs(30), "recording finalized", || {
        let (status, v) = recording(&http, &nodes[2], "main", 1).ok()?;
        (status == 200 && v["status"] == "finalized").then_some(v)
    })?;
    let listed = nodes[2].cli(&["recording", "list", "main", "--json"])?;
    let listed: Value = serde_json::from_str(&listed)?;
    ensure!(
        listed["recordings"].as_array().map(Vec::len) == Some(1),
        "one recording expected: {listed}"
    );
    let expected_s = 2.0 * pushed.end_s;
    let recorded_s = finalized["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    ensure!(
        (recorded_s - expected_s).abs() <= 1.0,
        "recorded {recorded_s:.2} s of {expected_s:.2} s pushed"
    );

    // From node 3, which never had the stream: pulled through from node 1.
    let vod = nodes[2].url("/vod/main/1/index.m3u8");
    let text = http.get(&vod, &[])?.text();
    ensure!(
        text.matches("#EXT-X-DISCONTINUITY").count() == 1
            && text.contains("#EXT-X-PLAYLIST-TYPE:VOD")
            && text.contains("#EXT-X-ENDLIST"),
        "VOD playlist:\n{text}"
    );
    validate_playlists(std::slice::from_ref(&vod))?;
    let probed = ffprobe(&vod)?;
    let frames = |p: &sluice_e2e::Probe| p.frames.get("video").copied().unwrap_or(0);
    ensure!(
        frames(&probed) == 2 * frames(&pushed),
        "VOD decodes {} video frames of {} pushed",
        frames(&probed),
        2 * frames(&pushed)
    );
    ensure!(
        (probed.end_s - expected_s).abs() <= 1.0,
        "VOD lasts {:.2} s, the stream {expected_s:.2} s",
        probed.end_s
    );
    let played = play_url(&vod, "{}", 5, Duration::from_secs(60))?;
    ensure!(
        played.ok,
        "hls.js could not play the VOD: {}",
        played.report
    );
    // An external edge (not a cluster member) passes recordings through too.
    let edge = EdgeProcess::start(&tmp.path().join("edge.log"), &[nodes[1].base()], &[])?;
    let via_edge = http.get(&edge.url("/vod/main/1/index.m3u8"), &[])?;
    ensure!(
        via_edge.status == 200 && via_edge.text() == text,
        "the external edge answered {}:\n{}",
        via_edge.status,
        via_edge.text()
    );
    let mp4 = ffprobe(&edge.url("/vod/main/1.mp4"))?;
    ensure!(
        frames(&mp4) == 2 * frames(&pushed) && mp4.frames.get("audio").copied().unwrap_or(0) > 0,
        "the MP4 download decodes {:?}, {} video frames pushed",
        mp4.frames,
        2 * frames(&pushed)
    );

    // Retention by size: the finished recording goes from the state and every disk;
    // the one being written (generation 2, live) stays.
    let live = Publisher::ffmpeg_loop(&f.show, &url, &tmp.path().join("live.log"))?;
    wait_for(Duration::from_secs(30), "generation 2 recording", || {
        let (status, v) = recording(&http, &nodes[0], "main", 2).ok()?;
        (status == 200 && v["segments"].as_u64() > Some(0)).then_some(())
    })?;
    let (status, _) = nodes[0].api(
        &http,
        reqwest::Method::PATCH,
        "/api/v1/channels/main",
        json!({"retention": {"max_age_s": null, "max_bytes": 1}}),
    )?;
    ensure!(status == 200, "retention patch answered {status}");
    let first = nodes[0].dir.join("spool/main/1");
    wait_for(Duration::from_secs(20), "recording 1 pruned", || {
        let (status, _) = recording(&http, &nodes[0], "main", 1).ok()?;
        (status == 404 && !first.exists()).then_some(())
    })?;
    ensure!(
        http.get(&vod, &[])?.status == 404,
        "a deleted recording still plays from node 3"
    );
    let (status, v) = recording(&http, &nodes[0], "main", 2)?;
    ensure!(
        status == 200 && v["status"] == "recording" && nodes[0].dir.join("spool/main/2").exists(),
        "the recording being written was touched: {status} {v}"
    );
    // The generation whose recording was deleted leaves the replicated state after the
    // nodes' retention; the live one stays.
    let listed = |node: &Server| -> Option<Vec<u64>> {
        let (status, v) = node
            .api(
                &http,
                reqwest::Method::GET,
                "/api/v1/channels/main/generations",
                Value::Null,
            )
            .ok()?;
        (status == 200).then(|| {
            v["generations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["number"].as_u64())
                .collect()
        })
    };
    wait_for(Duration::from_secs(30), "generation 1 forgotten", || {
        nodes
            .iter()
            .all(|n| listed(n).is_some_and(|l| l == [2]))
            .then_some(())
    })
    .with_context(|| format!("{:?}", listed(&nodes[0])))?;
    drop(live);
    Ok(())
}

#[test]
fn a_recording_continued_on_another_node_is_one_vod() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("recording-pieces")?;
    let nodes = three_nodes(tmp.path(), &[])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let pushed = ffprobe(f.show.to_str().context("path")?)?;
    // The encoder comes back on node 2 (a DNS name with two addresses, say).
    push_once(&f.show, &nodes[0].rtmp_url(&key))?;
    push_once(&f.show, &nodes[1].rtmp_url(&key))?;
    nodes[1].cli(&["stream", "stop", "main", "--json"])?;
    let finalized = wait_for(Duration::from_secs(30), "recording finalized", || {
        let (status, v) = recording(&http, &nodes[2], "main", 1).ok()?;
        (status == 200 && v["status"] == "finalized").then_some(v)
    })?;
    let holders: Vec<u64> = finalized["pieces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["node"].as_u64())
        .collect();
    ensure!(
        holders == [nodes[0].node_id()?, nodes[1].node_id()?],
        "pieces: {finalized}"
    );
    let vod = nodes[2].url("/vod/main/1/index.m3u8");
    let text = http.get(&vod, &[])?.text();
    ensure!(
        text.matches("#EXT-X-DISCONTINUITY").count() == 1 && text.contains("#EXT-X-ENDLIST"),
        "VOD playlist:\n{text}"
    );
    validate_playlists(std::slice::from_ref(&vod))?;
    let frames = |p: &sluice_e2e::Probe| p.frames.get("video").copied().unwrap_or(0);
    let probed = ffprobe(&vod)?;
    ensure!(
        frames(&probed) == 2 * frames(&pushed),
        "VOD decodes {} video frames of {} pushed",
        frames(&probed),
        2 * frames(&pushed)
    );
    let mp4 = ffprobe(&nodes[2].url("/vod/main/1.mp4"))?;
    ensure!(
        frames(&mp4) == 2 * frames(&pushed) && (mp4.end_s - probed.end_s).abs() <= 1.0,
        "the MP4 download: {} video frames, {:.2} s; the VOD {:.2} s",
        frames(&mp4),
        mp4.end_s,
        probed.end_s
    );
    Ok(())
}

#[test]
fn an_unwritable_recording_fails_with_a_reason_while_the_live_stream_plays() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("recording-fail")?;
    let server = Server::start(&tmp.path().join("n1"), &[])?;
    // Where the channel's folder would go, a file: every write of the spool fails.
    std::fs::create_dir_all(server.dir.join("spool"))?;
    std::fs::write(server.dir.join("spool/main"), b"not a folder")?;
    let http = Http::new(None)?;
    let _publisher = Publisher::ffmpeg_loop(
        &f.show,
        &server.rtmp_url(&server.main_key()?),
        &tmp.path().join("ffmpeg.log"),
    )?;
    let failed = wait_for(Duration::from_secs(30), "recording failed", || {
        let (status, v) = recording(&http, &server, "main", 1).ok()?;
        (status == 200 && v["status"] == "failed").then_some(v)
    })?;
    let reason = failed["reason"].as_str().unwrap_or_default();
    ensure!(reason.contains("writing"), "reason: {reason:?}");
    ensure!(
        http.metric(&server.base(), "sluice_recording_failures_total ")? >= 1,
        "no failure counted in /metrics"
    );
    let played = play_url(
        &server.url("/hls/main/index.m3u8"),
        "{}",
        6,
        Duration::from_secs(60),
    )?;
    ensure!(played.ok, "live playback broke: {}", played.report);
    let log = server.log();
    ensure!(
        log.contains("recording failed"),
        "no error logged for the failed recording"
    );
    Ok(())
}

#[test]
fn a_five_minute_dvr_window_answers_small_delta_updates() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("recording-dvr")?;
    let server = Server::start(&tmp.path().join("n1"), &[])?;
    let http = Http::new(None)?;
    let (status, created) = server.api(
        &http,
        reqwest::Method::POST,
        "/api/v1/channels",
        json!({
            "name": "dvr",
            "recording": false,
            "ll_hls": {
                "part_target_ms": 250,
                "segment_target_ms": 1000,
                "window_segments": 6,
                "dvr_window_s": 300
            }
        }),
    )?;
    ensure!(status == 201, "create answered {status}: {created}");
    let key = created["stream_key"].as_str().context("stream key")?;
    // 330 s of media pushed in a few seconds: the window fills at once.
    push_once(&f.long, &server.rtmp_url(key))?;
    let media = server.url("/hls/dvr/source/index.m3u8");
    let segments = |text: &str| text.lines().filter(|l| l.starts_with("#EXTINF")).count();
    let full = wait_for(Duration::from_secs(30), "a full DVR window", || {
        let text = http.get(&media, &[]).ok()?.text();
        (segments(&text) >= 295).then_some(text)
    })?;
    ensure!(
        segments(&full) <= 301,
        "{} segments listed for a 300 s window",
        segments(&full)
    );
    let delta_url = format!("{media}?_HLS_skip=YES");
    let delta = http.get(&delta_url, &[])?.text();
    ensure!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="),
        "no skip in the delta update:\n{delta}"
    );
    ensure!(
        delta.len() * 5 <= full.len(),
        "delta update {} bytes, full playlist {} bytes",
        delta.len(),
        full.len()
    );
    validate_playlists(&[media.clone(), delta_url])?;
    // The window's oldest segment left memory long ago: it comes from disk.
    let oldest = full
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .context("a segment URI")?;
    let reply = http.get(&server.url(&format!("/hls/dvr/source/{oldest}")), &[])?;
    ensure!(
        reply.status == 200 && !reply.body.is_empty(),
        "oldest segment {oldest} answered {}",
        reply.status
    );
    Ok(())
}

/// Every recorded segment file (`<msn>.m4s`) under `dir`.
fn segment_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            segment_files(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".m4s"))
            .is_some_and(|n| n.parse::<u64>().is_ok())
        {
            out.push(path);
        }
    }
    Ok(())
}

/// An edge passes a recording's MP4 download through with at most its cache object
/// limit plus a read-ahead window in memory, however large the file: 1 GiB through an
/// edge with a 64 MiB cache stays under 64 MiB of cache plus 64 MiB for the process
/// and the window (about 20 MiB idle). The recording's segments are grown on disk
/// (zeros at the end: an edge passes bytes through whatever they hold) so the test
/// does not have to encode a gigabyte.
#[test]
fn a_one_gib_recording_downloads_through_an_edge_in_bounded_memory() -> Result<()> {
    let _serial = serial();
    let f = fixtures();
    let tmp = TempDir::new("recording-gib")?;
    let node = Server::start(&tmp.path().join("node"), &[])?;
    let http = Http::new(None)?;
    let key = node.main_key()?;
    push_once(&f.show, &node.rtmp_url(&key))?;
    node.cli(&["stream", "stop", "main", "--json"])?;
    wait_for(Duration::from_secs(30), "recording finalized", || {
        let (status, v) = recording(&http, &node, "main", 1).ok()?;
        (status == 200 && v["status"] == "finalized").then_some(())
    })?;
    let generation = node.dir.join("spool/main/1");
    let mut segments = Vec::new();
    segment_files(&generation, &mut segments)?;
    ensure!(segments.len() >= 10, "recorded segments: {segments:?}");
    let each = (1u64 << 30).div_ceil(segments.len() as u64);
    let mut expected = 0;
    for s in &segments {
        let file = std::fs::OpenOptions::new().write(true).open(s)?;
        file.set_len(each.max(file.metadata()?.len()))?;
        expected += file.metadata()?.len();
    }
    let init = std::fs::read(node.dir.join("spool/main/1/source/init.mp4"))
        .context("the recording's init segment")?;
    expected += init.len() as u64;
    ensure!(expected >= 1 << 30, "{expected} bytes recorded");

    let cache = 64u64 << 20;
    let edge = EdgeProcess::start(
        &tmp.path().join("edge.log"),
        &[node.base()],
        &["--cache-bytes", &cache.to_string()],
    )?;
    let sampler = RssSampler::start(edge.pid().context("edge pid")?);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut response = client.get(edge.url("/vod/main/1.mp4")).send()?;
    ensure!(response.status() == 200, "download: {}", response.status());
    let got = std::io::copy(&mut response, &mut std::io::sink())?;
    let peak = sampler.peak();
    drop(sampler);
    ensure!(got == expected, "downloaded {got} of {expected} bytes");
    let bound = cache + (64 << 20);
    ensure!(
        peak > 0 && peak <= bound,
        "the edge's RSS peaked at {} MiB passing 1 GiB through (bound {} MiB)",
        peak >> 20,
        bound >> 20
    );
    eprintln!("1 GiB through the edge: RSS peak {} MiB", peak >> 20);
    Ok(())
}
