//! Private channels: playback tokens checked at every node and at an external edge,
//! never cached, forwarded or logged; key rotation; no secret in any log.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_e2e::node::{
    three_nodes_with_env, wait_for, EdgeProcess, Http, Publisher, Server, TestCa, TlsFiles,
};
use sluice_e2e::{make_small_stream, play_page, validate_playlists, TempDir};

/// A player page whose hls.js the test browser answers from the npm copy.
const HLSJS_URL: &str = "http://hlsjs.invalid/hls.min.js";
const ACCESS_LOG: (&str, &str) = (
    "RUST_LOG",
    "info,sluice::access=debug,openraft=warn,srt_protocol=warn,srt_tokio=warn",
);
const PULLED_OBJECTS: &str = "sluice_pulled_requests_total{kind=\"object\"}";

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

/// A token from the CLI: (token, key id it was signed with is not shown; the hls path).
fn token(node: &Server, channel: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec!["playback", "token", channel, "--json"];
    args.extend(extra);
    let v = json(&node.cli(&args)?)?;
    let t = v["token"].as_str().context("token")?.to_string();
    ensure!(
        v["hls_path"] == format!("/t/{t}/hls/{channel}/index.m3u8"),
        "hls_path {}",
        v["hls_path"]
    );
    Ok(t)
}

fn media(token: &str) -> String {
    format!("/t/{token}/hls/cam/source/index.m3u8")
}

/// The last segment's URI in a media playlist (relative to it).
fn last_segment(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .map(String::from)
}

fn expect_forbidden(http: &Http, url: &str, headers: &[(&str, &str)], why: &str) -> Result<()> {
    let r = http.get(url, headers)?;
    ensure!(
        r.status == 403,
        "{why}: {url} answered {} (want 403): {}",
        r.status,
        r.text()
    );
    ensure!(
        r.header("cache-control") == "no-store",
        "{why}: 403 with cache-control {:?}",
        r.header("cache-control")
    );
    Ok(())
}

