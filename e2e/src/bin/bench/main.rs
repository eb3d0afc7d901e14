//! Sluice's benchmark harness. Each scenario prints a table with a peer measured side by
//! side in the same run, on the same machine.
//!
//! ```text
//! cargo run --release -p sluice-e2e --bin bench -- packager|raft|failover [--quick]
//! ```
//! `packager`: FLV demux + packaging (CMAF parts, segments) in-process, on the 2 s GOP
//! fixture and on a 6 Mbit/s 720p stream made with ffmpeg; the peer is ffmpeg remuxing
//! the same file into fragmented MP4 (`-c copy`, 200 ms fragments) into /dev/null.
//!
//! `raft`: see `raft.rs` (commits/s and leader failover against etcd).
//!
//! `failover`: see `failover.rs` (the origin killed; time until a viewer on a third node
//! gets the new origin's first part).

mod failover;
mod raft;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use sluice_e2e::{fixture, make_test_stream, run_ok, workspace_root};
use sluice_media::flv::{FlvDemuxer, FlvFile, FlvTag};
use sluice_media::{Output, Packager, PackagerSettings};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let scenarios: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    const KNOWN: [&str; 3] = ["packager", "raft", "failover"];
    if scenarios.is_empty() || scenarios.iter().any(|s| !KNOWN.contains(s)) {
        bail!("usage: bench SCENARIO... [--quick]   (scenarios: packager, raft, failover)");
    }
    for s in scenarios {
        match s {
            "packager" => packager(quick)?,
            "raft" => raft::run(quick)?,
            _ => failover::run(quick)?,
        }
    }
    Ok(())
}

struct Row {
    input: String,
    frames_per_s: f64,
    media_mbit_per_s: f64,
    peer_frames_per_s: f64,
}

fn packager(quick: bool) -> Result<()> {
    let budget = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    };
    let mut inputs = vec![fixture("h264_aac_gop2s.flv")];
    inputs.push(high_bitrate_input(quick)?);
    let mut rows = Vec::new();
    for input in &inputs {
        let tags = read_tags(input)?;
        let (frames, media_bytes) = count_media(&tags);
        let started = Instant::now();
        let mut runs = 0u32;
        while runs == 0 || started.elapsed() < budget {
            package_once(&tags)?;
            runs += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        let peer_secs = ffmpeg_remux_seconds(input, if quick { 1 } else { 20 })?;
        rows.push(Row {
            input: input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            frames_per_s: f64::from(runs) * frames as f64 / secs,
            media_mbit_per_s: f64::from(runs) * media_bytes as f64 * 8.0 / secs / 1e6,
            peer_frames_per_s: frames as f64 * f64::from(if quick { 1 } else { 20 }) / peer_secs,
        });
    }
    println!("packager throughput, one core (FLV tags in memory -> CMAF parts and segments)");
    println!(
        "| input | sluice frames/s | sluice Mbit/s of media | ffmpeg -c copy frames/s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.1}x |",
            r.input,
            r.frames_per_s,
            r.media_mbit_per_s,
            r.peer_frames_per_s,
            r.frames_per_s / r.peer_frames_per_s
        );
    }
    Ok(())
}

fn read_tags(path: &Path) -> Result<Vec<FlvTag>> {
    let data = std::fs::read(path).with_context(|| path.display().to_string())?;
    let mut file = FlvFile::new(Bytes::from(data))?;
    let mut tags = Vec::new();
    while let Some(tag) = file.next_tag()? {
        tags.push(tag);
    }
    Ok(tags)
}

fn count_media(tags: &[FlvTag]) -> (u64, u64) {
    let media = tags.iter().filter(|t| t.tag_type == 8 || t.tag_type == 9);
    media.fold((0, 0), |(n, bytes), t| (n + 1, bytes + t.body.len() as u64))
}

/// One pass of what the live origin does per channel: demux, package, collect outputs.
fn package_once(tags: &[FlvTag]) -> Result<u64> {
    let mut demuxer = FlvDemuxer::new();
    let mut packager = Packager::new(PackagerSettings::default())?;
    let mut out_bytes = 0u64;
    for tag in tags {
        let input = match tag.tag_type {
            8 => demuxer.push_audio(tag.timestamp_ms, &tag.body)?,
            9 => demuxer.push_video(tag.timestamp_ms, &tag.body)?,
            _ => None,
        };
        if let Some(input) = input {
            packager.push(input, 0)?;
            while let Some(o) = packager.poll_output() {
                if let Output::Part(p) = o {
                    out_bytes += p.data.len() as u64;
                }
            }
        }
    }
    packager.finish()?;
    while let Some(o) = packager.poll_output() {
        if let Output::Part(p) = o {
            out_bytes += p.data.len() as u64;
        }
    }
    Ok(out_bytes)
}

/// A 6 Mbit/s 720p30 H.264 + AAC stream, made once and kept under target/.
fn high_bitrate_input(quick: bool) -> Result<PathBuf> {
    let seconds = if quick { 2 } else { 10 };
    let path = workspace_root().join(format!("target/bench-720p-6mbit-{seconds}s.flv"));
    if path.exists() {
        return Ok(path);
    }
    make_test_stream(
        &path,
        "1280x720",
        seconds,
        &[
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-b:v",
            "6M",
            "-minrate",
            "6M",
            "-maxrate",
            "6M",
            "-bufsize",
            "1M",
            "-g",
            "60",
        ],
    )?;
    Ok(path)
}

/// Wall time of ffmpeg remuxing `input` `loops` times into 200 ms CMAF fragments.
fn ffmpeg_remux_seconds(input: &Path, loops: u32) -> Result<f64> {
    let started = Instant::now();
    run_ok(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-threads",
                "1",
                "-stream_loop",
            ])
            .arg((loops - 1).to_string())
            .arg("-i")
            .arg(input)
            .args([
                "-c",
                "copy",
                "-f",
                "mp4",
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
                "-frag_duration",
                "200000",
                "-y",
                "/dev/null",
            ]),
        Duration::from_secs(300),
    )?;
    Ok(started.elapsed().as_secs_f64())
}
