//! A `sluice serve` process on loopback, publishers that push to it, and an HTTP
//! client for what viewers see. Everything started here is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sluice_bin;

/// Ports the harness hands out come from below the kernel's ephemeral range
/// (32768-60999 by default), so no `bind(:0)` and no outgoing connection of any process
/// can be given one between the check here and the server's own bind.
const PORTS: std::ops::Range<u16> = 10_000..32_000;

/// The next port to try in this process; each is handed out at most once. The start
/// differs between processes (pid and clock), so two test binaries rarely meet.
static NEXT_PORT: AtomicU64 = AtomicU64::new(u64::MAX);

/// A port free right now on loopback, for TCP and UDP alike, and never handed out
/// before by this process.
///
/// Asking the kernel for port 0 and closing the socket is not enough: the next such
/// request may be given the same port (three in a row for one server made it bind one
/// port twice, one start in a few thousand), and so may an outgoing connection.
pub fn free_port() -> Result<u16> {
    let span = u64::from(PORTS.end - PORTS.start);
    let _ = NEXT_PORT.compare_exchange(
        u64::MAX,
        {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
            (u64::from(std::process::id()) * 7919 + nanos) % span
        },
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = PORTS.start + u16::try_from(n % span)?;
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 in {PORTS:?}")
}

/// A TCP connection to `to` from the local address `from` (another 127.0.0.x stands
/// for another client address).
pub fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> Result<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(from, 0))?;
        tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {to} from {from} timed out"))?
            .map_err(anyhow::Error::from)
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A UDP port nothing on 127.0.0.1 holds now (for an SRT listener).
pub fn free_udp_port() -> Result<u16> {
    free_port()
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A self-signed certificate for 127.0.0.1 / localhost, written as PEM files.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
}

impl TlsFiles {
    pub fn create(dir: &Path) -> Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
        let cert_pem = ck.cert.pem();
        let cert = dir.join("tls-cert.pem");
        let key = dir.join("tls-key.pem");
        std::fs::write(&cert, &cert_pem)?;
        std::fs::write(&key, ck.signing_key.serialize_pem())?;
        Ok(Self {
            cert,
            key,
            cert_pem,
        })
    }
}

/// A certificate authority for a cluster's mutual TLS, and the node certificates it
/// signs (for 127.0.0.1 / localhost), written as PEM files.
pub struct TestCa {
    pub cert: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem())?;
        Ok(Self {
            cert: path,
            issuer: rcgen::Issuer::new(params, key),
            dir: dir.to_path_buf(),
        })
    }

    /// A node certificate and key signed by this CA: (cert path, key path).
    pub fn node(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_path = self.dir.join(format!("{name}-cert.pem"));
        let key_path = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }
}

/// A configuration file (written in `dir`) that lifts the per-address limits: load
/// clients and benchmarks open hundreds of connections and blocking requests from one
/// address, which a node's defaults refuse as a flood. Pass it with `--config`.
pub fn load_test_config(dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("load-test.toml");
    std::fs::write(
        &path,
        "# One address stands for many viewers here.\n[limits]\nconnections_per_ip = 1000000\n\
         blocking_requests_per_client = 1000000\npublishers_per_node = 100000\n",
    )?;
    Ok(path.to_str().context("config path")?.to_string())
}

/// One node, started with its own data dir and free ports.
pub struct Server {
    pub dir: PathBuf,
    pub http: u16,
    pub rtmp: u16,
    pub srt: u16,
    pub cluster: u16,
    pub tls: bool,
    child: Option<Child>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `sluice serve` with `extra` flags and waits until it answers `/healthz`.
    pub fn start(dir: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(dir, extra, &[])
    }

    /// [`Server::start`] with environment variables set for the process.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut s = Self {
            dir: dir.to_path_buf(),
            http: free_port()?,
            rtmp: free_port()?,
            srt: free_udp_port()?,
            cluster: free_port()?,
            tls: extra.contains(&"--tls-cert"),
            child: None,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts the process again on the same data dir, ports and flags (after
    /// [`Server::terminate`] or [`Server::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// [`Server::restart`] with the process's environment replaced by `env` (kept for
    /// later restarts).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart()
    }

