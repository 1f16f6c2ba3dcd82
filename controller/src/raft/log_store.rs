//! The Raft log, the vote and the committed log id, in sled.
//!
//! Layout (trees under `DATA_DIR/raft`, see [`super::trees`]):
//! - `log`: key = entry index as 8 big-endian bytes (so sled's order is log order),
//!   value = JSON of `openraft::Entry<TypeConfig>`.
//! - `meta`: `vote`, `last_purged`, `committed`, `node_id`, each JSON.
//!
//! Durability: `append` and `save_vote` flush sled before they report completion; that is
//! the contract openraft relies on to keep its promises to the rest of the group.
//! `truncate` and `purge` flush too (they are rare and cheap); `save_committed` does not:
//! the committed id is only a hint that lets a restart re-apply logs sooner.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::storage_error::{storage_err, StorageResult};
use super::{trees, RaftNodeId, TypeConfig};

const KEY_VOTE: &str = "vote";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";
const KEY_NODE_ID: &str = "node_id";

/// sled-backed [`RaftLogStorage`]. Cloning is cheap (sled handles are shared), which is how
/// openraft's log reader is made.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// The node's data dir, named in every error.
    dir: Arc<PathBuf>,
    /// Shared by every clone (openraft's log readers live in replication tasks that it
    /// does not join on shutdown): when its count is zero, this store let go of sled.
    open: Arc<()>,
    /// The last committed index openraft saved (openraft 0.9's metrics do not carry
    /// it); read by `/metrics` through [`LogStore::committed_index`].
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

/// The key of the entry at `index`.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// What to do about an entry naming a command this shoal does not know: a newer shoal
/// wrote it (a rolling upgrade goes controllers first, so an older one never should).
fn newer_hint(e: &serde_json::Error) -> &'static str {
    if e.to_string().contains("unknown variant") {
        " (a command this shoal does not know: a newer shoal wrote it; run at least that version here)"
    } else {
        ""
    }
}

fn key_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl LogStore {
    /// A handle that tells whether this store or a clone of it is still alive (and
    /// holds the sled database open).
    pub fn open_handle(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.open)
    }

    /// The last committed index openraft told this store of (0 before the first
    /// commit since start), shared with every clone.
    pub fn committed_index(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.committed.clone()
    }

    /// Opens the log store in `db` (the sled database of `data_dir`) and checks that every
    /// stored record parses and that the log is contiguous. A damaged store is an error
    /// naming `data_dir`, the record and what is wrong.
    pub fn open(db: &sled::Db, data_dir: &Path) -> anyhow::Result<LogStore> {
        let dir = Arc::new(data_dir.to_path_buf());
        let log = db
            .open_tree(trees::LOG)
            .with_context(|| format!("open the raft log in {}", dir.display()))?;
        let meta = db
            .open_tree(trees::META)
            .with_context(|| format!("open the raft metadata in {}", dir.display()))?;
        let store = LogStore {
            db: db.clone(),
            log,
            meta,
            dir,
            open: Arc::default(),
            committed: Arc::default(),
        };
        store.verify()?;
        Ok(store)
    }

    /// Reads every record once, so corruption shows up at startup with a clear message
    /// rather than as a fatal storage error in the middle of replication.
    fn verify(&self) -> anyhow::Result<()> {
        let dir = self.dir.display();
        let _: Option<Vote<RaftNodeId>> = self.meta_value(KEY_VOTE)?;
        let _: Option<LogId<RaftNodeId>> = self.meta_value(KEY_LAST_PURGED)?;
        let _: Option<LogId<RaftNodeId>> = self.meta_value(KEY_COMMITTED)?;
        let _: Option<RaftNodeId> = self.meta_value(KEY_NODE_ID)?;
        let mut prev: Option<u64> = None;
        for item in self.log.iter() {
            let (key, value) = item.with_context(|| format!("read the raft log in {dir}"))?;
            let Some(index) = key_index(&key) else {
                bail!(
                    "raft log in {dir} is corrupt: a key of {} bytes (expected 8)",
                    key.len()
                );
            };
            let entry: Entry<TypeConfig> = serde_json::from_slice(&value).map_err(|e| {
                let hint = newer_hint(&e);
                let what = if hint.is_empty() {
                    "corrupt"
                } else {
                    "unreadable"
                };
                anyhow::anyhow!(
                    "raft log in {dir} is {what}: entry {index} does not parse: {e}{hint}"
                )
            })?;
            if entry.log_id.index != index {
                bail!(
                    "raft log in {dir} is corrupt: the entry stored at index {index} says it is {}",
                    entry.log_id.index
                );
            }
            if let Some(p) = prev {
                if index != p + 1 {
                    bail!(
                        "raft log in {dir} is corrupt: entries {} to {} are missing",
                        p + 1,
                        index - 1
                    );
                }
            }
            prev = Some(index);
        }
        Ok(())
    }

    /// Records which node this data dir belongs to, or checks it against what was
    /// recorded: one data dir never serves two node ids.
    pub fn claim_node_id(&self, node_id: RaftNodeId) -> anyhow::Result<()> {
        match self.meta_value::<RaftNodeId>(KEY_NODE_ID)? {
            Some(stored) if stored != node_id => bail!(
                "data dir {} belongs to raft node {stored}, not {node_id}",
                self.dir.display()
            ),
            Some(_) => Ok(()),
            None => {
                let json = serde_json::to_vec(&node_id)?;
                self.meta
                    .insert(KEY_NODE_ID, json)
                    .with_context(|| format!("record the node id in {}", self.dir.display()))?;
                self.db
                    .flush()
                    .with_context(|| format!("flush {}", self.dir.display()))?;
                Ok(())
            }
        }
    }

    /// The index of the first entry in the log, if any (purging moves it forward).
    pub fn first_index(&self) -> anyhow::Result<Option<u64>> {
        let first = self.log.first()?;
        Ok(first.and_then(|(k, _)| key_index(&k)))
    }

    /// How many entries the log holds.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    fn meta_value<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let dir = self.dir.display();
        let Some(bytes) = self
            .meta
            .get(key)
            .with_context(|| format!("read raft {key} in {dir}"))?
        else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("raft {key} in {dir} is corrupt: {e}"))?;
        Ok(Some(value))
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &str,
        subject: ErrorSubject<RaftNodeId>,
    ) -> StorageResult<Option<T>> {
        self.meta_value(key)
            .map_err(|e| storage_err(subject, ErrorVerb::Read, &self.dir, format!("{e:#}")))
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        subject: ErrorSubject<RaftNodeId>,
    ) -> StorageResult<()> {
        let json = serde_json::to_vec(value).map_err(|e| {
            storage_err(
                subject.clone(),
                ErrorVerb::Write,
                &self.dir,
                format!("encode {key}: {e}"),
            )
        })?;
        self.meta.insert(key, json).map_err(|e| {
            storage_err(
                subject,
                ErrorVerb::Write,
                &self.dir,
                format!("write {key}: {e}"),
            )
        })?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<RaftNodeId>) -> StorageResult<()> {
        self.db.flush_async().await.map_err(|e| {
            storage_err(subject, ErrorVerb::Write, &self.dir, format!("flush: {e}"))
        })?;
        Ok(())
    }

    fn parse_entry(&self, key: &[u8], value: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        let Some(index) = key_index(key) else {
            return Err(storage_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                &self.dir,
                format!("a log key of {} bytes (expected 8)", key.len()),
            ));
        };
        serde_json::from_slice(value).map_err(|e| {
            storage_err(
                ErrorSubject::LogIndex(index),
                ErrorVerb::Read,
                &self.dir,
                format!("log entry {index} does not parse: {e}{}", newer_hint(&e)),
            )
        })
    }

    fn last_entry(&self) -> StorageResult<Option<Entry<TypeConfig>>> {
        let last = self.log.last().map_err(|e| {
            storage_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                &self.dir,
                format!("read last entry: {e}"),
            )
        })?;
        match last {
            None => Ok(None),
            Some((k, v)) => Ok(Some(self.parse_entry(&k, &v)?)),
        }
    }

    /// Removes the entries with index in `from..=to` (`to` None: to the end).
    fn remove_range(&self, from: u64, to: Option<u64>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        let keys = match to {
            Some(to) => self.log.range(index_key(from)..=index_key(to)),
            None => self.log.range(index_key(from)..),
        };
        for item in keys {
            let (k, _) = item.map_err(|e| {
                storage_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    &self.dir,
                    format!("scan log: {e}"),
                )
            })?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| {
            storage_err(
                ErrorSubject::Logs,
                ErrorVerb::Delete,
                &self.dir,
                format!("delete entries: {e}"),
            )
        })
    }
}

