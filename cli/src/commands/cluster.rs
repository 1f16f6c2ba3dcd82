//! `shoal cluster status` and `shoal cluster backup FILE`.

use std::path::Path;

use anyhow::Context;
use futures::StreamExt;
use shoal_controller::backup::{self, Backup};
use shoal_controller::raft::state_machine::decode_snapshot;
use shoal_proto::pb::{BackupClusterRequest, ClusterStatusRequest};

use super::passphrase;
use super::Ctx;
use crate::error::ApiError;
use crate::output;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let reply = ctx
        .client
        .call(|mut c| async move { c.cluster_status(ClusterStatusRequest {}).await })
        .await
        .context("read the cluster status")?;
    output::emit(ctx.format, output::cluster::json(&reply), || {
        output::cluster::table(&reply)
    })
}

/// `shoal cluster backup FILE`: the leader's state and the cluster key, encrypted here
/// with the user's passphrase, written to FILE (atomically, readable by its owner only).
pub async fn backup(
    ctx: &mut Ctx,
    file: &Path,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<()> {
    // Asked before anything is read, so a mistyped passphrase costs nothing.
    let passphrase = passphrase::read(passphrase_file, true)?;
    let mut stream = ctx
        .client
        .call(|mut c| async move { c.backup_cluster(BackupClusterRequest {}).await })
        .await
        .context("back up the cluster")?;
    let (mut cluster_id, mut index, mut key, mut data) = (String::new(), 0, Vec::new(), Vec::new());
    let mut complete = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(ApiError::from)
            .with_context(|| format!("the backup stream broke after {} bytes", data.len()))?;
        if !chunk.cluster_id.is_empty() {
            (cluster_id, index, key) = (chunk.cluster_id, chunk.index, chunk.cluster_key);
        }
        data.extend_from_slice(&chunk.data);
        complete = chunk.last;
    }
    anyhow::ensure!(
        complete,
        "the backup stream ended early, after {} bytes",
        data.len()
    );
    let applied = decode_snapshot(&data)
        .map_err(|e| anyhow::anyhow!("the controller sent a state that cannot be read: {e}"))?;
    let snapshot =
        String::from_utf8(data).context("the controller sent a state that is not text")?;
    let taken = Backup {
        cluster_id,
        taken_at_ms: shoal_controller::api::control::now_ms(),
        index,
        written_by: env!("CARGO_PKG_VERSION").to_string(),
        cluster_key: hex::encode(key),
        snapshot,
    };
    let sealed = backup::seal(&taken, &passphrase)?;
    shoal_tls::files::write_file(file, &sealed, true)
        .with_context(|| format!("write the backup to {}", file.display()))?;
    let s = &applied.state;
    println!(
        "backup of cluster {} at log index {} written to {} ({} bytes): {} stacks, {} tasks, {} nodes, {} secrets",
        taken.cluster_id,
        taken.index,
        file.display(),
        sealed.len(),
        s.stacks.len(),
        s.tasks.len(),
        s.nodes.len(),
        s.cluster_secrets.len(),
    );
    println!("keep the passphrase: without it the backup cannot be restored (`shoal controller --data-dir D --listen ADDR --restore FILE`)");
    Ok(())
}

/// The backup in `file`, opened with the passphrase (from `passphrase_file`, or asked).
pub fn open_backup(file: &Path, passphrase_file: Option<&Path>) -> anyhow::Result<Backup> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("cannot read the backup {}", file.display()))?;
    let passphrase = passphrase::read(passphrase_file, false)?;
    backup::open(&bytes, &passphrase).with_context(|| format!("cannot restore {}", file.display()))
}
