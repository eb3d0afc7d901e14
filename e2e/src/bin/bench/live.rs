//! Scenarios on a live sluice origin: part latency (`latency`), viewers per node
//! (`viewers`), object throughput against nginx (`throughput`) and edge offload
//! (`offload`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sluice_e2e::load::{self, listed_parts, LoadReport, LoadSettings};
use sluice_e2e::node::{load_test_config, three_nodes, wait_for, Http, Publisher, Server};
use sluice_e2e::rtmp_client::RtmpPublisher;
use sluice_e2e::{run, TempDir};

use crate::peer::{Nginx, Processes};
use crate::{bench_stream, percentiles, read_tags, use_release_sluice, Table};

pub(crate) const MEDIA: &str = "/hls/main/source/index.m3u8";

/// A node with ffmpeg publishing `stream` to its `main` channel, once the playlist
/// lists at least `segments` whole segments.
pub(crate) fn live_node(
    dir: &std::path::Path,
    stream: &std::path::Path,
    segments: usize,
) -> Result<(Server, Publisher)> {
    let server = Server::start(dir, &["--config", &load_test_config(dir)?])?;
    let key = server.main_key()?;
    let publisher = Publisher::ffmpeg_loop(stream, &server.rtmp_url(&key), &dir.join("ff.log"))?;
    wait_live(&server.url(MEDIA), segments)?;
    Ok((server, publisher))
}

/// Waits until the playlist at `url` lists `segments` whole segments.
pub(crate) fn wait_live(url: &str, segments: usize) -> Result<String> {
    let http = Http::new(None)?;
    wait_for(Duration::from_secs(40), "the live playlist", || {
        let r = http.get(url, &[]).ok()?;
        let text = r.text();
        (r.status == 200 && text.matches("#EXTINF").count() >= segments).then_some(text)
    })
}

/// The newest part a media playlist lists, and its last whole segment (in a media
/// playlist the only lines that are not tags are segment URIs).
fn newest_objects(text: &str) -> (Option<String>, Option<String>) {
    let part = listed_parts(text).pop().map(|p| p.uri);
    let segment = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from);
    (part, segment)
}

// ---------------------------------------------------------------------------------
// latency

/// Reads big-endian box headers: (type, body) pairs of `data`.
fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 8 {
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = [data[4], data[5], data[6], data[7]];
        let (header, size) = if size == 1 && data.len() >= 16 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[8..16]);
            (16, u64::from_be_bytes(b) as usize)
        } else {
            (8, size)
        };
        if size < header || size > data.len() {
            break;
        }
        out.push((kind, &data[header..size]));
        data = &data[size..];
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The video track of an init segment: (track id, timescale).
fn video_track(init: &[u8]) -> Option<(u32, u32)> {
    let moov = child(init, b"moov")?;
    boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .find_map(|(_, trak)| {
            let tkhd = child(trak, b"tkhd")?;
            let id = be32(tkhd, if tkhd.first()? == &1 { 20 } else { 12 })?;
            let mdia = child(trak, b"mdia")?;
            let hdlr = child(mdia, b"hdlr")?;
            if hdlr.get(8..12)? != b"vide" {
                return None;
            }
            let mdhd = child(mdia, b"mdhd")?;
            let timescale = be32(mdhd, if mdhd.first()? == &1 { 20 } else { 12 })?;
            Some((id, timescale))
        })
}

