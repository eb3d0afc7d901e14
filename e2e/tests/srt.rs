//! SRT ingest end to end: ffmpeg (libsrt) and srt-live-transmit publish MPEG-TS to
//! `sluice serve`'s SRT listener; hls-parser, ffprobe and hls.js consume what it serves.
//! Keys and passphrases are checked in the handshake; garbage on the port changes
//! nothing for the live channel.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{free_udp_port, three_nodes, wait_for, Http, Publisher, Respawning, Server};
use sluice_e2e::{
    ffprobe, make_test_stream, media_sequence, play_page, validate_playlists, TempDir,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A player page whose hls.js the test browser answers from the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";
const MEDIA: &str = "/hls/main/source/index.m3u8";

/// x264 veryfast zerolatency, 2 s keyframes, AAC 48 kHz: pushed with `-c copy`.
fn fixture() -> &'static PathBuf {
    static F: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &F.get_or_init(|| {
        let dir = TempDir::for_process("srt-fixtures").expect("temp dir");
        let path = dir.path().join("gop60.flv");
        let x264 = [
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-b:v",
            "800k",
        ];
        make_test_stream(&path, "640x360", 12, &x264).expect("fixture");
        (dir, path)
    })
    .1
}

fn start(tmp: &TempDir) -> Result<(Server, String)> {
    let server = Server::start(&tmp.path().join("node"), &["--hlsjs-url", HLSJS_URL])?;
    let key = server.main_key()?;
    Ok((server, key))
}

fn access_id(key: &str) -> String {
    format!("#!::r={key},m=publish")
}

/// Waits until the media playlist lists `segments` whole segments; its text.
fn live_playlist(server: &Server, segments: usize) -> Result<String> {
    let http = Http::new(None)?;
    let url = server.url(MEDIA);
    wait_for(Duration::from_secs(40), "a live playlist", || {
        let r = http.get(&url, &[]).ok()?;
        let text = r.text();
        (r.status == 200 && text.matches("#EXTINF").count() >= segments).then_some(text)
    })
    .with_context(|| server.log())
}

/// The media sequence number of the last whole segment listed.
fn last_msn(text: &str) -> u64 {
    media_sequence(text).unwrap_or(0) + text.matches("#EXTINF").count() as u64
}

/// The node's log gains `needle` within 15 s.
fn logged(server: &Server, needle: &str) -> Result<()> {
    wait_for(Duration::from_secs(15), needle, || {
        server.log().contains(needle).then_some(())
    })
    .with_context(|| server.log())
}

#[test]
fn ffmpeg_and_srt_live_transmit_publish_and_hls_js_plays() -> Result<()> {
    let _serial = serial();
    let tmp = TempDir::new("srt-play")?;
    let (server, key) = start(&tmp)?;

    // ffmpeg, with the access-control stream id.
    let mut ffmpeg = Publisher::ffmpeg_ts(
        fixture(),
        &server.srt_url(&access_id(&key), ""),
        &tmp.path().join("ff.log"),
    )?;
    let text = live_playlist(&server, 2)?;
    ensure!(text.contains("#EXT-X-PART:"), "no LL-HLS parts:\n{text}");
    let media = server.url(MEDIA);
    validate_playlists(&[
        server.url("/hls/main/index.m3u8"),
        media.clone(),
        format!("{media}?_HLS_skip=YES"),
    ])?;
    let played = play_page(&server.url("/watch/main"), 8, Duration::from_secs(90))?;
    ensure!(
        played.ok,
        "hls.js did not play the SRT stream: {}",
        played.report
    );
    let msn_before = media_sequence(&text).unwrap_or(0);

    // The same channel from srt-live-transmit, with the bare key as stream id: it
    // reconnects within the grace, so the playlist continues with a discontinuity.
    ffmpeg.kill();
    let udp = free_udp_port()?;
    let mut relay = Publisher::spawn(
        std::process::Command::new("srt-live-transmit")
            .arg(format!("udp://:{udp}"))
            .arg(server.srt_url(&key, "")),
        &tmp.path().join("slt.log"),
    )?;
    let mut source = Publisher::ffmpeg_ts(
        fixture(),
        &format!("udp://127.0.0.1:{udp}?pkt_size=1316"),
        &tmp.path().join("ff-udp.log"),
    )?;
    let http = Http::new(None)?;
    let resumed = wait_for(Duration::from_secs(40), "the playlist to continue", || {
        let text = http.get(&media, &[]).ok()?.text();
        let after = text.split("#EXT-X-DISCONTINUITY\n").nth(1)?;
        (after.matches("#EXTINF").count() >= 1).then_some(text)
    })
    .with_context(|| server.log())?;
    ensure!(
        media_sequence(&resumed).unwrap_or(0) >= msn_before,
        "media sequence went back"
    );
    ensure!(
        server.log().matches("srt publish accepted").count() >= 2,
        "two SRT publishers were not both accepted:\n{}",
        server.log()
    );
    validate_playlists(std::slice::from_ref(&media))?;

    // Ended, the whole playlist (both publishers) decodes: video and audio.
    relay.kill();
    source.kill();
    let token = server.admin_token()?;
    let r = http.post(&server.url("/api/v1/channels/main/stop"), &token)?;
    ensure!(r.status < 300, "stop: {} {}", r.status, r.text());
    wait_for(Duration::from_secs(15), "EXT-X-ENDLIST", || {
        http.get(&media, &[])
            .ok()?
            .text()
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    })?;
    let probe = ffprobe(&media)?;
    ensure!(
        probe.frames.get("video").is_some_and(|n| *n > 100)
            && probe.frames.get("audio").is_some_and(|n| *n > 100),
        "ffprobe decoded {:?} from what SRT ingest packaged",
        probe.frames
    );
    Ok(())
}

