//! The tar `docker load` takes (the legacy `docker save` layout), written to a file:
//!
//! ```text
//! <diff hex>/layer.tar   one per layer the engine lacks (each distinct one once)
//! <id hex>.json          the image config
//! manifest.json          [{"Config":"<id hex>.json","RepoTags":["REPO:TAG"],
//!                          "Layers":["<diff hex>/layer.tar", ... every layer]}]
//! ```
//!
//! The engine's loader skips a layer whose chain it already has without opening its
//! file, so the layers under [`write`]'s `from` are named in `manifest.json` but left
//! out of the tar. Blobs are streamed from the [`ImageSource`] into the file and hashed
//! as they are written: a blob whose sha256 is not its digest (or whose length is not
//! its manifest's) is refused. A blob whose stream breaks is fetched again (the source
//! then asks another controller), at most [`BLOB_ATTEMPTS`] times. The file is a
//! temporary one, removed when the returned [`LoadTar`] is dropped, and at once when
//! anything fails.

use std::collections::BTreeSet;
use std::io::SeekFrom;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _, BufWriter};
use tracing::warn;

use super::source::{ImageManifest, ImageSource};

/// Times one blob is fetched before the load gives up.
pub const BLOB_ATTEMPTS: usize = 3;
/// How long a blob's stream may stay silent.
const BLOB_IDLE: Duration = Duration::from_secs(60);
/// The largest config blob accepted (real ones are a few KiB).
const MAX_CONFIG: u64 = 16 << 20;
const BLOCK: u64 = 512;
const WRITE_BUFFER: usize = 256 << 10;

/// A written tar, removed from disk when dropped.
#[derive(Debug)]
pub struct LoadTar {
    path: tempfile::TempPath,
    /// Distinct layers in the tar.
    pub layers_sent: usize,
    /// Bytes of blobs received for it (retried ones counted each time).
    pub bytes_received: u64,
}

impl LoadTar {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry<'a> {
    config: String,
    repo_tags: Vec<&'a str>,
    layers: Vec<String>,
}

/// Why one attempt at a blob failed.
enum BlobError {
    /// The source could not give it (whole): another attempt may.
    Fetch(anyhow::Error),
    /// It is not the blob it claims to be, or the file cannot be written.
    Fatal(anyhow::Error),
}

/// The tar being written.
struct TarFile {
    out: BufWriter<tokio::fs::File>,
    written: u64,
}

impl TarFile {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| BlobError::Fatal(anyhow::Error::new(e).context("write the tar")))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Forget everything written after `offset`.
    async fn truncate(&mut self, offset: u64) -> anyhow::Result<()> {
        self.out.flush().await?;
        let file = self.out.get_mut();
        file.set_len(offset).await?;
        file.seek(SeekFrom::Start(offset)).await?;
        self.written = offset;
        Ok(())
    }

    /// Header of a regular file `path` of `size` bytes.
    async fn header(&mut self, path: &str, size: u64) -> Result<(), BlobError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| BlobError::Fatal(anyhow::anyhow!("tar path {path}: {e}")))?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.put(h.as_bytes()).await
    }

    /// Zeros up to the next block after a file of `size` bytes.
    async fn pad(&mut self, size: u64) -> Result<(), BlobError> {
        let n = ((BLOCK - size % BLOCK) % BLOCK) as usize;
        self.put(&[0u8; BLOCK as usize][..n]).await
    }

    async fn file(&mut self, path: &str, data: &[u8]) -> Result<(), BlobError> {
        self.header(path, data.len() as u64).await?;
        self.put(data).await?;
        self.pad(data.len() as u64).await
    }
}

fn fetch(e: anyhow::Error) -> BlobError {
    BlobError::Fetch(e)
}

/// Streams one blob into the tar as file `path`, checking its size and digest.
async fn blob_entry(
    tar: &mut TarFile,
    source: &dyn ImageSource,
    path: &str,
    digest: &str,
    size: u64,
    received: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), BlobError> {
    let mut stream = source.blob(digest).await.map_err(fetch)?;
    tar.header(path, size).await?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = next_chunk(&mut stream, digest).await? {
        received(chunk.len() as u64);
        got += chunk.len() as u64;
        if got > size {
            return Err(BlobError::Fatal(anyhow::anyhow!(
                "blob {digest} from the cluster's store is longer than its {size} bytes: refused"
            )));
        }
        hasher.update(&chunk);
        tar.put(&chunk).await?;
    }
    if got < size {
        return Err(fetch(anyhow::anyhow!(
            "blob {digest} ended after {got} of its {size} bytes"
        )));
    }
    let sha = hex::encode(hasher.finalize());
    if sha != digest {
        return Err(BlobError::Fatal(anyhow::anyhow!(
            "blob {digest} from the cluster's store has sha256 {sha}: refused"
        )));
    }
    tar.pad(size).await
}

