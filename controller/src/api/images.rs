//! The image store's services (issue 13): `ImagePush` (the CLI's pushes, on the
//! leader), `ImageStore` (blobs and records for agents and controllers), and the
//! `Control` calls behind `shoal image ls|rm` and the deploy's availability check.
//!
//! A push writes each blob to this controller's [`BlobStore`](crate::images::BlobStore)
//! (checked against its digest), then checks the image's config names exactly the
//! layers pushed, and commits the record with this controller as its first holder. The
//! other controllers copy it ([`crate::images::replicate`]); the push answers once a
//! second controller holds it (bounded), so a deploy that went on survives the loss of
//! any one controller.
// Statuses are what tonic streams carry, as the other services do.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use shoal_proto::pb;
use shoal_proto::pb::image_push_server::ImagePush;
use shoal_proto::pb::image_store_server::ImageStore;
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status, Streaming};

use super::control::now_ms;
use super::Shared;
use crate::images::store::{valid_digest, BlobWriter, CHUNK};
use crate::state::images::{normalize_reference, BlobRef, StoredImage};
use crate::state::{Availability, Command, NodeStatus};

type BlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send>>;

/// `ImagePush`: admin only, answered by the leader.
pub struct ImagePushService {
    ctx: Shared,
}

impl ImagePushService {
    pub fn new(ctx: Shared) -> Self {
        ImagePushService { ctx }
    }
}

#[tonic::async_trait]
impl ImagePush for ImagePushService {
    async fn missing(
        &self,
        req: Request<pb::MissingBlobsRequest>,
    ) -> Result<Response<pb::MissingBlobsReply>, Status> {
        self.ctx.linearizable().await?;
        let mut digests = Vec::new();
        for d in req.into_inner().digests {
            if !valid_digest(&d) {
                return Err(Status::invalid_argument(format!(
                    "{d:?} is not a sha256 hex digest"
                )));
            }
            if !self.ctx.blobs.has(&d) && !digests.contains(&d) {
                digests.push(d);
            }
        }
        Ok(Response::new(pb::MissingBlobsReply { digests }))
    }

    async fn push(
        &self,
        req: Request<Streaming<pb::ImagePushChunk>>,
    ) -> Result<Response<pb::ImagePushReply>, Status> {
        self.ctx.linearizable().await?;
        let mut stream = req.into_inner();
        let mut blob: Option<BlobWriter> = None;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk?.msg {
                Some(pb::image_push_chunk::Msg::Start(s)) => {
                    if let Some(w) = blob.take() {
                        bytes += finish(w)?;
                    }
                    blob = Some(
                        self.ctx
                            .blobs
                            .writer(&s.digest, s.size)
                            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?,
                    );
                }
                Some(pb::image_push_chunk::Msg::Data(d)) => match &mut blob {
                    Some(w) => w
                        .write(&d)
                        .map_err(|e| Status::invalid_argument(format!("{e:#}")))?,
                    None => return Err(Status::invalid_argument("blob data before its start")),
                },
                Some(pb::image_push_chunk::Msg::Image(m)) => {
                    if let Some(w) = blob.take() {
                        bytes += finish(w)?;
                    }
                    return self.register(m, bytes).await.map(Response::new);
                }
                None => {}
            }
        }
        Err(Status::invalid_argument(
            "the push ended before naming its image",
        ))
    }
}

fn finish(w: BlobWriter) -> Result<u64, Status> {
    w.finish().map_err(|e| Status::data_loss(format!("{e:#}")))
}

impl ImagePushService {
    /// Commits the record of `m` once every blob is here and its config agrees.
    async fn register(
        &self,
        m: pb::ImageManifest,
        bytes: u64,
    ) -> Result<pb::ImagePushReply, Status> {
        let image = checked_image(&self.ctx, &m).await?;
        self.ctx
            .propose(Command::ImagePushed {
                image,
                now_ms: now_ms(),
            })
            .await?;
        let holders = self.copied(&m.reference).await;
        tracing::info!(image = %m.reference, id = %m.id, bytes, ?holders, "image pushed");
        Ok(pb::ImagePushReply {
            reference: m.reference,
            bytes,
            holders,
        })
    }
}

impl ImagePushService {
    /// The holders of `reference` once a second controller copied it (when there is
    /// one), so a push that returned survives the loss of one controller; bounded by
    /// [`COPY_WAIT`] (the copy then goes on in the background).
    async fn copied(&self, reference: &str) -> Vec<u64> {
        let voters = {
            let metrics = self.ctx.node.raft.metrics();
            let m = metrics.borrow();
            let n = m.membership_config.membership().voter_ids().count();
            n
        };
        let wanted = voters.min(2);
        let mut applied = self.ctx.node.state.subscribe();
        let deadline = tokio::time::Instant::now() + COPY_WAIT;
        loop {
            let holders: Vec<u64> = self
                .ctx
                .node
                .state
                .read()
                .images
                .get(reference)
                .map(|i| i.holders.iter().copied().collect())
                .unwrap_or_default();
            if holders.len() >= wanted {
                return holders;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::warn!(image = reference, ?holders, "no second controller copied the image in time; it is copied in the background");
                    return holders;
                }
            }
        }
    }
}

