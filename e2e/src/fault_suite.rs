//! The seeded fault-injection suite: three or five real nodes (3 s leases), an encoder that
//! retries like OBS (ffmpeg in a loop, pointed at the next node after each failure),
//! admin writes through random nodes, an observer that reads every node's playlist and
//! objects, and hls.js on a node the faults spare. A seed fixes the schedule of faults
//! (kill -9 and restart, SIGSTOP/SIGCONT past the lease, a restart with the clock 10 s
//! off); the same seed replays the same schedule.
//!
//! Invariants, checked while the faults run and at the end:
//! - every object URL (part, segment) any node served has one content (its hash);
//! - MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE never go back on any node's playlist
//!   (per generation);
//! - no admin write that was acknowledged is lost;
//! - a node that is up (10 s after its fault healed) is never reported down: with
//!   clocks 10 s apart, leases must not flap;
//! - the stream is never ended: it is the same generation at the end (its encoder
//!   always comes back within the reconnect grace);
//! - after the last fault heals, the stream is live and the viewer node's playlist
//!   advances within `RECOVERY`; hls.js played on the same URL without a reload;
//! - the stream never stalls (no new part on the viewer node) for longer than
//!   `STALL_LIMIT`.
//!
//! Not injected here: network partitions between nodes (the cluster transport has no
//! fault proxy yet; `e2e/tests/failover.rs` pauses nodes instead) and a full disk (its
//! own test in `failover.rs`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::node::{cluster_of, wait_for, Http, Respawning, Server};
use crate::play_url;

const MEDIA: &str = "/hls/main/source/index.m3u8";
/// libfaketime, preloaded into a node to skew its wall clock (installed by
/// scripts/install-test-deps.sh).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The environment that runs a node with its wall clock `offset` away (`+10s`); its
/// monotonic clock is left alone.
pub fn skewed_clock(offset: &str) -> [(&'static str, &str); 3] {
    [
        ("LD_PRELOAD", FAKETIME_LIB),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
}
/// How soon after the last fault heals the stream must be live and advancing again.
pub const RECOVERY: Duration = Duration::from_secs(30);
/// The longest the viewer node may go without a new part while faults run: a fault
/// of at most 8 s, a 3 s lease, the encoder's 5 s write timeout and its retry.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9, restarted after the pause.
    Kill,
    /// SIGSTOP, SIGCONT after the pause.
    Pause,
    /// kill -9, restarted with its wall clock 10 s behind or ahead.
    Skew,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9",
            FaultKind::Pause => "SIGSTOP",
            FaultKind::Skew => "clock skew",
        }
    }
}

/// One fault of a schedule: `after` the previous one healed, `node` (index) gets
/// `kind` for `lasting`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub node: usize,
    pub after: Duration,
    pub lasting: Duration,
    /// The clock offset of a skewed restart (`-10s`, `+10s`).
    pub offset: &'static str,
}

/// The schedule a seed makes for `nodes` nodes: `count` faults on the nodes other
/// than `viewer`.
pub fn schedule(seed: u64, nodes: usize, count: usize) -> (usize, Vec<Fault>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let viewer = rng.usize(0..nodes);
    let faults = (0..count)
        .map(|_| {
            let kind = match rng.u8(0..3) {
                0 => FaultKind::Kill,
                1 => FaultKind::Pause,
                _ => FaultKind::Skew,
            };
            let mut node = rng.usize(0..nodes - 1);
            if node >= viewer {
                node += 1;
            }
            Fault {
                kind,
                node,
                after: Duration::from_millis(rng.u64(3_000..8_000)),
                lasting: Duration::from_millis(rng.u64(2_000..8_000)),
                offset: if rng.bool() { "-10s" } else { "+10s" },
            }
        })
        .collect();
    (viewer, faults)
}

/// What a fault did to the viewer: the longest time without a new part on the viewer
/// node from the fault's start until the stream went on after it.
#[derive(Clone, Debug)]
pub struct FaultOutcome {
    pub fault: Fault,
    pub stall: Duration,
}

