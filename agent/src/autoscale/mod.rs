//! Autoscaling's node side (`x-shoal-autoscale`): every interval the agent measures
//! the `scrape`, `cpu` and `memory` metrics of its own running replicas and sends the
//! compact aggregates to the leader (`AgentMessage.metrics`), which adds them up over
//! nodes and decides the count. The agent decides nothing.
//!
//! - [`replicas`]: which tasks autoscale ([`autoscaled`], from the assignments) and
//!   which of their containers run, at what address (pure);
//! - [`scrape`]: an endpoint read over HTTP and its Prometheus text parsed;
//! - [`window`]: a histogram's growth over its window, resets counted (pure);
//! - [`stats`]: CPU and memory as fractions of the limit (pure);
//! - [`report`]: the reads folded per service into the report (pure);
//! - [`measure`]: one pass, replicas read concurrently ([`Measurer::measure`]);
//! - [`convert`]: the report on the wire.
//!
//! [`Autoscaler`] is the glue the session uses: it hears the assignments and runs the
//! per-session reporter ([`Autoscaler::run_reporter`]); what rates and windows need
//! lives in its [`Measurer`], kept across sessions.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;
use tracing::{debug, instrument};

pub mod convert;
pub mod measure;
pub mod replicas;
pub mod report;
pub mod scrape;
pub mod stats;
pub mod window;

pub use measure::Measurer;
pub use replicas::{autoscaled, running, Assigned, Replica};
pub use report::{MetricReport, ServiceReport};

use crate::model::AssignmentSet;
use crate::runtime::ContainerRuntime;

/// How often the node's replicas are measured (`shoal_proto::autoscale::INTERVAL_MS`).
pub const INTERVAL: Duration = Duration::from_millis(shoal_proto::autoscale::INTERVAL_MS);

/// The agent's autoscaling measurements; clones share one.
#[derive(Clone)]
pub struct Autoscaler {
    node: String,
    runtime: Arc<dyn ContainerRuntime>,
    /// The node's tasks that autoscale, from the newest assignment set.
    assigned: Arc<watch::Sender<Arc<Vec<Assigned>>>>,
    measurer: Arc<Mutex<Measurer>>,
    interval: Duration,
}

impl std::fmt::Debug for Autoscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaler")
            .field("node", &self.node)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Autoscaler {
    /// Measures every `interval` ([`INTERVAL`] outside tests).
    pub fn new(node: &str, runtime: Arc<dyn ContainerRuntime>, interval: Duration) -> Autoscaler {
        let (assigned, _) = watch::channel(Arc::new(Vec::new()));
        Autoscaler {
            node: node.to_string(),
            measurer: Arc::new(Mutex::new(Measurer::new(runtime.clone()))),
            runtime,
            assigned: Arc::new(assigned),
            interval,
        }
    }

    /// The controller's new assignment set for this node.
    pub fn assign(&self, set: &AssignmentSet) {
        let now = autoscaled(set);
        self.assigned.send_if_modified(|known| {
            let changed = **known != now;
            if changed {
                *known = Arc::new(now);
            }
            changed
        });
    }

    /// Every interval, measure the running replicas of the services that autoscale and
    /// send the report on `out` (none while no such replica runs here), until `out`
    /// closes. One runs per session; measurements carry over from one to the next.
    #[instrument(name = "autoscale", skip_all, fields(node = %self.node))]
    pub async fn run_reporter(self, out: mpsc::Sender<pb::AgentMessage>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let assigned = self.assigned.borrow().clone();
            let replicas = if assigned.is_empty() {
                Vec::new()
            } else {
                match self.runtime.list_managed().await {
                    Ok(containers) => running(&assigned, &containers),
                    Err(e) => {
                        debug!(error = %e, "cannot list containers to measure");
                        continue;
                    }
                }
            };
            let reports = self
                .measurer
                .lock()
                .await
                .measure(&replicas, Instant::now())
                .await;
            if reports.is_empty() {
                continue;
            }
            for s in &reports {
                for v in s.values.iter().filter(|v| v.error.is_some()) {
                    debug!(
                        service = %format!("{}/{}", s.stack, s.service),
                        metric = v.index,
                        read = v.read,
                        replicas = v.replicas,
                        error = v.error.as_deref().unwrap_or(""),
                        "not every replica could be measured"
                    );
                }
            }
            if out.send(convert::metrics_message(&reports)).await.is_err() {
                return;
            }
        }
    }
}
