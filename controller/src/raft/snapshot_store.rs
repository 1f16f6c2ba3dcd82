//! Where the latest snapshot is kept: its data in a file of the snapshot dir
//! (`DATA_DIR/raft/snapshots/<snapshot id>.json`), its metadata and the file's name in
//! sled (the `snapshots` tree: `meta`, `file`).
//!
//! Saving one: its data is written to a temp file in the snapshot dir and flushed to disk
//! by whoever wrote it; the temp file is renamed to the snapshot's name and the dir
//! flushed; the metadata and the name replace the previous ones in one sled batch,
//! flushed; then the previous file is removed. A crash anywhere leaves the previous
//! snapshot or the new one recorded, with its file, and perhaps files nothing records
//! (temp files, a file renamed but not recorded, a previous one not yet removed), which
//! opening the store removes.
//!
//! A store written before snapshots moved to files holds the data in sled (`data`). It
//! is read from there until the next snapshot saved replaces it; when openraft asks for
//! it (to send it to a follower), it is moved to a file first.

use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use openraft::{BasicNode, ErrorSubject, ErrorVerb, Snapshot, SnapshotMeta, StorageError};
use tokio::io::AsyncSeekExt;

use super::snapshot_file::SnapshotFile;
use super::snapshot_format::decode_snapshot;
use super::state_machine::Applied;
use super::storage_error::{storage_err, StorageResult};
use super::{trees, RaftNodeId, TypeConfig, SNAPSHOT_DIR};

const KEY_META: &str = "meta";
const KEY_FILE: &str = "file";
/// The snapshot's bytes, in a store written before snapshots moved to files.
const KEY_DATA: &str = "data";

const TEMP_SUFFIX: &str = ".tmp";
const FILE_SUFFIX: &str = ".json";

pub(super) type Meta = SnapshotMeta<RaftNodeId, BasicNode>;

/// Where the current snapshot's data is.
pub(super) enum Stored {
    File(PathBuf),
    /// In sled, where a shoal before snapshot files kept it.
    Sled(Vec<u8>),
}

/// The latest snapshot: its file and its record in sled.
#[derive(Clone)]
pub(super) struct SnapshotStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The data dir, named in errors.
    pub(super) dir: Arc<PathBuf>,
    /// `DATA_DIR/raft/snapshots`.
    files: Arc<PathBuf>,
    /// Serializes "compare with the current snapshot and replace it": a snapshot built
    /// concurrently with an install must not overwrite a newer one. Also held while the
    /// current snapshot's file is opened, so it is not removed in between.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Makes temp file names unique within the process.
    temp_seq: Arc<AtomicU64>,
    /// Shared by every clone (snapshot builders run in tasks openraft does not join):
    /// when its count is zero, the state machine let go of sled.
    pub(super) open: Arc<()>,
}

