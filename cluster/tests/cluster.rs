//! In-process clusters over real HTTP on loopback, with faults injected in the network
//! layer (`tc netem` is not available): forming, leader loss, partitions, restarts,
//! snapshots to a lagging node, and the cluster secret.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use sluice_cluster::command::{Applied, Command, Op, Refusal};
use sluice_cluster::handle::{ClusterError, ClusterHandle};
use sluice_cluster::model::{Ingest, Placement, Visibility};
use sluice_cluster::network::{raft_router, Faults, HttpNetwork};
use sluice_cluster::store::{open_database, LogStore, NodeId, Response, StateMachine, TypeConfig};

const SECRET: &str = "test-cluster-secret";
const WAIT: Duration = Duration::from_secs(10);

struct TestNode {
    id: NodeId,
    addr: String,
    handle: ClusterHandle,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    server: tokio::task::JoinHandle<()>,
}

struct TestCluster {
    dir: tempfile::TempDir,
    faults: Arc<Faults>,
    nodes: BTreeMap<NodeId, TestNode>,
    config: Arc<Config>,
}

fn config(snapshot_every: u64) -> Arc<Config> {
    let c = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        snapshot_max_chunk_size: sluice_cluster::network::SNAPSHOT_CHUNK_BYTES,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(c.validate().expect("valid config"))
}

fn db_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.redb"))
}

