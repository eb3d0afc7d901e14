//! Three real `sluice serve` processes on loopback form a cluster through `--join`,
//! survive kill -9 of the leader, and take the killed node back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice_e2e::node::{free_port, wait_for};
use sluice_e2e::{run_ok, sluice_bin, TempDir};

struct Node {
    dir: PathBuf,
    http: u16,
    cluster: u16,
    child: Option<Child>,
}

impl Node {
    fn new(root: &Path, name: &str) -> Result<Self> {
        Ok(Self {
            dir: root.join(name),
            http: free_port()?,
            cluster: free_port()?,
            child: None,
        })
    }

    fn cluster_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.cluster)
    }

    fn start(&mut self, join: Option<(&str, &Path)>) -> Result<()> {
        self.start_with(join, &[])
    }

    /// Starts on an empty data dir waiting to be added to the cluster of `secret`.
    fn start_waiting(&mut self, secret: &Path) -> Result<()> {
        let secret = secret.to_str().context("secret path")?.to_string();
        self.start_with(None, &["--no-bootstrap", "--cluster-secret-file", &secret])
    }

    fn start_with(&mut self, join: Option<(&str, &Path)>, extra: &[&str]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))?;
        let mut cmd = Command::new(sluice_bin()?);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--cluster", &format!("127.0.0.1:{}", self.cluster)])
            .args(["--rtmp", "127.0.0.1:0", "--srt", "127.0.0.1:0"])
            .args(extra);
        if let Some((member, secret)) = join {
            cmd.args(["--join", member])
                .arg("--cluster-secret-file")
                .arg(secret);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn node_id(&self) -> Result<u64> {
        Ok(std::fs::read_to_string(self.dir.join("node.id"))?
            .trim()
            .parse()?)
    }

    /// Runs a CLI command against this node; its stdout.
    fn cli(&self, args: &[&str]) -> Result<String> {
        run_ok(
            Command::new(sluice_bin()?)
                .args(args)
                .arg("--data-dir")
                .arg(&self.dir),
            Duration::from_secs(20),
        )
    }

    fn status(&self) -> Result<serde_json::Value> {
        let out = run_ok(
            Command::new(sluice_bin()?)
                .args(["cluster", "status", "--json", "--data-dir"])
                .arg(&self.dir),
            Duration::from_secs(15),
        )?;
        Ok(serde_json::from_str(&out)?)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The channel names in a `channel list --json` answer.
fn slugs(listed: &serde_json::Value) -> Vec<&str> {
    listed["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["slug"].as_str())
        .collect()
}

/// (leader, voters, healthy members) as one node reports them.
fn summary(status: &serde_json::Value) -> (Option<u64>, usize, usize) {
    let members = status["members"].as_array().cloned().unwrap_or_default();
    (
        status["leader"].as_u64(),
        members.iter().filter(|m| m["voter"] == true).count(),
        members.iter().filter(|m| m["healthy"] == true).count(),
    )
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| std::fs::read_to_string(n.dir.join("serve.log")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Three nodes, the first started as a new cluster and leading; the others not started.
/// Also the path of the cluster's secret.
fn three_nodes_first_leading(root: &Path) -> Result<(Vec<Node>, PathBuf)> {
    let mut nodes = vec![
        Node::new(root, "n1")?,
        Node::new(root, "n2")?,
        Node::new(root, "n3")?,
    ];
    nodes[0].start(None)?;
    wait_for(Duration::from_secs(20), "node 1 to lead", || {
        nodes[0].status().ok().filter(|s| summary(s).0.is_some())
    })?;
    let secret = nodes[0].dir.join("cluster.secret");
    Ok((nodes, secret))
}

#[test]
fn three_processes_form_a_cluster_survive_the_leaders_death_and_take_it_back() -> Result<()> {
    let tmp = TempDir::new("cluster")?;
    let (mut nodes, secret) = three_nodes_first_leading(tmp.path())?;
    // Node 2 joins through node 1; node 3 through node 2, a follower.
    let url1 = nodes[0].cluster_url();
    nodes[1].start(Some((&url1, &secret)))?;
    wait_for(Duration::from_secs(20), "node 2 to join", || {
        nodes[0].status().ok().filter(|s| summary(s).1 == 2)
    })?;
    let url2 = nodes[1].cluster_url();
    nodes[2].start(Some((&url2, &secret)))?;
    let formed = wait_for(Duration::from_secs(20), "3 healthy voters", || {
        nodes[2].status().ok().filter(|s| {
            let (leader, voters, healthy) = summary(s);
            leader.is_some() && voters == 3 && healthy == 3
        })
    })
    .with_context(|| logs(&nodes))?;
    let leader = summary(&formed).0.context("a leader")?;
    // Channels created before the leader dies, through a follower's API.
    let follower = nodes
        .iter()
        .position(|n| n.node_id().ok() != Some(leader))
        .context("a follower")?;
    for name in ["news", "sport"] {
        let out = nodes[follower].cli(&["channel", "create", name, "--json"])?;
        let created: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(created["channel"], name);
        assert!(
            created["stream_key"]
                .as_str()
                .is_some_and(|k| k.len() >= 32),
            "{out}"
        );
    }

    // kill -9 the leader: the two others elect a new one within a few seconds.
    let dead = nodes
        .iter()
        .position(|n| n.node_id().ok() == Some(leader))
        .context("the leader is one of ours")?;
    nodes[dead].kill9();
    let killed_at = Instant::now();
    let survivor = (dead + 1) % 3;
    let new_leader = wait_for(Duration::from_secs(20), "a new leader", || {
        let s = nodes[survivor].status().ok()?;
        summary(&s).0.filter(|l| *l != leader)
    })
    .with_context(|| logs(&nodes))?;
    println!(
        "new leader {new_leader} {:?} after kill -9 of {leader}",
        killed_at.elapsed()
    );
    let other = 3 - dead - survivor;
    wait_for(Duration::from_secs(20), "both survivors to agree", || {
        let s = nodes[other].status().ok()?;
        (summary(&s).0 == Some(new_leader)).then_some(())
    })?;
    for n in [survivor, other] {
        let listed: serde_json::Value =
            serde_json::from_str(&nodes[n].cli(&["channel", "list", "--json"])?)?;
        let names = slugs(&listed);
        assert_eq!(
            names,
            // `main` is the channel a new cluster starts with.
            vec!["main", "news", "sport"],
            "survivor {n} lists the channels made before the failover"
        );
    }

    // The killed node restarts from its data dir and rejoins.
    nodes[dead].start(None)?;
    wait_for(
        Duration::from_secs(30),
        "the restarted node to rejoin",
        || {
            let s = nodes[dead].status().ok()?;
            let (l, voters, healthy) = summary(&s);
            (l == Some(new_leader) && voters == 3 && healthy == 3).then_some(())
        },
    )
    .with_context(|| logs(&nodes))?;
    Ok(())
}

#[test]
fn bad_input_gets_a_clear_error_naming_the_field_and_changes_nothing() -> Result<()> {
    let tmp = TempDir::new("api")?;
    let mut node = Node::new(tmp.path(), "n1")?;
    node.start(None)?;
    wait_for(Duration::from_secs(20), "the node to lead", || {
        node.status().ok().filter(|s| summary(s).0.is_some())
    })?;
    node.cli(&["channel", "create", "news"])?;
    let fail = |args: &[&str]| -> Result<String> {
        let out = sluice_e2e::run(
            Command::new(sluice_bin()?)
                .args(args)
                .arg("--data-dir")
                .arg(&node.dir),
            Duration::from_secs(20),
        )?;
        assert!(!out.status.success(), "{args:?} succeeded");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(fail(&["channel", "create", "news"])?.contains("409"));
    // Membership: the last voter cannot leave; a member cannot join another cluster; a
    // node that does not answer cannot be added.
    let last = fail(&["cluster", "leave"])?;
    assert!(
        last.contains("409") && last.contains("last voter"),
        "{last}"
    );
    assert!(fail(&["cluster", "join", "http://127.0.0.1:9"])?.contains("409"));
    assert!(fail(&["cluster", "add", "http://127.0.0.1:9"])?.contains("502"));
    let bad_url = fail(&["cluster", "add", "not a url"])?;
    assert!(
        bad_url.contains("422") && bad_url.contains("addr"),
        "{bad_url}"
    );
    let bad = fail(&["channel", "create", "Not A Slug"])?;
    assert!(bad.contains("422") && bad.contains("name"), "{bad}");
    assert!(fail(&["key", "create", "missing"])?.contains("404"));
    assert!(fail(&["key", "revoke", "news", "nokey"])?.contains("404"));
    node.cli(&["channel", "delete", "news"])?;
    assert!(
        fail(&["key", "create", "news"])?.contains("404"),
        "a key for a deleted channel"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&node.cli(&["channel", "list", "--json"])?)?;
    let names = slugs(&listed);
    assert_eq!(
        names,
        vec!["main"],
        "news was deleted; main is the starting channel"
    );
    // The API refuses a request with a wrong admin token.
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token")?;
    let out = sluice_e2e::run(
        Command::new(sluice_bin()?)
            .args([
                "channel",
                "list",
                "--server",
                &format!("http://127.0.0.1:{}", node.http),
                "--token-file",
            ])
            .arg(&wrong),
        Duration::from_secs(20),
    )?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    Ok(())
}

/// Runs the CLI against `node`'s API with a token from `token_file`.
fn cli_with_token(node: &Node, token_file: &Path, args: &[&str]) -> Result<std::process::Output> {
    sluice_e2e::run(
        Command::new(sluice_bin()?)
            .args(args)
            .args(["--server", &format!("http://127.0.0.1:{}", node.http)])
            .arg("--token-file")
            .arg(token_file),
        Duration::from_secs(20),
    )
}

#[test]
fn nodes_join_and_leave_through_the_cli_and_admin_tokens_work_on_every_node() -> Result<()> {
    let tmp = TempDir::new("membership")?;
    let (mut nodes, secret) = three_nodes_first_leading(tmp.path())?;
    // Node 2 waits, then joins through its own CLI; node 3 is added from node 1.
    nodes[1].start_waiting(&secret)?;
    nodes[2].start_waiting(&secret)?;
    let url1 = nodes[0].cluster_url();
    // Both waiting nodes answer first (node 1 asks node 3's cluster listener who it is).
    for (i, what) in [(1, "node 2's API"), (2, "node 3's API")] {
        wait_for(Duration::from_secs(20), what, || nodes[i].status().ok())?;
    }
    nodes[1].cli(&["cluster", "join", &url1])?;
    let added: serde_json::Value = serde_json::from_str(&nodes[0].cli(&[
        "cluster",
        "add",
        &nodes[2].cluster_url(),
        "--json",
    ])?)?;
    assert_eq!(added["id"].as_u64(), Some(nodes[2].node_id()?));
    wait_for(Duration::from_secs(30), "3 healthy voters", || {
        nodes[0].status().ok().filter(|s| {
            let (leader, voters, healthy) = summary(s);
            leader.is_some() && voters == 3 && healthy == 3
        })
    })
    .with_context(|| logs(&nodes))?;

    // Each node's admin.token works on every node.
    for from in &nodes {
        let token = from.dir.join("admin.token");
        for to in &nodes {
            wait_for(
                Duration::from_secs(15),
                "a token valid cluster-wide",
                || {
                    let out = cli_with_token(to, &token, &["channel", "list", "--json"]).ok()?;
                    out.status.success().then_some(())
                },
            )
            .with_context(|| logs(&nodes))?;
        }
    }
    // A token made on node 2 works on node 3; a read-only one cannot change anything;
    // revoked on node 1, it stops working on node 3.
    let made: serde_json::Value =
        serde_json::from_str(&nodes[1].cli(&["token", "create", "ops", "--json"])?)?;
    let ops = tmp.path().join("ops.token");
    std::fs::write(&ops, made["token"].as_str().context("token")?)?;
    let out = cli_with_token(&nodes[2], &ops, &["channel", "create", "from-ops"])?;
    assert!(out.status.success(), "{out:?}");
    let ro: serde_json::Value = serde_json::from_str(&nodes[0].cli(&[
        "token",
        "create",
        "grafana",
        "--read-only",
        "--json",
    ])?)?;
    let ro_file = tmp.path().join("ro.token");
    std::fs::write(&ro_file, ro["token"].as_str().context("token")?)?;
    assert!(cli_with_token(&nodes[2], &ro_file, &["channel", "list"])?
        .status
        .success());
    let denied = cli_with_token(&nodes[2], &ro_file, &["channel", "create", "nope"])?;
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("403"),
        "{denied:?}"
    );
    nodes[0].cli(&["token", "revoke", made["token_id"].as_str().context("id")?])?;
    wait_for(Duration::from_secs(10), "the revocation everywhere", || {
        let out = cli_with_token(&nodes[2], &ops, &["channel", "list"]).ok()?;
        String::from_utf8_lossy(&out.stderr)
            .contains("401")
            .then_some(())
    })?;

    // Node 3 leaves: two voters remain, and it is no longer listed.
    let leaving = nodes[2].node_id()?;
    nodes[2].cli(&["cluster", "leave"])?;
    let after = wait_for(Duration::from_secs(20), "two members", || {
        nodes[0]
            .status()
            .ok()
            .filter(|s| s["members"].as_array().map(Vec::len) == Some(2) && summary(s).1 == 2)
    })
    .with_context(|| logs(&nodes))?;
    assert!(
        after["members"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|m| m["id"].as_u64() != Some(leaving)),
        "{after}"
    );
    // The two remaining nodes still commit.
    nodes[1].cli(&["channel", "create", "after-leave"])?;
    Ok(())
}
