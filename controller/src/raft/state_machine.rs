//! The replicated state machine: committed entries applied to the in-memory
//! [`ClusterState`], snapshots of it persisted in sled, and the [`StateHandle`] through
//! which the rest of the controller reads the applied state.
//!
//! The state lives in memory only; what makes it durable is the log plus the latest
//! snapshot. On open the state machine loads the persisted snapshot, and openraft replays
//! the (committed) log after it.
//!
//! Snapshot bytes are the JSON of [`Applied`] with the format it is written in:
//! `{format, last_applied, membership, state}` ([`encode_snapshot`], [`decode_snapshot`]).
//! A shoal refuses a snapshot of a newer format than it reads, saying so, rather than
//! misreading it; snapshots written before formats were numbered are format 1.

use std::io::Cursor;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context;
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::storage_error::{storage_err, StorageResult};
use super::{trees, RaftNodeId, TypeConfig};
use crate::state::{ClusterState, CommandResult};

const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";

/// Everything the state machine holds; also the content of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<RaftNodeId>>,
    pub membership: StoredMembership<RaftNodeId, BasicNode>,
    pub state: ClusterState,
}

impl Applied {
    /// Applies one committed entry (a command, a membership change or a blank).
    pub fn apply_entry(&mut self, entry: Entry<TypeConfig>) -> CommandResult {
        self.apply_entry_recorded(entry, None)
    }

    /// [`Applied::apply_entry`], telling `events` (when given) of each command, so
    /// `shoal events` learns what it changed.
    pub fn apply_entry_recorded(
        &mut self,
        entry: Entry<TypeConfig>,
        events: Option<&mut crate::events::Recorder>,
    ) -> CommandResult {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => CommandResult::default(),
            EntryPayload::Normal(cmd) => match events {
                Some(events) => events.apply(entry.log_id.index, &mut self.state, &cmd),
                None => self.state.apply(&cmd),
            },
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                CommandResult::default()
            }
        }
    }
}

/// The snapshot format this shoal writes, and the newest it reads. Bump it when a
/// snapshot this version writes could be misread by an older one (a field whose absence
/// an older version would take for something else), and keep a golden snapshot of every
/// format in `controller/tests/fixtures/state/` (`tests/state_formats.rs` loads them).
///
/// - 1: the state before formats were numbered, and every state without the below.
/// - 2: a state with a chosen address pool (`ClusterState::pool`), which format 1
///   readers would ignore and then give out addresses of the default pool.
pub const SNAPSHOT_FORMAT: u32 = 2;

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    #[serde(flatten)]
    applied: &'a Applied,
}

/// The bytes of a snapshot of `applied`, in the oldest format that holds what it
/// stores (so an older shoal reads it unless that would misread it).
pub fn encode_snapshot(applied: &Applied) -> Result<Vec<u8>, String> {
    let format = if applied.state.pool.is_some() { 2 } else { 1 };
    serde_json::to_vec(&SnapshotOut { format, applied })
        .map_err(|e| format!("encode snapshot: {e}"))
}

/// The state in snapshot bytes, or why it cannot be read: a newer format than this
/// shoal reads, or bytes that do not parse.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Applied, String> {
    #[derive(Deserialize)]
    struct FormatOnly {
        #[serde(default)]
        format: Option<u32>,
    }
    // The format first: a newer snapshot may not parse as this version's state at all.
    let format = serde_json::from_slice::<FormatOnly>(bytes)
        .map_err(|e| format!("it does not parse: {e}"))?
        .format
        .unwrap_or(1);
    if format > SNAPSHOT_FORMAT {
        return Err(format!(
            "it was written by a newer shoal (state format {format}; this shoal reads formats up to {SNAPSHOT_FORMAT}): run a shoal at least as new as the one that wrote it"
        ));
    }
    // `Applied` directly, not through `#[serde(flatten)]`: a flattened struct is read
    // from buffered content, where maps keyed by numbers (the membership's nodes) fail.
    // `format` is a field `Applied` ignores.
    serde_json::from_slice(bytes).map_err(|e| format!("its data does not parse: {e}"))
}

/// What the state machine and every [`StateHandle`] share.
struct Shared {
    applied: RwLock<Applied>,
    /// Last applied log index; bumped after every apply and snapshot install.
    applied_index: watch::Sender<u64>,
    /// The events derived from applied entries ([`crate::events`]).
    events: Arc<crate::events::EventLog>,
    /// Size of the last snapshot built, installed or loaded at start (`/metrics`).
    snapshot_bytes: AtomicU64,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A panic while applying would poison the lock; the data is still the last
        // consistent state openraft knows of (it stops on a failed apply), so read on.
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.applied.write().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, last_applied: Option<LogId<RaftNodeId>>) {
        self.applied_index
            .send_replace(last_applied.map_or(0, |l| l.index));
    }
}

