//! `sluice package` against real clients: ffprobe decodes every frame, hls-parser
//! (strict) accepts every playlist, hls.js in headless Chromium plays to the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_e2e::flv_writer::hevc_annexb_to_enhanced_flv;
use sluice_e2e::*;

/// The committed fixtures (media/tests/fixtures/README.md says how they were made).
const FIXTURES: [&str; 7] = [
    "h264_aac_gop2s.flv",
    "h264_aac_gop250.flv",
    "aac_only.flv",
    "h264_only.flv",
    // MPEG-TS as SRT carries it: B-frames, HEVC, and a 33-bit timestamp wrap.
    "h264_aac.ts",
    "hevc_aac.ts",
    "pts_wrap.ts",
];

fn package(input: &Path, out: &Path, extra: &[&str]) -> Result<String> {
    run_ok(
        Command::new(sluice_bin()?)
            .arg("package")
            .arg(input)
            .arg("--out")
            .arg(out)
            .args(extra),
        Duration::from_secs(60),
    )
}

fn playlists(out: &Path) -> Vec<String> {
    ["index.m3u8", "source/index.m3u8"]
        .iter()
        .map(|p| out.join(p).display().to_string())
        .collect()
}

fn media_playlist(out: &Path) -> PathBuf {
    out.join("source/index.m3u8")
}

/// Frame counts equal and the end within one frame (33 ms video, 21 ms AAC).
fn assert_same_media(input: &Probe, output: &Probe, what: &str) {
    assert_eq!(input.frames, output.frames, "{what}: decoded frames differ");
    assert!(
        (input.end_s - output.end_s).abs() <= 0.034,
        "{what}: duration {} s in, {} s out",
        input.end_s,
        output.end_s
    );
}

#[test]
fn packaged_fixtures_decode_frame_for_frame_and_validate_strict() -> Result<()> {
    for name in FIXTURES {
        let tmp = TempDir::new("pkg")?;
        package(&fixture(name), tmp.path(), &[])?;
        let input = ffprobe(&fixture(name).display().to_string())?;
        let output = ffprobe(&media_playlist(tmp.path()).display().to_string())?;
        assert!(
            !input.frames.is_empty(),
            "{name}: ffprobe found no streams in the input"
        );
        assert_same_media(&input, &output, name);
        validate_playlists(&playlists(tmp.path())).with_context(|| name.to_string())?;
    }
    Ok(())
}

/// Reads TARGETDURATION and every EXTINF of a media playlist.
fn durations(playlist: &str) -> (u64, Vec<f64>) {
    let mut td = 0;
    let mut extinf = Vec::new();
    for line in playlist.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            td = v.parse().unwrap_or(0);
        }
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf.push(v.trim_end_matches(',').parse().unwrap_or(f64::MAX));
        }
    }
    (td, extinf)
}

#[test]
fn obs_auto_keyframe_interval_keeps_target_duration() -> Result<()> {
    let tmp = TempDir::new("gop250")?;
    package(&fixture("h264_aac_gop250.flv"), tmp.path(), &[])?;
    let text = std::fs::read_to_string(media_playlist(tmp.path()))?;
    let (td, extinf) = durations(&text);
    assert_eq!(td, 3, "TARGETDURATION for a 2 s segment target");
    assert!(
        extinf.len() >= 4,
        "an 8.3 s GOP is still cut into several segments:\n{text}"
    );
    for d in &extinf {
        assert!(
            d.round() as u64 <= td,
            "EXTINF {d} over TARGETDURATION {td}"
        );
    }
    // The keyframe at 8.35 s starts a segment: its first part is independent, and the
    // part before it (shorter than the others) is the last of its segment.
    let lines: Vec<&str> = text.lines().collect();
    let key = lines
        .iter()
        .position(|l| l.contains("INDEPENDENT=YES"))
        .with_context(|| format!("no independent part listed:\n{text}"))?;
    assert!(
        lines[key - 1].starts_with("#EXT-X-PROGRAM-DATE-TIME:"),
        "{text}"
    );
    assert!(
        lines[key - 2].ends_with(".m4s") && lines[key - 3].starts_with("#EXTINF:"),
        "{text}"
    );
    Ok(())
}

#[test]
fn part_and_segment_targets_are_honoured() -> Result<()> {
    let tmp = TempDir::new("targets")?;
    package(
        &fixture("h264_aac_gop2s.flv"),
        tmp.path(),
        &["--part-target-ms", "500", "--segment-target-ms", "4000"],
    )?;
    let text = std::fs::read_to_string(media_playlist(tmp.path()))?;
    // 500 ms is 15 frames at 30 fps; PART-TARGET adds 2 ms for RTMP's rounded timestamps.
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.502\n"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-TARGETDURATION:6\n"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
        let d: f64 = line["#EXT-X-PART:DURATION=".len()..]
            .split(',')
            .next()
            .unwrap_or("9")
            .parse()?;
        assert!(d <= 0.502, "{line}");
    }
    assert_eq!(durations(&text).1, vec![4.0, 4.0, 2.001], "{text}");
    Ok(())
}