impl SnapshotStore {
    /// The store of `data_dir` (its sled database is `db`), with the files nothing
    /// records removed from its snapshot dir.
    pub(super) fn open(db: &sled::Db, data_dir: Arc<PathBuf>) -> anyhow::Result<SnapshotStore> {
        let tree = db
            .open_tree(trees::SNAPSHOTS)
            .with_context(|| format!("open the raft snapshots in {}", data_dir.display()))?;
        let files = data_dir.join("raft").join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&files)
            .with_context(|| format!("create the snapshot dir {}", files.display()))?;
        let store = SnapshotStore {
            db: db.clone(),
            tree,
            dir: data_dir,
            files: Arc::new(files),
            write_lock: Arc::default(),
            temp_seq: Arc::default(),
            open: Arc::default(),
        };
        store.remove_strays()?;
        Ok(store)
    }

    /// The snapshot dir.
    pub(super) fn files(&self) -> &Path {
        &self.files
    }

    /// Removes what a crash left in the snapshot dir: temp files, and snapshot files
    /// other than the recorded one.
    fn remove_strays(&self) -> anyhow::Result<()> {
        let recorded = match self.load()? {
            Some((_, Stored::File(path))) => path.file_name().map(|n| n.to_owned()),
            _ => None,
        };
        let entries = std::fs::read_dir(self.files.as_path())
            .with_context(|| format!("list the snapshot dir {}", self.files.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("list the snapshot dir {}", self.files.display()))?;
            let name = entry.file_name();
            let text = name.to_string_lossy();
            let stray = text.ends_with(TEMP_SUFFIX)
                || (text.ends_with(FILE_SUFFIX) && recorded.as_ref() != Some(&name));
            if stray {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .with_context(|| format!("remove stray snapshot file {}", path.display()))?;
                tracing::info!(file = %path.display(), "removed a snapshot file nothing records");
            }
        }
        Ok(())
    }

    /// The recorded snapshot, or an error saying what is wrong with its record.
    pub(super) fn load(&self) -> anyhow::Result<Option<(Meta, Stored)>> {
        let dir = self.dir.display();
        let get = |key: &str| {
            self.tree
                .get(key)
                .with_context(|| format!("read the raft snapshot record in {dir}"))
        };
        let (meta, file, data) = (get(KEY_META)?, get(KEY_FILE)?, get(KEY_DATA)?);
        let meta = match (meta, &file, &data) {
            (None, None, None) => return Ok(None),
            (Some(meta), Some(_), _) | (Some(meta), None, Some(_)) => meta,
            _ => anyhow::bail!(
                "raft snapshot in {dir} is incomplete: its record lacks its metadata or where its data is"
            ),
        };
        let meta: Meta = serde_json::from_slice(&meta).map_err(|e| {
            anyhow::anyhow!(
                "raft snapshot in {dir} is unreadable: its metadata does not parse: {e}"
            )
        })?;
        let stored = match (file, data) {
            (Some(name), _) => Stored::File(self.recorded_path(&name)?),
            (None, Some(data)) => Stored::Sled(data.to_vec()),
            (None, None) => unreachable!("matched above"),
        };
        Ok(Some((meta, stored)))
    }

    /// The path of a recorded file name, which must be a plain name in the snapshot dir.
    fn recorded_path(&self, name: &[u8]) -> anyhow::Result<PathBuf> {
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(['/', '\\']));
        match name {
            Some(name) => Ok(self.files.join(name)),
            None => anyhow::bail!(
                "raft snapshot in {} is unreadable: its record names no file of {}",
                self.dir.display(),
                self.files.display()
            ),
        }
    }

    /// A new temp file name in the snapshot dir; `kind` says who writes it.
    pub(super) fn temp_path(&self, kind: &str) -> PathBuf {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        self.files.join(format!("{kind}-{seq}{TEMP_SUFFIX}"))
    }

    /// Where the snapshot `meta` describes is kept once saved: its id, with anything but
    /// letters, digits, `-` and `_` replaced (a received id is the leader's word).
    pub(super) fn file_path(&self, meta: &Meta) -> PathBuf {
        let id: String = meta
            .snapshot_id
            .chars()
            .take(120)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let id = if id.is_empty() { "snapshot".into() } else { id };
        self.files.join(format!("{id}{FILE_SUFFIX}"))
    }

    /// A new temp file a snapshot being received is written to.
    pub(super) async fn create_incoming(&self) -> StorageResult<SnapshotFile> {
        let path = self.temp_path("incoming");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| {
                storage_err(
                    ErrorSubject::Snapshot(None),
                    ErrorVerb::Write,
                    &self.dir,
                    format!("create snapshot file {}: {e}", path.display()),
                )
            })?;
        Ok(SnapshotFile::incoming(file, path))
    }

    /// A copy of `data`, from its start, in a new temp file flushed to disk: for a
    /// snapshot openraft hands over that was not received into this snapshot dir.
    pub(super) async fn copy_in(
        &self,
        mut data: SnapshotFile,
        meta: &Meta,
    ) -> StorageResult<(std::fs::File, PathBuf)> {
        let path = self.temp_path("copy");
        let err = |what: String| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &self.dir,
                what,
            )
        };
        let copy = format!(
            "copy snapshot {} to {}",
            data.path().display(),
            path.display()
        );
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| err(format!("create snapshot file {}: {e}", path.display())))?;
        data.rewind()
            .await
            .map_err(|e| err(format!("{copy}: {e}")))?;
        tokio::io::copy(&mut data, &mut file)
            .await
            .map_err(|e| err(format!("{copy}: {e}")))?;
        file.sync_all().await.map_err(|e| {
            err(format!(
                "flush snapshot file {} to disk: {e}",
                path.display()
            ))
        })?;
        Ok((file.into_std().await, path))
    }

    /// The current snapshot, its file open for reading.
    pub(super) async fn current(&self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let _guard = self.write_lock.lock().await;
        let read_err = |e: anyhow::Error| {
            storage_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                &self.dir,
                format!("{e:#}"),
            )
        };
        let mut loaded = self.load().map_err(read_err)?;
        if let Some((meta, Stored::Sled(bytes))) = &loaded {
            self.move_to_file(meta, bytes).await?;
            loaded = self.load().map_err(read_err)?;
        }
        let (meta, path) = match loaded {
            None => return Ok(None),
            Some((meta, Stored::File(path))) => (meta, path),
            Some((_, Stored::Sled(_))) => {
                return Err(read_err(anyhow::anyhow!(
                    "the snapshot kept in sled is still there after it was moved to a file"
                )))
            }
        };
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &self.dir,
                format!("open snapshot file {}: {e}", path.display()),
            )
        })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::stored(file, path)),
        }))
    }

    /// Moves a snapshot kept in sled by an older shoal to a file (the write lock held).
    async fn move_to_file(&self, meta: &Meta, bytes: &[u8]) -> StorageResult<()> {
        let temp = self.temp_path("moved");
        let (path, data) = (temp.clone(), bytes.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            write_synced(&path, |w| w.write_all(&data).map_err(|e| e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err(format!("write snapshot file {}: {e}", temp.display())));
        written.map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &self.dir,
                e,
            )
        })?;
        self.save_locked(meta, &temp).await?;
        tracing::info!(snapshot = %meta, "moved the snapshot an older shoal kept in sled to a file");
        Ok(())
    }

    /// Makes the snapshot in `temp` (a temp file of the snapshot dir, flushed to disk by
    /// whoever wrote it) the current one, unless the current one is newer: then `temp`
    /// is removed. Returns whether it became the current one.
    pub(super) async fn save(&self, meta: &Meta, temp: &Path) -> StorageResult<bool> {
        let _guard = self.write_lock.lock().await;
        self.save_locked(meta, temp).await
    }

    /// [`SnapshotStore::save`], the write lock held.
    async fn save_locked(&self, meta: &Meta, temp: &Path) -> StorageResult<bool> {
        let err = |verb, what: String| -> StorageError<RaftNodeId> {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                verb,
                &self.dir,
                what,
            )
        };
        let previous = self
            .load()
            .map_err(|e| err(ErrorVerb::Read, format!("{e:#}")))?;
        if let Some((current, _)) = &previous {
            if current.last_log_id > meta.last_log_id {
                tracing::debug!(current = %current, offered = %meta, "keep the newer snapshot");
                remove_file(temp).await;
                return Ok(false);
            }
        }
        let path = self.file_path(meta);
        tokio::fs::rename(temp, &path).await.map_err(|e| {
            err(
                ErrorVerb::Write,
                format!("rename {} to {}: {e}", temp.display(), path.display()),
            )
        })?;
        sync_dir(&self.files).await.map_err(|e| {
            err(
                ErrorVerb::Write,
                format!(
                    "flush the snapshot dir {} to disk: {e}",
                    self.files.display()
                ),
            )
        })?;
        let meta_json = serde_json::to_vec(meta)
            .map_err(|e| err(ErrorVerb::Write, format!("encode snapshot meta: {e}")))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut batch = sled::Batch::default();
        batch.insert(KEY_META, meta_json);
        batch.insert(KEY_FILE, name.as_bytes());
        batch.remove(KEY_DATA);
        self.tree.apply_batch(batch).map_err(|e| {
            err(
                ErrorVerb::Write,
                format!("record snapshot file {}: {e}", path.display()),
            )
        })?;
        self.db.flush_async().await.map_err(|e| {
            err(
                ErrorVerb::Write,
                format!("flush the record of snapshot file {}: {e}", path.display()),
            )
        })?;
        if let Some((_, Stored::File(old))) = previous {
            if old != path {
                remove_file(&old).await;
            }
        }
        Ok(true)
    }
}

