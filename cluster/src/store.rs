//! Raft storage in redb: the log (entries, vote, committed id, purge point) and the
//! state machine (the `State`, in memory, persisted as snapshots).
//!
//! ```text
//! openraft --append/truncate/purge/vote--> LogStore --redb commit (fsync)--> LogFlushed
//! openraft --apply(entries)--> StateMachine: State::apply per command (in memory)
//!          --build_snapshot--> whole State serialized into redb; restart = snapshot + log replay
//! ```
//! The state machine is not written per command: after a restart, openraft replays the
//! committed log after the last snapshot (the committed id is stored with the log), and
//! it never purges the log past a snapshot. One redb `Database` per node.

// openraft's storage traits fix the error type; the helpers here return the same one.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::{Applied, Command, Refusal};
use crate::state::State;

pub type NodeId = u64;

/// What a committed command answered; blank and membership entries answer `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response(pub Option<Result<Applied, Refusal>>);

openraft::declare_raft_types!(
    /// Sluice's Raft: commands in, answers out, nodes addressed by their cluster URL.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::read(&e).into()
}

fn write_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}

/// Opens (or creates) the node's database with every table present.
pub fn open_database(path: &Path) -> Result<Arc<Database>, redb::Error> {
    let db = Database::create(path)?;
    let tx = db.begin_write()?;
    {
        tx.open_table(LOGS)?;
        tx.open_table(LOG_META)?;
        tx.open_table(SNAPSHOT)?;
    }
    tx.commit()?;
    Ok(Arc::new(db))
}

fn get_json<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    key: &str,
) -> StorageResult<Option<T>> {
    let tx = db.begin_read().map_err(read_err)?;
    let t = tx.open_table(table).map_err(read_err)?;
    match t.get(key).map_err(read_err)? {
        None => Ok(None),
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
    }
}