/// Where the video of a CMAF part ends, in track ticks: tfdt + the sample durations.
fn video_end(part: &[u8], track: u32) -> Option<u64> {
    let mut end = None;
    for (kind, moof) in boxes(part) {
        if &kind != b"moof" {
            continue;
        }
        for (k, traf) in boxes(moof) {
            if &k != b"traf" {
                continue;
            }
            let tfhd = child(traf, b"tfhd")?;
            if be32(tfhd, 4)? != track {
                continue;
            }
            let flags = be32(tfhd, 0)? & 0xff_ffff;
            let mut at = 8;
            if flags & 0x1 != 0 {
                at += 8;
            }
            if flags & 0x2 != 0 {
                at += 4;
            }
            let default_duration = (flags & 0x8 != 0).then(|| be32(tfhd, at)).flatten();
            let tfdt = child(traf, b"tfdt")?;
            let base = if tfdt.first()? == &1 {
                be64(tfdt, 4)?
            } else {
                u64::from(be32(tfdt, 4)?)
            };
            let trun = child(traf, b"trun")?;
            let tflags = be32(trun, 0)? & 0xff_ffff;
            let count = be32(trun, 4)? as usize;
            let mut at = 8;
            if tflags & 0x1 != 0 {
                at += 4;
            }
            if tflags & 0x4 != 0 {
                at += 4;
            }
            let per_sample = [0x100, 0x200, 0x400, 0x800]
                .iter()
                .filter(|f| tflags & **f != 0)
                .count()
                * 4;
            let mut total = 0u64;
            for i in 0..count {
                let d = if tflags & 0x100 != 0 {
                    be32(trun, at + i * per_sample)?
                } else {
                    default_duration?
                };
                total += u64::from(d);
            }
            end = Some(base + total);
        }
    }
    end
}

/// Tags sent by the pacing publisher: video tag timestamps and when they left.
type Sent = Arc<Mutex<Vec<(u32, Instant)>>>;

/// Sends `tags` in real time, looped, for `limit`; notes each video tag's departure.
fn paced_publisher(
    port: u16,
    key: &str,
    tags: Vec<sluice_media::flv::FlvTag>,
    limit: Duration,
    sent: Sent,
) -> Result<()> {
    let mut publisher = RtmpPublisher::publish(port, "live", key)?;
    let media: Vec<_> = tags
        .into_iter()
        .filter(|t| t.tag_type == 8 || t.tag_type == 9)
        .collect();
    let span = media.last().map_or(0, |t| t.timestamp_ms) + 33;
    let started = Instant::now();
    let mut round = 0u32;
    while started.elapsed() < limit {
        for tag in &media {
            // Sequence headers (AVC packet type 0 / AAC packet type 0) once only.
            let header = tag.body.get(1) == Some(&0);
            if round > 0 && header {
                continue;
            }
            let ts = tag.timestamp_ms + round * span;
            let due = started + Duration::from_millis(u64::from(ts));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            publisher.send_tag(tag.tag_type, ts, &tag.body)?;
            if tag.tag_type == 9 && !header {
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((ts, Instant::now()));
            }
            if started.elapsed() >= limit {
                break;
            }
        }
        round += 1;
    }
    Ok(())
}

/// The listing of one part: when its blocking reload was asked and answered, and
/// where its video ends (ms).
struct Listed {
    asked: Instant,
    answered: Instant,
    end_ms: f64,
}

