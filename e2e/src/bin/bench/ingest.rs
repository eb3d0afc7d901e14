//! Scenario 6: ingest cost. M ffmpeg publishers (`-re -c copy`, 3 Mbit/s 720p30) into
//! sluice (packaging LL-HLS, spooling to disk) and into nginx-rtmp (`hls on`, writing
//! MPEG-TS fragments); the server's CPU seconds per stream-minute and its memory,
//! measured once every publisher is on.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use sluice_e2e::node::{load_test_config, Http, Publisher, Server};
use sluice_e2e::TempDir;

use crate::live::wait_live;
use crate::peer::{Nginx, Processes};
use crate::{bench_stream, use_release_sluice, Table};

struct Cost {
    cpu_s_per_stream_minute: f64,
    rss_mib: f64,
}

/// Measures `procs` for `run_for` (every stream already live).
fn measure(procs: &Processes, streams: usize, run_for: Duration) -> Cost {
    let cpu0 = procs.cpu_seconds();
    let started = Instant::now();
    std::thread::sleep(run_for);
    let cpu = procs.cpu_seconds() - cpu0;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    Cost {
        cpu_s_per_stream_minute: cpu / (streams as f64 * minutes),
        rss_mib: procs.rss_mib(),
    }
}

/// A channel and a stream key for it, through the admin API.
fn channel_with_key(http: &Http, server: &Server, token: &str, name: &str) -> Result<String> {
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = http.send(
        reqwest::Method::POST,
        &server.url("/api/v1/channels"),
        &headers,
        json!({ "name": name }).to_string().as_bytes(),
    )?;
    ensure!(
        r.status == 201,
        "creating {name}: HTTP {} {}",
        r.status,
        r.text()
    );
    let r = http.send(
        reqwest::Method::POST,
        &server.url(&format!("/api/v1/channels/{name}/keys")),
        &headers,
        b"",
    )?;
    ensure!(
        r.status == 201,
        "a key for {name}: HTTP {} {}",
        r.status,
        r.text()
    );
    let v: Value = serde_json::from_slice(&r.body)?;
    v["stream_key"]
        .as_str()
        .map(String::from)
        .context("no stream_key in the answer")
}

fn sluice_cost(dir: &std::path::Path, m: usize, run_for: Duration) -> Result<Cost> {
    let server = Server::start(&dir.join("node"), &["--config", &load_test_config(dir)?])?;
    let token = server.admin_token()?;
    let http = Http::new(None)?;
    let stream = bench_stream(3000)?;
    let mut publishers = Vec::new();
    let mut names = Vec::new();
    for i in 0..m {
        let name = format!("cam{i}");
        let key = channel_with_key(&http, &server, &token, &name)?;
        let log = dir.join(format!("ff{i}.log"));
        publishers.push(Publisher::ffmpeg_loop(
            &stream,
            &server.rtmp_url(&key),
            &log,
        )?);
        names.push(name);
    }
    for name in &names {
        wait_live(&server.url(&format!("/hls/{name}/source/index.m3u8")), 1)?;
    }
    let cost = measure(&Processes::one(server.pid()), m, run_for);
    all_publishing(&mut publishers, "sluice")?;
    Ok(cost)
}

/// A figure only counts if no publisher was refused or cut meanwhile.
fn all_publishing(publishers: &mut [Publisher], server: &str) -> Result<()> {
    for (i, p) in publishers.iter_mut().enumerate() {
        ensure!(
            p.exited().is_none(),
            "publisher {i} to {server} ended: {}",
            p.output()
        );
    }
    Ok(())
}

fn nginx_cost(dir: &std::path::Path, m: usize, run_for: Duration) -> Result<Cost> {
    let nginx = Nginx::start(dir, 1, 2)?;
    let stream = bench_stream(3000)?;
    let mut publishers = Vec::new();
    for i in 0..m {
        let log = dir.join(format!("ff{i}.log"));
        publishers.push(Publisher::ffmpeg_loop(
            &stream,
            &nginx.rtmp_url(&format!("cam{i}")),
            &log,
        )?);
    }
    for i in 0..m {
        wait_live(&nginx.hls_url(&format!("cam{i}")), 1).with_context(|| nginx.errors())?;
    }
    let cost = measure(&nginx.processes(), m, run_for);
    all_publishing(&mut publishers, "nginx")?;
    Ok(cost)
}

pub(crate) fn run(quick: bool, table: &mut Table) -> Result<()> {
    use_release_sluice()?;
    let tmp = TempDir::new("bench-ingest")?;
    let (m, run_for) = if quick {
        (2, Duration::from_secs(3))
    } else {
        (10, Duration::from_secs(60))
    };
    let ours = sluice_cost(&tmp.path().join("sluice"), m, run_for)?;
    let theirs = nginx_cost(&tmp.path().join("nginx"), m, run_for)?;
    table.note(format!(
        "ingest: {m} ffmpeg publishers (-re -c copy, 720p30 3 Mbit/s, 2 s GOP), server CPU \
         measured for {run_for:?} once all were live; sluice packages LL-HLS (200 ms parts) \
         and spools to disk, nginx-rtmp (1 worker) writes 2 s MPEG-TS fragments"
    ));
    table.row(
        "ingest",
        "server CPU seconds per stream-minute",
        format!("{:.2}", ours.cpu_s_per_stream_minute),
        format!("nginx {:.2}", theirs.cpu_s_per_stream_minute),
        Some(theirs.cpu_s_per_stream_minute / ours.cpu_s_per_stream_minute),
        "sluice <= nginx (goal: half)",
    );
    table.row(
        "ingest",
        &format!("server RSS with {m} streams"),
        format!("{:.0} MiB", ours.rss_mib),
        format!("nginx {:.0} MiB", theirs.rss_mib),
        Some(theirs.rss_mib / ours.rss_mib),
        "-",
    );
    Ok(())
}
