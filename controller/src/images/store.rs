//! The blobs of the cluster's image store on this controller's disk:
//! `DATA_DIR/images/blobs/HEX` (HEX the sha256 of the bytes), written through
//! `DATA_DIR/images/tmp/` and renamed into place only once their digest checked out, so a
//! blob that is there is whole. Outside the Raft log: images are large and only their
//! records need consensus.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// Bytes per chunk when a blob is streamed.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

/// Whether `digest` is a sha256 hex digest (64 lowercase hex digits): the only names a
/// blob may have, so no request can name a path outside the store.
pub fn valid_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl BlobStore {
    /// The store under `data_dir`, created if missing; leftovers of interrupted writes
    /// are removed.
    pub fn open(data_dir: &Path) -> std::io::Result<BlobStore> {
        let root = data_dir.join("images");
        let store = BlobStore {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
        };
        std::fs::create_dir_all(&store.blobs)?;
        let _ = std::fs::remove_dir_all(&store.tmp);
        std::fs::create_dir_all(&store.tmp)?;
        Ok(store)
    }

    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        valid_digest(digest).then(|| self.blobs.join(digest))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// A writer for the blob `digest` of `size` bytes.
    pub fn writer(&self, digest: &str, size: u64) -> anyhow::Result<BlobWriter> {
        let Some(dest) = self.path(digest) else {
            anyhow::bail!("{digest:?} is not a sha256 hex digest");
        };
        let tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            size,
            written: 0,
            hash: Sha256::new(),
            file: tmp,
            dest,
        })
    }

    /// Every blob held, with its last modification time.
    pub fn list(&self) -> std::io::Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if valid_digest(&name) {
                let modified = entry.metadata()?.modified()?;
                out.push((name, modified));
            }
        }
        Ok(out)
    }

    /// Removes the blobs no record names that are older than `grace` (a push stores its
    /// blobs before its record is committed).
    pub fn prune(&self, keep: &std::collections::BTreeSet<&str>, grace: Duration) -> usize {
        let Ok(all) = self.list() else { return 0 };
        let now = SystemTime::now();
        let mut removed = 0;
        for (digest, modified) in all {
            let old = now.duration_since(modified).is_ok_and(|age| age > grace);
            if old && !keep.contains(digest.as_str()) {
                if let Some(p) = self.path(&digest) {
                    if std::fs::remove_file(&p).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

/// A blob being written: bytes are hashed as they come; [`BlobWriter::finish`] keeps it
/// only if size and digest are what was announced.
pub struct BlobWriter {
    digest: String,
    size: u64,
    written: u64,
    hash: Sha256,
    file: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl BlobWriter {
    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.written += data.len() as u64;
        if self.written > self.size {
            anyhow::bail!(
                "blob {} is longer than the {} bytes announced",
                self.digest,
                self.size
            );
        }
        self.hash.update(data);
        self.file.write_all(data)?;
        Ok(())
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Checks and keeps the blob; returns its size.
    pub fn finish(self) -> anyhow::Result<u64> {
        if self.written != self.size {
            anyhow::bail!(
                "blob {} ended after {} of {} bytes",
                self.digest,
                self.written,
                self.size
            );
        }
        let got = hex::encode(self.hash.finalize());
        if got != self.digest {
            anyhow::bail!(
                "blob {} arrived with digest {got}: corrupted on the way",
                self.digest
            );
        }
        self.file.as_file().sync_all()?;
        self.file
            .persist(&self.dest)
            .map_err(|e| anyhow::anyhow!("keep blob {}: {}", self.digest, e.error))?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn a_blob_is_kept_only_when_its_digest_and_size_check_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"layer bytes";
        let d = sha(data);
        let mut w = store.writer(&d, data.len() as u64).unwrap();
        w.write(&data[..4]).unwrap();
        w.write(&data[4..]).unwrap();
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        assert!(store.has(&d));
        assert_eq!(std::fs::read(store.path(&d).unwrap()).unwrap(), data);

        let other = sha(b"other");
        let mut w = store.writer(&other, 5).unwrap();
        w.write(b"wrong").unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("corrupted"), "{err}");
        assert!(!store.has(&other));

        let mut w = store.writer(&other, 2).unwrap();
        assert!(w.write(b"toolong").is_err());
        let w = store.writer(&other, 9).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("ended after 0 of 9"));
    }

    #[test]
    fn only_hex_digests_name_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.writer("../../etc/passwd", 1).is_err());
        assert!(!store.has(&"A".repeat(64)));
        assert!(store.path(&"a".repeat(64)).is_some());
    }

    #[test]
    fn prune_keeps_named_and_fresh_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for b in [&b"a"[..], b"b"] {
            let d = sha(b);
            let mut w = store.writer(&d, 1).unwrap();
            w.write(b).unwrap();
            w.finish().unwrap();
            digests.push(d);
        }
        let keep: std::collections::BTreeSet<&str> = [digests[0].as_str()].into();
        assert_eq!(
            store.prune(&keep, Duration::from_secs(3600)),
            0,
            "fresh blobs stay"
        );
        assert_eq!(store.prune(&keep, Duration::ZERO), 1);
        assert!(store.has(&digests[0]));
        assert!(!store.has(&digests[1]));
    }
}
