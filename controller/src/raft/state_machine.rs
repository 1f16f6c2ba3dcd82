//! The replicated state machine: committed entries applied to the in-memory
//! [`ClusterState`], snapshots of it kept in files, and the [`StateHandle`] through which
//! the rest of the controller reads the applied state.
//!
//! The state lives in memory only; what makes it durable is the log plus the latest
//! snapshot. On open the state machine loads the persisted snapshot, and openraft replays
//! the (committed) log after it.
//!
//! Snapshots are files, read and written away from the async threads: a build encodes the
//! state straight to a file (under the state's read lock for the encode only, not for
//! flushing it to disk and recording it); openraft sends the current one to a follower
//! by reading its file in chunks ([`SnapshotFile`]), and the follower writes them to a
//! temp file, then decodes and installs that. Where the files are and how one replaces
//! another: `snapshot_store`.
//!
//! Snapshot bytes are the JSON of [`Applied`] with the format it is written in:
//! `{format, last_applied, membership, state}` ([`encode_snapshot`], [`decode_snapshot`]
//! and their streamed forms [`encode_snapshot_to`], [`decode_snapshot_from`]). A shoal
//! refuses a snapshot of a newer format than it reads, saying so, rather than misreading
//! it; snapshots written before formats were numbered are format 1.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use super::snapshot_file::SnapshotFile;
pub use super::snapshot_format::{
    decode_snapshot, decode_snapshot_from, encode_snapshot, encode_snapshot_to, SNAPSHOT_FORMAT,
};
use super::snapshot_store::{self, Meta, SnapshotStore, Stored};
use super::storage_error::{storage_err, StorageResult};
use super::{RaftNodeId, TypeConfig};
use crate::state::{ClusterState, CommandResult};

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

/// sled-backed [`RaftStateMachine`] over [`ClusterState`].
pub struct StateMachine {
    shared: Arc<Shared>,
    /// Derives the events of each applied command into `shared.events`.
    recorder: crate::events::Recorder,
    snapshots: SnapshotStore,
    /// Makes snapshot ids unique within a process.
    snapshot_seq: Arc<AtomicU64>,
    /// The temp file of the snapshot being received: removed when openraft begins
    /// receiving another instead (it then drops this one's handle unfinished).
    incoming: Option<PathBuf>,
}