/// A cheap, cloneable read handle on the applied cluster state.
///
/// Readers must not hold [`StateHandle::read`]'s guard across an `.await` (it blocks
/// applies); take [`StateHandle::snapshot`] for longer work.
#[derive(Clone)]
pub struct StateHandle {
    shared: Arc<Shared>,
}

/// Read access to the applied [`ClusterState`]; applies wait while it is held.
pub struct StateGuard<'a> {
    guard: RwLockReadGuard<'a, Applied>,
}

impl Deref for StateGuard<'_> {
    type Target = ClusterState;

    fn deref(&self) -> &ClusterState {
        &self.guard.state
    }
}

impl StateGuard<'_> {
    /// The log id of the last entry reflected in this state.
    pub fn last_applied(&self) -> Option<LogId<RaftNodeId>> {
        self.guard.last_applied
    }
}

impl StateHandle {
    /// Borrow the applied state (short reads only, never across an `.await`).
    pub fn read(&self) -> StateGuard<'_> {
        StateGuard {
            guard: self.shared.read(),
        }
    }

    /// A copy of the applied state, for work that takes time or crosses an `.await`.
    pub fn snapshot(&self) -> ClusterState {
        self.shared.read().state.clone()
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId<RaftNodeId>> {
        self.shared.read().last_applied
    }

    /// A copy of everything applied, with the membership: what a snapshot holds.
    pub fn applied(&self) -> Applied {
        self.shared.read().clone()
    }

    /// The last applied log index, changing after every apply: `changed().await` on it to
    /// wait for the state to move. (0 both before anything is applied and after the
    /// group's first entry, which is its initial membership.)
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    /// The events of the entries this controller applied, and its own (`shoal events`).
    pub fn events(&self) -> Arc<crate::events::EventLog> {
        self.shared.events.clone()
    }

    /// Bytes of the last snapshot this member built, installed or started from (0: none).
    pub fn snapshot_bytes(&self) -> u64 {
        self.shared.snapshot_bytes.load(Ordering::Relaxed)
    }
}

/// The latest snapshot in sled (`snapshots` tree: `meta` + `data`, written in one batch).
#[derive(Clone)]
struct SnapshotStore {
    db: sled::Db,
    tree: sled::Tree,
    dir: Arc<PathBuf>,
    /// Serializes "compare with the current snapshot and replace it": a snapshot built
    /// concurrently with an install must not overwrite a newer one.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Shared by every clone (snapshot builders run in tasks openraft does not join):
    /// when its count is zero, the state machine let go of sled.
    open: Arc<()>,
}

type Meta = SnapshotMeta<RaftNodeId, BasicNode>;

impl SnapshotStore {
    fn open(db: &sled::Db, dir: Arc<PathBuf>) -> anyhow::Result<SnapshotStore> {
        let tree = db
            .open_tree(trees::SNAPSHOTS)
            .with_context(|| format!("open the raft snapshots in {}", dir.display()))?;
        Ok(SnapshotStore {
            db: db.clone(),
            tree,
            dir,
            write_lock: Arc::default(),
            open: Arc::default(),
        })
    }

    /// The persisted snapshot, or an error saying what is wrong with it.
    fn load(&self) -> anyhow::Result<Option<(Meta, Vec<u8>)>> {
        let dir = self.dir.display();
        let meta = self
            .tree
            .get(KEY_META)
            .with_context(|| format!("read the raft snapshot in {dir}"))?;
        let data = self
            .tree
            .get(KEY_DATA)
            .with_context(|| format!("read the raft snapshot in {dir}"))?;
        match (meta, data) {
            (None, None) => Ok(None),
            (Some(meta), Some(data)) => {
                let meta: Meta = serde_json::from_slice(&meta).map_err(|e| {
                    anyhow::anyhow!(
                        "raft snapshot in {dir} is unreadable: its metadata does not parse: {e}"
                    )
                })?;
                Ok(Some((meta, data.to_vec())))
            }
            _ => anyhow::bail!(
                "raft snapshot in {dir} is incomplete: one of its metadata and data is missing"
            ),
        }
    }