    fn spawn(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))?;
        let child = Command::new(sluice_bin()?)
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--rtmp", &format!("127.0.0.1:{}", self.rtmp)])
            .args(["--cluster", &format!("127.0.0.1:{}", self.cluster)])
            .args(["--srt", &format!("127.0.0.1:{}", self.srt)])
            .args(&self.extra)
            .env(
                "RUST_LOG",
                "info,openraft=warn,srt_protocol=warn,srt_tokio=warn",
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sluice serve")?;
        self.child = Some(child);
        let client = Http::new(None)?;
        let health = format!("http://127.0.0.1:{}/healthz", self.http);
        let port = self.http;
        let tls = self.tls;
        wait_for(Duration::from_secs(60), "sluice serve to answer", || {
            if tls {
                // The TLS listener does not speak plain HTTP; accepting is enough here.
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ())
            } else {
                client
                    .get(&health, &[])
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            }
        })
        .with_context(|| self.log())?;
        Ok(())
    }

    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp)
    }

    /// An SRT publish URL; `query` is added as is (`&passphrase=...`).
    pub fn srt_url(&self, stream_id: &str, query: &str) -> String {
        format!("srt://127.0.0.1:{}?streamid={stream_id}{query}", self.srt)
    }

    /// The key of the channel `main` a fresh one-node cluster starts with.
    pub fn main_key(&self) -> Result<String> {
        let path = self.dir.join("main.stream-key");
        wait_for(Duration::from_secs(20), "main.stream-key", || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|k| !k.trim().is_empty())
        })
        .map(|k| k.trim().to_string())
    }

    /// The node's id in the cluster (from its data dir).
    pub fn node_id(&self) -> Result<u64> {
        Ok(std::fs::read_to_string(self.dir.join("node.id"))?
            .trim()
            .parse()?)
    }

    pub fn admin_token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("admin.token"))?
            .trim()
            .to_string())
    }

    /// Calls this node's admin API with its own token: the status and the JSON answer
    /// (`Null` when there is none). A `Null` body sends none.
    pub fn api(
        &self,
        http: &Http,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value)> {
        let auth = format!("Bearer {}", self.admin_token()?);
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body)?
        };
        let reply = http.send(
            method,
            &self.url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
        )?;
        let value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        Ok((reply.status, value))
    }

    /// `GET /api/v1/cluster` as this node answers it (`None` unless 200).
    pub fn cluster_status(&self, http: &Http) -> Option<serde_json::Value> {
        let (status, v) = self
            .api(
                http,
                reqwest::Method::GET,
                "/api/v1/cluster",
                serde_json::Value::Null,
            )
            .ok()?;
        (status == 200).then_some(v)
    }

    /// Runs a CLI command against this node (through its data dir); its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        crate::run_ok(
            Command::new(sluice_bin()?)
                .args(args)
                .arg("--data-dir")
                .arg(&self.dir),
            Duration::from_secs(20),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// SIGTERM, as a service manager stops it; the exit code once it exited within
    /// `limit` (None: still running, or killed by a signal).
    pub fn terminate(&mut self, limit: Duration) -> Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let pid = child.id().to_string();
        crate::run_ok(
            Command::new("kill").args(["-TERM", &pid]),
            Duration::from_secs(5),
        )?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// The process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the node dies without a word to anyone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Three nodes, each started with `extra` flags: the first starts the cluster, the
/// others join it; returns once all three are healthy voters.
pub fn three_nodes(root: &Path, extra: &[&str]) -> Result<Vec<Server>> {
    three_nodes_with_env(root, extra, &[])
}

