//! Harness for end-to-end tests: the built `sluice` binary, the committed fixtures, and
//! real clients (ffprobe, hls-parser, hls.js in headless Chromium), every wait bounded.
//!
//! The test command (`scripts/test.sh`) builds the binary once and installs the clients;
//! `SLUICE_BIN` points at the binary (without it the harness builds it once itself).

pub mod fault;
pub mod fault_suite;
pub mod flv_writer;
pub mod load;
pub mod node;
pub mod rtmp_client;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("media/tests/fixtures").join(name)
}

/// The `sluice` binary under test.
pub fn sluice_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SLUICE_BIN") {
            return Ok(PathBuf::from(bin));
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "sluice", "--bin", "sluice"])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err("cargo build -p sluice failed".into());
        }
        Ok(workspace_root().join("target/debug/sluice"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Runs a command to completion, killing it past `timeout`; the error shows its stderr.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {desc}"))?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{desc} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

fn drain<R: std::io::Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What ffprobe decodes from a file or playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Decoded frames per stream type ("video", "audio").
    pub frames: BTreeMap<String, u64>,
    pub codecs: BTreeMap<String, String>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    /// Presentation time of the last video (else audio) frame plus its duration, seconds.
    pub end_s: f64,
}

/// Decodes every frame of `input` with ffprobe.
pub fn ffprobe(input: &str) -> Result<Probe> {
    let json = run_ok(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames,width,height",
            "-of",
            "json",
            input,
        ]),
        Duration::from_secs(120),
    )?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let mut probe = Probe {
        frames: BTreeMap::new(),
        codecs: BTreeMap::new(),
        width: None,
        height: None,
        end_s: 0.0,
    };
    for s in v["streams"].as_array().into_iter().flatten() {
        let kind = s["codec_type"].as_str().unwrap_or("?").to_string();
        let frames = s["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *probe.frames.entry(kind.clone()).or_default() += frames;
        probe.codecs.insert(
            kind.clone(),
            s["codec_name"].as_str().unwrap_or("?").to_string(),
        );
        if kind == "video" {
            probe.width = s["width"].as_u64();
            probe.height = s["height"].as_u64();
        }
    }
    probe.end_s = last_frame_end(input)?;
    Ok(probe)
}

fn last_frame_end(input: &str) -> Result<f64> {
    let csv = run_ok(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,pts_time,duration_time",
            "-of",
            "csv=p=0",
            input,
        ]),
        Duration::from_secs(120),
    )?;
    let mut ends: BTreeMap<String, f64> = BTreeMap::new();
    let mut first: BTreeMap<String, f64> = BTreeMap::new();
    for line in csv.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(kind), Some(pts), dur) = (
            f.first(),
            f.get(1).and_then(|p| p.parse::<f64>().ok()),
            f.get(2).and_then(|d| d.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let end = pts + dur.unwrap_or(0.0);
        let e = ends.entry(kind.to_string()).or_insert(end);
        *e = e.max(end);
        let s = first.entry(kind.to_string()).or_insert(pts);
        *s = s.min(pts);
    }
    // Length of the main stream from its first frame, so offsets do not count.
    let kind = if ends.contains_key("video") {
        "video"
    } else {
        "audio"
    };
    Ok(ends.get(kind).copied().unwrap_or(0.0) - first.get(kind).copied().unwrap_or(0.0))
}

/// Makes an FLV test stream with ffmpeg: `testsrc2` at `size`, 30 fps, H.264 with the
/// given encoder options, plus a 48 kHz AAC sine, `seconds` long.
pub fn make_test_stream(path: &Path, size: &str, seconds: u32, x264: &[&str]) -> Result<()> {
    run_ok(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t"])
            .arg(seconds.to_string())
            .args(["-c:v", "libx264", "-threads", "1"])
            .args(x264)
            .args(["-c:a", "aac", "-f", "flv"])
            .arg(path),
        Duration::from_secs(300),
    )
    .map(|_| ())
}

/// A light live-like stream for the cluster tests and benchmarks: 640x360, 2 s GOP,
/// 800 kbit/s x264 veryfast zerolatency, 12 s (publishers loop it).
pub fn make_small_stream(path: &Path) -> Result<()> {
    make_light_stream(path, 12)
}

