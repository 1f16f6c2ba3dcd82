//! The images this agent loaded from the cluster's store: the only ones it may ever
//! remove from its engine ([`super::prune`]). Kept in `DATA_DIR/images/loaded.json`, so
//! that an agent restart does not forget them, and written whole to a temporary file
//! renamed over the old one, so that a crash leaves the old record or the new one.
//!
//! A record that cannot be read is set aside with a warning: the agent then forgets what
//! it loaded and removes none of it (an image kept too long, never one removed wrongly).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// One image the agent loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedImage {
    /// The reference it was loaded for, as the task's spec names it.
    pub reference: String,
    /// The engine's id of it (`sha256:HEX`): on containerd's image store the digest of
    /// a manifest, not the store's id.
    pub id: String,
    /// The cluster's store's id of it (the digest of its config): the image the store
    /// must still have under `reference` for the node to keep it.
    pub store_id: String,
    /// When it was loaded, in ms since the epoch.
    pub loaded_ms: u64,
}

/// The file's layout.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    images: Vec<LoadedImage>,
}

/// The record, in memory and (with a path) on disk.
#[derive(Debug, Default)]
pub struct LoadedRecord {
    /// `None`: in memory only (an [`super::Images`] without a data dir, in tests).
    path: Option<PathBuf>,
    images: Vec<LoadedImage>,
}

/// Where the record is under the agent's data dir.
pub fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("images").join("loaded.json")
}

impl LoadedRecord {
    /// The record at `path`: empty when there is none yet, or when it cannot be read
    /// (then moved aside to `loaded.json.bad`, with a warning).
    pub fn open(path: PathBuf) -> LoadedRecord {
        let images = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RecordFile>(&bytes) {
                Ok(f) => f.images,
                Err(e) => {
                    let aside = path.with_extension("json.bad");
                    warn!(file = %path.display(), error = %e, aside = %aside.display(),
                        "cannot read the record of loaded images: images loaded before stay on the engine");
                    let _ = std::fs::rename(&path, &aside);
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn!(file = %path.display(), error = %e,
                    "cannot read the record of loaded images: images loaded before stay on the engine");
                Vec::new()
            }
        };
        LoadedRecord {
            path: Some(path),
            images,
        }
    }

    pub fn images(&self) -> &[LoadedImage] {
        &self.images
    }

    /// Record `image` (replacing the entry of the same reference and id) and save.
    pub fn add(&mut self, image: LoadedImage) -> anyhow::Result<()> {
        self.images
            .retain(|i| !(i.reference == image.reference && i.id == image.id));
        self.images.push(image);
        self.save()
    }

    /// Forget the entry of `reference` and `id` and save; `false`: there was none.
    pub fn forget(&mut self, reference: &str, id: &str) -> anyhow::Result<bool> {
        let before = self.images.len();
        self.images
            .retain(|i| !(i.reference == reference && i.id == id));
        if self.images.len() == before {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Write the whole record to a temporary file beside it, flushed to disk, and rename
    /// it over the old one.
    fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path
            .parent()
            .with_context(|| format!("{} has no parent directory", path.display()))?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let file = RecordFile {
            images: self.images.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).context("encode the record")?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".loaded-")
            .suffix(".json")
            .tempfile_in(dir)
            .with_context(|| format!("create a temporary file in {}", dir.display()))?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("write {}", tmp.path().display()))?;
        tmp.persist(path)
            .with_context(|| format!("rename the record to {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(reference: &str, id: &str) -> LoadedImage {
        LoadedImage {
            reference: reference.into(),
            id: id.into(),
            store_id: id.into(),
            loaded_ms: 7,
        }
    }

    #[test]
    fn the_record_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path());
        let mut record = LoadedRecord::open(path.clone());
        assert!(record.images().is_empty());
        record.add(loaded("app:1", "sha256:a")).unwrap();
        record.add(loaded("app:2", "sha256:b")).unwrap();
        // Loaded again: one entry, the newer.
        let mut again = loaded("app:1", "sha256:a");
        again.loaded_ms = 9;
        record.add(again.clone()).unwrap();
        drop(record);

        let mut reopened = LoadedRecord::open(path.clone());
        assert_eq!(reopened.images(), [loaded("app:2", "sha256:b"), again]);
        assert!(reopened.forget("app:2", "sha256:b").unwrap());
        assert!(!reopened.forget("app:2", "sha256:b").unwrap());
        assert_eq!(LoadedRecord::open(path).images().len(), 1);
        // Nothing but the record is left in its directory.
        let files: Vec<_> = std::fs::read_dir(dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["loaded.json"]);
    }

    #[test]
    fn an_unreadable_record_is_set_aside_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        let mut record = LoadedRecord::open(path.clone());
        assert!(record.images().is_empty());
        assert!(path.with_extension("json.bad").exists());
        record.add(loaded("app:1", "sha256:a")).unwrap();
        assert_eq!(LoadedRecord::open(path).images().len(), 1);
    }
}
