//! The player matrix: hls.js, Video.js 8 with its defaults, Shaka Player 5 in
//! low-latency mode and Chromium's own HLS each play a live stream in headless Chromium,
//! from the channel's origin, from another node of the cluster and through
//! `sluice edge`, with the node's default limits.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{three_nodes, wait_for, EdgeProcess, Http, Publisher};
use sluice_e2e::{every_player, make_light_stream, Player, TempDir};

/// Media each player must play, and the wall-clock time it gets to do so.
const PLAY_SECONDS: u32 = 15;
const PLAY_LIMIT: Duration = Duration::from_secs(60);
/// Longest the picture may stand still once playing. Video.js stood 18 s at a segment
/// boundary when a blocking answer that ended there was kept by the browser's cache.
const STALL_LIMIT_MS: f64 = 5000.0;

fn play_everywhere(source: &str, url: &str) -> Vec<String> {
    every_player(source, url, PLAY_SECONDS, PLAY_LIMIT, |_| {
        Some(STALL_LIMIT_MS)
    })
}

#[test]
fn every_player_plays_live_from_the_origin_another_node_and_an_edge() -> Result<()> {
    let tmp = TempDir::new("players")?;
    // Never looped while the players play (three sources, one after the other).
    let fixture = tmp.path().join("gop60.flv");
    make_light_stream(&fixture, 120)?;
    let nodes = three_nodes(tmp.path(), &[])?;
    let key = nodes[0].main_key()?;
    let _publisher = Publisher::ffmpeg_loop(
        &fixture,
        &nodes[0].rtmp_url(&key),
        &tmp.path().join("ffmpeg.log"),
    )?;
    let http = Http::new(None)?;
    wait_for(
        Duration::from_secs(40),
        "the stream live at its origin",
        || {
            let r = http
                .get(&nodes[0].url("/hls/main/source/index.m3u8"), &[])
                .ok()?;
            (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
        },
    )
    .with_context(|| nodes[0].log())?;
    let edge = EdgeProcess::start(&tmp.path().join("edge.log"), &[nodes[1].base()], &[])?;

    let multivariant = "/hls/main/index.m3u8";
    let mut failures = Vec::new();
    for (source, url) in [
        ("the origin", nodes[0].url(multivariant)),
        ("another node", nodes[2].url(multivariant)),
        ("an edge", edge.url(multivariant)),
    ] {
        failures.extend(play_everywhere(source, &url));
    }
    ensure!(
        failures.is_empty(),
        "{} of {} plays failed:\n{}",
        failures.len(),
        3 * Player::ALL.len(),
        failures.join("\n")
    );
    Ok(())
}
