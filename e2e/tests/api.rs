//! Every admin API route against a real node: happy path, validation errors naming the
//! field, auth refusals and conflicts; the OpenAPI document lists every route; and
//! schemathesis fuzzes the API from that document (no 5xx, no response breaking its
//! own schema, no route that ignores auth).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use sluice_e2e::node::{wait_for, Http, Publisher, Server};
use sluice_e2e::{make_small_stream, run, workspace_root, TempDir};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Api {
    http: Http,
    base: String,
    token: String,
}

impl Api {
    /// Status and JSON body (`null` when there is none).
    fn call_as(&self, token: Option<&str>, method: Method, path: &str, body: &str) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let url = format!("{}{path}", self.base);
        match self.http.send(method, &url, &headers, body.as_bytes()) {
            Ok(r) => (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            ),
            Err(e) => panic!("{path}: {e:#}"),
        }
    }

    fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.call_as(Some(&self.token), method, path, &body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Value::Null)
    }
}

/// A refusal: the status, and the field it names when one is expected.
#[track_caller]
fn refused(got: (u16, Value), status: u16, field: Option<&str>) {
    assert_eq!(got.0, status, "expected {status}, got {} {}", got.0, got.1);
    assert!(
        got.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no error message: {}",
        got.1
    );
    if let Some(f) = field {
        assert_eq!(got.1["field"], f, "field not named: {}", got.1);
    }
}