    fn current(&self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let loaded = self.load().map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                &self.dir,
                format!("{e:#}"),
            )
        })?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }

    /// Persists `meta` + `data` as the current snapshot, unless the stored one is newer.
    /// Flushed before returning.
    async fn save(&self, meta: &Meta, data: &[u8]) -> StorageResult<bool> {
        let _guard = self.write_lock.lock().await;
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        if let Some((current, _)) = self
            .load()
            .map_err(|e| storage_err(subject(), ErrorVerb::Read, &self.dir, format!("{e:#}")))?
        {
            if current.last_log_id > meta.last_log_id {
                tracing::debug!(current = %current, offered = %meta, "keep the newer snapshot");
                return Ok(false);
            }
        }
        let meta_json = serde_json::to_vec(meta).map_err(|e| {
            storage_err(
                subject(),
                ErrorVerb::Write,
                &self.dir,
                format!("encode snapshot meta: {e}"),
            )
        })?;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_META, meta_json);
        batch.insert(KEY_DATA, data);
        self.tree.apply_batch(batch).map_err(|e| {
            storage_err(
                subject(),
                ErrorVerb::Write,
                &self.dir,
                format!("write snapshot: {e}"),
            )
        })?;
        self.db.flush_async().await.map_err(|e| {
            storage_err(
                subject(),
                ErrorVerb::Write,
                &self.dir,
                format!("flush snapshot: {e}"),
            )
        })?;
        Ok(true)
    }
}

/// sled-backed [`RaftStateMachine`] over [`ClusterState`].
pub struct StateMachine {
    shared: Arc<Shared>,
    /// Derives the events of each applied command into `shared.events`.
    recorder: crate::events::Recorder,
    snapshots: SnapshotStore,
    /// Makes snapshot ids unique within a process.
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachine {
    /// Opens the state machine of `data_dir` (its sled database is `db`) and restores the
    /// latest persisted snapshot, if any.
    pub fn open(db: &sled::Db, data_dir: &Path) -> anyhow::Result<StateMachine> {
        let dir = Arc::new(data_dir.to_path_buf());
        let snapshots = SnapshotStore::open(db, dir.clone())?;
        let mut snapshot_bytes = 0;
        let applied = match snapshots.load()? {
            None => Applied::default(),
            Some((meta, data)) => {
                snapshot_bytes = data.len() as u64;
                let payload: Applied = decode_snapshot(&data).map_err(|e| {
                    anyhow::anyhow!("raft snapshot in {} is unreadable: {e}", dir.display())
                })?;
                if payload.last_applied != meta.last_log_id {
                    anyhow::bail!(
                        "raft snapshot in {} is inconsistent: metadata says it ends at {:?}, data at {:?}",
                        dir.display(),
                        meta.last_log_id,
                        payload.last_applied
                    );
                }
                tracing::info!(snapshot = %meta, "restored state from snapshot");
                Applied {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                    state: payload.state,
                }
            }
        };
        let (applied_index, _) = watch::channel(applied.last_applied.map_or(0, |l| l.index));
        let events = Arc::new(crate::events::EventLog::default());
        Ok(StateMachine {
            recorder: crate::events::Recorder::new(events.clone()),
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                applied_index,
                events,
                snapshot_bytes: AtomicU64::new(snapshot_bytes),
            }),
            snapshots,
            snapshot_seq: Arc::default(),
        })
    }

    /// A handle that tells whether the state machine or a snapshot builder is still
    /// alive (and holds the sled database open).
    pub fn open_handle(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.snapshots.open)
    }

    /// A read handle on the applied state.
    pub fn handle(&self) -> StateHandle {
        StateHandle {
            shared: self.shared.clone(),
        }
    }
}

/// Builds a snapshot of the state as it is when `build_snapshot` runs (openraft runs it
/// beside the state machine, which may keep applying meanwhile).
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    snapshots: SnapshotStore,
    snapshot_seq: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let applied = self.shared.read();
            let data = encode_snapshot(&applied).map_err(|e| {
                storage_err(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Read,
                    &self.snapshots.dir,
                    e,
                )
            })?;
            let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &applied.last_applied {
                Some(last) => format!("{}-{}-{seq}", last.leader_id, last.index),
                None => format!("--{seq}"),
            };
            let meta = Meta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.snapshots.save(&meta, &data).await?;
        self.shared
            .snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        tracing::info!(snapshot = %meta, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<RaftNodeId>>,
        StoredMembership<RaftNodeId, BasicNode>,
    )> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let last = {
            let mut applied = self.shared.write();
            for entry in entries {
                replies.push(applied.apply_entry_recorded(entry, Some(&mut self.recorder)));
            }
            applied.last_applied
        };
        self.shared.publish(last);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let payload: Applied = decode_snapshot(&data).map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &self.snapshots.dir,
                format!("received snapshot cannot be installed: {e}"),
            )
        })?;
        self.snapshots.save(meta, &data).await?;
        self.shared
            .snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        {
            let mut applied = self.shared.write();
            *applied = Applied {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                state: payload.state,
            };
        }
        self.shared.publish(meta.last_log_id);
        tracing::info!(snapshot = %meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        self.snapshots.current()
    }
}
