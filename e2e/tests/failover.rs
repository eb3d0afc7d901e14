//! Surviving failures: the origin node killed mid-stream while hls.js plays from
//! another node; chained external edges losing their first upstream; an upstream that
//! errors or stalls, and nothing of it cached; an origin paused past its lease, one
//! that missed its renewals, and one whose disk filled up; nodes whose clocks disagree.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sluice_e2e::fault::{FaultProxy, Mode};
use sluice_e2e::fault_suite::{object_uris, signal, skewed_clock, FAKETIME_LIB};
use sluice_e2e::flv_writer::flv_tags;
use sluice_e2e::node::{
    cluster_of, ffmpeg_loop_command, three_nodes, three_nodes_each_with_env, wait_for, EdgeProcess,
    Http, Publisher, Respawning, Server,
};
use sluice_e2e::rtmp_client::RtmpPublisher;
use sluice_e2e::{
    every_player, hinted_part, make_light_stream, make_small_stream, media_sequence, play_page,
    play_url, validate_playlists, Player, TempDir,
};

/// A player page whose hls.js the test browser answers from the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";
const MEDIA: &str = "/hls/main/source/index.m3u8";

/// The player matrix (four browsers and three nodes) runs alone; the other tests of
/// this file run two at a time beside each other, not beside it: on two cores the
/// matrix beside another cluster starved Raft into new elections.
static HEAVY: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    HEAVY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    HEAVY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fixture(tmp: &TempDir) -> Result<std::path::PathBuf> {
    let path = tmp.path().join("gop60.flv");
    make_small_stream(&path)?;
    Ok(path)
}

/// The media sequence number of the preload-hinted part (`1/N.P.m4s`).
fn hinted_msn(text: &str) -> Option<u64> {
    let uri = hinted_part(text)?;
    uri.rsplit('/').next()?.split('.').next()?.parse().ok()
}

fn live(http: &Http, base: &str) -> Option<String> {
    let r = http.get(&format!("{base}{MEDIA}"), &[]).ok()?;
    (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then(|| r.text())
}

/// Each whole segment's EXTINF in a media playlist, by sequence number (its URI is
/// `GENERATION/MSN.m4s`).
fn extinfs(text: &str) -> std::collections::BTreeMap<u64, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').to_string());
        } else if !line.starts_with('#') {
            let msn = line
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".m4s"))
                .and_then(|n| n.parse().ok());
            if let (Some(msn), Some(e)) = (msn, extinf.take()) {
                out.insert(msn, e);
            }
        }
    }
    out
}

/// What one media playlist must keep under its URL.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PlaylistParams {
    target_duration: u64,
    part_target: f64,
    discontinuity_sequence: u64,
}

impl PlaylistParams {
    fn of(text: &str) -> Option<Self> {
        let tag = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split(',').next().unwrap_or(v).to_string())
        };
        Some(Self {
            target_duration: tag("#EXT-X-TARGETDURATION:")?.parse().ok()?,
            part_target: tag("#EXT-X-PART-INF:PART-TARGET=")?.parse().ok()?,
            discontinuity_sequence: tag("#EXT-X-DISCONTINUITY-SEQUENCE:")
                .map_or(Some(0), |v| v.parse().ok())?,
        })
    }
}

/// Three nodes started with `flags`, and `fixture` published to node 1 (looped) until
/// its playlist lists two segments there: the nodes, the stream key, the publisher.
fn live_on_node_1(
    tmp: &TempDir,
    fixture: &std::path::Path,
    flags: &[&str],
) -> Result<(Vec<Server>, String, Publisher)> {
    let nodes = three_nodes(tmp.path(), flags)?;
    let key = nodes[0].main_key()?;
    let first = Publisher::ffmpeg_loop(
        fixture,
        &nodes[0].rtmp_url(&key),
        &tmp.path().join("ff1.log"),
    )?;
    let http = Http::new(None)?;
    wait_for(Duration::from_secs(40), "the stream live on node 1", || {
        live(&http, &nodes[0].base())
    })
    .with_context(|| nodes[0].log())?;
    Ok((nodes, key, first))
}

