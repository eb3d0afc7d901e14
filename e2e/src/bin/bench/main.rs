//! Sluice's benchmark harness: each scenario starts what it needs (sluice nodes, the
//! peer, publishers from pre-encoded files with `-c copy`), runs for a bounded time,
//! stops everything, and adds rows to one markdown table printed at the end: figure,
//! sluice, peer, ratio (above 1 means sluice does better), target.
//!
//! ```text
//! cargo run --release -p sluice-e2e --bin bench -- [SCENARIO...] [--quick]
//! cargo run --release -p sluice-e2e --bin bench -- viewers --url URL -n N [--seconds S]
//! cargo run --release -p sluice-e2e --bin bench -- faults [--seeds N | --seed S] [--faults K] [--nodes 3|5]
//! ```
//! With no scenario, all run. `--quick` runs each for a few seconds (CI uses it so the
//! harness cannot rot; its figures mean little).
//!
//! - `packager`: FLV demux + packaging in-process; peer ffmpeg remuxing to fMP4.
//! - `latency`: part latency at the origin (`live.rs`).
//! - `player`: hls.js live-edge distance in Chromium; peer nginx-rtmp (`player.rs`).
//! - `viewers`: LL-HLS viewers one node carries (`live.rs`, load client in `sluice_e2e::load`).
//! - `throughput`: a part and a segment served to wrk; peer nginx from disk (`live.rs`).
//! - `offload`: viewers on a node that is not the origin; upstream requests per object.
//! - `ingest`: CPU and memory per RTMP publisher; peer nginx-rtmp with HLS (`ingest.rs`).
//! - `raft`: commits/s and leader failover; peer etcd (`raft.rs`).
//! - `failover`: the origin killed; time until a viewer on a third node plays on.
//!
//! `faults` is not in the table: it runs the seeded fault-injection suite
//! (`sluice_e2e::fault_suite`) for seeds 1..=N (default 10) or one seed, K faults each
//! (default 5), on 3 nodes (or `--nodes`), and prints its invariant table and the
//! viewer's stalls per fault kind.

mod failover;
mod ingest;
mod live;
mod peer;
mod player;
mod raft;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use sluice_e2e::load::{self, LoadSettings};
use sluice_e2e::{fixture, make_test_stream, run_ok, workspace_root};
use sluice_media::flv::{FlvDemuxer, FlvFile, FlvTag};
use sluice_media::{Output, Packager, PackagerSettings};

const SCENARIOS: [&str; 9] = [
    "packager",
    "latency",
    "player",
    "viewers",
    "throughput",
    "offload",
    "ingest",
    "raft",
    "failover",
];

/// The one table every scenario adds its rows to.
#[derive(Default)]
pub(crate) struct Table {
    notes: Vec<String>,
    rows: Vec<[String; 6]>,
}

impl Table {
    /// A line under the table on how a scenario ran.
    pub(crate) fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// One figure. `ratio` is oriented so that above 1 means sluice does better.
    pub(crate) fn row(
        &mut self,
        scenario: &str,
        figure: &str,
        sluice: String,
        peer: String,
        ratio: Option<f64>,
        target: &str,
    ) {
        let ratio = ratio
            .filter(|r| r.is_finite())
            .map_or("-".to_string(), |r| format!("{r:.2}x"));
        self.rows.push([
            scenario.into(),
            figure.into(),
            sluice,
            peer,
            ratio,
            target.into(),
        ]);
    }

