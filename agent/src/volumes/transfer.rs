//! The session's side of a volume transfer ([`VolumeTransfer`]): export tars a volume
//! and uploads it to the leader (`VolumeData.Upload`), in two passes around a pause of
//! its containers with `freeze` ([`export`]); import downloads a tar stream
//! (`VolumeData.Download`) into a new volume; standby downloads one into a fresh
//! directory under the agent's data dir and swaps it in for the node's standby copy
//! only once complete and verified ([`super::standby`]). All end with a
//! [`TransferDone`] on the session. The tar work runs on a blocking thread fed through a bounded channel, and
//! each transfer on its own task (at most [`MAX_TRANSFERS`] at once per agent), so the
//! session's heartbeats never wait for one. A transfer outlives the session that asked
//! for it (its result is then lost): an export with `freeze` always resumes the
//! containers it paused, and a failed import always removes what it wrote.
//!
//! An import never writes into a volume that holds data, and removes what it wrote when
//! anything goes wrong (the stream breaks or ends early, the checksum differs, the tar
//! stream is refused), so a copy on this node is either whole and verified or absent;
//! a failed standby refresh leaves the previous standby copy as it was.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use shoal_proto::pb;
use shoal_proto::pb::volume_data_client::VolumeDataClient;
use tokio::sync::{mpsc, Notify, Semaphore};
use tonic::transport::Channel;
use tracing::{info, instrument, warn};

use super::archive;
use super::standby::Standbys;
use crate::model::{TransferDirection, TransferDone, VolumeTransfer};
use crate::runtime::{ContainerRuntime, RuntimeError, VolumeRequest};

/// Bytes of tar stream per `VolumeChunk`.
pub const CHUNK_BYTES: usize = 256 << 10;

/// Transfers run at once on one node; more wait their turn.
pub const MAX_TRANSFERS: usize = 2;

/// Chunks in flight between the tar thread and the network, each way.
const CHANNEL_CHUNKS: usize = 8;

mod chunks;
mod export;

use chunks::ChunkReader;
pub use export::resume_leftovers;
use export::{export, Exported};

/// Starts a session's transfers.
pub struct Transfers {
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    channel: Channel,
    out: mpsc::Sender<pb::AgentMessage>,
    /// Notified after an import, so the node's volumes are reported again.
    volumes_changed: Arc<Notify>,
    /// Shared by the agent's sessions.
    limit: Arc<Semaphore>,
    standbys: Standbys,
    thawed: crate::volumes::thawed::Thawed,
}

/// The limit of transfers running at once to share between an agent's sessions.
pub fn transfer_limit() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_TRANSFERS))
}

impl Transfers {
    /// Transfers over `channel` (the session's, to the leader), reporting on `out`.
    #[allow(clippy::too_many_arguments)] // each is one shared handle of the session's
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        node: String,
        channel: Channel,
        out: mpsc::Sender<pb::AgentMessage>,
        volumes_changed: Arc<Notify>,
        limit: Arc<Semaphore>,
        standbys: Standbys,
        thawed: crate::volumes::thawed::Thawed,
    ) -> Transfers {
        Transfers {
            runtime,
            node,
            channel,
            out,
            volumes_changed,
            limit,
            standbys,
            thawed,
        }
    }

    /// Start `t` on its own task.
    pub fn start(&mut self, t: VolumeTransfer) {
        let runtime = self.runtime.clone();
        let node = self.node.clone();
        let client = VolumeDataClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let out = self.out.clone();
        let changed = self.volumes_changed.clone();
        let limit = self.limit.clone();
        let standbys = self.standbys.clone();
        let thawed = self.thawed.clone();
        tokio::spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return;
            };
            let done = run(&*runtime, client, &node, &standbys, &thawed, &t).await;
            match &done.error {
                None => info!(transfer = t.transfer_id, volume = %t.docker_name,
                    bytes = done.bytes, "volume transfer done"),
                Some(e) => warn!(transfer = t.transfer_id, volume = %t.docker_name,
                    error = %e, "volume transfer failed"),
            }
            if t.direction == TransferDirection::Import && done.error.is_none() {
                changed.notify_one();
            }
            let _ = out.send(crate::convert::transfer_done_message(&done)).await;
        });
    }
}

/// Run one transfer to its end; standby copies are kept in `standbys`.
#[instrument(skip_all, fields(node = %node, transfer = t.transfer_id, volume = %t.docker_name))]
pub async fn run(
    runtime: &dyn ContainerRuntime,
    client: VolumeDataClient<Channel>,
    node: &str,
    standbys: &Standbys,
    thawed: &crate::volumes::thawed::Thawed,
    t: &VolumeTransfer,
) -> TransferDone {
    let received = |digest| Exported {
        digest,
        frozen_ms: 0,
    };
    let result = match t.direction {
        TransferDirection::Export => export(runtime, client, t, thawed).await,
        TransferDirection::Import => import(runtime, client, node, t).await.map(received),
        TransferDirection::Standby => standby(client, standbys, t).await.map(received),
    };
    match result {
        Ok(d) => TransferDone {
            transfer_id: t.transfer_id,
            error: None,
            bytes: d.digest.bytes,
            sha256: d.digest.sha256,
            frozen_ms: d.frozen_ms,
        },
        Err(e) => TransferDone {
            transfer_id: t.transfer_id,
            error: Some(e),
            ..Default::default()
        },
    }
}