/// ffmpeg against `server` until a publisher is accepted (not refused within a few
/// seconds), as OBS retries on its own; with when the accepted one was started.
fn publish_until_accepted(
    fixture: &std::path::Path,
    server: &Server,
    key: &str,
    log: &std::path::Path,
) -> Result<(Publisher, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let http = Http::new(None)?;
    let node = server.node_id()?;
    loop {
        let launched = Instant::now();
        let mut p = Publisher::ffmpeg_loop(fixture, &server.rtmp_url(key), log)?;
        // Accepted once the node has claimed the channel's generation with this
        // publisher running; one still running a few seconds later may yet be refused
        // on a loaded machine.
        let accepted = wait_for(Duration::from_secs(10), "the publisher accepted", || {
            if p.exited().is_some() {
                return Some(false);
            }
            main_status(&http, server)
                .filter(|s| s["generation"]["origin"].as_u64() == Some(node))
                .map(|_| true)
        });
        if matches!(accepted, Ok(true)) && p.exited().is_none() {
            return Ok((p, launched));
        }
        p.kill();
        ensure!(
            Instant::now() < deadline,
            "no publisher accepted by {} within 40 s:\n{}\n{}",
            server.base(),
            p.output(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn viewers_survive_the_origins_death_and_chained_edges_fail_over() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("failover")?;
    let fixture = fixture(&tmp)?;
    let (mut nodes, key, mut first) = live_on_node_1(
        &tmp,
        &fixture,
        &["--hlsjs-url", HLSJS_URL, "--lease-ttl-ms", "3000"],
    )?;
    let http = Http::new(None)?;

    // Two external edges: B pulls from A, then from node 3; A from node 3, which is not
    // the origin and pulls from node 1 in turn.
    let node3 = nodes[2].base();
    let mut edge_a = EdgeProcess::start(
        &tmp.path().join("edge-a.log"),
        std::slice::from_ref(&node3),
        &["--name", "edge-a"],
    )?;
    let edge_b = EdgeProcess::start(
        &tmp.path().join("edge-b.log"),
        &[edge_a.base(), node3.clone()],
        &["--name", "edge-b", "--hlsjs-url", HLSJS_URL],
    )?;
    let through_b = wait_for(Duration::from_secs(20), "the stream through edge B", || {
        live(&http, &edge_b.base())
    })
    .with_context(|| edge_b.log())?;
    let part = hinted_part(&through_b).context("a preload hint")?;
    let part = http.get(&edge_b.url(&format!("/hls/main/source/{part}")), &[])?;
    ensure!(
        part.status == 200 && !part.body.is_empty(),
        "the hinted part through edge B: HTTP {}",
        part.status
    );
    validate_playlists(&[edge_b.url("/hls/main/index.m3u8"), edge_b.url(MEDIA)])?;
    const UP_PLAYLISTS: &str = "sluice_edge_upstream_requests_total{kind=\"playlist\"}";
    ensure!(
        http.metric(&edge_a.base(), UP_PLAYLISTS)? > 0,
        "edge B did not pull through edge A"
    );
    ensure!(
        http.metric(&node3, "sluice_pulled_requests_total{kind=\"playlist\"}")? > 0,
        "node 3 answered edge A without pulling from the origin"
    );

    // Edge A dies: edge B carries on through node 3 (asked for a playlist state it
    // cannot have cached yet: the next segment's).
    edge_a.kill();
    let next = hinted_msn(&through_b).context("hinted msn")? + 1;
    let after_a = wait_for(Duration::from_secs(10), "edge B without edge A", || {
        let r = http
            .get(&edge_b.url(&format!("{MEDIA}?_HLS_msn={next}")), &[])
            .ok()?;
        (r.status == 200).then(|| r.text())
    })
    .with_context(|| edge_b.log())?;
    ensure!(media_sequence(&after_a).is_some(), "no playlist: {after_a}");
    let failovers = http.metric(&edge_b.base(), "sluice_edge_failovers_total")?;
    ensure!(failovers > 0, "edge B never failed over:\n{}", edge_b.log());
    eprintln!("edge B failed over to node 3 ({failovers} failovers)");

    // Endpoints: every node registered its own and reports snapshots. Node 3 is given
    // node 2 as its parent: it then pulls through node 2 (which pulls from node 1).
    let listed = wait_for(
        Duration::from_secs(20),
        "three node endpoints with snapshots",
        || {
            let v: serde_json::Value =
                serde_json::from_str(&nodes[0].cli(&["endpoint", "list", "--json"]).ok()?).ok()?;
            let endpoints = v["endpoints"].as_array()?.clone();
            let reporting = endpoints
                .iter()
                .filter(|e| e["node"].is_u64() && e["last_snapshot"].is_object())
                .count();
            (reporting == 3).then_some(endpoints)
        },
    )?;
    let endpoint_of = |server: &Server| -> Result<serde_json::Value> {
        listed
            .iter()
            .find(|e| e["url"] == server.base().as_str())
            .cloned()
            .with_context(|| format!("no endpoint for {}", server.base()))
    };
    let (e2, e3) = (endpoint_of(&nodes[1])?, endpoint_of(&nodes[2])?);
    let (n2_name, n3_name) = (
        e2["name"].as_str().unwrap_or_default(),
        e3["name"].as_str().unwrap_or_default(),
    );
    nodes[0].cli(&[
        "endpoint",
        "put",
        n3_name,
        "--kind",
        "origin",
        "--url",
        &node3,
        "--node",
        &e3["node"].to_string(),
        "--upstream",
        n2_name,
    ])?;
    const N2_PULLS: &str = "sluice_edge_upstream_requests_total{kind=\"playlist\"}";
    let n2_before = http.metric(&nodes[1].base(), N2_PULLS)?;
    let parent_used = wait_for(
        Duration::from_secs(10),
        "node 3 pulling through node 2",
        || {
            let text = http.get(&nodes[2].url(MEDIA), &[]).ok()?.text();
            let next = hinted_msn(&text)? + 1;
            let r = http
                .get(&nodes[2].url(&format!("{MEDIA}?_HLS_msn={next}")), &[])
                .ok()?;
            let after = http.metric(&nodes[1].base(), N2_PULLS).ok()?;
            (r.status == 200 && after > n2_before).then_some(after - n2_before)
        },
    )
    .with_context(|| nodes[2].log())?;
    eprintln!("node 3 pulled {parent_used} playlist states through its parent, node 2");
    // Operators add external edges; a bad URL is refused naming the field.
    nodes[0].cli(&[
        "endpoint",
        "put",
        "edge-b",
        "--kind",
        "external_edge",
        "--url",
        &edge_b.base(),
    ])?;
    let bad = sluice_e2e::run(
        std::process::Command::new(sluice_e2e::sluice_bin()?)
            .args([
                "endpoint",
                "put",
                "bad",
                "--kind",
                "external_edge",
                "--url",
                "ftp://x",
            ])
            .arg("--data-dir")
            .arg(&nodes[0].dir),
        Duration::from_secs(20),
    )?;
    let said = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && said.contains("422") && said.contains("url"),
        "a bad endpoint URL: {said}"
    );
    let table = nodes[0].cli(&["cluster", "status"])?;
    ensure!(
        table.contains(n3_name) && table.contains("edge-b") && table.contains("stale"),
        "cluster status shows no endpoints:\n{table}"
    );

    // The channel's LL-HLS settings change while it is live: they are for its next
    // generation. This one keeps its own, on node 1 and on the node it resumes on.
    let params = |text: &str| PlaylistParams::of(text);
    let first_params = params(&http.get(&nodes[2].url(MEDIA), &[])?.text())
        .context("no playlist parameters on node 3")?;
    let (status, body) = nodes[0].api(
        &http,
        reqwest::Method::PATCH,
        "/api/v1/channels/main",
        serde_json::json!({"ll_hls": {"part_target_ms": 500, "segment_target_ms": 4000, "window_segments": 8}}),
    )?;
    ensure!(
        status == 200,
        "changing the channel's LL-HLS settings: {status} {body}"
    );
    // Every answer node 3 gives its plain playlist requests, from now until the stream
    // has resumed on node 2.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, url) = (stop.clone(), nodes[2].url(MEDIA));
        std::thread::spawn(move || -> Result<Vec<(u16, Option<PlaylistParams>)>> {
            let http = Http::new(None)?;
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = http.get(&url, &[])?;
                seen.push((r.status, params(&r.text())));
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(seen)
        })
    };

    // hls.js plays from node 3 while node 1, the origin, is killed; the encoder comes
    // back on node 2 and playback resumes on the same URL.
    let page = nodes[2].url("/watch/main");
    let player = std::thread::spawn(move || play_page(&page, 24, Duration::from_secs(120)));
    std::thread::sleep(Duration::from_secs(8));
    let before_text = http.get(&nodes[2].url(MEDIA), &[])?.text();
    let before = media_sequence(&before_text).unwrap_or(0);
    let killed = Instant::now();
    nodes[0].kill();
    first.kill();
    let (_second, launched) =
        publish_until_accepted(&fixture, &nodes[1], &key, &tmp.path().join("ff2.log"))?;
    let accepted = launched.duration_since(killed);
    let resumed = wait_for(
        Duration::from_secs(30),
        "node 3 to follow the new origin",
        || {
            let text = http.get(&nodes[2].url(MEDIA), &[]).ok()?.text();
            let msn = media_sequence(&text)?;
            (text.contains("#EXT-X-DISCONTINUITY") && msn >= before).then_some(text)
        },
    )
    .with_context(|| format!("{}\n{}", nodes[1].log(), nodes[2].log()))?;
    let resumed_after = killed.elapsed();
    // The segments node 2 cannot have are listed (as gaps) as long as they were: a
    // target duration each put the segment hls.js was in seconds off, and it stood
    // still for 25 s.
    let (was, now) = (extinfs(&before_text), extinfs(&resumed));
    let compared: Vec<_> = was
        .iter()
        .filter(|(msn, _)| now.contains_key(msn))
        .collect();
    ensure!(
        !compared.is_empty(),
        "no segment of node 1's in the resumed playlist:\n{resumed}"
    );
    // Under the init segment node 1 named: hls.js fetched node 2's init for each gap,
    // never marked the gaps as passed, and stood still at the hole.
    let first_map = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("#EXT-X-MAP:"))
            .map(str::to_string)
    };
    ensure!(
        media_sequence(&before_text) == media_sequence(&resumed)
            && first_map(&before_text) == first_map(&resumed),
        "the gaps are not listed under node 1's init segment:\n{before_text}\n{resumed}"
    );
    for (msn, extinf) in compared {
        ensure!(
            now[msn] == *extinf,
            "segment {msn} was listed {extinf} by node 1, {} after the move:\n{resumed}",
            now[msn]
        );
    }
    // Past the resume for a few seconds more.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let seen = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    let mut last_sequence = first_params.discontinuity_sequence;
    for (status, p) in &seen {
        ensure!(
            matches!(status, 200 | 503),
            "node 3 answered a playlist request {status} while the stream moved"
        );
        let Some(p) = p.filter(|_| *status == 200) else {
            continue;
        };
        ensure!(
            (p.target_duration, p.part_target)
                == (first_params.target_duration, first_params.part_target),
            "the playlist's TARGETDURATION/PART-TARGET changed under one URL: {first_params:?} -> {p:?}"
        );
        ensure!(
            p.discontinuity_sequence >= last_sequence,
            "EXT-X-DISCONTINUITY-SEQUENCE went back: {last_sequence} -> {p:?}"
        );
        last_sequence = p.discontinuity_sequence;
    }
    ensure!(
        params(&resumed).map(|p| (p.target_duration, p.part_target))
            == Some((first_params.target_duration, first_params.part_target)),
        "the resumed playlist has other parameters than {first_params:?}:\n{resumed}"
    );
    eprintln!(
        "{} playlist answers from node 3 across the failover, none 404, parameters kept: \
         {first_params:?}",
        seen.len()
    );
    validate_playlists(&[
        nodes[2].url(MEDIA),
        format!("{}?_HLS_skip=YES", nodes[2].url(MEDIA)),
        edge_b.url(MEDIA),
    ])?;
    let played = player
        .join()
        .map_err(|_| anyhow::anyhow!("player thread panicked"))??;
    eprintln!(
        "origin killed: the publisher accepted by node 2 was started {:.1} s after, node 3 playlist \
         resumed after {:.1} s (media sequence {before} -> {:?}); hls.js on node 3 played \
         {:.1} s, longest stall {} ms",
        accepted.as_secs_f64(),
        resumed_after.as_secs_f64(),
        media_sequence(&resumed),
        played.report["played"].as_f64().unwrap_or(0.0),
        played.report["maxStallMs"]
    );
    ensure!(
        played.ok,
        "hls.js on node 3 did not survive the origin's death: {}\n{}",
        played.report,
        nodes[2].log()
    );
    // Node 3's snapshots counted the viewer and the bytes it was sent.
    let show: serde_json::Value =
        serde_json::from_str(&nodes[1].cli(&["endpoint", "show", n3_name, "--json"])?)?;
    let snapshot = show["history"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["viewers"].as_u64() >= Some(1) && s["egress_bps"].as_u64() > Some(0))
        .cloned()
        .with_context(|| format!("no snapshot of node 3 with a viewer: {show}"))?;
    eprintln!("node 3 snapshot: {snapshot}");
    Ok(())
}