impl TestCluster {
    async fn new(snapshot_every: u64) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            faults: Arc::new(Faults::default()),
            nodes: BTreeMap::new(),
            config: config(snapshot_every),
        }
    }

    /// Starts node `id` on a fresh port (or its old one) from its redb file.
    async fn start(&mut self, id: NodeId, addr: Option<String>) {
        let listener = match &addr {
            Some(a) => bind_retry(a.trim_start_matches("http://")).await,
            None => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        };
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let db = open_retry(&db_path(self.dir.path(), id)).await;
        let sm = StateMachine::open(db.clone()).expect("state machine");
        let net = HttpNetwork::new(id, Arc::from(SECRET), self.faults.clone()).expect("client");
        let raft = Raft::new(id, self.config.clone(), net, LogStore::new(db), sm.clone())
            .await
            .expect("raft");
        let handle =
            ClusterHandle::new(id, raft.clone(), sm.clone(), Arc::from(SECRET)).expect("handle");
        let app = raft_router(raft.clone(), Arc::from(SECRET)).merge(handle.router());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.nodes.insert(
            id,
            TestNode {
                id,
                addr,
                handle,
                raft,
                sm,
                server,
            },
        );
    }

    /// Stops a node as a crash would: its server and Raft go, its redb file stays.
    async fn kill(&mut self, id: NodeId) -> String {
        let node = self.nodes.remove(&id).expect("node to kill");
        node.server.abort();
        let _ = node.server.await;
        node.raft.shutdown().await.expect("shutdown");
        node.addr
    }

    async fn form(&mut self, n: NodeId) {
        for id in 1..=n {
            self.start(id, None).await;
        }
        let first = &self.nodes[&1];
        first
            .raft
            .initialize(BTreeMap::from([(1, BasicNode::new(&first.addr))]))
            .await
            .expect("initialize");
        self.wait_leader(&[1]).await;
        for id in 2..=n {
            let addr = self.nodes[&id].addr.clone();
            first
                .raft
                .add_learner(id, BasicNode::new(addr), true)
                .await
                .expect("learner");
        }
        first
            .raft
            .change_membership((1..=n).collect::<BTreeSet<_>>(), false)
            .await
            .expect("membership");
    }

    /// The leader all `among` agree on.
    async fn wait_leader(&self, among: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leaders: BTreeSet<Option<NodeId>> = among
                .iter()
                .map(|id| self.nodes[id].raft.metrics().borrow().current_leader)
                .collect();
            if let (1, Some(Some(leader))) = (leaders.len(), leaders.first()) {
                if among.contains(leader) {
                    return *leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among {among:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn write(&self, leader: NodeId, cmd: Command) -> Result<Response, String> {
        match tokio::time::timeout(
            Duration::from_secs(3),
            self.nodes[&leader].raft.client_write(cmd),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn wait_channels(&self, id: NodeId, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.nodes[&id].sm.read(|s| s.channels.len()) < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} never had {count} channels"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn slugs(&self, id: NodeId) -> BTreeSet<String> {
        self.nodes[&id]
            .sm
            .read(|s| s.channels.values().map(|c| c.slug.clone()).collect())
    }
}

async fn bind_retry(addr: &str) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not bind {addr} again");
}

/// A killed node's tasks release its redb file shortly after shutdown.
async fn open_retry(path: &Path) -> Arc<redb::Database> {
    for _ in 0..50 {
        if let Ok(db) = open_database(path) {
            return db;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not open {}", path.display());
}

fn create(slug: &str) -> Command {
    Command {
        at_ms: 1,
        op: Op::CreateChannel {
            slug: slug.into(),
            title: String::new(),
            visibility: Visibility::Public,
            ingest: Ingest::Push,
            ll_hls: Default::default(),
            recording: false,
            retention: Default::default(),
            placement: Placement::Any,
            srt_passphrase: None,
            first_key: None,
        },
        request: None,
    }
}

fn created(r: &Response) -> bool {
    matches!(r, Response(Some(Ok(Applied::ChannelCreated { .. }))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_and_replicate() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    assert!(created(
        &c.write(leader, create("news")).await.expect("write")
    ));
    for id in 1..=3 {
        c.wait_channels(id, 1).await;
        assert_eq!(c.slugs(id), BTreeSet::from(["news".to_string()]));
    }
    let voters: Vec<NodeId> = c.nodes[&1]
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let mut acked = BTreeSet::new();
    for i in 0..20 {
        let slug = format!("ch-{i}");
        if c.write(leader, create(&slug))
            .await
            .is_ok_and(|r| created(&r))
        {
            acked.insert(slug);
        }
    }
    assert_eq!(acked.len(), 20);
    c.kill(leader).await;
    let survivors: Vec<NodeId> = c.nodes.keys().copied().collect();
    let new_leader = c.wait_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    for id in &survivors {
        c.wait_channels(*id, 20).await;
        assert!(
            c.slugs(*id).is_superset(&acked),
            "node {id} lost an acknowledged write"
        );
    }
    assert!(created(
        &c.write(new_leader, create("after"))
            .await
            .expect("write after failover")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_cannot_commit_and_catches_up_after_healing() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let old = c.wait_leader(&[1, 2, 3]).await;
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != old).collect();
    c.faults.isolate(old, &others);
    // The old leader alone cannot commit.
    assert!(c.write(old, create("minority")).await.is_err());
    let new_leader = c.wait_leader(&others).await;
    assert!(created(
        &c.write(new_leader, create("majority"))
            .await
            .expect("majority write")
    ));
    c.faults.heal();
    c.wait_channels(old, 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.slugs(old) != BTreeSet::from(["majority".to_string()]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old leader did not catch up: {:?}",
            c.slugs(old)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &others {
        assert!(!c.slugs(*id).contains("minority"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_and_a_far_behind_one_gets_a_snapshot() {
    // Snapshot every 10 entries and keep no log behind it: a node that missed more
    // than that can only catch up from a snapshot.
    let mut c = TestCluster::new(10).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert!(created(
        &c.write(leader, create("first")).await.expect("write")
    ));
    c.wait_channels(follower, 1).await;
    let addr = c.kill(follower).await;
    for i in 0..40 {
        c.write(leader, create(&format!("while-down-{i}")))
            .await
            .expect("write while down");
    }
    c.nodes[&leader]
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > 5),
            "the leader purges its log behind a snapshot",
        )
        .await
        .expect("log purged");
    c.start(follower, Some(addr)).await;
    c.wait_channels(follower, 41).await;
    let snapshot = c.nodes[&follower].raft.metrics().borrow().snapshot;
    assert!(
        snapshot.is_some(),
        "the restarted node caught up from a snapshot"
    );
    assert_eq!(c.slugs(follower), c.slugs(leader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpc_without_the_cluster_secret_is_refused() {
    let mut c = TestCluster::new(1000).await;
    c.form(1).await;
    let url = format!("{}/raft/vote", c.nodes[&1].addr);
    let client = reqwest::Client::new();
    let body =
        r#"{"vote":{"leader_id":{"term":9,"node_id":2},"committed":false},"last_log_id":null}"#;
    for auth in [None, Some("Bearer wrong")] {
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let status = req.send().await.expect("request").status();
        assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "auth {auth:?}");
    }
    // A snapshot chunk as large as a node sends fits the body limit (refused as bad
    // JSON, not as too large).
    let chunk = vec![b'7'; 4 * sluice_cluster::network::SNAPSHOT_CHUNK_BYTES as usize];
    let status = client
        .post(format!("{}/raft/snapshot", c.nodes[&1].addr))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body(chunk)
        .send()
        .await
        .expect("request")
        .status();
    assert_ne!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    assert!(status.is_client_error(), "{status}");
    // The node was not disturbed: still leader in term 1.
    assert_eq!(c.nodes[&1].raft.metrics().borrow().current_term, 1);
    let _ = c.nodes[&1].id;
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes through whichever node `via` believes leads (a minority side fails).
async fn write_via(c: &TestCluster, via: NodeId, cmd: Command) -> Option<Response> {
    let leader = c.nodes[&via].raft.metrics().borrow().current_leader?;
    let node = c.nodes.get(&leader)?;
    match tokio::time::timeout(Duration::from_secs(2), node.raft.client_write(cmd)).await {
        Ok(Ok(r)) => Some(r.data),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_partitions_and_concurrent_claims_keep_the_invariants() {
    // SLUICE_SEED replays a run; the seed is printed either way.
    let seed = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x5eed)
        });
    println!("random_partitions seed: SLUICE_SEED={seed}");
    let mut rng = Rng(seed);
    let mut c = TestCluster::new(50).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    for node in 1..=3 {
        let register = Command {
            at_ms: 0,
            op: Op::RegisterNode {
                node,
                name: format!("node-{node}"),
                urls: Default::default(),
                lease_ttl_ms: 120_000,
            },
            request: None,
        };
        c.write(leader, register).await.expect("register");
    }
    let channels = ["a", "b", "c"];
    for slug in channels {
        c.write(leader, create(slug)).await.expect("channel");
    }

    let mut acked_claims: Vec<(String, u64)> = Vec::new();
    let mut acked_ends = 0;
    for round in 0..30u64 {
        match rng.below(4) {
            0 => {
                let node = 1 + rng.below(3);
                let others: Vec<NodeId> = (1..=3).filter(|n| *n != node).collect();
                c.faults.isolate(node, &others);
            }
            1 => c.faults.heal(),
            _ => {}
        }
        // Two nodes claim the same channel at once, each through the leader it sees.
        let slug = channels[rng.below(3) as usize];
        let (x, y) = (1 + rng.below(3), 1 + rng.below(3));
        let claim_by = |node: NodeId| Command {
            at_ms: 1_000 + round as i64,
            op: Op::ClaimChannel {
                channel: slug.into(),
                node,
            },
            request: None,
        };
        let (rx, ry) = tokio::join!(write_via(&c, x, claim_by(x)), write_via(&c, y, claim_by(y)));
        // One node may win twice (an origin may claim its own generation again); two
        // nodes never both win.
        let wins: Vec<(NodeId, u64)> = [(x, rx), (y, ry)]
            .into_iter()
            .filter_map(|(node, r)| match r {
                Some(Response(Some(Ok(Applied::Claimed { number, .. })))) => Some((node, number)),
                _ => None,
            })
            .collect();
        assert!(
            wins.iter().all(|w| w.0 == wins[0].0),
            "seed {seed}: claims of {slug} by two nodes won in round {round}: {wins:?}"
        );
        let mut numbers: Vec<u64> = wins.into_iter().map(|w| w.1).collect();
        numbers.dedup();
        acked_claims.extend(numbers.into_iter().map(|n| (slug.to_string(), n)));
        // Sometimes the stream ends, so the channel can be claimed again.
        if rng.below(2) == 0 {
            let state_gen = c.nodes[&x].sm.read(|s| {
                s.channel_by_slug(slug)
                    .and_then(|ch| s.active_generation(ch.id))
                    .map(|g| g.number)
            });
            if let Some(generation) = state_gen {
                let end = Command {
                    at_ms: 1_000 + round as i64,
                    op: Op::EndGeneration {
                        channel: slug.into(),
                        generation,
                        failed: false,
                    },
                    request: None,
                };
                if let Some(Response(Some(Ok(_)))) = write_via(&c, x, end).await {
                    acked_ends += 1;
                }
            }
        }
    }
    c.faults.heal();
    let leader = c.wait_leader(&[1, 2, 3]).await;
    // A write through the healed leader makes every node catch up to the same log.
    c.write(leader, create("final")).await.expect("final write");
    for id in 1..=3 {
        c.wait_channels(id, 4).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let states: Vec<_> = (1..=3)
            .map(|id| c.nodes[&id].sm.read(|s| s.clone()))
            .collect();
        if states.windows(2).all(|w| w[0] == w[1]) {
            let s = &states[0];
            for (slug, number) in &acked_claims {
                let ch = s.channel_by_slug(slug).expect("channel");
                assert!(
                    s.generation(ch.id, *number).is_some(),
                    "seed {seed}: acknowledged claim {slug}#{number} lost"
                );
            }
            for ch in s.channels.values() {
                let active = s
                    .all_generations()
                    .filter(|g| g.channel == ch.id && g.state.is_active())
                    .count();
                assert!(
                    active <= 1,
                    "seed {seed}: {active} active generations on {}",
                    ch.slug
                );
            }
            println!(
                "{} claims and {acked_ends} ends acknowledged",
                acked_claims.len()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: replicas did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_through_any_member_and_followers_forward_proposals() {
    let mut c = TestCluster::new(1000).await;
    for id in 1..=3 {
        c.start(id, None).await;
    }
    let first = &c.nodes[&1];
    first
        .raft
        .initialize(BTreeMap::from([(1, BasicNode::new(&first.addr))]))
        .await
        .expect("initialize");
    c.wait_leader(&[1]).await;
    // Node 2 joins through the leader, node 3 through node 2, a follower.
    c.nodes[&2]
        .handle
        .join(&c.nodes[&1].addr, &c.nodes[&2].addr)
        .await
        .expect("join 2");
    c.nodes[&3]
        .handle
        .join(&c.nodes[&2].addr, &c.nodes[&3].addr)
        .await
        .expect("join 3");
    c.wait_leader(&[1, 2, 3]).await;
    let voters: Vec<NodeId> = c.nodes[&3]
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);

    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let h = &c.nodes[&follower].handle;
    assert_eq!(
        h.propose(create("via-follower")).await.expect("propose"),
        Applied::ChannelCreated { id: 1 }
    );
    // A refusal comes back typed through the forwarding.
    match h.propose(create("via-follower")).await {
        Err(ClusterError::Refused(Refusal::AlreadyExists { .. })) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_every_acknowledged_write() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // Slow the leader's replication so a plain local read on the follower would lag.
    c.faults.delay(leader, Duration::from_millis(30));
    for i in 0..10 {
        let slug = format!("ch-{i}");
        c.nodes[&leader]
            .handle
            .propose(create(&slug))
            .await
            .expect("write");
        let seen = c.nodes[&follower]
            .handle
            .read_linearizable(|s| s.channel_by_slug(&slug).is_some())
            .await
            .expect("read");
        assert!(seen, "follower read missed {slug}");
    }
}

/// A follower waiting for its own copy of the state to show a write wakes when the
/// entry is applied there, and gives up at its deadline when the condition never holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_the_local_state_ends_when_it_applies_or_at_the_deadline() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let h = c.nodes[&follower].handle.clone();
    let waiting = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        h.wait_local(deadline, Duration::from_secs(60), |s| {
            s.channel_by_slug("awaited").map(|ch| ch.id)
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    c.nodes[&leader]
        .handle
        .propose(create("awaited"))
        .await
        .expect("propose");
    let seen = waiting.await.expect("task");
    assert!(seen.is_some(), "the follower never saw the channel");
    // Woken by the apply, not by its 60 s poll.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let h = &c.nodes[&follower].handle;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let never = h
        .wait_local(deadline, Duration::from_millis(50), |s| {
            s.channel_by_slug("never").map(|_| ())
        })
        .await;
    assert!(never.is_none());
    assert!(tokio::time::Instant::now() >= deadline);
}

/// A command sent again with its request id, through another node (its first answer
/// lost, as when a forward times out), is applied once: both answers are the first
/// one's, and the channel exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_through_another_node_is_applied_once() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let cmd = Command {
        request: Some(0x5eed),
        ..create("twice")
    };
    let first = c.nodes[&follower]
        .handle
        .propose(cmd.clone())
        .await
        .expect("created");
    let again = c.nodes[&leader]
        .handle
        .propose(cmd)
        .await
        .expect("answered");
    assert_eq!(again, first, "the retry answered otherwise");
    let outcome = c.nodes[&follower]
        .handle
        .request_outcome(0x5eed)
        .await
        .expect("read");
    assert_eq!(outcome, Some(Ok(first)));
    let count = c.nodes[&leader]
        .handle
        .read_local(|s| s.channels.values().filter(|ch| ch.slug == "twice").count());
    assert_eq!(count, 1);
}

/// A leader cut off from the majority cannot commit: a proposal through it is given
/// up at its deadline with a timeout (the API answers 503), instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_to_a_leader_without_a_majority_ends_at_its_deadline() {
    let mut c = TestCluster::new(1000).await;
    c.form(3).await;
    let old = c.wait_leader(&[1, 2, 3]).await;
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != old).collect();
    c.faults.isolate(old, &others);
    let started = std::time::Instant::now();
    let got = c.nodes[&old]
        .handle
        .propose_within(create("minority"), Duration::from_secs(1))
        .await;
    assert!(
        matches!(got, Err(ClusterError::Timeout(_))),
        "{got:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    c.faults.heal();
}