/// Scenario 1: a publisher of our own paces a 30 fps stream over RTMP and notes when
/// each frame leaves; a blocking playlist client asks for each next part. For each
/// part: from the frame that completes it (the next part's first frame: until that
/// arrives the part's end is unknown) leaving the publisher, to the blocking response
/// listing it. The part's own last frame is one frame interval earlier.
pub(crate) fn latency(quick: bool, table: &mut Table) -> Result<()> {
    use_release_sluice()?;
    let tmp = TempDir::new("bench-latency")?;
    let stream = bench_stream(3000)?;
    let server = Server::start(
        &tmp.path().join("node"),
        &["--config", &load_test_config(tmp.path())?],
    )?;
    let key = server.main_key()?;
    let run_for = Duration::from_secs(if quick { 8 } else { 40 });
    let sent: Sent = Arc::default();
    let tags = read_tags(&stream)?;
    let publishing = Instant::now();
    let publisher = {
        let (port, key, sent) = (server.rtmp, key.clone(), sent.clone());
        std::thread::spawn(move || paced_publisher(port, &key, tags, run_for, sent))
    };
    let http = Http::new(None)?;
    let url = server.url(MEDIA);
    let text = wait_live(&url, 1)?;
    let map = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|v| v.split('"').next())
        .context("no EXT-X-MAP in the playlist")?
        .to_string();
    let init = http.get(&server.url(&format!("/hls/main/source/{map}")), &[])?;
    let (track, timescale) = video_track(&init.body).context("no video track in the init")?;
    let mut listed = Vec::new();
    let (mut msn, mut part) = next_part(&text).context("no parts listed")?;
    // Stop asking before the publisher stops sending.
    let deadline = publishing + run_for - Duration::from_millis(1500);
    while Instant::now() < deadline {
        let asked = Instant::now();
        let r = http.get(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}"), &[])?;
        let answered = Instant::now();
        ensure!(
            r.status == 200,
            "blocking reload {:?} after the publisher started: HTTP {} {}",
            asked.duration_since(publishing),
            r.status,
            r.text()
        );
        let text = r.text();
        let (last_uri, _) = newest_objects(&text);
        let last_uri = last_uri.context("no part listed")?;
        let body = http.get(&server.url(&format!("/hls/main/source/{last_uri}")), &[])?;
        let end = video_end(&body.body, track).context("no video in a part")?;
        listed.push(Listed {
            asked,
            answered,
            end_ms: end as f64 * 1000.0 / f64::from(timescale),
        });
        (msn, part) = next_part(&text).context("no parts listed")?;
    }
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))??;
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (mut closing, mut last_frame) = (Vec::new(), Vec::new());
    for l in &listed {
        // The first frame at or after the part's end completed it.
        let Some(i) = sent
            .iter()
            .position(|(ts, _)| f64::from(*ts) >= l.end_ms - 0.5)
        else {
            continue;
        };
        let (_, completed_at) = sent[i];
        // Only a reload that was waiting when the part completed measures it.
        if l.asked > completed_at || i == 0 {
            continue;
        }
        closing.push(
            l.answered
                .saturating_duration_since(completed_at)
                .as_secs_f64()
                * 1e3,
        );
        let (_, last_at) = sent[i - 1];
        last_frame.push(l.answered.saturating_duration_since(last_at).as_secs_f64() * 1e3);
    }
    ensure!(
        closing.len() >= 3,
        "only {} parts measured of {} listed",
        closing.len(),
        listed.len()
    );
    let c = percentiles(&mut closing);
    let f = percentiles(&mut last_frame);
    table.note(format!(
        "latency: 720p30 3 Mbit/s H.264 + AAC paced over RTMP by a publisher of the bench's \
         own, 200 ms parts, {} parts measured over {run_for:?}; no peer: nginx-rtmp has no \
         parts or blocking reloads",
        closing.len()
    ));
    for (name, p) in [("p50", c.0), ("p99", c.1), ("max", c.2)] {
        table.row(
            "latency",
            &format!("part completed (next frame in) -> listed by a blocking reload, {name}"),
            format!("{p:.1} ms"),
            "no LL-HLS".into(),
            None,
            if name == "p99" { "<= 5 ms" } else { "-" },
        );
    }
    table.row(
        "latency",
        "part's last frame in -> listed, p99 (adds one frame interval, 33 ms)",
        format!("{:.1} ms", f.1),
        "no LL-HLS".into(),
        None,
        "-",
    );
    Ok(())
}

/// The part after the last one listed, as `_HLS_msn`/`_HLS_part` (past a segment's
/// last part the server answers with the next segment's first).
fn next_part(text: &str) -> Option<(u64, u64)> {
    listed_parts(text).pop().map(|p| (p.msn, p.index + 1))
}

// ---------------------------------------------------------------------------------
// viewers

fn load_step(url: &str, n: usize, quick: bool) -> Result<LoadReport> {
    load::run(&LoadSettings {
        url: url.to_string(),
        viewers: n,
        duration: Duration::from_secs(if quick { 3 } else { 10 }),
        ramp: Duration::from_millis((n as u64).clamp(200, 3000)),
        threads: 2,
    })
}