#[test]
fn private_channels_play_with_a_token_at_every_node_and_edge() -> Result<()> {
    let tmp = TempDir::new("security")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let nodes = three_nodes_with_env(tmp.path(), &["--hlsjs-url", HLSJS_URL], &[ACCESS_LOG])?;
    let secret_file = nodes[0].dir.join("cluster.secret");
    let secret_path = secret_file.to_str().context("path")?;
    let mut edge = EdgeProcess::start(
        &tmp.path().join("edge.log"),
        &[nodes[1].base()],
        &[
            "--cluster-secret-file",
            secret_path,
            "--hlsjs-url",
            HLSJS_URL,
        ],
    )?;
    let created = json(&nodes[0].cli(&["channel", "create", "cam", "--private", "--json"])?)?;
    let key = created["stream_key"]
        .as_str()
        .context("stream key")?
        .to_string();
    nodes[0].cli(&["channel", "create", "other", "--private"])?;
    let _publisher = Publisher::ffmpeg_loop(
        &fixture,
        &nodes[0].rtmp_url(&key),
        &tmp.path().join("ff.log"),
    )?;

    let valid = token(&nodes[0], "cam", &[])?;
    let expiring = token(&nodes[0], "cam", &["--ttl", "1"])?;
    let other = token(&nodes[0], "other", &[])?;
    let bound = token(&nodes[0], "cam", &["--origin", "https://site.example"])?;
    // The last hex digit of the MAC changed.
    let forged = {
        let mut t = valid.clone();
        let last = t.pop().context("empty token")?;
        t.push(if last == '0' { '1' } else { '0' });
        t
    };

    let http = Http::new(None)?;
    let bases = [nodes[0].base(), nodes[2].base(), edge.base()];
    for base in &bases {
        wait_for(
            Duration::from_secs(40),
            "the private stream with a token",
            || {
                let r = http.get(&format!("{base}{}", media(&valid)), &[]).ok()?;
                (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
            },
        )
        .with_context(|| format!("{base}\n{}\n{}", nodes[0].log(), edge.log()))?;
    }

    // Refused everywhere: no token, forged, another channel's, expired (its second is
    // over by now), and an origin-bound one from another page.
    for base in &bases {
        for (path, why) in [
            ("/hls/cam/source/index.m3u8".to_string(), "no token"),
            ("/hls/cam/index.m3u8".to_string(), "no token (multivariant)"),
            (media(&forged), "forged"),
            (media(&other), "another channel's token"),
            (media(&expiring), "expired"),
            (media(&bound), "origin-bound token without an origin"),
            // Spelled another way: the gate and the router read one canonical path.
            (
                "/hls/%63am/index.m3u8".to_string(),
                "encoded name (multivariant)",
            ),
            ("/hls/c%61m/source/index.m3u8".to_string(), "encoded name"),
            (
                "/vod/%63am/1/index.m3u8".to_string(),
                "encoded name (recording)",
            ),
            (
                "//hls/cam//source/index.m3u8".to_string(),
                "doubled slashes",
            ),
        ] {
            expect_forbidden(&http, &format!("{base}{path}"), &[], why)?;
        }
        expect_forbidden(
            &http,
            &format!("{base}{}", media(&bound)),
            &[("origin", "https://evil.example")],
            "origin-bound token from another origin",
        )?;
        let from_site = http.get(
            &format!("{base}{}", media(&bound)),
            &[("origin", "https://site.example")],
        )?;
        ensure!(
            from_site.status == 200,
            "{base}: origin-bound token from its origin: {}",
            from_site.status
        );
    }
    for (base, reason) in [(&bases[1], "expired"), (&bases[2], "bad_signature")] {
        let line = format!("sluice_playback_denied_total{{reason=\"{reason}\"}}");
        ensure!(http.metric(base, &line)? >= 1, "{base}: no {line}");
    }

    // Strict playlists through a non-origin node and the edge, objects too.
    let mut playlists = Vec::new();
    for base in &bases[1..] {
        playlists.push(format!("{base}{}", media(&valid)));
        playlists.push(format!("{base}/t/{valid}/hls/cam/index.m3u8"));
    }
    validate_playlists(&playlists)?;

    // Many viewers with their own tokens: one fetch from the origin serves them all.
    let viewers: Vec<String> = (0..5)
        .map(|_| token(&nodes[0], "cam", &[]))
        .collect::<Result<_>>()?;
    let playlist = http
        .get(&format!("{}{}", bases[1], media(&viewers[0])), &[])?
        .text();
    let segment = last_segment(&playlist).context("no segment listed")?;
    let pulled_before = http.metric(&bases[0], PULLED_OBJECTS)?;
    let mut first = None;
    for t in &viewers {
        let r = http.get(&format!("{}/t/{t}/hls/cam/source/{segment}", bases[1]), &[])?;
        ensure!(r.status == 200, "segment with a token: {}", r.status);
        ensure!(
            r.header("cache-control").contains("immutable"),
            "segment cache-control {:?}",
            r.header("cache-control")
        );
        match &first {
            None => first = Some(r.body),
            Some(b) => ensure!(*b == r.body, "viewers got different bytes"),
        }
    }
    let pulled = http.metric(&bases[0], PULLED_OBJECTS)? - pulled_before;
    ensure!(
        pulled == 1,
        "{pulled} origin fetches for one segment asked for with 5 tokens"
    );
    // The same object without a token is still refused at the node that cached it.
    expect_forbidden(
        &http,
        &format!("{}/hls/cam/source/{segment}", bases[1]),
        &[],
        "cached object without a token",
    )?;

    // hls.js plays the player page through the external edge.
    let played = play_page(
        &edge.url(&format!("/watch/cam?token={valid}")),
        6,
        Duration::from_secs(60),
    )?;
    ensure!(played.ok, "hls.js through the edge: {}", played.report);

    // Rotation: the old key's tokens work until it is retired, the new key's after.
    let keys = json(&nodes[0].cli(&["playback", "keys", "--json"])?)?;
    let old_key = keys["keys"][0]["key_id"]
        .as_str()
        .context("key id")?
        .to_string();
    nodes[0].cli(&["playback", "rotate"])?;
    let fresh = token(&nodes[0], "cam", &[])?;
    ensure!(
        !fresh.contains(&format!(".{old_key}.")),
        "a rotated key still signs: {fresh}"
    );
    for t in [&valid, &fresh] {
        let r = http.get(&format!("{}{}", bases[1], media(t)), &[])?;
        ensure!(r.status == 200, "after rotation: {}", r.status);
    }
    nodes[0].cli(&["playback", "retire", &old_key])?;
    for base in &bases {
        wait_for(
            Duration::from_secs(10),
            "a retired key's token refused",
            || {
                let r = http.get(&format!("{base}{}", media(&valid)), &[]).ok()?;
                (r.status == 403).then_some(())
            },
        )?;
        let r = http.get(&format!("{base}{}", media(&fresh)), &[])?;
        ensure!(r.status == 200, "{base}: the new key's token: {}", r.status);
    }

    // The origin's access log saw the pulls (without tokens), and no log has a secret.
    edge.kill();
    let origin_log = nodes[0].log();
    ensure!(
        origin_log.lines().any(|l| l.contains("sluice::access")
            && l.contains("/hls/cam/source/")
            && l.contains("via")),
        "no pull-through request in the origin's access log"
    );
    let mut secrets = vec![
        key.clone(),
        nodes[0].admin_token()?,
        std::fs::read_to_string(&secret_file)?.trim().to_string(),
        valid.clone(),
        fresh.clone(),
        forged.clone(),
    ];
    secrets.extend(viewers.iter().cloned());
    let logs = [
        ("node 1", origin_log),
        ("node 2", nodes[1].log()),
        ("node 3", nodes[2].log()),
        ("edge", edge.log()),
    ];
    for (name, log) in &logs {
        ensure!(!log.is_empty(), "{name}: empty log");
        for s in &secrets {
            // The MAC alone is a secret-bearing part of a token.
            let needle = s.rsplit('.').next().unwrap_or(s);
            ensure!(
                !log.contains(needle),
                "{name}'s log contains a secret ({}...)",
                &needle[..8.min(needle.len())]
            );
        }
    }
    Ok(())
}

/// The cluster flags of a node whose certificate `ca` signed.
fn cluster_tls_flags(ca: &TestCa, name: &str) -> Result<Vec<String>> {
    let (cert, key) = ca.node(name)?;
    Ok(vec![
        "--cluster-tls-cert".into(),
        cert.display().to_string(),
        "--cluster-tls-key".into(),
        key.display().to_string(),
        "--cluster-ca".into(),
        ca.cert.display().to_string(),
    ])
}

/// A client of a cluster listener presenting `identity` (cert + key PEM), or none.
fn cluster_client(
    ca: &TestCa,
    identity: Option<(&Path, &Path)>,
) -> Result<reqwest::blocking::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca.cert)?)?]);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert)?;
        pem.extend(std::fs::read(key)?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

fn voters(node: &Server, http: &Http) -> Option<usize> {
    let v = node.cluster_status(http)?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["voter"] == true && m["healthy"] == true)
            .count(),
    )
}

