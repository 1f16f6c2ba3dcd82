//! What the agent tells the controller about its volumes: every volume labelled for this
//! node, with its stack and Compose name from its labels, when the engine made it, and
//! how much it holds (measured on a blocking thread by walking its directory).

use std::sync::Arc;

use shoal_proto::labels;

use super::archive::dir_size;
use crate::model::VolumeSeen;
use crate::runtime::{ContainerRuntime, RuntimeResult};

/// How often the node's volumes are reported (also after the Hello, after a removal and
/// after an import).
pub const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The most entries counted per volume: the walk stays bounded on huge volumes (the
/// size is then a lower bound).
pub const MAX_WALK_ENTRIES: u64 = 2_000_000;

/// The node's shoal volumes, in name order.
pub async fn collect(
    runtime: &Arc<dyn ContainerRuntime>,
    node: &str,
) -> RuntimeResult<Vec<VolumeSeen>> {
    let mut volumes = runtime.list_volumes(node).await?;
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    let dirs: Vec<_> = volumes.iter().map(|v| v.mountpoint.clone()).collect();
    let sizes = tokio::task::spawn_blocking(move || {
        dirs.iter()
            .map(|d| {
                d.as_deref()
                    .and_then(|d| dir_size(d, MAX_WALK_ENTRIES))
                    .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX))
            })
            .collect::<Vec<i64>>()
    })
    .await
    .unwrap_or_else(|_| vec![-1; volumes.len()]);
    Ok(volumes
        .into_iter()
        .zip(sizes)
        .map(|(v, size_bytes)| VolumeSeen {
            stack: v.labels.get(labels::STACK).cloned().unwrap_or_default(),
            name: v.labels.get(labels::VOLUME).cloned().unwrap_or_default(),
            docker_name: v.name,
            size_bytes,
            created_ms: v.created_ms,
        })
        .collect())
}

/// Report the node's volumes on `out` now, then every [`REPORT_INTERVAL`] and whenever
/// `wake` is notified, until `out` closes. Runs as its own task per session.
pub async fn run_reporter(
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    out: tokio::sync::mpsc::Sender<shoal_proto::pb::AgentMessage>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        match collect(&runtime, &node).await {
            Ok(volumes) => {
                let msg = crate::convert::volume_report_message(&volumes);
                if out.send(msg).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list volumes"),
        }
    }
}