/// How long a push waits for a second controller to copy the image.
const COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The record of a pushed image, after checking that this controller holds every blob
/// and that the config's `rootfs.diff_ids` are exactly the layers named.
async fn checked_image(ctx: &Shared, m: &pb::ImageManifest) -> Result<StoredImage, Status> {
    if m.reference.is_empty() || m.reference.contains(char::is_whitespace) {
        return Err(Status::invalid_argument(format!(
            "{:?} is not an image reference",
            m.reference
        )));
    }
    let config = m.id.strip_prefix("sha256:").unwrap_or_default();
    let mut missing = Vec::new();
    for d in std::iter::once(config).chain(m.layers.iter().map(|l| l.digest.as_str())) {
        if !ctx.blobs.has(d) {
            missing.push(d.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(Status::failed_precondition(format!(
            "image {}: this controller lacks blobs {}; push them first",
            m.reference,
            missing.join(", ")
        )));
    }
    let path = ctx.blobs.path(config).unwrap_or_default();
    let text = tokio::fs::read(&path)
        .await
        .map_err(|e| Status::internal(format!("read config of {}: {e}", m.reference)))?;
    let diff_ids = config_diff_ids(&text)
        .map_err(|e| Status::invalid_argument(format!("image {}: {e}", m.reference)))?;
    let layers: Vec<String> = m
        .layers
        .iter()
        .map(|l| format!("sha256:{}", l.digest))
        .collect();
    if diff_ids != layers {
        return Err(Status::invalid_argument(format!(
            "image {}: its config names layers {diff_ids:?}, the push sent {layers:?}",
            m.reference
        )));
    }
    Ok(StoredImage {
        reference: m.reference.clone(),
        id: m.id.clone(),
        layers: m
            .layers
            .iter()
            .map(|l| BlobRef {
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect(),
        config_size: text.len() as u64,
        pushed_ms: 0,
        holders: BTreeSet::from([ctx.node.id]),
        unused_since_ms: None,
    })
}

/// The `rootfs.diff_ids` of an image config (JSON).
pub fn config_diff_ids(config: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("its config is not JSON: {e}"))?;
    let ids = v
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or("its config has no rootfs.diff_ids")?;
    ids.iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .ok_or_else(|| "a diff id is not a string".to_string())
        })
        .collect()
}

/// `ImageStore`: agents, controllers and admins.
pub struct ImageStoreService {
    ctx: Shared,
}

impl ImageStoreService {
    pub fn new(ctx: Shared) -> Self {
        ImageStoreService { ctx }
    }
}

#[tonic::async_trait]
impl ImageStore for ImageStoreService {
    async fn manifest(
        &self,
        req: Request<pb::ManifestRequest>,
    ) -> Result<Response<pb::ImageManifest>, Status> {
        let reference = req.into_inner().reference;
        let state = self.ctx.node.state.read();
        let wanted = normalize_reference(&reference);
        let img = state
            .images
            .get(&reference)
            .or_else(|| {
                state
                    .images
                    .values()
                    .find(|i| normalize_reference(&i.reference) == wanted)
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "the cluster's image store has no image {reference}"
                ))
            })?;
        Ok(Response::new(manifest_of(img)))
    }

    type BlobStream = BlobStream;

    async fn blob(&self, req: Request<pb::BlobRequest>) -> Result<Response<BlobStream>, Status> {
        let digest = req.into_inner().digest;
        if !valid_digest(&digest) {
            return Err(Status::invalid_argument(format!(
                "{digest:?} is not a sha256 hex digest"
            )));
        }
        if let Some(path) = self.ctx.blobs.path(&digest).filter(|p| p.is_file()) {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| Status::internal(format!("open blob {digest}: {e}")))?;
            return Ok(Response::new(file_chunks(file)));
        }
        // Not copied here yet: read it through from a controller that holds it.
        let holders: Vec<u64> = {
            let state = self.ctx.node.state.read();
            let mut h: BTreeSet<u64> = BTreeSet::new();
            for img in state.images.values() {
                if img.blobs().any(|(d, _)| d == digest) {
                    h.extend(img.holders.iter().copied());
                }
            }
            h.into_iter().collect()
        };
        if holders.is_empty() {
            return Err(Status::not_found(format!(
                "no image of the cluster's store has blob {digest}"
            )));
        }
        let upstream = crate::images::fetch_from_peers(&self.ctx, &holders, &digest).await?;
        Ok(Response::new(Box::pin(upstream.map(|r| {
            r.map(|data| pb::BlobChunk {
                data: data.to_vec(),
            })
        }))))
    }

    async fn held(&self, req: Request<pb::HeldRequest>) -> Result<Response<pb::HeldReply>, Status> {
        let caller = req
            .extensions()
            .get::<crate::pki::auth::Peer>()
            .map(|p| p.0.clone())
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        if caller.role != shoal_tls::Role::Controller {
            return Err(Status::permission_denied(
                "only controllers say which images they hold",
            ));
        }
        let id = {
            let metrics = self.ctx.node.raft.metrics();
            let m = metrics.borrow();
            let found = m
                .membership_config
                .membership()
                .nodes()
                .find(|(_, n)| n.addr == caller.name)
                .map(|(id, _)| *id);
            found
        }
        .ok_or_else(|| {
            Status::permission_denied(format!("{} is not a member of the cluster", caller.name))
        })?;
        let r = req.into_inner();
        let result = self
            .ctx
            .propose(Command::ImageHeld {
                reference: r.reference,
                id: r.id,
                controller: id,
            })
            .await?;
        match result.error {
            Some(e) => Err(Status::failed_precondition(e)),
            None => Ok(Response::new(pb::HeldReply {})),
        }
    }
}