impl StateMachine {
    /// Opens the state machine of `data_dir` (its sled database is `db`) and restores the
    /// latest persisted snapshot, if any. Blocking.
    pub fn open(db: &sled::Db, data_dir: &Path) -> anyhow::Result<StateMachine> {
        let snapshots = SnapshotStore::open(db, Arc::new(data_dir.to_path_buf()))?;
        let mut snapshot_bytes = 0;
        let applied = match snapshots.load()? {
            None => Applied::default(),
            Some((meta, stored)) => {
                let (payload, bytes, place) = load(stored, data_dir)?;
                snapshot_bytes = bytes;
                if payload.last_applied != meta.last_log_id {
                    anyhow::bail!(
                        "raft snapshot {place} is inconsistent: metadata says it ends at {:?}, data at {:?}",
                        meta.last_log_id,
                        payload.last_applied
                    );
                }
                tracing::info!(snapshot = %meta, bytes, "restored state from snapshot");
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
            incoming: None,
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

/// The state in a stored snapshot, its size, and where it is (for errors). Blocking.
fn load(stored: Stored, data_dir: &Path) -> anyhow::Result<(Applied, u64, String)> {
    match stored {
        Stored::File(path) => {
            let place = path.display().to_string();
            let file = std::fs::File::open(&path)
                .map_err(|e| anyhow::anyhow!("open raft snapshot file {place}: {e}"))?;
            let (payload, bytes) = snapshot_store::read_snapshot(file, &path)
                .map_err(|e| anyhow::anyhow!("raft snapshot {place} is unreadable: {e}"))?;
            Ok((payload, bytes, place))
        }
        Stored::Sled(data) => {
            let place = format!("in {} (kept in sled)", data_dir.display());
            let payload = decode_snapshot(&data)
                .map_err(|e| anyhow::anyhow!("raft snapshot {place} is unreadable: {e}"))?;
            Ok((payload, data.len() as u64, place))
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
        let started = Instant::now();
        let dir = self.snapshots.dir.clone();
        let temp = self.snapshots.temp_path("build");
        let (shared, path) = (self.shared.clone(), temp.clone());
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        // The state is encoded straight to the file, under its read lock: copying it to
        // encode the copy unlocked would hold the lock as long or longer (a copy of a
        // large state costs as much as its encode, and its memory: `cargo bench --bench
        // snapshot`). Applies wait for the encode only; the file is flushed to disk,
        // renamed and recorded after.
        let written = tokio::task::spawn_blocking(move || {
            let mut encoded = None;
            let bytes = snapshot_store::write_synced(&path, |w| {
                let applied = shared.read();
                let locked = Instant::now();
                let meta = Meta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.membership.clone(),
                    snapshot_id: match &applied.last_applied {
                        Some(last) => format!("{}-{}-{seq}", last.leader_id, last.index),
                        None => format!("--{seq}"),
                    },
                };
                encode_snapshot_to(w, &applied)?;
                encoded = Some((meta, locked.elapsed()));
                Ok(())
            })?;
            let (meta, locked) = encoded.ok_or("the snapshot was not encoded")?;
            Ok((meta, locked, bytes))
        })
        .await
        .unwrap_or_else(|e| Err(format!("write snapshot file {}: {e}", temp.display())));
        let (meta, locked, bytes) = written.map_err(|e: String| {
            storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, &dir, e)
        })?;
        // Opened before it is saved: this handle reads this snapshot even if a newer one
        // replaces it (and removes its file) meanwhile.
        let file = tokio::fs::File::open(&temp).await.map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &dir,
                format!("open snapshot file {}: {e}", temp.display()),
            )
        })?;
        let saved = self.snapshots.save(&meta, &temp).await?;
        if saved {
            self.shared.snapshot_bytes.store(bytes, Ordering::Relaxed);
        }
        let path = if saved {
            self.snapshots.file_path(&meta)
        } else {
            temp
        };
        tracing::info!(
            snapshot = %meta,
            bytes,
            lock_ms = locked.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::stored(file, path)),
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

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        if let Some(abandoned) = self.incoming.take() {
            snapshot_store::remove_file(&abandoned).await;
        }
        let file = self.snapshots.create_incoming().await?;
        self.incoming = Some(file.path().to_path_buf());
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let dir = self.snapshots.dir.clone();
        // The data in a temp file of the snapshot dir: the one it was received into, or
        // a copy of what openraft was handed (`Raft::install_full_snapshot` takes any).
        let (file, temp) = if snapshot.is_incoming_in(self.snapshots.files()) {
            snapshot.into_std().await
        } else {
            self.snapshots.copy_in(*snapshot, meta).await?
        };
        if let Some(abandoned) = self.incoming.take().filter(|p| *p != temp) {
            snapshot_store::remove_file(&abandoned).await;
        }
        let path = temp.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            file.sync_all()
                .map_err(|e| format!("flush {} to disk: {e}", path.display()))?;
            snapshot_store::read_snapshot(file, &path)
        })
        .await
        .unwrap_or_else(|e| Err(format!("read {}: {e}", temp.display())))
        .and_then(|(payload, bytes)| {
            if payload.last_applied == meta.last_log_id {
                Ok((payload, bytes))
            } else {
                Err(format!(
                    "its data ends at {:?}, its metadata at {:?}",
                    payload.last_applied, meta.last_log_id
                ))
            }
        });
        let (payload, bytes) = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                snapshot_store::remove_file(&temp).await;
                return Err(storage_err(
                    subject(),
                    ErrorVerb::Read,
                    &dir,
                    format!(
                        "received snapshot {} cannot be installed: {e}",
                        temp.display()
                    ),
                ));
            }
        };
        self.snapshots.save(meta, &temp).await?;
        self.shared.snapshot_bytes.store(bytes, Ordering::Relaxed);
        let replaced = {
            let mut applied = self.shared.write();
            std::mem::replace(
                &mut *applied,
                Applied {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                    state: payload.state,
                },
            )
        };
        self.shared.publish(meta.last_log_id);
        tracing::info!(snapshot = %meta, bytes, "installed snapshot");
        // Freeing a large state takes a while: not on an async thread.
        tokio::task::spawn_blocking(move || drop(replaced));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        self.snapshots.current().await
    }
}
