//! Deployment: the Nix files parse, the VM test's node configurations are the fixtures
//! `sluice config check` validates, the check names what is wrong, and a node tells
//! its service manager when it is ready and when it stops (sd_notify).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use sluice_e2e::node::{wait_for, Http, Server};
use sluice_e2e::{run, run_ok, sluice_bin, workspace_root, TempDir};

fn nix_instantiate() -> Result<&'static str> {
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ensure!(
        ok,
        "nix-instantiate is missing: run scripts/install-test-deps.sh (Debian package nix-bin)"
    );
    Ok("nix-instantiate")
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            nix_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "nix") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn every_nix_file_parses() -> Result<()> {
    let nix = nix_instantiate()?;
    let mut files = Vec::new();
    nix_files(&workspace_root().join("nix"), &mut files)?;
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in [
        "flake.nix",
        "package.nix",
        "module.nix",
        "cluster.nix",
        "nodes.nix",
    ] {
        ensure!(
            names.iter().any(|n| n == expected),
            "nix/ has no {expected}: {names:?}"
        );
    }
    for f in &files {
        run_ok(
            Command::new(nix).arg("--parse").arg(f),
            Duration::from_secs(30),
        )
        .with_context(|| format!("{} does not parse", f.display()))?;
    }
    Ok(())
}

#[test]
fn the_vm_test_nodes_render_the_checked_fixtures() -> Result<()> {
    let nix = nix_instantiate()?;
    let dir = workspace_root().join("nix/tests");
    let json = run_ok(
        Command::new(nix)
            .args(["--eval", "--strict", "--json"])
            .arg(dir.join("nodes.nix")),
        Duration::from_secs(30),
    )?;
    let nodes: serde_json::Value = serde_json::from_str(json.trim())?;
    for name in ["node1", "node2", "node3"] {
        let fixture = dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&fixture)?;
        let table: toml::Table = toml::from_str(&text)?;
        let rendered = serde_json::to_value(table)?;
        ensure!(
            rendered == nodes[name],
            "{} differs from nodes.nix's {name}:\n{rendered:#}\n{:#}",
            fixture.display(),
            nodes[name]
        );
        // The secret exists only on the VM: its readability is checked at start.
        let out = config_check(&["--skip-files"], &fixture)?;
        ensure!(
            out.status.success(),
            "{}: {}",
            fixture.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = config_check(&[], &workspace_root().join("config/sluice.toml"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("ok"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `sluice config check ARGS FILE`, whatever its outcome.
fn config_check(args: &[&str], file: &Path) -> Result<std::process::Output> {
    run(
        Command::new(sluice_bin()?)
            .args(["config", "check"])
            .args(args)
            .arg(file),
        Duration::from_secs(10),
    )
}

#[test]
fn config_check_names_every_problem() -> Result<()> {
    let tmp = TempDir::new("config-check")?;
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "http = \"0.0.0.0:8080\"\nrtmp = \"0.0.0.0:8080\"\njoin = \"10.0.0.1:7000\"\n\
         lease_ttl_ms = 5\ncluster_secret_file = \"/nonexistent/secret\"\n",
    )?;
    let out = config_check(&[], &bad)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a bad file passed: {err}");
    for key in [
        "rtmp:",
        "join:",
        "lease_ttl_ms:",
        "cluster_secret_file: /nonexistent/secret",
    ] {
        ensure!(err.contains(key), "{key} not named:\n{err}");
    }
    // Without the files, the missing secret is not a problem; the rest still are.
    let out = config_check(&["--skip-files", "--json"], &bad)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        v["ok"] == false && v["problems"].as_array().map(Vec::len) == Some(3),
        "{v}"
    );
    // A typo in a key: named with its line; `serve` refuses the same file.
    std::fs::write(&bad, "http = \"127.0.0.1:0\"\nlease_tll_ms = 3000\n")?;
    let out = config_check(&[], &bad)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("lease_tll_ms") && err.contains("line 2"),
        "{err}"
    );
    std::fs::write(&bad, "lease_ttl_ms = 5\n")?;
    let out = run(
        Command::new(sluice_bin()?)
            .args(["serve", "--config"])
            .arg(&bad)
            .arg("--data-dir")
            .arg(tmp.path().join("data")),
        Duration::from_secs(10),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("lease_ttl_ms"),
        "serve took a bad lease_ttl_ms: {err}"
    );
    Ok(())
}

/// Receives one sd_notify message, or fails after `limit`.
fn receive(socket: &UnixDatagram, limit: Duration) -> Result<String> {
    socket.set_read_timeout(Some(limit))?;
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .context("no message from the node on NOTIFY_SOCKET")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn readiness_and_stopping_are_told_to_the_service_manager() -> Result<()> {
    let tmp = TempDir::new("notify")?;
    let sock_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path)?;
    let notify = sock_path.to_str().context("path")?;
    let mut first =
        Server::start_with_env(&tmp.path().join("n1"), &[], &[("NOTIFY_SOCKET", notify)])?;
    let ready = receive(&socket, Duration::from_secs(30)).with_context(|| first.log())?;
    ensure!(
        ready.lines().any(|l| l == "READY=1"),
        "first message: {ready:?}"
    );
    // Ready means in a cluster with a leader: /readyz agrees at once.
    let http = Http::new(None)?;
    let r = http.get(&first.url("/readyz"), &[])?;
    ensure!(
        r.status == 200,
        "READY=1 but /readyz says {} {}",
        r.status,
        r.text()
    );

    // A node waiting to be added is not ready until it is.
    let sock2_path = tmp.path().join("notify2.sock");
    let socket2 = UnixDatagram::bind(&sock2_path)?;
    let secret = first.dir.join("cluster.secret");
    let second = Server::start_with_env(
        &tmp.path().join("n2"),
        &[
            "--no-bootstrap",
            "--cluster-secret-file",
            secret.to_str().context("path")?,
        ],
        &[("NOTIFY_SOCKET", sock2_path.to_str().context("path")?)],
    )?;
    if let Ok(early) = receive(&socket2, Duration::from_secs(3)) {
        bail!("a node outside any cluster said {early:?}");
    }
    first.cli(&[
        "cluster",
        "add",
        &format!("http://127.0.0.1:{}", second.cluster),
    ])?;
    let joined = receive(&socket2, Duration::from_secs(30)).with_context(|| second.log())?;
    ensure!(
        joined.lines().any(|l| l == "READY=1"),
        "after joining: {joined:?}"
    );
    wait_for(Duration::from_secs(10), "node 2 ready", || {
        let r = http.get(&second.url("/readyz"), &[]).ok()?;
        (r.status == 200).then_some(())
    })?;

    // SIGTERM: STOPPING=1 first, then a clean exit.
    let code = first.terminate(Duration::from_secs(20))?;
    let stopping = receive(&socket, Duration::from_secs(5))?;
    ensure!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "on SIGTERM: {stopping:?}"
    );
    ensure!(
        code == Some(0),
        "exit code after SIGTERM: {code:?}\n{}",
        first.log()
    );
    Ok(())
}