#[test]
fn hevc_in_enhanced_rtmp_tags_is_packaged() -> Result<()> {
    let annexb = std::fs::read(fixture("hevc.h265"))?;
    let (flv, frames) = hevc_annexb_to_enhanced_flv(&annexb, 30)?;
    ensure!(
        frames == 90,
        "the fixture holds 3 s at 30 fps, found {frames} access units"
    );
    let tmp = TempDir::new("hevc")?;
    let input = tmp.path().join("hevc.flv");
    std::fs::write(&input, flv)?;
    let out = tmp.path().join("out");
    package(&input, &out, &[])?;
    let probe = ffprobe(&media_playlist(&out).display().to_string())?;
    assert_eq!(probe.codecs.get("video").map(String::as_str), Some("hevc"));
    assert_eq!(probe.frames.get("video"), Some(&90));
    assert_eq!((probe.width, probe.height), (Some(320), Some(180)));
    let multivariant = std::fs::read_to_string(out.join("index.m3u8"))?;
    assert!(
        multivariant.contains("CODECS=\"hvc1.1.6.L"),
        "{multivariant}"
    );
    validate_playlists(&playlists(&out))?;
    Ok(())
}

#[test]
fn b_frames_keep_their_composition_offsets() -> Result<()> {
    let tmp = TempDir::new("bframes")?;
    let input = tmp.path().join("bframes.flv");
    make_test_stream(
        &input,
        "320x180",
        4,
        &["-preset", "veryfast", "-bf", "2", "-g", "60"],
    )?;
    let out = tmp.path().join("out");
    package(&input, &out, &[])?;
    let input_probe = ffprobe(&input.display().to_string())?;
    let output_probe = ffprobe(&media_playlist(&out).display().to_string())?;
    assert_same_media(&input_probe, &output_probe, "B-frames");
    // Presentation order differs from decode order: offsets were written, not dropped.
    let pts = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v",
                "-show_entries",
                "packet=pts,dts",
                "-of",
                "csv=p=0",
            ])
            .arg(media_playlist(&out)),
        Duration::from_secs(60),
    )?;
    assert!(
        pts.lines().any(|l| {
            let mut f = l.split(',').map(|v| v.parse::<i64>().unwrap_or(0));
            f.next() != f.next()
        }),
        "no packet with pts != dts"
    );
    Ok(())
}

/// Fixtures the headless Chromium here can decode (it has no HEVC decoder), with their
/// length in seconds.
const PLAYABLE: [(&str, f64); 6] = [
    ("h264_aac_gop2s.flv", 10.0),
    ("h264_aac_gop250.flv", 10.0),
    ("aac_only.flv", 10.0),
    ("h264_only.flv", 10.0),
    ("h264_aac.ts", 4.0),
    ("pts_wrap.ts", 3.0),
];

#[test]
fn hls_js_plays_every_packaged_fixture_to_the_end() -> Result<()> {
    for (name, seconds) in PLAYABLE {
        let tmp = TempDir::new("play")?;
        package(&fixture(name), tmp.path(), &[])?;
        let playback = play_folder(tmp.path(), "index.m3u8", Duration::from_secs(60))?;
        assert!(playback.ok, "{name}: {}", playback.report);
        assert!(
            playback.ended || playback.current_time >= playback.duration - 0.5,
            "{name}: stopped at {} of {} s: {}",
            playback.current_time,
            playback.duration,
            playback.report
        );
        assert!(
            playback.duration >= seconds - 0.5,
            "{name}: duration {} s",
            playback.duration
        );
    }
    Ok(())
}

#[test]
fn bad_input_is_refused_with_a_clear_error() -> Result<()> {
    let tmp = TempDir::new("bad")?;
    let not_flv = tmp.path().join("not.flv");
    std::fs::write(&not_flv, b"hello, not a video")?;
    let truncated = tmp.path().join("truncated.flv");
    let whole = std::fs::read(fixture("h264_aac_gop2s.flv"))?;
    std::fs::write(&truncated, &whole[..whole.len() / 2])?;
    for (input, message) in [
        (&not_flv, "neither FLV nor MPEG-TS"),
        (&truncated, "truncated"),
    ] {
        let out = run(
            Command::new(sluice_bin()?)
                .arg("package")
                .arg(input)
                .arg("--out")
                .arg(tmp.path().join("out")),
            Duration::from_secs(60),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", input.display());
        assert!(stderr.contains(message), "{}: {stderr}", input.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    Ok(())
}