fn error_chunk(transfer_id: u64, error: &str) -> pb::VolumeChunk {
    pb::VolumeChunk {
        transfer_id,
        error: error.to_string(),
        ..Default::default()
    }
}

/// The volume's directory on this host.
async fn volume_dir(runtime: &dyn ContainerRuntime, name: &str) -> Result<PathBuf, String> {
    let v = runtime
        .inspect_volume(name)
        .await
        .map_err(|e| format!("inspect volume {name}: {e}"))?;
    v.mountpoint
        .ok_or_else(|| format!("volume {name} has no directory on this host"))
}

/// The message an import refusing a volume with data gives.
pub fn holds_data_error(node: &str, docker_name: &str) -> String {
    format!("{node} already has a volume {docker_name} holding data: remove it first")
}

async fn import(
    runtime: &dyn ContainerRuntime,
    mut client: VolumeDataClient<Channel>,
    node: &str,
    t: &VolumeTransfer,
) -> Result<archive::Digest, String> {
    let name = &t.docker_name;
    let existed = match runtime.inspect_volume(name).await {
        Ok(v) => {
            let dir = v
                .mountpoint
                .ok_or_else(|| format!("volume {name} has no directory on this host"))?;
            let empty = std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .map_err(|e| format!("read {}: {e}", dir.display()))?;
            if !empty {
                return Err(holds_data_error(node, name));
            }
            true
        }
        Err(RuntimeError::NotFound(_)) => false,
        Err(e) => return Err(format!("inspect volume {name}: {e}")),
    };
    let req = VolumeRequest {
        name: name.clone(),
        labels: super::volume_labels(&t.stack, &t.name, node, &Default::default()),
        ..Default::default()
    };
    let created = runtime
        .create_volume(&req)
        .await
        .map_err(|e| format!("create volume {name}: {e}"))?;
    let Some(root) = created.mountpoint else {
        discard(runtime, name, None, existed).await;
        return Err(format!("volume {name} has no directory on this host"));
    };
    let result = receive(&mut client, t, root.clone()).await;
    if result.is_err() {
        discard(runtime, name, Some(&root), existed).await;
    }
    result
}

/// Receive a refresh of the node's standby copy of `t`'s volume into a fresh `next`
/// directory, swapped in for `current` only once complete and verified.
async fn standby(
    mut client: VolumeDataClient<Channel>,
    standbys: &Standbys,
    t: &VolumeTransfer,
) -> Result<archive::Digest, String> {
    let name = &t.docker_name;
    let (s, n) = (standbys.clone(), name.clone());
    let next = blocking(move || s.begin(&n))
        .await?
        .map_err(|e| format!("standby copy of {name}: {e}"))?;
    let received = receive(&mut client, t, next).await;
    let (s, n, ok) = (standbys.clone(), name.clone(), received.is_ok());
    let ended = blocking(move || {
        if ok {
            s.commit(&n)
        } else {
            s.abort(&n);
            Ok(())
        }
    })
    .await?;
    let digest = received?;
    ended.map_err(|e| format!("swap in the standby copy of {name}: {e}"))?;
    Ok(digest)
}

/// `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a file system thread failed: {e}"))
}

/// Download the stream into `root`, checking its SHA-256.
async fn receive(
    client: &mut VolumeDataClient<Channel>,
    t: &VolumeTransfer,
    root: PathBuf,
) -> Result<archive::Digest, String> {
    let mut stream = client
        .download(pb::DownloadRequest {
            transfer_id: t.transfer_id,
        })
        .await
        .map_err(|s| format!("download: {}", s.message()))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let unpacker = tokio::task::spawn_blocking(move || {
        archive::unpack(&root, ChunkReader::new(rx)).map_err(|e| e.to_string())
    });
    let mut tx = Some(tx);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let ended: Result<String, String> = loop {
        match stream.message().await {
            Ok(Some(c)) => {
                if !c.error.is_empty() {
                    break Err(format!("the sender failed: {}", c.error));
                }
                hasher.update(&c.data);
                bytes += c.data.len() as u64;
                // The unpacker stops at the archive's end (or an error): keep hashing.
                if let Some(s) = &tx {
                    if s.send(c.data).await.is_err() {
                        tx = None;
                    }
                }
                if c.last {
                    break Ok(c.sha256);
                }
            }
            Ok(None) => break Err("the stream ended before its last chunk".to_string()),
            Err(status) => break Err(format!("download: {}", status.message())),
        }
    };
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| format!("the archive thread failed: {e}"))?;
    let got = hex::encode(hasher.finalize());
    let sent = ended?;
    archive::verify(&sent, &got).map_err(|e| e.to_string())?;
    if let Some(expected) = &t.sha256 {
        archive::verify(expected, &got).map_err(|e| e.to_string())?;
    }
    unpacked.map_err(|e| format!("unpack: {e}"))?;
    Ok(archive::Digest { bytes, sha256: got })
}

/// Undo a failed import: remove the volume it made, or empty the (empty before) one it
/// found.
async fn discard(
    runtime: &dyn ContainerRuntime,
    name: &str,
    root: Option<&std::path::Path>,
    existed: bool,
) {
    if !existed {
        match runtime.remove_volume(name).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => return,
            Err(e) => warn!(volume = %name, error = %e, "cannot remove the partial volume"),
        }
    }
    if let Some(root) = root {
        let root = root.to_path_buf();
        let _ = tokio::task::spawn_blocking(move || super::empty_dir(&root)).await;
    }
}
