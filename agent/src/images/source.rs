//! Where images come from besides registries: the cluster's store, behind
//! [`ImageSource`] (tests use an in-memory one), and [`GrpcSource`], which asks the
//! controllers' `ImageStore` service over the node's mTLS.
//!
//! Any controller answers `ImageStore` (one that has not copied a blob yet proxies it
//! from a holder), so no leader is needed: the source keeps one lazily dialled channel
//! per controller address, asks the one that last answered, and moves on to the next
//! when one fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use shoal_proto::pb;
use shoal_proto::pb::image_store_client::ImageStoreClient;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

/// One blob of an image as the store names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// 64 lowercase hex digits (the sha256 of the uncompressed layer tar: its diff id).
    pub digest: String,
    pub size: u64,
}

impl BlobRef {
    /// `sha256:HEX`, as engines write diff ids.
    pub fn diff_id(&self) -> String {
        format!("sha256:{}", self.digest)
    }
}

/// An image in the cluster's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// `REPO:TAG`.
    pub reference: String,
    /// `sha256:HEX`: the sha256 of its config blob, the engine's image id.
    pub id: String,
    /// Base first.
    pub layers: Vec<BlobRef>,
    pub config_size: u64,
}

impl ImageManifest {
    /// The config blob's digest (the id's hex).
    pub fn config_digest(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

/// A blob's bytes, in order.
pub type BlobStream = BoxStream<'static, anyhow::Result<Bytes>>;

/// The cluster's image store as the agent reads it.
#[async_trait]
pub trait ImageSource: Send + Sync + 'static {
    /// The image `reference` names; `None`: the store has no such image.
    async fn manifest(&self, reference: &str) -> anyhow::Result<Option<ImageManifest>>;
    /// The bytes of blob `digest` (hex, no prefix).
    async fn blob(&self, digest: &str) -> anyhow::Result<BlobStream>;
}

/// How long a controller has to answer `Manifest`, and to start a blob.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest gRPC message accepted (blob chunks are far smaller).
const MAX_MESSAGE: usize = 64 << 20;

/// [`ImageSource`] over the controllers' `ImageStore` service.
pub struct GrpcSource {
    addresses: Vec<String>,
    tls: Option<shoal_tls::ClientTls>,
    /// One channel per address, made on first use (dialled lazily, redialled by tonic).
    channels: Mutex<Vec<Option<Channel>>>,
    /// The address to ask first: the last one that answered.
    preferred: std::sync::Arc<AtomicUsize>,
}

impl std::fmt::Debug for GrpcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcSource")
            .field("addresses", &self.addresses)
            .finish()
    }
}

impl GrpcSource {
    /// Ask the controllers at `addresses` (`host:port`), over `tls` (`None`: plaintext,
    /// for tests against in-process stand-ins).
    pub fn new(addresses: Vec<String>, tls: Option<shoal_tls::ClientTls>) -> GrpcSource {
        let channels = Mutex::new(vec![None; addresses.len()]);
        GrpcSource {
            addresses,
            tls,
            channels,
            preferred: Default::default(),
        }
    }

    fn client(&self, i: usize) -> anyhow::Result<ImageStoreClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match &channels[i] {
            Some(c) => c.clone(),
            None => {
                let addr = &self.addresses[i];
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .with_context(|| format!("bad controller address {addr:?}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(5));
                let c = match &self.tls {
                    Some(tls) => tls.connect_lazy(endpoint),
                    None => endpoint.connect_lazy(),
                };
                channels[i] = Some(c.clone());
                c
            }
        };
        Ok(ImageStoreClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The addresses' indexes, the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> {
        let n = self.addresses.len();
        let first = self.preferred.load(Ordering::Relaxed);
        (0..n).map(move |k| (first + k) % n)
    }
}

/// What one controller said, for the error when none answered.
fn said(addr: &str, e: impl std::fmt::Display) -> String {
    format!("{addr}: {e}")
}

fn status_words(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn none_answered(failures: Vec<String>) -> anyhow::Error {
    anyhow::anyhow!("no controller answered ({})", failures.join("; "))
}

#[async_trait]
impl ImageSource for GrpcSource {
    async fn manifest(&self, reference: &str) -> anyhow::Result<Option<ImageManifest>> {
        let mut failures = Vec::new();
        let mut unimplemented = 0;
        for i in self.order() {
            let addr = &self.addresses[i];
            let mut client = match self.client(i) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(said(addr, format!("{e:#}")));
                    continue;
                }
            };
            let request = pb::ManifestRequest {
                reference: reference.to_string(),
            };
            let answer = match tokio::time::timeout(ASK_TIMEOUT, client.manifest(request)).await {
                Ok(a) => a,
                Err(_) => {
                    failures.push(said(addr, format!("no answer within {ASK_TIMEOUT:?}")));
                    continue;
                }
            };
            match answer {
                Ok(m) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    let m = ImageManifest::try_from(m.into_inner())?;
                    return Ok(Some(m));
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(s) => {
                    if s.code() == tonic::Code::Unimplemented {
                        unimplemented += 1;
                    }
                    debug!(controller = %addr, status = %status_words(&s), "ImageStore.Manifest failed");
                    failures.push(said(addr, status_words(&s)));
                }
            }
        }
        // Controllers that have no image store hold no image.
        if unimplemented > 0 && unimplemented == self.addresses.len() {
            return Ok(None);
        }
        Err(none_answered(failures))
    }

    async fn blob(&self, digest: &str) -> anyhow::Result<BlobStream> {
        let mut failures = Vec::new();
        for i in self.order() {
            let addr = self.addresses[i].clone();
            let mut client = match self.client(i) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(said(&addr, format!("{e:#}")));
                    continue;
                }
            };
            let request = pb::BlobRequest {
                digest: digest.to_string(),
            };
            let opened = match tokio::time::timeout(ASK_TIMEOUT, client.blob(request)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(s)) => {
                    failures.push(said(&addr, status_words(&s)));
                    continue;
                }
                Err(_) => {
                    failures.push(said(&addr, format!("no answer within {ASK_TIMEOUT:?}")));
                    continue;
                }
            };
            self.preferred.store(i, Ordering::Relaxed);
            // A stream that breaks sends the next attempt to the next controller.
            let preferred = self.preferred.clone();
            let n = self.addresses.len();
            let digest = digest.to_string();
            let stream = opened.map(move |chunk| match chunk {
                Ok(c) => Ok(Bytes::from(c.data)),
                Err(s) => {
                    let _ = preferred.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    Err(anyhow::anyhow!(
                        "blob {digest} from {addr} broke off: {}",
                        status_words(&s)
                    ))
                }
            });
            return Ok(stream.boxed());
        }
        Err(none_answered(failures))
    }
}
