//! `failover`: three nodes, ffmpeg publishing to node 1 and a viewer polling node 3;
//! node 1 killed with SIGKILL and the publisher restarted against node 2 until it is
//! accepted (as OBS retries). Figures: how long after the kill a publisher is accepted
//! (the lease TTL decides it), and how long after that the viewer on node 3 gets the new
//! origin's first part. No peer: nginx-rtmp has no cluster to fail over in.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_e2e::node::{three_nodes, wait_for, Http, Publisher, Server};
use sluice_e2e::{make_small_stream, media_sequence, TempDir};

use crate::Table;

const MEDIA: &str = "/hls/main/source/index.m3u8";
const LEASE_TTL_MS: &str = "3000";

/// The last part listed (`#EXT-X-PART:...URI="..."`), if any.
fn last_part(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1))
        .filter_map(|v| v.split('"').next())
        .next_back()
        .map(String::from)
}

fn accepted(
    fixture: &Path,
    server: &Server,
    key: &str,
    log: &Path,
) -> Result<(Publisher, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let launched = Instant::now();
        let mut p = Publisher::ffmpeg_loop(fixture, &server.rtmp_url(key), log)?;
        if p.wait_exit(Duration::from_secs(2)).is_none() {
            return Ok((p, launched));
        }
        if Instant::now() > deadline {
            let log = server.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "no publisher accepted within 60 s: {}\nthe node's log ends:\n{}",
                p.output(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Round {
    accepted_s: f64,
    first_part_s: f64,
}

fn round(root: &Path, fixture: &Path) -> Result<Round> {
    let mut nodes = three_nodes(root, &["--lease-ttl-ms", LEASE_TTL_MS])?;
    let key = nodes[0].main_key()?;
    let mut first =
        Publisher::ffmpeg_loop(fixture, &nodes[0].rtmp_url(&key), &root.join("ff1.log"))?;
    let http = Http::new(None)?;
    let node3 = nodes[2].url(MEDIA);
    wait_for(Duration::from_secs(40), "the stream on node 3", || {
        let r = http.get(&node3, &[]).ok()?;
        (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
    })?;
    let killed = Instant::now();
    nodes[0].kill();
    first.kill();
    let (_second, launched) = accepted(fixture, &nodes[1], &key, &root.join("ff2.log"))?;
    // The viewer: the new origin's first part fetched through node 3.
    let got = wait_for(Duration::from_secs(30), "a new part on node 3", || {
        let text = http.get(&node3, &[]).ok()?.text();
        let resumed = text.contains("#EXT-X-DISCONTINUITY") && media_sequence(&text).is_some();
        let part = last_part(&text).filter(|_| resumed)?;
        let r = http
            .get(&nodes[2].url(&format!("/hls/main/source/{part}")), &[])
            .ok()?;
        (r.status == 200 && !r.body.is_empty()).then(Instant::now)
    })
    .context("node 3 never served the new origin's parts")?;
    Ok(Round {
        accepted_s: launched.duration_since(killed).as_secs_f64(),
        first_part_s: got.saturating_duration_since(launched).as_secs_f64(),
    })
}

pub(crate) fn run(quick: bool, table: &mut Table) -> Result<()> {
    crate::use_release_sluice()?;
    let tmp = TempDir::new("bench-failover")?;
    let fixture = tmp.path().join("stream.flv");
    make_small_stream(&fixture)?;
    let rounds = if quick { 1 } else { 3 };
    let mut results = Vec::new();
    for i in 0..rounds {
        results.push(round(&tmp.path().join(format!("round{i}")), &fixture)?);
    }
    let worst = |f: fn(&Round) -> f64| results.iter().map(f).fold(0.0, f64::max);
    table.note(format!(
        "failover: {rounds} round(s), worst shown; lease TTL {LEASE_TTL_MS} ms, 2 s segments, \
         200 ms parts; the peer has no cluster to fail over in"
    ));
    table.row(
        "failover",
        "origin killed -> publisher accepted on another node",
        format!("{:.2} s", worst(|r| r.accepted_s)),
        "no cluster".into(),
        None,
        "lease TTL",
    );
    table.row(
        "failover",
        "publisher accepted -> viewer on a third node gets a new part",
        format!("{:.2} s", worst(|r| r.first_part_s)),
        "no cluster".into(),
        None,
        "<= 3 s",
    );
    Ok(())
}