#[test]
fn an_edge_answers_upstream_failures_with_uncached_errors_and_recovers() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("edge-faults")?;
    let fixture = fixture(&tmp)?;
    let node = Server::start(&tmp.path().join("n1"), &[])?;
    let key = node.main_key()?;
    let _publisher =
        Publisher::ffmpeg_loop(&fixture, &node.rtmp_url(&key), &tmp.path().join("ff.log"))?;
    let http = Http::new(None)?;
    wait_for(Duration::from_secs(40), "the stream live", || {
        live(&http, &node.base())
    })
    .with_context(|| node.log())?;
    let proxy = FaultProxy::start(node.http)?;
    let edge = EdgeProcess::start(
        &tmp.path().join("edge.log"),
        &[proxy.base()],
        &["--upstream-timeout-ms", "1500"],
    )?;
    // A client that never finishes its request head is cut off, as on a node.
    let mut loris = std::net::TcpStream::connect(("127.0.0.1", edge.http))?;
    loris.write_all(b"GET /hls/main/index.m3u8 HTTP/1.1\r\nHost: x\r\n")?;
    let loris_since = Instant::now();
    let text = wait_for(
        Duration::from_secs(10),
        "the stream through the edge",
        || live(&http, &edge.base()),
    )?;
    let msn = media_sequence(&text).context("media sequence")?;

    // The origin answers 500: the edge says 502, no-store, for a playlist state and an
    // object it has not cached yet.
    proxy.set(Mode::Error);
    let playlist = edge.url(&format!("{MEDIA}?_HLS_msn={}", msn + 2));
    let object = edge.url(&format!("/hls/main/source/1/{}.m4s", msn + 1));
    for url in [&playlist, &object] {
        let r = http.get(url, &[])?;
        ensure!(
            r.status == 502 && r.header("cache-control") == "no-store",
            "{url} while the origin fails: HTTP {} cache-control {:?}",
            r.status,
            r.header("cache-control")
        );
    }

    // The origin stalls: 504, no-store, within the edge's upstream timeout (and a
    // little), not the client's.
    std::thread::sleep(Duration::from_millis(1100));
    proxy.set(Mode::Stall);
    let started = Instant::now();
    let r = http.get(&playlist, &[])?;
    ensure!(
        r.status == 504 && r.header("cache-control") == "no-store",
        "while the origin stalls: HTTP {} cache-control {:?}",
        r.status,
        r.header("cache-control")
    );
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "the stalled request took {:?}",
        started.elapsed()
    );

    // The origin is back: the same URLs answer with the media, nothing of the failure
    // was kept.
    proxy.set(Mode::Pass);
    let recovered = wait_for(Duration::from_secs(15), "the edge to recover", || {
        let p = http.get(&playlist, &[]).ok()?;
        let o = http.get(&object, &[]).ok()?;
        (p.status == 200 && o.status == 200).then_some((p, o))
    })
    .with_context(|| edge.log())?;
    ensure!(
        recovered.0.text().contains("#EXTINF") && !recovered.1.body.is_empty(),
        "recovered answers are not the media"
    );
    ensure!(
        recovered.1.header("cache-control").contains("immutable"),
        "the object after recovery: {:?}",
        recovered.1.header("cache-control")
    );
    let failures = http.metric(&edge.base(), "sluice_edge_upstream_failures_total")?;
    ensure!(failures >= 2, "only {failures} upstream failures counted");
    // The slow client: closed by the edge once its header time (10 s) ran out.
    let left = Duration::from_secs(15).saturating_sub(loris_since.elapsed());
    loris.set_read_timeout(Some(left + Duration::from_millis(100)))?;
    let mut rest = Vec::new();
    ensure!(
        loris.read_to_end(&mut rest).is_ok(),
        "the edge kept a client that never finished its request head for {:?}",
        loris_since.elapsed()
    );
    Ok(())
}

