//! Scenario 2: player latency. hls.js (low-latency mode) in headless Chromium plays
//! the live stream for a while; the figure is `hls.latency`, its distance behind the
//! live edge, at the end. Sluice at 200 ms and 500 ms parts; the peer is nginx-rtmp's
//! classic HLS (2 s fragments, the same GOP) played the same way. Video.js 8 with its
//! defaults and Shaka 5 in low-latency mode play both too: their figure is the
//! distance behind the end of what they call seekable (they have no `hls.latency`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use sluice_e2e::node::{load_test_config, Http, Publisher, Server};
use sluice_e2e::{play_url, play_with, Playback, Player, TempDir};

use crate::live::{wait_live, MEDIA};
use crate::peer::Nginx;
use crate::{bench_stream, use_release_sluice, Table};

fn played(what: &str, p: Playback) -> Result<f64> {
    ensure!(p.ok, "hls.js did not play {what}: {}", p.report);
    p.latency
        .with_context(|| format!("hls.js reported no latency for {what}: {}", p.report))
}

/// hls.js as configured by default, and with its live catch-up (playing up to 1.5x
/// fast while behind its target latency, PART-HOLD-BACK for LL-HLS).
pub(crate) const CONFIGS: [(&str, &str); 2] = [
    ("hls.js defaults", "{}"),
    ("catch-up 1.5x", r#"{"maxLiveSyncPlaybackRate":1.5}"#),
];

/// The players other than hls.js, and what each is measured by.
const OTHERS: [Player; 2] = [Player::VideoJs, Player::Shaka];

/// How far behind the end of what `player` calls seekable it played `url`, at the end.
fn edge_distance(player: Player, url: &str, seconds: u32, what: &str) -> Result<f64> {
    let limit = Duration::from_secs(u64::from(seconds) + 60);
    let p = play_with(player, url, seconds, limit)?;
    let name = player.name();
    ensure!(p.ok, "{name} did not play {what}: {}", p.report);
    p.report["edgeDistance"]
        .as_f64()
        .with_context(|| format!("{name} reported no seekable range for {what}: {}", p.report))
}

/// hls.js with each of `configs`, then (with `others`) Video.js and Shaka.
fn sluice_latency(
    dir: &std::path::Path,
    part_ms: u32,
    configs: &[(&str, &str)],
    others: bool,
    seconds: u32,
) -> Result<Vec<f64>> {
    let server = Server::start(dir, &["--config", &load_test_config(dir)?])?;
    let token = server.admin_token()?;
    // The key file is written once the node has made its `main` channel.
    let key = server.main_key()?;
    let http = Http::new(None)?;
    let body = json!({"ll_hls": {"part_target_ms": part_ms, "segment_target_ms": 2000, "window_segments": 10}});
    let r = http.patch(
        &server.url("/api/v1/channels/main"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )?;
    ensure!(
        r.status == 200,
        "setting {part_ms} ms parts: HTTP {} {}",
        r.status,
        r.text()
    );
    let stream = bench_stream(3000)?;
    let _publisher = Publisher::ffmpeg_loop(&stream, &server.rtmp_url(&key), &dir.join("ff.log"))?;
    let text = wait_live(&server.url(MEDIA), 1)?;
    let expected = format!(
        "#EXT-X-PART-INF:PART-TARGET={:.1}",
        f64::from(part_ms) / 1000.0
    );
    ensure!(
        text.contains(&expected),
        "the playlist does not say {expected}:\n{text}"
    );
    let what = format!("sluice at {part_ms} ms parts");
    let mut figures = play_all(&server.url(MEDIA), configs, seconds, &what)?;
    if others {
        for player in OTHERS {
            figures.push(edge_distance(player, &server.url(MEDIA), seconds, &what)?);
        }
    }
    Ok(figures)
}

fn nginx_latency(dir: &std::path::Path, seconds: u32) -> Result<Vec<f64>> {
    let nginx = Nginx::start(dir, 1, 2)?;
    let stream = bench_stream(3000)?;
    let _publisher = Publisher::ffmpeg_loop(&stream, &nginx.rtmp_url("main"), &dir.join("ff.log"))?;
    wait_live(&nginx.hls_url("main"), 2).with_context(|| nginx.errors())?;
    let mut figures = play_all(&nginx.hls_url("main"), &CONFIGS, seconds, "nginx-rtmp")?;
    for player in OTHERS {
        figures.push(edge_distance(
            player,
            &nginx.hls_url("main"),
            seconds,
            "nginx-rtmp",
        )?);
    }
    Ok(figures)
}

/// hls.js's latency on `url` with each of `configs`, one browser after the other.
fn play_all(url: &str, configs: &[(&str, &str)], seconds: u32, what: &str) -> Result<Vec<f64>> {
    let limit = Duration::from_secs(u64::from(seconds) + 60);
    configs
        .iter()
        .map(|(name, config)| {
            played(
                &format!("{what}, {name}"),
                play_url(url, config, seconds, limit)?,
            )
        })
        .collect()
}

pub(crate) fn run(quick: bool, table: &mut Table) -> Result<()> {
    use_release_sluice()?;
    let tmp = TempDir::new("bench-player")?;
    let seconds = if quick { 4 } else { 30 };
    let fast = sluice_latency(&tmp.path().join("p200"), 200, &CONFIGS, true, seconds)?;
    let slow = sluice_latency(&tmp.path().join("p500"), 500, &CONFIGS[1..], false, seconds)?;
    let peer = nginx_latency(&tmp.path().join("nginx"), seconds)?;
    table.note(format!(
        "player: hls.js (lowLatencyMode) in headless Chromium, hls.latency after {seconds} s \
         of play, 720p30 3 Mbit/s with a 2 s GOP; peer nginx-rtmp HLS with 2 s fragments, \
         6 s playlist, played by the same hls.js with the same settings"
    ));
    table.note(format!(
        "player: Video.js 8 (defaults) and Shaka 5 (lowLatencyMode) in the same Chromium, \
         {seconds} s of play each; their figure is the distance behind the end of what \
         they call seekable (neither has hls.latency), for sluice and the same nginx-rtmp \
         stream"
    ));
    let rows = [
        (200, CONFIGS[0].0, fast[0], peer[0], "<= 1.0 s"),
        (200, CONFIGS[1].0, fast[1], peer[1], "<= 1.0 s"),
        (500, CONFIGS[1].0, slow[0], peer[1], "-"),
        (200, "Video.js 8 defaults", fast[2], peer[2], "-"),
        (200, "Shaka 5 lowLatencyMode", fast[3], peer[3], "-"),
    ];
    for (parts, config, latency, peer, target) in rows {
        table.row(
            "player",
            &format!("live-edge latency, {parts} ms parts, {config}"),
            format!("{latency:.2} s"),
            format!("nginx {peer:.2} s"),
            Some(peer / latency),
            target,
        );
    }
    Ok(())
}