/// A file as a stream of [`CHUNK`]-sized messages.
fn file_chunks(mut file: tokio::fs::File) -> BlobStream {
    Box::pin(async_stream(move |tx| async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(pb::BlobChunk { data: buf })).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("read blob: {e}"))))
                        .await;
                    return;
                }
            }
        }
    }))
}

/// A stream fed by `f` through a small channel (backpressure: at most 4 chunks ahead).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<pb::BlobChunk, Status>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::BlobChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

pub fn manifest_of(img: &StoredImage) -> pb::ImageManifest {
    pb::ImageManifest {
        reference: img.reference.clone(),
        id: img.id.clone(),
        layers: img
            .layers
            .iter()
            .map(|l| pb::BlobRef {
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect(),
        config_size: img.config_size,
        holders: img.holders.iter().copied().collect(),
    }
}

/// `shoal image ls`: the store's images, then images services run that the store does
/// not hold (what nodes' engines have), each with its nodes and services.
pub async fn list(ctx: &Shared) -> Result<pb::ImagesReply, Status> {
    ctx.linearizable().await?;
    let state = ctx.node.state.read();
    let used = state.images_in_use();
    let mut rows = Vec::new();
    for img in state.images.values() {
        rows.push(pb::ImageRow {
            image: img.reference.clone(),
            id: img.id.clone(),
            size_bytes: img.size(),
            nodes: state.nodes_holding(&img.reference, Some(&img.id)),
            services: used
                .get(img.reference.as_str())
                .cloned()
                .unwrap_or_default(),
            controllers: img.holders.iter().copied().collect(),
        });
    }
    for (reference, services) in &used {
        if reference.is_empty() || state.images.contains_key(*reference) {
            continue;
        }
        let on_node = state.node_images.values().flatten().find(|i| {
            i.id == *reference
                || i.tags
                    .iter()
                    .any(|t| normalize_reference(t) == normalize_reference(reference))
        });
        rows.push(pb::ImageRow {
            image: reference.to_string(),
            id: on_node.map(|i| i.id.clone()).unwrap_or_default(),
            size_bytes: on_node.map_or(0, |i| i.size),
            nodes: state.nodes_holding(reference, None),
            services: services.clone(),
            controllers: Vec::new(),
        });
    }
    Ok(pb::ImagesReply { images: rows })
}

pub async fn remove(
    ctx: &Shared,
    req: pb::RemoveImageRequest,
) -> Result<pb::RemoveImageReply, Status> {
    let result = ctx
        .propose(Command::RemoveImage {
            reference: req.image.clone(),
        })
        .await?;
    match result.error {
        Some(e) => Err(Status::failed_precondition(e)),
        None => {
            tracing::info!(image = %req.image, "image removed from the cluster's store");
            Ok(pb::RemoveImageReply {})
        }
    }
}

/// Where each image is: the cluster's store and nodes' engines.
pub async fn available(
    ctx: &Shared,
    req: pb::ImagesAvailableRequest,
) -> Result<pb::ImagesAvailableReply, Status> {
    ctx.linearizable().await?;
    let state = ctx.node.state.read();
    let images = req
        .images
        .into_iter()
        .map(|image| {
            let wanted = normalize_reference(&image);
            let stored = state.images.get(&image).or_else(|| {
                state
                    .images
                    .values()
                    .find(|i| normalize_reference(&i.reference) == wanted)
            });
            let nodes = state.nodes_holding(&image, stored.map(|i| i.id.as_str()));
            let every_node = state
                .nodes
                .values()
                .filter(|n| n.status == NodeStatus::Ready && n.availability == Availability::Active)
                .all(|n| nodes.contains(&n.id))
                && !nodes.is_empty();
            pb::ImageWhere {
                in_cluster: stored.is_some(),
                id: stored.map(|i| i.id.clone()).unwrap_or_default(),
                nodes,
                every_node,
                image,
            }
        })
        .collect();
    Ok(pb::ImagesAvailableReply { images })
}
