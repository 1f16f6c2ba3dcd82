//! Every replica's container figures (CPU, memory, network, restarts), measured from
//! the engine's stats every [`INTERVAL`] for `shoal stats`, the dashboard and the
//! agent's `/metrics`. Whatever runs here is measured, whether a controller is
//! reachable or not: the containers the engine runs for this node and cluster, known by
//! their labels, so a replica that is removed is gone from the next pass.
//!
//! - [`measure`]: which containers, and what their stats make (pure; CPU use is
//!   autoscaling's [`crate::autoscale::stats::cores_used`]);
//! - [`report`]: the figures and the node's GPUs sent to the leader on the session
//!   (`AgentMessage.stats`), one report per pass.
//!
//! [`watch`] runs the passes and publishes each one ([`Measured`]); `/metrics`
//! ([`crate::metrics`]) and the session's reporter read the newest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

pub mod measure;
pub mod report;

pub use measure::{figures, targets, ReplicaFigures, Target};

use crate::autoscale::stats::CpuSample;
use crate::runtime::ContainerRuntime;

/// How often the node's replicas are measured (`shoal_proto::STATS_INTERVAL_MS`).
pub const INTERVAL: Duration = Duration::from_millis(shoal_proto::STATS_INTERVAL_MS);

/// Containers whose stats are read at once (one-shot stats answer in milliseconds; a
/// hundred replicas take a few rounds, well within an interval).
pub const CONCURRENCY: usize = crate::autoscale::measure::CONCURRENCY;

/// One measuring pass over the node's replicas.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measured {
    /// When the pass ended, in ms since the epoch; 0: no pass yet.
    pub at_ms: u64,
    /// In (stack, service, slot, task) order.
    pub replicas: Vec<ReplicaFigures>,
}

/// Where the node's passes are published; readers get the newest.
pub fn channel() -> (watch::Sender<Arc<Measured>>, watch::Receiver<Arc<Measured>>) {
    watch::channel(Arc::new(Measured::default()))
}

/// Measure the running replicas of node `node` (and cluster `cluster`) every
/// `interval`, publishing each pass on `out`, until `shutdown`. A pass the engine
/// could not list containers for is skipped (the last one stays).
#[instrument(name = "stats", skip_all, fields(node = %node))]
pub async fn watch(
    runtime: Arc<dyn ContainerRuntime>,
    node: String,
    cluster: Option<String>,
    interval: Duration,
    out: watch::Sender<Arc<Measured>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu: HashMap<String, CpuSample> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pass = pass(&*runtime, &node, cluster.as_deref(), &mut cpu);
        let measured = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = pass => m,
        };
        if let Some(m) = measured {
            out.send_replace(Arc::new(m));
        }
    }
}

/// One pass: `None` when the engine could not list its containers.
async fn pass(
    runtime: &dyn ContainerRuntime,
    node: &str,
    cluster: Option<&str>,
    cpu: &mut HashMap<String, CpuSample>,
) -> Option<Measured> {
    let containers = match runtime.list_managed().await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "cannot list containers to measure");
            return None;
        }
    };
    let targets = targets(&containers, node, cluster);
    // Made up front (not in a `map` closure) so that the pass stays `Send`.
    let pending: Vec<_> = targets
        .iter()
        .map(|t| async move {
            match runtime.stats(&t.container).await {
                Ok(s) => Some((s, Instant::now())),
                Err(e) => {
                    debug!(task = %t.task, container = %t.container, error = %e, "no stats");
                    None
                }
            }
        })
        .collect();
    let reads: Vec<_> = futures::stream::iter(pending)
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Some(Measured {
        at_ms: now_ms(),
        replicas: figures(cpu, &targets, &reads),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