/// The next chunk of blob `digest`; a stream silent for [`BLOB_IDLE`] is a failed fetch.
async fn next_chunk<S, B, E>(stream: &mut S, digest: &str) -> Result<Option<B>, BlobError>
where
    S: futures::Stream<Item = Result<B, E>> + Unpin,
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(BLOB_IDLE, stream.next()).await {
        Ok(Some(c)) => c.map(Some).map_err(|e| fetch(e.into())),
        Ok(None) => Ok(None),
        Err(_) => Err(fetch(anyhow::anyhow!(
            "no bytes of blob {digest} for {BLOB_IDLE:?}"
        ))),
    }
}

/// A small blob (the config) in memory, checked against its digest.
async fn small_blob(
    source: &dyn ImageSource,
    digest: &str,
    max: u64,
    received: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<u8>, BlobError> {
    let mut stream = source.blob(digest).await.map_err(fetch)?;
    let mut data = Vec::new();
    while let Some(chunk) = next_chunk(&mut stream, digest).await? {
        received(chunk.len() as u64);
        if (data.len() + chunk.len()) as u64 > max {
            return Err(BlobError::Fatal(anyhow::anyhow!(
                "config blob {digest} is larger than {max} bytes: refused"
            )));
        }
        data.extend_from_slice(&chunk);
    }
    let sha = hex::encode(Sha256::digest(&data));
    if sha != digest {
        return Err(BlobError::Fatal(anyhow::anyhow!(
            "config blob {digest} from the cluster's store has sha256 {sha}: refused"
        )));
    }
    Ok(data)
}

/// Writes the tar loading `manifest` under the name `repo_tag` (none: untagged) into a
/// new file in `dir`, with the layers from index `from` on (those under it are the
/// engine's already). `received` is told every blob chunk's length as it arrives.
pub async fn write(
    source: &dyn ImageSource,
    manifest: &ImageManifest,
    repo_tag: Option<&str>,
    from: usize,
    dir: &Path,
    received: &(dyn Fn(u64) + Send + Sync),
) -> anyhow::Result<LoadTar> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("create {}", dir.display()))?;
    let (file, path) = tempfile::Builder::new()
        .prefix("load-")
        .suffix(".tar")
        .tempfile_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?
        .into_parts();
    let mut tar = TarFile {
        out: BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
        written: 0,
    };
    let total = AtomicU64::new(0);
    let counted = |n: u64| {
        total.fetch_add(n, Ordering::Relaxed);
        received(n);
    };
    let mut sent = BTreeSet::new();
    for layer in manifest.layers.iter().skip(from) {
        if !sent.insert(layer.digest.as_str()) {
            continue;
        }
        let name = format!("{}/layer.tar", layer.digest);
        let start = tar.written;
        let mut attempt = 1;
        loop {
            match blob_entry(&mut tar, source, &name, &layer.digest, layer.size, &counted).await {
                Ok(()) => break,
                Err(BlobError::Fetch(e)) if attempt < BLOB_ATTEMPTS => {
                    warn!(blob = %layer.digest, attempt, error = %format!("{e:#}"), "fetching a layer again");
                    tar.truncate(start).await.context("rewind the tar")?;
                    attempt += 1;
                }
                Err(BlobError::Fetch(e) | BlobError::Fatal(e)) => return Err(e),
            }
        }
    }
    let config_digest = manifest.config_digest();
    let max = if manifest.config_size == 0 {
        MAX_CONFIG
    } else {
        manifest.config_size.min(MAX_CONFIG)
    };
    let mut attempt = 1;
    let config = loop {
        match small_blob(source, config_digest, max, &counted).await {
            Ok(c) => break c,
            Err(BlobError::Fetch(e)) if attempt < BLOB_ATTEMPTS => {
                warn!(blob = %config_digest, attempt, error = %format!("{e:#}"), "fetching the config again");
                attempt += 1;
            }
            Err(BlobError::Fetch(e) | BlobError::Fatal(e)) => return Err(e),
        }
    };
    let config_name = format!("{config_digest}.json");
    let entry = [ManifestEntry {
        config: config_name.clone(),
        repo_tags: repo_tag.into_iter().collect(),
        layers: manifest
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", l.digest))
            .collect(),
    }];
    let manifest_json = serde_json::to_vec(&entry).context("encode manifest.json")?;
    let finish = async {
        tar.file(&config_name, &config).await?;
        tar.file("manifest.json", &manifest_json).await?;
        // The end of the archive: two zero blocks.
        tar.put(&[0u8; 2 * BLOCK as usize]).await?;
        tar.out
            .flush()
            .await
            .map_err(|e| BlobError::Fatal(anyhow::Error::new(e).context("write the tar")))
    };
    if let Err(BlobError::Fetch(e) | BlobError::Fatal(e)) = finish.await {
        return Err(e);
    }
    Ok(LoadTar {
        path,
        layers_sent: sent.len(),
        bytes_received: total.load(Ordering::Relaxed),
    })
}
