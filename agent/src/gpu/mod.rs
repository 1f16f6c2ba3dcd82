//! This node's GPUs, behind the narrow [`GpuInventory`] trait.
//!
//! - [`nvml::NvmlInventory`]: NVIDIA's management library, loaded at run time. No
//!   library or no driver means no GPUs (said once at info level), never an error.
//! - [`file::FileInventory`]: `--gpu-inventory FILE` (JSON, or TOML by extension), for
//!   machines without GPUs and for tests.
//! - [`fake::FakeInventory`]: a recording fake whose set a test changes at will.
//!
//! [`watch`] rediscovers periodically and publishes the set whenever it changes; the
//! session reports a changed set to the controller. Only identity fields (UUID, index,
//! model, total memory) count as a change: utilization and memory used vary all the time
//! and are not replicated.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod fake;
pub mod file;
pub mod nvml;

/// How often GPUs are rediscovered unless configured otherwise.
pub const REDISCOVER_INTERVAL: Duration = Duration::from_secs(30);

/// One GPU (a MIG instance is its own device).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct GpuDevice {
    pub uuid: String,
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
    /// Percent of time a kernel ran over NVML's last sample period, where NVML says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
}

impl GpuDevice {
    /// The fields the cluster knows a GPU by; a change in these is re-reported.
    pub fn identity(&self) -> (&str, u32, &str, u64) {
        (&self.uuid, self.index, &self.model, self.memory_bytes)
    }
}

/// Why GPUs could not be listed. NVML being absent is not one of these: it is zero GPUs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The inventory file cannot be read or says something that is not a GPU list.
    #[error("GPU inventory {file}: {why}")]
    Inventory { file: String, why: String },
    /// NVML is there but failed while listing devices.
    #[error("NVML: {0}")]
    Nvml(String),
}

/// Where a node's GPUs come from. Discovery is synchronous (NVML is a C library); the
/// watcher runs it on a blocking thread.
pub trait GpuInventory: Send + Sync + std::fmt::Debug + 'static {
    fn discover(&self) -> Result<Vec<GpuDevice>, GpuError>;
}

/// Where an agent's GPUs come from, as configured.
#[derive(Debug, Clone, Default)]
pub enum GpuSource {
    /// NVML (the default).
    #[default]
    Nvml,
    /// `--gpu-inventory FILE`.
    File(std::path::PathBuf),
    /// Any inventory (tests pass a [`fake::FakeInventory`]).
    Inventory(Arc<dyn GpuInventory>),
}

impl GpuSource {
    pub fn open(&self) -> Arc<dyn GpuInventory> {
        match self {
            GpuSource::Nvml => Arc::new(nvml::NvmlInventory::new()),
            GpuSource::File(p) => Arc::new(file::FileInventory::new(p.clone())),
            GpuSource::Inventory(i) => i.clone(),
        }
    }
}

fn same_set(a: &[GpuDevice], b: &[GpuDevice]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.identity() == y.identity())
}

async fn discover(inv: &Arc<dyn GpuInventory>) -> Result<Vec<GpuDevice>, GpuError> {
    let inv = inv.clone();
    match tokio::task::spawn_blocking(move || inv.discover()).await {
        Ok(r) => r.map(|mut list| {
            list.sort_by(|a, b| (a.index, &a.uuid).cmp(&(b.index, &b.uuid)));
            list
        }),
        Err(e) => Err(GpuError::Nvml(format!("GPU discovery panicked: {e}"))),
    }
}

/// Discovers once (an error here is the caller's: a bad inventory file stops start-up),
/// then every `interval` until `shutdown`, publishing each changed set. A later failure
/// keeps the last known set and is logged.
pub async fn watch(
    inventory: Arc<dyn GpuInventory>,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Vec<GpuDevice>>, GpuError> {
    let first = discover(&inventory).await?;
    info!(gpus = first.len(), "GPUs discovered");
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match discover(&inventory).await {
                Ok(list) => {
                    // The latest figures (utilization, memory used) are always kept for
                    // `/metrics`; watchers are woken (and the controller told) only when
                    // the set itself changed.
                    tx.send_if_modified(|current| {
                        let changed = !same_set(current, &list);
                        if changed {
                            info!(gpus = list.len(), "GPU set changed");
                        }
                        *current = list;
                        changed
                    });
                }
                Err(e) => warn!(error = %e, "GPU rediscovery failed; keeping the last set"),
            }
        }
    });
    Ok(rx)
}