/// Removes a snapshot file that is no longer needed. A failure is only logged: opening
/// the store removes what nothing records.
pub(super) async fn remove_file(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            file = %path.display(),
            error = %e,
            "could not remove a snapshot file no longer needed (it is removed at the next start)"
        ),
    }
}

/// Flushes a directory's entries (a rename in it) to disk.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Creates the file `path` (it must not exist), has `write` fill it through a buffer,
/// and flushes it to disk; returns its size. On failure the file is removed. Blocking.
pub(super) fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<(), String>,
) -> Result<u64, String> {
    let written = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| format!("create snapshot file {}: {e}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w).map_err(|e| format!("write snapshot file {}: {e}", path.display()))?;
        let file = w
            .into_inner()
            .map_err(|e| format!("write snapshot file {}: {}", path.display(), e.error()))?;
        file.sync_all()
            .map_err(|e| format!("flush snapshot file {} to disk: {e}", path.display()))?;
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| format!("read the size of snapshot file {}: {e}", path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Reads a snapshot from `file` (at `path`), from its start: the state and the file's
/// size. The file is read whole, then decoded: serde_json decodes from memory about
/// three times as fast as through a reader (`cargo bench --bench snapshot`). Blocking.
pub(super) fn read_snapshot(
    mut file: std::fs::File,
    path: &Path,
) -> Result<(Applied, u64), String> {
    let read = |e: std::io::Error| format!("read {}: {e}", path.display());
    file.rewind().map_err(read)?;
    let mut bytes = Vec::with_capacity(file.metadata().map_err(read)?.len() as usize);
    file.read_to_end(&mut bytes).map_err(read)?;
    let applied = decode_snapshot(&bytes)?;
    Ok((applied, bytes.len() as u64))
}