#[test]
fn every_admin_route_answers_as_documented() -> Result<()> {
    let tmp = TempDir::new("api")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let server = Server::start(&tmp.path().join("n1"), &[])?;
    let api = Api {
        http: Http::new(None)?,
        base: server.base(),
        token: server.admin_token()?,
    };
    let me = server.node_id()?;

    // The reference: served without a token, lists every route.
    let doc = api.call_as(None, Method::GET, "/api/v1/openapi.json", "");
    assert_eq!(doc.0, 200);
    assert!(doc.1["openapi"].as_str().unwrap_or("").starts_with("3."));
    for path in [
        "/api/v1/cluster",
        "/api/v1/cluster/members",
        "/api/v1/cluster/members/{id}",
        "/api/v1/cluster/join",
        "/api/v1/nodes",
        "/api/v1/nodes/{id}",
        "/api/v1/capture-ports",
        "/api/v1/capture-ports/{node}/{device}",
        "/api/v1/capture-ports/{node}/{device}/channel",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/endpoints",
        "/api/v1/endpoints/{name}",
        "/api/v1/channels",
        "/api/v1/channels/{name}",
        "/api/v1/channels/{name}/keys",
        "/api/v1/channels/{name}/keys/{key_id}",
        "/api/v1/channels/{name}/generations",
        "/api/v1/channels/{name}/status",
        "/api/v1/channels/{name}/stop",
    ] {
        assert!(doc.1["paths"][path].is_object(), "{path} is not documented");
    }

    // Auth: no token, a wrong token.
    refused(
        api.call_as(None, Method::GET, "/api/v1/channels", ""),
        401,
        None,
    );
    refused(
        api.call_as(Some("nope"), Method::GET, "/api/v1/nodes", ""),
        401,
        None,
    );

    // Cluster and nodes.
    let (s, cluster) = api.get("/api/v1/cluster");
    assert_eq!(s, 200);
    assert_eq!(cluster["this_node"], me);
    wait_for(
        Duration::from_secs(20),
        "the node to lead and register",
        || {
            (api.get("/api/v1/cluster").1["leader"] == me
                && api.get("/api/v1/nodes").1["nodes"][0]["id"] == me)
                .then_some(())
        },
    )?;
    let (s, nodes) = api.get("/api/v1/nodes");
    assert_eq!(s, 200);
    assert_eq!(nodes["nodes"][0]["id"], me);
    assert_eq!(nodes["nodes"][0]["healthy"], true);
    assert_eq!(nodes["nodes"][0]["leader"], true);
    let (s, node) = api.get(&format!("/api/v1/nodes/{me}"));
    assert_eq!((s, &node["id"]), (200, &json!(me)));
    refused(api.get("/api/v1/nodes/abc"), 400, Some("id"));
    refused(api.get("/api/v1/nodes/1"), 404, None);
    refused(
        api.call(Method::DELETE, "/api/v1/cluster/members/abc", Value::Null),
        400,
        Some("id"),
    );
    refused(
        api.call(
            Method::POST,
            "/api/v1/cluster/members",
            json!({"addr": "ftp://x"}),
        ),
        422,
        Some("addr"),
    );
    refused(
        api.call(
            Method::POST,
            "/api/v1/cluster/join",
            json!({"member": "http://127.0.0.1:9"}),
        ),
        409,
        None,
    );
    // A peer that does not answer is a gateway error, never a conflict: 502 when
    // nothing listens, 504 when it accepts and never answers.
    refused(
        api.call(
            Method::POST,
            "/api/v1/cluster/members",
            json!({"addr": "http://127.0.0.1:9"}),
        ),
        502,
        None,
    );
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_addr = silent.local_addr()?;
    let held = std::thread::spawn(move || {
        // Holds the connection open without a word until the test reads the answer.
        let conn = silent.accept();
        std::thread::sleep(Duration::from_secs(15));
        drop(conn);
    });
    refused(
        api.call(
            Method::POST,
            "/api/v1/cluster/members",
            json!({"addr": format!("http://{silent_addr}")}),
        ),
        504,
        None,
    );
    drop(held);

    // Channels.
    let (s, created) = api.call(
        Method::POST,
        "/api/v1/channels",
        json!({"name": "news", "title": "News", "ll_hls": {"part_target_ms": 250, "segment_target_ms": 2000, "window_segments": 10}}),
    );
    assert_eq!(s, 201, "{created}");
    assert!(created["stream_key"]
        .as_str()
        .is_some_and(|k| k.len() >= 32));
    assert_eq!(created["details"]["ll_hls"]["part_target_ms"], 250);
    refused(
        api.call(Method::POST, "/api/v1/channels", json!({"name": "news"})),
        409,
        None,
    );
    refused(
        api.call(
            Method::POST,
            "/api/v1/channels",
            json!({"name": "Not A Slug"}),
        ),
        422,
        Some("name"),
    );
    refused(
        api.call(
            Method::POST,
            "/api/v1/channels",
            json!({"name": "pulled", "ingest": {"kind": "srt_caller", "url": "http://x"}}),
        ),
        422,
        Some("ingest.url"),
    );
    refused(
        api.call_as(
            Some(&api.token),
            Method::POST,
            "/api/v1/channels",
            "{not json",
        ),
        400,
        None,
    );
    refused(
        api.call(
            Method::POST,
            "/api/v1/channels",
            json!({"name": "x", "colour": "red"}),
        ),
        400,
        None,
    );
    let (s, list) = api.get("/api/v1/channels");
    assert_eq!(s, 200);
    assert!(list["channels"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["slug"] == "news")));
    let (s, shown) = api.get("/api/v1/channels/news");
    assert_eq!(s, 200);
    assert_eq!(shown["keys"].as_array().map(Vec::len), Some(1));
    refused(api.get("/api/v1/channels/missing"), 404, None);
    let (s, patched) = api.call(
        Method::PATCH,
        "/api/v1/channels/news",
        json!({"title": "World news", "recording": true}),
    );
    assert_eq!((s, &patched["title"]), (200, &json!("World news")));
    assert_eq!(patched["recording"], true);
    refused(
        api.call(
            Method::PATCH,
            "/api/v1/channels/news",
            json!({"ll_hls": {"part_target_ms": 5, "segment_target_ms": 2000, "window_segments": 10}}),
        ),
        422,
        Some("ll_hls.part_target_ms"),
    );
    refused(
        api.call(
            Method::PATCH,
            "/api/v1/channels/missing",
            json!({"title": "x"}),
        ),
        404,
        None,
    );

    // Stream keys.
    let (s, key) = api.call(Method::POST, "/api/v1/channels/news/keys", Value::Null);
    assert_eq!(s, 201, "{key}");
    let key_id = key["key_id"].as_str().context("key_id")?.to_string();
    refused(
        api.call(Method::POST, "/api/v1/channels/missing/keys", Value::Null),
        404,
        None,
    );
    let (s, _) = api.call(
        Method::DELETE,
        &format!("/api/v1/channels/news/keys/{key_id}"),
        Value::Null,
    );
    assert_eq!(s, 204);
    refused(
        api.call(
            Method::DELETE,
            "/api/v1/channels/news/keys/nokey",
            Value::Null,
        ),
        404,
        None,
    );

    // Generations: none yet; a real publisher makes one, stopping it ends it.
    let (s, gens) = api.get("/api/v1/channels/news/generations");
    assert_eq!(
        (s, gens["generations"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    refused(api.get("/api/v1/channels/missing/generations"), 404, None);
    let (s, status) = api.get("/api/v1/channels/news/status");
    assert_eq!((s, &status["state"]), (200, &json!("idle")));
    refused(
        api.call(Method::POST, "/api/v1/channels/news/stop", Value::Null),
        409,
        None,
    );
    refused(
        api.call(Method::POST, "/api/v1/channels/missing/stop", Value::Null),
        404,
        None,
    );
    let stream_key = created["stream_key"].as_str().context("stream key")?;
    let mut publisher = Publisher::ffmpeg_loop(
        &fixture,
        &server.rtmp_url(stream_key),
        &tmp.path().join("ffmpeg.log"),
    )?;
    let live = wait_for(Duration::from_secs(30), "news live", || {
        let (_, st) = api.get("/api/v1/channels/news/status");
        (st["state"] == "live" && st["generation"]["media"]["width"].as_u64() > Some(0))
            .then_some(st)
    })
    .with_context(|| server.log())?;
    assert_eq!(live["generation"]["origin"], me);
    assert!(live["generation"]["media"]["codecs"]
        .as_array()
        .is_some_and(|c| c
            .iter()
            .any(|c| c.as_str().unwrap_or("").starts_with("avc1"))));
    assert_eq!(live["playlist_path"], "/hls/news/index.m3u8");
    let (_, node) = api.get(&format!("/api/v1/nodes/{me}"));
    assert_eq!(node["origin_of"], json!(["news"]));
    refused(
        api.call(Method::DELETE, "/api/v1/channels/news", Value::Null),
        409,
        None,
    );
    // The CLI reads the same live state, as a table or as JSON.
    let status: Value =
        serde_json::from_str(&server.cli(&["stream", "status", "news", "--json"])?)?;
    assert_eq!(status["state"], "live");
    let human = server.cli(&["stream", "status", "news"])?;
    assert!(human.contains("live") && human.contains("avc1"), "{human}");
    let listed: Value = serde_json::from_str(&server.cli(&["node", "list", "--json"])?)?;
    assert_eq!(listed["nodes"][0]["origin_of"], json!(["news"]));
    assert!(server.cli(&["node", "list"])?.contains("healthy"));
    let shown: Value = serde_json::from_str(&server.cli(&["channel", "show", "news", "--json"])?)?;
    assert_eq!(shown["channel"]["generation"]["state"], "live");
    // Stopped through the CLI (POST /api/v1/channels/news/stop).
    let stopped: Value = serde_json::from_str(&server.cli(&["stream", "stop", "news", "--json"])?)?;
    assert_eq!(stopped["state"], "ended", "{stopped}");
    refused(
        api.call(Method::POST, "/api/v1/channels/news/stop", Value::Null),
        409,
        None,
    );
    ensure!(
        publisher.wait_exit(Duration::from_secs(20)).is_some(),
        "the publisher was not disconnected"
    );
    let (_, gens) = api.get("/api/v1/channels/news/generations");
    assert_eq!(gens["generations"][0]["state"], "ended", "{gens}");
    let history = server.cli(&["stream", "history", "news"])?;
    assert!(history.contains("ended"), "{history}");
    assert_eq!(api.get("/api/v1/channels/news/status").1["state"], "idle");
    let (s, _) = api.call(Method::DELETE, "/api/v1/channels/news", Value::Null);
    assert_eq!(s, 204);
    refused(
        api.call(Method::DELETE, "/api/v1/channels/news", Value::Null),
        404,
        None,
    );

    // Tokens: a read-only one reads and cannot change; a revoked one is refused.
    let (s, ro) = api.call(
        Method::POST,
        "/api/v1/tokens",
        json!({"name": "monitoring", "read_only": true}),
    );
    assert_eq!(s, 201, "{ro}");
    let ro_token = ro["token"].as_str().context("token")?.to_string();
    let ro_id = ro["token_id"].as_str().context("token_id")?.to_string();
    assert_eq!(
        api.call_as(Some(&ro_token), Method::GET, "/api/v1/nodes", "")
            .0,
        200
    );
    refused(
        api.call_as(
            Some(&ro_token),
            Method::POST,
            "/api/v1/channels",
            r#"{"name":"ro"}"#,
        ),
        403,
        None,
    );
    refused(
        api.call(Method::POST, "/api/v1/tokens", json!({"read_only": true})),
        400,
        None,
    );
    refused(
        api.call(Method::POST, "/api/v1/tokens", json!({"name": ""})),
        422,
        Some("name"),
    );
    let (s, tokens) = api.get("/api/v1/tokens");
    assert_eq!(s, 200);
    assert!(tokens["tokens"].as_array().is_some_and(|t| t
        .iter()
        .any(|t| t["token_id"] == ro_id.as_str() && t.get("verifier").is_none())));
    let (s, _) = api.call(
        Method::DELETE,
        &format!("/api/v1/tokens/{ro_id}"),
        Value::Null,
    );
    assert_eq!(s, 204);
    refused(
        api.call_as(Some(&ro_token), Method::GET, "/api/v1/nodes", ""),
        401,
        None,
    );
    refused(
        api.call(Method::DELETE, "/api/v1/tokens/tnothing", Value::Null),
        404,
        None,
    );

    // Endpoints: create, replace, show with history, refuse bad input, delete.
    let ext = json!({"kind": "external_edge", "url": "https://cdn.example.net", "upstreams": []});
    let (s, e) = api.call(Method::PUT, "/api/v1/endpoints/cdn", ext.clone());
    assert_eq!(s, 201, "{e}");
    let (s, _) = api.call(Method::PUT, "/api/v1/endpoints/cdn", ext);
    assert_eq!(s, 200);
    let (s, e) = api.get("/api/v1/endpoints/cdn");
    assert_eq!((s, &e["kind"]), (200, &json!("external_edge")));
    assert!(e["history"].is_array());
    refused(
        api.call(
            Method::PUT,
            "/api/v1/endpoints/bad",
            json!({"kind": "external_edge", "url": "not a url"}),
        ),
        422,
        Some("url"),
    );
    refused(
        api.call(
            Method::PUT,
            "/api/v1/endpoints/bad",
            json!({"kind": "external_edge", "url": "https://x.example", "upstreams": ["nowhere"]}),
        ),
        422,
        Some("upstreams"),
    );
    refused(api.get("/api/v1/endpoints/missing"), 404, None);
    let (s, list) = api.get("/api/v1/endpoints");
    assert_eq!(s, 200);
    assert!(list["endpoints"]
        .as_array()
        .is_some_and(|l| l.iter().any(|e| e["name"] == "cdn")));
    let (s, _) = api.call(Method::DELETE, "/api/v1/endpoints/cdn", Value::Null);
    assert_eq!(s, 204);
    refused(
        api.call(Method::DELETE, "/api/v1/endpoints/cdn", Value::Null),
        404,
        None,
    );

    // The CLI covers tokens, endpoints and capture ports, with --json for scripts.
    let made: Value = serde_json::from_str(&server.cli(&["token", "create", "ci", "--json"])?)?;
    let id = made["token_id"].as_str().context("token_id")?;
    assert!(server.cli(&["token", "list"])?.contains("ci"));
    let revoked: Value = serde_json::from_str(&server.cli(&["token", "revoke", id, "--json"])?)?;
    assert_eq!(revoked["revoked"], id);
    server.cli(&[
        "endpoint",
        "put",
        "cdn2",
        "--kind",
        "external_edge",
        "--url",
        "https://cdn2.example.net",
    ])?;
    let e: Value = serde_json::from_str(&server.cli(&["endpoint", "show", "cdn2", "--json"])?)?;
    assert_eq!(e["url"], "https://cdn2.example.net");
    let gone: Value =
        serde_json::from_str(&server.cli(&["endpoint", "delete", "cdn2", "--json"])?)?;
    assert_eq!(gone["deleted"], "cdn2");
    let ports: Value = serde_json::from_str(&server.cli(&["port", "list", "--json"])?)?;
    assert_eq!(ports["capture_ports"], json!([]));

    // Capture ports: none on this node's hardware; bad paths name the part.
    let (s, ports) = api.get("/api/v1/capture-ports");
    assert_eq!((s, &ports["capture_ports"]), (200, &json!([])));
    // A node's hardware scan, proposed over the cluster RPC as the node's discovery
    // does: two DeckLink inputs appear, disabled and unlabelled.
    let secret = std::fs::read_to_string(tmp.path().join("n1/cluster.secret"))?;
    let scan = json!({"at_ms": now_ms(), "op": {"op": "report_capture_ports", "node": me,
        "devices": [{"device": 0, "model": "DeckLink Duo 2"}, {"device": 1, "model": "DeckLink Duo 2"}]}});
    let r = api.http.send(
        Method::POST,
        &format!("http://127.0.0.1:{}/cluster/propose", server.cluster),
        &[
            ("authorization", &format!("Bearer {}", secret.trim())),
            ("content-type", "application/json"),
        ],
        scan.to_string().as_bytes(),
    )?;
    ensure!(r.status == 200, "scan: {} {}", r.status, r.text());
    let (_, ports) = api.get("/api/v1/capture-ports");
    assert_eq!(
        ports["capture_ports"].as_array().map(Vec::len),
        Some(2),
        "{ports}"
    );
    assert_eq!(ports["capture_ports"][0]["enabled"], false);
    let (_, node) = api.get(&format!("/api/v1/nodes/{me}"));
    assert_eq!(node["capture_ports"].as_array().map(Vec::len), Some(2));
    let (s, port) = api.call(
        Method::PATCH,
        &format!("/api/v1/capture-ports/{me}/0"),
        json!({"label": "studio A", "enabled": true}),
    );
    assert_eq!(s, 200, "{port}");
    assert_eq!(
        (&port["label"], &port["enabled"]),
        (&json!("studio A"), &json!(true))
    );
    refused(
        api.call(
            Method::PATCH,
            &format!("/api/v1/capture-ports/{me}/0"),
            json!({"label": "x".repeat(65)}),
        ),
        422,
        Some("label"),
    );
    refused(
        api.call(
            Method::PATCH,
            &format!("/api/v1/capture-ports/{me}/0"),
            json!({"colour": "red"}),
        ),
        400,
        None,
    );
    let (s, bound) = api.call(
        Method::PUT,
        &format!("/api/v1/capture-ports/{me}/0/channel"),
        json!({"channel": "main"}),
    );
    assert_eq!((s, &bound["channel"]), (200, &json!("main")), "{bound}");
    let (_, main) = api.get("/api/v1/channels/main");
    assert_eq!(main["channel"]["ingest"]["kind"], "sdi");
    let (_, _) = api.call(Method::POST, "/api/v1/channels", json!({"name": "second"}));
    refused(
        api.call(
            Method::PUT,
            &format!("/api/v1/capture-ports/{me}/0/channel"),
            json!({"channel": "second"}),
        ),
        409,
        None,
    );
    refused(
        api.call(
            Method::PUT,
            &format!("/api/v1/capture-ports/{me}/1/channel"),
            json!({"channel": "nothing"}),
        ),
        422,
        Some("channel"),
    );
    let (s, unbound) = api.call(
        Method::PUT,
        &format!("/api/v1/capture-ports/{me}/0/channel"),
        json!({"channel": null}),
    );
    assert_eq!((s, &unbound["channel"]), (200, &Value::Null));
    let (_, main) = api.get("/api/v1/channels/main");
    assert_eq!(main["channel"]["ingest"]["kind"], "push");
    let human = server.cli(&[
        "port",
        "set",
        &me.to_string(),
        "1",
        "--label",
        "studio B",
        "--enable",
    ])?;
    assert!(human.contains("studio B"), "{human}");
    refused(
        api.call(
            Method::PATCH,
            "/api/v1/capture-ports/x/0",
            json!({"label": "cam 1"}),
        ),
        400,
        Some("node"),
    );
    refused(
        api.call(
            Method::PATCH,
            &format!("/api/v1/capture-ports/{me}/y"),
            json!({"label": "cam 1"}),
        ),
        400,
        Some("device"),
    );
    refused(
        api.call(
            Method::PATCH,
            &format!("/api/v1/capture-ports/{me}/7"),
            json!({"label": "cam 1"}),
        ),
        404,
        None,
    );
    refused(
        api.call(
            Method::PUT,
            &format!("/api/v1/capture-ports/{me}/7/channel"),
            json!({"channel": "main"}),
        ),
        404,
        None,
    );
    Ok(())
}

/// schemathesis (installed by the test command into `e2e/py`) against a node, from
/// the node's own OpenAPI document.
#[test]
fn schemathesis_finds_no_server_error_or_schema_break() -> Result<()> {
    let schemathesis = workspace_root().join("e2e/py/venv/bin/schemathesis");
    ensure!(
        schemathesis.exists(),
        "schemathesis is not installed at {}: run scripts/install-test-deps.sh",
        schemathesis.display()
    );
    let tmp = TempDir::new("fuzz")?;
    let server = Server::start(&tmp.path().join("n1"), &[])?;
    let token = server.admin_token()?;
    let http = Http::new(None)?;
    wait_for(Duration::from_secs(20), "the node ready", || {
        let r = http.get(&server.url("/readyz"), &[]).ok()?;
        (r.status == 200).then_some(())
    })?;
    let report = workspace_root().join("target/e2e-artifacts/schemathesis");
    let max_time = if std::env::var_os("CI").is_some() {
        "90"
    } else {
        "45"
    };
    let mut cmd = Command::new(&schemathesis);
    cmd.arg("run")
        .arg(server.url("/api/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,ignored_auth",
        ])
        .args(["--phases", "coverage,fuzzing"])
        .args(["--max-examples", "25", "--max-time", max_time])
        .args(["--request-timeout", "10", "--workers", "1"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1");
    let out = run(&mut cmd, Duration::from_secs(400))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    ensure!(
        generated_cases(&stdout).is_some_and(|n| n > 0),
        "schemathesis ran nothing:\n{stdout}"
    );
    Ok(())
}

/// The number in schemathesis' summary line "N generated, N passed, ...".
fn generated_cases(summary: &str) -> Option<u64> {
    summary.lines().find_map(|line| {
        let (count, _) = line.trim().split_once(" generated")?;
        count.trim().parse().ok()
    })
}

#[test]
fn the_summary_count_is_read_whole() {
    assert_eq!(
        generated_cases("Test cases:\n  9140 generated, 9140 passed"),
        Some(9140)
    );
    assert_eq!(generated_cases("  0 generated, 0 passed"), Some(0));
    assert_eq!(generated_cases("nothing here"), None);
}