    fn print(&self) {
        println!("\n| scenario | figure | sluice | peer | ratio | target |");
        println!("|---|---|---:|---:|---:|---|");
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        println!();
        for n in &self.notes {
            println!("- {n}");
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--url") {
        return viewers_command(&args);
    }
    if args.first().is_some_and(|a| a == "faults") {
        return faults_command(&args);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut scenarios: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    if let Some(bad) = scenarios.iter().find(|s| !SCENARIOS.contains(s)) {
        bail!(
            "unknown scenario {bad:?}\nusage: bench [SCENARIO...] [--quick] | bench viewers \
             --url URL -n N [--seconds S]\nscenarios: {}",
            SCENARIOS.join(", ")
        );
    }
    if scenarios.is_empty() {
        scenarios = SCENARIOS.to_vec();
    }
    let mut table = Table::default();
    let mut failed = Vec::new();
    for s in scenarios {
        eprintln!("bench: {s}{}", if quick { " (quick)" } else { "" });
        let result = match s {
            "packager" => packager(quick, &mut table),
            "latency" => live::latency(quick, &mut table),
            "player" => player::run(quick, &mut table),
            "viewers" => live::viewers(quick, &mut table),
            "throughput" => live::throughput(quick, &mut table),
            "offload" => live::offload(quick, &mut table),
            "ingest" => ingest::run(quick, &mut table),
            "raft" => raft::run(quick, &mut table),
            _ => failover::run(quick, &mut table),
        };
        if let Err(e) = result {
            eprintln!("bench: {s} failed: {e:#}");
            failed.push(s);
        }
    }
    table.print();
    if !failed.is_empty() {
        bail!("scenarios that did not finish: {}", failed.join(", "));
    }
    Ok(())
}

/// `bench faults [--seeds N | --seed S] [--faults K] [--nodes N]`: the seeded fault
/// suite.
fn faults_command(args: &[String]) -> Result<()> {
    let value = |flag: &str| -> Result<Option<u64>> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .with_context(|| format!("{flag} must be a number"))
            })
            .transpose()
    };
    let seeds: Vec<u64> = match (value("--seed")?, value("--seeds")?) {
        (Some(one), _) => vec![one],
        (None, n) => (1..=n.unwrap_or(10)).collect(),
    };
    let faults = value("--faults")?.unwrap_or(5) as usize;
    let nodes = value("--nodes")?.unwrap_or(3) as usize;
    if nodes < 3 {
        bail!("--nodes must be at least 3 (a fault leaves a majority)");
    }
    use_release_sluice()?;
    let root = std::env::temp_dir().join(format!("sluice-bench-faults-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let fixture = root.join("gop60.flv");
    sluice_e2e::make_small_stream(&fixture)?;
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for seed in seeds {
        eprintln!("bench: faults seed {seed}");
        let dir = root.join(format!("seed-{seed}"));
        match sluice_e2e::fault_suite::run_seed(seed, nodes, faults, &fixture, &dir) {
            Ok(r) => {
                if r.violations.is_empty() {
                    let _ = std::fs::remove_dir_all(&dir);
                } else {
                    eprintln!(
                        "bench: seed {seed} broke invariants (logs in {}); replay: {}",
                        dir.display(),
                        r.replay()
                    );
                }
                reports.push(r);
            }
            Err(e) => errors.push(format!("seed {seed} did not run: {e:#}")),
        }
    }
    sluice_e2e::fault_suite::print_table(&reports);
    let broken = reports.iter().filter(|r| !r.violations.is_empty()).count();
    if broken > 0 || !errors.is_empty() {
        bail!("{broken} seeds broke invariants; {}", errors.join("; "));
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// `bench viewers --url URL -n N [--seconds S]`: the load client against any
/// deployment's media playlist.
fn viewers_command(args: &[String]) -> Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let url = value("--url").context("--url needs a media playlist URL")?;
    let n: usize = value("-n")
        .context("-n needs a number of viewers")?
        .parse()
        .context("-n must be a number")?;
    let seconds: u64 = value("--seconds")
        .map(|s| s.parse())
        .transpose()
        .context("--seconds must be a number")?
        .unwrap_or(30);
    let report = load::run(&LoadSettings {
        url,
        viewers: n,
        duration: Duration::from_secs(seconds),
        ramp: Duration::from_millis((n as u64).min(5000)),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    })?;
    println!("| figure | value |\n|---|---:|");
    println!("| viewers | {} |", report.viewers);
    println!("| seconds | {:.1} |", report.seconds);
    println!("| parts received | {} |", report.parts);
    println!("| different parts | {} |", report.distinct_parts);
    println!("| playlist reloads | {} |", report.playlists);
    println!(
        "| Mbit/s received | {:.1} |",
        report.bytes as f64 * 8.0 / report.seconds / 1e6
    );
    println!(
        "| part-delivery delay p50 (ms) | {:.1} |",
        report.delay_p50_ms
    );
    println!(
        "| part-delivery delay p99 (ms) | {:.1} |",
        report.delay_p99_ms
    );
    println!(
        "| part-delivery delay max (ms) | {:.1} |",
        report.delay_max_ms
    );
    println!("| errors | {} |", report.errors);
    for e in &report.error_samples {
        println!("error: {e}");
    }
    Ok(())
}

struct PackagerRow {
    input: String,
    frames_per_s: f64,
    media_mbit_per_s: f64,
    peer_frames_per_s: f64,
}

fn packager(quick: bool, table: &mut Table) -> Result<()> {
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
        rows.push(PackagerRow {
            input: input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            frames_per_s: f64::from(runs) * frames as f64 / secs,
            media_mbit_per_s: f64::from(runs) * media_bytes as f64 * 8.0 / secs / 1e6,
            peer_frames_per_s: frames as f64 * f64::from(if quick { 1 } else { 20 }) / peer_secs,
        });
    }
    table.note(
        "packager: FLV tags in memory -> CMAF parts and segments on one core; peer ffmpeg \
         -c copy into 200 ms fMP4 fragments"
            .into(),
    );
    for r in rows {
        table.row(
            "packager",
            &format!("frames/s packaged, {}", r.input),
            format!("{:.0} ({:.0} Mbit/s)", r.frames_per_s, r.media_mbit_per_s),
            format!("ffmpeg {:.0}", r.peer_frames_per_s),
            Some(r.frames_per_s / r.peer_frames_per_s),
            "-",
        );
    }
    Ok(())
}

/// Nodes started by the e2e helpers use SLUICE_BIN: the release binary here.
pub(crate) fn use_release_sluice() -> Result<()> {
    let bin = raft::sluice_bin()?;
    std::env::set_var("SLUICE_BIN", &bin);
    Ok(())
}

/// p50, p99 and max of `values`.
pub(crate) fn percentiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((values.len().saturating_sub(1)) as f64 * q).round() as usize;
        values.get(i).copied().unwrap_or(0.0)
    };
    (at(0.5), at(0.99), values.last().copied().unwrap_or(0.0))
}

/// A 720p30 H.264 (2 s GOP, constant `kbit` kbit/s) + AAC stream, 10 s, made once and
/// kept under target/; publishers loop it with `-c copy`.
pub(crate) fn bench_stream(kbit: u32) -> Result<PathBuf> {
    let path = workspace_root().join(format!("target/bench-720p-{kbit}k.flv"));
    if path.exists() {
        return Ok(path);
    }
    let rate = format!("{kbit}k");
    let buf = format!("{}k", kbit / 2);
    make_test_stream(
        &path,
        "1280x720",
        10,
        &[
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-b:v",
            &rate,
            "-minrate",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &buf,
            "-g",
            "60",
        ],
    )?;
    Ok(path)
}

pub(crate) fn read_tags(path: &Path) -> Result<Vec<FlvTag>> {
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
