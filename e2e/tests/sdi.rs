//! SDI capture end to end, with a simulated capture port (GStreamer's test sources in
//! place of a DeckLink input): discovery creates the port; label, enable and bind make
//! the channel live; its playlist validates strict, ffprobe decodes H.264 and AAC at
//! the configured keyframe interval, hls.js plays it; a lost signal makes the
//! generation wait (reconnecting) and its return continues the playlist with a
//! discontinuity. Runs with `--features sdi` against a `sluice` built with it.

#![cfg(feature = "sdi")]

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use sluice_e2e::node::{wait_for, Http, Server};
use sluice_e2e::{play_url, run_ok, validate_playlists, TempDir};

const PORT: u64 = 1000;

fn port(server: &Server) -> Result<Value> {
    let listed: Value = serde_json::from_str(&server.cli(&["port", "list", "--json"])?)?;
    listed["capture_ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["device"] == PORT))
        .cloned()
        .context("no simulated port listed")
}

fn state(http: &Http, server: &Server) -> Option<(String, u64)> {
    let (status, v) = server
        .api(
            http,
            reqwest::Method::GET,
            "/api/v1/channels/studio/status",
            Value::Null,
        )
        .ok()?;
    (status == 200).then(|| {
        (
            v["state"].as_str().unwrap_or_default().to_string(),
            v["generation"]["number"].as_u64().unwrap_or(0),
        )
    })
}

#[test]
fn a_simulated_capture_port_feeds_a_channel_that_survives_signal_loss() -> Result<()> {
    let tmp = TempDir::new("sdi")?;
    let server = Server::start(&tmp.path().join("n1"), &["--sdi-simulated-ports", "1"])?;
    let http = Http::new(None)?;
    let me = server.node_id()?.to_string();
    let device = PORT.to_string();

    // Discovery: the port appears, disabled, with no channel.
    let found = wait_for(Duration::from_secs(30), "the simulated port", || {
        port(&server).ok()
    })?;
    ensure!(
        found["enabled"] == false && found["present"] == true && found["channel"].is_null(),
        "{found}"
    );
    let (status, created) = server.api(
        &http,
        reqwest::Method::POST,
        "/api/v1/channels",
        json!({"name": "studio", "recording": false}),
    )?;
    ensure!(status == 201, "create: {status} {created}");
    let (status, patched) = server.api(&http, reqwest::Method::PATCH,
        "/api/v1/channels/studio",
        json!({"sdi_encoding": {"video_bitrate_kbps": 800, "preset": "ultrafast", "keyframe_interval_ms": 2000}}),
    )?;
    ensure!(status == 200, "encoding: {status} {patched}");
    server.cli(&["port", "label", &me, &device, "Studio A", "--json"])?;
    server.cli(&["port", "enable", &me, &device, "--json"])?;
    // Enabled: a standby pipeline reports the signal and its mode.
    let standby = wait_for(Duration::from_secs(30), "a signal on the port", || {
        port(&server).ok().filter(|p| p["signal"] == true)
    })?;
    ensure!(
        standby["video_mode"] == "640x360@30" && standby["label"] == "Studio A",
        "{standby}"
    );
    server.cli(&["port", "bind", &me, &device, "studio", "--json"])?;
    // Bound with a signal: the channel's ingest.
    let media = server.url("/hls/studio/source/index.m3u8");
    let live = wait_for(Duration::from_secs(40), "three segments", || {
        let text = http.get(&media, &[]).ok()?.text();
        (text.matches("#EXTINF").count() >= 3).then_some(text)
    })?;
    validate_playlists(std::slice::from_ref(&media))?;
    ensure!(
        state(&http, &server).map(|s| s.0).as_deref() == Some("live"),
        "channel not live"
    );

    // ffprobe: H.264 and AAC, a keyframe every 60 frames (2 s at 30 fps).
    let generation = state(&http, &server).map(|s| s.1).unwrap_or(1);
    let segments: Vec<&str> = live
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .take(2)
        .collect();
    let mut file = http
        .get(
            &server.url(&format!("/hls/studio/source/{generation}/init.mp4")),
            &[],
        )?
        .body;
    for s in &segments {
        file.extend(
            http.get(&server.url(&format!("/hls/studio/source/{s}")), &[])?
                .body,
        );
    }
    let path = tmp.path().join("two-segments.mp4");
    std::fs::write(&path, &file)?;
    let streams = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(&path),
        Duration::from_secs(30),
    )?;
    ensure!(
        streams.contains("h264") && streams.contains("aac"),
        "codecs: {streams}"
    );
    let keys = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v",
                "-show_entries",
                "frame=key_frame",
                "-of",
                "csv=p=0",
            ])
            .arg(&path),
        Duration::from_secs(30),
    )?;
    let flags: Vec<&str> = keys
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let key_at: Vec<usize> = flags
        .iter()
        .enumerate()
        .filter(|(_, f)| f.starts_with('1'))
        .map(|(i, _)| i)
        .collect();
    ensure!(
        flags.len() >= 100
            && key_at.first() == Some(&0)
            && key_at.windows(2).all(|w| w[1] - w[0] == 60),
        "keyframes at {key_at:?} of {} frames",
        flags.len()
    );
    let played = play_url(&media, "{}", 5, Duration::from_secs(60))?;
    ensure!(played.ok, "hls.js: {}", played.report);
    // The stream's times start near zero, not where the encoder put them.
    let start = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=start_time",
                "-of",
                "csv=p=0",
            ])
            .arg(tmp.path().join("two-segments.mp4")),
        Duration::from_secs(30),
    )?;
    let start: f64 = start.trim().parse().unwrap_or(f64::MAX);
    ensure!(start < 3600.0, "the stream starts at {start} s");

    // The signal goes: the generation waits for it; it comes back: the same playlist.
    let path = format!("/api/v1/capture-ports/{me}/{PORT}/simulated-signal");
    let (status, _) = server.api(
        &http,
        reqwest::Method::PUT,
        &path,
        json!({"present": false}),
    )?;
    ensure!(status == 200, "cut: {status}");
    wait_for(Duration::from_secs(20), "reconnecting", || {
        (state(&http, &server)?.0 == "reconnecting").then_some(())
    })?;
    let lost = port(&server)?;
    ensure!(
        lost["signal"] == false && lost["error"].is_string(),
        "{lost}"
    );
    let (status, _) = server.api(&http, reqwest::Method::PUT, &path, json!({"present": true}))?;
    ensure!(status == 200, "restore: {status}");
    let resumed = wait_for(Duration::from_secs(40), "the playlist continued", || {
        let text = http.get(&media, &[]).ok()?.text();
        let after = text.split("\n#EXT-X-DISCONTINUITY\n").nth(1)?;
        (after.matches("#EXTINF").count() >= 1).then_some(text)
    })?;
    ensure!(
        state(&http, &server) == Some(("live".to_string(), generation)),
        "not the same generation live again: {:?}\n{resumed}",
        state(&http, &server)
    );
    validate_playlists(std::slice::from_ref(&media))?;
    // Only the port's node controls its signal; a real port has none to cut.
    let (status, _) = server.api(
        &http,
        reqwest::Method::PUT,
        &format!("/api/v1/capture-ports/{me}/0/simulated-signal"),
        json!({"present": false}),
    )?;
    ensure!(status == 404, "unknown port: {status}");
    Ok(())
}