/// `main`'s status as `node` answers it.
fn main_status(http: &Http, node: &Server) -> Option<serde_json::Value> {
    let (status, v) = node
        .api(
            http,
            reqwest::Method::GET,
            "/api/v1/channels/main/status",
            serde_json::Value::Null,
        )
        .ok()?;
    (status == 200).then_some(v)
}

/// The current leader and the other nodes, in order: tests pause followers, so that
/// leases are judged by a leader that keeps running.
fn leader_and_followers<'a>(
    http: &Http,
    nodes: &'a [Server],
) -> Result<(&'a Server, Vec<&'a Server>)> {
    let leader = nodes[0]
        .cluster_status(http)
        .and_then(|s| s["leader"].as_u64())
        .context("no leader")?;
    let mut leading = None;
    let mut followers = Vec::new();
    for n in nodes {
        if n.node_id()? == leader {
            leading = Some(n);
        } else {
            followers.push(n);
        }
    }
    Ok((
        leading.context("the leader is not one of the nodes")?,
        followers,
    ))
}

#[test]
fn a_publisher_back_on_another_node_at_once_is_accepted() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("handover")?;
    let fixture = fixture(&tmp)?;
    let nodes = three_nodes(tmp.path(), &[])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    // The origin and the node the encoder comes back to are followers: the claim must
    // wait for the old origin, not for a new leader.
    let (_, followers) = leader_and_followers(&http, &nodes)?;
    let (a, b) = (followers[0], followers[1]);
    let mut first = Publisher::ffmpeg_loop(&fixture, &a.rtmp_url(&key), &tmp.path().join("a.log"))?;
    let live = wait_for(
        Duration::from_secs(40),
        "main live on the first node",
        || main_status(&http, b).filter(|s| s["state"] == "live"),
    )
    .with_context(|| a.log())?;
    let generation = live["generation"]["number"].clone();
    // A viewer of the old origin asks for the segment after the open one: it is held
    // there while the stream moves, and must be answered with the stream going on (from
    // the new origin), not with the old origin's end of it.
    let open = hinted_msn(&http.get(&a.url(MEDIA), &[])?.text()).context("no preload hint")?;
    let held_url = format!("{}?_HLS_msn={}", a.url(MEDIA), open + 1);
    // The old origin cannot notice its publisher left for 2 s (well inside its 6 s
    // lease), while the encoder is already knocking at another node.
    signal(a, "-STOP")?;
    let held = std::thread::spawn(move || Http::new(None)?.get(&held_url, &[]));
    first.kill();
    let mut second =
        Publisher::ffmpeg_loop(&fixture, &b.rtmp_url(&key), &tmp.path().join("b.log"))?;
    std::thread::sleep(Duration::from_secs(2));
    signal(a, "-CONT")?;
    let b_id = b.node_id()?;
    let moved = wait_for(
        Duration::from_secs(20),
        "main live on the second node",
        || {
            main_status(&http, b).filter(|s| {
                s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(b_id)
            })
        },
    );
    ensure!(
        second.wait_exit(Duration::from_millis(300)).is_none(),
        "the publisher on the second node was refused:\n{}\n{}",
        second.output(),
        b.log()
    );
    let moved = moved.with_context(|| format!("{}\n{}", second.output(), b.log()))?;
    ensure!(
        moved["generation"]["number"] == generation,
        "the stream did not continue its generation: {moved}"
    );
    ensure!(
        b.log().contains("waiting for it to let go"),
        "the second node did not wait for the first to let go:\n{}",
        b.log()
    );
    let held = held
        .join()
        .map_err(|_| anyhow::anyhow!("viewer thread panicked"))??;
    eprintln!(
        "a request held on the old origin while the stream moved was answered {}",
        held.status
    );
    ensure!(
        matches!(held.status, 200 | 503) && !held.text().contains("#EXT-X-ENDLIST"),
        "a request held on the old origin was answered with the stream's end ({}):\n{}\n{}",
        held.status,
        held.text(),
        a.log()
    );
    Ok(())
}

/// An `onMetaData` message as encoders send it (`@setDataFrame`, name, properties).
fn metadata() -> Vec<rml_rtmp::rml_amf0::Amf0Value> {
    use rml_rtmp::rml_amf0::Amf0Value;
    vec![
        Amf0Value::Utf8String("@setDataFrame".into()),
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(Default::default()),
    ]
}

