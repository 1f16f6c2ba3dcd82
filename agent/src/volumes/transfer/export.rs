//! Export: tar a volume and upload it to the leader. With `freeze`, in two passes (see
//! [`archive::pack_frozen`]): the whole volume while its containers run, then, with the
//! running containers that mount it paused, what changed since and the list of paths
//! present; they are resumed as soon as the second pass has read the volume (at most
//! [`MAX_FROZEN`] after the pause), also when anything failed. An agent that died while
//! they were paused resumes them at its next start ([`resume_leftovers`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_proto::pb;
use shoal_proto::pb::volume_data_client::VolumeDataClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::chunks::ChunkWriter;
use super::{error_chunk, volume_dir, CHANNEL_CHUNKS, CHUNK_BYTES};
use crate::model::VolumeTransfer;
use crate::runtime::ContainerRuntime;
use crate::volumes::archive;

/// What an export sent, and how long it kept containers paused.
pub(super) struct Exported {
    pub digest: archive::Digest,
    pub frozen_ms: u64,
}

pub(super) async fn export(
    runtime: &dyn ContainerRuntime,
    mut client: VolumeDataClient<Channel>,
    t: &VolumeTransfer,
    thawed: &crate::volumes::thawed::Thawed,
) -> Result<Exported, String> {
    let id = t.transfer_id;
    let root = match volume_dir(runtime, &t.docker_name).await {
        Ok(r) => r,
        Err(e) => {
            // Tell the leader, which waits for this upload.
            let one = futures::stream::iter([error_chunk(id, &e)]);
            let _ = client.upload(one).await;
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel::<pb::VolumeChunk>(CHANNEL_CHUNKS);
    let upload = tokio::spawn(async move { client.upload(ReceiverStream::new(rx)).await });
    let (produced, frozen_ms) = if t.freeze {
        let abort = upload.abort_handle();
        let f = frozen(runtime, &t.docker_name, root, tx, id, abort).await;
        for c in &f.resumed {
            thawed.resumed(c);
        }
        if let Some(e) = f.overran {
            return Err(e);
        }
        (f.produced, f.frozen_ms)
    } else {
        let producer =
            tokio::task::spawn_blocking(move || produce(tx, id, |w| archive::pack(&root, w)));
        (producer.await, 0)
    };
    let uploaded = upload
        .await
        .map_err(|e| format!("the upload task failed: {e}"))?;
    let produced = produced.map_err(|e| format!("the archive thread failed: {e}"))?;
    match (uploaded, produced) {
        (Err(status), _) => Err(format!("upload: {}", status.message())),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(digest)) => Ok(Exported { digest, frozen_ms }),
    }
}

type Produced = Result<Result<archive::Digest, String>, tokio::task::JoinError>;

/// Run `pack` into upload chunks on `tx`, ending with the last chunk (and the SHA-256)
/// or an error chunk.
fn produce(
    tx: mpsc::Sender<pb::VolumeChunk>,
    id: u64,
    pack: impl FnOnce(ChunkWriter) -> Result<(ChunkWriter, archive::Digest), archive::ArchiveError>,
) -> Result<archive::Digest, String> {
    let writer = ChunkWriter {
        tx: tx.clone(),
        transfer_id: id,
        buf: Vec::with_capacity(CHUNK_BYTES),
    };
    let result = pack(writer)
        .map_err(|e| e.to_string())
        .and_then(|(w, digest)| {
            w.finish(&digest.sha256)
                .map(|()| digest)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = &result {
        let _ = tx.blocking_send(error_chunk(id, e));
    }
    result
}

/// The longest containers stay paused: a second pass still sending then (a stalled
/// leader, a slow link and many changes) is abandoned, the containers resumed and the
/// export failed, rather than a database kept frozen.
pub const MAX_FROZEN: Duration = Duration::from_secs(60);

/// How a two-pass export went.
struct Frozen {
    produced: Produced,
    frozen_ms: u64,
    /// The second pass took longer than [`MAX_FROZEN`]: abandoned.
    overran: Option<String>,
    /// The containers paused and resumed.
    resumed: Vec<String>,
}

/// The two-pass export: the tar thread says when pass 1 is done and waits; the
/// containers are paused, the thread told to go on, and resumed once it says pass 2
/// has read the volume (or it ended in any way), or after [`MAX_FROZEN`] (the upload is
/// then aborted, which ends the thread).
async fn frozen(
    runtime: &dyn ContainerRuntime,
    name: &str,
    root: PathBuf,
    tx: mpsc::Sender<pb::VolumeChunk>,
    id: u64,
    upload: tokio::task::AbortHandle,
) -> Frozen {
    let (pass1_done, pass1_rx) = oneshot::channel::<()>();
    let (go_tx, go) = oneshot::channel::<Result<(), String>>();
    let (read_tx, read) = oneshot::channel::<()>();
    let producer = tokio::task::spawn_blocking(move || {
        let freeze = move || {
            let _ = pass1_done.send(());
            go.blocking_recv()
                .unwrap_or_else(|_| Err("the export was abandoned".to_string()))
        };
        let thaw = move || {
            let _ = read_tx.send(());
        };
        produce(tx, id, |w| archive::pack_frozen(&root, w, freeze, thaw))
    });
    let mut frozen_ms = 0;
    let mut overran = None;
    let mut resumed = Vec::new();
    // Err: pass 1 failed, nothing to pause.
    if pass1_rx.await.is_ok() {
        let started = Instant::now();
        match freeze(runtime, name).await {
            Ok(paused) => {
                let _ = go_tx.send(Ok(()));
                // Err: the thread ended without saying so (it failed): resume anyway.
                if tokio::time::timeout(MAX_FROZEN, read).await.is_err() {
                    upload.abort();
                    let e = format!(
                        "the second pass took longer than {} s: containers resumed, copy abandoned",
                        MAX_FROZEN.as_secs()
                    );
                    warn!(volume = %name, error = %e, "frozen export abandoned");
                    overran = Some(e);
                }
                if !paused.is_empty() {
                    thaw(runtime, &paused).await;
                    frozen_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                }
                debug!(volume = %name, containers = paused.len(), frozen_ms, "second pass done");
                resumed = paused;
            }
            Err(e) => {
                let _ = go_tx.send(Err(e));
            }
        }
    }
    Frozen {
        produced: producer.await,
        frozen_ms,
        overran,
        resumed,
    }
}

/// Pause the running containers that mount volume `name`; on a failure, resume the
/// ones paused and give the error.
async fn freeze(runtime: &dyn ContainerRuntime, name: &str) -> Result<Vec<String>, String> {
    let ids = runtime
        .running_with_volume(name)
        .await
        .map_err(|e| format!("list the containers using {name}: {e}"))?;
    let mut paused = Vec::new();
    for id in ids {
        if let Err(e) = runtime.pause(&id).await {
            thaw(runtime, &paused).await;
            return Err(format!("pause container {id}: {e}"));
        }
        paused.push(id);
    }
    Ok(paused)
}

async fn thaw(runtime: &dyn ContainerRuntime, ids: &[String]) {
    for id in ids {
        if let Err(e) = runtime.unpause(id).await {
            warn!(container = %id, error = %e, "cannot resume a paused container");
        }
    }
}

/// Resume every container of `node` left paused (by an agent that stopped during a
/// frozen export: nothing else in shoal pauses containers). Run at agent start.
pub async fn resume_leftovers(runtime: &dyn ContainerRuntime, node: &str) {
    let ids = match runtime.paused(node).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "cannot list paused containers");
            return;
        }
    };
    for id in ids {
        warn!(container = %id, "resuming a container left paused (an agent stopped during a frozen export)");
        if let Err(e) = runtime.unpause(&id).await {
            warn!(container = %id, error = %e, "cannot resume a paused container");
        }
    }
}