#[derive(Debug, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub outcomes: Vec<FaultOutcome>,
    pub violations: Vec<String>,
    /// Object URLs whose content was compared, and on how many nodes in all.
    pub urls: usize,
    pub fetched: usize,
    pub writes_acked: usize,
    pub playback: Option<serde_json::Value>,
}

impl SeedReport {
    /// How to run this seed again.
    pub fn replay(&self) -> String {
        format!(
            "FAULT_SEEDS={} cargo test -p sluice-e2e --test faults, or \
             cargo run --release -p sluice-e2e --bin bench -- faults --seed {}",
            self.seed, self.seed
        )
    }
}

/// What the observer keeps.
#[derive(Default)]
struct Seen {
    /// URL -> (hash, length, node that served it first).
    objects: BTreeMap<String, (u64, usize, usize)>,
    /// (node, URL) already fetched.
    fetched: std::collections::BTreeSet<(usize, String)>,
    /// (node, generation) -> last (media sequence, discontinuity sequence).
    sequences: BTreeMap<(usize, String), (u64, u64)>,
    /// When a part the viewer node had not listed before appeared.
    new_parts: Vec<Instant>,
    violations: Vec<String>,
}

fn tag_number(text: &str, tag: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(tag))
        .and_then(|v| v.trim().parse().ok())
}

