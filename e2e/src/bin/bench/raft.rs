//! `raft`: committed commands per second on a 3-node loopback cluster, and the time
//! from kill -9 of the leader to the next acknowledged write through a survivor. The
//! peer is etcd 3.4 (Debian's `etcd-server`), three members on loopback, written through
//! its JSON gateway with the same client: both fsync every commit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_e2e::node::{free_port, wait_for};
use sluice_e2e::{workspace_root, TempDir};

use crate::Table;

/// A cluster the load can write to and whose leader can be killed.
trait Cluster: Sync {
    /// A write to member `i`: (url, JSON body, bearer token).
    fn write(&self, i: usize, n: u64) -> (String, String, Option<String>);
    fn method(&self) -> reqwest::Method;
    fn leader(&self, client: &reqwest::blocking::Client) -> Result<usize>;
    fn kill(&mut self, i: usize);
}

struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Proc> {
    let log = std::fs::File::create(log)?;
    Ok(Proc(Some(
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?,
    )))
}

/// The release binary unless SLUICE_BIN names one.
pub(crate) fn sluice_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "sluice",
            "--bin",
            "sluice",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p sluice failed");
    }
    Ok(workspace_root().join("target/release/sluice"))
}

struct Sluice {
    procs: Vec<Proc>,
    http: Vec<u16>,
    ids: Vec<u64>,
    token: String,
}

impl Sluice {
    fn start(dir: &Path, client: &reqwest::blocking::Client) -> Result<Self> {
        let bin = sluice_bin()?;
        let mut s = Sluice {
            procs: Vec::new(),
            http: Vec::new(),
            ids: Vec::new(),
            token: String::new(),
        };
        let mut first_cluster = String::new();
        for i in 0..3 {
            let data = dir.join(format!("sluice-{i}"));
            std::fs::create_dir_all(&data)?;
            let (http, cluster) = (free_port()?, free_port()?);
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(&data)
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(["--cluster", &format!("127.0.0.1:{cluster}")])
                .args(["--rtmp", "127.0.0.1:0", "--srt", "127.0.0.1:0"]);
            if i == 0 {
                first_cluster = format!("http://127.0.0.1:{cluster}");
            } else {
                cmd.args(["--join", &first_cluster])
                    .arg("--cluster-secret-file")
                    .arg(dir.join("sluice-0/cluster.secret"));
            }
            s.procs
                .push(spawn(&mut cmd, &dir.join(format!("sluice-{i}.log")))?);
            s.http.push(http);
            // One join at a time: wait until this node is a healthy voter.
            wait_for(Duration::from_secs(30), "the sluice node", || {
                let token = read(&dir.join("sluice-0/admin.token")).ok()?;
                let url = format!("http://127.0.0.1:{}/api/v1/cluster", s.http[0]);
                let status = get_json(client, &url, &token).ok()?;
                let healthy_voters = status["members"]
                    .as_array()?
                    .iter()
                    .filter(|m| m["voter"] == true && m["healthy"] == true)
                    .count();
                (healthy_voters == i + 1).then_some(())
            })?;
            s.ids.push(read(&data.join("node.id"))?.parse()?);
        }
        s.token = read(&dir.join("sluice-0/admin.token"))?;
        Ok(s)
    }
}