/// [`three_nodes`] with environment variables set for every node.
pub fn three_nodes_with_env(
    root: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Vec<Server>> {
    three_nodes_each_with_env(root, extra, [env, env, env])
}

/// `n` nodes, each started with `extra` flags: the first starts the cluster, the others
/// join it; returns once all are healthy voters.
pub fn cluster_of(root: &Path, n: usize, extra: &[&str]) -> Result<Vec<Server>> {
    let envs: Vec<&[(&str, &str)]> = vec![&[]; n];
    nodes_each_with_env(root, extra, &envs)
}

/// [`three_nodes`] with environment variables set for each node (in order: the first
/// starts the cluster).
pub fn three_nodes_each_with_env(
    root: &Path,
    extra: &[&str],
    envs: [&[(&str, &str)]; 3],
) -> Result<Vec<Server>> {
    nodes_each_with_env(root, extra, &envs)
}

/// As many nodes as `envs`, each with its environment (`n1`, `n2`, ... under `root`).
fn nodes_each_with_env(
    root: &Path,
    extra: &[&str],
    envs: &[&[(&str, &str)]],
) -> Result<Vec<Server>> {
    let first = Server::start_with_env(&root.join("n1"), extra, envs[0])?;
    let join = format!("http://127.0.0.1:{}", first.cluster);
    let secret = first.dir.join("cluster.secret");
    let secret = secret.to_str().context("path")?.to_string();
    let mut nodes = vec![first];
    for (i, env) in envs.iter().enumerate().skip(1) {
        let mut flags = extra.to_vec();
        flags.extend(["--join", &join, "--cluster-secret-file", &secret]);
        nodes.push(Server::start_with_env(
            &root.join(format!("n{}", i + 1)),
            &flags,
            env,
        )?);
    }
    let voters = envs.len();
    let http = Http::new(None)?;
    let auth = format!("Bearer {}", nodes[0].admin_token()?);
    wait_for(
        Duration::from_secs(30),
        "every node a healthy voter",
        || {
            let r = http
                .get(
                    &nodes[0].url("/api/v1/cluster"),
                    &[("authorization", &auth)],
                )
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let healthy = v["members"]
                .as_array()?
                .iter()
                .filter(|m| m["voter"] == true && m["healthy"] == true)
                .count();
            (healthy == voters).then_some(())
        },
    )?;
    Ok(nodes)
}

/// A process's resident memory now (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Samples a process's resident memory every 50 ms until dropped; `peak` is the most
/// seen so far.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(now) = rss_bytes(pid) {
                    p.fetch_max(now, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `sluice edge` process (an external edge), killed on drop.
pub struct EdgeProcess {
    pub http: u16,
    pub log: PathBuf,
    /// Started with `--tls-cert`: its URLs are https://.
    tls: bool,
    child: Option<Child>,
}

impl EdgeProcess {
    /// Starts `sluice edge` with these upstreams (in order) and `extra` flags, and waits
    /// until it answers `/healthz`.
    pub fn start(log: &Path, upstreams: &[String], extra: &[&str]) -> Result<Self> {
        let http = free_port()?;
        let out = std::fs::File::create(log)?;
        let mut cmd = Command::new(sluice_bin()?);
        cmd.arg("edge")
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(extra);
        for u in upstreams {
            cmd.args(["--upstream", u]);
        }
        let child = cmd
            .env("RUST_LOG", "info,sluice::access=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting sluice edge")?;
        let mut e = Self {
            http,
            log: log.to_path_buf(),
            tls: extra.contains(&"--tls-cert"),
            child: Some(child),
        };
        let client = Http::new(None)?;
        let health = e.url("/healthz");
        wait_for(Duration::from_secs(30), "sluice edge to answer", || {
            if e.tls {
                // The TLS listener does not speak plain HTTP; accepting is enough here.
                return std::net::TcpStream::connect(("127.0.0.1", http))
                    .ok()
                    .map(|_| ());
            }
            client
                .get(&health, &[])
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| ())
        })
        .with_context(|| e.log())?;
        if e.child
            .as_mut()
            .map(|c| c.try_wait())
            .is_some_and(|w| matches!(w, Ok(Some(_))))
        {
            bail!("sluice edge exited: {}", e.log());
        }
        Ok(e)
    }

    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// ffmpeg pushing `file` to an RTMP `url` in real time, looping for ever.
pub fn ffmpeg_loop_command(file: &Path, url: &str) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "warning", "-re"])
        .args(["-stream_loop", "-1", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url]);
    cmd
}

/// A publisher process (ffmpeg, GStreamer), killed on drop.
pub struct Publisher {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Publisher {
    /// ffmpeg pushing a file in real time, looped, without re-encoding: the encoder's
    /// settings are those the file was made with.
    pub fn ffmpeg_loop(file: &Path, url: &str, log: &Path) -> Result<Self> {
        Self::spawn(&mut ffmpeg_loop_command(file, url), log)
    }

