//! Named volumes on this node: made with shoal's labels before the containers that mount
//! them ([`ensure`], which turns the node's standby copy into the volume when the
//! controller promoted it), reported to the controller with their sizes ([`report`]),
//! and their contents sent to or received from another node through the leader
//! ([`transfer`], as tar streams made and read by [`archive`]); standby copies are
//! directories under the agent's data dir ([`standby`]).
//!
//! What it must not do: touch a volume without shoal's labels for this node (except the
//! ones the controller names), or write into a volume that already holds data.

use std::collections::BTreeMap;

use shoal_proto::labels;

use crate::model::VolumeMount;
use crate::runtime::{ContainerRuntime, RuntimeError, RuntimeResult, VolumeRequest};

pub mod archive;
pub mod report;
pub mod standby;
pub mod thawed;
pub mod transfer;

use standby::Standbys;

/// The labels of a volume shoal makes: the entry's own, then `io.shoal.stack`,
/// `io.shoal.volume` (the Compose name) and `io.shoal.node`.
pub fn volume_labels(
    stack: &str,
    name: &str,
    node: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut l = extra.clone();
    l.insert(labels::STACK.to_string(), stack.to_string());
    l.insert(labels::VOLUME.to_string(), name.to_string());
    l.insert(labels::NODE.to_string(), node.to_string());
    l
}

/// The request that makes volume `v` of stack `stack` on `node`.
pub fn volume_request(stack: &str, node: &str, v: &VolumeMount) -> VolumeRequest {
    VolumeRequest {
        name: v.docker_name.clone(),
        driver: v.driver.clone(),
        driver_opts: v.driver_opts.clone(),
        labels: volume_labels(stack, &v.name, node, &v.labels),
    }
}

/// Make volume `v` unless it exists; an existing one is used as it is. When the node
/// holds a standby copy of it (in `standbys`) and the volume is missing or empty, the
/// volume is made and filled from the standby, which is then removed: the controller
/// promoted it.
pub async fn ensure(
    runtime: &dyn ContainerRuntime,
    stack: &str,
    node: &str,
    v: &VolumeMount,
    standbys: Option<&Standbys>,
) -> RuntimeResult<()> {
    let name = &v.docker_name;
    let existing = match runtime.inspect_volume(name).await {
        Ok(info) => Some(info),
        Err(RuntimeError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let standbys = standbys.filter(|s| s.has(name));
    let Some(standbys) = standbys else {
        if existing.is_none() {
            tracing::info!(volume = %name, %stack, "creating volume");
            runtime
                .create_volume(&volume_request(stack, node, v))
                .await?;
        }
        return Ok(());
    };
    let info = match existing {
        Some(info) if !is_empty(info.mountpoint.as_deref()) => return Ok(()),
        Some(info) => info,
        None => {
            runtime
                .create_volume(&volume_request(stack, node, v))
                .await?
        }
    };
    let promote = |e: String| RuntimeError::Engine(format!("promote the standby copy: {e}"));
    let mountpoint = info
        .mountpoint
        .ok_or_else(|| promote("the volume has no directory on this host".into()))?;
    let (s, n) = (standbys.clone(), name.clone());
    let promoted = tokio::task::spawn_blocking(move || s.promote_into(&n, &mountpoint))
        .await
        .map_err(|e| promote(e.to_string()))?
        .map_err(|e| promote(e.to_string()))?;
    if promoted {
        tracing::info!(volume = %name, %stack, "promoted the standby copy of {name}");
    }
    Ok(())
}

/// Whether a volume's directory holds nothing (`None`, unreadable: not known to).
fn is_empty(dir: Option<&std::path::Path>) -> bool {
    dir.and_then(|d| std::fs::read_dir(d).ok())
        .is_some_and(|mut entries| entries.next().is_none())
}

/// Remove everything in the directory `root`, never following symlinks.
pub(crate) fn empty_dir(root: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