/// Scenario 3: LL-HLS viewers against one node, stepping up until the p99
/// part-delivery delay passes 100 ms or any request fails.
pub(crate) fn viewers(quick: bool, table: &mut Table) -> Result<()> {
    use_release_sluice()?;
    let tmp = TempDir::new("bench-viewers")?;
    let stream = bench_stream(3000)?;
    let (server, _publisher) = live_node(&tmp.path().join("node"), &stream, 1)?;
    let procs = Processes::one(server.pid());
    let client = Processes::one(Some(std::process::id()));
    let steps: &[usize] = if quick {
        &[20, 50]
    } else {
        &[250, 500, 1000, 2000, 3000, 4000, 6000, 8000]
    };
    let url = server.url(MEDIA);
    let mut best: Option<(LoadReport, f64, f64)> = None;
    let mut stopped_by = String::from("the last step passed");
    for &n in steps {
        let (cpu0, client0) = (procs.cpu_seconds(), client.cpu_seconds());
        let report = load_step(&url, n, quick)?;
        let cores = (procs.cpu_seconds() - cpu0) / report.seconds;
        let client_cores = (client.cpu_seconds() - client0) / report.seconds;
        let rss = procs.rss_mib();
        eprintln!(
            "viewers {n}: p99 {:.1} ms, max {:.1} ms, errors {}, parts {}, server {cores:.2} cores, {rss:.0} MiB, client {client_cores:.2} cores",
            report.delay_p99_ms, report.delay_max_ms, report.errors, report.parts
        );
        if report.parts == 0 {
            bail!("{n} viewers received no parts: {:?}", report.error_samples);
        }
        if report.errors > 0 || report.delay_p99_ms > 100.0 {
            stopped_by = format!(
                "{n} viewers: p99 {:.0} ms, {} errors{}",
                report.delay_p99_ms,
                report.errors,
                report
                    .error_samples
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            break;
        }
        best = Some((report, cores, rss));
    }
    let (report, cores, rss) = best.with_context(|| format!("no step passed: {stopped_by}"))?;
    table.note(format!(
        "viewers: one node, 720p30 3 Mbit/s with 200 ms parts; each viewer one HTTP/1.1 \
         connection doing blocking reload + part fetch; the load client runs on the same \
         2 cores (2 threads); stopped at: {stopped_by}; no peer: nginx-rtmp has no LL-HLS"
    ));
    let row = |t: &mut Table, figure: &str, value: String, target: &str| {
        t.row("viewers", figure, value, "no LL-HLS".into(), None, target);
    };
    row(
        table,
        "viewers with p99 part delay <= 100 ms and no errors",
        report.viewers.to_string(),
        "-",
    );
    row(
        table,
        "part-delivery delay p50 / p99 at that load",
        format!("{:.1} / {:.1} ms", report.delay_p50_ms, report.delay_p99_ms),
        "p99 <= 100 ms",
    );
    row(
        table,
        "server CPU at that load",
        format!("{cores:.2} cores"),
        "-",
    );
    row(
        table,
        "viewers per core of server CPU",
        format!("{:.0}", report.viewers as f64 / cores.max(0.01)),
        ">= 5000",
    );
    row(
        table,
        "server RSS at that load",
        format!("{rss:.0} MiB"),
        "-",
    );
    row(
        table,
        "media delivered",
        format!(
            "{:.2} Gbit/s",
            report.bytes as f64 * 8.0 / report.seconds / 1e9
        ),
        "-",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// throughput

struct Wrk {
    requests_per_s: f64,
}

fn wrk(url: &str, seconds: u64) -> Result<Wrk> {
    let out = run(
        std::process::Command::new("wrk")
            .args(["-t", "2", "-c", "64", "-d"])
            .arg(format!("{seconds}s"))
            .arg(url),
        Duration::from_secs(seconds + 30),
    )
    .context("running wrk (install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "wrk failed: {text}");
    ensure!(
        !text.contains("Non-2xx"),
        "wrk got error responses from {url}:\n{text}"
    );
    let requests_per_s = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    Ok(Wrk { requests_per_s })
}

/// Scenario 4: the same part and segment bytes served to wrk by sluice (from its
/// spool) and by nginx (from disk).
pub(crate) fn throughput(quick: bool, table: &mut Table) -> Result<()> {
    use_release_sluice()?;
    let tmp = TempDir::new("bench-throughput")?;
    let stream = bench_stream(4000)?;
    let (server, _publisher) = live_node(&tmp.path().join("node"), &stream, 2)?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), 2, 2)?;
    let http = Http::new(None)?;
    let text = http.get(&server.url(MEDIA), &[])?.text();
    let (part, segment) = newest_objects(&text);
    let seconds = if quick { 1 } else { 8 };
    let mut notes = Vec::new();
    for (what, uri) in [("part", part), ("segment", segment)] {
        let uri = uri.with_context(|| format!("no {what} listed"))?;
        let sluice_url = server.url(&format!("/hls/main/source/{uri}"));
        let body = http.get(&sluice_url, &[])?;
        ensure!(body.status == 200, "{what} {uri}: HTTP {}", body.status);
        let size = body.body.len() as f64;
        std::fs::write(nginx.www.join(format!("{what}.m4s")), &body.body)?;
        let ours = wrk(&sluice_url, seconds)?;
        let theirs = wrk(&nginx.url(&format!("/{what}.m4s")), seconds)?;
        let gbit = |w: &Wrk| w.requests_per_s * size * 8.0 / 1e9;
        table.row(
            "throughput",
            &format!("{what} ({:.0} KB) requests/s", size / 1000.0),
            format!("{:.0} ({:.1} Gbit/s)", ours.requests_per_s, gbit(&ours)),
            format!(
                "nginx {:.0} ({:.1} Gbit/s)",
                theirs.requests_per_s,
                gbit(&theirs)
            ),
            Some(ours.requests_per_s / theirs.requests_per_s),
            ">= 1.0x",
        );
        notes.push(format!("{what} {uri}"));
    }
    table.note(format!(
        "throughput: wrk -t2 -c64 for {seconds} s per object on loopback, same 2 cores; \
         sluice serves from its live spool, nginx (2 workers, sendfile) the same bytes from \
         disk ({})",
        notes.join(", ")
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------
// offload

fn metric(http: &Http, server: &Server, line: &str) -> Result<u64> {
    http.metric(&server.base(), line)
}

/// Scenario 5: viewers on a node that is not the origin; how many requests for each
/// object reach the origin.
pub(crate) fn offload(quick: bool, table: &mut Table) -> Result<()> {
    use_release_sluice()?;
    let tmp = TempDir::new("bench-offload")?;
    let stream = bench_stream(3000)?;
    let nodes = three_nodes(tmp.path(), &["--config", &load_test_config(tmp.path())?])?;
    let key = nodes[0].main_key()?;
    let _publisher = Publisher::ffmpeg_loop(
        &stream,
        &nodes[0].rtmp_url(&key),
        &tmp.path().join("ff.log"),
    )?;
    let url = nodes[2].url(MEDIA);
    wait_live(&url, 1)?;
    let http = Http::new(None)?;
    let pulled = "sluice_pulled_requests_total{kind=\"object\"}";
    let before = metric(&http, &nodes[0], pulled)?;
    let n = if quick { 20 } else { 500 };
    let report = load_step(&url, n, quick)?;
    let after = metric(&http, &nodes[0], pulled)?;
    ensure!(
        report.errors == 0,
        "viewers on node 3 saw errors: {:?}",
        report.error_samples
    );
    ensure!(report.distinct_fetched > 0, "the viewers got no parts");
    let per_object = (after - before) as f64 / report.distinct_fetched as f64;
    table.note(format!(
        "offload: 3 nodes, the publisher on node 1, {n} viewers on node 3 for {:.0} s; \
         {} different parts fetched {} times; origin counts pull requests it served",
        report.seconds, report.distinct_fetched, report.parts
    ));
    table.row(
        "offload",
        "upstream requests at the origin per object",
        format!("{per_object:.2}"),
        "no cluster".into(),
        None,
        "exactly 1",
    );
    Ok(())
}