#[test]
fn keys_and_passphrases_are_checked_in_the_handshake() -> Result<()> {
    let _serial = serial();
    let tmp = TempDir::new("srt-auth")?;
    let (server, key) = start(&tmp)?;
    let http = Http::new(None)?;
    let auth = format!("Bearer {}", server.admin_token()?);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let channel = server.url("/api/v1/channels/main");

    // A passphrase SRT would refuse is refused by the API, naming the field.
    let r = http.patch(&channel, &headers, br#"{"srt_passphrase":"short"}"#)?;
    ensure!(
        (400..500).contains(&r.status) && r.text().contains("srt_passphrase"),
        "{} {}",
        r.status,
        r.text()
    );
    let pass = "correct horse battery";
    let r = http.patch(
        &channel,
        &headers,
        format!(r#"{{"srt_passphrase":"{pass}"}}"#).as_bytes(),
    )?;
    ensure!(r.status == 200, "{} {}", r.status, r.text());
    let shown = http.get(&channel, &headers)?.text();
    ensure!(
        shown.contains(r#""srt_passphrase_set":true"#) && !shown.contains(pass),
        "the API shows the passphrase or not that one is set: {shown}"
    );

    // Each refused attempt adds one `needle` line to the node's log.
    let refused = |name: &str, url: String, needle: &str| -> Result<()> {
        let before = server.log().matches(needle).count();
        let mut p = Publisher::ffmpeg_ts(fixture(), &url, &tmp.path().join(format!("{name}.log")))?;
        let code = p.wait_exit(Duration::from_secs(20));
        ensure!(
            code.is_some_and(|c| c != 0),
            "{name}: ffmpeg was not refused ({code:?}): {}",
            p.output()
        );
        wait_for(Duration::from_secs(15), needle, || {
            (server.log().matches(needle).count() > before).then_some(())
        })
        .with_context(|| format!("{name}: {}", server.log()))
    };
    refused(
        "wrong-key",
        server.srt_url(&access_id("sk-not-a-key"), &format!("&passphrase={pass}")),
        "unknown or revoked stream key",
    )?;
    refused(
        "no-passphrase",
        server.srt_url(&access_id(&key), ""),
        "key exchange failed",
    )?;
    refused(
        "wrong-passphrase",
        server.srt_url(&access_id(&key), "&passphrase=not the right one"),
        "key exchange failed",
    )?;
    // Refused publishers touched nothing: the channel never went live.
    let state: serde_json::Value = serde_json::from_slice(&http.get(&channel, &headers)?.body)?;
    ensure!(
        state["generation"].is_null(),
        "a refused publisher started a generation: {state}"
    );

    // The right passphrase (AES-128 and AES-256) is let in.
    let _good = Publisher::ffmpeg_ts(
        fixture(),
        &server.srt_url(&access_id(&key), &format!("&passphrase={pass}&pbkeylen=32")),
        &tmp.path().join("good.log"),
    )?;
    live_playlist(&server, 1)?;
    logged(&server, "encrypted=true")?;
    drop(_good);

    // The encrypting publisher is gone (killed: the node sees its connection time out).
    wait_for(
        Duration::from_secs(30),
        "the channel no longer live",
        || {
            let r = http
                .get(&server.url("/api/v1/channels/main/status"), &headers)
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            (v["state"] != "live").then_some(())
        },
    )?;

    // Without a passphrase on the channel, an encrypting caller is refused, whether it
    // names its key length or leaves it to the default (seen only as key material in
    // its handshake, which the SRT front notes), and a plain one gets in.
    let r = http.patch(&channel, &headers, br#"{"srt_passphrase":""}"#)?;
    ensure!(
        r.status == 200 && r.text().contains(r#""srt_passphrase_set":false"#),
        "{}",
        r.text()
    );
    refused(
        "encrypted-to-plain-named-length",
        server.srt_url(&access_id(&key), &format!("&passphrase={pass}&pbkeylen=16")),
        "has no passphrase; the stream is encrypted",
    )?;
    refused(
        "encrypted-to-plain-default-length",
        server.srt_url(&access_id(&key), &format!("&passphrase={pass}")),
        "has no passphrase; the stream is encrypted",
    )?;
    ensure!(
        !server.log().contains("listener stopped"),
        "an encrypting caller stopped the SRT listener:\n{}",
        server.log()
    );
    let _plain = Publisher::ffmpeg_ts(
        fixture(),
        &server.srt_url(&key, ""),
        &tmp.path().join("plain.log"),
    )?;
    logged(&server, "encrypted=false")?;
    Ok(())
}

#[test]
fn garbage_on_the_srt_port_leaves_the_live_channel_playing() -> Result<()> {
    let _serial = serial();
    let tmp = TempDir::new("srt-flood")?;
    let (server, key) = start(&tmp)?;
    let _publisher = Publisher::ffmpeg_ts(
        fixture(),
        &server.srt_url(&access_id(&key), ""),
        &tmp.path().join("ff.log"),
    )?;
    let before = last_msn(&live_playlist(&server, 1)?);
    let watch = server.url("/watch/main");
    let viewer = std::thread::spawn(move || play_page(&watch, 12, Duration::from_secs(90)));

    // 4 s of datagrams: random bytes, ones shaped like SRT control packets
    // (handshakes, shutdowns) with nonsense in them, and the handshakes that panic the
    // SRT library's parser (a review found the first: 72 bytes, a conclusion with a
    // congestion-control extension of one word).
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let target = ("127.0.0.1", server.srt);
    let started = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        let mut datagram = vec![0u8; 16 + (seed % 1400) as usize];
        for b in datagram.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        match sent % 5 {
            0 => datagram[..4].copy_from_slice(&[0x80, 0x00, 0x00, 0x00]), // handshake
            1 => datagram[..4].copy_from_slice(&[0x80, 0x05, 0x00, 0x00]), // shutdown
            2 => datagram = conclusion(&[(6, b"evil")]),
            3 => {
                datagram = conclusion(&[
                    (1, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0]),
                    (5, b"abcd"),
                ])
            }
            _ => {}
        }
        socket.send_to(&datagram, target)?;
        sent += 1;
        if sent.is_multiple_of(200) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let played = viewer
        .join()
        .map_err(|_| anyhow::anyhow!("viewer thread"))??;
    ensure!(
        played.ok,
        "playback broke during the flood: {}",
        played.report
    );
    let after = last_msn(&live_playlist(&server, 1)?);
    ensure!(
        after > before,
        "the playlist stopped at {after} (was {before}) after {sent} datagrams"
    );
    let health = Http::new(None)?.get(&server.url("/healthz"), &[])?;
    ensure!(health.status == 200, "node unhealthy after the flood");
    let log = server.log();
    ensure!(
        !log.contains("listener stopped") && !log.contains("panicked"),
        "the flood reached the SRT library:\n{log}"
    );
    ensure!(
        log.contains("dropped a datagram the SRT library must not see"),
        "the front did not say it dropped the flood:\n{log}"
    );
    eprintln!(
        "{sent} garbage datagrams; playlist {before} -> {after}, max stall {} ms",
        played.report["maxStallMs"]
    );
    Ok(())
}

/// An HSv5 conclusion handshake (header included) with the given extensions.
fn conclusion(extensions: &[(u16, &[u8])]) -> Vec<u8> {
    let mut d = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    for word in [5i32, 0x0007, 1234, 1500, 8192, -1, 0x1122_3344, 0x55] {
        d.extend(word.to_be_bytes());
    }
    d.extend([127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for (kind, content) in extensions {
        d.extend(kind.to_be_bytes());
        d.extend(((content.len() / 4) as u16).to_be_bytes());
        d.extend(*content);
    }
    d
}

#[test]
fn packets_lost_before_srt_are_counted_and_the_stream_plays_on() -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let _serial = serial();
    let tmp = TempDir::new("srt-loss")?;
    let (server, key) = start(&tmp)?;
    // ffmpeg -> UDP -> a relay here that loses one datagram in 40 -> srt-live-transmit
    // -> SRT -> the node: the loss happens before SRT, as on a lossy link into the
    // contribution encoder, so the MPEG-TS reaching the node has holes.
    let relay = std::net::UdpSocket::bind("127.0.0.1:0")?;
    relay.set_read_timeout(Some(Duration::from_millis(200)))?;
    let relay_port = relay.local_addr()?.port();
    let out = free_udp_port()?;
    let stop = Arc::new(AtomicBool::new(false));
    let relaying = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(len) = relay.recv(&mut buf) {
                    n += 1;
                    if !n.is_multiple_of(40) {
                        let _ = relay.send_to(&buf[..len], ("127.0.0.1", out));
                    }
                }
            }
            n
        })
    };
    let _slt = Publisher::spawn(
        std::process::Command::new("srt-live-transmit")
            .arg(format!("udp://:{out}"))
            .arg(server.srt_url(&key, "")),
        &tmp.path().join("slt.log"),
    )?;
    let _source = Publisher::ffmpeg_ts(
        fixture(),
        &format!("udp://127.0.0.1:{relay_port}?pkt_size=1316"),
        &tmp.path().join("ff.log"),
    )?;
    live_playlist(&server, 2)?;
    let http = Http::new(None)?;
    let errors = wait_for(Duration::from_secs(20), "counted continuity errors", || {
        http.metric(
            &server.base(),
            "sluice_ingest_ts_continuity_errors_total{channel=\"main\"} ",
        )
        .ok()
        .filter(|n| *n > 0)
    })?;
    let played = play_page(&server.url("/watch/main"), 6, Duration::from_secs(60))?;
    stop.store(true, Ordering::Relaxed);
    let datagrams = relaying
        .join()
        .map_err(|_| anyhow::anyhow!("relay thread"))?;
    ensure!(
        played.ok,
        "playback over a lossy input broke: {}",
        played.report
    );
    eprintln!("{datagrams} datagrams relayed, 1 in 40 lost: {errors} continuity errors counted");
    Ok(())
}

/// ffmpeg as the venue's SRT listener (encrypted), started again after each caller.
fn listener_source(port: u16, passphrase: &str, log: &std::path::Path) -> Result<Respawning> {
    let file = fixture().clone();
    let url = format!("srt://127.0.0.1:{port}?mode=listener&passphrase={passphrase}&pbkeylen=16");
    Respawning::start(
        move || {
            let mut cmd = std::process::Command::new("ffmpeg");
            cmd.args(["-hide_banner", "-loglevel", "warning", "-re"])
                .args(["-stream_loop", "-1", "-i"])
                .arg(&file)
                .args(["-c", "copy", "-f", "mpegts", &url]);
            cmd
        },
        log,
    )
}

/// The channel as `GET /api/v1/channels` lists it.
fn listed(server: &Server, name: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&server.cli(&["channel", "list", "--json"]).ok()?).ok()?;
    v["channels"]
        .as_array()?
        .iter()
        .find(|c| c["slug"] == name)
        .cloned()
}

