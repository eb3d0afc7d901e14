//! Graceful drain: a rolling SIGTERM and restart of all three nodes while ffmpeg
//! publishes (to whichever node takes it) and hls.js plays: the stream goes on in the
//! same generation, each move as soon as the publisher reconnects and a leader is
//! known (a stopping leader hands leadership to another node before it exits).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{ffmpeg_loop_command, three_nodes, wait_for, Http, Respawning, Server};
use sluice_e2e::{make_small_stream, play_page, TempDir};

/// Never fetched: the browser is answered with the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `main`'s status as `node` answers it.
fn status(http: &Http, node: &Server, auth: &str) -> Option<serde_json::Value> {
    let r = http
        .get(
            &node.url("/api/v1/channels/main/status"),
            &[("authorization", auth)],
        )
        .ok()?;
    serde_json::from_slice(&r.body).ok()
}

#[test]
fn a_rolling_restart_keeps_the_stream_playing() -> Result<()> {
    rolling_restart(&[0, 1, 2])
}

/// The viewer's node never ingests: it pulls through from each origin in turn (the
/// encoder goes back and forth between the other two), then restarts itself.
#[test]
fn a_rolling_restart_keeps_playing_on_a_node_that_only_pulls() -> Result<()> {
    rolling_restart(&[0, 1])
}

/// Restarts the three nodes in turn while ffmpeg publishes to the nodes `publish_to`
/// (the next one each time it starts again) and hls.js plays from the third node.
fn rolling_restart(publish_to: &[usize]) -> Result<()> {
    // One rolling restart at a time: each runs three nodes, ffmpeg and a browser.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = TempDir::new("drain")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let mut nodes = three_nodes(tmp.path(), &["--hlsjs-url", HLSJS_URL])?;
    let key = nodes[0].main_key()?;
    let token = nodes[0].admin_token()?;
    let auth = format!("Bearer {token}");
    let http = Http::new(None)?;

    // ffmpeg as OBS behaves behind a name with several nodes: when its connection is
    // cut or refused it starts again, on the next node.
    let urls: Vec<String> = publish_to
        .iter()
        .map(|i| nodes[*i].rtmp_url(&key))
        .collect();
    let turn = Arc::new(AtomicUsize::new(0));
    let next = turn.clone();
    let fixture2 = fixture.clone();
    let publisher = Respawning::start(
        move || {
            let url = &urls[next.fetch_add(1, Ordering::SeqCst) % urls.len()];
            ffmpeg_loop_command(&fixture2, url)
        },
        &tmp.path().join("ffmpeg.log"),
    )?;

    let first = wait_for(Duration::from_secs(40), "main live", || {
        status(&http, &nodes[1], &auth).filter(|s| s["state"] == "live")
    })
    .with_context(|| nodes[0].log())?;
    let generation = first["generation"]["number"].clone();

    // The viewer plays from the last node to restart.
    let page = nodes[2].url("/watch/main");
    let player = std::thread::spawn(move || play_page(&page, 45, Duration::from_secs(150)));
    std::thread::sleep(Duration::from_secs(8));

    let mut moves = Vec::new();
    for i in 0..3 {
        let other = (i + 1) % 3;
        let before = wait_for(
            Duration::from_secs(30),
            "main live before a restart",
            || status(&http, &nodes[other], &auth).filter(|s| s["state"] == "live"),
        )?;
        let was_origin = before["generation"]["origin"] == nodes[i].node_id()?;
        let stopped = Instant::now();
        let stopped_ms = now_ms();
        let code = nodes[i].terminate(Duration::from_secs(20))?;
        let took = stopped.elapsed();
        ensure!(
            code == Some(0),
            "node {} exited with {code:?} after SIGTERM\n{}",
            i + 1,
            nodes[i].log()
        );
        if was_origin {
            ensure!(
                nodes[i].log().contains("handed=1"),
                "the origin did not hand its stream over:\n{}",
                nodes[i].log()
            );
            // The encoder was told why (ffmpeg logs the server's onStatus error).
            let told = wait_for(Duration::from_secs(10), "the reason at the encoder", || {
                publisher
                    .output()
                    .contains("Sluice node is shutting down")
                    .then_some(())
            });
            ensure!(
                told.is_ok(),
                "ffmpeg was not told why its connection closed:\n{}",
                publisher.output()
            );
        }
        nodes[i].restart()?;
        wait_for(Duration::from_secs(30), "the restarted node ready", || {
            let r = http.get(&nodes[i].url("/readyz"), &[]).ok()?;
            (r.status == 200).then_some(())
        })
        .with_context(|| nodes[i].log())?;
        let after = wait_for(Duration::from_secs(30), "main live after a restart", || {
            // Live again (claimed after the stop: the drain marked it reconnecting),
            // in the same generation, on whichever node the publisher reached: the
            // restarted one too, when the others could not take it while a new leader
            // was elected.
            status(&http, &nodes[other], &auth).filter(|s| {
                s["state"] == "live"
                    && s["generation"]["number"] == generation
                    && (!was_origin
                        || s["generation"]["state_since_ms"].as_i64() >= Some(stopped_ms))
            })
        })
        .with_context(|| format!("{}\n{}", nodes[other].log(), publisher.output()))?;
        moves.push(format!(
            "node {} stopped in {:.1} s{}",
            i + 1,
            took.as_secs_f64(),
            if was_origin {
                format!(
                    " (was the origin; live again on {} {:.1} s after SIGTERM)",
                    after["origin_name"].as_str().unwrap_or("?"),
                    stopped.elapsed().as_secs_f64()
                )
            } else {
                String::new()
            }
        ));
        std::thread::sleep(Duration::from_secs(4));
    }

    let played = player
        .join()
        .map_err(|_| anyhow::anyhow!("player thread panicked"))??;
    eprintln!(
        "rolling restart: {}; hls.js played {:.1} s, longest stall {} ms; ffmpeg started {} times",
        moves.join("; "),
        played.report["played"].as_f64().unwrap_or(0.0),
        played.report["maxStallMs"],
        publisher.starts()
    );
    ensure!(
        played.ok,
        "hls.js did not keep playing through the rolling restart: {}",
        played.report
    );
    let last = status(&http, &nodes[0], &auth).context("status")?;
    ensure!(
        last["generation"]["number"] == generation,
        "the stream moved to a new generation: {last}"
    );
    Ok(())
}