/// [`make_small_stream`] `seconds` long: for a test whose players must not meet the
/// point where `ffmpeg -stream_loop -c copy` starts it again (its times jump there, and
/// Chromium's own HLS once failed to parse that segment).
pub fn make_light_stream(path: &Path, seconds: u32) -> Result<()> {
    make_test_stream(
        path,
        "640x360",
        seconds,
        &[
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-b:v",
            "800k",
        ],
    )
}

/// `#EXT-X-MEDIA-SEQUENCE` of a media playlist.
pub fn media_sequence(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The URI of the preload-hinted part of a media playlist.
pub fn hinted_part(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .map(|v| v.trim_end_matches('"').to_string())
}

/// The folder with the project's Node clients (`npm ci` done by the test command).
pub fn js_dir() -> Result<PathBuf> {
    let dir = workspace_root().join("e2e/js");
    if !dir.join("node_modules/hls-parser").exists() || !dir.join("node_modules/hls.js").exists() {
        bail!(
            "Node clients are not installed in {}: run scripts/install-test-deps.sh (or npm ci there)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Validates playlists (paths or URLs) with hls-parser in strict mode.
pub fn validate_playlists(playlists: &[String]) -> Result<()> {
    let dir = js_dir()?;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("validate-playlists.mjs")).args(playlists);
    run_ok(&mut cmd, Duration::from_secs(60)).map(|_| ())
}

/// Result of a headless hls.js session.
#[derive(Debug, Clone)]
pub struct Playback {
    pub ok: bool,
    pub current_time: f64,
    pub duration: f64,
    pub ended: bool,
    pub latency: Option<f64>,
    pub report: serde_json::Value,
}

/// Plays a packaged folder with hls.js in headless Chromium until the end.
pub fn play_folder(dir: &Path, playlist: &str, timeout: Duration) -> Result<Playback> {
    let mut args = vec!["--dir".to_string(), dir.display().to_string()];
    args.extend(["--playlist".into(), playlist.into(), "--until-ended".into()]);
    play(&args, timeout)
}

/// Opens a Sluice `/watch` page in headless Chromium (its hls.js answered with the npm
/// copy) and plays until `min_seconds` of media played.
pub fn play_page(url: &str, min_seconds: u32, timeout: Duration) -> Result<Playback> {
    let args = [
        "--page".to_string(),
        url.to_string(),
        "--min-seconds".into(),
        min_seconds.to_string(),
    ];
    play(&args, timeout)
}

/// Plays a live HLS URL with hls.js (low-latency mode, plus `hls_config`, a JSON
/// object) in headless Chromium until `min_seconds` of media played; the report's
/// latency is `hls.latency` then.
pub fn play_url(
    url: &str,
    hls_config: &str,
    min_seconds: u32,
    timeout: Duration,
) -> Result<Playback> {
    play_live(Player::HlsJs, url, hls_config, min_seconds, timeout)
}

/// A player in the matrix: each plays in headless Chromium through `play-hls.mjs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Player {
    /// hls.js in low-latency mode.
    HlsJs,
    /// Video.js 8 (VHS) with its default options.
    VideoJs,
    /// Shaka Player 5 in `lowLatencyMode`.
    Shaka,
    /// Chromium's own HLS (`video.src = url`).
    Native,
}

impl Player {
    pub const ALL: [Player; 4] = [
        Player::HlsJs,
        Player::VideoJs,
        Player::Shaka,
        Player::Native,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Player::HlsJs => "hlsjs",
            Player::VideoJs => "videojs",
            Player::Shaka => "shaka",
            Player::Native => "native",
        }
    }
}

/// Plays `url` with every player at once, `seconds` of media each within `limit`; a
/// line per player, and what went wrong (a stall over `stall_limit_ms(player)`, when it
/// gives one).
/// `PLAY_HLS_PLAYERS=videojs,shaka` plays only those (for finding out why one fails,
/// with `PLAY_HLS_DEBUG`; a run that names none plays all).
pub fn every_player(
    source: &str,
    url: &str,
    seconds: u32,
    limit: Duration,
    stall_limit_ms: impl Fn(Player) -> Option<f64>,
) -> Vec<String> {
    let only = std::env::var("PLAY_HLS_PLAYERS").unwrap_or_default();
    let runs: Vec<_> = Player::ALL
        .iter()
        .filter(|p| only.is_empty() || only.split(',').any(|name| name == p.name()))
        .map(|&player| {
            let url = url.to_string();
            (
                player,
                std::thread::spawn(move || play_with(player, &url, seconds, limit)),
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (player, run) in runs {
        let name = player.name();
        let played: Result<Playback> = run
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the player thread panicked")));
        match played {
            Err(e) => failures.push(format!("{name} from {source}: {e:#}")),
            Ok(p) => {
                let stall = p.report["maxStallMs"].as_f64().unwrap_or(f64::MAX);
                eprintln!(
                    "{name:8} from {source:13}: played {:.1} s, longest stall {stall:.0} ms, \
                     {} behind the edge it saw",
                    p.report["played"].as_f64().unwrap_or(0.0),
                    p.report["edgeDistance"]
                        .as_f64()
                        .map_or("-".to_string(), |d| format!("{d:.2} s")),
                );
                if !p.ok {
                    failures.push(format!("{name} from {source}: {}", p.report));
                } else if stall_limit_ms(player).is_some_and(|l| stall > l) {
                    failures.push(format!(
                        "{name} from {source}: stood still {stall:.0} ms: {}",
                        p.report
                    ));
                }
            }
        }
    }
    failures
}

/// Plays a live HLS URL with `player` (its defaults, low-latency mode where it has
/// one) until `min_seconds` of media played. The report's `edgeDistance` is how far the
/// picture was behind the end of what the player called seekable.
pub fn play_with(
    player: Player,
    url: &str,
    min_seconds: u32,
    timeout: Duration,
) -> Result<Playback> {
    play_live(player, url, "{}", min_seconds, timeout)
}

fn play_live(
    player: Player,
    url: &str,
    hls_config: &str,
    min_seconds: u32,
    timeout: Duration,
) -> Result<Playback> {
    let args = [
        "--url".to_string(),
        url.to_string(),
        "--player".into(),
        player.name().into(),
        "--hls-config".into(),
        hls_config.to_string(),
        "--min-seconds".into(),
        min_seconds.to_string(),
    ];
    play(&args, timeout)
}

fn play(args: &[String], timeout: Duration) -> Result<Playback> {
    let js = js_dir()?;
    let mut cmd = Command::new("node");
    cmd.arg(js.join("play-hls.mjs"))
        .args(args)
        .arg("--timeout-seconds")
        .arg(timeout.as_secs().to_string());
    let out = run(&mut cmd, timeout + Duration::from_secs(30))?;
    // PLAY_HLS_DEBUG=FILE: hls.js's debug log and the harness's progress go to FILE.
    if let Some(file) = std::env::var_os("PLAY_HLS_DEBUG") {
        let _ = std::fs::write(file, &out.stderr);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            anyhow!(
                "play-hls printed no report:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let report: serde_json::Value = serde_json::from_str(line)?;
    Ok(Playback {
        ok: report["ok"].as_bool().unwrap_or(false) && out.status.success(),
        current_time: report["currentTime"].as_f64().unwrap_or(0.0),
        duration: report["duration"].as_f64().unwrap_or(0.0),
        ended: report["ended"].as_bool().unwrap_or(false),
        latency: report["pageLatency"]
            .as_f64()
            .or_else(|| report["latency"].as_f64()),
        report,
    })
}

/// A fresh temporary folder, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sluice-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// A directory for fixtures made once per test process and kept in a static, whose
    /// drop never runs: the ones earlier processes left under the same tag are removed
    /// first, when those processes have exited.
    pub fn for_process(tag: &str) -> Result<Self> {
        let prefix = format!("sluice-e2e-{tag}-");
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                    continue;
                };
                let pid = rest.split('-').next().unwrap_or_default();
                let running = pid.parse::<u32>().is_ok_and(|pid| {
                    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
                });
                if !running {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Self::new(tag)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    /// Removed, unless `SLUICE_E2E_KEEP` is set (to read the nodes' logs after a run).
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
