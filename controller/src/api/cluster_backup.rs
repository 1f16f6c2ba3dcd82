//! `BackupCluster`: the applied state (as a snapshot) and the cluster key, read on the
//! confirmed leader so the copy holds every write acknowledged before it was asked for.

use std::pin::Pin;

use futures::Stream;
use shoal_proto::pb;
use tonic::Status;

use super::Shared;
use crate::raft::state_machine::encode_snapshot;

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupClusterChunk, Status>> + Send>>;

/// Snapshot bytes go in chunks of this size (well under gRPC's 4 MiB message limit).
const CHUNK: usize = 1 << 20;

pub async fn backup(ctx: &Shared) -> Result<BackupStream, Status> {
    ctx.linearizable().await?;
    let applied = ctx.node.state.applied();
    let record = applied
        .state
        .pki
        .as_ref()
        .ok_or_else(|| Status::failed_precondition("the cluster has no CA yet"))?;
    let cluster_id = record
        .digest()
        .map(|d| shoal_tls::token::cluster_id(&d))
        .map_err(|e| Status::internal(format!("{e:#}")))?;
    let data = encode_snapshot(&applied).map_err(Status::internal)?;
    let index = applied.last_applied.map_or(0, |l| l.index);
    tracing::info!(index, bytes = data.len(), "cluster backup taken");
    let mut chunks: Vec<pb::BackupClusterChunk> = data
        .chunks(CHUNK)
        .map(|c| pb::BackupClusterChunk {
            data: c.to_vec(),
            ..Default::default()
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(pb::BackupClusterChunk::default());
    }
    chunks[0].cluster_id = cluster_id;
    chunks[0].index = index;
    chunks[0].cluster_key = ctx.pki.key.bytes().to_vec();
    if let Some(last) = chunks.last_mut() {
        last.last = true;
    }
    Ok(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
}