/// The leader as `node` sees it.
fn leader_seen_by(http: &Http, node: &Server) -> Option<u64> {
    node.cluster_status(http)?["leader"].as_u64()
}

#[test]
fn a_stopping_leader_hands_leadership_over_before_it_exits() -> Result<()> {
    let tmp = TempDir::new("handover")?;
    let mut nodes = three_nodes(tmp.path(), &[])?;
    let http = Http::new(None)?;
    let ids = nodes
        .iter()
        .map(Server::node_id)
        .collect::<Result<Vec<u64>>>()?;
    let leader = wait_for(Duration::from_secs(10), "a leader", || {
        leader_seen_by(&http, &nodes[0])
    })?;
    let at = ids
        .iter()
        .position(|id| *id == leader)
        .context("the leader is not one of the nodes")?;
    let code = nodes[at].terminate(Duration::from_secs(20))?;
    ensure!(code == Some(0), "the leader exited with {code:?}");
    // Within a heartbeat or two of its exit the others follow a new leader: none of
    // them waits out the old leader's lease and an election (1.3 s or more).
    let exited = Instant::now();
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != at) {
        let left = Duration::from_millis(500).saturating_sub(exited.elapsed());
        let seen = wait_for(left, "a new leader", || {
            leader_seen_by(&http, node).filter(|l| *l != leader)
        });
        ensure!(
            seen.is_ok(),
            "node {} still saw the old leader {leader} {:?} after it exited",
            i + 1,
            exited.elapsed()
        );
    }
    let log = nodes[at].log();
    ensure!(
        log.contains("leadership handed over"),
        "the old leader did not hand over:\n{log}"
    );
    // The cluster goes on: a change commits through the new leader.
    let other = (at + 1) % 3;
    let (status, _) = nodes[other].api(
        &http,
        reqwest::Method::POST,
        "/api/v1/channels",
        serde_json::json!({ "name": "after-handover" }),
    )?;
    ensure!(
        status == 201,
        "creating a channel after the handover: HTTP {status}"
    );
    Ok(())
}