fn put_json<T: Serialize>(
    db: &Database,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> StorageResult<()> {
    let bytes = serde_json::to_vec(value).map_err(write_err)?;
    let tx = db.begin_write().map_err(write_err)?;
    {
        let mut t = tx.open_table(table).map_err(write_err)?;
        t.insert(key, bytes.as_slice()).map_err(write_err)?;
    }
    tx.commit().map_err(write_err)
}

/// The Raft log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOGS).map_err(read_err)?;
        let mut out = Vec::new();
        for item in t.range(range).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = get_json(&self.db, LOG_META, "last_purged")?;
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOGS).map_err(read_err)?;
        let last = match t.last().map_err(read_err)? {
            None => None,
            Some((_, v)) => Some(
                serde_json::from_slice::<Entry<TypeConfig>>(v.value())
                    .map_err(read_err)?
                    .log_id,
            ),
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        put_json(&self.db, LOG_META, "vote", vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        get_json(&self.db, LOG_META, "vote")
    }

    /// The committed id only saves replay work after a restart (Raft finds commitment
    /// again without it), so it rides along with the next durable append instead of
    /// costing an fsync of its own on every commit.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&committed).map_err(write_err)?;
        let mut tx = self.db.begin_write().map_err(write_err)?;
        tx.set_durability(redb::Durability::None)
            .map_err(write_err)?;
        {
            let mut t = tx.open_table(LOG_META).map_err(write_err)?;
            t.insert("committed", bytes.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(get_json::<Option<LogId<NodeId>>>(&self.db, LOG_META, "committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(LOGS).map_err(write_err)?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(write_err)?;
                t.insert(e.log_id.index, bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        // redb commits are durable (fsync) by default: only now is the append flushed.
        tx.commit().map_err(write_err)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(LOGS).map_err(write_err)?;
            t.retain_in(log_id.index.., |_, _| false)
                .map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&log_id).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut meta = tx.open_table(LOG_META).map_err(write_err)?;
            meta.insert("last_purged", bytes.as_slice())
                .map_err(write_err)?;
            let mut t = tx.open_table(LOGS).map_err(write_err)?;
            t.retain_in(..=log_id.index, |_, _| false)
                .map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}

/// The applied state, as a snapshot holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MachineState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: State,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine: `State` in memory, readable by the rest of the node.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<MachineState>>,
    snapshots_built: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachine {
    /// Opens the state machine at its last snapshot; openraft replays the log after it.
    pub fn open(db: Arc<Database>) -> StorageResult<Self> {
        let applied = match get_json::<StoredSnapshot>(&db, SNAPSHOT, "current")? {
            Some(s) => serde_json::from_slice(&s.data).map_err(read_err)?,
            None => MachineState::default(),
        };
        Ok(Self {
            db,
            applied: Arc::new(RwLock::new(applied)),
            snapshots_built: Arc::default(),
        })
    }

    /// Reads the local replica's state (may lag the leader; see the node's linearizable read).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let guard = self.applied.read().unwrap_or_else(PoisonError::into_inner);
        f(&guard.state)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, last_applied, membership) = {
            let guard = self.applied.read().unwrap_or_else(PoisonError::into_inner);
            let data = serde_json::to_vec(&*guard).map_err(read_err)?;
            (data, guard.last_applied, guard.membership.clone())
        };
        let n = self
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        put_json(
            &self.db,
            SNAPSHOT,
            "current",
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let guard = self.applied.read().unwrap_or_else(PoisonError::into_inner);
        Ok((guard.last_applied, guard.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut guard = self.applied.write().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for entry in entries {
            guard.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Response(None),
                EntryPayload::Normal(cmd) => Response(Some(guard.state.apply(&cmd))),
                EntryPayload::Membership(m) => {
                    guard.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response(None)
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let mut applied: MachineState = serde_json::from_slice(&data).map_err(read_err)?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        put_json(
            &self.db,
            SNAPSHOT,
            "current",
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        *self.applied.write().unwrap_or_else(PoisonError::into_inner) = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = get_json(&self.db, SNAPSHOT, "current")?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().map_err(write_err)?;
            let db = open_database(&dir.path().join("raft.redb")).map_err(write_err)?;
            Ok((dir, LogStore::new(db.clone()), StateMachine::open(db)?))
        }
    }

    /// openraft's own conformance suite for log and state machine storage.
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
        Suite::test_all(Builder)
    }

    async fn start(path: &Path) -> (openraft::Raft<TypeConfig>, StateMachine) {
        let config = openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        };
        let config = Arc::new(config.validate().expect("valid config"));
        let db = open_database(path).expect("database");
        let sm = StateMachine::open(db.clone()).expect("state machine");
        // A one-node cluster never calls a peer.
        let net = crate::network::HttpNetwork::new(1, Arc::from("secret"), Arc::default())
            .expect("client");
        let raft = openraft::Raft::new(1, config, net, LogStore::new(db), sm.clone())
            .await
            .expect("raft");
        (raft, sm)
    }

    fn create(slug: &str) -> Command {
        Command {
            at_ms: 1,
            op: crate::command::Op::CreateChannel {
                slug: slug.into(),
                title: String::new(),
                visibility: Default::default(),
                ingest: crate::model::Ingest::Push,
                ll_hls: Default::default(),
                recording: false,
                retention: Default::default(),
                placement: Default::default(),
                srt_passphrase: None,
                first_key: None,
            },
            request: None,
        }
    }

    /// Committed commands survive a restart: from the snapshot, and from the log after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_node_has_every_committed_command() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("raft.redb");
        {
            let (raft, _) = start(&path).await;
            let members = std::collections::BTreeMap::from([(1, BasicNode::new("local"))]);
            raft.initialize(members).await.expect("initialize");
            raft.wait(Some(std::time::Duration::from_secs(5)))
                .current_leader(1, "leader")
                .await
                .expect("elected");
            let answer = raft
                .client_write(create("before-snapshot"))
                .await
                .expect("write");
            assert_eq!(
                answer.data,
                Response(Some(Ok(Applied::ChannelCreated { id: 1 })))
            );
            raft.trigger().snapshot().await.expect("snapshot");
            raft.wait(Some(std::time::Duration::from_secs(5)))
                .snapshot(answer.log_id, "snapshot built")
                .await
                .expect("snapshot");
            let refused = raft
                .client_write(create("before-snapshot"))
                .await
                .expect("write");
            assert!(matches!(
                refused.data,
                Response(Some(Err(Refusal::AlreadyExists { .. })))
            ));
            raft.client_write(create("after-snapshot"))
                .await
                .expect("write");
            raft.shutdown().await.expect("shutdown");
        }
        // The database is released when the last handle goes; give the tasks a moment.
        let mut reopened = None;
        for _ in 0..50 {
            if let Ok(db) = Database::create(&path) {
                reopened = Some(db);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(reopened.expect("database released after shutdown"));
        let (raft, sm) = start(&path).await;
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .current_leader(1, "leader again")
            .await
            .expect("elected after restart");
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .metrics(
                |m| m.last_applied.map(|l| l.index) >= Some(4),
                "log replayed",
            )
            .await
            .expect("replayed");
        let slugs = sm.read(|s| {
            s.channels
                .values()
                .map(|c| c.slug.clone())
                .collect::<Vec<_>>()
        });
        assert_eq!(slugs, vec!["before-snapshot", "after-snapshot"]);
        raft.shutdown().await.expect("shutdown");
    }
}
