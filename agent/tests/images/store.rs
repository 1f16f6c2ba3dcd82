//! An in-memory cluster image store for the tests: images made of small layers, served
//! through [`ImageSource`] (and through gRPC in `grpc.rs`), recording what was asked
//! and able to corrupt, break or hold blobs.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use shoal_agent::images::{BlobRef, BlobStream, ImageManifest, ImageSource};
use shoal_agent::runtime::ImageInfo;
use tokio::sync::Notify;

/// Bytes per streamed chunk: blobs cross in several.
pub const CHUNK: usize = 1000;

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An image: its layers' bytes, its config and its manifest.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub manifest: ImageManifest,
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
}

/// `reference` with these layers (base first); `salt` tells configs of equal layers apart.
pub fn image(reference: &str, layers: &[Vec<u8>], salt: &str) -> TestImage {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"salt": salt}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    TestImage::from_parts(reference, config, layers.to_vec())
}

/// Every file of a tar, by path.
pub fn tar_files(tar: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read as _;
    let mut out = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(path, data);
    }
    out
}

/// A layer of `n` bytes of `byte`.
pub fn layer(byte: u8, n: usize) -> Vec<u8> {
    vec![byte; n]
}

impl TestImage {
    /// The image of this config and these layers (base first), as the store records it.
    pub fn from_parts(reference: &str, config: Vec<u8>, layers: Vec<Vec<u8>>) -> TestImage {
        TestImage {
            manifest: ImageManifest {
                reference: reference.to_string(),
                id: format!("sha256:{}", sha(&config)),
                layers: layers
                    .iter()
                    .map(|l| BlobRef {
                        digest: sha(l),
                        size: l.len() as u64,
                    })
                    .collect(),
                config_size: config.len() as u64,
            },
            layers,
            config,
        }
    }

    /// As an engine that has it lists it.
    pub fn info(&self, tag: &str) -> ImageInfo {
        ImageInfo {
            id: self.manifest.id.clone(),
            tags: vec![tag.to_string()],
            layers: self.manifest.layers.iter().map(|l| l.diff_id()).collect(),
            size: self.layers.iter().map(|l| l.len() as u64).sum(),
        }
    }

    pub fn digest(&self, layer: usize) -> String {
        self.manifest.layers[layer].digest.clone()
    }

    pub fn config_digest(&self) -> String {
        self.manifest.config_digest().to_string()
    }
}

#[derive(Default)]
struct State {
    manifests: HashMap<String, ImageManifest>,
    blobs: HashMap<String, Vec<u8>>,
    /// References asked, in order.
    asked: Vec<String>,
    /// Blobs asked, in order.
    fetched: Vec<String>,
    /// Blobs served with one byte flipped.
    tampered: BTreeSet<String>,
    /// Blobs whose next stream breaks half way.
    break_once: BTreeSet<String>,
    /// Every call fails as if no controller answered.
    unreachable: bool,
    /// Blob streams wait for [`Store::release`].
    hold: bool,
}

/// The store. Clones share it.
#[derive(Clone, Default)]
pub struct Store {
    state: Arc<Mutex<State>>,
    /// Notified (a permit is kept) when a blob is asked for.
    pub blob_asked: Arc<Notify>,
    released: Arc<Notify>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn put(&self, image: &TestImage) {
        let mut st = self.lock();
        st.manifests
            .insert(image.manifest.reference.clone(), image.manifest.clone());
        for l in &image.layers {
            st.blobs.insert(sha(l), l.clone());
        }
        st.blobs.insert(sha(&image.config), image.config.clone());
    }

    /// The controllers' sweep forgot `reference` (its blobs stay: other images may
    /// share them).
    pub fn forget(&self, reference: &str) {
        self.lock().manifests.remove(reference);
    }

    pub fn asked(&self) -> Vec<String> {
        self.lock().asked.clone()
    }

    pub fn fetched(&self) -> Vec<String> {
        self.lock().fetched.clone()
    }

    pub fn tamper(&self, digest: &str) {
        self.lock().tampered.insert(digest.to_string());
    }

    pub fn break_once(&self, digest: &str) {
        self.lock().break_once.insert(digest.to_string());
    }

    pub fn set_unreachable(&self, on: bool) {
        self.lock().unreachable = on;
    }

    pub fn hold(&self) {
        self.lock().hold = true;
    }

    pub fn release(&self) {
        self.lock().hold = false;
        self.released.notify_waiters();
    }

    pub fn manifest_of(&self, reference: &str) -> Option<ImageManifest> {
        self.lock().manifests.get(reference).cloned()
    }

    /// The bytes of a blob as served (tampered or not), and whether the stream breaks.
    pub fn serve_blob(&self, digest: &str) -> Option<(Vec<u8>, bool)> {
        let mut st = self.lock();
        st.fetched.push(digest.to_string());
        let mut bytes = st.blobs.get(digest)?.clone();
        if st.tampered.contains(digest) {
            if let Some(b) = bytes.first_mut() {
                *b ^= 0xff;
            }
        }
        Some((bytes, st.break_once.remove(digest)))
    }
}

#[async_trait]
impl ImageSource for Store {
    async fn manifest(&self, reference: &str) -> anyhow::Result<Option<ImageManifest>> {
        let mut st = self.lock();
        st.asked.push(reference.to_string());
        anyhow::ensure!(!st.unreachable, "no controller answered (stand-in)");
        Ok(st.manifests.get(reference).cloned())
    }

    async fn blob(&self, digest: &str) -> anyhow::Result<BlobStream> {
        anyhow::ensure!(
            !self.lock().unreachable,
            "no controller answered (stand-in)"
        );
        self.blob_asked.notify_one();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.lock().hold {
                break;
            }
            released.await;
        }
        let (bytes, breaks) = self
            .serve_blob(digest)
            .ok_or_else(|| anyhow::anyhow!("no blob {digest}"))?;
        let mut chunks: Vec<anyhow::Result<Bytes>> = bytes
            .chunks(CHUNK)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if breaks {
            chunks.truncate(chunks.len() / 2);
            chunks.push(Err(anyhow::anyhow!("connection reset (stand-in)")));
        }
        Ok(futures::stream::iter(chunks).boxed())
    }
}