/// Players retry a 5xx and most give up on a 4xx: a channel that is going live answers
/// its playlists, on its origin and on another node, by holding them until its first
/// segment (then 200), or with 503 and a short cache lifetime; 404 only while offline.
#[test]
fn playlists_of_a_channel_going_live_are_held_then_503_never_404() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("going-live")?;
    let nodes = cluster_of(tmp.path(), 2, &[])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let urls: Vec<String> = nodes
        .iter()
        .flat_map(|n| [n.url("/hls/main/index.m3u8"), n.url(MEDIA)])
        .collect();
    // Every URL asked at once; while they are held the publisher says it is there
    // (a node ends a publisher that sends nothing for 10 s).
    let all = |urls: &[String], publisher: Option<&mut RtmpPublisher>| {
        let asks: Vec<_> = urls
            .iter()
            .map(|u| {
                let u = u.clone();
                std::thread::spawn(move || Http::new(None)?.get(&u, &[]))
            })
            .collect();
        if let Some(p) = publisher {
            while !asks.iter().all(|a| a.is_finished()) {
                std::thread::sleep(Duration::from_millis(500));
                p.send_amf0_data(metadata())?;
            }
        }
        asks.into_iter()
            .map(|a| a.join().map_err(|_| anyhow::anyhow!("viewer panicked"))?)
            .collect::<Result<Vec<_>>>()
    };

    // Offline: 404 at once.
    for (url, r) in urls.iter().zip(all(&urls, None)?) {
        ensure!(
            r.status == 404 && r.elapsed < Duration::from_secs(2),
            "{url} of an offline channel: {} after {:?}",
            r.status,
            r.elapsed
        );
    }

    // A publisher that has connected and sent nothing yet: the generation is starting.
    let mut publisher = RtmpPublisher::publish(nodes[0].rtmp, "live", &key)?;
    for n in &nodes {
        wait_for(Duration::from_secs(20), "main starting", || {
            main_status(&http, n).filter(|s| s["state"] == "starting")
        })
        .with_context(|| nodes[0].log())?;
    }
    for (url, r) in urls.iter().zip(all(&urls, Some(&mut publisher))?) {
        ensure!(
            r.status == 503 && r.elapsed >= Duration::from_secs(5),
            "{url} of a starting channel: {} after {:?}: {}",
            r.status,
            r.elapsed,
            r.text()
        );
        ensure!(
            r.header("cache-control") == "public, max-age=1" && r.header("retry-after") == "1",
            "{url}: a 503 kept too long or without Retry-After: {:?}",
            r.headers
        );
    }

    // Asked before the first segment, answered once it exists.
    let held = {
        let urls = urls.clone();
        std::thread::spawn(move || all(&urls, None))
    };
    std::thread::sleep(Duration::from_secs(1));
    let stream = std::fs::read(fixture(&tmp)?)?;
    for (kind, ts, body) in flv_tags(&stream) {
        if matches!(kind, 8 | 9) {
            publisher
                .send_tag(kind, ts, &body)
                .with_context(|| nodes[0].log())?;
        }
    }
    let held = held
        .join()
        .map_err(|_| anyhow::anyhow!("viewers panicked"))??;
    for (url, r) in urls.iter().zip(held) {
        ensure!(
            r.status == 200 && r.text().starts_with("#EXTM3U"),
            "{url} asked before the first segment: {} {}\n{}",
            r.status,
            r.text(),
            nodes[0].log()
        );
    }
    Ok(())
}

/// Every player of the matrix (hls.js, Video.js 8 with its defaults, Shaka 5, Chromium's
/// own HLS) plays from node 3 while the origin is killed and the encoder comes back on
/// node 2: each plays on, on the same URL, without a reload or a fatal error. Shaka and
/// native HLS stand still at most 15 s (the outage itself is 6-8 s; measured 0.8-5 s).
/// Not held to it: Video.js (VHS 3 does not read `EXT-X-GAP`, asks for the dead
/// origin's next segment until its window moves on, 404 meanwhile: 28-32 s), and
/// hls.js, which stood 1.5-3.6 s in most runs and 29 s in one: it skips the hole
/// before the new origin's media only once it has tried the gap segments in it, and
/// when it was still retrying the dead origin's parts it waited until it found itself
/// too far behind the live edge.
#[test]
fn every_player_plays_on_through_an_origin_failover() -> Result<()> {
    let _alone = alone();
    let tmp = TempDir::new("players-failover")?;
    // Long enough that neither publisher loops it while the players play: Chromium's
    // own HLS once failed to parse (DEMUXER_ERROR_COULD_NOT_PARSE) the segment where
    // `ffmpeg -stream_loop -c copy` starts the 12 s stream again with a jump in its
    // times, before the failover.
    let fixture = tmp.path().join("45s.flv");
    make_light_stream(&fixture, 45)?;
    let (mut nodes, key, mut first) = live_on_node_1(&tmp, &fixture, &["--lease-ttl-ms", "3000"])?;
    let http = Http::new(None)?;
    let url = nodes[2].url("/hls/main/index.m3u8");
    // 30 s of media each: the failover comes after 12 s of it, at most.
    let players = std::thread::spawn(move || {
        every_player("node 3", &url, 30, Duration::from_secs(150), |p| {
            matches!(p, Player::Shaka | Player::Native).then_some(15_000.0)
        })
    });
    // The players have started (they share an address and a user agent: one viewer
    // session on node 3), and played a while.
    wait_for(Duration::from_secs(60), "a viewer on node 3", || {
        let body = http.get(&nodes[2].url("/metrics"), &[]).ok()?.text();
        body.contains("sluice_viewers{channel=\"main\"} 1\n")
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(10));
    nodes[0].kill();
    first.kill();
    let (_second, _) =
        publish_until_accepted(&fixture, &nodes[1], &key, &tmp.path().join("ff2.log"))?;
    let failures = players
        .join()
        .map_err(|_| anyhow::anyhow!("players thread panicked"))?;
    ensure!(
        failures.is_empty(),
        "{} of {} players did not play on through the failover:\n{}\n{}",
        failures.len(),
        Player::ALL.len(),
        failures.join("\n"),
        nodes[2].log()
    );
    Ok(())
}

/// A viewer that fell a few segments behind when the origin died: the segments it had
/// not fetched died with the origin, and the new origin's playlist starts after them.
/// hls.js (in its own page, not Sluice's) must still find where to go on.
#[test]
fn a_viewer_behind_the_live_edge_plays_on_when_the_origin_dies() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("behind")?;
    let fixture = fixture(&tmp)?;
    let (mut nodes, key, mut first) = live_on_node_1(&tmp, &fixture, &["--lease-ttl-ms", "3000"])?;
    let http = Http::new(None)?;
    // The viewer reaches node 3 through a proxy the test can stall.
    let proxy = FaultProxy::start(nodes[2].http)?;
    let url = format!("{}{MEDIA}", proxy.base());
    let started = Instant::now();
    let player = std::thread::spawn(move || play_url(&url, "{}", 24, Duration::from_secs(120)));
    // The player has played a while: 8 s after it started, and at least 3 s after it
    // loaded some 3 s of media through the proxy (Chromium may take long to start on a
    // loaded machine).
    wait_for(Duration::from_secs(60), "the viewer to load media", || {
        (proxy.passed_bytes() > 300_000).then_some(())
    })?;
    std::thread::sleep(
        Duration::from_secs(8)
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(3)),
    );
    // The viewer's network stalls while the origin makes three more segments, then
    // the origin dies with them.
    proxy.set(Mode::Stall);
    let cut = Instant::now();
    let stalled_at = hinted_msn(&http.get(&nodes[2].url(MEDIA), &[])?.text()).unwrap_or(0);
    wait_for(Duration::from_secs(20), "three segments more", || {
        let msn = hinted_msn(&http.get(&nodes[2].url(MEDIA), &[]).ok()?.text())?;
        (msn >= stalled_at + 3).then_some(())
    })?;
    nodes[0].kill();
    first.kill();
    let (_second, _) =
        publish_until_accepted(&fixture, &nodes[1], &key, &tmp.path().join("ff2.log"))?;
    wait_for(
        Duration::from_secs(30),
        "node 3 to follow the new origin",
        || {
            let text = http.get(&nodes[2].url(MEDIA), &[]).ok()?.text();
            let after = text.split("#EXT-X-DISCONTINUITY\n").nth(1)?;
            (after.matches("#EXTINF").count() >= 1).then_some(())
        },
    )
    .with_context(|| format!("{}\n{}", nodes[1].log(), nodes[2].log()))?;
    proxy.set(Mode::Pass);
    let cut_for = cut.elapsed();
    validate_playlists(&[
        nodes[2].url(MEDIA),
        format!("{}?_HLS_skip=YES", nodes[2].url(MEDIA)),
    ])?;
    let played = player
        .join()
        .map_err(|_| anyhow::anyhow!("player thread panicked"))??;
    eprintln!(
        "viewer cut off for {:.1} s from segment {stalled_at} while the origin died; \
         hls.js played {:.1} s, longest stall {} ms",
        cut_for.as_secs_f64(),
        played.report["played"].as_f64().unwrap_or(0.0),
        played.report["maxStallMs"]
    );
    ensure!(
        played.ok,
        "hls.js behind the live edge did not play on after the origin's death: {}\n{}",
        played.report,
        nodes[2].log()
    );
    Ok(())
}