impl Cluster for Sluice {
    fn write(&self, i: usize, n: u64) -> (String, String, Option<String>) {
        (
            format!("http://127.0.0.1:{}/api/v1/channels/main", self.http[i]),
            format!(r#"{{"title":"write {n}"}}"#),
            Some(self.token.clone()),
        )
    }

    fn method(&self) -> reqwest::Method {
        reqwest::Method::PATCH
    }

    fn leader(&self, client: &reqwest::blocking::Client) -> Result<usize> {
        for (i, port) in self.http.iter().enumerate() {
            if self.procs[i].0.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{port}/api/v1/cluster");
            if let Some(leader) = get_json(client, &url, &self.token)
                .ok()
                .and_then(|v| v["leader"].as_u64())
            {
                return self
                    .ids
                    .iter()
                    .position(|id| *id == leader)
                    .context("the leader is not one of ours");
            }
        }
        bail!("no sluice leader")
    }

    fn kill(&mut self, i: usize) {
        self.procs[i].kill();
    }
}

struct Etcd {
    procs: Vec<Proc>,
    client_ports: Vec<u16>,
}

impl Etcd {
    /// Three members on free loopback ports; started again on other ports (at most
    /// three times) when one does not come up: a port picked free can be taken by
    /// another process before etcd binds it.
    fn start(dir: &Path, client: &reqwest::blocking::Client) -> Result<Self> {
        let mut last = None;
        for attempt in 0..3 {
            let dir = dir.join(format!("attempt-{attempt}"));
            std::fs::create_dir_all(&dir)?;
            match Self::start_once(&dir, client) {
                Ok(etcd) => return Ok(etcd),
                Err(e) => {
                    let logs: String = (0..3)
                        .filter_map(|i| {
                            std::fs::read_to_string(dir.join(format!("etcd-{i}.log"))).ok()
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    eprintln!("bench: etcd did not come up ({e}); trying other ports\n{logs}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    fn start_once(dir: &Path, client: &reqwest::blocking::Client) -> Result<Self> {
        // Six distinct ports (two picks in a row can return one port).
        let mut picked: Vec<u16> = Vec::new();
        while picked.len() < 6 {
            let p = free_port()?;
            if !picked.contains(&p) {
                picked.push(p);
            }
        }
        let ports: Vec<(u16, u16)> = picked.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut procs = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{c}");
            let peer_url = format!("http://127.0.0.1:{p}");
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-{i}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "bench"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .args(["--log-level", "error"]);
            procs.push(spawn(&mut cmd, &dir.join(format!("etcd-{i}.log")))?);
        }
        let etcd = Etcd {
            procs,
            client_ports: ports.iter().map(|(c, _)| *c).collect(),
        };
        for c in &etcd.client_ports {
            wait_for(Duration::from_secs(30), "etcd to be healthy", || {
                let v = get_json(client, &format!("http://127.0.0.1:{c}/health"), "").ok()?;
                (v["health"] == "true").then_some(())
            })?;
        }
        Ok(etcd)
    }
}

impl Cluster for Etcd {
    fn write(&self, i: usize, n: u64) -> (String, String, Option<String>) {
        (
            format!("http://127.0.0.1:{}/v3/kv/put", self.client_ports[i]),
            format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                base64(b"channel/main/title"),
                base64(format!("write {n}").as_bytes())
            ),
            None,
        )
    }

    fn method(&self) -> reqwest::Method {
        reqwest::Method::POST
    }

    fn leader(&self, client: &reqwest::blocking::Client) -> Result<usize> {
        for (i, c) in self.client_ports.iter().enumerate() {
            if self.procs[i].0.is_none() {
                continue;
            }
            let v: serde_json::Value = client
                .post(format!("http://127.0.0.1:{c}/v3/maintenance/status"))
                .body("{}")
                .send()?
                .text()
                .map(|t| serde_json::from_str(&t))??;
            if v["header"]["member_id"] == v["leader"] {
                return Ok(i);
            }
        }
        bail!("no etcd leader")
    }

    fn kill(&mut self, i: usize) {
        self.procs[i].kill();
    }
}

/// Standard base64, as etcd's JSON gateway wants bytes fields.
fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| path.display().to_string())?
        .trim()
        .to_string())
}

fn get_json(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
) -> Result<serde_json::Value> {
    let mut req = client.get(url);
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let r = req.send()?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    Ok(serde_json::from_str(&r.text()?)?)
}

fn send(client: &reqwest::blocking::Client, cluster: &dyn Cluster, i: usize, n: u64) -> bool {
    let (url, body, token) = cluster.write(i, n);
    let mut req = client
        .request(cluster.method(), url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().is_ok_and(|r| r.status().is_success())
}

struct Figures {
    commits_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    failover_ms: f64,
}

/// `clients` threads write to the leader for `run`; then the leader is killed and a
/// survivor is written to until one write is acknowledged.
fn measure(cluster: &mut dyn Cluster, clients: usize, run: Duration) -> Result<Figures> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let leader = cluster.leader(&client)?;
    let stop = AtomicBool::new(false);
    let mut latencies: Vec<Duration> = Vec::new();
    {
        let shared: &dyn Cluster = &*cluster;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|t| {
                    let (stop, client) = (&stop, client.clone());
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        let mut n = (t as u64) << 32;
                        while !stop.load(Ordering::Relaxed) {
                            let started = Instant::now();
                            if send(&client, shared, leader, n) {
                                mine.push(started.elapsed());
                            }
                            n += 1;
                        }
                        mine
                    })
                })
                .collect();
            std::thread::sleep(run);
            stop.store(true, Ordering::Relaxed);
            for h in handles {
                latencies.extend(h.join().unwrap_or_default());
            }
        });
    }
    if latencies.is_empty() {
        bail!("no write was acknowledged");
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let (p50_ms, p99_ms) = (pct(0.50), pct(0.99));
    let commits_per_s = latencies.len() as f64 / run.as_secs_f64();

    cluster.kill(leader);
    let killed = Instant::now();
    let survivor = (leader + 1) % 3;
    let short = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(1_500))
        .build()?;
    let mut n = 1u64 << 60;
    while !send(&short, cluster, survivor, n) {
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("no write acknowledged within 60 s of the leader's death");
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Figures {
        commits_per_s,
        p50_ms,
        p99_ms,
        failover_ms: killed.elapsed().as_secs_f64() * 1e3,
    })
}

pub(crate) fn run(quick: bool, table: &mut Table) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (clients, run) = if quick {
        (4, Duration::from_secs(1))
    } else {
        (16, Duration::from_secs(10))
    };
    let tmp = TempDir::new("bench-raft")?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let sluice = measure(&mut Sluice::start(tmp.path(), &client)?, clients, run)?;
    let etcd = measure(&mut Etcd::start(tmp.path(), &client)?, clients, run)?;
    table.note(format!(
        "raft: 3 members on loopback, {clients} concurrent writers to the leader for {run:?} \
         (sluice: PATCH a channel through the admin API; peer etcd 3.4: put through its JSON \
         gateway)"
    ));
    let mut row = |figure: &str, a: f64, b: f64, higher_is_better: bool, target: &str| {
        table.row(
            "raft",
            figure,
            format!("{a:.1}"),
            format!("etcd {b:.1}"),
            Some(if higher_is_better { a / b } else { b / a }),
            target,
        );
    };
    row(
        "committed writes/s",
        sluice.commits_per_s,
        etcd.commits_per_s,
        true,
        "-",
    );
    row(
        "write latency p50 (ms)",
        sluice.p50_ms,
        etcd.p50_ms,
        false,
        "-",
    );
    row(
        "write latency p99 (ms)",
        sluice.p99_ms,
        etcd.p99_ms,
        false,
        "-",
    );
    row(
        "kill -9 leader -> next acknowledged write (ms)",
        sluice.failover_ms,
        etcd.failover_ms,
        false,
        "-",
    );
    Ok(())
}