#[test]
fn the_cluster_listener_refuses_nodes_without_the_cluster_certificate() -> Result<()> {
    let tmp = TempDir::new("cluster-tls")?;
    let ca = TestCa::create(tmp.path(), "cluster")?;
    let foreign = TestCa::create(tmp.path(), "foreign")?;
    let flags1 = cluster_tls_flags(&ca, "n1")?;
    let n1 = Server::start(
        &tmp.path().join("n1"),
        &flags1.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let join = format!("https://127.0.0.1:{}", n1.cluster);
    let secret_file = n1.dir.join("cluster.secret");
    let secret_path = secret_file.to_str().context("path")?.to_string();
    let join_flags = |tls: Vec<String>| -> Vec<String> {
        let mut f = tls;
        f.extend([
            "--join".to_string(),
            join.clone(),
            "--cluster-secret-file".into(),
            secret_path.clone(),
        ]);
        f
    };
    let flags2 = join_flags(cluster_tls_flags(&ca, "n2")?);
    let n2 = Server::start(
        &tmp.path().join("n2"),
        &flags2.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let http = Http::new(None)?;
    wait_for(
        Duration::from_secs(30),
        "two healthy voters over mutual TLS",
        || (voters(&n1, &http)? == 2).then_some(()),
    )
    .with_context(|| format!("{}\n{}", n1.log(), n2.log()))?;
    let status = json(&n2.cli(&["cluster", "status", "--json"])?)?;
    ensure!(
        status
            .to_string()
            .contains(&format!("https://127.0.0.1:{}", n2.cluster)),
        "node 2 does not advertise an https cluster URL: {status}"
    );

    // A node whose certificate another CA signed cannot join, with the right secret.
    let flags3 = join_flags(cluster_tls_flags(&foreign, "n3")?);
    let n3_dir = tmp.path().join("n3");
    std::fs::create_dir_all(&n3_dir)?;
    let n3_log = std::fs::File::create(n3_dir.join("serve.log"))?;
    let mut n3 = std::process::Command::new(sluice_e2e::sluice_bin()?)
        .arg("serve")
        .arg("--data-dir")
        .arg(&n3_dir)
        .args([
            "--http",
            "127.0.0.1:0",
            "--rtmp",
            "127.0.0.1:0",
            "--srt",
            "127.0.0.1:0",
        ])
        .args([
            "--cluster",
            &format!("127.0.0.1:{}", sluice_e2e::node::free_port()?),
        ])
        .args(&flags3)
        .env("RUST_LOG", "info")
        .stdout(n3_log.try_clone()?)
        .stderr(n3_log)
        .spawn()?;
    let refused = wait_for(
        Duration::from_secs(20),
        "node 1 to log the foreign certificate refused",
        || {
            n1.log()
                .contains("cluster listener: TLS handshake refused")
                .then_some(())
        },
    );
    let _ = n3.kill();
    let _ = n3.wait();
    refused.with_context(|| n1.log())?;
    ensure!(
        voters(&n1, &http) == Some(2),
        "the foreign node got in: {:?} voters",
        voters(&n1, &http)
    );
    let n3_text = std::fs::read_to_string(n3_dir.join("serve.log"))?;
    ensure!(
        !n3_text.contains("joined the cluster"),
        "node 3 says it joined: {n3_text}"
    );

    // Raft RPCs: a foreign certificate or none fails the handshake; the cluster's own
    // certificate with a wrong secret gets 401 (and a log line).
    let vote = format!("https://127.0.0.1:{}/raft/vote", n1.cluster);
    let secret = std::fs::read_to_string(&secret_file)?.trim().to_string();
    let body =
        r#"{"vote":{"leader_id":{"term":99,"node_id":7},"committed":false},"last_log_id":null}"#;
    let (fcert, fkey) = foreign.node("intruder")?;
    for (who, client) in [
        (
            "a foreign certificate",
            cluster_client(&ca, Some((&fcert, &fkey)))?,
        ),
        ("no certificate", cluster_client(&ca, None)?),
    ] {
        let sent = client
            .post(&vote)
            .bearer_auth(&secret)
            .header("content-type", "application/json")
            .body(body)
            .send();
        ensure!(
            sent.is_err(),
            "{who}: a Raft vote got an answer: {:?}",
            sent.map(|r| r.status())
        );
    }
    let (cert, key) = ca.node("insider")?;
    let r = cluster_client(&ca, Some((&cert, &key)))?
        .post(&vote)
        .bearer_auth("not-the-secret")
        .header("content-type", "application/json")
        .body(body)
        .send()?;
    ensure!(
        r.status().as_u16() == 401,
        "wrong secret: HTTP {}",
        r.status()
    );
    wait_for(Duration::from_secs(5), "the wrong secret logged", || {
        n1.log().contains("Raft RPC refused").then_some(())
    })?;
    ensure!(voters(&n1, &http) == Some(2), "the cluster lost a voter");
    Ok(())
}

#[test]
fn ffmpeg_publishes_over_rtmps_and_plain_rtmp_there_is_refused() -> Result<()> {
    let tmp = TempDir::new("rtmps")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let tls = TlsFiles::create(tmp.path())?;
    let rtmps_port = sluice_e2e::node::free_port()?;
    let server = Server::start(
        &tmp.path().join("node"),
        &[
            "--tls-cert",
            tls.cert.to_str().context("path")?,
            "--tls-key",
            tls.key.to_str().context("path")?,
            "--rtmps",
            &format!("127.0.0.1:{rtmps_port}"),
        ],
    )?;
    let key = server.main_key()?;

    // A plain-RTMP client on the RTMPS port: the TLS handshake fails, it is closed.
    let started = std::time::Instant::now();
    let plain = sluice_e2e::rtmp_client::RtmpPublisher::publish(rtmps_port, "live", &key);
    ensure!(plain.is_err(), "plain RTMP was accepted on the RTMPS port");
    ensure!(
        started.elapsed() < Duration::from_secs(12),
        "refusing plain RTMP took {:?}",
        started.elapsed()
    );
    wait_for(Duration::from_secs(5), "the refusal logged", || {
        let log = server.log();
        (log.contains("rtmps connection ended") && log.contains("TLS handshake")).then_some(())
    })
    .with_context(|| server.log())?;

    let _publisher = Publisher::ffmpeg_loop(
        &fixture,
        &format!("rtmps://127.0.0.1:{rtmps_port}/live/{key}"),
        &tmp.path().join("ff.log"),
    )?;
    let https = Http::new(Some(&tls.cert_pem))?;
    wait_for(Duration::from_secs(30), "the RTMPS stream live", || {
        let r = https
            .get(&server.url("/hls/main/source/index.m3u8"), &[])
            .ok()?;
        (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
    })
    .with_context(|| {
        format!(
            "{}\n{}",
            server.log(),
            std::fs::read_to_string(tmp.path().join("ff.log")).unwrap_or_default()
        )
    })?;
    ensure!(
        server.log().contains("rtmp publish accepted"),
        "no publish in the log"
    );
    Ok(())
}

/// Sends `target` exactly as written (no client normalises it) and returns the status.
fn raw_status(base: &str, target: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    stream.read_to_end(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {text}"))
}

/// Every sample of `/metrics` as the reference Prometheus parser reads it (it fails on
/// text that does not parse).
fn parsed_metrics(http: &Http, base: &str) -> Result<Vec<serde_json::Value>> {
    use std::io::Write;
    let text = http.get(&format!("{base}/metrics"), &[])?.text();
    let root = sluice_e2e::workspace_root().join("e2e/py");
    let mut child = std::process::Command::new(root.join("venv/bin/python"))
        .arg(root.join("parse_metrics.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("python from e2e/py/venv (run scripts/install-test-deps.sh)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "/metrics does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn hostile_names_never_reach_metrics() -> Result<()> {
    let tmp = TempDir::new("metrics-names")?;
    let server = Server::start(&tmp.path().join("n1"), &[])?;
    let http = Http::new(None)?;
    let base = server.base();
    // The request the review sent, and names that pass the path rules but are no channel.
    let injected = "/hls/x%22%7D%201%0Asluice_forged%7Bchannel%3D%22y/source/index.m3u8";
    ensure!(
        raw_status(&base, injected)? == 400,
        "a name with a quote and a line feed was not refused"
    );
    for name in ["nope", "a=b,c", "x$y", "it's", "NEWS", "a@b:c"] {
        let status = raw_status(&base, &format!("/hls/{name}/source/index.m3u8"))?;
        ensure!(status == 404 || status == 400, "/hls/{name}/...: {status}");
    }
    let samples = parsed_metrics(&http, &base)?;
    let channels: std::collections::BTreeSet<String> = samples
        .iter()
        .filter_map(|s| s["labels"]["channel"].as_str().map(str::to_string))
        .collect();
    ensure!(
        channels.iter().all(|c| c == "main"),
        "series for channels that do not exist: {channels:?}"
    );
    ensure!(
        samples.iter().all(|s| s["name"] != "sluice_forged"),
        "a forged series in /metrics"
    );
    // A channel deleted is a channel whose series go.
    let _ = raw_status(&base, "/hls/main/source/index.m3u8")?;
    server.cli(&["channel", "delete", "main"])?;
    let after = parsed_metrics(&http, &base)?;
    ensure!(
        after.iter().all(|s| s["labels"]["channel"].is_null()),
        "series of a deleted channel: {after:?}"
    );
    Ok(())
}