#[test]
fn a_pulled_channel_moves_to_another_node_when_its_node_dies() -> Result<()> {
    let _serial = serial();
    let tmp = TempDir::new("srt-pull")?;
    let mut nodes = three_nodes(
        tmp.path(),
        &["--hlsjs-url", HLSJS_URL, "--lease-ttl-ms", "3000"],
    )?;
    let ids: Vec<u64> = nodes.iter().map(|n| n.node_id()).collect::<Result<_>>()?;
    let port = free_udp_port()?;
    let pass = "venue-passphrase-1";
    let source = listener_source(port, pass, &tmp.path().join("source.log"))?;

    // A bad source URL is refused naming the field; a good one makes a channel
    // without a stream key.
    let bad = nodes[0].cli(&["channel", "create", "bad", "--pull", "srt://127.0.0.1"]);
    ensure!(
        bad.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("ingest.url")),
        "a source URL without a port: {bad:?}"
    );
    let url = format!("srt://127.0.0.1:{port}?passphrase={pass}&latency=200");
    let created: serde_json::Value = serde_json::from_str(
        &nodes[0].cli(&["channel", "create", "venue", "--pull", &url, "--json"])?,
    )?;
    ensure!(created["stream_key"].is_null(), "{created}");

    // It plays from every node.
    let media = "/hls/venue/source/index.m3u8";
    let http = Http::new(None)?;
    for node in &nodes {
        wait_for(Duration::from_secs(40), "the pulled channel live", || {
            let r = http.get(&node.url(media), &[]).ok()?;
            (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
        })
        .with_context(|| format!("{}\n{}", node.log(), source.output()))?;
    }
    let venue = listed(&nodes[0], "venue").context("venue listed")?;
    ensure!(
        !venue.to_string().contains(pass),
        "the API shows the source's passphrase: {venue}"
    );
    let puller = venue["puller"].as_u64().context("no puller")?;
    let p = ids.iter().position(|i| *i == puller).context("puller")?;
    // A second pulled channel pinned to the same node, its source not up: when the node
    // dies it is flagged, not moved.
    let dead_source = format!("srt://127.0.0.1:{}", free_udp_port()?);
    let pin = puller.to_string();
    nodes[0].cli(&[
        "channel",
        "create",
        "pinned",
        "--pull",
        &dead_source,
        "--pin",
        &pin,
    ])?;
    wait_for(Duration::from_secs(10), "the pinned channel placed", || {
        (listed(&nodes[0], "pinned")?["puller"].as_u64()? == puller).then_some(())
    })?;

    // The viewer is on the node the pull will not move to (placement takes the lowest
    // id among equally loaded nodes): a third node.
    let v = (0..3)
        .filter(|i| *i != p)
        .max_by_key(|i| ids[*i])
        .context("viewer node")?;
    let others: Vec<usize> = (0..3).filter(|i| *i != p).collect();
    let page = nodes[v].url("/watch/venue");
    let player = std::thread::spawn(move || play_page(&page, 26, Duration::from_secs(120)));
    std::thread::sleep(Duration::from_secs(8));
    let before = media_sequence(&http.get(&nodes[v].url(media), &[])?.text()).unwrap_or(0);
    let killed = Instant::now();
    nodes[p].kill();

    let moved = wait_for(Duration::from_secs(20), "the pull re-placed", || {
        let c = listed(&nodes[others[0]], "venue")?;
        (c["puller"].as_u64()? != puller).then_some(c)
    })?;
    let replaced_after = killed.elapsed();
    ensure!(
        moved["restarts"] == 1 && moved["last_restart_ms"].is_i64(),
        "the move is not counted: {moved}"
    );
    let resumed = wait_for(
        Duration::from_secs(40),
        "the viewer's node to resume",
        || {
            let text = http.get(&nodes[v].url(media), &[]).ok()?.text();
            let after = text.split("#EXT-X-DISCONTINUITY\n").nth(1)?;
            (after.matches("#EXTINF").count() >= 1).then_some(text)
        },
    )
    .with_context(|| {
        let logs: Vec<String> = others.iter().map(|i| nodes[*i].log()).collect();
        format!("{}\n{}", logs.join("\n"), source.output())
    })?;
    let resumed_after = killed.elapsed();
    ensure!(
        media_sequence(&resumed).unwrap_or(0) >= before,
        "the media sequence went back:\n{resumed}"
    );
    validate_playlists(&[
        nodes[v].url(media),
        format!("{}?_HLS_skip=YES", nodes[v].url(media)),
    ])?;
    let played = player
        .join()
        .map_err(|_| anyhow::anyhow!("player thread panicked"))??;
    eprintln!(
        "pulling node killed: re-placed on node {} after {:.1} s (lease 3 s), the viewer's \
         playlist resumed after {:.1} s; hls.js on the third node played {:.1} s, longest \
         stall {} ms; the source was started {} times",
        moved["puller"],
        replaced_after.as_secs_f64(),
        resumed_after.as_secs_f64(),
        played.report["played"].as_f64().unwrap_or(0.0),
        played.report["maxStallMs"],
        source.starts()
    );
    ensure!(
        replaced_after < Duration::from_secs(3 + 5),
        "re-placed only after {replaced_after:?}"
    );
    ensure!(
        played.ok,
        "hls.js on the third node did not resume without a reload: {}",
        played.report
    );
    // The pinned channel stayed on the dead node, flagged.
    let pinned = listed(&nodes[others[0]], "pinned").context("pinned listed")?;
    ensure!(
        pinned["puller"].as_u64() == Some(puller)
            && pinned["restarts"] == 0
            && pinned["alert"]
                .as_str()
                .is_some_and(|a| a.contains("pinned")),
        "the pinned channel: {pinned}"
    );
    Ok(())
}