/// The fault schedule: 3 nodes with 3 s leases, the publisher on node A. A is
/// paused (SIGSTOP) for 12 s; its encoder gives up on it and publishes to node B, which
/// takes the generation over once A's lease lapsed. When A wakes up, it notices its
/// publisher left and says so: that must not touch B's generation (it is fenced by
/// B's newer claim). 15 s later the stream is still live on B, the same generation,
/// and was never seen waiting for its publisher after B had it.
#[test]
fn a_paused_origin_that_wakes_up_leaves_the_new_origin_live() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("paused-origin")?;
    let fixture = fixture(&tmp)?;
    let nodes = three_nodes(tmp.path(), &["--lease-ttl-ms", "3000"])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let (_, followers) = leader_and_followers(&http, &nodes)?;
    let (a, b) = (followers[0], followers[1]);
    let b_id = b.node_id()?;
    let mut first = Publisher::ffmpeg_loop(&fixture, &a.rtmp_url(&key), &tmp.path().join("a.log"))?;
    let live = wait_for(Duration::from_secs(40), "main live on node A", || {
        main_status(&http, b).filter(|s| s["state"] == "live")
    })
    .with_context(|| a.log())?;
    let generation = live["generation"]["number"].clone();

    // The parts node A has published of its open segment, and their bytes: whatever
    // node B makes, these URLs keep their content (viewers and caches hold them as
    // immutable).
    let text = http.get(&a.url(MEDIA), &[])?.text();
    let mut published = Vec::new();
    for uri in text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1))
        .map(|u| u.trim_end_matches('"').to_string())
    {
        let url = a.url(&format!("/hls/main/source/{uri}"));
        let got = http.get(&url, &[])?;
        if got.status == 200 {
            published.push((uri, got.body));
        }
    }
    ensure!(!published.is_empty(), "node A listed no part:\n{text}");
    signal(a, "-STOP")?;
    let paused = Instant::now();
    first.kill();
    let _second = Publisher::ffmpeg_loop(&fixture, &b.rtmp_url(&key), &tmp.path().join("b.log"))?;
    wait_for(Duration::from_secs(11), "main live on node B", || {
        main_status(&http, b)
            .filter(|s| s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(b_id))
    })
    .with_context(|| b.log())?;
    std::thread::sleep(Duration::from_secs(12).saturating_sub(paused.elapsed()));
    signal(a, "-CONT")?;

    let watched = Instant::now();
    let mut seen = Vec::new();
    while watched.elapsed() < Duration::from_secs(15) {
        if let Some(s) = main_status(&http, b) {
            let state = (
                s["state"].as_str().unwrap_or("?").to_string(),
                s["generation"]["origin"].as_u64(),
            );
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = main_status(&http, b).context("status")?;
    ensure!(
        now["state"] == "live"
            && now["generation"]["origin"].as_u64() == Some(b_id)
            && now["generation"]["number"] == generation,
        "15 s after node A woke up the stream is {now}\nstates seen: {seen:?}\n{}",
        a.log()
    );
    ensure!(
        seen.iter().all(|(state, _)| state == "live"),
        "the stream left live after node A woke up: {seen:?}"
    );
    // One URL, one content: node B never made different bytes under a URL node A had
    // published (it resumes after A's last segment, reported or still open).
    for (uri, bytes) in &published {
        let got = http.get(&b.url(&format!("/hls/main/source/{uri}")), &[])?;
        ensure!(
            got.status != 200 || got.body == *bytes,
            "{uri}: node B serves other bytes than node A published ({} vs {} bytes)",
            got.body.len(),
            bytes.len()
        );
    }
    Ok(())
}

/// An origin paused past its lease while its encoder stays connected (the encoder's
/// writes block; ffmpeg `-re` catches up when they go through again), and a second
/// encoder on node B takes the generation over. When node A wakes, its lease has run
/// out: it publishes nothing more under the generation until it knows where it
/// stands, then lets go. Every object URL either node serves has one content, and
/// hls.js playing from the third node all along plays on without a reload.
#[test]
fn a_woken_origin_whose_encoder_stayed_publishes_nothing_after_the_takeover() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("woken-origin")?;
    let fixture = fixture(&tmp)?;
    let nodes = three_nodes(tmp.path(), &["--lease-ttl-ms", "3000"])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let (leader, followers) = leader_and_followers(&http, &nodes)?;
    let (a, b) = (followers[0], followers[1]);
    let b_id = b.node_id()?;
    let _first = Publisher::ffmpeg_loop(&fixture, &a.rtmp_url(&key), &tmp.path().join("a.log"))?;
    wait_for(Duration::from_secs(40), "main live on node A", || {
        main_status(&http, b).filter(|s| s["state"] == "live")
    })
    .with_context(|| a.log())?;
    let url = leader.url(MEDIA);
    let player = std::thread::spawn(move || play_url(&url, "{}", 24, Duration::from_secs(120)));
    std::thread::sleep(Duration::from_secs(6));
    let before: std::collections::BTreeSet<String> =
        object_uris(&http.get(&a.url(MEDIA), &[])?.text())
            .into_iter()
            .collect();
    signal(a, "-STOP")?;
    let paused = Instant::now();
    let (_second, _) = publish_until_accepted(&fixture, b, &key, &tmp.path().join("b.log"))?;
    wait_for(Duration::from_secs(20), "main live on node B", || {
        main_status(&http, b)
            .filter(|s| s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(b_id))
    })
    .with_context(|| b.log())?;
    std::thread::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed()));
    signal(a, "-CONT")?;

    // What node A lists from now on, with its bytes as A serves them.
    let mut from_a: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let woke = Instant::now();
    while woke.elapsed() < Duration::from_secs(6) {
        if let Ok(r) = http.get(&a.url(MEDIA), &[]) {
            for uri in object_uris(&r.text()) {
                if before.contains(&uri) || from_a.contains_key(&uri) {
                    continue;
                }
                let got = http.get(&a.url(&format!("/hls/main/source/{uri}")), &[])?;
                if got.status == 200 {
                    from_a.insert(uri, got.body);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut collisions = Vec::new();
    for (uri, bytes) in &from_a {
        let got = http.get(&b.url(&format!("/hls/main/source/{uri}")), &[])?;
        if got.status == 200 && got.body != *bytes {
            collisions.push(uri.clone());
        }
    }
    eprintln!(
        "node A listed {} objects after waking: {:?}",
        from_a.len(),
        from_a.keys().collect::<Vec<_>>()
    );
    ensure!(
        collisions.is_empty(),
        "node A published, after node B took over, other bytes under B's URLs: {collisions:?}\n{}",
        a.log()
    );
    ensure!(
        a.log().contains("lease was not renewed in time"),
        "node A did not hold its output when it woke with a stale lease:\n{}",
        a.log()
    );
    let now = main_status(&http, b).context("status")?;
    ensure!(
        now["state"] == "live" && now["generation"]["origin"].as_u64() == Some(b_id),
        "after node A woke the stream is {now}"
    );
    let played = player
        .join()
        .map_err(|_| anyhow::anyhow!("player thread panicked"))??;
    eprintln!(
        "hls.js across the pause and the takeover: {}",
        played.report
    );
    ensure!(
        played.ok && played.current_time >= 24.0,
        "hls.js did not play on across the pause: {}",
        played.report
    );
    Ok(())
}

/// An origin that misses its lease renewals (paused 4.5 s with 3 s leases) while its
/// publisher stays connected: the leader marks it down and its generation waiting for
/// the publisher. When it wakes up, its publisher is still there: the generation is
/// live again on the same node, and the supervisor does not end it when the reconnect
/// grace (10 s here) runs out.
#[test]
fn an_origin_that_missed_its_lease_keeps_its_stream_live() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("missed-lease")?;
    let fixture = fixture(&tmp)?;
    let nodes = three_nodes(
        tmp.path(),
        &["--lease-ttl-ms", "3000", "--reconnect-grace-ms", "10000"],
    )?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let (other, followers) = leader_and_followers(&http, &nodes)?;
    let a = followers[0];
    let a_id = a.node_id()?;
    let mut publisher =
        Publisher::ffmpeg_loop(&fixture, &a.rtmp_url(&key), &tmp.path().join("a.log"))?;
    let live = wait_for(Duration::from_secs(40), "main live on node A", || {
        main_status(&http, other).filter(|s| s["state"] == "live")
    })
    .with_context(|| a.log())?;
    let generation = live["generation"]["number"].clone();

    signal(a, "-STOP")?;
    let marked = wait_for(
        Duration::from_secs(10),
        "node A's stream marked waiting",
        || main_status(&http, other).filter(|s| s["state"] == "reconnecting"),
    );
    signal(a, "-CONT")?;
    marked.with_context(|| other.log())?;
    // Past the grace from the moment it was marked.
    std::thread::sleep(Duration::from_secs(13));
    let now = main_status(&http, other).context("status")?;
    ensure!(
        publisher.wait_exit(Duration::from_millis(100)).is_none(),
        "the publisher was dropped: {}",
        publisher.output()
    );
    ensure!(
        now["state"] == "live"
            && now["generation"]["origin"].as_u64() == Some(a_id)
            && now["generation"]["number"] == generation,
        "13 s after node A came back, with its publisher connected, the stream is {now}\n{}",
        a.log()
    );
    Ok(())
}

/// How far `node`'s wall clock is from this process's, from its `Date` header (seconds
/// of the day; the offsets tested are far below half a day).
fn clock_offset(http: &Http, node: &Server) -> Result<i64> {
    let date = http.get(&node.url("/healthz"), &[])?.header("date");
    let hms: Vec<i64> = date
        .split_whitespace()
        .nth(4)
        .context("no time in the Date header")?
        .split(':')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    ensure!(hms.len() == 3, "Date header {date:?}");
    let theirs = hms[0] * 3600 + hms[1] * 60 + hms[2];
    let ours = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        % 86_400) as i64;
    Ok((theirs - ours + 43_200).rem_euclid(86_400) - 43_200)
}

/// Leases are judged by the leader's own clock, not by comparing the nodes' wall
/// clocks. With 3 s leases, node 2's clock 10 s behind and node 3's 10 s ahead: a stream
/// on the slow node stays live and no node is ever reported down; a stream on the fast
/// node is live on another node within 12 s of its death (renewals stamped 10 s ahead
/// must not hold its lease 10 s longer).
#[test]
fn nodes_whose_clocks_are_10_s_apart_keep_their_leases_and_fail_over_in_time() -> Result<()> {
    let _beside = beside_others();
    ensure!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: scripts/install-test-deps.sh installs it (faketime)"
    );
    let tmp = TempDir::new("skewed-clocks")?;
    let fixture = fixture(&tmp)?;
    let (slow, fast) = (skewed_clock("-10s"), skewed_clock("+10s"));
    let mut nodes =
        three_nodes_each_with_env(tmp.path(), &["--lease-ttl-ms", "3000"], [&[], &slow, &fast])?;
    let http = Http::new(None)?;
    let (slow_offset, fast_offset) = (
        clock_offset(&http, &nodes[1])?,
        clock_offset(&http, &nodes[2])?,
    );
    ensure!(
        slow_offset <= -8 && fast_offset >= 8,
        "the nodes' clocks are not skewed: {slow_offset} s and {fast_offset} s"
    );
    let key = nodes[0].main_key()?;
    let ids = [
        nodes[0].node_id()?,
        nodes[1].node_id()?,
        nodes[2].node_id()?,
    ];
    let auth = format!("Bearer {}", nodes[0].admin_token()?);

    // The slow node originates for 20 s: live all along, every node healthy.
    let mut publisher = Publisher::ffmpeg_loop(
        &fixture,
        &nodes[1].rtmp_url(&key),
        &tmp.path().join("slow.log"),
    )?;
    wait_for(
        Duration::from_secs(40),
        "main live on the slow node",
        || {
            main_status(&http, &nodes[0]).filter(|s| {
                s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(ids[1])
            })
        },
    )
    .with_context(|| nodes[1].log())?;
    let watched = Instant::now();
    let mut seen = Vec::new();
    while watched.elapsed() < Duration::from_secs(20) {
        let state = main_status(&http, &nodes[0]).map(|s| s["state"].to_string());
        let unhealthy: Vec<String> = http
            .get(&nodes[0].url("/api/v1/nodes"), &[("authorization", &auth)])
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v["nodes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|n| n["healthy"] != true)
            .map(|n| n["name"].to_string())
            .collect();
        let now = (state, unhealthy);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        seen.iter()
            .all(|(state, down)| state.as_deref() == Some("\"live\"") && down.is_empty()),
        "with the slow node's clock 10 s behind, the stream or the nodes flapped \
         (state, nodes not healthy): {seen:?}\n{}",
        nodes[0].log()
    );

    // The encoder moves to the fast node; that node dies; it comes back on node 1.
    publisher.kill();
    let (_moved, _) =
        publish_until_accepted(&fixture, &nodes[2], &key, &tmp.path().join("fast.log"))?;
    wait_for(
        Duration::from_secs(40),
        "main live on the fast node",
        || {
            main_status(&http, &nodes[0]).filter(|s| {
                s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(ids[2])
            })
        },
    )
    .with_context(|| nodes[2].log())?;
    nodes[2].kill();
    let killed = Instant::now();
    let (_back, _) =
        publish_until_accepted(&fixture, &nodes[0], &key, &tmp.path().join("back.log"))?;
    wait_for(Duration::from_secs(40), "main live on node 1", || {
        main_status(&http, &nodes[0])
            .filter(|s| s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(ids[0]))
    })
    .with_context(|| nodes[0].log())?;
    let took = killed.elapsed();
    eprintln!("the stream was live again {took:?} after the fast node died");
    ensure!(
        took < Duration::from_secs(12),
        "the stream was live again only {took:?} after the fast node (clock 10 s ahead) \
         died, with 3 s leases\n{}",
        nodes[0].log()
    );
    Ok(())
}

/// A tmpfs of `mib` MiB mounted at `dir` (made here) for the test's lifetime; unmounted
/// on drop. Needs root, as the test command runs.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, mib: u32) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()?
            .success();
        ensure!(
            ok,
            "mounting a {mib} MiB tmpfs at {} failed (the test needs root)",
            dir.display()
        );
        Ok(Self(dir.to_path_buf()))
    }

    /// Writes zeros until the disk is full.
    fn fill(&self) -> Result<()> {
        let mut f = std::fs::File::create(self.0.join("filler"))?;
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

/// The disk under a node's data dir (its Raft log and state) fills up while it
/// originates a stream. The node cannot take part in the cluster any more: it stops its
/// ingest, so its publisher (an encoder that tries the next node after a failure) moves
/// to another node, which continues the generation; the node says why in its log and
/// in `/readyz`, and keeps serving HTTP.
#[test]
fn a_node_whose_state_disk_fills_up_hands_its_stream_over() -> Result<()> {
    let _beside = beside_others();
    let tmp = TempDir::new("full-disk")?;
    // Declared first, dropped last: unmounted after the nodes stopped.
    let disk = SmallDisk::mount(&tmp.path().join("n2"), 48)?;
    let fixture = fixture(&tmp)?;
    let nodes = three_nodes(tmp.path(), &["--lease-ttl-ms", "3000"])?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let (a, c) = (&nodes[1], &nodes[2]);
    let a_id = a.node_id()?;
    let urls = [a.rtmp_url(&key), c.rtmp_url(&key)];
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fixture2 = fixture.clone();
    let _publisher = Respawning::start(
        move || {
            let url = &urls[next.fetch_add(1, Ordering::SeqCst).min(1)];
            ffmpeg_loop_command(&fixture2, url)
        },
        &tmp.path().join("ffmpeg.log"),
    )?;
    let live = wait_for(Duration::from_secs(40), "main live on node A", || {
        main_status(&http, c)
            .filter(|s| s["state"] == "live" && s["generation"]["origin"].as_u64() == Some(a_id))
    })
    .with_context(|| a.log())?;
    let generation = live["generation"]["number"].clone();

    disk.fill()?;
    let moved = wait_for(Duration::from_secs(60), "main live on another node", || {
        main_status(&http, c).filter(|s| {
            s["state"] == "live"
                && s["generation"]["origin"]
                    .as_u64()
                    .is_some_and(|o| o != a_id)
        })
    })
    .with_context(|| a.log())?;
    ensure!(
        moved["generation"]["number"] == generation,
        "the stream did not continue its generation: {moved}"
    );
    let ready = http.get(&a.url("/readyz"), &[])?;
    ensure!(
        ready.status == 503 && ready.text().contains("cluster state"),
        "node A's /readyz answered {}: {}\n{}",
        ready.status,
        ready.text(),
        a.log()
    );
    ensure!(
        a.log().contains("stops its ingest"),
        "node A's log does not say why it stopped its ingest:\n{}",
        a.log()
    );
    Ok(())
}
