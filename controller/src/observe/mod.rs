//! What the controller shows of the cluster besides its API answers: the Prometheus
//! page of `--metrics` and the containers' figures behind `shoal stats`.
//!
//! Map:
//! - [`metrics`]: the registry and the `/metrics` page; Raft figures from openraft's
//!   metrics and [`crate::raft::RaftInstruments`], cluster figures counted from the
//!   applied state at scrape time ([`figures`]), the leader's counters kept here.
//! - [`figures`]: pure counts of the applied state (nodes, tasks, services, rollouts).
//! - [`stats`] / [`history`]: the agents' `StatsReport`s in the leader's memory, and an
//!   hour of per-service and per-GPU points; [`stats_wire`] converts them from and to
//!   prost.
//!
//! Every controller serves `/metrics` (a follower shows its own Raft view and the
//! figures of its applied state); only the leader counts decisions and keeps stats.

pub mod figures;
pub mod history;
pub mod metrics;
pub mod stats;
pub mod stats_wire;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::state::{Decision, NodeStatus};

/// The `kind` label of `shoal_scheduler_decisions`, one per [`Decision`] variant.
pub const DECISION_KINDS: [&str; 14] = [
    "create",
    "assign",
    "assign_gpus",
    "pending",
    "shutdown",
    "orphan",
    "forget",
    "drop_service",
    "drop_stack",
    "rollback",
    "complete_rollout",
    "fail",
    "complete_rebalance",
    "promote_standby",
];

/// The index in [`DECISION_KINDS`] of `d`'s kind.
pub fn decision_kind(d: &Decision) -> usize {
    match d {
        Decision::CreateTask { .. } => 0,
        Decision::Assign { .. } => 1,
        Decision::AssignGpus { .. } => 2,
        Decision::Pending { .. } => 3,
        Decision::Shutdown { .. } => 4,
        Decision::Orphan { .. } => 5,
        Decision::Forget { .. } => 6,
        Decision::DropService { .. } => 7,
        Decision::DropStack { .. } => 8,
        Decision::RollBack { .. } => 9,
        Decision::CompleteRollout { .. } => 10,
        Decision::Fail { .. } => 11,
        Decision::CompleteRebalance { .. } => 12,
        Decision::PromoteStandby { .. } => 13,
    }
}

/// Decisions of one pass counted by kind, added to the counters once committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally([u64; DECISION_KINDS.len()]);

impl Tally {
    pub fn of(decisions: &[Decision]) -> Tally {
        let mut t = Tally::default();
        for d in decisions {
            t.0[decision_kind(d)] += 1;
        }
        t
    }
}

/// The label set of a counter family with one label.
pub type OneLabel = [(&'static str, &'static str); 1];

/// What the controller counts as it works, and the stats it keeps ([`crate::api::Context`]
/// holds one). Cloned handles of the counters are registered in the `/metrics` registry.
#[derive(Debug)]
pub struct Observe {
    /// Times this controller saw the leader change (the first leader it learns counts).
    pub leader_changes: Counter,
    /// The reconciler's committed decisions, by kind (leader only).
    pub decisions: Family<OneLabel, Counter>,
    /// Seconds per leader pass (liveness, reconcile, proposing its decisions).
    pub reconcile: Histogram,
    pub stats: stats::StatsStore,
}

impl Default for Observe {
    fn default() -> Self {
        let decisions = Family::<OneLabel, Counter>::default();
        // Every kind shows from the start, at 0, so rates work before the first one.
        for kind in DECISION_KINDS {
            let _ = decisions.get_or_create(&[("kind", kind)]);
        }
        Observe {
            leader_changes: Counter::default(),
            decisions,
            // 0.1 ms to about 3 s: a pass over a small cluster takes well under a
            // millisecond; one proposing through a slow quorum, seconds.
            reconcile: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            stats: stats::StatsStore::default(),
        }
    }
}

impl Observe {
    /// Adds a pass's committed decisions.
    pub fn count(&self, tally: &Tally) {
        for (kind, n) in DECISION_KINDS.iter().zip(tally.0) {
            if n > 0 {
                self.decisions.get_or_create(&[("kind", kind)]).inc_by(n);
            }
        }
    }
}

/// How often the stats are tended (down nodes dropped, old history pruned).
const UPKEEP: Duration = Duration::from_millis(shoal_proto::STATS_INTERVAL_MS);

/// Runs until `shutdown`: counts leader changes as this controller sees them, and on
/// the leader drops the stats of nodes that are down; a controller that stops leading
/// forgets its stats (agents report to the new leader).
pub async fn run(ctx: Shared, shutdown: CancellationToken) {
    let mut metrics = ctx.node.raft.metrics();
    let mut known: Option<u64> = None;
    let mut leading = false;
    let mut tick = tokio::time::interval(UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let leader = metrics.borrow_and_update().current_leader;
        if let Some(l) = leader.filter(|l| known != Some(*l)) {
            ctx.observe.leader_changes.inc();
            known = Some(l);
        }
        let now_leading = leader == Some(ctx.node.id);
        if leading && !now_leading {
            ctx.observe.stats.clear();
        }
        leading = now_leading;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tick.tick() => if leading { upkeep(&ctx) },
        }
    }
}

/// Drops the stats of nodes the state has down (or forgot), and history over an hour old.
fn upkeep(ctx: &Shared) {
    let now = now_ms();
    let kept = ctx.observe.stats.nodes();
    let gone: Vec<String> = {
        let state = ctx.node.state.read();
        kept.into_iter()
            .filter(|n| {
                state
                    .nodes
                    .get(n)
                    .is_none_or(|node| node.status == NodeStatus::Down)
            })
            .collect()
    };
    for node in gone {
        ctx.observe.stats.forget_node(&node, now);
    }
    ctx.observe.stats.prune(now);
}