    /// ffmpeg pushing a file in real time, looped, as MPEG-TS to `url` (SRT or UDP).
    pub fn ffmpeg_ts(file: &Path, url: &str, log: &Path) -> Result<Self> {
        let mut cmd = Command::new("ffmpeg");
        cmd.args([
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy", "-f", "mpegts", url]);
        Self::spawn(&mut cmd, log)
    }

    /// Any publishing process, its output in `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Self {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// GStreamer's own RTMP client (rtmp2sink) with its own encoders.
    pub fn gstreamer(url: &str, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let pipeline = format!(
            "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=320,height=180,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=veryfast key-int-max=60 bitrate=600 threads=1 \
             ! video/x-h264,profile=main ! h264parse ! queue ! mux. \
             audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=2 ! audioconvert \
             ! avenc_aac ! aacparse ! queue ! mux. \
             flvmux name=mux streamable=true ! rtmp2sink location={url}"
        );
        let child = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(pipeline.split_whitespace())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting gst-launch-1.0")?;
        Ok(Self {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Waits for the process to exit by itself, at most `limit`: its exit code.
    /// The exit code if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<i32> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process started again each time it exits, until dropped: an SRT source in
/// listener mode serves one caller and exits when that caller goes away.
pub struct Respawning {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    starts: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub log: PathBuf,
}

impl Respawning {
    /// Starts `make()`'s command, and again after every exit (a short pause between),
    /// all output appended to `log`.
    pub fn start(make: impl Fn() -> Command + Send + 'static, log: &Path) -> Result<Self> {
        std::fs::File::create(log)?;
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let starts = Arc::new(AtomicU64::new(0));
        let (stop2, child2, starts2, log2) = (
            stop.clone(),
            child.clone(),
            starts.clone(),
            log.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let spawned = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log2)
                    .and_then(|out| {
                        make()
                            .stdin(Stdio::null())
                            .stdout(out.try_clone()?)
                            .stderr(out)
                            .spawn()
                    });
                let Ok(c) = spawned else {
                    return;
                };
                starts2.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut slot) = child2.lock() {
                    *slot = Some(c);
                }
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Ok(mut slot) = child2.lock() else { return };
                    let exited = match slot.as_mut() {
                        Some(c) => !matches!(c.try_wait(), Ok(None)),
                        None => true,
                    };
                    if exited {
                        *slot = None;
                        break;
                    }
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(Self {
            stop,
            child,
            starts,
            thread: Some(thread),
            log: log.to_path_buf(),
        })
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Respawning {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(mut slot) = self.child.lock() {
            if let Some(mut c) = slot.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: reqwest::Version,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking HTTP client; with a certificate it speaks TLS (HTTP/2 by ALPN). Clones
/// share one connection pool.
#[derive(Clone)]
pub struct Http {
    client: reqwest::blocking::Client,
}

impl Http {
    pub fn new(tls_cert_pem: Option<&str>) -> Result<Self> {
        Self::with_timeout(tls_cert_pem, Duration::from_secs(30))
    }

    /// [`Http::new`] giving up on a request after `timeout` (a paused server never
    /// answers).
    pub fn with_timeout(tls_cert_pem: Option<&str>, timeout: Duration) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .no_proxy();
        if let Some(pem) = tls_cert_pem {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes())?]);
        }
        Ok(Self { client: b.build()? })
    }

    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let started = Instant::now();
        let resp = req.send().with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp.bytes()?.to_vec();
        Ok(Reply {
            status,
            version,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }

    /// One sample of `base`'s `/metrics`: the value on the line starting `line_start`.
    pub fn metric(&self, base: &str, line_start: &str) -> Result<u64> {
        let text = self.get(&format!("{base}/metrics"), &[])?.text();
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {line_start} in {base}/metrics"))
    }

    /// Any method with a body and headers.
    pub fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply> {
        let mut req = self.client.request(method.clone(), url).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let started = Instant::now();
        let resp = req.send().with_context(|| format!("{method} {url}"))?;
        Ok(Reply {
            status: resp.status().as_u16(),
            version: resp.version(),
            headers: resp.headers().clone(),
            body: resp.bytes()?.to_vec(),
            elapsed: started.elapsed(),
        })
    }

    pub fn patch(&self, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Reply> {
        self.send(reqwest::Method::PATCH, url, headers, body)
    }

    pub fn post(&self, url: &str, token: &str) -> Result<Reply> {
        let started = Instant::now();
        let resp = self.client.post(url).bearer_auth(token).send()?;
        Ok(Reply {
            status: resp.status().as_u16(),
            version: resp.version(),
            headers: resp.headers().clone(),
            body: resp.bytes()?.to_vec(),
            elapsed: started.elapsed(),
        })
    }
}
