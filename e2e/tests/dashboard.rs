//! The dashboard in headless Chromium against a real 3-node cluster with a live ffmpeg
//! stream: log in, see the nodes and the channel on its origin, the preview plays, the
//! stream is stopped from the page. Screenshots go to `target/e2e-artifacts/dashboard`.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{three_nodes, wait_for, Http, Publisher};
use sluice_e2e::{js_dir, make_small_stream, run, workspace_root, TempDir};

/// Never fetched: the browser is answered with the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";

#[test]
fn an_operator_sees_the_cluster_watches_a_channel_and_stops_it_from_the_dashboard() -> Result<()> {
    let tmp = TempDir::new("dashboard")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let nodes = three_nodes(tmp.path(), &["--hlsjs-url", HLSJS_URL])?;
    let key = nodes[0].main_key()?;
    // Published to the second node: the dashboard (served by the first) shows another
    // node as the origin.
    let mut publisher = Publisher::ffmpeg_loop(
        &fixture,
        &nodes[1].rtmp_url(&key),
        &tmp.path().join("ffmpeg.log"),
    )?;
    let http = Http::new(None)?;
    let token = nodes[0].admin_token()?;
    let auth = format!("Bearer {token}");
    let origin_id = nodes[1].node_id()?;
    let origin_name = wait_for(Duration::from_secs(40), "main live on node 2", || {
        let r = http
            .get(
                &nodes[0].url("/api/v1/channels/main/status"),
                &[("authorization", &auth)],
            )
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        (v["state"] == "live" && v["generation"]["origin"] == origin_id)
            .then(|| v["origin_name"].as_str().map(String::from))
            .flatten()
    })
    .with_context(|| nodes[1].log())?;

    let shots = workspace_root().join("target/e2e-artifacts/dashboard");
    let js = js_dir()?;
    let mut cmd = Command::new("node");
    cmd.arg(js.join("dashboard.mjs"))
        .args(["--base", &nodes[0].base()])
        .args(["--token", &token])
        .args(["--channel", "main"])
        .args(["--origin", &origin_name])
        .args(["--nodes", "3"])
        .arg("--shots")
        .arg(&shots)
        .args(["--timeout-seconds", "150"]);
    let out = run(&mut cmd, Duration::from_secs(180))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| {
            format!(
                "the dashboard driver printed no report:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    ensure!(
        report["ok"] == true,
        "dashboard: {report:#}\n{}\nnode 1 log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        nodes[0].log()
    );
    let leader = report["steps"]["cluster overview"]["value"]["leader"]
        .as_str()
        .unwrap_or_default();
    ensure!(!leader.is_empty() && leader != "none", "no leader shown");
    // OBS is told the answering node's RTMP server with the application.
    let server = &report["steps"]["channel page"]["value"]["server"];
    ensure!(
        *server == format!("rtmp://127.0.0.1:{}/live", nodes[0].rtmp),
        "OBS server shown: {server}"
    );
    // A 2 s GOP: its interval shown, no warning.
    let keyframes = report["steps"]["channel page"]["value"]["keyframes"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        keyframes.starts_with("every ") && !keyframes.contains("join"),
        "keyframes shown: {keyframes}"
    );
    let played = &report["steps"]["preview plays"]["value"];
    ensure!(
        played["second"].as_f64() > played["first"].as_f64(),
        "preview: {played}"
    );
    for shot in ["login.png", "cluster.png", "channel.png", "stopped.png"] {
        let size = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        ensure!(size > 1000, "screenshot {shot} missing or empty");
    }

    // Stopping from the page ended the generation everywhere and cut the publisher.
    let r = http.get(
        &nodes[2].url("/api/v1/channels/main/status"),
        &[("authorization", &auth)],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    ensure!(v["state"] == "idle", "after stop, node 3 says {v}");
    ensure!(
        publisher.wait_exit(Duration::from_secs(20)).is_some(),
        "the publisher was not disconnected"
    );
    Ok(())
}