/// The URIs of the parts and segments a media playlist lists.
pub fn object_uris(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            if let Some(part) = l.strip_prefix("#EXT-X-PART:") {
                let uri = part.split("URI=\"").nth(1)?;
                Some(uri.trim_end_matches('"').to_string())
            } else if !l.starts_with('#') && l.ends_with(".m4s") {
                Some(l.to_string())
            } else {
                None
            }
        })
        .collect()
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// One look at one node: its playlist's sequences, and every object it lists that was
/// not fetched from it yet.
fn observe(http: &Http, node: usize, base: &str, viewer: usize, seen: &Mutex<Seen>) {
    let Ok(r) = http.get(&format!("{base}{MEDIA}"), &[]) else {
        return;
    };
    if r.status != 200 {
        return;
    }
    let text = r.text();
    let uris = object_uris(&text);
    let generation = uris
        .first()
        .and_then(|u| u.split('/').next())
        .unwrap_or("")
        .to_string();
    let msn = tag_number(&text, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
    let dseq = tag_number(&text, "#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0);
    let mut to_fetch = Vec::new();
    if let Ok(mut s) = seen.lock() {
        let key = (node, generation.clone());
        if let Some(&(m, d)) = s.sequences.get(&key) {
            if msn < m || dseq < d {
                s.violations.push(format!(
                    "node {node}: generation {generation}: media sequence {m} -> {msn}, \
                     discontinuity sequence {d} -> {dseq}"
                ));
            }
        }
        let last = s.sequences.entry(key).or_insert((msn, dseq));
        *last = (last.0.max(msn), last.1.max(dseq));
        for uri in uris {
            if s.fetched.insert((node, uri.clone())) {
                if node == viewer && uri.matches('.').count() == 2 {
                    s.new_parts.push(Instant::now());
                }
                to_fetch.push(uri);
            }
        }
    }
    for uri in to_fetch {
        let Ok(got) = http.get(&format!("{base}/hls/main/source/{uri}"), &[]) else {
            continue;
        };
        if got.status != 200 {
            continue;
        }
        let h = hash(&got.body);
        if let Ok(mut s) = seen.lock() {
            match s.objects.get(&uri).copied() {
                Some((first, len, by)) if first != h => s.violations.push(format!(
                    "{uri}: node {by} served {len} bytes, node {node} {} other bytes",
                    got.body.len()
                )),
                Some(_) => {}
                None => {
                    s.objects.insert(uri, (h, got.body.len(), node));
                }
            }
        }
    }
}

/// The encoder: ffmpeg publishing the file in a loop, giving up on a node that does
/// not take its writes for 5 s, and then (like OBS with a list of servers) trying the
/// next node.
fn encoder(fixture: &Path, rtmp_urls: Vec<String>, log: &Path) -> Result<Respawning> {
    let fixture = fixture.to_path_buf();
    let next = AtomicUsize::new(0);
    Respawning::start(
        move || {
            let url = &rtmp_urls[next.fetch_add(1, Ordering::SeqCst) % rtmp_urls.len()];
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-hide_banner", "-loglevel", "warning", "-re"])
                .args(["-stream_loop", "-1", "-i"])
                .arg(&fixture)
                .args(["-c", "copy", "-rw_timeout", "5000000", "-f", "flv", url]);
            cmd
        },
        log,
    )
}

/// Runs one seed's schedule of `count` faults on `n` nodes in `root` (their data dirs
/// and logs), publishing `fixture`.
pub fn run_seed(
    seed: u64,
    n: usize,
    count: usize,
    fixture: &Path,
    root: &Path,
) -> Result<SeedReport> {
    anyhow::ensure!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: scripts/install-test-deps.sh installs it (faketime)"
    );
    let (viewer, faults) = schedule(seed, n, count);
    let mut nodes = cluster_of(
        root,
        n,
        &["--lease-ttl-ms", "3000", "--reconnect-grace-ms", "30000"],
    )?;
    let http = Http::new(None)?;
    let key = nodes[0].main_key()?;
    let token = nodes[0].admin_token()?;
    let bases: Vec<String> = nodes.iter().map(Server::base).collect();
    let rtmp: Vec<String> = (0..n)
        .map(|i| nodes[(viewer + 1 + i) % n].rtmp_url(&key))
        .collect();
    let encoder = encoder(fixture, rtmp, &root.join("encoder.log"))?;
    wait_for(Duration::from_secs(60), "the stream live", || {
        let r = http.get(&format!("{}{MEDIA}", bases[viewer]), &[]).ok()?;
        (r.status == 200 && r.text().matches("#EXTINF").count() >= 2).then_some(())
    })
    .with_context(|| format!("{}\n{}", encoder.output(), nodes[0].log()))?;

    let generation = main_generation(&http, &nodes[viewer])?;

    // Observer, writer and viewer run until the end.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let up: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(true)).collect());
    // From when each node must be reported healthy (None: under a fault).
    let settled: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![Some(Instant::now()); n]));
    let ids: Vec<u64> = nodes.iter().map(Server::node_id).collect::<Result<_>>()?;
    let health = {
        let (seen, stop, settled) = (seen.clone(), stop.clone(), settled.clone());
        let url = format!("{}/api/v1/nodes", bases[viewer]);
        let auth = format!("Bearer {token}");
        std::thread::spawn(move || -> Result<()> {
            let http = Http::with_timeout(None, Duration::from_secs(3))?;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
                let Ok(r) = http.get(&url, &[("authorization", &auth)]) else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let now = Instant::now();
                let settled = settled.lock().map(|s| s.clone()).unwrap_or_default();
                for n in v["nodes"].as_array().into_iter().flatten() {
                    let Some(i) = ids.iter().position(|id| n["id"].as_u64() == Some(*id)) else {
                        continue;
                    };
                    if n["healthy"] == false
                        && settled
                            .get(i)
                            .copied()
                            .flatten()
                            .is_some_and(|at| now >= at)
                    {
                        let said = format!("node {i} was reported down while up and reachable");
                        if let Ok(mut s) = seen.lock() {
                            if !s.violations.contains(&said) {
                                s.violations.push(said);
                            }
                        }
                    }
                }
            }
            Ok(())
        })
    };
    let observer = {
        let (seen, stop, up, bases) = (seen.clone(), stop.clone(), up.clone(), bases.clone());
        std::thread::spawn(move || -> Result<()> {
            let http = Http::with_timeout(None, Duration::from_secs(3))?;
            while !stop.load(Ordering::SeqCst) {
                for (i, base) in bases.iter().enumerate() {
                    if up[i].load(Ordering::SeqCst) {
                        observe(&http, i, base, viewer, &seen);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(())
        })
    };
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (acked, stop, up, bases) = (acked.clone(), stop.clone(), up.clone(), bases.clone());
        let token = token.clone();
        std::thread::spawn(move || -> Result<()> {
            let http = Http::with_timeout(None, Duration::from_secs(15))?;
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            let auth = format!("Bearer {token}");
            let mut written = 0;
            while !stop.load(Ordering::SeqCst) {
                let i = rng.usize(0..n);
                if up[i].load(Ordering::SeqCst) {
                    let name = format!("w{seed}-{written}");
                    written += 1;
                    let body = serde_json::json!({ "name": name, "title": "written under faults" });
                    let reply = http.send(
                        reqwest::Method::POST,
                        &format!("{}/api/v1/channels", bases[i]),
                        &[
                            ("authorization", &auth),
                            ("content-type", "application/json"),
                        ],
                        &serde_json::to_vec(&body)?,
                    );
                    if reply.is_ok_and(|r| r.status == 201) {
                        if let Ok(mut a) = acked.lock() {
                            a.push(name);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1500));
            }
            Ok(())
        })
    };
    let run_for: Duration = faults.iter().map(|f| f.after + f.lasting).sum();
    let play_seconds = (run_for.as_secs() + 20) as u32;
    let player = {
        let url = format!("{}{MEDIA}", bases[viewer]);
        std::thread::spawn(move || {
            play_url(
                &url,
                "{}",
                play_seconds,
                Duration::from_secs(u64::from(play_seconds) + 120),
            )
        })
    };

    // The schedule.
    let mut spans = Vec::new();
    for f in &faults {
        std::thread::sleep(f.after);
        let started = Instant::now();
        let n = &mut nodes[f.node];
        up[f.node].store(false, Ordering::SeqCst);
        if let Ok(mut s) = settled.lock() {
            s[f.node] = None;
        }
        match f.kind {
            FaultKind::Kill => {
                n.kill();
                std::thread::sleep(f.lasting);
                n.restart()?;
            }
            FaultKind::Pause => {
                signal(n, "-STOP")?;
                std::thread::sleep(f.lasting);
                signal(n, "-CONT")?;
            }
            FaultKind::Skew => {
                n.kill();
                std::thread::sleep(f.lasting);
                n.restart_with_env(&skewed_clock(f.offset))?;
            }
        }
        up[f.node].store(true, Ordering::SeqCst);
        if let Ok(mut s) = settled.lock() {
            s[f.node] = Some(Instant::now() + Duration::from_secs(10));
        }
        spans.push((f.clone(), started));
    }

    // Healed: the stream must be live and advancing on the viewer node.
    let healed = Instant::now();
    let mut report = SeedReport {
        seed,
        ..Default::default()
    };
    let parts_now = |seen: &Mutex<Seen>| seen.lock().map(|s| s.new_parts.len()).unwrap_or(0);
    let before = parts_now(&seen);
    let recovered = wait_for(RECOVERY, "new parts after the faults", || {
        (parts_now(&seen) > before + 8).then_some(())
    });
    if recovered.is_err() {
        report.violations.push(format!(
            "the viewer node listed no new parts within {RECOVERY:?} after the faults healed"
        ));
    }
    eprintln!(
        "faults: seed {seed}: healed, stream advancing after {:?}",
        healed.elapsed()
    );
    let played = player
        .join()
        .map_err(|_| anyhow::anyhow!("player thread panicked"))?;
    stop.store(true, Ordering::SeqCst);
    let observed_until = Instant::now();
    observer
        .join()
        .map_err(|_| anyhow::anyhow!("observer thread panicked"))??;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    health
        .join()
        .map_err(|_| anyhow::anyhow!("health thread panicked"))??;
    match main_generation(&http, &nodes[viewer]) {
        Ok(g) if g == generation => {}
        Ok(g) => report.violations.push(format!(
            "the stream was ended: generation {generation} at the start, {g} at the end"
        )),
        Err(e) => report
            .violations
            .push(format!("no stream status at the end: {e:#}")),
    }
    match played {
        Ok(p) => {
            if !p.ok {
                report
                    .violations
                    .push(format!("hls.js on the viewer node stopped: {}", p.report));
            }
            report.playback = Some(p.report);
        }
        Err(e) => report.violations.push(format!("hls.js did not run: {e:#}")),
    }

    // No acknowledged write lost: every channel is there, as every node answers.
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    report.writes_acked = acked.len();
    for (i, node) in nodes.iter().enumerate() {
        let (status, list) = node.api(
            &http,
            reqwest::Method::GET,
            "/api/v1/channels",
            serde_json::Value::Null,
        )?;
        let text = list.to_string();
        for name in acked.iter().filter(|n| !text.contains(&format!("\"{n}\""))) {
            report.violations.push(format!(
                "node {i} (status {status}) lost the acknowledged channel {name}"
            ));
        }
    }

    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("observer lock poisoned"))?;
    report.urls = seen.objects.len();
    report.fetched = seen.fetched.len();
    report.violations.extend(seen.violations.iter().cloned());
    let ends: Vec<Instant> = spans
        .iter()
        .skip(1)
        .map(|(_, started)| *started)
        .chain([observed_until])
        .collect();
    for ((fault, started), until) in spans.into_iter().zip(ends) {
        let stall = stall_between(&seen.new_parts, started, until);
        if stall > STALL_LIMIT {
            report.violations.push(format!(
                "{} on node {} stalled the viewer node {stall:?} (limit {STALL_LIMIT:?})",
                fault.kind.name(),
                fault.node
            ));
        }
        report.outcomes.push(FaultOutcome { fault, stall });
    }
    drop(encoder);
    Ok(report)
}

/// The longest gap between new parts on the viewer node that ends after `from` and
/// starts before `until` (the next fault): what this fault cost a viewer. A gap still
/// open at the end counts up to `until`.
fn stall_between(parts: &[Instant], from: Instant, until: Instant) -> Duration {
    let start = parts.iter().rposition(|t| *t <= from).unwrap_or(0);
    let mut longest = Duration::ZERO;
    let mut last = parts.get(start).copied().unwrap_or(from);
    for t in parts[start..].iter().skip(1) {
        if last >= until {
            return longest;
        }
        longest = longest.max(t.duration_since(last));
        last = *t;
    }
    if last < until {
        longest = longest.max(
            until
                .saturating_duration_since(last)
                .min(Duration::from_secs(600)),
        );
    }
    longest
}

/// The number of `main`'s current generation, as `node` answers.
fn main_generation(http: &Http, node: &Server) -> Result<u64> {
    let (status, v) = node.api(
        http,
        reqwest::Method::GET,
        "/api/v1/channels/main/status",
        serde_json::Value::Null,
    )?;
    v["generation"]["number"]
        .as_u64()
        .with_context(|| format!("status {status}: {v}"))
}

/// Sends `signal` (`-STOP`, `-CONT`) to a node's process.
pub fn signal(node: &Server, signal: &str) -> Result<()> {
    let pid = node.pid().context("node not running")?;
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {signal} {pid} failed");
    Ok(())
}

/// The table of a run of seeds: invariants, and the viewer's stall per fault kind
/// (p50 / p99 / max).
pub fn print_table(reports: &[SeedReport]) {
    println!("\n| seed | faults | objects compared | fetches | writes acked | violations |");
    println!("|---:|---|---:|---:|---:|---|");
    for r in reports {
        let faults: Vec<String> = r
            .outcomes
            .iter()
            .map(|o| {
                format!(
                    "{}@{} {:.1}s",
                    o.fault.kind.name(),
                    o.fault.node,
                    o.fault.lasting.as_secs_f64()
                )
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.seed,
            faults.join(", "),
            r.urls,
            r.fetched,
            r.writes_acked,
            if r.violations.is_empty() {
                "none".to_string()
            } else {
                r.violations.join("; ")
            }
        );
    }
    println!("\n| fault | count | stall p50 | stall p99 | stall max |");
    println!("|---|---:|---:|---:|---:|");
    for kind in [FaultKind::Kill, FaultKind::Pause, FaultKind::Skew] {
        let mut stalls: Vec<f64> = reports
            .iter()
            .flat_map(|r| &r.outcomes)
            .filter(|o| o.fault.kind == kind)
            .map(|o| o.stall.as_secs_f64())
            .collect();
        if stalls.is_empty() {
            continue;
        }
        stalls.sort_by(f64::total_cmp);
        let at = |q: f64| stalls[((stalls.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {} | {} | {:.1} s | {:.1} s | {:.1} s |",
            kind.name(),
            stalls.len(),
            at(0.5),
            at(0.99),
            stalls[stalls.len() - 1]
        );
    }
}