/// `range` as `[start, end)`, `end` None meaning unbounded.
fn to_half_open<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let Some((start, end)) = to_half_open(&range) else {
            return Ok(Vec::new());
        };
        let iter = match end {
            Some(end) => self.log.range(index_key(start)..index_key(end)),
            None => self.log.range(index_key(start)..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| {
                storage_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    &self.dir,
                    format!("read entries {range:?}: {e}"),
                )
            })?;
            entries.push(self.parse_entry(&k, &v)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<RaftNodeId>> =
            self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> StorageResult<()> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftNodeId>>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> StorageResult<()> {
        self.committed.store(
            committed.map_or(0, |c| c.index),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<RaftNodeId>>> {
        let committed: Option<Option<LogId<RaftNodeId>>> =
            self.read_meta(KEY_COMMITTED, ErrorSubject::Store)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let json = serde_json::to_vec(&entry).map_err(|e| {
                storage_err(
                    ErrorSubject::Log(entry.log_id),
                    ErrorVerb::Write,
                    &self.dir,
                    format!("encode entry: {e}"),
                )
            })?;
            batch.insert(&index_key(entry.log_id.index), json);
        }
        self.log.apply_batch(batch).map_err(|e| {
            storage_err(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                &self.dir,
                format!("append entries: {e}"),
            )
        })?;
        // Durable before openraft hears it is done.
        match self.db.flush_async().await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = format!(
                    "raft store in {}: flush appended entries: {e}",
                    self.dir.display()
                );
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(storage_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Write,
                    &self.dir,
                    msg,
                ))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        tracing::debug!(since = %log_id, "truncate raft log");
        self.remove_range(log_id.index, None)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        tracing::debug!(upto = %log_id, "purge raft log");
        // Record the purge point first: a crash between the two steps leaves entries that
        // are already known to be purged, never a gap openraft does not know about.
        let current: Option<LogId<RaftNodeId>> =
            self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        if current < Some(log_id) {
            self.write_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        }
        self.remove_range(0, Some(log_id.index))?;
        self.flush(ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_open_ranges() {
        assert_eq!(to_half_open(&(3..7)), Some((3, Some(7))));
        assert_eq!(to_half_open(&(3..=7)), Some((3, Some(8))));
        assert_eq!(to_half_open(&(3..)), Some((3, None)));
        assert_eq!(to_half_open(&(..)), Some((0, None)));
        assert_eq!(to_half_open(&(5..5)), None);
        assert_eq!(to_half_open(&(0..=u64::MAX)), Some((0, None)));
    }

    #[test]
    fn keys_sort_in_log_order() {
        assert!(index_key(255) < index_key(256));
        assert_eq!(key_index(&index_key(42)), Some(42));
        assert_eq!(key_index(b"short"), None);
    }
}
